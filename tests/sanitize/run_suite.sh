#!/bin/sh
# The test suite against an ASan + UBSan build of rnnserve, in the clang
# build directory the fuzz targets use (build-fuzz/, see tests/fuzz/): every
# library of proto/, server/ and client/ is compiled with
# -fsanitize=address,undefined -fno-sanitize-recover=all (and libFuzzer's
# coverage, which only costs a little speed), so a leak, an out-of-bounds
# access or undefined behaviour in rnnserve's code fails the test that hit
# it. Test sources themselves are not instrumented; that keeps this build a
# few minutes (the fully instrumented gcc build, -DRNNSERVE_SANITIZE=
# address,undefined, takes ~40 min of CPU here).
#
# Runs every test except two labels whose subject is not rnnserve's code
# paths: `bench` (speed runs; meaningless under sanitizers) and `deploy`
# (checks the Dockerfile's runtime packages against the gcc release build's
# shared libraries: a clang build links LLVM's libomp instead of libgomp).
#
#   tests/sanitize/run_suite.sh [extra ctest args, e.g. -R ServerFaults]
# Environment: SANITIZE_BUILD_DIR (default build-fuzz), SANITIZE_JOBS (2).
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
build_dir=${SANITIZE_BUILD_DIR:-$root/build-fuzz}
jobs=${SANITIZE_JOBS:-2}

start=$(date +%s)
CC=clang CXX=clang++ cmake -S "$root" -B "$build_dir" -G Ninja \
  -DRNNSERVE_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build_dir" -j "$jobs"
echo "sanitize: build $(( $(date +%s) - start )) s"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$root/tools/sanitizers/lsan.supp}"
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" -LE 'bench|deploy' "$@"
