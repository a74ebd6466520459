#!/bin/sh
# Builds the libFuzzer targets in build-fuzz/ (clang, ASan + UBSan) and runs
# each for a bounded time on a COPY of its committed seed corpus
# (tests/fuzz/corpus/<target>/ is never written). See tests/fuzz/README.md.
#
# Usage, from anywhere in the repository:
#   tests/fuzz/run_fuzz.sh [-t SECONDS] [--no-build] [TARGET...]
#     TARGET      onnx_import artifact config npy model_infer (default: all,
#                 one after another); the _fuzz suffix is optional
#     -t SECONDS  time per target (default $FUZZ_SECONDS, else 30)
#     --no-build  use the binaries already in build-fuzz/bin
# Environment: FUZZ_SECONDS (as -t), FUZZ_BUILD_DIR (default build-fuzz),
# FUZZ_WORK_DIR (default $FUZZ_BUILD_DIR/fuzz-work: working corpora, logs,
# crash inputs), FUZZ_JOBS (ninja -j, default 2), FUZZ_ARGS (extra libFuzzer
# flags).
#
# Prints one line per target (runs, exec/s, corpus, cov, ft) and exits 1 if
# any target crashed, leaked, timed out or ran out of memory, naming the
# input that did it (re-run one with: build-fuzz/bin/<target>_fuzz FILE).
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${FUZZ_SECONDS:-30}
build=1
targets=""
while [ $# -gt 0 ]; do
  case "$1" in
    -t) seconds=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run_fuzz.sh: unknown flag $1" >&2; exit 2 ;;
    *) targets="$targets ${1%_fuzz}"; shift ;;
  esac
done
all="onnx_import artifact config npy model_infer"
targets=${targets:-$all}
for t in $targets; do
  case " $all " in *" $t "*) ;; *) echo "run_fuzz.sh: unknown target $t (one of: $all)" >&2; exit 2 ;; esac
done

build_dir=${FUZZ_BUILD_DIR:-$root/build-fuzz}
work=${FUZZ_WORK_DIR:-$build_dir/fuzz-work}

if [ "$build" = 1 ]; then
  start=$(date +%s)
  CC=clang CXX=clang++ cmake -S "$root" -B "$build_dir" -G Ninja \
    -DRNNSERVE_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  bins=""
  for t in $targets; do bins="$bins ${t}_fuzz"; done
  # shellcheck disable=SC2086
  cmake --build "$build_dir" -j "${FUZZ_JOBS:-2}" --target $bins
  echo "build: $(( $(date +%s) - start )) s"
fi

# Inputs longer than this are cut: big enough for every seed that matters,
# small enough that a declared size cannot honestly need gigabytes.
max_len() {
  case "$1" in
    onnx_import) echo 16384 ;;
    artifact) echo 8192 ;;
    config) echo 4096 ;;
    *) echo 2048 ;;
  esac
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$root/tools/sanitizers/lsan.supp}"
export OMP_NUM_THREADS=1

failed=0
summary=""
for t in $targets; do
  bin="$build_dir/bin/${t}_fuzz"
  dir="$work/$t"
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp "$root/tests/fuzz/corpus/$t/"* "$dir/corpus/"
  dict=""
  [ -f "$root/tests/fuzz/dict/$t.dict" ] && dict="-dict=$root/tests/fuzz/dict/$t.dict"
  echo "== $t: ${seconds}s, $(ls "$dir/corpus" | wc -l) seeds, log $dir/fuzz.log"
  rc=0
  # shellcheck disable=SC2086
  "$bin" "$dir/corpus" $dict -max_total_time="$seconds" -max_len="$(max_len "$t")" \
    -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" ${FUZZ_ARGS:-} >"$dir/fuzz.log" 2>&1 || rc=$?
  last=$(grep -E '^#[0-9]+' "$dir/fuzz.log" | tail -1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/fuzz.log")
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/fuzz.log")
  cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
  ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
  corp=$(echo "$last" | sed -n 's/.*corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')
  line=$(printf '%-12s runs %-9s exec/s %-6s corpus %-12s cov %-6s ft %-6s' \
    "$t" "${runs:-?}" "${speed:-?}" "${corp:-?}" "${cov:-?}" "${ft:-?}")
  if [ "$rc" -ne 0 ]; then
    failed=1
    line="$line FAILED (exit $rc)"
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$dir/fuzz.log" | head -5 || true
    for f in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$dir/fuzz.log"); do
      echo "   input: $f"
      line="$line input $f"
    done
  fi
  echo "$line"
  summary="$summary$line
"
done
echo "== summary (${seconds}s per target)"
printf '%s' "$summary"
exit $failed
