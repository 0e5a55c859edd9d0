#!/usr/bin/env bash
# The chat template oracle: renders tests/data/chat_templates/*.jinja over the
# conversations of conversations.json with @huggingface/jinja (npm, pinned in
# package.json; installed here by scripts/install-deps.sh, or by npm ci below),
# then runs the hidden Catch2 test [oracle] of test_tokenizer, which renders
# the same with fedge and compares byte for byte. ctest runs it.
# Usage: tests/chat_templates/check.sh TEST_TOKENIZER_BINARY OUT_DIR [EMULATOR...]
#   EMULATOR: how to run the test binary in a cross build (qemu-aarch64-static -L /).
# Exit 77 (ctest: skipped) only when node is not installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
test_binary="$1"
out_dir="$2"
shift 2
emulator=("$@")

if ! command -v node >/dev/null; then
  echo "chat templates: SKIPPED: node is not installed, so the reference renderer (@huggingface/jinja) cannot run;"
  echo "scripts/install-deps.sh installs nodejs and npm"
  exit 77
fi
if [[ ! -f "$here/node_modules/@huggingface/jinja/package.json" ]]; then
  echo "chat templates: installing @huggingface/jinja into tests/chat_templates/node_modules (npm ci)"
  if ! (cd "$here" && npm ci --no-audit --no-fund --loglevel=error); then
    echo "chat templates: npm ci failed in tests/chat_templates: run scripts/install-deps.sh where the npm registry is reachable" >&2
    exit 1
  fi
fi
mkdir -p "$out_dir"
reference="$out_dir/chat_template_reference.json"
node "$here/render_reference.mjs" >"$reference"
FEDGE_CHAT_TEMPLATE_REFERENCE="$reference" "${emulator[@]}" "$test_binary" "[oracle]" --warn NoTests
