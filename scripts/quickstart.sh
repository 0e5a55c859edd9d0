#!/usr/bin/env bash
# The README's main command: builds fedge, then runs the quickstart simulation
# (sims/scenarios/quickstart.toml): 8 oil-well sites, one virtual node each,
# the paradigm levels 0-6 on the same tiny pretrained base (pretrained once and
# cached in ~/.cache/fedge), data split and seed, secure aggregation on for the
# federated levels. Prints a progress line per round and the comparison table;
# metrics.csv, summary.json, summary.md and plots go to results/quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build.sh >/dev/null
out="${FEDGE_QUICKSTART_DIR:-results/quickstart}"
build/bin/fedge --log-level "${FEDGE_LOG_LEVEL:-info}" sim sims/scenarios/quickstart.toml --out "$out"
