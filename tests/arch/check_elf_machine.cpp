// check_elf_machine MACHINE FILE...: exits 0 when every FILE is an ELF file
// built for MACHINE (aarch64 or x86_64), 1 otherwise, printing each file's
// machine. ctest runs it over every test program of the build
// (tests/CMakeLists.txt), so a cross build whose tests ran on the host's
// machine by mistake fails.
#include <cstdio>
#include <exception>
#include <string>

#include "elf_machine.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MACHINE FILE...   (MACHINE: aarch64 or x86_64)\n", argv[0]);
    return 2;
  }
  std::uint16_t expected = 0;
  try {
    expected = fedge::test::elf_machine_of_name(argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "check_elf_machine: %s\n", e.what());
    return 2;
  }
  int wrong = 0;
  for (int i = 2; i < argc; ++i) {
    try {
      std::uint16_t machine = fedge::test::elf_machine_of_file(argv[i]);
      bool ok = machine == expected;
      std::printf("%s: %s ELF%s\n", argv[i], fedge::test::elf_machine_name(machine).c_str(),
                  ok ? "" : (", expected " + fedge::test::elf_machine_name(expected)).c_str());
      wrong += ok ? 0 : 1;
    } catch (const std::exception& e) {
      std::printf("%s\n", e.what());
      ++wrong;
    }
  }
  std::printf("%d of %d files are %s ELF files\n", argc - 2 - wrong, argc - 2,
              fedge::test::elf_machine_name(expected).c_str());
  return wrong == 0 ? 0 : 1;
}
