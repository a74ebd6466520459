#!/usr/bin/env bash
# Installs every Debian package rnnserve needs to build, test and run.
# Idempotent: packages already present are skipped, and apt-get update runs only
# when something is missing. Used by the README, .ci/run and the Dockerfile.
set -euo pipefail

BUILD_PKGS=(
  build-essential cmake ninja-build ccache pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libdnnl-dev ocl-icd-opencl-dev
  prometheus-cpp-dev libyaml-cpp-dev libonnx-dev
  libgtest-dev libgmock-dev libbenchmark-dev libssl-dev
)
PY_PKGS=(
  python3-torch python3-onnx python3-numpy
  python3-grpcio python3-grpc-tools python3-prometheus-client
  libopenblas0-openmp
)
# fortunes: the text tools/train_demo_model.py trains the demo model on;
# openssl: the TLS tests make their certificates with its command line;
# clang, libclang-rt-dev (libFuzzer, sanitizer runtimes), llvm (its
# symbolizer): the fuzz targets in tests/fuzz.
TEST_PKGS=(prometheus gnuplot-nox fortunes openssl clang libclang-rt-dev llvm)
# deploy/container/build_and_run.sh: podman with runc, and debootstrap for
# the base image (no registry is reachable).
CONTAINER_PKGS=(podman runc debootstrap)

want=("${BUILD_PKGS[@]}")
case "${1:-all}" in
  build) ;;
  all) want+=("${PY_PKGS[@]}" "${TEST_PKGS[@]}") ;;
  container) want=("${CONTAINER_PKGS[@]}") ;;
  *) echo "usage: $0 [build|all|container]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install_deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install_deps: all ${#want[@]} packages present"
fi
