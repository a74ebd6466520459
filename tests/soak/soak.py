#!/usr/bin/python3
"""Soak test: the real rnnserve binary under mixed load for a bounded time,
with its memory watched (issue 6 section 5).

    /usr/bin/python3 tests/soak/soak.py --duration 300

Starts build/bin/rnnserve on 127.0.0.1 (gRPC and metrics on port 0; the ports
are read from its log lines) with --model-control explicit, on a temporary
model repository of four models:

  charlm       the demo char-LSTM (deploy/model-repository/charlm, copied):
               int8, dynamic batching, drift sampling 1%
  charlm_seq   the same weights and calibration, sequence batching (streams),
               max_sequence_idle_us 10 s so abandoned streams are freed
  charlm_idle  the same as charlm; only the reload thread uses it
  gru_feat     tests/testdata/goldens/gru_1l (GRU, FP32 features [N, T, 8]),
               f32, dynamic batching: the one model that takes floats (NaN)

and drives it with the Python client (client/python/rnnserve_client.py and
the generated stubs) from several threads, rate-limited so that the load
generator and the server share the 2 cores without starving each other:

  unary    ModelInfer with random valid token sequences (N 1..8, T 1..128 and
           now and then 512; --shapes bounded: a few fixed ones), raw INT64,
           typed INT64 or raw INT32, and random features for gru_feat;
           every answer's shape, dtype and finiteness are checked. Every
           --probe-interval s a fixed probe (the 8 x 64 held-out windows of
           tests/testdata/demo; the gru_1l golden input) must equal the first
           answer to it within --probe-tolerance, and the first answers are
           checked against the PyTorch f32 oracles (demo: max |d| <= 2.0,
           mean |d| <= 0.25 as test_python_client.py justifies; gru_1l f32:
           max |d| <= 1e-4).
  streams  ModelStreamInfer on charlm_seq: one random sequence (T 8..160) per
           stream in 2..6 chunks of random length (sequence_id / start / end);
           the joined chunk answers must equal the whole sequence sent to
           charlm by ModelInfer within --stream-tolerance. One stream in ten
           is abandoned (cancelled before its end chunk); the server must free
           it after the idle timeout (rnnserve_live_sequences back to 0).
  bad      malformed requests, each expecting its own gRPC code (unknown
           model or version: NOT_FOUND; wrong dtype, rank, feature count,
           token id, input name, output name, byte count, missing input, NaN /
           Inf features, too many steps, batch over max_batch_size, sequence
           parameters on a stateless model, bad parameter types:
           INVALID_ARGUMENT; a chunk of an unknown stream: FAILED_PRECONDITION;
           a message over --max-message-bytes: RESOURCE_EXHAUSTED; an unknown
           model inside a stream: its error_message and status_code, the
           stream going on). Any other code is a failure.
  chaos    requests with 0.5-5 ms gRPC deadlines and client cancellations;
           OK, DEADLINE_EXCEEDED and CANCELLED are all fine (not failures),
           any other code is one.
  reloads  every --reload-interval s: RepositoryModelLoad(charlm) under
           traffic; RepositoryModelUnload(charlm_idle), then a request to it
           must be NOT_FOUND, then RepositoryModelLoad(charlm_idle) and its
           probe answer must equal charlm's.

Every --sample-interval s it prints the server's VmRSS and VmHWM
(/proc/<pid>/status), threads, open fds and the request counts.

Memory rule (flags; the defaults come from measured runs, tests/soak/README.md):
  "retained RSS" at a time t = the smallest VmRSS sample in [t - --window-s 30,
  t] (a reload holds two copies of a model for a moment; that is not growth).
  warm-up = the first --warmup-fraction (40%) of the run, in which caches and
  the allocator's arenas fill. Retained RSS at the end must not exceed retained
  RSS at the end of warm-up by more than max(--max-growth-mib 32,
  --max-growth-fraction 10%), AND the least-squares slope of retained RSS over
  the second half of the run must be below --max-slope-mib-per-min (10) --
  judged only when that half spans at least --min-slope-window-s (60) s.

At the end it scrapes /metrics and checks rnnserve_requests_total per
(model, code) against what it sent: equal where every request had a definite
outcome, and between the definite count and that plus the chaos requests
where a deadline or cancellation made the outcome unknown to the client;
then health (grpc.health.v1 "" SERVING, every model READY), SIGTERM, exit
code 0 and the "shutdown complete: N ... accepted, M answered (K OK)" line
with N == M == the requests counted in /metrics and K == their OK count.

Exit 0 only when no good request failed, every bad request got its code, the
memory rule held, the cross-checks agree, and the server stopped cleanly.
--json PATH writes the whole summary with the RSS series.
"""

import argparse
import collections
import json
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

import grpc
import numpy as np

DEFAULT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(DEFAULT_ROOT, "tests", "python"))
from child_process import Child  # noqa: E402  (the path above)

LISTENING = re.compile(r"listening on gRPC (\S+):(\d+)")
METRICS_ON = re.compile(r"metrics on http://(\S+):(\d+)/metrics")
SHUTDOWN = re.compile(r"shutdown complete: (\d+) inference requests accepted, "
                      r"(\d+) answered \((\d+) OK\)")
ERROR_LINE = re.compile(r"Z [EF] ")  # E or F: the severity after the UTC timestamp
MIB = 1024.0 * 1024.0

VOCAB = 97            # the demo model's vocabulary
LOGITS = 97
GRU_FEATURES = 8      # tests/testdata/goldens/gru_1l: F=8, H=16
GRU_HIDDEN = 16
SEQ_IDLE_S = 10       # charlm_seq max_sequence_idle_us, in s

# Against the PyTorch f32 oracles (see tests/python/test_python_client.py for
# the int8 numbers and tests/testdata/goldens/README.md for f32).
DEMO_MAX_ABS = 2.0
DEMO_MEAN_ABS = 0.25
GRU_F32_MAX_ABS = 1e-4

# --shapes bounded: the only lengths and batch sizes sent (see --help).
BOUNDED_STEPS = (8, 16, 32, 64, 128)
BOUNDED_BATCHES = (1, 2, 4, 8)

SC = grpc.StatusCode
# Outcomes of a chaos request (deadline or cancellation) that are not failures.
CHAOS_OK_CODES = {SC.OK, SC.DEADLINE_EXCEEDED, SC.CANCELLED}

rc = None  # the rnnserve_client module, imported in main() from --repo-root


# ---- the server process -------------------------------------------------------

class ServerProcess(Child):
    """build/bin/rnnserve as a child: stderr goes to a log file and a ring
    buffer, scanned for the gRPC and metrics ports, error lines and the
    shutdown line. It dies with this driver."""

    def __init__(self, binary, repository, log_path, extra_args, startup_timeout,
                 extra_env=None):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.update(extra_env or {})
        super().__init__([binary, "--model-repository", repository,
                          "--grpc-address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0",
                          "--model-control", "explicit",
                          "--startup-models", "charlm,charlm_seq,charlm_idle,gru_feat"]
                         + extra_args,
                         {"grpc": LISTENING, "metrics": METRICS_ON, "shutdown": SHUTDOWN,
                          "error": ERROR_LINE},
                         env=env, log_path=log_path, die_with_parent=True)
        self.found("grpc", startup_timeout)

    def _port(self, key):
        m = self.found(key, 0)
        return int(m.group(2)) if m else None

    @property
    def port(self):
        return self._port("grpc")

    @property
    def metrics_port(self):
        return self._port("metrics")

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    @property
    def shutdown_line(self):
        """The last shutdown line, or None."""
        lines = self.matches("shutdown")
        return lines[-1].string if lines else None

    @property
    def error_lines(self):
        return [m.string for m in self.matches("error")]


def proc_status(pid):
    """VmRSS and VmHWM (MiB), threads, open fds and CPU seconds (user +
    system) of a process, or None."""
    values = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) / 1024.0  # kB
                elif key == "Threads":
                    values[key] = int(rest.split()[0])
        values["fds"] = len(os.listdir("/proc/%d/fd" % pid))
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rpartition(")")[2].split()
        values["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return values


# ---- the model repository -----------------------------------------------------

SEQ_CONFIG = """\
# charlm's weights, calibration and tensors, sequence-batched (soak test).
name: charlm_seq
inputs:
  - {name: tokens, dtype: INT64, dims: [-1, -1]}
outputs:
  - {name: logits, dtype: FP32, dims: [-1, -1, 97]}
precision: int8
calibration: {method: minmax, file: calibration.npy, per_channel: true}
max_sequence_length: 1024
batching:
  kind: sequence
  max_batch_size: 64
  max_queue_delay_us: 200
  max_queue_size: 1024
  max_sequence_idle_us: %d
  max_active_sequences: 256
drift: {sample_rate: 0.01, action: alert}
""" % (SEQ_IDLE_S * 1000000)

GRU_CONFIG = """\
# tests/testdata/goldens/gru_1l: GRU(8 -> 16), FP32 features (soak test).
name: gru_feat
precision: f32
max_sequence_length: 256
batching: {kind: dynamic, max_batch_size: 32, max_queue_delay_us: 100}
"""


def make_repository(root, directory):
    """charlm (a copy of the deploy one), charlm_idle (the same, renamed),
    charlm_seq (same weights, sequence batching) and gru_feat (f32 GRU)."""
    demo = os.path.join(root, "deploy", "model-repository", "charlm")
    shutil.copytree(demo, os.path.join(directory, "charlm"))
    idle = os.path.join(directory, "charlm_idle")
    shutil.copytree(demo, idle)
    with open(os.path.join(demo, "config.yaml")) as f:
        text = f.read()
    renamed = re.sub(r"(?m)^name: charlm$", "name: charlm_idle", text)
    if renamed == text:
        raise RuntimeError("%s/config.yaml has no 'name: charlm' line" % demo)
    with open(os.path.join(idle, "config.yaml"), "w") as f:
        f.write(renamed)
    seq = os.path.join(directory, "charlm_seq")
    os.makedirs(os.path.join(seq, "1"))
    for name in ("model.onnx", "calibration.npy"):
        shutil.copy(os.path.join(demo, "1", name), os.path.join(seq, "1", name))
    with open(os.path.join(seq, "config.yaml"), "w") as f:
        f.write(SEQ_CONFIG)
    gru = os.path.join(directory, "gru_feat")
    os.makedirs(os.path.join(gru, "1"))
    shutil.copy(os.path.join(root, "tests", "testdata", "goldens", "gru_1l", "model.onnx"),
                os.path.join(gru, "1", "model.onnx"))
    with open(os.path.join(gru, "config.yaml"), "w") as f:
        f.write(GRU_CONFIG)


# ---- bookkeeping --------------------------------------------------------------

class Stats:
    """Counters shared by the workers (one lock), and the failures."""

    def __init__(self):
        self.mu = threading.Lock()
        self.counts = collections.Counter()   # kind -> n
        # (metrics model label, gRPC code name) -> requests whose answer the
        # server certainly counted under that series.
        self.definite = collections.Counter()
        self.ambiguous = collections.Counter()  # model label -> chaos requests
        self.chaos_codes = collections.Counter()
        self.bad_codes = collections.Counter()  # "name -> CODE" -> n
        self.failures = 0
        self.failure_kinds = collections.Counter()
        self.failure_samples = []
        self.max_diff = collections.defaultdict(float)  # check -> largest |d| seen

    def add(self, kind, n=1):
        with self.mu:
            self.counts[kind] += n

    def served(self, model, code=SC.OK, n=1):
        with self.mu:
            self.definite[(model, code.name)] += n

    def diff(self, name, value):
        with self.mu:
            self.max_diff[name] = max(self.max_diff[name], float(value))

    def fail(self, kind, message):
        with self.mu:
            self.failures += 1
            self.failure_kinds[kind] += 1
            if len(self.failure_samples) < 40:
                self.failure_samples.append("%s: %s" % (kind, message))
        print("FAIL  %s: %s" % (kind, message), flush=True)

    def snapshot(self):
        with self.mu:
            return dict(self.counts), self.failures


class Pacer:
    """Sleeps so a loop runs at most `rate` times a second (no catch-up burst
    after a slow call beyond one second's worth)."""

    def __init__(self, rate, stop):
        self.period = 1.0 / rate if rate > 0 else 0.0
        self.stop = stop
        self.next = time.monotonic() - self.period  # the first wait() returns at once

    def wait(self):
        now = time.monotonic()
        self.next = max(self.next + self.period, now - 1.0)
        if self.next > now:
            self.stop.wait(self.next - now)
        return not self.stop.is_set()


def new_channel(address):
    return grpc.insecure_channel(address, options=[
        ("grpc.max_send_message_length", rc.MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", rc.MAX_MESSAGE_BYTES)])


def token_request(model, tokens, input_name="tokens", typed=False, version=""):
    request = rc.pb.ModelInferRequest(model_name=model, model_version=version)
    rc.set_input(request, input_name, tokens, typed)
    return request


def output_of(response):
    outputs = rc.get_outputs(response)
    if len(outputs) != 1:
        raise ValueError("expected one output, got %s" % list(outputs))
    return next(iter(outputs.values()))


def shape_problem(array, shape):
    """Why `array` is not a finite float32 array of `shape`, or ''."""
    if array.dtype != np.float32:
        return "dtype %s" % array.dtype
    if array.shape != tuple(shape):
        return "shape %s, expected %s" % (array.shape, tuple(shape))
    if not np.all(np.isfinite(array)):
        return "%d non-finite values" % int(np.size(array) - np.isfinite(array).sum())
    return ""


class LockstepStream:
    """A ModelStreamInfer call used one request at a time; send() returns the
    ModelStreamInferResponse (errors stay inside it, as the server sends)."""

    def __init__(self, stub, timeout):
        self._requests = queue.Queue()
        self._call = stub.ModelStreamInfer(iter(self._requests.get, None), timeout=timeout)

    def send(self, request):
        self._requests.put(request)
        return next(self._call)

    def close(self):
        self._requests.put(None)
        extra = sum(1 for _ in self._call)
        if extra:
            raise RuntimeError("%d responses after the last request" % extra)

    def cancel(self):
        self._requests.put(None)
        self._call.cancel()


# ---- references ---------------------------------------------------------------

class References:
    """The probes and their first answers (set once, before the workers)."""

    def __init__(self, root):
        demo = os.path.join(root, "tests", "testdata", "demo")
        golden = os.path.join(root, "tests", "testdata", "goldens", "gru_1l")
        self.demo_tokens = np.load(os.path.join(demo, "heldout_tokens.npy")).astype(np.int64)
        self.demo_expected = np.load(os.path.join(demo, "expected_logits.npy"))
        self.charlm_probe = self.demo_tokens[:self.demo_expected.shape[0]]
        self.gru_probe = np.load(os.path.join(golden, "input.npy")).astype(np.float32)
        self.gru_expected = np.load(os.path.join(golden, "expected.npy"))
        self.charlm_answer = None
        self.gru_answer = None
        self.gru_input_name = None


def establish_references(client, refs, failures):
    """First answers to the probes, checked against the PyTorch f32 oracles."""
    meta = client.model_metadata("gru_feat")
    refs.gru_input_name = meta.inputs[0].name
    refs.charlm_answer = client.infer("charlm", refs.charlm_probe, input_name="tokens")
    d = np.abs(refs.charlm_answer - refs.demo_expected)
    print("charlm probe vs PyTorch f32: max |d| %.3f, mean |d| %.3f (allowed %.2f / %.2f)"
          % (d.max(), d.mean(), DEMO_MAX_ABS, DEMO_MEAN_ABS), flush=True)
    if d.max() > DEMO_MAX_ABS or d.mean() > DEMO_MEAN_ABS:
        failures.append("charlm probe vs PyTorch f32: max |d| %.3f, mean |d| %.3f"
                        % (d.max(), d.mean()))
    refs.gru_answer = client.infer("gru_feat", refs.gru_probe, input_name=refs.gru_input_name)
    d = np.abs(refs.gru_answer - refs.gru_expected)
    print("gru_feat probe vs PyTorch f32: max |d| %.2g (allowed %.0e)"
          % (d.max(), GRU_F32_MAX_ABS), flush=True)
    if d.max() > GRU_F32_MAX_ABS:
        failures.append("gru_feat probe vs PyTorch f32: max |d| %.2g" % d.max())


# ---- workers ------------------------------------------------------------------

class Worker(threading.Thread):
    """A load thread: run() loops body() until stop; an exception that
    escapes body() is a failure of its kind and the loop goes on."""

    kind = "worker"

    def __init__(self, ctx, index):
        super().__init__(name="%s-%d" % (self.kind, index), daemon=True)
        self.ctx = ctx
        self.stats = ctx.stats
        self.stop = ctx.stop
        self.rng = np.random.default_rng([ctx.args.seed, index, zlib.crc32(self.kind.encode())])
        self.channel = new_channel(ctx.address)
        self.stub = rc.pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.client = rc.InferenceClient(ctx.address, ctx.args.stubs,
                                         timeout=ctx.args.call_timeout)

    def run(self):
        pacer = Pacer(self.rate(), self.stop)
        while pacer.wait():
            try:
                self.body()
            except Exception as e:  # noqa: BLE001 -- counted, shown, and the soak goes on
                self.stats.fail(self.kind, "%s: %s" % (type(e).__name__, e))
        self.client.close()
        self.channel.close()

    def rate(self):
        raise NotImplementedError

    def body(self):
        raise NotImplementedError


class UnaryWorker(Worker):
    kind = "unary"

    def rate(self):
        return self.ctx.args.unary_rate / self.ctx.args.unary_threads

    def body(self):
        args, rng, refs = self.ctx.args, self.rng, self.ctx.refs
        if self.ctx.probe_due():
            self.probe()
            return
        if rng.random() < 0.15:
            n, t = self.ctx.batch(rng), self.ctx.steps(rng, 1, 64)
            x = (0.2 + 1.5 * rng.standard_normal((n, t, GRU_FEATURES))).astype(np.float32)
            model, shape = "gru_feat", (n, t, GRU_HIDDEN)
            call = lambda: self.client.infer(  # noqa: E731
                model, x, input_name=refs.gru_input_name)
        else:
            n, t = self.ctx.batch(rng), self.ctx.steps(rng, 1, 128)
            if args.shapes == "random" and rng.random() < 0.02:
                n, t = 1, 512
            tokens = rng.integers(0, VOCAB, size=(n, t), dtype=np.int64)
            model, shape = "charlm", (n, t, LOGITS)
            style = rng.random()
            if style < 0.15:
                call = lambda: self.client.infer(model, tokens, input_name="tokens",  # noqa: E731
                                                 typed=True)
            elif style < 0.30:
                call = lambda: self.client.infer(model, tokens.astype(np.int32),  # noqa: E731
                                                 input_name="tokens")
            else:
                call = lambda: self.client.infer(model, tokens, input_name="tokens")  # noqa: E731
        try:
            y = call()
        except grpc.RpcError as e:
            self.stats.fail("unary", "%s [%s]: %s: %s" % (model, "x".join(map(str, shape[:2])),
                                                           e.code().name, e.details()))
            return
        self.stats.served(model)
        problem = shape_problem(y, shape)
        if problem:
            self.stats.fail("unary", "%s answer: %s" % (model, problem))
            return
        self.stats.add("unary")

    def probe(self):
        refs, tol = self.ctx.refs, self.ctx.args.probe_tolerance
        for model, x, name, first in (
                ("charlm", refs.charlm_probe, "tokens", refs.charlm_answer),
                ("gru_feat", refs.gru_probe, refs.gru_input_name, refs.gru_answer)):
            try:
                y = self.client.infer(model, x, input_name=name)
            except grpc.RpcError as e:
                self.stats.fail("probe", "%s: %s: %s" % (model, e.code().name, e.details()))
                continue
            self.stats.served(model)
            if y.shape != first.shape:
                self.stats.fail("probe", "%s: shape %s, first answer %s"
                                % (model, y.shape, first.shape))
                continue
            d = float(np.abs(y - first).max())
            self.stats.diff("probe " + model, d)
            if d > tol:
                self.stats.fail("probe", "%s: max |d| %.3g from the first answer > %.3g"
                                % (model, d, tol))
            else:
                self.stats.add("probe")


class StreamWorker(Worker):
    kind = "stream"

    def rate(self):
        return self.ctx.args.stream_rate / self.ctx.args.stream_threads

    def body(self):
        rng, args = self.rng, self.ctx.args
        t = self.ctx.steps(rng, 8, 160)
        tokens = rng.integers(0, VOCAB, size=(1, t), dtype=np.int64)
        abandon = rng.random() < 0.1
        # 2..6 chunks; with --shapes bounded cut at multiples of 8 only.
        grid = 8 if args.shapes == "bounded" else 1
        k = min(int(rng.integers(2, 7)), t // grid)
        cuts = sorted(rng.choice(np.arange(grid, t, grid), size=k - 1, replace=False).tolist())
        bounds = list(zip([0] + cuts, cuts + [t]))
        if abandon:
            bounds = bounds[:max(1, len(bounds) - 1)]  # never the end chunk
        else:
            try:
                whole = self.client.infer("charlm", tokens, input_name="tokens")
            except grpc.RpcError as e:
                self.stats.fail("stream", "whole sequence on charlm: %s: %s"
                                % (e.code().name, e.details()))
                return
            self.stats.served("charlm")
        sequence_id = rc.new_sequence_id()
        outputs = []
        stream = LockstepStream(self.stub, timeout=args.call_timeout * 4)
        try:
            for i, (a, b) in enumerate(bounds):
                request = token_request("charlm_seq", tokens[:, a:b])
                request.id = "%d/%d" % (sequence_id, i)
                rc.set_sequence(request, sequence_id, start=(i == 0),
                                end=(not abandon and i == len(bounds) - 1))
                message = stream.send(request)
                if message.error_message:
                    code = message.infer_response.parameters["status_code"].int64_param
                    self.stats.served("charlm_seq", SC.OK if code == 0 else _code(code))
                    self.stats.fail("stream", "chunk %d of %d: %s" % (i, len(bounds),
                                                                      message.error_message))
                    stream.cancel()
                    return
                self.stats.served("charlm_seq")
                if message.infer_response.id != request.id:
                    self.stats.fail("stream", "response id %r for %r"
                                    % (message.infer_response.id, request.id))
                y = output_of(message.infer_response)
                problem = shape_problem(y, (1, b - a, LOGITS))
                if problem:
                    self.stats.fail("stream", "chunk %d: %s" % (i, problem))
                    stream.cancel()
                    return
                outputs.append(y)
                self.stats.add("stream_chunks")
            if abandon:
                stream.cancel()
                self.stats.add("streams_abandoned")
                return
            stream.close()
        except grpc.RpcError as e:
            self.stats.fail("stream", "%s: %s" % (e.code().name, e.details()))
            stream.cancel()
            return
        d = float(np.abs(np.concatenate(outputs, axis=1) - whole).max())
        self.stats.diff("stream vs whole", d)
        if d > args.stream_tolerance:
            self.stats.fail("stream", "T=%d in %d chunks: max |d| %.3g from the whole "
                            "sequence on charlm > %.3g" % (t, len(bounds), d,
                                                           args.stream_tolerance))
            return
        self.stats.add("streams")


def _code(value):
    for code in SC:
        if code.value[0] == value:
            return code
    return SC.UNKNOWN


class BadWorker(Worker):
    """Malformed requests, round robin; each must get exactly its code."""

    kind = "bad"

    def __init__(self, ctx, index):
        super().__init__(ctx, index)
        self.cases = self.make_cases()
        self.next_case = index * 7

    def rate(self):
        return self.ctx.args.bad_rate

    def make_cases(self):
        """(name, metrics model label, expected code, request or callable)."""
        rng = np.random.default_rng(5)
        good = rng.integers(0, VOCAB, size=(2, 12), dtype=np.int64)
        gru_in = self.ctx.refs.gru_input_name
        feats = (0.2 + rng.standard_normal((2, 5, GRU_FEATURES))).astype(np.float32)
        cases = []

        def add(name, label, code, request):
            cases.append((name, label, code, request))

        add("unknown model", "", SC.NOT_FOUND, token_request("no_such_model", good))
        add("unknown version", "", SC.NOT_FOUND, token_request("charlm", good, version="7"))
        add("version not a number", "", SC.INVALID_ARGUMENT,
            token_request("charlm", good, version="latest"))
        add("FP32 tokens", "charlm", SC.INVALID_ARGUMENT,
            token_request("charlm", good.astype(np.float32)))
        add("rank 3 tokens", "charlm", SC.INVALID_ARGUMENT,
            token_request("charlm", good[:, :, None]))
        add("rank 1 tokens", "charlm", SC.INVALID_ARGUMENT, token_request("charlm", good[0]))
        oov = good.copy()
        oov[1, 5] = VOCAB
        add("token id = vocab size", "charlm", SC.INVALID_ARGUMENT, token_request("charlm", oov))
        negative = good.copy()
        negative[0, 0] = -1
        add("negative token id", "charlm", SC.INVALID_ARGUMENT,
            token_request("charlm", negative.astype(np.int32)))
        add("missing input", "charlm", SC.INVALID_ARGUMENT,
            rc.pb.ModelInferRequest(model_name="charlm"))
        add("wrong input name", "charlm", SC.INVALID_ARGUMENT,
            token_request("charlm", good, input_name="input"))
        r = token_request("charlm", good)
        r.raw_input_contents[0] = r.raw_input_contents[0][:-8]
        add("raw bytes short by one element", "charlm", SC.INVALID_ARGUMENT, r)
        r = token_request("charlm", good)
        r.outputs.add(name="no_such_output")
        add("unknown requested output", "charlm", SC.INVALID_ARGUMENT, r)
        add("steps over max_sequence_length", "charlm", SC.INVALID_ARGUMENT,
            token_request("charlm", np.zeros((1, 1025), np.int64)))
        add("batch over max_batch_size", "charlm", SC.INVALID_ARGUMENT,
            token_request("charlm", np.zeros((129, 1), np.int64)))
        r = token_request("charlm", good)
        rc.set_sequence(r, 12345, start=True, end=True)
        add("sequence parameters on a dynamic model", "charlm", SC.INVALID_ARGUMENT, r)
        r = token_request("charlm", good)
        r.parameters["timeout"].int64_param = -5
        add("negative timeout parameter", "charlm", SC.INVALID_ARGUMENT, r)
        r = token_request("charlm_seq", good[:1])
        r.parameters["sequence_id"].double_param = 3.0
        r.parameters["sequence_start"].bool_param = True
        add("sequence_id as a double", "charlm_seq", SC.INVALID_ARGUMENT, r)
        add("stateful model without sequence_id", "charlm_seq", SC.INVALID_ARGUMENT,
            token_request("charlm_seq", good[:1]))
        r = token_request("charlm_seq", good)
        rc.set_sequence(r, 777, start=True, end=True)
        add("stateful chunk of 2 sequences", "charlm_seq", SC.INVALID_ARGUMENT, r)
        add("chunk of a stream never started", "charlm_seq", SC.FAILED_PRECONDITION,
            lambda: self.unstarted_chunk(good))
        nan = feats.copy()
        nan[1, 2, 3] = np.nan
        add("NaN feature", "gru_feat", SC.INVALID_ARGUMENT,
            token_request("gru_feat", nan, input_name=gru_in))
        inf = feats.copy()
        inf[0, 4, 0] = -np.inf
        add("-Inf feature (typed fp32_contents)", "gru_feat", SC.INVALID_ARGUMENT,
            token_request("gru_feat", inf, input_name=gru_in, typed=True))
        add("7 features for 8", "gru_feat", SC.INVALID_ARGUMENT,
            token_request("gru_feat", feats[:, :, :7], input_name=gru_in))
        add("INT64 for FP32 features", "gru_feat", SC.INVALID_ARGUMENT,
            token_request("gru_feat", good, input_name=gru_in))
        # A message over the server's max_message_bytes: refused by gRPC
        # before any handler (not counted in rnnserve_requests_total).
        big = self.ctx.args.max_message_bytes // 8 + 1024
        add("message over max_message_bytes", None, SC.RESOURCE_EXHAUSTED,
            token_request("charlm", np.zeros((1, big), np.int64)))
        add("unknown model inside a stream", "", SC.NOT_FOUND, self.bad_in_stream)
        add("RepositoryModelLoad of a bad name", None, SC.INVALID_ARGUMENT,
            lambda: self.stub.RepositoryModelLoad(
                rc.pb.RepositoryModelLoadRequest(model_name="../etc"),
                timeout=self.ctx.args.call_timeout))
        add("RepositoryModelUnload of an unknown model", None, SC.NOT_FOUND,
            lambda: self.stub.RepositoryModelUnload(
                rc.pb.RepositoryModelUnloadRequest(model_name="never_loaded"),
                timeout=self.ctx.args.call_timeout))
        return cases

    def unstarted_chunk(self, good):
        """A chunk continuing a stream that was never started; returns the code."""
        request = token_request("charlm_seq", good[:1])
        rc.set_sequence(request, rc.new_sequence_id(), start=False, end=False)
        try:
            self.stub.ModelInfer(request, timeout=self.ctx.args.call_timeout)
            return SC.OK
        except grpc.RpcError as e:
            return e.code()

    def bad_in_stream(self):
        """Unknown model on a stream: answered in error_message (code in
        parameters.status_code) and the stream serves the next request;
        returns the code."""
        stream = LockstepStream(self.stub, timeout=self.ctx.args.call_timeout)
        try:
            message = stream.send(token_request("no_such_model", np.zeros((1, 3), np.int64)))
            code = _code(message.infer_response.parameters["status_code"].int64_param)
            if not message.error_message:
                code = SC.OK
            after = stream.send(token_request("charlm", np.ones((1, 3), np.int64)))
            if after.error_message:
                self.stats.fail("bad", "stream after a refused request: %s" % after.error_message)
            else:
                self.stats.served("charlm")
                problem = shape_problem(output_of(after.infer_response), (1, 3, LOGITS))
                if problem:
                    self.stats.fail("bad", "stream after a refused request: %s" % problem)
            stream.close()
        except grpc.RpcError:
            stream.cancel()
            raise
        return code

    def body(self):
        name, label, expected, what = self.cases[self.next_case % len(self.cases)]
        self.next_case += 1
        try:
            if callable(what):
                result = what()
                got = result if isinstance(result, SC) else SC.OK
                details = ""
            else:
                self.stub.ModelInfer(what, timeout=self.ctx.args.call_timeout)
                got, details = SC.OK, ""
        except grpc.RpcError as e:
            got, details = e.code(), e.details()
        if label is not None:
            self.stats.served(label, got)
        with self.stats.mu:
            self.stats.bad_codes["%s -> %s" % (name, got.name)] += 1
        if got != expected:
            self.stats.fail("bad", "%s: got %s (%s), expected %s"
                            % (name, got.name, details, expected.name))
        else:
            self.stats.add("bad")


class ChaosWorker(Worker):
    """Good requests whose outcome is left to chance: tiny gRPC deadlines and
    client-side cancellations. OK, DEADLINE_EXCEEDED and CANCELLED are fine;
    the server may or may not count them (cross-check bounds)."""

    kind = "chaos"

    def rate(self):
        return self.ctx.args.chaos_rate

    def body(self):
        rng = self.rng
        n, t = self.ctx.batch(rng), self.ctx.steps(rng, 8, 128)
        request = token_request("charlm", rng.integers(0, VOCAB, size=(n, t), dtype=np.int64))
        if rng.random() < 0.5:
            mode = "deadline"
            try:
                response = self.stub.ModelInfer(request, timeout=float(rng.uniform(0.0005, 0.005)))
                got = SC.OK
            except grpc.RpcError as e:
                got, response = e.code(), None
        else:
            mode = "cancel"
            future = self.stub.ModelInfer.future(request, timeout=self.ctx.args.call_timeout)
            time.sleep(float(rng.uniform(0, 0.004)))
            future.cancel()
            try:
                response = future.result()
                got = SC.OK
            except grpc.FutureCancelledError:
                got, response = SC.CANCELLED, None
            except grpc.RpcError as e:
                got, response = e.code(), None
        with self.stats.mu:
            self.stats.ambiguous["charlm"] += 1
            self.stats.chaos_codes["%s -> %s" % (mode, got.name)] += 1
        if got not in CHAOS_OK_CODES:
            self.stats.fail("chaos", "%s: got %s" % (mode, got.name))
            return
        if response is not None:
            problem = shape_problem(output_of(response), (n, t, LOGITS))
            if problem:
                self.stats.fail("chaos", "answer: %s" % problem)
                return
        self.stats.add("chaos")


class ReloadWorker(Worker):
    """Reloads charlm under traffic; unloads and reloads charlm_idle."""

    kind = "reload"

    def rate(self):
        return 1.0 / self.ctx.args.reload_interval

    def run(self):
        self.stop.wait(min(self.ctx.args.reload_interval, 2.0))  # let traffic start
        super().run()

    def repository(self, name, load):
        t0 = time.monotonic()
        if load:
            self.stub.RepositoryModelLoad(rc.pb.RepositoryModelLoadRequest(model_name=name),
                                          timeout=120)
        else:
            self.stub.RepositoryModelUnload(rc.pb.RepositoryModelUnloadRequest(model_name=name),
                                            timeout=120)
        return time.monotonic() - t0

    def body(self):
        refs, tol = self.ctx.refs, self.ctx.args.probe_tolerance
        step = "load charlm"
        try:
            took = self.repository("charlm", True)
            self.stats.diff("reload charlm s", took)
            self.stats.add("reloads")
            step = "unload charlm_idle"
            self.repository("charlm_idle", False)
            step = "ModelReady(charlm_idle) after unload"
            if self.client.model_ready("charlm_idle"):
                self.stats.fail("reload", "charlm_idle is ready after its unload")
            step = "infer charlm_idle after unload"
            try:
                self.stub.ModelInfer(token_request("charlm_idle", refs.charlm_probe[:1]),
                                     timeout=self.ctx.args.call_timeout)
                got = SC.OK
            except grpc.RpcError as e:
                got = e.code()
            self.stats.served("" if got == SC.NOT_FOUND else "charlm_idle", got)
            with self.stats.mu:
                self.stats.bad_codes["unloaded model -> %s" % got.name] += 1
            if got != SC.NOT_FOUND:
                self.stats.fail("reload", "request to the unloaded charlm_idle: %s, expected "
                                "NOT_FOUND" % got.name)
            else:
                self.stats.add("bad")
            step = "load charlm_idle"
            self.repository("charlm_idle", True)
            self.stats.add("idle_reloads")
            step = "probe charlm_idle"
            y = self.client.infer("charlm_idle", refs.charlm_probe, input_name="tokens")
            self.stats.served("charlm_idle")
            d = float(np.abs(y - refs.charlm_answer).max()) if y.shape == \
                refs.charlm_answer.shape else float("inf")
            self.stats.diff("probe charlm_idle vs charlm", d)
            if d > tol:
                self.stats.fail("reload", "charlm_idle probe: max |d| %.3g from charlm's > %.3g"
                                % (d, tol))
        except grpc.RpcError as e:
            self.stats.fail("reload", "%s: %s: %s" % (step, e.code().name, e.details()))


# ---- metrics ------------------------------------------------------------------

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(port):
    """[(name, {label: value}, float)] from /metrics."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=30) as r:
        text = r.read().decode()
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if m:
            samples.append((m.group(1), dict(LABEL.findall(m.group(2) or "")),
                            float(m.group(3))))
    return samples


def request_counts(samples):
    """{(model, code): n} from rnnserve_requests_total, summed over versions."""
    counts = collections.Counter()
    for name, labels, value in samples:
        if name == "rnnserve_requests_total":
            counts[(labels.get("model", ""), labels.get("code", ""))] += int(round(value))
    return counts


def live_sequences(samples, model):
    return sum(v for n, labels, v in samples
               if n == "rnnserve_live_sequences" and labels.get("model") == model)


def cross_check(server, stats):
    """Rows (model, code, server, driver definite, allowed extra, ok)."""
    rows = []
    for model, code in sorted(set(server) | set(stats.definite)):
        s, d = server.get((model, code), 0), stats.definite.get((model, code), 0)
        extra = stats.ambiguous.get(model, 0)
        rows.append((model, code, s, d, extra, d <= s <= d + extra))
    return rows


# ---- the memory rule ----------------------------------------------------------

def slope_mib_per_min(points):
    """Least-squares slope of [(t s, rss MiB)] in MiB/min."""
    if len(points) < 2:
        return 0.0
    t = np.array([p[0] for p in points]) / 60.0
    y = np.array([p[1] for p in points])
    if np.ptp(t) == 0:
        return 0.0
    return float(np.polyfit(t, y, 1)[0])


def memory_verdict(series, duration, args):
    """(ok, dict of the numbers) of the memory rule on the samples taken
    under load. RSS "at" a time is the smallest sample in the --window-s
    before it: a reload holds two copies of a model for a moment (tens of
    MiB), and memory that stays is what the rule is about."""
    load = [(s["t"], s["rss_mib"]) for s in series if s["phase"] == "load"]
    if len(load) < 3:
        return False, {"error": "only %d RSS samples under load" % len(load)}
    window = min(args.window_s, max(args.sample_interval, args.warmup_fraction * duration))

    def retained(t_end):
        points = [p for p in load if t_end - window - 1e-6 <= p[0] <= t_end + 1e-6]
        return min(points, key=lambda p: p[1]) if points else load[0]

    warm_t = args.warmup_fraction * duration
    warm = retained(min((p[0] for p in load if p[0] >= warm_t - 1e-6), default=load[-1][0]))
    end = retained(load[-1][0])
    limit = max(args.max_growth_mib, args.max_growth_fraction * warm[1])
    # The slope of the retained RSS (each sample's window minimum), so that a
    # reload's transient copy near either end of the half does not tilt it.
    second = [(p[0], retained(p[0])[1]) for p in load if p[0] >= duration / 2.0]
    span = (second[-1][0] - second[0][0]) if len(second) >= 2 else 0.0
    slope = slope_mib_per_min(second)
    slope_judged = span >= args.min_slope_window_s
    growth_ok = end[1] - warm[1] <= limit
    slope_ok = (not slope_judged) or slope < args.max_slope_mib_per_min
    numbers = {
        "rss_start_mib": load[0][1], "t_start_s": load[0][0],
        "rss_warmup_mib": warm[1], "t_warmup_s": warm[0],
        "rss_end_mib": end[1], "t_end_s": end[0],
        "rss_last_sample_mib": load[-1][1],
        "rss_max_mib": max(p[1] for p in load), "window_s": window,
        "growth_after_warmup_mib": end[1] - warm[1], "growth_limit_mib": limit,
        "slope_second_half_mib_per_min": slope,
        "slope_limit_mib_per_min": args.max_slope_mib_per_min,
        "slope_window_s": span, "slope_judged": slope_judged,
        "growth_ok": growth_ok, "slope_ok": slope_ok,
    }
    return growth_ok and slope_ok, numbers


# ---- the run ------------------------------------------------------------------

class Context:
    def __init__(self, args, address, refs, stats):
        self.args = args
        self.address = address
        self.refs = refs
        self.stats = stats
        self.stop = threading.Event()
        self._probe_mu = threading.Lock()
        self._next_probe = time.monotonic()

    def steps(self, rng, low, high):
        """A sequence length in [low, high]: uniform, or with --shapes bounded
        one of BOUNDED_STEPS."""
        if self.args.shapes == "bounded":
            return int(rng.choice([t for t in BOUNDED_STEPS if low <= t <= high]))
        return int(rng.integers(low, high + 1))

    def batch(self, rng):
        """Sequences per request: 1..8, or 1, 2, 4 or 8 with --shapes bounded."""
        if self.args.shapes == "bounded":
            return int(rng.choice(BOUNDED_BATCHES))
        return int(rng.integers(1, 9))

    def probe_due(self):
        with self._probe_mu:
            now = time.monotonic()
            if now < self._next_probe:
                return False
            self._next_probe = now + self.args.probe_interval
            return True


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring (and tests/soak/README.md).")
    ap.add_argument("--duration", type=float, default=300, help="seconds under load (300)")
    ap.add_argument("--sample-interval", type=float,
                    help="seconds between RSS samples (default 5; min(5, duration/20) for "
                         "short runs)")
    ap.add_argument("--repo-root", default=DEFAULT_ROOT, help="the rnnserve source tree")
    ap.add_argument("--server-binary", help="rnnserve (default <repo-root>/build/bin/rnnserve)")
    ap.add_argument("--stubs", help="generated Python stubs (default <repo-root>/build/python)")
    ap.add_argument("--json", help="write the machine-readable summary here")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shapes", choices=("random", "bounded"), default="random",
                    help="random: T uniform (1..128, now and then 512), N 1..8 -- what "
                         "clients send; bounded: T in %s, N in %s, stream chunks "
                         "multiples of 8, so every shape-keyed cache in the server fills "
                         "during warm-up and any growth after it is a leak"
                    % (list(BOUNDED_STEPS), list(BOUNDED_BATCHES)))
    ap.add_argument("--unary-threads", type=int, default=3)
    ap.add_argument("--unary-rate", type=float, default=90, help="unary requests/s, all threads")
    ap.add_argument("--stream-threads", type=int, default=2)
    ap.add_argument("--stream-rate", type=float, default=6, help="streams/s, all threads")
    ap.add_argument("--bad-rate", type=float, default=8, help="bad requests/s")
    ap.add_argument("--chaos-rate", type=float, default=4,
                    help="short-deadline / cancelled requests/s (0: none)")
    ap.add_argument("--reload-interval", type=float, default=10,
                    help="seconds between reload rounds")
    ap.add_argument("--probe-interval", type=float, default=2)
    ap.add_argument("--probe-tolerance", type=float, default=1e-4,
                    help="max |d| of a probe answer from the first one")
    ap.add_argument("--stream-tolerance", type=float, default=1e-4,
                    help="max |d| of a chunked stream from the whole sequence on charlm")
    ap.add_argument("--call-timeout", type=float, default=30, help="deadline of good calls, s")
    ap.add_argument("--max-message-bytes", type=int, default=4 << 20,
                    help="the server's --max-message-bytes (a bad request exceeds it)")
    ap.add_argument("--warmup-fraction", type=float, default=0.4,
                    help="the first part of the run that may grow (caches, allocator arenas)")
    ap.add_argument("--window-s", type=float, default=30,
                    help="RSS at a time = the smallest sample in this many s before it")
    ap.add_argument("--max-growth-mib", type=float, default=32)
    ap.add_argument("--max-growth-fraction", type=float, default=0.10)
    ap.add_argument("--max-slope-mib-per-min", type=float, default=10.0)
    ap.add_argument("--min-slope-window-s", type=float, default=60)
    ap.add_argument("--startup-timeout", type=float, default=180)
    ap.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment of the server, e.g. MALLOC_ARENA_MAX=2 "
                         "(repeatable; for diagnosis)")
    ap.add_argument("--keep-repository", action="store_true",
                    help="keep the temporary repository and server log")
    args = ap.parse_args()
    args.repo_root = os.path.abspath(args.repo_root)
    args.server_binary = os.path.abspath(
        args.server_binary or os.path.join(args.repo_root, "build", "bin", "rnnserve"))
    args.stubs = os.path.abspath(args.stubs or os.path.join(args.repo_root, "build", "python"))
    if args.sample_interval is None:
        args.sample_interval = min(5.0, max(0.5, args.duration / 20.0))
    return args


def print_row(row, previous=None):
    """One line of the table; the header when there is no previous row. cpu%
    is the server's CPU time over the interval (200% = both cores)."""
    if previous is None:
        print("%7s %8s %8s %5s %7s %5s %8s %6s %7s %7s %6s %6s %5s"
              % ("t_s", "rss_MiB", "hwm_MiB", "cpu%", "threads", "fds", "unary", "probe",
                 "streams", "bad", "chaos", "reload", "FAIL"), flush=True)
        cpu = 0.0
    else:
        cpu = 100.0 * (row["cpu_s"] - previous["cpu_s"]) / max(1e-6, row["t"] - previous["t"])
    c = row["counts"]
    print("%7.1f %8.1f %8.1f %5.0f %7d %5d %8d %6d %7d %7d %6d %6d %5d"
          % (row["t"], row["rss_mib"], row["hwm_mib"], cpu, row["threads"], row["fds"],
             c.get("unary", 0), c.get("probe", 0), c.get("streams", 0), c.get("bad", 0),
             c.get("chaos", 0), c.get("reloads", 0), row["failures"]), flush=True)


def sample(server, stats, t0, phase):
    status = proc_status(server.pid)
    if status is None:
        return None
    counts, failures = stats.snapshot()
    return {"t": round(time.monotonic() - t0, 2), "phase": phase,
            "rss_mib": round(status["VmRSS"], 2), "hwm_mib": round(status["VmHWM"], 2),
            "threads": status["Threads"], "fds": status["fds"], "cpu_s": status["cpu_s"],
            "counts": counts, "failures": failures}


def run(args, scratch):
    summary = {"args": vars(args), "checks": [], "failures": []}
    checks = summary["checks"]

    def check(name, ok, detail=""):
        print("%s  %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail else ""),
              flush=True)
        checks.append({"name": name, "ok": bool(ok), "detail": detail})
        return ok

    repo = os.path.join(scratch, "models")
    os.makedirs(repo)
    make_repository(args.repo_root, repo)
    log_path = os.path.join(scratch, "rnnserve.log")
    server = ServerProcess(args.server_binary, repo, log_path,
                           ["--max-message-bytes", str(args.max_message_bytes)],
                           args.startup_timeout,
                           dict(kv.split("=", 1) for kv in args.server_env))
    summary["server_log"] = log_path
    stats = Stats()
    series = []
    summary["rss_series"] = series
    try:
        if not check("server logs its gRPC and metrics ports",
                     server.port is not None and server.metrics_port is not None,
                     "exit code %s" % server.proc.poll()):
            server.show_log()
            return summary
        client = rc.InferenceClient(server.address, args.stubs, timeout=args.call_timeout)
        deadline = time.monotonic() + args.startup_timeout
        ready = False
        while time.monotonic() < deadline and server.proc.poll() is None and not ready:
            try:
                ready = client.ready()
            except grpc.RpcError:
                pass
            if not ready:
                time.sleep(0.2)
        index = {(m.name, m.state) for m in client.repository_index()} if ready else set()
        if not check("ServerReady, the 4 models READY", ready and all(
                (name, "READY") in index
                for name in ("charlm", "charlm_seq", "charlm_idle", "gru_feat")), str(index)):
            server.show_log()
            return summary
        refs = References(args.repo_root)
        oracle_failures = []
        establish_references(client, refs, oracle_failures)
        check("first probe answers vs PyTorch f32 oracles", not oracle_failures,
              "; ".join(oracle_failures))
        ctx = Context(args, server.address, refs, stats)
        stats.served("charlm")
        stats.served("gru_feat")
        before = sample(server, stats, time.monotonic(), "idle")
        summary["rss_idle_before_load_mib"] = before["rss_mib"] if before else None
        print("server pid %d, gRPC %s, metrics :%d; RSS before load %.1f MiB"
              % (server.pid, server.address, server.metrics_port, before["rss_mib"]), flush=True)

        workers = ([UnaryWorker(ctx, i) for i in range(args.unary_threads)] +
                   [StreamWorker(ctx, i) for i in range(args.stream_threads)] +
                   [BadWorker(ctx, 0), ReloadWorker(ctx, 0)] +
                   ([ChaosWorker(ctx, 0)] if args.chaos_rate > 0 else []))
        t0 = time.monotonic()
        for w in workers:
            w.start()
        previous = dict(before, t=0.0, counts={}, failures=0)
        print_row(previous)
        end = t0 + args.duration
        next_sample = t0 + args.sample_interval
        while True:
            now = time.monotonic()
            if server.proc.poll() is not None:
                stats.fail("server", "exited with %s during the run" % server.proc.returncode)
                break
            if now >= next_sample - 1e-3:
                row = sample(server, stats, t0, "load")
                if row:
                    series.append(row)
                    print_row(row, previous)
                    previous = row
                if now >= end - 1e-3:
                    break
                next_sample += args.sample_interval
            time.sleep(max(0.0, min(next_sample, end) - time.monotonic()))
        ctx.stop.set()
        for w in workers:
            w.join(args.call_timeout * 5)
            if w.is_alive():
                stats.fail("driver", "%s did not stop" % w.name)
        elapsed = time.monotonic() - t0
        summary["duration_s"] = round(elapsed, 1)
        if server.proc.poll() is not None:
            server.show_log()
            return summary

        # Abandoned streams are freed after the idle timeout.
        waited, live = 0.0, None
        wait_until = time.monotonic() + SEQ_IDLE_S * 2 + 10
        while time.monotonic() < wait_until:
            live = live_sequences(scrape(server.metrics_port), "charlm_seq")
            if live == 0:
                break
            time.sleep(1.0)
        waited = round(time.monotonic() - (wait_until - SEQ_IDLE_S * 2 - 10), 1)
        check("abandoned streams freed (rnnserve_live_sequences{model=charlm_seq} == 0)",
              live == 0, "%s live after %.1f s (idle timeout %d s)" % (live, waited, SEQ_IDLE_S))
        row = sample(server, stats, t0, "quiet")
        if row:
            series.append(row)
            print("after the load (quiet): RSS %.1f MiB, HWM %.1f MiB, %d threads, %d fds"
                  % (row["rss_mib"], row["hwm_mib"], row["threads"], row["fds"]), flush=True)

        # Health at the end.
        check("grpc.health.v1 Check('') SERVING at the end", client.health("") == "SERVING")
        check("ServerReady at the end", client.ready())
        index = client.repository_index()
        check("every model READY at the end", all(m.state == "READY" for m in index),
              ", ".join("%s:%s" % (m.name, m.state) for m in index))
        client.close()

        # /metrics vs what was sent.
        samples = scrape(server.metrics_port)
        server_counts = request_counts(samples)
        rows = cross_check(server_counts, stats)
        summary["cross_check"] = [
            {"model": m, "code": c, "server": s, "driver": d, "chaos": e, "ok": ok}
            for m, c, s, d, e, ok in rows]
        print("rnnserve_requests_total vs the driver (chaos = requests whose outcome the "
              "client could not know):")
        print("  %-12s %-20s %9s %9s %6s" % ("model", "code", "server", "driver", "chaos"))
        for m, c, s, d, e, ok in rows:
            if s == 0 and d == 0:
                continue  # prometheus-cpp exports every code of a series
            print("  %-12s %-20s %9d %9d %6d %s"
                  % (m or '""', c, s, d, e, "" if ok else "MISMATCH"))
        check("rnnserve_requests_total agrees with the driver per (model, code)",
              all(r[5] for r in rows))
        metrics_total = sum(server_counts.values())
        metrics_ok = sum(v for (m, c), v in server_counts.items() if c == "OK")

        # SIGTERM: exit 0 and accepted == answered.
        code = server.terminate()
        check("SIGTERM -> exit code 0", code == 0, "exit code %s" % code)
        m = SHUTDOWN.search(server.shutdown_line or "")
        if check("shutdown line logged", m is not None, server.shutdown_line or "none"):
            accepted, answered, ok = (int(g) for g in m.groups())
            summary["shutdown"] = {"accepted": accepted, "answered": answered, "ok": ok,
                                   "metrics_total": metrics_total, "metrics_ok": metrics_ok}
            check("shutdown: accepted == answered", accepted == answered,
                  "%d accepted, %d answered" % (accepted, answered))
            check("shutdown counts == /metrics counts", accepted == metrics_total and
                  ok == metrics_ok, "accepted %d vs %d in /metrics, OK %d vs %d"
                  % (accepted, metrics_total, ok, metrics_ok))
        if server.error_lines:
            summary["server_error_lines"] = server.error_lines[:20]
            print("server error log lines (%d): %s" % (len(server.error_lines),
                                                        "\n  ".join(server.error_lines[:10])))

        # The memory rule.
        ok, numbers = memory_verdict(series, args.duration, args)
        summary["memory"] = numbers
        if "error" in numbers:
            check("memory rule", False, numbers["error"])
        else:
            print("memory: RSS start %.1f MiB (t=%.0f s); retained (min over %.0f s) at the end "
                  "of warm-up %.1f MiB (t=%.0f s), at the end %.1f MiB (t=%.0f s); last "
                  "sample %.1f MiB, max %.1f MiB, VmHWM %.1f MiB"
                  % (numbers["rss_start_mib"], numbers["t_start_s"], numbers["window_s"],
                     numbers["rss_warmup_mib"], numbers["t_warmup_s"], numbers["rss_end_mib"],
                     numbers["t_end_s"], numbers["rss_last_sample_mib"], numbers["rss_max_mib"],
                     series[-1]["hwm_mib"]), flush=True)
            check("memory: end - warm-up <= max(%.0f MiB, %.0f%% of warm-up)"
                  % (args.max_growth_mib, 100 * args.max_growth_fraction), numbers["growth_ok"],
                  "%+.1f MiB (limit %.1f MiB)" % (numbers["growth_after_warmup_mib"],
                                                  numbers["growth_limit_mib"]))
            if numbers["slope_judged"]:
                check("memory: RSS slope over the second half < %.2f MiB/min"
                      % args.max_slope_mib_per_min, numbers["slope_ok"],
                      "%+.3f MiB/min over %.0f s" % (numbers["slope_second_half_mib_per_min"],
                                                     numbers["slope_window_s"]))
            else:
                print("note  memory slope not judged: the second half spans %.0f s < %.0f s "
                      "(measured %+.2f MiB/min)" % (numbers["slope_window_s"],
                                                    args.min_slope_window_s,
                                                    numbers["slope_second_half_mib_per_min"]))
        return summary
    finally:
        server.kill()  # if it still runs; closes the server log either way
        counts, failures = stats.snapshot()
        summary["counts"] = counts
        summary["request_failures"] = failures
        summary["failure_kinds"] = dict(stats.failure_kinds)
        summary["failure_samples"] = stats.failure_samples
        summary["bad_codes"] = dict(stats.bad_codes)
        summary["chaos_codes"] = dict(stats.chaos_codes)
        summary["max_diff"] = dict(stats.max_diff)
        summary["driver_definite"] = {"%s|%s" % k: v for k, v in stats.definite.items()}


def main():
    args = parse_args()
    global rc
    sys.path.insert(0, os.path.join(args.repo_root, "client", "python"))
    import rnnserve_client  # noqa: E402  (from --repo-root)
    rc = rnnserve_client
    if not os.access(args.server_binary, os.X_OK):
        print("FAIL  no server binary at %s" % args.server_binary)
        return 1
    try:
        rc.load_stubs(args.stubs)
    except ImportError as e:
        print("FAIL  %s" % e)
        return 1
    scratch = tempfile.mkdtemp(prefix="rnnserve-soak-")
    try:
        summary = run(args, scratch)
    finally:
        if not args.keep_repository:
            shutil.rmtree(scratch, ignore_errors=True)
    failed_checks = [c for c in summary["checks"] if not c["ok"]]
    counts = summary.get("counts", {})
    print("\nrequests: %d unary, %d probe rounds, %d streams (%d chunks, %d abandoned), "
          "%d bad, %d chaos, %d reloads of charlm, %d unload+load of charlm_idle"
          % (counts.get("unary", 0), counts.get("probe", 0), counts.get("streams", 0),
             counts.get("stream_chunks", 0), counts.get("streams_abandoned", 0),
             counts.get("bad", 0), counts.get("chaos", 0), counts.get("reloads", 0),
             counts.get("idle_reloads", 0)))
    print("largest differences: %s" % ", ".join(
        "%s %.3g" % kv for kv in sorted(summary.get("max_diff", {}).items())))
    print("chaos outcomes: %s" % dict(sorted(summary.get("chaos_codes", {}).items())))
    ok = not failed_checks and summary.get("request_failures", 1) == 0
    summary["passed"] = ok
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1, sort_keys=True, default=str)
        print("wrote %s" % args.json)
    if not ok:
        print("\nSOAK FAILED: %d request failure(s) %s; failed checks: %s"
              % (summary.get("request_failures", 0), summary.get("failure_kinds", {}),
                 "; ".join("%s (%s)" % (c["name"], c["detail"]) for c in failed_checks) or
                 "none"))
        for line in summary.get("failure_samples", [])[:10]:
            print("  " + line)
        return 1
    print("\nSOAK PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
