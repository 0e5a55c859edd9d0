#!/usr/bin/env bash
# Runs write_sample (the writer's every kind of family) and reads its output
# with the reference parser. Usage: check_sample.sh WRITE_SAMPLE OUT_FILE [EMULATOR...]
#   EMULATOR: how to run write_sample in a cross build (qemu-aarch64-static -L /).
set -euo pipefail
sample="$1" out="$2"
shift 2
"$@" "$sample" > "$out"
set -- "$out"
# Label values in checks take Python escapes: the hostile name is
# a"b\c<newline>d} x="1".
exec python3 "$(dirname "$0")/check_prometheus.py" "$1" \
  fedge_requests_total:counter 'fedge_requests_total{outcome=completed}==12' \
  'fedge_requests_total{outcome=failed}==0' \
  'fedge_node_info{name=a"b\\c\nd} x="1",id=7}==1' \
  'fedge_special_values{v=inf}>=1e308' 'fedge_special_values{v=small}==1e-300' \
  fedge_round_duration_seconds:histogram 'fedge_round_duration_seconds_bucket{le=+Inf}==5' \
  'fedge_round_duration_seconds_bucket{le=1}==3' 'fedge_round_duration_seconds_sum==104.3' \
  'fedge_round_duration_seconds_count==5' fedge_empty:gauge
