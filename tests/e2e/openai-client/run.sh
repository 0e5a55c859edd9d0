#!/usr/bin/env bash
# The official openai npm client as a real client of `fedge node`: starts a
# node (the tiny preset, plain TCP to a coordinator nobody runs: it keeps
# serving while it waits), reads its HTTP port from the log, runs
# client_test.mjs against it and stops the node. ctest runs it (tests/CMakeLists.txt).
# Usage: tests/e2e/openai-client/run.sh FEDGE_BINARY
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fedge="$(realpath "${1:?usage: run.sh FEDGE_BINARY}")"
bash "$here/../../../scripts/install-openai-client.sh" >/dev/null

work="$(mktemp -d "${TMPDIR:-/tmp}/fedge-openai-client.XXXXXX")"
node_pid=""
cleanup() {
  if [[ -n "$node_pid" ]]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/data" "$work/keys"
for i in 1 2 3 4; do
  echo "{\"text\": \"Well $i produced $((i * 40)) barrels of oil on day $i.\"}" >> "$work/data/train.jsonl"
done
# An API key, as a site serving beyond loopback would have.
api_key="sk-fedge-openai-client-test-0123456789abcdef0123456789abcdef"
echo "$api_key openai-client-test" > "$work/keys/api_keys.txt"
chmod 600 "$work/keys/api_keys.txt"
cat > "$work/node.toml" <<TOML
[node]
id = 1
insecure = true
state_dir = "state"
[coordinator]
endpoint = "tcp://127.0.0.1:9"
[model]
path = "tiny"
threads = 1
[data]
train = "data/train.jsonl"
seq_len = 64
[serve]
http = "127.0.0.1:0"
api_keys = "keys/api_keys.txt"
TOML

(cd "$work" && exec "$fedge" --threads 1 node --config node.toml > node.log 2>&1) &
node_pid=$!
marker="OpenAI-compatible API on http://127.0.0.1:"
port=""
for _ in $(seq 1 300); do
  if grep -q "$marker" "$work/node.log" 2>/dev/null; then
    port="$(grep -o "${marker}[0-9]*" "$work/node.log" | head -1 | sed "s|.*:||")"
    break
  fi
  kill -0 "$node_pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$port" ]]; then
  echo "openai-client: the node did not start serving; its log:" >&2
  cat "$work/node.log" >&2
  exit 1
fi
if ! FEDGE_URL="http://127.0.0.1:$port/v1" FEDGE_API_KEY="$api_key" node "$here/client_test.mjs"; then
  echo "---- node.log (last 30 lines)" >&2
  tail -n 30 "$work/node.log" >&2
  exit 1
fi
