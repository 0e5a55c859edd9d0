#!/usr/bin/env bash
# Issue 14's round trip on the tiny pretrained base (the simulator's cached
# base, which the quickstart made): HF folder -> `fedge quantize` -> GGUF ->
# load. Fails unless Q8_0 moves the logits of a prompt by under 1% relative
# L2 (Q6_K too), and held-out perplexity is within 1% of f32 for Q8_0 and
# Q6_K and 10% for Q4_0 and Q4_K. (On this small base one prompt's logits and
# the perplexity do not rank Q4_K against Q4_0: the weights' own round-trip
# error does, tests/kernels/test_quant_formats.cpp.) Prints the greedy
# continuations
# (docs/MODEL_FORMATS.md records them).
# Usage: scripts/quantize-check.sh   (FEDGE_BUILD_DIR=build, FEDGE_CACHE as the simulator's)
set -euo pipefail
cd "$(dirname "$0")/.."

fedge="${FEDGE_BUILD_DIR:-build}/bin/fedge"
base="${FEDGE_CACHE:-${HOME:-/tmp}/.cache/fedge}/tiny-base-v1"
if [ ! -f "$base/config.json" ]; then
  echo "quantize-check: no tiny pretrained base in $base: run the quickstart (scripts/quickstart.sh) first" >&2
  exit 1
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { "$fedge" --threads 1 --log-level warn "$@"; }

prompt="Well A-12 reported"
# Held-out text no pretraining step saw: every site's eval.jsonl of seed 7.
run data synth --out "$out/synth" --seed 7 >/dev/null
cat "$out"/synth/site_*/eval.jsonl >"$out/eval.jsonl"

for type in q8_0 q4_0 q4_k q6_k; do
  run quantize --model "$base" --out "$out/$type.gguf" --type "$type" --compare "$prompt" >"$out/$type.quantize"
done
l2() { sed -n 's/^logits relative L2 vs .*: //p' "$out/$1.quantize"; }
l2_q8=$(l2 q8_0) l2_q4=$(l2 q4_0) l2_q4k=$(l2 q4_k) l2_q6k=$(l2 q6_k)

perplexity() { run eval --model "$1" --data "$out/eval.jsonl" --seq-len 128 --no-accuracy | sed -n 's/^perplexity //p'; }
ppl_f32=$(perplexity "$base")
ppl_q8=$(perplexity "$out/q8_0.gguf")
ppl_q4=$(perplexity "$out/q4_0.gguf")
ppl_q4k=$(perplexity "$out/q4_k.gguf")
ppl_q6k=$(perplexity "$out/q6_k.gguf")

# (its speed line goes to stderr)
greedy() { run generate --model "$1" --prompt "$prompt" --max-tokens 40 --temperature 0 2>>"$out/generate.log" | sed -n '1p'; }
echo "quantize-check: greedy continuation of '$prompt':"
echo "  f32  folder: $(greedy "$base")"
echo "  Q8_0 GGUF:   $(greedy "$out/q8_0.gguf")"
echo "  Q4_0 GGUF:   $(greedy "$out/q4_0.gguf")"
echo "  Q4_K GGUF:   $(greedy "$out/q4_k.gguf")"
echo "  Q6_K GGUF:   $(greedy "$out/q6_k.gguf")"
echo "quantize-check: logits relative L2 vs f32: Q8_0 $l2_q8, Q4_0 $l2_q4, Q4_K $l2_q4k, Q6_K $l2_q6k;" \
     "held-out perplexity f32 $ppl_f32, Q8_0 $ppl_q8, Q4_0 $ppl_q4, Q4_K $ppl_q4k, Q6_K $ppl_q6k"

python3 - "$l2_q8" "$ppl_f32" "$ppl_q8" "$ppl_q4" "$l2_q6k" "$ppl_q4k" "$ppl_q6k" <<'PY'
import sys
l2_q8, f32, q8, q4, l2_q6k, q4k, q6k = map(float, sys.argv[1:])
failures = []
if not l2_q6k < 0.01:
    failures.append(f"Q6_K logits relative L2 {l2_q6k:.4f} is not under 0.01")
if not abs(q6k - f32) / f32 < 0.01:
    failures.append(f"Q6_K perplexity {q6k} is not within 1% of f32's {f32}")
if not abs(q4k - f32) / f32 < 0.10:
    failures.append(f"Q4_K perplexity {q4k} is not within 10% of f32's {f32}")

if not l2_q8 < 0.01:
    failures.append(f"Q8_0 logits relative L2 {l2_q8:.4f} is not under 0.01")
if not abs(q8 - f32) / f32 < 0.01:
    failures.append(f"Q8_0 perplexity {q8} is not within 1% of f32's {f32}")
if not abs(q4 - f32) / f32 < 0.10:
    failures.append(f"Q4_0 perplexity {q4} is not within 10% of f32's {f32}")
for f in failures:
    print("quantize-check: FAILED:", f, file=sys.stderr)
sys.exit(1 if failures else 0)
PY
echo "quantize-check: passed"
