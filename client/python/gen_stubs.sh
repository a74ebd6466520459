#!/bin/sh
# Generate the Python protocol stubs from proto/ (nothing generated is
# committed). Usage: client/python/gen_stubs.sh [OUT_DIR]   (default:
# build/python). Needs Debian's python3-grpcio and python3-grpc-tools, hence
# /usr/bin/python3 (override with RNNSERVE_PYTHON). Writes, for each service
# proto, <name>_pb2.py (messages) and <name>_pb2_grpc.py (stubs); put OUT_DIR
# on sys.path / PYTHONPATH and `import grpc_service_pb2, grpc_service_pb2_grpc`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-"$root/build/python"}
py=${RNNSERVE_PYTHON:-/usr/bin/python3}
mkdir -p "$out"
"$py" -m grpc_tools.protoc -I "$root/proto" \
  --python_out="$out" --grpc_python_out="$out" \
  "$root/proto/grpc_service.proto" "$root/proto/rnnserve_service.proto" \
  "$root/proto/health.proto"
