#!/usr/bin/env bash
# Installs the pinned official `openai` npm client into tests/e2e/openai-client/
# (node_modules there is .gitignored) for the e2e test that uses it as a real
# client (tests/e2e/openai-client/client_test.mjs). Needs node and npm
# (scripts/install-deps.sh) and the npm registry; does nothing when the pinned
# version is already there.
set -euo pipefail
dir="$(cd "$(dirname "$0")/../tests/e2e/openai-client" && pwd)"
want="$(node -e 'console.log(require(process.argv[1]).dependencies.openai)' "$dir/package.json")"
have="$(node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("") }' \
  "$dir/node_modules/openai/package.json")"
if [[ "$have" == "$want" ]]; then
  echo "install-openai-client: openai $want present"
  exit 0
fi
echo "install-openai-client: installing openai $want into $dir/node_modules"
cd "$dir"
npm install --no-audit --no-fund --no-package-lock --loglevel=error
