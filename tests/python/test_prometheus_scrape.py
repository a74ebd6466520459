#!/usr/bin/python3
"""A real Prometheus server scrapes rnnserve; the test reads the numbers back
through Prometheus's HTTP API (issue 5 §7).

    /usr/bin/python3 tests/python/test_prometheus_scrape.py --bin-dir build/bin --stubs build/python

1. Builds a temporary repository serving the demo char-LSTM (the files of
   deploy/model-repository/charlm/1, symlinked) with the demo config but
   `drift: {sample_rate: 1.0, action: alert}`, so every request is re-run in
   f32, and starts `rnnserve` on 127.0.0.1 port 0 for gRPC and metrics; both
   ports come from its log.
2. Starts /usr/bin/prometheus (Debian's `prometheus` package; or
   --prometheus PATH) on a free loopback port with a temporary config that
   scrapes rnnserve every second and loads the shipped alert rules
   (deploy/prometheus/rnnserve-alerts.yml), and a temporary TSDB directory.
3. Waits until Prometheus has scraped the idle server (the OK counter reads
   0), then sends N good ModelInfer requests (one held-out sequence each)
   and 3 for an unknown model, and polls /api/v1/query until:
     requests_total{model="charlm",code="OK"}          == N
     requests_total{model="",code="NOT_FOUND"}         == 3
     requests_total{model="charlm",code!="OK"}         == 0
     request_duration_seconds_count{model="charlm"}    == N
     drift_samples_total + drift_shed_total (charlm)   == N  (rate 1: each
                                                        request is sampled)
     drift_samples_total{model="charlm"}               > 0
     drift_relative_l2_count{model="charlm"}           == drift_samples_total
     model_precision{model="charlm",precision="int8"} == 1
   and the mean of the relative-L2 histogram (sum / count) equals the mean
   this test computes itself from the int8 logits it received and PyTorch's
   f32 logits of the same sequences (tests/testdata/demo/expected_logits.npy):
   the server's f32 re-run is the same network as PyTorch's, so the two
   agree to f32 rounding (tolerance 2e-4 absolute; the values are ~1e-2).
   That holds only when no sample was shed (each request observed once);
   with sheds the comparison is skipped and says so.
4. Recalibrates charlm (client/python's recalibrate): it must use the N
   sequences its reservoir held (reservoir_sequences == N before), and
   Prometheus must then read recalibrations_total == 1, an empty
   reservoir, and int8 still active.
5. Checks that the scrape target is up and that no shipped rule evaluates
   with an error against the live series.
6. SIGTERM to both; rnnserve must exit 0.

Prints every check; exits 1 when any failed (with the server's and
Prometheus's log tails), 2 when something needed is missing.
"""

import argparse
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import grpc
import numpy as np
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import rnnserve_client  # noqa: E402  (needs the path above)
from child_process import Checks, Child  # noqa: E402  (next to this file)

DEMO_MODEL_DIR = os.path.join(ROOT, "deploy", "model-repository", "charlm")
DEMO_DATA = os.path.join(ROOT, "tests", "testdata", "demo")
ALERT_RULES = os.path.join(ROOT, "deploy", "prometheus", "rnnserve-alerts.yml")
DEFAULT_PROMETHEUS = "/usr/bin/prometheus"

LISTENING = re.compile(r"listening on gRPC (\S+):(\d+)")
METRICS_ON = re.compile(r"metrics on http://(\S+):(\d+)/metrics")

GOOD_REQUESTS = 40
UNKNOWN_REQUESTS = 3
UNKNOWN_MODEL = "no_such_model"
RELATIVE_L2_TOLERANCE = 2e-4


def free_port():
    """A loopback port nobody listens on right now (Prometheus cannot be
    asked to pick one itself and report it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_repository(directory):
    """charlm with the demo files and config, drift sampling every request."""
    model_dir = os.path.join(directory, "charlm")
    os.makedirs(os.path.join(model_dir, "1"))
    for name in ("model.onnx", "calibration.npy"):
        os.symlink(os.path.join(DEMO_MODEL_DIR, "1", name), os.path.join(model_dir, "1", name))
    with open(os.path.join(DEMO_MODEL_DIR, "config.yaml")) as f:
        config = yaml.safe_load(f)
    config["drift"] = {"sample_rate": 1.0, "action": "alert"}
    with open(os.path.join(model_dir, "config.yaml"), "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)


def write_prometheus_config(path, metrics_target, rules):
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                   "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "rnnserve",
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [metrics_target]}],
        }],
    }
    if rules:
        config["rule_files"] = [rules]
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)


class PrometheusApi:
    def __init__(self, address):
        self.base = "http://%s" % address

    def get(self, path, params=None, timeout=5):
        url = self.base + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()

    def api(self, path, params=None):
        status, body = self.get(path, params)
        answer = json.loads(body)
        if answer.get("status") != "success":
            raise RuntimeError("%s: %s" % (path, body[:500]))
        return answer["data"]

    def scalar(self, expr):
        """The value of an instant query whose result is one sample (use
        sum(...)); None while Prometheus has no such series."""
        data = self.api("/api/v1/query", {"query": expr})
        if data["resultType"] != "vector" or not data["result"]:
            return None
        return float(data["result"][0]["value"][1])

    def ready(self):
        try:
            return self.get("/-/ready", timeout=2)[0] == 200
        except (urllib.error.URLError, OSError):
            return False


def wait_until(timeout, poll, interval=0.5):
    """Calls poll() until it returns (True, detail) or timeout passes;
    returns the last (ok, detail)."""
    deadline = time.monotonic() + timeout
    while True:
        ok, detail = poll()
        if ok or time.monotonic() >= deadline:
            return ok, detail
        time.sleep(interval)


def expected_relative_l2(served, expected):
    """||int8 - f32|| / ||f32|| over the whole answer, as the server's drift
    monitor defines it (server/metrics/divergence.h), with PyTorch's f32
    logits standing in for the server's f32 re-run."""
    d = served.astype(np.float64) - expected.astype(np.float64)
    return float(np.sqrt((d * d).sum()) / np.sqrt((expected.astype(np.float64) ** 2).sum()))


def run(checks, args, scratch):
    tokens = np.load(os.path.join(DEMO_DATA, "heldout_tokens.npy"))
    expected = np.load(os.path.join(DEMO_DATA, "expected_logits.npy"))  # rows 0..7
    n_golden = expected.shape[0]

    repository = os.path.join(scratch, "models")
    make_repository(repository)
    server = Child([os.path.join(args.bin_dir, "rnnserve"), "--model-repository", repository,
                    "--grpc-address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0",
                    "--drift-sample-rate", "1"],
                   {"grpc": LISTENING, "metrics": METRICS_ON}, name="rnnserve",
                   env=dict(os.environ, OMP_NUM_THREADS="1"))
    prometheus = None
    client = None
    metrics_target = None
    children = [server]
    try:
        grpc_match = server.found("grpc", args.startup_timeout)
        metrics_match = server.found("metrics", 5)
        if not checks.check("rnnserve logs its gRPC and metrics addresses",
                            grpc_match is not None and metrics_match is not None,
                            "exit code %s" % server.proc.poll()):
            return
        grpc_address = "127.0.0.1:%s" % grpc_match.group(2)
        metrics_target = "127.0.0.1:%s" % metrics_match.group(2)
        client = rnnserve_client.InferenceClient(grpc_address, args.stubs, timeout=60)
        ok, detail = wait_until(args.startup_timeout, lambda: _ready(client, server))
        if not checks.check("rnnserve ServerReady", ok, detail):
            return

        rules = ALERT_RULES if os.path.isfile(ALERT_RULES) else None
        prometheus_config = os.path.join(scratch, "prometheus.yml")
        write_prometheus_config(prometheus_config, metrics_target, rules)
        prometheus_address = "127.0.0.1:%d" % free_port()
        prometheus = Child([args.prometheus, "--config.file=" + prometheus_config,
                            "--storage.tsdb.path=" + os.path.join(scratch, "tsdb"),
                            "--web.listen-address=" + prometheus_address,
                            "--log.level=info"], name="prometheus")
        children.append(prometheus)
        api = PrometheusApi(prometheus_address)
        ok, _ = wait_until(60, lambda: (api.ready() or prometheus.proc.poll() is not None, ""))
        if not checks.check("Prometheus ready on %s" % prometheus_address,
                            ok and prometheus.proc.poll() is None,
                            "exit code %s" % prometheus.proc.poll()):
            return

        ok_expr = 'sum(rnnserve_requests_total{model="charlm",code="OK"})'
        ok, detail = wait_until(args.timeout, lambda: _equals(api, ok_expr, 0))
        checks.check("Prometheus scraped the idle server: %s == 0" % ok_expr, ok, detail)
        targets = api.api("/api/v1/targets")["activeTargets"]
        checks.check("the scrape target %s is up" % metrics_target,
                     [t.get("health") for t in targets] == ["up"],
                     json.dumps([(t.get("scrapeUrl"), t.get("health"), t.get("lastError"))
                                 for t in targets]))

        # The traffic: N good requests (one held-out sequence each, cycling
        # through the ones PyTorch's logits are known for), 3 unknown-model.
        mine = []
        for i in range(GOOD_REQUESTS):
            row = i % n_golden
            served = client.infer("charlm", tokens[row:row + 1], input_name="tokens",
                                  request_id="prom-%d" % i)
            mine.append(expected_relative_l2(served, expected[row:row + 1]))
        unknown_codes = []
        for _ in range(UNKNOWN_REQUESTS):
            try:
                client.infer(UNKNOWN_MODEL, tokens[:1], input_name="tokens")
                unknown_codes.append("OK")
            except grpc.RpcError as e:
                unknown_codes.append(e.code().name)
        checks.check("client: %d requests for %s answered NOT_FOUND"
                     % (UNKNOWN_REQUESTS, UNKNOWN_MODEL),
                     unknown_codes == ["NOT_FOUND"] * UNKNOWN_REQUESTS, str(unknown_codes))

        # Counters: what the client sent, as Prometheus stored it.
        for expr, want in (
                (ok_expr, GOOD_REQUESTS),
                ('sum(rnnserve_requests_total{model="",code="NOT_FOUND"})', UNKNOWN_REQUESTS),
                ('sum(rnnserve_requests_total{model="charlm",code!="OK"})', 0),
                ('sum(rnnserve_request_duration_seconds_count{model="charlm"})', GOOD_REQUESTS),
                ('max(rnnserve_model_precision{model="charlm",precision="int8"})', 1),
                ('max(rnnserve_model_precision{model="charlm",precision="f32"})', 0),
                # One sequence per request, fewer than the reservoir's 256.
                ('sum(rnnserve_reservoir_sequences{model="charlm"})', GOOD_REQUESTS)):
            ok, detail = wait_until(args.timeout, lambda: _equals(api, expr, want))
            checks.check("%s == %s" % (expr, want), ok, detail)

        # Drift: at rate 1 every request is queued for an f32 re-run or shed;
        # the re-runs finish in the background, so poll.
        samples_expr = 'sum(rnnserve_drift_samples_total{model="charlm"})'
        shed_expr = 'sum(rnnserve_drift_shed_total{model="charlm"})'
        ok, detail = wait_until(args.timeout, lambda: _equals(
            api, "%s + %s" % (samples_expr, shed_expr), GOOD_REQUESTS))
        checks.check("drift_samples_total + drift_shed_total == %d (sample_rate 1)"
                     % GOOD_REQUESTS, ok, detail)
        samples = api.scalar(samples_expr) or 0
        shed = api.scalar(shed_expr) or 0
        checks.check("%s > 0" % samples_expr, samples > 0,
                     "samples %s, shed %s" % (samples, shed))
        count_expr = 'sum(rnnserve_drift_relative_l2_count{model="charlm"})'
        ok, detail = wait_until(args.timeout, lambda: _equals(api, count_expr, samples)
                                if samples > 0 else (False, "no samples"))
        checks.check("%s == drift samples (%g), > 0" % (count_expr, samples), ok, detail)

        sum_expr = 'sum(rnnserve_drift_relative_l2_sum{model="charlm"})'
        server_sum = api.scalar(sum_expr)
        server_count = api.scalar(count_expr)
        mine_mean = float(np.mean(mine))
        if shed == 0 and server_count:
            server_mean = server_sum / server_count
            checks.check("mean relative L2 (server's f32 re-run) == the test's, int8 answers "
                         "vs PyTorch f32 (|d| <= %g)" % RELATIVE_L2_TOLERANCE,
                         abs(server_mean - mine_mean) <= RELATIVE_L2_TOLERANCE,
                         "server %.6f, test %.6f (min %.4f, max %.4f over requests)"
                         % (server_mean, mine_mean, min(mine), max(mine)))
        else:
            print("skip  mean relative L2 comparison: %s shed, count %s (test's mean %.6f)"
                  % (shed, server_count, mine_mean), flush=True)

        # Live recalibration (the Python client's recalibrate) on the N
        # sequences the reservoir holds; Prometheus sees it counted and the
        # reservoir restarted for the recalibrated model.
        try:
            used = client.recalibrate("charlm")
            checks.check("recalibrate(charlm) used the %d live sequences" % GOOD_REQUESTS,
                         used == GOOD_REQUESTS, "samples_used %s" % used)
        except grpc.RpcError as e:
            checks.check("recalibrate(charlm)", False, "%s: %s" % (e.code().name, e.details()))
        for expr, want in (('sum(rnnserve_recalibrations_total{model="charlm"})', 1),
                           ('sum(rnnserve_reservoir_sequences{model="charlm"})', 0),
                           ('max(rnnserve_model_precision{model="charlm",precision="int8"})', 1)):
            ok, detail = wait_until(args.timeout, lambda: _equals(api, expr, want))
            checks.check("after recalibrating: %s == %s" % (expr, want), ok, detail)

        # The shipped rules load and evaluate against the live series.
        if rules:
            ok, detail = wait_until(args.timeout, lambda: _rules_evaluated(api))
            checks.check("deploy/prometheus/rnnserve-alerts.yml: every rule evaluated, "
                         "none with an error", ok, detail)
    finally:
        if client is not None:
            client.close()
        if checks.failures:  # while the server still runs
            _show_direct_scrape(metrics_target)
        if prometheus is not None:
            code = prometheus.terminate()
            checks.check("Prometheus stops on SIGTERM", code is not None, "exit code %s" % code)
        code = server.terminate()
        checks.check("rnnserve: SIGTERM -> exit code 0", code == 0, "exit code %s" % code)
        if checks.failures:
            for child in children:
                child.show_log()


def _ready(client, server):
    if server.proc.poll() is not None:
        return True, "exited with %s" % server.proc.poll()  # stop waiting
    try:
        return client.ready(), ""
    except grpc.RpcError as e:
        return False, "%s: %s" % (e.code().name, e.details())


def _equals(api, expr, want):
    try:
        got = api.scalar(expr)
    except (RuntimeError, urllib.error.URLError, OSError) as e:
        return False, "query failed: %s" % e
    if got is None:
        return False, "no series"
    return math.isclose(got, want, abs_tol=1e-9), "got %s" % got


def _rules_evaluated(api):
    """True when every rule has been evaluated ('ok'); fails on 'err'."""
    try:
        groups = api.api("/api/v1/rules")["groups"]
    except (RuntimeError, urllib.error.URLError, OSError) as e:
        return False, "query failed: %s" % e
    rules = [r for g in groups for r in g["rules"]]
    errors = ["%s: %s" % (r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
    if errors:
        return False, "; ".join(errors)
    pending = [r["name"] for r in rules if r["health"] != "ok"]
    if not rules:
        return False, "no rules loaded"
    return not pending, "%d rules, not yet evaluated: %s" % (len(rules), pending)


def _show_direct_scrape(target):
    """What the server itself exports (tells a server bug from a scrape one)."""
    if not target:
        return
    try:
        with urllib.request.urlopen("http://%s/metrics" % target, timeout=5) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError) as e:
        print("direct scrape of %s failed: %s" % (target, e))
        return
    wanted = re.compile(r'^rnnserve_(requests_total|drift_samples_total|drift_shed_total|'
                        r'drift_relative_l2_(count|sum)|model_precision)\b')
    print("---- direct scrape of http://%s/metrics (non-zero, selected) ----" % target)
    for line in text.splitlines():
        if wanted.match(line) and not line.endswith(" 0"):
            print(line)
    print("----")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--stubs", default=os.path.join(ROOT, "build", "python"))
    ap.add_argument("--startup-timeout", type=int, default=120)
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds to wait for each value to show in Prometheus")
    ap.add_argument("--prometheus", default=DEFAULT_PROMETHEUS,
                    help="the Prometheus server binary (default: Debian's)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    args.bin_dir = os.path.abspath(args.bin_dir)
    args.stubs = os.path.abspath(args.stubs)
    for path in (os.path.join(args.bin_dir, "rnnserve"), args.prometheus):
        if not os.access(path, os.X_OK):
            print("FAIL  %s is not an executable (build rnnserve; apt-get install prometheus)"
                  % path)
            return 2
    try:
        rnnserve_client.load_stubs(args.stubs)
    except ImportError as e:
        print("FAIL  %s" % e)
        return 2

    checks = Checks()
    scratch = tempfile.mkdtemp(prefix="rnnserve-promtest-")
    try:
        run(checks, args, scratch)
    except Exception as e:  # report it like a failed check; the finally above stopped both
        checks.check("unexpected %s" % type(e).__name__, False, repr(e))
    finally:
        if args.keep:
            print("kept %s" % scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    if checks.failures:
        print("\n%d check(s) FAILED:\n  %s" % (len(checks.failures),
                                             "\n  ".join(checks.failures)))
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
