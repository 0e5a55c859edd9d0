#!/usr/bin/env bash
# Builds the libraries that do not need libtorch (FEDGE_TORCH_FREE_ONLY) with
# FEDGE_PORTABLE=ON, so this x86 machine runs the portable decode kernels,
# quantized products, f16 conversion and AES-CTR that ARM boards run, and runs
# their tests. CI runs it from scripts/test.sh: the whole suite with
# FEDGE_PORTABLE=ON would need a second libtorch build and test run, over CI's
# time budget (docs/PORTABILITY.md).
# Usage: scripts/test-portable-core.sh [extra cmake -D options...]
#   FEDGE_PORTABLE_BUILD_DIR=build-portable-core   where to build
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${FEDGE_PORTABLE_BUILD_DIR:-build-portable-core}"
started=$SECONDS
bash scripts/install-deps.sh >/dev/null
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
mkdir -p "$build_dir"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" \
  -DFEDGE_TORCH_FREE_ONLY=ON -DFEDGE_PORTABLE=ON "${launcher[@]}" "$@" \
  >"$build_dir/configure.log" 2>&1 || { cat "$build_dir/configure.log" >&2; exit 1; }
if ! grep -q '^FEDGE_PORTABLE:BOOL=ON' "$build_dir/CMakeCache.txt"; then
  echo "test-portable-core: FEDGE_PORTABLE is not an option of this tree's CMakeLists.txt" >&2
  exit 1
fi
if ! cmake --build "$build_dir" -j "$(nproc)" >"$build_dir/build.log" 2>&1; then
  grep -E -B2 -A20 'FAILED|error' "$build_dir/build.log" | head -80 >&2
  echo "test-portable-core: the build failed (log: $build_dir/build.log)" >&2
  exit 1
fi
bash scripts/ctest-quiet.sh "$build_dir" "test-portable-core: FEDGE_PORTABLE=ON, libraries without libtorch"
echo "test-portable-core: done in $((SECONDS - started)) s"
