#!/usr/bin/env bash
# Builds the libraries that do not need libtorch (FEDGE_TORCH_FREE_ONLY) with
# FEDGE_PORTABLE=ON, so this x86 machine runs the portable decode kernels,
# quantized products, f16 conversion and AES-CTR that ARM boards run, and runs
# every test program of that build: the libraries whose code the option changes
# (common: f16 conversion; kernels; privacy: AES-CTR) and every torch-free
# library over them (aggregation's SecAgg+ sums over the portable AES masks,
# tokenizer, protocol, federation, coordinator, ...). Issue 17's fallback: the
# libtorch half with FEDGE_PORTABLE=ON would need a second libtorch build and
# test run (docs/PORTABILITY.md). With ccache (scripts/ccache-launcher.sh)
# after the main build only the three libraries the option changes and the
# torch-free-only programs compile; without it about 6 minutes on 2 cores.
# Usage: scripts/test-portable-core.sh [extra cmake -D options...]
#   FEDGE_PORTABLE_BUILD_DIR=build-portable-core   where to build
#   FEDGE_PORTABLE_SUBSET=1   only common, kernels, privacy and aggregation
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${FEDGE_PORTABLE_BUILD_DIR:-build-portable-core}"
started=$SECONDS
bash scripts/install-deps.sh >/dev/null
source scripts/ccache-launcher.sh
mkdir -p "$build_dir"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" \
  -DFEDGE_TORCH_FREE_ONLY=ON -DFEDGE_PORTABLE=ON "${launcher[@]}" "$@" \
  >"$build_dir/configure.log" 2>&1 || { cat "$build_dir/configure.log" >&2; exit 1; }
if ! grep -q '^FEDGE_PORTABLE:BOOL=ON' "$build_dir/CMakeCache.txt"; then
  echo "test-portable-core: FEDGE_PORTABLE is not an option of this tree's CMakeLists.txt" >&2
  exit 1
fi
targets=(all)
unset FEDGE_CTEST_REGEX
if [[ "${FEDGE_PORTABLE_SUBSET:-0}" == 1 ]]; then
  targets=(test_common prometheus_write_sample test_kernels test_privacy test_aggregation)
  export FEDGE_CTEST_REGEX='^(common|kernels|privacy|aggregation):'
fi
if ! cmake --build "$build_dir" -j "$(nproc)" --target "${targets[@]}" >"$build_dir/build.log" 2>&1; then
  grep -E -B2 -A20 'FAILED|error' "$build_dir/build.log" | head -80 >&2
  echo "test-portable-core: the build failed (log: $build_dir/build.log)" >&2
  exit 1
fi
bash scripts/ctest-quiet.sh "$build_dir" "test-portable-core: FEDGE_PORTABLE=ON, tests ${FEDGE_CTEST_REGEX:-of every torch-free library}"
echo "test-portable-core: done in $((SECONDS - started)) s"
