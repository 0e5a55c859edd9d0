#!/usr/bin/env bash
# Installs what is missing, configures (Release by default) and builds fedge.
# Usage: scripts/build.sh [extra cmake -D options...]
#   FEDGE_BUILD_DIR=build   where to build
#   FEDGE_SANITIZE=1        ASan + UBSan build (use another FEDGE_BUILD_DIR)
#   FEDGE_CCACHE=0          compile without ccache (scripts/ccache-launcher.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
build_dir="${FEDGE_BUILD_DIR:-build}"
sanitize=OFF
[[ "${FEDGE_SANITIZE:-0}" == "1" ]] && sanitize=ON
source scripts/ccache-launcher.sh
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" \
  -DFEDGE_SANITIZE="$sanitize" "${launcher[@]}" "$@"
cmake --build "$build_dir" -j "$(nproc)"
echo "build: $build_dir/bin/fedge"
