#!/usr/bin/env bash
# Runs docs/DEPLOYMENT.md's walkthrough verbatim: the shell block between its
# `walkthrough:begin` and `walkthrough:end` markers, read from the page, in a
# fresh folder holding a copy of configs/. Then checks what the steps left:
# the coordinator exited 0 after its secure rounds, every node took part and
# installed the last global adapter, and the chat answer came from that adapter.
# Usage: scripts/federation-demo.sh [WORK_DIR]   (default: a new temp folder, removed on success)
#   FEDGE_BIN_DIR   folder holding the `fedge` binary (default: build/bin; built if missing)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
page="$root/docs/DEPLOYMENT.md"
bin_dir="${FEDGE_BIN_DIR:-$root/build/bin}"
if [[ ! -x "$bin_dir/fedge" ]]; then
  bash "$root/scripts/build.sh" >/dev/null
fi
bin_dir="$(cd "$bin_dir" && pwd)"  # the steps run in another folder
export PATH="$bin_dir:$PATH"

work="${1:-}"
keep=1
if [[ -z "$work" ]]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/fedge-demo.XXXXXX")"
  keep=0
fi
mkdir -p "$work"
cp -r "$root/configs" "$work/"

steps="$work/walkthrough.sh"
awk '/<!-- walkthrough:begin -->/ {on = 1; next} /<!-- walkthrough:end -->/ {on = 0} on && !/^```/' "$page" > "$steps"
if [[ ! -s "$steps" ]]; then
  echo "federation-demo: no walkthrough block between the markers in $page" >&2
  exit 1
fi

# The walkthrough binds fixed ports: say so plainly when one is taken.
for port in 5555 8080 8081 8082 9464; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "federation-demo: port $port is in use on this machine; the walkthrough's configs need it free" >&2
    exit 1
  fi
done

fail() {
  echo "federation-demo: FAILED: $*" >&2
  for log in "$work"/*.log; do
    [[ -f "$log" ]] || continue
    echo "---- $(basename "$log") (last 40 lines)" >&2
    tail -n 40 "$log" >&2
  done
  echo "federation-demo: the work folder is kept: $work" >&2
  exit 1
}

# The daemons this walkthrough started: those whose working folder is $work.
demo_pids() {
  local pid
  for pid in $(pgrep -f -- "fedge (coordinator|node) --config configs/" || true); do
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$work" ]] && echo "$pid"
  done
  return 0
}
cleanup() {
  # Whatever a failed step left running must not outlive the demo.
  local pids
  pids=$(demo_pids)
  [[ -n "$pids" ]] && kill -TERM $pids 2>/dev/null
  return 0
}
trap cleanup EXIT

echo "federation-demo: running the walkthrough of docs/DEPLOYMENT.md in $work"
cd "$work"
start=$(date +%s)
# The block runs as written, in its own shell that stops at the first failing
# step; its standard output ends with the chat answer.
set +e
bash -e "$steps" > steps.out 2> steps.err
rc=$?
set -e
[[ $rc -eq 0 ]] || fail "a walkthrough step failed with status $rc (steps.err: $(tail -n 5 steps.err))"
answer=$(tail -n 1 steps.out)
echo "federation-demo: walkthrough done in $(( $(date +%s) - start )) s"

# ---- checks (not part of the page) ----
rounds=$(sed -n 's/^rounds *= *\([0-9]*\).*/\1/p' configs/coordinator.toml)
[[ -n "$rounds" ]] || fail "no rounds in configs/coordinator.toml"
grep -q "round $rounds completed" coordinator.log || fail "the coordinator did not complete round $rounds"
for n in 1 2 3; do
  [[ -f "state/node$n/global/adapter_model.safetensors" ]] || fail "node $n has no global adapter in state/node$n/global"
done
# The answer: an OpenAI chat completion with text, served by the last global.
grep -q '"object":"chat.completion"' <<<"$answer" || fail "the chat answer is not a chat completion: ${answer:0:400}"
grep -q '"content":"[^"]' <<<"$answer" || fail "the chat answer has no text: ${answer:0:400}"
grep -q "\"adapter\":\"global\",\"adapter_version\":$rounds" <<<"$answer" ||
  fail "the chat answer was not served by global version $rounds: ${answer:0:600}"
# The walkthrough's last step stopped the nodes (SIGTERM: a clean stop).
for _ in $(seq 1 100); do
  [[ -z "$(demo_pids)" ]] && break
  sleep 0.1
done
[[ -z "$(demo_pids)" ]] || fail "nodes still run after the walkthrough's kill: $(demo_pids)"

echo "federation-demo: chat answer from site-00: ${answer:0:300}"
echo "federation-demo: passed ($rounds secure rounds over 3 nodes; the chat answer came from global version $rounds)"
if [[ $keep -eq 0 ]]; then
  cd /
  rm -rf "$work"
fi
