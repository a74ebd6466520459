#!/usr/bin/python3
"""End-to-end test of the Python client (client/python/rnnserve_client.py)
against the real server binary, with the demo char-LSTM.

    /usr/bin/python3 tests/python/test_python_client.py --bin-dir build/bin --stubs build/python

Starts `rnnserve --model-repository deploy/model-repository` on 127.0.0.1
port 0, reads the port from its `listening on gRPC 127.0.0.1:<port>` log line,
waits for ServerReady, and checks health, metadata, inference against the
PyTorch f32 goldens (tests/testdata/demo), typed vs raw contents, error codes,
ModelStreamInfer and the CLI; then a second server on a temporary repository
with the same model sequence-batched (`charlm_seq`) checks that streaming a
sequence in chunks gives what sending it whole gives. Each server must exit 0
on SIGTERM. Prints every check; exits 1 when any failed.

Tolerances (the server runs the demo model in int8, calibrated minmax,
per-channel, on 1/calibration.npy, as deploy/.../config.yaml says). PyTorch
f32 is the oracle; int8 is not expected to reproduce it exactly:
  * tests/engine/demo_model_test.cc bounds int8 by the task metric: held-out
    next-character top-1 accuracy within 0.5 points of PyTorch f32
    (metrics.json). Checked here on all 128 x 64 held-out positions.
  * Logit error: on expected_logits.npy (8 x 64 x 97, logits in about
    [-19.5, 12.1]) the same engine offline (`rnnserve-model run --precision
    int8`) measures max |d| 1.25 and mean |d| 0.116 (minmax; 1.29 / 0.110
    percentile, 1.08 / 0.088 mse). Allowed: max 2.0, mean 0.25 -- headroom for
    another ISA or batch shape, while any protocol fault (dtype, byte order,
    shape, transposed axes, wrong sequence) gives errors of several logits
    everywhere.
  * Top-1 agreement with PyTorch: where the f32 top-1 leads the runner-up by
    >= 0.25 logits (about 2x the mean int8 error; 78% of positions) it must
    agree at >= 97% (measured offline: 99.5%). Over all positions int8 agrees
    only at ~93% (measured 92.8% minmax): 7% of next-character positions are
    near-ties (5% have a margin < 0.036), which int8 noise flips freely. So
    the all-positions bar is 90%, not 97%.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import rnnserve_client  # noqa: E402  (needs the path above)
from child_process import Checks, Child  # noqa: E402  (next to this file)

CLIENT_CLI = os.path.join(ROOT, "client", "python", "rnnserve_client.py")
DEMO_DATA = os.path.join(ROOT, "tests", "testdata", "demo")
DEPLOY_REPO = os.path.join(ROOT, "deploy", "model-repository")
LISTENING = re.compile(r"listening on gRPC (\S+):(\d+)")

MAX_ABS_LOGIT_ERROR = 2.0
MEAN_ABS_LOGIT_ERROR = 0.25
DECIDED_MARGIN = 0.25
DECIDED_AGREEMENT = 0.97
ALL_AGREEMENT = 0.90
ACCURACY_POINTS = 0.005


class ServerProcess(Child):
    """The rnnserve binary as a child process on 127.0.0.1 port 0; the port
    comes from its listening line."""

    def __init__(self, binary, repository, startup_timeout):
        super().__init__([binary, "--model-repository", repository,
                          "--grpc-address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0"],
                         {"listening": LISTENING}, env=dict(os.environ, OMP_NUM_THREADS="1"),
                         log_lines=60)
        listening = self.found("listening", startup_timeout)
        self.port = int(listening.group(2)) if listening else None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def wait_ready(self, client, timeout):
        """Polls ServerReady; returns (ready, last error)."""
        deadline, error = time.monotonic() + timeout, ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if client.ready():
                    return True, ""
            except grpc.RpcError as e:
                error = "%s: %s" % (e.code().name, e.details())
            time.sleep(0.2)
        return False, error or ("exited with %s" % self.proc.poll())


def start_server(checks, args, repository, label):
    """A started, ready server and a client for it, or (server, None)."""
    server = ServerProcess(os.path.join(args.bin_dir, "rnnserve"), repository,
                           args.startup_timeout)
    if not checks.check("%s: logs 'listening on gRPC 127.0.0.1:<port>'" % label,
                        server.port is not None,
                        "" if server.port else "exit code %s" % server.proc.poll()):
        return server, None
    client = rnnserve_client.InferenceClient(server.address, args.stubs, timeout=60)
    ready, error = server.wait_ready(client, args.startup_timeout)
    if not checks.check("%s: ServerReady within %d s" % (label, args.startup_timeout),
                        ready, error):
        client.close()
        return server, None
    return server, client


def run_cli(address, stubs, *argv):
    cmd = [sys.executable, CLIENT_CLI, "--address", address, "--stubs", stubs] + list(argv)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def logit_comparison(got, expected):
    """Errors and top-1 agreement of int8 logits against the f32 oracle."""
    diff = np.abs(got - expected)
    top2 = np.sort(expected, axis=-1)[..., -2:]
    decided = (top2[..., 1] - top2[..., 0]) >= DECIDED_MARGIN
    agree = got.argmax(-1) == expected.argmax(-1)
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "agree_all": float(agree.mean()), "agree_decided": float(agree[decided].mean()),
            "decided_fraction": float(decided.mean())}


def check_main_server(checks, args, server, client):
    tokens = np.load(os.path.join(DEMO_DATA, "heldout_tokens.npy"))
    targets = np.load(os.path.join(DEMO_DATA, "heldout_targets.npy"))
    expected = np.load(os.path.join(DEMO_DATA, "expected_logits.npy"))
    with open(os.path.join(DEMO_DATA, "metrics.json")) as f:
        pytorch_accuracy = json.load(f)["heldout_top1_accuracy"]
    n = expected.shape[0]

    # Health and metadata.
    checks.check("ServerLive", client.live())
    for service in ("", "inference.GRPCInferenceService", "charlm"):
        status = client.health(service)
        checks.check("grpc.health.v1 Check(%r) is SERVING" % service, status == "SERVING", status)
    checks.check("ModelReady(charlm)", client.model_ready("charlm"))
    meta = client.model_metadata("charlm")
    tensors = [(t.name, t.datatype, list(t.shape)) for t in list(meta.inputs) + list(meta.outputs)]
    checks.check("ModelMetadata(charlm) tensors",
                 meta.name == "charlm" and
                 tensors == [("tokens", "INT64", [-1, -1]), ("logits", "FP32", [-1, -1, 97])],
                 "name %r, versions %s, tensors %s" % (meta.name, list(meta.versions), tensors))
    index = {(m.name, m.state) for m in client.repository_index()}
    checks.check("RepositoryIndex lists charlm READY", ("charlm", "READY") in index, str(index))

    # Inference against the PyTorch goldens, raw contents.
    logits = client.infer("charlm", tokens[:n], request_id="goldens")
    if checks.check("ModelInfer raw INT64 -> FP32 logits shape",
                    logits.shape == expected.shape and logits.dtype == np.float32,
                    "%s %s" % (logits.dtype, logits.shape)):
        c = logit_comparison(logits, expected)
        detail = ("max |d| %.3f, mean |d| %.3f, top-1 agreement %.1f%% where the f32 margin "
                  ">= %.2f (%.0f%% of positions), %.1f%% overall"
                  % (c["max_abs"], c["mean_abs"], 100 * c["agree_decided"], DECIDED_MARGIN,
                     100 * c["decided_fraction"], 100 * c["agree_all"]))
        checks.check("int8 logits vs PyTorch f32 (max <= %.2f, mean <= %.2f)"
                     % (MAX_ABS_LOGIT_ERROR, MEAN_ABS_LOGIT_ERROR),
                     c["max_abs"] <= MAX_ABS_LOGIT_ERROR and c["mean_abs"] <= MEAN_ABS_LOGIT_ERROR,
                     detail)
        checks.check("int8 top-1 vs PyTorch f32 (>= %.0f%% decided, >= %.0f%% all)"
                     % (100 * DECIDED_AGREEMENT, 100 * ALL_AGREEMENT),
                     c["agree_decided"] >= DECIDED_AGREEMENT and c["agree_all"] >= ALL_AGREEMENT,
                     detail)

        # The same request with typed contents (int64_contents), and as INT32.
        typed = client.infer("charlm", tokens[:n], typed=True)
        checks.check("typed int64_contents request == raw request",
                     typed.shape == logits.shape and np.allclose(typed, logits, atol=1e-4),
                     "max |d| %.2g" % float(np.abs(typed - logits).max())
                     if typed.shape == logits.shape else str(typed.shape))
        as_int32 = client.infer("charlm", tokens[:n].astype(np.int32))
        checks.check("raw INT32 request == INT64 request",
                     as_int32.shape == logits.shape and np.allclose(as_int32, logits, atol=1e-4))

    # The task metric on all held-out windows (max_batch_size 64 per request).
    served = np.concatenate([client.infer("charlm", tokens[i:i + 64])
                             for i in range(0, len(tokens), 64)])
    accuracy = float((served.argmax(-1) == targets).mean())
    checks.check("held-out top-1 accuracy within %.1f points of PyTorch f32"
                 % (100 * ACCURACY_POINTS), abs(accuracy - pytorch_accuracy) <= ACCURACY_POINTS,
                 "int8 served %.4f, PyTorch f32 %.4f" % (accuracy, pytorch_accuracy))

    # Errors are status codes, and the server stays up.
    checks.expect_code("ModelInfer on an unknown model -> NOT_FOUND", grpc.StatusCode.NOT_FOUND,
                       lambda: client.infer("no_such_model", tokens[:1], input_name="tokens"))
    checks.expect_code("ModelMetadata of an unknown model -> NOT_FOUND",
                       grpc.StatusCode.NOT_FOUND, lambda: client.model_metadata("no_such_model"))
    bad = tokens[:1].copy()
    bad[0, 3] = 97
    checks.expect_code("token id outside the vocabulary -> INVALID_ARGUMENT",
                       grpc.StatusCode.INVALID_ARGUMENT, lambda: client.infer("charlm", bad))
    checks.expect_code("FP32 data for an INT64 input -> INVALID_ARGUMENT",
                       grpc.StatusCode.INVALID_ARGUMENT,
                       lambda: client.infer("charlm", tokens[:1].astype(np.float32)))
    checks.check("still ready after bad requests", client.ready())

    # ModelStreamInfer: independent requests on one stream (no sequence
    # parameters: charlm is dynamically batched); a refused one does not end it.
    try:
        with client.open_stream(timeout=120) as stream:
            first = stream.infer("charlm", tokens[:2], request_id="s0")
            try:
                stream.infer("no_such_model", tokens[:1], input_name="tokens", request_id="s1")
                refused = "succeeded"
            except rnnserve_client.StreamInferError as e:
                refused = str(e)
            second = stream.infer("charlm", tokens[2:4], request_id="s2")
        ok = (np.allclose(first, served[:2], atol=1e-3) and
              np.allclose(second, served[2:4], atol=1e-3) and refused != "succeeded")
        checks.check("ModelStreamInfer: answers match ModelInfer; unknown model refused "
                     "in error_message, stream stays open", ok, "error_message: %r" % refused)
    except (grpc.RpcError, RuntimeError) as e:
        checks.check("ModelStreamInfer", False, repr(e))

    # The CLI.
    r = run_cli(server.address, args.stubs, "health")
    checks.check("CLI health exits 0", r.returncode == 0, (r.stdout + r.stderr).strip())
    r = run_cli(server.address, args.stubs, "models")
    checks.check("CLI models lists charlm", r.returncode == 0 and "charlm" in r.stdout,
                 (r.stdout + r.stderr).strip())
    prompt = "The "
    r = run_cli(server.address, args.stubs, "generate", "--model", "charlm",
                "--prompt", prompt, "--length", "60")
    text = r.stdout.rstrip("\n")
    checks.check("CLI generate (greedy) prints the prompt and new text",
                 r.returncode == 0 and text.startswith(prompt) and len(text) > len(prompt),
                 repr(text) if r.returncode == 0 else r.stderr.strip())
    sampled = [run_cli(server.address, args.stubs, "generate", "--model", "charlm",
                       "--prompt", prompt, "--length", "60", "--temperature", "0.8",
                       "--seed", "7").stdout for _ in range(2)]
    checks.check("CLI generate --temperature 0.8 --seed 7 is reproducible",
                 sampled[0] == sampled[1] and len(sampled[0].rstrip("\n")) > len(prompt),
                 repr(sampled[0].rstrip("\n")))


def make_sequence_repository(directory):
    """A repository serving the demo model sequence-batched, as charlm_seq."""
    model_dir = os.path.join(directory, "charlm_seq")
    os.makedirs(os.path.join(model_dir, "1"))
    for name in ("model.onnx", "calibration.npy"):
        os.symlink(os.path.join(DEPLOY_REPO, "charlm", "1", name),
                   os.path.join(model_dir, "1", name))
    with open(os.path.join(model_dir, "config.yaml"), "w") as f:
        f.write("name: charlm_seq\n"
                "precision: int8\n"
                "calibration: {method: minmax, file: calibration.npy}\n"
                "batching: {kind: sequence, max_batch_size: 64}\n")


def check_sequence_server(checks, args, server, client):
    tokens = np.load(os.path.join(DEMO_DATA, "heldout_tokens.npy"))[:1]
    whole = client.infer("charlm_seq", tokens, sequence_id=rnnserve_client.new_sequence_id(),
                         start=True, end=True)
    try:
        chunked = client.stream("charlm_seq", tokens, chunk=16)
        same = chunked.shape == whole.shape
        detail = "max |d| %.2g" % float(np.abs(chunked - whole).max()) if same else \
            "shapes %s vs %s" % (chunked.shape, whole.shape)
        checks.check("charlm_seq: 4 chunks of 16 on one stream == the sequence whole",
                     same and np.allclose(chunked, whole, atol=1e-4), detail)
    except (grpc.RpcError, RuntimeError) as e:
        checks.check("charlm_seq: chunked streaming", False, repr(e))
    r = run_cli(server.address, args.stubs, "generate", "--model", "charlm_seq", "--stateful",
                "--prompt", "The ", "--length", "60")
    checks.check("CLI generate --stateful on charlm_seq", r.returncode == 0 and
                 len(r.stdout.rstrip("\n")) > 4, (r.stdout + r.stderr).strip())


def run_phase(checks, args, repository, label, body):
    failures_before = len(checks.failures)
    server, client = start_server(checks, args, repository, label)
    try:
        if client is not None:
            body(checks, args, server, client)
    except Exception as e:  # report, then still stop the server and show its log
        checks.check("%s: unexpected %s" % (label, type(e).__name__), False, repr(e))
    finally:
        if client is not None:
            client.close()
        code = server.terminate()
        checks.check("%s: SIGTERM -> exit code 0" % label, code == 0, "exit code %s" % code)
        if len(checks.failures) > failures_before:
            server.show_log()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--stubs", default=os.path.join(ROOT, "build", "python"))
    ap.add_argument("--startup-timeout", type=int, default=120)
    ap.add_argument("--no-sequence", action="store_true",
                    help="skip the second server (sequence-batched charlm_seq)")
    args = ap.parse_args()
    args.bin_dir = os.path.abspath(args.bin_dir)
    args.stubs = os.path.abspath(args.stubs)
    if not os.access(os.path.join(args.bin_dir, "rnnserve"), os.X_OK):
        print("FAIL  no server binary at %s/rnnserve" % args.bin_dir)
        return 1
    try:
        rnnserve_client.load_stubs(args.stubs)
    except ImportError as e:
        print("FAIL  %s" % e)
        return 1

    checks = Checks()
    run_phase(checks, args, DEPLOY_REPO, "deploy repository", check_main_server)
    if not args.no_sequence:
        scratch = tempfile.mkdtemp(prefix="rnnserve-pytest-")
        try:
            make_sequence_repository(scratch)
            run_phase(checks, args, scratch, "sequence repository", check_sequence_server)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    if checks.failures:
        print("\n%d check(s) FAILED:\n  %s" % (len(checks.failures),
                                             "\n  ".join(checks.failures)))
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
