# Every dependency is a Debian 12 package installed by scripts/install-deps.sh.
# With FEDGE_TORCH_FREE_ONLY only what the torch-free libraries and their tests
# need (scripts/build-aarch64.sh installs the arm64 builds of these).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(spdlog REQUIRED)
find_package(tomlplusplus REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(Eigen3 REQUIRED NO_MODULE)
find_package(SQLite3 REQUIRED)
find_package(CapnProto REQUIRED)
find_package(cppzmq REQUIRED)
find_package(OpenMP REQUIRED)
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)
# OpenSSL's libcrypto: the portable AES-256-CTR mask PRG (privacy/src/aes_openssl.cpp)
# on CPUs without AES-NI and in FEDGE_PORTABLE builds (libsodium's AES needs AES-NI).
find_package(OpenSSL REQUIRED COMPONENTS Crypto)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(ZMQ REQUIRED IMPORTED_TARGET libzmq)
# cpp-httplib ships no CMake config; its pkg-config file names the library and
# the defines it was built with (serving/ and the coordinator's metrics and
# dashboard listener serve HTTP with it; the coordinator is torch-free).
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
if(FEDGE_BUILD_TESTS)
  find_package(Catch2 REQUIRED)
  include(Catch)
endif()
if(FEDGE_TORCH_FREE_ONLY)
  return()
endif()

find_package(CLI11 REQUIRED)
find_package(Torch REQUIRED)
# MPI is optional: with it, `mpirun -n H+1 fedge sim SCENARIO` spreads a
# simulation over MPI ranks (sims/, docs/SIMULATOR.md); without it, over
# ZeroMQ node hosts only. On by default when an MPI (OpenMPI) is found.
find_package(MPI COMPONENTS C QUIET)
option(FEDGE_WITH_MPI "Simulations over MPI ranks (mpirun -n H+1 fedge sim SCENARIO)" ${MPI_C_FOUND})
if(FEDGE_WITH_MPI AND NOT MPI_C_FOUND)
  message(FATAL_ERROR "FEDGE_WITH_MPI is ON but no MPI was found: install openmpi-bin and libopenmpi-dev "
                      "(scripts/install-deps.sh), or configure with -DFEDGE_WITH_MPI=OFF")
endif()
message(STATUS "fedge: simulations over MPI: ${FEDGE_WITH_MPI}")

# TorchConfig exports its libraries as a plain list; wrap them in one target so
# only inference/ and training/ link it, as DESIGN.md requires.
add_library(fedge_torch INTERFACE)
target_link_libraries(fedge_torch INTERFACE ${TORCH_LIBRARIES})
target_include_directories(fedge_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
