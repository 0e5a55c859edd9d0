#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs every test
# with ctest (which prints its summary line at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build.sh
build_dir="${FEDGE_BUILD_DIR:-build}"
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" --timeout 600
