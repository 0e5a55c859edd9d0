#!/usr/bin/env bash
# Per-site held-out perplexity of the tiny pretrained base, a LoRA adapter
# trained on the site's own data only (level 6), and one trained on all sites'
# data pooled (what centralised training would reach). Writes OUT/table.md.
# Usage: scripts/site_experiment.sh [OUT] (default results/sites)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/sites}"
fedge="${FEDGE:-build/bin/fedge} --log-level warn --threads ${THREADS:-0}"
sites=8
steps=300
lora=(--rank 16 --alpha 32 --targets all --batch 8 --lr 3e-3 --no-pack --steps "$steps" --seed 1)

mkdir -p "$out"
$fedge data synth --out "$out/data" --sites "$sites" --seed 1
if [[ ! -f "$out/base/model.safetensors" ]]; then
  echo "pretraining the tiny base on the public corpus..."
  $fedge pretrain --data "$out/data/public/corpus.jsonl" --out "$out/base" --steps 300 --seed 1
fi
cat "$out"/data/site_*/train.jsonl > "$out/pooled_train.jsonl"
echo "training the pooled adapter..."
$fedge train --model "$out/base" --data "$out/pooled_train.jsonl" --out "$out/pooled" "${lora[@]}" >/dev/null

perplexity() { $fedge eval --model "$out/base" "$@" | awk '/^perplexity/ {print $2}'; }
{
  echo "| site | base | local-only LoRA | pooled LoRA |"
  echo "|---|---|---|---|"
  for dir in "$out"/data/site_*; do
    site=$(basename "$dir")
    echo "training $site's local adapter..." >&2
    $fedge train --model "$out/base" --data "$dir/train.jsonl" --out "$out/local_$site" "${lora[@]}" >/dev/null
    base=$(perplexity --data "$dir/eval.jsonl")
    local_only=$(perplexity --adapter "$out/local_$site" --data "$dir/eval.jsonl")
    pooled=$(perplexity --adapter "$out/pooled" --data "$dir/eval.jsonl")
    echo "| $site | $base | $local_only | $pooled |"
  done
} | tee "$out/table.md"
