// The ELF header reader behind check_elf_machine (the cross build's "these
// test programs are aarch64" test): well-formed headers of both machines,
// every malformed header, and this program's own file.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "elf_machine.h"

using fedge::test::elf_machine;
using Catch::Matchers::Contains;

namespace {

std::vector<unsigned char> elf_header(std::uint16_t machine) {
  Elf64_Ehdr header{};
  std::memcpy(header.e_ident, ELFMAG, SELFMAG);
  header.e_ident[EI_CLASS] = ELFCLASS64;
  header.e_ident[EI_DATA] = ELFDATA2LSB;
  header.e_ident[EI_VERSION] = EV_CURRENT;
  header.e_type = ET_EXEC;
  header.e_version = EV_CURRENT;
  header.e_ehsize = sizeof(Elf64_Ehdr);
  std::vector<unsigned char> bytes(sizeof header);
  std::memcpy(bytes.data(), &header, sizeof header);
  // e_machine little-endian, whatever this host's byte order.
  bytes[offsetof(Elf64_Ehdr, e_machine)] = machine & 0xff;
  bytes[offsetof(Elf64_Ehdr, e_machine) + 1] = machine >> 8;
  return bytes;
}

}  // namespace

TEST_CASE("the ELF reader returns e_machine of aarch64 and x86-64 headers", "[elf]") {
  CHECK(elf_machine(elf_header(EM_AARCH64)) == EM_AARCH64);
  CHECK(elf_machine(elf_header(EM_X86_64)) == EM_X86_64);
  CHECK(fedge::test::elf_machine_of_name("aarch64") == 183);
  CHECK(fedge::test::elf_machine_of_name("x86_64") == 62);
  CHECK_THROWS_WITH(fedge::test::elf_machine_of_name("sparc"), Contains("unknown machine 'sparc'"));
}

TEST_CASE("the ELF reader rejects truncated, foreign and non-ELF files with the reason", "[elf]") {
  auto header = elf_header(EM_AARCH64);
  CHECK_THROWS_WITH(elf_machine({}), Contains("truncated: 0 bytes"));
  CHECK_THROWS_WITH(elf_machine(std::span(header).first(10)), Contains("truncated: 10 bytes"));
  CHECK_THROWS_WITH(elf_machine(std::span(header).first(EI_NIDENT + 2)), Contains("a 64-bit ELF header needs 64"));
  auto script = std::vector<unsigned char>(64, ' ');
  std::memcpy(script.data(), "#!/bin/sh\n", 10);
  CHECK_THROWS_WITH(elf_machine(script), Contains("not an ELF file"));
  auto elf32 = header;
  elf32[EI_CLASS] = ELFCLASS32;
  CHECK_THROWS_WITH(elf_machine(elf32), Contains("expected 64-bit"));
  auto big_endian = header;
  big_endian[EI_DATA] = ELFDATA2MSB;
  CHECK_THROWS_WITH(elf_machine(big_endian), Contains("expected little-endian"));
  CHECK_THROWS_WITH(fedge::test::elf_machine_of_file("/nonexistent/program"), Contains("cannot open"));
}

TEST_CASE("this test program's own file is an ELF file of the machine it was compiled for", "[elf]") {
  // Under qemu-user /proc/self/exe is the emulated program, not qemu.
#if defined(__aarch64__)
  constexpr std::uint16_t compiled_for = EM_AARCH64;
#elif defined(__x86_64__)
  constexpr std::uint16_t compiled_for = EM_X86_64;
#endif
#if defined(__aarch64__) || defined(__x86_64__)
  CHECK(fedge::test::elf_machine_of_file("/proc/self/exe") == compiled_for);
#else
  WARN("neither aarch64 nor x86-64: no machine to compare with");
#endif
}
