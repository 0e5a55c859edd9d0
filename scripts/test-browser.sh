#!/usr/bin/env bash
# fedge's pages in headless Chromium: runs every tests/browser/*.test.mjs as
# `node FILE` with FEDGE_BIN (the fedge binary), CHROMIUM (Debian's chromium)
# and ARTIFACTS (where the tests keep their screenshots) in the environment;
# fails when any fails. Installs the pinned playwright-core (tests/browser/
# package.json and package-lock.json) with `npm ci` when it is missing.
# Exits 77 (ctest: skipped) when chromium, node or npm is missing: scripts/
# install-deps.sh installs them. ctest runs it (label browser).
# Usage: scripts/test-browser.sh FEDGE_BINARY [ARTIFACTS_DIR]
#   (ARTIFACTS_DIR defaults to $ARTIFACTS, else build/browser-artifacts;
#    CHROMIUM may name another Chromium binary)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
fedge="$(realpath "${1:?usage: scripts/test-browser.sh FEDGE_BINARY [ARTIFACTS_DIR]}")"
artifacts="${2:-${ARTIFACTS:-$root/build/browser-artifacts}}"
dir="$root/tests/browser"

skip() {
  echo "test-browser: SKIPPED: $1 (scripts/install-deps.sh installs it)" >&2
  exit 77
}
# Debian's /usr/bin/chromium is a shell wrapper; the browser itself sits beside it.
chromium="${CHROMIUM:-}"
if [[ -z "$chromium" ]]; then
  for candidate in /usr/lib/chromium/chromium "$(command -v chromium || true)" "$(command -v chromium-browser || true)"; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then chromium="$candidate"; break; fi
  done
fi
[[ -n "$chromium" && -x "$chromium" ]] || skip "no chromium${chromium:+ at CHROMIUM=$chromium}"
command -v node >/dev/null || skip "no node (nodejs)"
command -v npm >/dev/null || skip "no npm"

want="$(node -e 'console.log(require(process.argv[1]).packages["node_modules/playwright-core"].version)' \
  "$dir/package-lock.json")"
have="$(node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("") }' \
  "$dir/node_modules/playwright-core/package.json")"
if [[ "$have" != "$want" ]]; then
  echo "test-browser: npm ci in $dir (playwright-core $want)"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

mkdir -p "$artifacts"
artifacts="$(realpath "$artifacts")"
failed=()
shopt -s nullglob
tests=("$dir"/*.test.mjs)
[[ ${#tests[@]} -gt 0 ]] || { echo "test-browser: no tests/browser/*.test.mjs" >&2; exit 1; }
for test in "${tests[@]}"; do
  name="$(basename "$test")"
  echo "test-browser: $name"
  start=$SECONDS
  if FEDGE_BIN="$fedge" CHROMIUM="$chromium" ARTIFACTS="$artifacts" timeout 300 node "$test"; then
    echo "test-browser: $name passed ($((SECONDS - start)) s)"
  else
    echo "test-browser: $name FAILED ($((SECONDS - start)) s)" >&2
    failed+=("$name")
  fi
done
echo "test-browser: screenshots in $artifacts"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test-browser: ${#failed[@]} of ${#tests[@]} failed: ${failed[*]}" >&2
  exit 1
fi
echo "test-browser: all ${#tests[@]} passed"
