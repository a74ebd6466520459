#!/usr/bin/python3
"""Checks rnnserve's Kubernetes manifests and Dockerfile (issue 6 §1-§2).

    /usr/bin/python3 tests/deploy/check_k8s.py [--bin-dir build/bin] [--root DIR]
                                               [--kubectl PATH]

Kubernetes (deploy/k8s, Kustomize):
  * every YAML file parses; kustomization.yaml lists every manifest and every
    listed file exists; the ConfigMap (configMapGenerator or a resource) holds
    server.yaml and the model configs;
  * against the ConfigMap's server.yaml: containerPorts "grpc"/"metrics", the
    gRPC probes (startup, readiness, liveness) and the Services' targets are
    the ports of grpc_address/metrics_address, which bind all interfaces;
    CPU request == limit == worker_threads x intra_op_threads (worker_threads
    set explicitly); no TLS (Kubernetes gRPC probes speak plaintext);
  * the ConfigMap's files are mounted where the server reads them (--config
    path, <model_repository>/<model>/config.yaml) and its name is the one
    the volumes use; the model configs equal deploy/model-repository's;
  * terminationGracePeriodSeconds >= preStop sleep + the server's shutdown
    grace (server/rpc/server.h) + ~5 s for gRPC to close idle connections;
  * non-root, read-only root filesystem, an emptyDir /tmp;
  * selectors: Deployment, Services and PDB select the pod labels; a headless
    Service (clusterIP None); the ServiceMonitor selects exactly one Service,
    by its "metrics" port; the HPA (autoscaling/v2) targets the Deployment
    with CPU and the Pods metric rnnserve_queue_depth, which the server
    exports and prometheus-adapter-rules.yaml serves;
  * the real server accepts the ConfigMap: build/bin/rnnserve runs with the
    extracted server.yaml and model configs on a copy of the repository
    (addresses moved to 127.0.0.1:0), logs "listening on gRPC", loads every
    model, answers `rnnserve-client health` and exits 0 on one SIGTERM;
  * `kubectl kustomize deploy/k8s` renders, if kubectl is installed.

Container (Dockerfile, deploy/container):
  * every stage FROM debian:bookworm; the build stage runs
    tools/install_deps.sh and builds rnnserve rnnserve-client rnnserve-model;
    the runtime stage runs as a non-root USER (the Deployment's runAsUser),
    EXPOSEs the container config's ports, has a HEALTHCHECK running
    `rnnserve-client health` on the gRPC port and an ENTRYPOINT; COPY sources
    exist and .dockerignore keeps .git and build trees out; the image's
    config (deploy/container/server.yaml) is deploy/config/server.yaml but
    for model_repository /models;
  * the runtime apt packages (with their dependencies and bookworm's
    required packages) provide every shared library build/bin's binaries
    link (ldd + dpkg -S on this Debian host);
  * the entrypoint's RNNSERVE_* variables map to flags `rnnserve --help`
    lists, and the entrypoint with deploy/container/server.yaml starts the
    real server (as above) and passes SIGTERM to it.

Not here: building and running the image (deploy/container/build_and_run.sh,
minutes of compiling). Exits 0 when all pass; otherwise prints every failure
and exits 1. Needs PyYAML (Debian python3-yaml).
"""

import argparse
import fnmatch
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

try:
    import yaml
except ImportError:  # pragma: no cover
    print("FAIL: PyYAML is missing (apt-get install python3-yaml)")
    sys.exit(1)

K8S_DIR = os.path.join("deploy", "k8s")
CONTAINER_CONFIG = os.path.join("deploy", "container", "server.yaml")
EXAMPLE_CONFIG = os.path.join("deploy", "config", "server.yaml")
ENTRYPOINT = os.path.join("deploy", "container", "entrypoint.sh")
# The config path the image's entrypoint uses when none is given.
IMAGE_DEFAULT_CONFIG = "/etc/rnnserve/server.yaml"
# gRPC's Server::Shutdown(deadline) may take a few seconds more to close
# idle connections after the deadline.
GRPC_IDLE_CLOSE_S = 5
QUEUE_METRIC = "rnnserve_queue_depth"
SERVER_DEFAULTS = {"grpc_address": "0.0.0.0:8001", "metrics_address": "0.0.0.0:8002",
                   "intra_op_threads": 1, "model_repository": "/models"}


class Checker:
    def __init__(self):
        self.failures = []

    def fail(self, msg):
        self.failures.append(msg)
        print(f"FAIL: {msg}")

    def ok(self, msg):
        print(f"ok: {msg}")

    def expect(self, cond, msg, ok_msg=None):
        if cond:
            if ok_msg:
                self.ok(ok_msg)
        else:
            self.fail(msg)
        return cond


def port_of(address):
    """'0.0.0.0:8001' -> (host, 8001); None for unix: or malformed."""
    if not isinstance(address, str) or address.startswith("unix:") or ":" not in address:
        return None, None
    host, _, port = address.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return host, None


def cpu_cores(quantity):
    """Kubernetes CPU quantity ('2', '1500m', 2) -> cores as float."""
    s = str(quantity)
    if s.endswith("m"):
        return float(s[:-1]) / 1000.0
    return float(s)


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------- loading

def load_k8s(c, root):
    """Parses deploy/k8s. Returns (kustomization, objects, configmaps) where
    configmaps maps a ConfigMap name to {key: text}."""
    kdir = os.path.join(root, K8S_DIR)
    parsed = {}
    for dirpath, _, files in os.walk(kdir):
        for f in sorted(files):
            if not f.endswith((".yaml", ".yml")):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, kdir)
            try:
                with open(path, encoding="utf-8") as fh:
                    parsed[rel] = [d for d in yaml.safe_load_all(fh) if d is not None]
            except (OSError, yaml.YAMLError) as e:
                c.fail(f"{K8S_DIR}/{rel}: does not parse: {e}")
    c.ok(f"{len(parsed)} YAML files in {K8S_DIR} parse")

    kust = (parsed.get("kustomization.yaml") or [None])[0]
    if not isinstance(kust, dict):
        c.fail(f"{K8S_DIR}/kustomization.yaml missing or empty")
        return {}, [], {}
    resources = kust.get("resources") or []
    objects = []
    for r in resources:
        if r not in parsed:
            c.fail(f"kustomization.yaml: resource {r} is not a YAML file in {K8S_DIR}")
            continue
        for doc in parsed[r]:
            if not (isinstance(doc, dict) and doc.get("kind") and doc.get("apiVersion")):
                c.fail(f"{r}: a document without kind/apiVersion")
                continue
            doc["_file"] = r
            objects.append(doc)
    for rel, docs in parsed.items():
        is_manifest = any(isinstance(d, dict) and "kind" in d and "apiVersion" in d for d in docs)
        if is_manifest and rel != "kustomization.yaml" and rel not in resources:
            c.fail(f"{K8S_DIR}/{rel} is a manifest but kustomization.yaml does not list it")

    configmaps = {}
    for gen in kust.get("configMapGenerator") or []:
        data = {}
        for entry in gen.get("files") or []:
            key, _, path = entry.partition("=") if "=" in entry else (
                os.path.basename(entry), "", entry)
            try:
                with open(os.path.join(kdir, path), encoding="utf-8") as fh:
                    data[key] = fh.read()
            except OSError as e:
                c.fail(f"configMapGenerator {gen.get('name')}: {e}")
        for lit in gen.get("literals") or []:
            k, _, v = lit.partition("=")
            data[k] = v
        configmaps[gen.get("name")] = data
    for o in objects:
        if o["kind"] == "ConfigMap":
            configmaps[o["metadata"]["name"]] = dict(o.get("data") or {})
    return kust, objects, configmaps


def one(c, objects, kind, pred=lambda o: True):
    found = [o for o in objects if o["kind"] == kind and pred(o)]
    if len(found) != 1:
        c.fail(f"want exactly one {kind}, found {len(found)}")
        return None
    return found[0]


def server_container(dep):
    containers = dep["spec"]["template"]["spec"].get("containers") or []
    for ct in containers:
        if "rnnserve" in str(ct.get("image", "")) or ct.get("name") == "rnnserve":
            return ct
    return containers[0] if containers else None


def config_path_of(container):
    """The --config file the container's server reads."""
    args = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    for i, a in enumerate(args):
        if a == "--config" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    for e in container.get("env") or []:
        if e.get("name") == "RNNSERVE_CONFIG" and "value" in e:
            return e["value"]
    return IMAGE_DEFAULT_CONFIG


def mounted_configmap_files(pod_spec, container, configmaps):
    """{absolute path in the container: (configmap name, key)} for files the
    container's configMap volumes provide."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    out = {}
    for m in container.get("volumeMounts") or []:
        v = volumes.get(m.get("name"))
        if not v or "configMap" not in v:
            continue
        cm = v["configMap"].get("name")
        items = v["configMap"].get("items")
        files = ({it["path"]: it["key"] for it in items} if items
                 else {k: k for k in configmaps.get(cm, {})})
        if m.get("subPath"):
            if m["subPath"] in files:
                out[m["mountPath"]] = (cm, files[m["subPath"]])
        else:
            for p, k in files.items():
                out[os.path.join(m["mountPath"], p)] = (cm, k)
    return out


# ---------------------------------------------------------------- checks

def server_grace_seconds(c, root):
    path = os.path.join(root, "server", "rpc", "server.h")
    try:
        with open(path, encoding="utf-8") as fh:
            m = re.search(r"shutdown_grace\{([0-9']+)\}", fh.read())
    except OSError:
        m = None
    if not m:
        c.fail("cannot read the shutdown grace (shutdown_grace{...}) from server/rpc/server.h")
        return 30
    return int(m.group(1).replace("'", "")) / 1000.0


def prestop_sleep_seconds(container):
    pre = ((container.get("lifecycle") or {}).get("preStop")) or {}
    if "sleep" in pre:
        return int(pre["sleep"].get("seconds", 0))
    cmd = (pre.get("exec") or {}).get("command") or []
    words = shlex.split(" ".join(str(w) for w in cmd)) if cmd else []
    for i, w in enumerate(words):
        if os.path.basename(w) == "sleep" and i + 1 < len(words):
            try:
                return float(words[i + 1])
            except ValueError:
                return None
    return None


def check_deployment(c, root, objects, configmaps):
    """Returns facts the later checks need, or None."""
    dep = one(c, objects, "Deployment")
    if dep is None:
        return None
    pod = dep["spec"]["template"]
    pod_spec = pod["spec"]
    pod_labels = pod["metadata"].get("labels") or {}
    c.expect(labels_match(dep["spec"]["selector"].get("matchLabels"), pod_labels),
             "Deployment selector does not match its pod template labels",
             "Deployment selector matches the pod labels")
    ct = server_container(dep)
    if ct is None:
        c.fail("Deployment has no container")
        return None

    # The ConfigMap the pod mounts, and the server.yaml in it.
    files = mounted_configmap_files(pod_spec, ct, configmaps)
    config_path = config_path_of(ct)
    if config_path not in files:
        c.fail(f"nothing mounts a ConfigMap file at the server's --config path {config_path}")
        return None
    cm_name, key = files[config_path]
    if cm_name not in configmaps or key not in configmaps[cm_name]:
        c.fail(f"{config_path} mounts ConfigMap {cm_name} key {key}, which kustomization.yaml "
               "does not define")
        return None
    c.ok(f"ConfigMap {cm_name} key {key} is mounted at --config {config_path}")
    server_yaml = configmaps[cm_name][key]
    try:
        doc = yaml.safe_load(server_yaml) or {}
    except yaml.YAMLError as e:
        c.fail(f"ConfigMap {cm_name}/{key} does not parse: {e}")
        return None
    srv = dict(SERVER_DEFAULTS)
    srv.update(doc.get("server") or {})

    grpc_host, grpc_port = port_of(srv["grpc_address"])
    metrics_host, metrics_port = port_of(srv["metrics_address"])
    if grpc_port is None or metrics_port is None:
        c.fail(f"server.yaml addresses must be HOST:PORT here (got {srv['grpc_address']}, "
               f"{srv['metrics_address']})")
        return None
    for what, host in (("grpc_address", grpc_host), ("metrics_address", metrics_host)):
        c.expect(host in ("0.0.0.0", "::", ""),
                 f"server.yaml {what} binds {host}: probes and Services dial the pod IP, "
                 "bind 0.0.0.0")

    # Ports.
    ports = {p.get("name"): p.get("containerPort") for p in ct.get("ports") or []}
    c.expect(ports.get("grpc") == grpc_port,
             f"containerPort 'grpc' is {ports.get('grpc')}, server.yaml grpc_address port "
             f"is {grpc_port}",
             f"containerPort grpc == server.yaml grpc_address port {grpc_port}")
    c.expect(ports.get("metrics") == metrics_port,
             f"containerPort 'metrics' is {ports.get('metrics')}, server.yaml metrics_address "
             f"port is {metrics_port}",
             f"containerPort metrics == server.yaml metrics_address port {metrics_port}")

    # Probes: native gRPC health on the gRPC port, in plaintext.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = ct.get(probe)
        if not p:
            c.fail(f"container has no {probe}")
            continue
        g = p.get("grpc")
        c.expect(g is not None and g.get("port") == grpc_port,
                 f"{probe} must be a grpc probe on port {grpc_port} (got {p})",
                 f"{probe}: grpc.health.v1 on port {grpc_port}"
                 + (f" service {g.get('service')!r}" if g and g.get("service") else ""))
    tls = srv.get("tls") or {}
    c.expect(not tls.get("cert_file"),
             "server.yaml enables TLS but Kubernetes gRPC probes only speak plaintext")

    # CPU vs worker threads.
    workers = (doc.get("server") or {}).get("worker_threads")
    intra = int(srv.get("intra_op_threads") or 1)
    res = ct.get("resources") or {}
    lim = (res.get("limits") or {}).get("cpu")
    req = (res.get("requests") or {}).get("cpu")
    if not isinstance(workers, int):
        c.fail("server.yaml must set server.worker_threads: its default counts the node's "
               "CPUs, not the pod's CPU limit")
    elif lim is None or req is None:
        c.fail("container needs resources.requests.cpu and resources.limits.cpu")
    else:
        want = workers * intra
        c.expect(cpu_cores(lim) == want and cpu_cores(req) == want,
                 f"CPU request {req} / limit {lim} != worker_threads {workers} x "
                 f"intra_op_threads {intra} = {want}",
                 f"CPU request == limit == {want} == worker_threads {workers} x "
                 f"intra_op_threads {intra}")
    c.expect((res.get("limits") or {}).get("memory") is not None,
             "container has no memory limit")

    # Graceful shutdown timing.
    grace = server_grace_seconds(c, root)
    sleep = prestop_sleep_seconds(ct)
    tgps = pod_spec.get("terminationGracePeriodSeconds", 30)
    if sleep is None:
        c.fail("container has no preStop sleep (endpoint removal before SIGTERM)")
    else:
        need = sleep + grace + GRPC_IDLE_CLOSE_S
        c.expect(tgps >= need,
                 f"terminationGracePeriodSeconds {tgps} < preStop sleep {sleep:g} + server "
                 f"grace {grace:g} + {GRPC_IDLE_CLOSE_S} s gRPC close = {need:g}",
                 f"terminationGracePeriodSeconds {tgps} >= preStop {sleep:g} + grace "
                 f"{grace:g} + {GRPC_IDLE_CLOSE_S}")

    # Hardening.
    psc = pod_spec.get("securityContext") or {}
    csc = ct.get("securityContext") or {}
    c.expect(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True,
             "runAsNonRoot is not true")
    run_as = csc.get("runAsUser", psc.get("runAsUser"))
    c.expect(run_as != 0, "runAsUser 0 (root)")
    c.expect(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
    c.expect(csc.get("allowPrivilegeEscalation") is False,
             "allowPrivilegeEscalation is not false")
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    tmp = [m for m in ct.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"]
    c.expect(bool(tmp) and "emptyDir" in volumes.get(tmp[0]["name"], {}),
             "no emptyDir mounted at /tmp (the root filesystem is read-only)",
             "non-root, read-only root filesystem, emptyDir /tmp")

    # Model configs from the ConfigMap: mounted at <repo>/<model>/config.yaml.
    repo = srv["model_repository"]
    model_files = {}
    for path, (cm, k) in files.items():
        if path == config_path:
            continue
        rel = os.path.relpath(path, repo)
        parts = rel.split(os.sep)
        if rel.startswith("..") or len(parts) != 2 or parts[1] != "config.yaml":
            c.fail(f"ConfigMap file {cm}/{k} is mounted at {path}, not at "
                   f"{repo}/<model>/config.yaml")
            continue
        model_files[parts[0]] = configmaps.get(cm, {}).get(k)
    for cm, data in configmaps.items():
        used = {k for (n, k) in files.values() if n == cm}
        for k in data:
            if k not in used:
                c.fail(f"ConfigMap {cm} key {k} is not mounted into the server container")
    for model, text in model_files.items():
        src = os.path.join(root, "deploy", "model-repository", model, "config.yaml")
        try:
            with open(src, encoding="utf-8") as fh:
                same = yaml.safe_load(fh) == yaml.safe_load(text or "")
        except (OSError, yaml.YAMLError) as e:
            c.fail(f"model config {model}: {e}")
            continue
        c.expect(same, f"the ConfigMap's {model} config.yaml differs from "
                 f"deploy/model-repository/{model}/config.yaml (copy it into {K8S_DIR}/config)",
                 f"the ConfigMap's {model} config.yaml equals the repository's")

    annotations = pod["metadata"].get("annotations") or {}
    if "prometheus.io/port" in annotations:
        c.expect(str(annotations["prometheus.io/port"]) == str(metrics_port),
                 f"prometheus.io/port {annotations['prometheus.io/port']} != metrics port "
                 f"{metrics_port}")

    return {"dep": dep, "pod_labels": pod_labels, "container": ct, "grpc_port": grpc_port,
            "metrics_port": metrics_port, "server_yaml": server_yaml,
            "model_files": model_files, "run_as": run_as}


def target_port(container, target):
    for p in container.get("ports") or []:
        if target in (p.get("name"), p.get("containerPort")):
            return p.get("containerPort")
    return None


def check_services(c, objects, facts):
    services = [o for o in objects if o["kind"] == "Service"]
    ct = facts["container"]
    want = {"grpc": facts["grpc_port"], "metrics": facts["metrics_port"]}
    headless = []
    for s in services:
        name = s["metadata"]["name"]
        spec = s["spec"]
        c.expect(labels_match(spec.get("selector"), facts["pod_labels"]),
                 f"Service {name} does not select the Deployment's pods",
                 f"Service {name} selects the Deployment's pods")
        for p in spec.get("ports") or []:
            tp = target_port(ct, p.get("targetPort", p.get("port")))
            if p.get("name") not in want:
                c.fail(f"Service {name} port {p.get('name')!r}: name it grpc or metrics")
            else:
                c.expect(tp == want[p["name"]],
                         f"Service {name} port {p['name']} targets {tp}, the server listens "
                         f"on {want[p['name']]}")
        if spec.get("clusterIP") == "None":
            headless.append(s)
            c.expect(any(p.get("name") == "grpc" for p in spec.get("ports") or []),
                     f"headless Service {name} has no grpc port")
        else:
            c.expect(spec.get("type", "ClusterIP") == "ClusterIP",
                     f"Service {name} type {spec.get('type')}: want ClusterIP")
            names = {p.get("name") for p in spec.get("ports") or []}
            c.expect(names >= {"grpc", "metrics"},
                     f"Service {name} needs named ports grpc and metrics (has {sorted(names)})")
    c.expect(len(headless) == 1, f"want one headless Service (clusterIP: None), "
             f"found {len(headless)}", "a headless Service for client-side balancing")
    c.expect(len(services) - len(headless) >= 1, "no ClusterIP Service")
    return services


def check_servicemonitor(c, objects, services, facts):
    sm = one(c, objects, "ServiceMonitor")
    if sm is None:
        return
    c.expect(sm["apiVersion"] == "monitoring.coreos.com/v1",
             f"ServiceMonitor apiVersion {sm['apiVersion']}")
    sel = (sm["spec"].get("selector") or {}).get("matchLabels") or {}
    chosen = [s for s in services if labels_match(sel, s["metadata"].get("labels") or {})]
    if len(chosen) != 1:
        c.fail(f"ServiceMonitor selects {len(chosen)} Services "
               f"({[s['metadata']['name'] for s in chosen]}); want exactly one, or pods are "
               "scraped more than once")
        return
    svc = chosen[0]
    ports = {p.get("name"): p for p in svc["spec"].get("ports") or []}
    for ep in sm["spec"].get("endpoints") or []:
        p = ports.get(ep.get("port"))
        tp = target_port(facts["container"], p.get("targetPort", p.get("port"))) if p else None
        c.expect(tp == facts["metrics_port"],
                 f"ServiceMonitor endpoint port {ep.get('port')!r} is not Service "
                 f"{svc['metadata']['name']}'s metrics port",
                 f"ServiceMonitor scrapes Service {svc['metadata']['name']} port "
                 f"{ep.get('port')} ({tp})")
    c.expect(bool(sm["spec"].get("endpoints")), "ServiceMonitor has no endpoints")


def check_hpa_pdb(c, root, objects, facts):
    hpa = one(c, objects, "HorizontalPodAutoscaler")
    dep = facts["dep"]
    if hpa is not None:
        c.expect(hpa["apiVersion"] == "autoscaling/v2", f"HPA apiVersion {hpa['apiVersion']}")
        ref = hpa["spec"].get("scaleTargetRef") or {}
        c.expect(ref.get("kind") == "Deployment" and ref.get("name") == dep["metadata"]["name"],
                 f"HPA scaleTargetRef {ref} is not the Deployment")
        metrics = hpa["spec"].get("metrics") or []
        cpu = [m for m in metrics if m.get("type") == "Resource"
               and (m.get("resource") or {}).get("name") == "cpu"]
        pods = [m for m in metrics if m.get("type") == "Pods"
                and ((m.get("pods") or {}).get("metric") or {}).get("name") == QUEUE_METRIC]
        c.expect(bool(cpu) and bool(pods),
                 f"HPA needs a Resource cpu metric and a Pods metric {QUEUE_METRIC}",
                 f"HPA scales the Deployment on cpu and Pods metric {QUEUE_METRIC}")
        src = os.path.join(root, "server", "metrics", "server_metrics.cc")
        try:
            with open(src, encoding="utf-8") as fh:
                exported = f'"{QUEUE_METRIC}"' in fh.read()
        except OSError:
            exported = False
        c.expect(exported, f"{QUEUE_METRIC} is not in server/metrics/server_metrics.cc")
        adapter = os.path.join(root, K8S_DIR, "prometheus-adapter-rules.yaml")
        try:
            with open(adapter, encoding="utf-8") as fh:
                rules = (yaml.safe_load(fh) or {}).get("rules", {}).get("custom") or []
            served = {(r.get("name") or {}).get("as") for r in rules}
            c.expect(QUEUE_METRIC in served,
                     f"prometheus-adapter-rules.yaml does not serve {QUEUE_METRIC}",
                     f"prometheus-adapter-rules.yaml serves {QUEUE_METRIC}")
        except (OSError, yaml.YAMLError, AttributeError) as e:
            c.fail(f"prometheus-adapter-rules.yaml: {e}")
        min_replicas = hpa["spec"].get("minReplicas", 1)
    else:
        min_replicas = dep["spec"].get("replicas", 1)

    pdb = one(c, objects, "PodDisruptionBudget")
    if pdb is not None:
        sel = (pdb["spec"].get("selector") or {}).get("matchLabels")
        c.expect(labels_match(sel, facts["pod_labels"]), "PDB does not select the pods",
                 "PDB selects the pods")
        min_avail = pdb["spec"].get("minAvailable")
        if isinstance(min_avail, int):
            c.expect(min_avail < min_replicas,
                     f"PDB minAvailable {min_avail} >= minReplicas {min_replicas}: drains "
                     "would block")


def check_kubectl(c, root, kubectl, objects):
    if not kubectl:
        print("SKIP: kubectl not installed; `kubectl kustomize deploy/k8s` not run")
        return
    proc = subprocess.run([kubectl, "kustomize", os.path.join(root, K8S_DIR)],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        c.fail(f"kubectl kustomize failed: {proc.stderr.strip()}")
        return
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    want = sorted([o["kind"] for o in objects] + ["ConfigMap"] * (
        1 if not any(o["kind"] == "ConfigMap" for o in objects) else 0))
    c.expect(kinds == want, f"kubectl kustomize renders {kinds}, want {want}")
    cms = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    dep = [d for d in docs if d["kind"] == "Deployment"]
    refs = {v["configMap"]["name"] for d in dep
            for v in d["spec"]["template"]["spec"].get("volumes") or [] if "configMap" in v}
    c.expect(refs and refs <= cms,
             f"rendered Deployment mounts ConfigMaps {sorted(refs)}, rendered are {sorted(cms)}",
             f"kubectl kustomize renders {len(docs)} objects; volumes use ConfigMap "
             f"{', '.join(sorted(refs))}")


# ---------------------------------------------------------------- the real server

def run_server(c, label, cmd, env, cwd, client, expect_models=True, expect_config=None):
    """Starts the server, waits for it to be ready, checks health, SIGTERMs it
    once and expects exit 0."""
    with tempfile.NamedTemporaryFile("w", prefix="check_k8s_", suffix=".log",
                                     delete=False) as log:
        log_path = log.name
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        text, address, deadline = "", None, time.time() + 60
        while time.time() < deadline:
            with open(log_path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            m = re.search(r"listening on gRPC (\S+)", text)
            address = m.group(1) if m else None
            if address and re.search(r"ready: \d+ of \d+ models ready", text):
                break
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        if proc.poll() is not None:
            c.fail(f"{label}: the server exited with {proc.returncode}:\n{text}")
            return
        if not address:
            c.fail(f"{label}: no 'listening on gRPC' within 60 s:\n{text}")
            return
        m = re.search(r"ready: (\d+) of (\d+) models ready", text)
        if expect_models:
            c.expect(m and m.group(1) == m.group(2) and int(m.group(2)) > 0,
                     f"{label}: not every model loaded:\n{text}")
        if expect_config:
            c.expect(f"config {expect_config}" in text,
                     f"{label}: the server did not read --config {expect_config}:\n{text}")
        if client:
            h = subprocess.run([client, "health", "--address", address, "--timeout-ms", "5000"],
                               capture_output=True, text=True, timeout=30)
            c.expect(h.returncode == 0, f"{label}: rnnserve-client health exit "
                     f"{h.returncode}: {h.stdout}{h.stderr}")
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "timeout"
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        c.expect(rc == 0, f"{label}: exit {rc} after SIGTERM (want 0):\n{text}",
                 f"{label}: listening on gRPC {address}, "
                 f"{m.group(0) if m else 'models ?'}, health SERVING, exit 0 on SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.unlink(log_path)


def check_server_accepts_configmap(c, root, bin_dir, facts):
    server = os.path.join(bin_dir, "rnnserve")
    client = os.path.join(bin_dir, "rnnserve-client")
    if not os.access(server, os.X_OK):
        c.fail(f"{server} not found (build it, or pass --bin-dir)")
        return
    client = client if os.access(client, os.X_OK) else None
    with tempfile.TemporaryDirectory(prefix="check_k8s_") as tmp:
        repo = os.path.join(tmp, "models")
        shutil.copytree(os.path.join(root, "deploy", "model-repository"), repo)
        for model, text in facts["model_files"].items():
            os.makedirs(os.path.join(repo, model), exist_ok=True)
            with open(os.path.join(repo, model, "config.yaml"), "w", encoding="utf-8") as fh:
                fh.write(text or "")
        cfg = os.path.join(tmp, "server.yaml")
        with open(cfg, "w", encoding="utf-8") as fh:
            fh.write(facts["server_yaml"])
        env = dict(os.environ, OMP_NUM_THREADS="1")
        run_server(c, "ConfigMap server.yaml on the real server",
                   [server, "--config", cfg, "--model-repository", repo,
                    "--grpc-address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0"],
                   env, tmp, client, expect_config=cfg)


# ---------------------------------------------------------------- Dockerfile

def dockerfile_instructions(text):
    """[(INSTRUCTION, args)] with continuation lines joined, comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        word, _, rest = cur.partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def check_dockerfile(c, root, facts, bin_dir):
    path = os.path.join(root, "Dockerfile")
    try:
        with open(path, encoding="utf-8") as fh:
            ins = dockerfile_instructions(fh.read())
    except OSError as e:
        c.fail(f"Dockerfile: {e}")
        return
    stages = []
    for word, args in ins:
        if word == "FROM":
            stages.append({"from": args, "ins": []})
        elif stages:
            stages[-1]["ins"].append((word, args))
    c.expect(len(stages) >= 2, f"Dockerfile has {len(stages)} stage(s); want multi-stage")
    for st in stages:
        c.expect(st["from"].split()[0] in ("debian:bookworm", "docker.io/library/debian:bookworm"),
                 f"Dockerfile stage FROM {st['from']}: want debian:bookworm")
    if len(stages) < 2:
        return
    build, runtime = stages[0], stages[-1]
    build_runs = " ".join(a for w, a in build["ins"] if w == "RUN")
    c.expect("tools/install_deps.sh build" in build_runs,
             "the build stage does not run tools/install_deps.sh build")
    for target in ("rnnserve", "rnnserve-client", "rnnserve-model"):
        c.expect(re.search(r"--target[^&;]*\b" + re.escape(target) + r"(\s|$)", build_runs),
                 f"the build stage does not build target {target}")
    run_runs = " ".join(a for w, a in runtime["ins"] if w == "RUN")
    c.expect("install_deps.sh" not in run_runs and "--no-install-recommends" in run_runs,
             "the runtime stage must install runtime libraries only (apt-get install "
             "--no-install-recommends), not the build dependencies")

    def last(word):
        vals = [a for w, a in runtime["ins"] if w == word]
        return vals[-1] if vals else None

    user = last("USER")
    uid = (user or "").split(":")[0]
    c.expect(user is not None and uid not in ("0", "root"),
             f"the runtime stage runs as {user or 'root'}: want a non-root USER")
    if uid.isdigit() and facts and facts.get("run_as") is not None:
        c.expect(int(uid) == facts["run_as"],
                 f"Dockerfile USER {uid} != the Deployment's runAsUser {facts['run_as']}")

    # Ports: the container config's, and the Kubernetes ones.
    try:
        with open(os.path.join(root, CONTAINER_CONFIG), encoding="utf-8") as fh:
            csrv = dict(SERVER_DEFAULTS)
            csrv.update((yaml.safe_load(fh) or {}).get("server") or {})
    except (OSError, yaml.YAMLError) as e:
        c.fail(f"{CONTAINER_CONFIG}: {e}")
        csrv = dict(SERVER_DEFAULTS)
    grpc_port = port_of(csrv["grpc_address"])[1]
    metrics_port = port_of(csrv["metrics_address"])[1]
    exposed = set()
    for w, a in runtime["ins"]:
        if w == "EXPOSE":
            exposed |= {int(p.split("/")[0]) for p in a.split()}
    c.expect({grpc_port, metrics_port} <= exposed,
             f"EXPOSE {sorted(exposed)}: want the container config's ports "
             f"{grpc_port} and {metrics_port}")
    if facts:
        c.expect(grpc_port == facts["grpc_port"] and metrics_port == facts["metrics_port"],
                 f"{CONTAINER_CONFIG} ports ({grpc_port}, {metrics_port}) differ from the "
                 f"Kubernetes ConfigMap's ({facts['grpc_port']}, {facts['metrics_port']})")
    hc = last("HEALTHCHECK") or ""
    c.expect("rnnserve-client" in hc and "health" in hc and f":{grpc_port}" in hc,
             f"HEALTHCHECK must run rnnserve-client health on port {grpc_port} (got {hc!r})")
    c.expect(last("ENTRYPOINT") is not None, "the runtime stage has no ENTRYPOINT")
    c.expect(csrv["model_repository"] == "/models",
             f"{CONTAINER_CONFIG} model_repository is {csrv['model_repository']}, the image "
             "ships /models")
    # The image's config is the documented example with the image's paths.
    try:
        with open(os.path.join(root, EXAMPLE_CONFIG), encoding="utf-8") as fh:
            example = yaml.safe_load(fh) or {}
        with open(os.path.join(root, CONTAINER_CONFIG), encoding="utf-8") as fh:
            container = yaml.safe_load(fh) or {}
        for doc in (example, container):
            (doc.get("server") or {}).pop("model_repository", None)
        c.expect(example == container,
                 f"{CONTAINER_CONFIG} differs from {EXAMPLE_CONFIG} in more than "
                 "model_repository: keep them in step",
                 f"{CONTAINER_CONFIG} == {EXAMPLE_CONFIG} but model_repository /models")
    except (OSError, yaml.YAMLError) as e:
        c.fail(f"comparing {CONTAINER_CONFIG} with {EXAMPLE_CONFIG}: {e}")

    # COPY sources exist and are not ignored.
    ignored = []
    try:
        with open(os.path.join(root, ".dockerignore"), encoding="utf-8") as fh:
            ignored = [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]
    except OSError:
        c.fail(".dockerignore is missing")
    c.expect(".git" in ignored and any(p.startswith("build") for p in ignored),
             ".dockerignore must exclude .git and the build trees")
    for st in stages:
        for w, a in st["ins"]:
            if w not in ("COPY", "ADD") or "--from=" in a:
                continue
            srcs = [s for s in a.split() if not s.startswith("--")][:-1]
            for s in srcs:
                if s == ".":
                    continue
                c.expect(os.path.exists(os.path.join(root, s)),
                         f"Dockerfile {w} source {s} does not exist")
                first = s.split("/")[0]
                c.expect(not any(fnmatch.fnmatch(first, p) or fnmatch.fnmatch(s, p)
                                 for p in ignored),
                         f"Dockerfile {w} source {s} is excluded by .dockerignore")
    c.ok(f"Dockerfile: {len(stages)} debian:bookworm stages, install_deps.sh build, "
         f"USER {user}, EXPOSE {sorted(exposed)}, HEALTHCHECK rnnserve-client health")

    check_runtime_packages(c, root, run_runs, bin_dir)


def check_runtime_packages(c, root, runtime_runs, bin_dir):
    """Every shared library of the built binaries comes from a package the
    runtime stage installs (or its dependencies, or bookworm's required set)."""
    m = re.search(r"apt-get install ([^&;]*)", runtime_runs)
    if not m:
        c.fail("the runtime stage has no apt-get install")
        return
    pkgs = [w for w in m.group(1).split() if not w.startswith("-")]
    if not (shutil.which("dpkg") and shutil.which("apt-cache") and shutil.which("ldd")):
        print("SKIP: no dpkg/apt-cache/ldd: runtime package coverage not checked")
        return
    proc = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends",
                           "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces",
                           "--no-enhances", *pkgs], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        c.fail(f"apt-cache depends {' '.join(pkgs)}: {proc.stderr.strip()}")
        return
    have = set(pkgs)
    for line in proc.stdout.splitlines():
        s = line.strip().lstrip("|")
        if s.startswith("Depends:") or s.startswith("PreDepends:"):
            have.add(s.split(":", 1)[1].strip().strip("<>").split(":")[0])
        elif line and not line.startswith(" "):
            have.add(line.strip().split(":")[0])
    q = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Priority} ${Essential}\n"],
                       capture_output=True, text=True)
    for line in q.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and (parts[1] == "required" or parts[-1] == "yes"):
            have.add(parts[0])
    libs = {}  # library path -> binaries linking it
    for b in ("rnnserve", "rnnserve-client", "rnnserve-model"):
        exe = os.path.join(bin_dir, b)
        if not os.access(exe, os.X_OK):
            c.fail(f"{exe} not found: runtime libraries not checked")
            continue
        out = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
        for lib in re.findall(r"=> (/\S+)", out):
            # A sanitizer build tree links its runtime; the image never does.
            if not re.match(r"lib[atlu]san\.so", os.path.basename(lib)):
                libs.setdefault(lib, set()).add(b)

    def candidates(lib):  # usrmerge: a library may be owned under /lib or /usr/lib
        real = os.path.realpath(lib)
        return {p for x in (lib, real) for p in
                (x, x.replace("/usr/lib/", "/lib/", 1), x.replace("/lib/", "/usr/lib/", 1))}

    paths = sorted({p for lib in libs for p in candidates(lib)})
    r = subprocess.run(["dpkg", "-S", *paths], capture_output=True, text=True)
    owner_of = {}
    for line in r.stdout.splitlines():
        pkg, _, p = line.partition(": ")
        owner_of[p.strip()] = pkg.split(":")[0]
    missing = {}
    for lib in libs:
        owners = {owner_of[p] for p in candidates(lib) if p in owner_of}
        if not owners:
            c.fail(f"{', '.join(sorted(libs[lib]))}: no Debian package owns {lib}")
        elif not owners & have:
            missing.setdefault(sorted(owners)[0], set()).add(os.path.basename(lib))
    for owner, libs in sorted(missing.items()):
        c.fail(f"the runtime stage lacks {owner} ({', '.join(sorted(libs))})")
    if not missing:
        c.ok(f"runtime packages ({len(pkgs)} listed) provide every library the binaries link")


def check_entrypoint(c, root, bin_dir):
    path = os.path.join(root, ENTRYPOINT)
    server = os.path.join(bin_dir, "rnnserve")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        c.fail(f"{ENTRYPOINT}: {e}")
        return
    if not os.access(server, os.X_OK):
        return  # reported by the ConfigMap run
    helptext = subprocess.run([server, "--help"], capture_output=True, text=True).stdout
    flags = set(re.findall(r"^\s+(--[a-z-]+)", helptext, re.M))
    pairs = re.findall(r"\b([A-Z_]+):([a-z-]+)\b", text)
    c.expect(bool(pairs), f"{ENTRYPOINT}: no VAR:flag pairs found")
    unknown = [f"--{f}" for _, f in pairs if f"--{f}" not in flags]
    c.expect(not unknown, f"{ENTRYPOINT} maps to flags rnnserve --help does not list: {unknown}",
             f"{ENTRYPOINT}: {len(pairs)} RNNSERVE_* variables map to real flags")
    missing = sorted(flags - {f"--{f}" for _, f in pairs} - {"--config", "--help"})
    c.expect(not missing, f"{ENTRYPOINT} has no RNNSERVE_* variable for {missing}")

    # The entrypoint starts the real server with the container config.
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PATH=os.path.abspath(bin_dir) + os.pathsep + os.environ.get("PATH", ""),
               RNNSERVE_CONFIG=os.path.join(root, CONTAINER_CONFIG),
               RNNSERVE_MODEL_REPOSITORY=os.path.join(root, "deploy", "model-repository"),
               RNNSERVE_GRPC_ADDRESS="127.0.0.1:0", RNNSERVE_METRICS_ADDRESS="127.0.0.1:0")
    client = os.path.join(bin_dir, "rnnserve-client")
    run_server(c, "entrypoint.sh + deploy/container/server.yaml", ["/bin/sh", path], env, root,
               client if os.access(client, os.X_OK) else None,
               expect_config=os.path.join(root, CONTAINER_CONFIG))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.normpath(os.path.join(here, "..", "..")),
                    help="repository root (default: two folders up)")
    ap.add_argument("--bin-dir", default=None, help="rnnserve binaries (default ROOT/build/bin)")
    ap.add_argument("--kubectl", default=shutil.which("kubectl"),
                    help="kubectl for `kubectl kustomize` (default: from PATH; skipped if none)")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    bin_dir = os.path.abspath(args.bin_dir or os.path.join(root, "build", "bin"))

    c = Checker()
    _, objects, configmaps = load_k8s(c, root)
    facts = check_deployment(c, root, objects, configmaps) if objects else None
    if facts:
        services = check_services(c, objects, facts)
        check_servicemonitor(c, objects, services, facts)
        check_hpa_pdb(c, root, objects, facts)
        check_server_accepts_configmap(c, root, bin_dir, facts)
    check_kubectl(c, root, args.kubectl, objects)
    check_dockerfile(c, root, facts, bin_dir)
    check_entrypoint(c, root, bin_dir)

    if c.failures:
        print(f"\n{len(c.failures)} check(s) failed")
        return 1
    print("\nall Kubernetes and container checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
