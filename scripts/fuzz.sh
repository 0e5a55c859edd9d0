#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/, clang, ASan + UBSan) and runs each
# for a fixed time from its seed corpus in tests/fuzz/corpus/. Fails on any
# crash, sanitizer report or unexpected exception, and prints how many inputs
# each target ran. CI runs it from scripts/test.sh. See docs/FUZZING.md.
# Usage: scripts/fuzz.sh [TARGET...]      (default: every target)
#   FEDGE_FUZZ_SECONDS=20     time per target
#   FEDGE_FUZZ_BUILD_DIR=build-fuzz
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
build_dir="${FEDGE_FUZZ_BUILD_DIR:-build-fuzz}"
seconds="${FEDGE_FUZZ_SECONDS:-20}"
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(protocol safetensors gguf tokenizer config host_wire http records model_config
                                      chat_template)

# ccache, where installed, makes a rebuild after a small change take seconds.
source scripts/ccache-launcher.sh
cmake -S tests/fuzz -B "$build_dir" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ "${launcher[@]}" >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target "${targets[@]/#/fuzz_}"

# The largest input each target takes: messages and files a few KiB long reach
# every branch; tokenizer.json seeds are up to 8 KiB.
declare -A max_len=([protocol]=8192 [safetensors]=4096 [gguf]=4096 [tokenizer]=16384 [config]=4096
                    [host_wire]=8192 [http]=4096 [records]=4096 [model_config]=4096 [chat_template]=8192)
failed=()
echo "fuzz: ${#targets[@]} target(s), ${seconds} s each, ASan + UBSan"
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  # New inputs go to a scratch copy: the committed corpus changes only by hand.
  cp -r "tests/fuzz/corpus/$t/." "$work/"
  log="$build_dir/fuzz_$t.log"
  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
     "$build_dir/bin/fuzz_$t" -max_total_time="$seconds" -max_len="${max_len[$t]:-4096}" -timeout=10 \
       -rss_limit_mb=2048 -artifact_prefix="$build_dir/crash-$t-" -print_final_stats=1 "$work" >"$log" 2>&1; then
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo "?")
    printf 'fuzz: %-12s ok: %9s inputs, %5s coverage points, corpus %s -> %s files\n' "$t" "$runs" "$cov" \
      "$(ls "tests/fuzz/corpus/$t" | wc -l)" "$(ls "$work" | wc -l)"
  else
    echo "fuzz: $t FAILED; the input that broke it is $build_dir/crash-$t-*; log $log:"
    tail -40 "$log"
    failed+=("$t")
  fi
  rm -rf "$work"
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}"
  exit 1
fi
echo "fuzz: every target ran clean"
