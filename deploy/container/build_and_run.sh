#!/usr/bin/env bash
# Builds the rnnserve container image with podman, starts it, and checks it
# from outside and inside: health (rnnserve-client and the image's own
# HEALTHCHECK), model list, one inference, /metrics, non-root user,
# read-only root filesystem, and SIGTERM under load (exit 0, no accepted
# request lost).
#
#   deploy/container/build_and_run.sh        # from anywhere in the checkout
#
# Its own command, not part of ctest: the image build compiles the whole
# server (many minutes on 2 cores) and downloads Debian packages.
#
# How it copes with these machines (no Docker engine, no registry access,
# see issue 6 §1):
#   * podman with runc (crun fails on this cgroup setup), via a private
#     containers.conf that also sets `default_ulimits = []` (the default
#     ulimits are refused: "setrlimit ... operation not permitted");
#   * the debian:bookworm base image is made with debootstrap and
#     `podman import`ed under the name the Dockerfile's FROM resolves to, and
#     the build never pulls;
#   * the build and the container use the host network (`--network host`).
#
# Environment:
#   IMAGE          image tag to build (default localhost/rnnserve:latest)
#   BUILD_JOBS     parallel compiles in the image build (default 2)
#   GRPC_PORT      host-network gRPC port of the test container (default 8001;
#   METRICS_PORT   metrics port (default 8002)   another port overrides the
#                  image's HEALTHCHECK command to match)
#   DEBIAN_MIRROR  debootstrap mirror (default http://deb.debian.org/debian)
#   SKIP_BUILD=1   test an image built before
#   KEEP=1         leave the test container running
# Needs (Debian): podman runc debootstrap, installed by `tools/install_deps.sh
# container` when missing — run as root (debootstrap needs it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${IMAGE:-localhost/rnnserve:latest}
BASE_IMAGE=docker.io/library/debian:bookworm  # what `FROM debian:bookworm` means
BUILD_JOBS=${BUILD_JOBS:-2}
GRPC_PORT=${GRPC_PORT:-8001}
METRICS_PORT=${METRICS_PORT:-8002}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
NAME=rnnserve-smoke-$$

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

ROOT_TOOLS="$ROOT/tools/install_deps.sh container"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null ||
   ! command -v debootstrap >/dev/null; then
  log "installing podman, runc, debootstrap ($ROOT_TOOLS)"
  $ROOT_TOOLS >&2 || die "could not install podman runc debootstrap"
fi

# A private containers.conf (unless the caller brings one).
WORK=$(mktemp -d)
if [ -z "${CONTAINERS_CONF:-}" ]; then
  cat >"$WORK/containers.conf" <<'CONF'
[containers]
# The default nofile/nproc ulimits are refused here (setrlimit: operation
# not permitted); keep the runtime's own.
default_ulimits = []

[engine]
# crun fails on this cgroup setup; runc (its own Debian package) works.
runtime = "runc"
CONF
  export CONTAINERS_CONF="$WORK/containers.conf"
fi
PODMAN=(podman --runtime runc)

cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    "${PODMAN[@]}" rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- base image ----------------------------------------------------------
if ! "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
  command -v debootstrap >/dev/null ||
    die "debootstrap is missing: apt-get install --no-install-recommends debootstrap"
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root to make $BASE_IMAGE"
  log "making $BASE_IMAGE with debootstrap (minbase) from $DEBIAN_MIRROR"
  rootfs="$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >&2
  # Keep the image small: no package lists or caches (apt-get update
  # fetches fresh lists in every stage that installs packages).
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | "${PODMAN[@]}" import \
    --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi

# ---- image build -----------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building $IMAGE (BUILD_JOBS=$BUILD_JOBS; takes minutes)"
  # --format docker: the OCI format drops HEALTHCHECK.
  "${PODMAN[@]}" build --format docker --network host --pull=never \
    --build-arg "BUILD_JOBS=$BUILD_JOBS" -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT"
fi

# ---- run and check -------------------------------------------------------
run_args=(run -d --name "$NAME" --network host --read-only
          -e "RNNSERVE_GRPC_ADDRESS=127.0.0.1:$GRPC_PORT"
          -e "RNNSERVE_METRICS_ADDRESS=127.0.0.1:$METRICS_PORT"
          -e "RNNSERVE_WORKER_THREADS=2")
if [ "$GRPC_PORT" != 8001 ]; then
  run_args+=(--health-cmd "rnnserve-client health --address 127.0.0.1:$GRPC_PORT")
fi
log "starting $NAME (gRPC 127.0.0.1:$GRPC_PORT, metrics 127.0.0.1:$METRICS_PORT)"
"${PODMAN[@]}" "${run_args[@]}" "$IMAGE" >/dev/null

in_container() { "${PODMAN[@]}" exec "$NAME" "$@"; }

log "waiting for health SERVING (rnnserve-client health inside the container)"
for _ in $(seq 1 60); do
  if in_container rnnserve-client health --address "127.0.0.1:$GRPC_PORT" \
       --timeout-ms 2000 >/dev/null 2>&1; then
    ready=1
    break
  fi
  [ "$("${PODMAN[@]}" inspect -f '{{.State.Running}}' "$NAME")" = true ] ||
    { "${PODMAN[@]}" logs "$NAME" >&2; die "the container exited"; }
  sleep 1
done
[ "${ready:-0}" = 1 ] || { "${PODMAN[@]}" logs "$NAME" >&2; die "not SERVING after 60 s"; }

# podman runs an image's HEALTHCHECK periodically only through systemd
# timers; without systemd (these machines) `podman run` may log "unable to
# get systemd connection to add healthchecks" and nothing runs it. Run it
# once here instead: it executes the image's command in the container.
log "image HEALTHCHECK (podman healthcheck run)"
"${PODMAN[@]}" healthcheck run "$NAME" || die "the image's HEALTHCHECK failed"

log "rnnserve-client health from a second container (entrypoint passes commands through)"
"${PODMAN[@]}" run --rm --network host "$IMAGE" \
  rnnserve-client health --address "127.0.0.1:$GRPC_PORT" || die "health from outside"

log "rnnserve-client models / infer"
in_container rnnserve-client models --address "127.0.0.1:$GRPC_PORT" | tee "$WORK/models" >&2
grep -q charlm "$WORK/models" || die "charlm not listed"
in_container rnnserve-client infer --address "127.0.0.1:$GRPC_PORT" --model charlm \
  --input /models/charlm/1/calibration.npy >&2 || die "inference failed"

log "/metrics"
python3 - "$METRICS_PORT" <<'PY' || die "/metrics"
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
assert "rnnserve_requests_total" in text, "rnnserve_requests_total missing"
print(f"{len(text.splitlines())} metric lines", file=sys.stderr)
PY

log "hardening: non-root, read-only root filesystem"
uid=$(in_container id -u)
[ "$uid" = 10001 ] || die "runs as uid $uid, want 10001"
if in_container sh -c 'touch /models/x' 2>/dev/null; then die "root filesystem writable"; fi

# ---- SIGTERM under load ------------------------------------------------------
# A closed-loop load generator in a second container keeps 8 requests in
# flight; the server gets SIGTERM in the middle. No request the server
# accepted may be lost: its shutdown line must count as many answered as
# accepted, and the client must have seen exactly as many OK answers as the
# server gave during the load (the server's OK count before the load comes
# from /metrics). Requests sent after the drain began fail (UNAVAILABLE or
# CANCELLED): those were never accepted.
ok_before=$(python3 - "$METRICS_PORT" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
print(int(sum(float(m.group(1)) for m in re.finditer(
    r'^rnnserve_requests_total\{[^}]*code="OK"[^}]*\} (\S+)$', text, re.M))))
PY
) || die "reading rnnserve_requests_total"
log "SIGTERM under load: perf at concurrency 8 from a second container ($ok_before OK so far)"
"${PODMAN[@]}" run --rm --network host "$IMAGE" \
  rnnserve-client perf --address "127.0.0.1:$GRPC_PORT" --model charlm \
  --input /models/charlm/1/calibration.npy --concurrency 8 --warmup 0 \
  --duration 10 --json >"$WORK/perf.json" 2>"$WORK/perf.err" &
perf_pid=$!
sleep 4
"${PODMAN[@]}" stop --time 40 "$NAME" >/dev/null
wait "$perf_pid" || { cat "$WORK/perf.err" >&2; die "perf under SIGTERM exited $?"; }
code=$("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$NAME")
"${PODMAN[@]}" logs "$NAME" 2>&1 | tail -n 4 >&2
[ "$code" = 0 ] || die "exit code $code after SIGTERM, want 0"
"${PODMAN[@]}" logs "$NAME" 2>&1 | grep -q 'exit 0' || die "no 'exit 0' in the log"
shutdown_line=$("${PODMAN[@]}" logs "$NAME" 2>&1 | grep 'shutdown complete:') ||
  die "no 'shutdown complete' line in the log"
python3 - "$WORK/perf.json" "$ok_before" "$shutdown_line" <<'PY' || die "requests lost under SIGTERM"
import json, re, sys
perf = json.load(open(sys.argv[1]))
ok_before = int(sys.argv[2])
m = re.search(r"(\d+) inference requests accepted, (\d+) answered \((\d+) OK\)", sys.argv[3])
assert m, f"unexpected shutdown line: {sys.argv[3]!r}"
accepted, answered, server_ok = map(int, m.groups())
client_ok = perf["requests"] - perf["errors"]
print(f"client: {client_ok} OK, errors {perf['errors_by_code']}; server: accepted "
      f"{accepted}, answered {answered}, OK {server_ok} ({ok_before} before the load)",
      file=sys.stderr)
assert accepted == answered, "the server dropped accepted requests"
assert client_ok > 0, "no request succeeded before SIGTERM: the load never ran"
assert client_ok == server_ok - ok_before, "client and server disagree on OK answers"
unexpected = set(perf["errors_by_code"]) - {"UNAVAILABLE", "CANCELLED"}
assert not unexpected, f"errors other than the drain's: {unexpected}"
PY

log "PASS: $IMAGE"
