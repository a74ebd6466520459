#!/bin/sh
# Container entrypoint: RNNSERVE_* environment variables -> rnnserve flags.
#
#   rnnserve [--config $RNNSERVE_CONFIG] [--FLAG=$RNNSERVE_VAR]... [ARGS]...
#
# Settings, lowest to highest priority: built-in defaults, the YAML file
# (RNNSERVE_CONFIG, default /etc/rnnserve/server.yaml; set it empty for none),
# the environment variables below, then flags given as container arguments
# (an environment variable whose flag is also an argument is dropped, since
# rnnserve refuses a flag given twice). Empty variables count as unset.
#
#   RNNSERVE_MODEL_REPOSITORY   --model-repository   (server.model_repository)
#   RNNSERVE_GRPC_ADDRESS       --grpc-address       (server.grpc_address)
#   RNNSERVE_METRICS_ADDRESS    --metrics-address    (server.metrics_address)
#   RNNSERVE_WORKER_THREADS     --worker-threads     (server.worker_threads)
#   RNNSERVE_INTRA_OP_THREADS   --intra-op-threads   (server.intra_op_threads)
#   RNNSERVE_MAX_MESSAGE_BYTES  --max-message-bytes  (server.max_message_bytes)
#   RNNSERVE_LOG_LEVEL          --log-level          (server.log_level)
#   RNNSERVE_TLS_CERT           --tls-cert           (server.tls.cert_file)
#   RNNSERVE_TLS_KEY            --tls-key            (server.tls.key_file)
#   RNNSERVE_TLS_CLIENT_CA      --tls-client-ca      (server.tls.client_ca_file)
#   RNNSERVE_DRIFT_SAMPLE_RATE  --drift-sample-rate  (model_defaults.drift.sample_rate)
#   RNNSERVE_MODEL_CONTROL      --model-control      (server.model_control)
#   RNNSERVE_STARTUP_MODELS     --startup-models     (server.startup_models, M1,M2)
#
# A first argument that is not a flag runs that command instead, e.g.
#   podman run --rm rnnserve rnnserve-client health --address HOST:8001
#
# `exec` keeps rnnserve as PID 1's replacement, so SIGTERM from
# `podman stop` / the kubelet reaches it and starts the graceful shutdown.
set -eu

# has_flag NAME ARG...: whether NAME ("--x") is among ARGs as --x or --x=V.
has_flag() {
  name=$1
  shift
  for arg in "$@"; do
    case $arg in
      "$name" | "$name"=*) return 0 ;;
    esac
  done
  return 1
}

case ${1:-} in
  "" | -*) ;;
  *) exec "$@" ;;
esac

for pair in \
  MODEL_REPOSITORY:model-repository GRPC_ADDRESS:grpc-address \
  METRICS_ADDRESS:metrics-address WORKER_THREADS:worker-threads \
  INTRA_OP_THREADS:intra-op-threads MAX_MESSAGE_BYTES:max-message-bytes \
  LOG_LEVEL:log-level TLS_CERT:tls-cert TLS_KEY:tls-key \
  TLS_CLIENT_CA:tls-client-ca DRIFT_SAMPLE_RATE:drift-sample-rate \
  MODEL_CONTROL:model-control STARTUP_MODELS:startup-models; do
  var=RNNSERVE_${pair%%:*}
  flag=--${pair#*:}
  eval "value=\${$var:-}"
  if [ -n "$value" ] && ! has_flag "$flag" "$@"; then
    set -- "$flag=$value" "$@"
  fi
done

config=${RNNSERVE_CONFIG-/etc/rnnserve/server.yaml}
if [ -n "$config" ] && ! has_flag --config "$@"; then
  set -- --config "$config" "$@"
fi

exec rnnserve "$@"
