// The machine an ELF file is built for (its header's e_machine), so the cross
// build can assert that the test programs it ran under qemu are aarch64
// programs and not host ones (scripts/build-aarch64.sh, docs/PORTABILITY.md).
#pragma once

#include <elf.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace fedge::test {

// EM_* of a machine name as CMake's CMAKE_SYSTEM_PROCESSOR spells it
// ("aarch64"/"arm64", "x86_64"/"AMD64"); throws std::invalid_argument naming
// the accepted names otherwise.
inline std::uint16_t elf_machine_of_name(const std::string& name) {
  if (name == "aarch64" || name == "arm64") return EM_AARCH64;
  if (name == "x86_64" || name == "AMD64" || name == "amd64") return EM_X86_64;
  throw std::invalid_argument("unknown machine '" + name + "': use aarch64 or x86_64");
}

inline std::string elf_machine_name(std::uint16_t machine) {
  switch (machine) {
    case EM_AARCH64: return "aarch64";
    case EM_X86_64: return "x86_64";
    case EM_386: return "i386";
    case EM_ARM: return "arm (32-bit)";
    case EM_RISCV: return "riscv";
    default: return "e_machine " + std::to_string(machine);
  }
}

// e_machine of the 64-bit little-endian ELF header that `bytes` starts with
// (both machines fedge builds for are 64-bit little-endian). Throws
// std::runtime_error saying what is wrong: too short, no ELF magic, another
// class or byte order.
inline std::uint16_t elf_machine(std::span<const unsigned char> bytes) {
  if (bytes.size() < EI_NIDENT) {
    throw std::runtime_error("truncated: " + std::to_string(bytes.size()) + " bytes, an ELF identification needs " +
                             std::to_string(EI_NIDENT));
  }
  if (bytes[EI_MAG0] != ELFMAG0 || bytes[EI_MAG1] != ELFMAG1 || bytes[EI_MAG2] != ELFMAG2 ||
      bytes[EI_MAG3] != ELFMAG3) {
    throw std::runtime_error("not an ELF file (no \\x7fELF magic)");
  }
  if (bytes[EI_CLASS] != ELFCLASS64) {
    throw std::runtime_error("ELF class " + std::to_string(bytes[EI_CLASS]) + ", expected 64-bit (ELFCLASS64)");
  }
  if (bytes[EI_DATA] != ELFDATA2LSB) {
    throw std::runtime_error("ELF byte order " + std::to_string(bytes[EI_DATA]) +
                             ", expected little-endian (ELFDATA2LSB)");
  }
  if (bytes.size() < sizeof(Elf64_Ehdr)) {
    throw std::runtime_error("truncated: " + std::to_string(bytes.size()) + " bytes, a 64-bit ELF header needs " +
                             std::to_string(sizeof(Elf64_Ehdr)));
  }
  // Read as little-endian whatever the host's order (EI_DATA said so).
  constexpr std::size_t offset = offsetof(Elf64_Ehdr, e_machine);
  return static_cast<std::uint16_t>(bytes[offset] | (bytes[offset + 1] << 8));
}

// e_machine of the ELF file at `path`; throws std::runtime_error naming the
// file when it cannot be read or is not a 64-bit little-endian ELF file.
inline std::uint16_t elf_machine_of_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::vector<unsigned char> header(sizeof(Elf64_Ehdr));
  in.read(reinterpret_cast<char*>(header.data()), static_cast<std::streamsize>(header.size()));
  header.resize(static_cast<std::size_t>(in.gcount()));
  try {
    return elf_machine(header);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

}  // namespace fedge::test
