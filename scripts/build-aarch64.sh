#!/usr/bin/env bash
# Cross-compiles the libraries that do not need libtorch (the
# FEDGE_TORCH_FREE_ONLY build: common, protocol, the tokenizer, model_config,
# the kernels, privacy, aggregation, federation, coordinator and the
# torch-free parsers of training/, serving/ and sims/) for aarch64 with
# Debian's cross compiler, and runs their tests under qemu-aarch64-static; one
# of them asserts that the programs it ran are aarch64 ELF files. On a Debian 12
# x86-64 machine (root or sudo) it first installs what it needs: the cross
# compiler, qemu-user-static and the arm64 builds of the libraries beside the
# host's (multiarch). CI runs it from scripts/test.sh. See docs/PORTABILITY.md.
# Usage: scripts/build-aarch64.sh [extra cmake -D options...]
#   FEDGE_AARCH64_BUILD_DIR=build-aarch64   where to build
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${FEDGE_AARCH64_BUILD_DIR:-build-aarch64}"
started=$SECONDS

if [[ "$(dpkg --print-architecture)" == "arm64" ]]; then
  echo "build-aarch64: this machine is arm64: build natively with scripts/build.sh (docs/PORTABILITY.md)" >&2
  exit 1
fi

# The host's tools and architecture-free headers, then the arm64 libraries.
# libgomp1:arm64 so that every library under qemu comes from the multiarch
# set, loader included (cmake/toolchain-aarch64.cmake says why).
host_packages=(cmake ninja-build pkg-config capnproto catch2 libeigen3-dev nlohmann-json3-dev
               g++-aarch64-linux-gnu qemu-user-static)
arm64_packages=(libsodium-dev libzmq3-dev cppzmq-dev libcapnp-dev libspdlog-dev libtomlplusplus-dev
                libsqlite3-dev libpcre2-dev libssl-dev libcpp-httplib-dev libgomp1)

# installed ARCH PACKAGE: true when PACKAGE is installed for ARCH (or is
# architecture-free). A plain `dpkg-query -W PACKAGE` matches any architecture.
installed() {
  dpkg-query -W -f='${db:Status-Abbrev} ${Architecture}\n' "$2" 2>/dev/null | grep -qE "^ii +($1|all)$"
}
host_arch="$(dpkg --print-architecture)"
missing=()
for package in "${host_packages[@]}"; do
  installed "$host_arch" "$package" || missing+=("$package")
done
for package in "${arm64_packages[@]}"; do
  installed arm64 "$package:arm64" || missing+=("$package:arm64")
done

if [[ ${#missing[@]} -gt 0 ]]; then
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "build-aarch64: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo_cmd=(sudo)
  fi
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "build-aarch64: adding the arm64 architecture to dpkg (multiarch)"
    "${sudo_cmd[@]}" dpkg --add-architecture arm64
  fi
  echo "build-aarch64: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  # An arm64 library must be the same version as its amd64 twin, so apt may
  # upgrade host packages; --no-remove stops it before it removes any (an arm64
  # package that cannot live beside the host's, like libtorch-dev, would).
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends --no-remove "${missing[@]}"
fi

# ccache, where installed, makes a rebuild after a small change take seconds.
source scripts/ccache-launcher.sh
mkdir -p "$build_dir"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake \
  -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" -DFEDGE_TORCH_FREE_ONLY=ON "${launcher[@]}" "$@" \
  >"$build_dir/configure.log" 2>&1 || { cat "$build_dir/configure.log" >&2; exit 1; }
if ! cmake --build "$build_dir" -j "$(nproc)" >"$build_dir/build.log" 2>&1; then
  grep -E -B2 -A20 'FAILED|error' "$build_dir/build.log" | head -80 >&2
  echo "build-aarch64: the cross build failed (log: $build_dir/build.log)" >&2
  exit 1
fi

# ctest runs every test program through qemu-aarch64-static (the toolchain
# file's CMAKE_CROSSCOMPILING_EMULATOR; binfmt_misc is not needed). The ELF
# check must have run and passed: it is what says these were aarch64 programs.
bash scripts/ctest-quiet.sh "$build_dir" "build-aarch64: under qemu-aarch64-static" \
  "arch: every test program is an aarch64 ELF file"
echo "build-aarch64: done in $((SECONDS - started)) s"
