# rnnserve container image: the server, its CLI client and the offline model
# tool, with the bundled demo model (charlm) as /models.
#
#   podman build --format docker --network host -t rnnserve .
#   podman run --rm -p 8001:8001 -p 8002:8002 rnnserve
#
# deploy/container/build_and_run.sh builds and smoke-tests it here (podman,
# a debootstrap base image; see that script). `--format docker` keeps the
# HEALTHCHECK (the OCI image format has no health check field).
#
# Configuration (deploy/container/entrypoint.sh has the details):
#   * /etc/rnnserve/server.yaml (deploy/container/server.yaml): mount your own
#     over it, or point RNNSERVE_CONFIG elsewhere;
#   * RNNSERVE_* environment variables, e.g. RNNSERVE_WORKER_THREADS=4;
#   * flags as container arguments, e.g. `--log-level debug` (they win);
#   * models: mount a repository over /models (or RNNSERVE_MODEL_REPOSITORY).
# The root filesystem may be read-only: the server writes nothing to disk.

# ---- build: the project's own dependency script and CMake build ----------
FROM debian:bookworm AS build

# The same package list as CI and the README (one source of truth). Copied
# alone first so the dependency layer is cached across source edits.
COPY tools/install_deps.sh /src/tools/install_deps.sh
RUN /src/tools/install_deps.sh build && rm -rf /var/lib/apt/lists/*

COPY . /src
# Two parallel compiles by default: the build machines share few cores.
ARG BUILD_JOBS=2
# ccache helps developers, not a one-shot image build.
ENV CCACHE_DISABLE=1
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
 && cmake --build /build --parallel "${BUILD_JOBS}" \
      --target rnnserve rnnserve-client rnnserve-model

# ---- runtime: the binaries and their shared libraries only ---------------
FROM debian:bookworm

# Explicit, since a debootstrap-imported base image sets no PATH: the
# entrypoint and the HEALTHCHECK find the binaries through it.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The Debian runtime packages of the libraries the binaries link
# (`dpkg -S` of each `ldd` line on bookworm); their own dependencies
# (absl, re2, c-ares, civetweb, ...) come with them.
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libdnnl2 ocl-icd-libopencl1 \
      libyaml-cpp0.7 libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
      libonnx1 libgomp1 libssl3 \
 && rm -rf /var/lib/apt/lists/*

COPY --from=build /build/bin/rnnserve /build/bin/rnnserve-client \
     /build/bin/rnnserve-model /usr/local/bin/
COPY deploy/container/entrypoint.sh /usr/local/bin/rnnserve-entrypoint
COPY deploy/container/server.yaml /etc/rnnserve/server.yaml
COPY deploy/model-repository /models

# Fail the build, not the first start, when a shared library is missing.
RUN for b in rnnserve rnnserve-client rnnserve-model; do \
      if ldd "/usr/local/bin/$b" | grep 'not found'; then exit 1; fi; \
    done \
 && chmod 0755 /usr/local/bin/rnnserve-entrypoint \
 && groupadd --system --gid 10001 rnnserve \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin rnnserve

# Numeric, so Kubernetes runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /tmp

# gRPC (KServe V2 + grpc.health.v1) and Prometheus /metrics.
EXPOSE 8001 8002

# SERVING once the start-up models are loaded; NOT_SERVING while draining.
# It dials 127.0.0.1:8001 in plaintext: if you move the gRPC port or enable
# TLS, override it (docker run --health-cmd ...) or use --no-healthcheck.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["rnnserve-client", "health", "--address", "127.0.0.1:8001", "--timeout-ms", "4000"]

# rnnserve drains on SIGTERM (stop accepting, finish accepted requests, up to
# 30 s): give `docker/podman stop` at least --time 40.
STOPSIGNAL SIGTERM
ENTRYPOINT ["rnnserve-entrypoint"]
CMD []
