#!/usr/bin/env bash
# Runs ctest in a build folder with its output in BUILD_DIR/ctest.log and
# prints one summary line, or the failing tests' output and exits 1. For the
# extra builds scripts/test.sh runs before the main ctest, whose summary must
# stay the last lines CI prints (scripts/build-aarch64.sh,
# scripts/test-portable-core.sh).
# Usage: scripts/ctest-quiet.sh BUILD_DIR LABEL [REQUIRED_TEST...]
#   REQUIRED_TEST: a test name that must have run and passed (a check that
#   must not silently drop out of the build).
#   FEDGE_CTEST_REGEX: run only the tests whose names match (ctest -R).
set -euo pipefail
build_dir="$1"
label="$2"
shift 2
log="$build_dir/ctest.log"
filter=()
[[ -n "${FEDGE_CTEST_REGEX:-}" ]] && filter=(-R "$FEDGE_CTEST_REGEX")
if ! ctest --test-dir "$build_dir" "${filter[@]}" --output-on-failure -j "$(nproc)" --timeout 600 >"$log" 2>&1; then
  grep -E -A40 '\*\*\*Failed|\*\*\*Exception|\*\*\*Timeout|Not Run' "$log" | head -150 >&2
  tail -15 "$log" >&2
  echo "$label: tests failed (log: $log)" >&2
  exit 1
fi
for required in "$@"; do
  if ! grep -qF -- "$required" "$log" || ! grep -F -- "$required" "$log" | grep -q 'Passed'; then
    echo "$label: the test '$required' did not run (log: $log)" >&2
    exit 1
  fi
done
if ! summary=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log"); then
  # ctest exits 0 when no test matched: that is a check that silently dropped out.
  tail -5 "$log" >&2
  echo "$label: no test ran (log: $log)" >&2
  exit 1
fi
echo "$label: $summary (log: $log)"
