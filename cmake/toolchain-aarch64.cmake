# Cross build for 64-bit ARM (Raspberry Pi 4/5, Jetson, phones) on a Debian 12
# x86-64 host, with Debian's cross compiler and the arm64 builds of the
# libraries installed side by side (multiarch: /usr/lib/aarch64-linux-gnu).
# scripts/build-aarch64.sh installs both and uses this file; ctest runs the
# test programs under qemu (docs/PORTABILITY.md).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Multiarch: the target's libraries live in /usr/lib/aarch64-linux-gnu of the
# host's own root, so the root is "/" and CMake looks in lib/<arch> (from
# CMAKE_LIBRARY_ARCHITECTURE) and in the architecture-free lib/cmake and
# share/ folders (Catch2, Eigen, nlohmann-json, cppzmq). Programs (capnp, the
# schema compiler) are the host's.
set(CMAKE_FIND_ROOT_PATH /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# A host library found by mistake would fail only at link time: keep the
# x86-64 folders out of every search.
list(APPEND CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu
     /usr/lib/x86_64-linux-gnu/cmake /usr/lib/x86_64-linux-gnu/pkgconfig)

# pkg-config (libsodium, libzmq, libpcre2-8) reads the arm64 .pc files only.
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")

# ctest and Catch2's test discovery run target programs through qemu-user.
# `-L /`: the dynamic loader and every library come from the host's multiarch
# arm64 packages (libc6:arm64, libstdc++6:arm64, libgomp1:arm64, libsodium23:arm64,
# ...), one consistent set. Not `-L /usr/aarch64-linux-gnu`: that loader is the
# cross toolchain's glibc (2.36-8cross1), which would then load the multiarch
# libc.so.6 (2.36-9+deb12u*) found through ld.so.cache: two glibc builds in one process.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static -L /)
