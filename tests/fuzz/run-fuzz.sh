#!/usr/bin/env bash
# run-fuzz.sh BUILD_DIR [SECONDS] - run every libFuzzer target of an -DEG_FUZZ=ON build for
# SECONDS (default $EG_FUZZ_SECONDS, else 20), $EG_FUZZ_JOBS (default 2) at a time, each on a
# fresh copy of its seed corpus tests/fuzz/corpus/<parser>/ (the seeds in the tree stay as they
# are). Exits non-zero if any target crashed, leaked, hit UB, timed out or ran out of memory;
# the input that did it is kept in BUILD_DIR/fuzz-runs/<parser>/ and its log printed.
set -euo pipefail
build=$(readlink -f "$1")
secs=${2:-${EG_FUZZ_SECONDS:-20}}
jobs=${EG_FUZZ_JOBS:-2}
src=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
out="$build/fuzz-runs"
rm -rf "$out"
mkdir -p "$out"

targets=()
for f in "$src"/fuzz_*.c; do
  name=$(basename "$f" .c)
  [ -x "$build/tests/$name" ] || { echo "run-fuzz: $build/tests/$name not built" >&2; exit 1; }
  targets+=("${name#fuzz_}")
done

one() { # one PARSER: run it, print one line, non-zero on a finding
  local p=$1 dir="$out/$1"
  mkdir -p "$dir/corpus"
  [ -d "$src/corpus/$p" ] && cp -r "$src/corpus/$p/." "$dir/corpus/"
  if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     "$build/tests/fuzz_$p" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
       -max_len=65536 -print_final_stats=1 -artifact_prefix="$dir/" "$dir/corpus" \
       >"$dir/log" 2>&1; then
    echo "fuzz $p: ok, $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log" |
      grep -o '[0-9]*$' || echo '?') runs in ${secs}s"
  else
    echo "fuzz $p: FAILED (log and input in $dir)"
    tail -60 "$dir/log"
    return 1
  fi
}
export -f one
export out src build secs

echo "==> libFuzzer: ${#targets[@]} targets, ${secs}s each, $jobs at a time"
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'one "$@"' _ {}
