#!/bin/sh
# The server and batcher tests against a ThreadSanitizer build of rnnserve
# (clang, -DRNNSERVE_SANITIZE=thread, build directory build-tsan/). Every
# library, binary and test of the tree is instrumented; the tests that start
# the real rnnserve binary (integration, Python client, Prometheus scrape,
# soak smoke) run that instrumented binary, so a race in the server fails
# them through TSan's exit code.
#
# Debian's gRPC, absl and protobuf are not built with TSan. What keeps the
# reports to rnnserve's own races (tools/sanitizers/):
#   tsan_ignorelist.txt  gRPC's and protobuf's inline header code is compiled
#                        without access instrumentation, like their libraries;
#   tsan.supp            interceptor calls from those libraries, and reports
#                        with one access inside gRPC's own call machinery;
#   server/common/tsan.h rnnserve's reactors tell TSan the order gRPC keeps
#                        between an operation and its callback.
#
# Labels left out: bench (speed runs) and deploy (checks the release
# build's shared libraries).
#
#   tests/sanitize/run_tsan.sh [extra ctest args, e.g. -R ServerFaults]
# Environment: TSAN_BUILD_DIR (default build-tsan), SANITIZE_JOBS (2).
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
build_dir=${TSAN_BUILD_DIR:-$root/build-tsan}
jobs=${SANITIZE_JOBS:-2}

start=$(date +%s)
CC=clang CXX=clang++ cmake -S "$root" -B "$build_dir" -G Ninja \
  -DRNNSERVE_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build_dir" -j "$jobs"
echo "tsan: build $(( $(date +%s) - start )) s"

# Inherited by every test and every binary a test starts.
export TSAN_OPTIONS="${TSAN_OPTIONS:-suppressions=$root/tools/sanitizers/tsan.supp second_deadlock_stack=1}"
export ARCHER_OPTIONS="${ARCHER_OPTIONS:-enable=0}"  # LLVM OpenMP's TSan helper: quiet
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs" -LE 'bench|deploy' "$@"
