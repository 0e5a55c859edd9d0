#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs the
# deployment walkthrough (scripts/federation-demo.sh), the fuzz targets
# (scripts/fuzz.sh), then every test with ctest (which prints its summary line
# at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build.sh
build_dir="${FEDGE_BUILD_DIR:-build}"
# docs/DEPLOYMENT.md's walkthrough, run as written (about 80 s: keys, data, a
# pretrained base, a coordinator and 3 nodes, secure rounds, a chat request).
# Not a ctest test: it needs both cores to itself (libtorch's OpenMP threads
# slow down several-fold beside other tests), and it binds fixed ports.
FEDGE_BIN_DIR="$build_dir/bin" bash scripts/federation-demo.sh
# libFuzzer targets for the parsers of untrusted input, 20 s each under ASan and
# UBSan (docs/FUZZING.md); a crash fails the run.
bash scripts/fuzz.sh
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" --timeout 600
