#!/usr/bin/env bash
# One site's LoRA, end to end with the separate commands (what the quickstart's
# simulator does for every site at once):
#   1. synthetic multi-site oil-well data (8 sites + a public corpus),
#   2. the tiny base model pretrained on the public corpus (made once, cached),
#   3. a LoRA adapter fine-tuned on one site's private data (level 6: on-device),
#   4. held-out perplexity of base vs adapter on that site,
#   5. generation with the adapter.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build.sh >/dev/null
fedge="build/bin/fedge --log-level ${FEDGE_LOG_LEVEL:-warn}"
fedge_progress="build/bin/fedge --log-level ${FEDGE_LOG_LEVEL:-info}"
out="${FEDGE_DEMO_DIR:-results/lora_demo}"
cache="${FEDGE_CACHE:-$HOME/.cache/fedge}/tiny-base-v1"
site="$out/data/site_00"

echo "== 1. synthetic data"
$fedge data synth --out "$out/data" --sites 8 --seed 1

echo "== 2. tiny base model (cached in $cache)"
if [[ ! -f "$cache/model.safetensors" ]]; then
  $fedge_progress pretrain --data "$out/data/public/corpus.jsonl" --out "$cache" --steps 300 --seed 1 \
    --log-every 50
else
  echo "using the cached base"
fi
build/bin/fedge info "$cache" | sed -n '2,3p'

echo "== 3. LoRA on site_00's private data"
$fedge_progress train --model "$cache" --data "$site/train.jsonl" --out "$out/site_00_adapter" \
  --rank 16 --alpha 32 --targets all --batch 8 --lr 3e-3 --no-pack --steps 150 --seed 1 --log-every 50

echo "== 4. held-out perplexity on site_00's last days"
base=$($fedge eval --model "$cache" --data "$site/eval.jsonl" | awk '/^perplexity/ {print $2}')
tuned=$($fedge eval --model "$cache" --adapter "$out/site_00_adapter" --data "$site/eval.jsonl" \
  | awk '/^perplexity/ {print $2}')
printf "| model | held-out perplexity |\n|---|---|\n| tiny base | %s |\n| base + site_00 LoRA | %s |\n" \
  "$base" "$tuned"

echo "== 5. generation with the adapter"
prompt=$(head -c 30 "$site/eval.jsonl" | sed 's/^{"text":"//')
echo "prompt: $prompt"
printf "continuation: "
$fedge generate --model "$cache" --adapter "$out/site_00_adapter" --prompt "$prompt" --max-tokens 80 \
  --temperature 0 --stop $'\n' 2>/dev/null
echo
