#!/usr/bin/python3
"""rnnserve engine benchmark: rnnserve int8 / f32 / bf16 against PyTorch f32 and
PyTorch quantize_dynamic int8, same weights, same thread count, same machine.

For each shape the script builds a PyTorch nn.LSTM / nn.GRU (batch_first, fixed
seed), exports it with torch.onnx.export (opset 14, dynamic batch and time axes),
checks that the numbers it is about to compare are right (rnnserve f32 == PyTorch
f32, rnnserve int8 and quantize_dynamic close to PyTorch f32), then alternates the
variants for several rounds and reports medians and ratios against the targets.

  /usr/bin/python3 bench/engine_bench.py                 # full run (several minutes)
  /usr/bin/python3 bench/engine_bench.py --quick         # tiny shapes, < 60 s (CTest)

Exit status: 0 when every correctness check passed; 1 when a correctness check
failed; 2 when rnnserve f32/int8 could not run at all (missing binary, crash).
Timing never fails the script: targets are reported as met / not met.

Must run with Debian's /usr/bin/python3 (python3-torch 1.13.1). PyTorch f32 is
measured with OpenBLAS: if torch loads netlib's reference BLAS, the script re-executes
itself with the OpenBLAS libblas.so.3 in LD_PRELOAD (and says so in the report).
"""

import argparse
import ctypes
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

from cpu_meter import CpuMeter, cpu_model  # bench/cpu_meter.py, next to this script

REEXEC_MARK = "RNNSERVE_BENCH_REEXEC"          # set when we re-executed ourselves
ORIG_PRELOAD = "RNNSERVE_BENCH_ORIG_LD_PRELOAD"  # LD_PRELOAD before the re-exec
ORIG_BLAS = "RNNSERVE_BENCH_ORIG_BLAS"          # the BLAS torch loaded before it

# Correctness bounds (on the hidden-state outputs y[N,T,H], vs PyTorch f32).
F32_MAX_ABS = 1e-4
INT8_MEAN_ABS = 0.01
INT8_MAX_ABS = 0.1

# Targets (issue 3 section 1).
TARGET_INT8_VS_QD_THROUGHPUT = 2.0   # at the largest batch (N=64)
TARGET_INT8_VS_QD_LATENCY = 5.0      # at N=1: qd p50 / int8 p50
TARGET_WORKERS = 1.7                 # 2 workers vs 1, throughput

FULL_MODELS = [
    # id, cell, input, hidden, layers, seq, batches
    ("lstm_i128_h256", "LSTM", 128, 256, 1, 50, [1, 16, 64]),
    ("lstm_i256_h512_l2", "LSTM", 256, 512, 2, 100, [64]),
    ("gru_i128_h256", "GRU", 128, 256, 1, 50, [16, 64]),
]
FULL_WORKERS = ("lstm_i128_h256", 64)
QUICK_MODELS = [
    ("lstm_i16_h32", "LSTM", 16, 32, 1, 10, [1, 8]),
    ("lstm_i16_h32_l2", "LSTM", 16, 32, 2, 10, [8]),
    ("gru_i16_h32", "GRU", 16, 32, 1, 10, [8]),
]
QUICK_WORKERS = ("lstm_i16_h32", 8)

RNNSERVE_VARIANTS = ["rnnserve_int8", "rnnserve_f32", "rnnserve_bf16"]
TORCH_VARIANTS = ["pytorch_f32", "qd_onednn", "qd_qnnpack"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# BLAS: which library serves torch's sgemm_, and re-exec with OpenBLAS if needed.

def mapped_libs(pattern=r"(blas|lapack|mkl|blis|atlas)"):
    libs = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[-1].startswith("/"):
                path = parts[-1]
                if re.search(pattern, os.path.basename(path)) and path not in libs:
                    libs.append(path)
    return libs


def classify_blas(path):
    real = os.path.realpath(path).lower()
    if "openblas" in real:
        return "OpenBLAS"
    if "blis" in real:
        return "BLIS"
    if "atlas" in real:
        return "ATLAS"
    if "mkl" in real:
        return "MKL"
    return "reference (netlib)"


def openblas_candidates():
    order = ["openblas-openmp", "openblas-pthread", "openblas-serial"]
    found = []
    for d in order:
        found += glob.glob("/usr/lib/*-linux-gnu/%s/libblas.so.3" % d)
    return found


def blas_info(torch):
    """Which BLAS torch's sgemm_ comes from (after a matmul has run)."""
    a = torch.randn(64, 64)
    (a @ a).sum().item()
    libs = mapped_libs()
    preload = [p for p in os.environ.get("LD_PRELOAD", "").replace(":", " ").split() if p]
    provider = None
    why = ""
    for p in preload:  # LD_PRELOAD'ed libraries are searched first
        if re.search(r"blas", os.path.basename(p)):
            provider, why = p, "LD_PRELOAD (searched before torch's own dependencies)"
            break
    if provider is None:
        blas3 = [p for p in libs if os.path.basename(p).startswith("libblas.so")]
        if blas3:
            provider, why = blas3[0], "libblas.so.3 that libtorch_cpu links (via Debian alternatives)"
        else:
            other = [p for p in libs if "blas" in os.path.basename(p)]
            provider = other[0] if other else None
            why = "only BLAS mapped"
    kind = classify_blas(provider) if provider else "unknown"
    config = None
    if kind == "OpenBLAS":
        for cand in [provider] + [p for p in libs if "openblas" in p]:
            try:
                lib = ctypes.CDLL(cand)
                lib.openblas_get_config.restype = ctypes.c_char_p
                config = lib.openblas_get_config().decode()
                break
            except (OSError, AttributeError):
                continue
    return {
        "provider": provider,
        "provider_realpath": os.path.realpath(provider) if provider else None,
        "kind": kind,
        "why": why,
        "openblas_config": config,
        "mapped": libs,
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
        "reexecuted_with_openblas": bool(os.environ.get(REEXEC_MARK)),
        "blas_before_reexec": os.environ.get(ORIG_BLAS),
    }


def ensure_openblas(torch):
    info = blas_info(torch)
    if info["kind"] == "reference (netlib)" and not os.environ.get(REEXEC_MARK):
        cands = openblas_candidates()
        if cands:
            env = dict(os.environ)
            old = env.get("LD_PRELOAD", "")
            env[ORIG_PRELOAD] = old
            env[REEXEC_MARK] = "1"
            env[ORIG_BLAS] = info["provider_realpath"] or ""
            env["LD_PRELOAD"] = (cands[0] + (" " + old if old else ""))
            log("torch loads the reference BLAS (%s); re-executing with LD_PRELOAD=%s"
                % (info["provider"], cands[0]))
            sys.stdout.flush()
            os.execve(sys.executable, [sys.executable] + sys.argv, env)
        log("WARNING: torch uses the reference BLAS and no OpenBLAS libblas.so.3 was "
            "found: PyTorch f32 numbers are a straw man")
    return info


def quiet_glog():
    """qnnpack's dynamic linear logs "ignores reduce_range" through glog on every
    call (torch's quantized LSTM hard-codes reduce_range=true): raise glog's
    minloglevel to ERROR in this process (GLOG_minloglevel in the environment
    does not take effect with Debian's torch)."""
    try:
        lib = ctypes.CDLL("libglog.so.1")
        ctypes.c_int.in_dll(lib, "_ZN3fLI17FLAGS_minloglevelE").value = 2
    except (OSError, ValueError):
        pass


def child_env():
    """Environment for rnnserve: without the LD_PRELOAD we may have added."""
    env = dict(os.environ)
    if env.get(REEXEC_MARK):
        old = env.get(ORIG_PRELOAD, "")
        if old:
            env["LD_PRELOAD"] = old
        else:
            env.pop("LD_PRELOAD", None)
        env.pop(REEXEC_MARK, None)
        env.pop(ORIG_PRELOAD, None)
        env.pop(ORIG_BLAS, None)
    return env


# ---------------------------------------------------------------------------
# rnnserve-model

class Rnnserve:
    def __init__(self, bin_dir, threads):
        self.exe = os.path.join(bin_dir, "rnnserve-model")
        self.threads = threads
        self.env = child_env()

    def _run(self, args, timeout):
        # A concurrent rebuild can make the binary briefly missing or not
        # executable: retry for up to ~60 s before giving up.
        for attempt in range(13):
            try:
                return subprocess.run([self.exe] + args, capture_output=True, text=True,
                                      timeout=timeout, env=self.env)
            except (PermissionError, FileNotFoundError, OSError) as e:
                if attempt == 12:
                    return subprocess.CompletedProcess([self.exe] + args, 127, "", str(e))
                time.sleep(5)
            except subprocess.TimeoutExpired:
                return subprocess.CompletedProcess([self.exe] + args, 124, "",
                                                   "timed out after %d s" % timeout)

    def bench(self, model, batch, seq, precision, duration, min_iter, workers=1):
        args = ["bench", model, "--batch", str(batch), "--seq", str(seq),
                "--precision", precision, "--threads", str(self.threads),
                "--workers", str(workers), "--duration", str(duration),
                "--min-iterations", str(min_iter), "--json"]
        r = self._run(args, timeout=max(120, 40 * duration))
        if r.returncode != 0:
            err = (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
            return {"error": err, "returncode": r.returncode}
        for line in reversed(r.stdout.strip().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        return {"error": "no JSON line in output: %r" % r.stdout[-200:], "returncode": 0}

    def run(self, model, x_path, y_path, precision, cal_path=None):
        args = ["run", model, "--input", x_path, "--output", y_path,
                "--precision", precision, "--threads", str(self.threads)]
        if cal_path:
            args += ["--calibration", cal_path]
        r = self._run(args, timeout=300)
        if r.returncode != 0:
            return (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1]
        return None


# ---------------------------------------------------------------------------
# PyTorch side

def make_model(torch, cell, inp, hidden, layers, seed):
    nn = torch.nn

    class Net(nn.Module):
        # A wrapper module: quantize_dynamic swaps *children*, so a bare
        # nn.LSTM passed to it would silently stay f32.
        def __init__(self):
            super().__init__()
            cls = nn.LSTM if cell == "LSTM" else nn.GRU
            self.rnn = cls(inp, hidden, num_layers=layers, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0]

    torch.manual_seed(seed)
    return Net().eval()


def export_onnx(torch, model, inp, seq, path):
    x = torch.randn(2, seq, inp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch", 1: "time"},
                                        "y": {0: "batch", 1: "time"}},
                          opset_version=14)


def quantize_dynamic(torch, model, engine):
    torch.backends.quantized.engine = engine
    q = torch.ao.quantization.quantize_dynamic(
        model, {torch.nn.LSTM, torch.nn.GRU}, dtype=torch.qint8)
    kind = type(q.rnn).__module__ + "." + type(q.rnn).__name__
    if "quantized" not in kind:
        raise RuntimeError("quantize_dynamic left the RNN f32 (%s)" % kind)
    return q


def time_torch(torch, model, x, duration, min_iter, engine=None):
    if engine:
        torch.backends.quantized.engine = engine
    lat = []
    with torch.no_grad():
        model(x)  # warm-up
        t0 = time.perf_counter()
        deadline = t0 + duration
        while len(lat) < min_iter or time.perf_counter() < deadline:
            t = time.perf_counter()
            model(x)
            lat.append((time.perf_counter() - t) * 1e3)
        wall = time.perf_counter() - t0
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, int(round(p / 100.0 * (len(lat) - 1))))]
    return {"iterations": len(lat), "seconds": wall,
            "sequences_per_s": len(lat) * x.shape[0] / wall,
            "p50_ms": statistics.median(lat), "p90_ms": pct(90), "p99_ms": pct(99)}


# ---------------------------------------------------------------------------
# Report helpers

def fmt_ms(v):
    return ("%.3g" % v) if v < 10 else ("%.0f" % v if v >= 100 else "%.1f" % v)


def fmt_cell(m):
    if m is None:
        return "—"
    return "%s ms · %s seq/s" % (fmt_ms(m["p50_ms"]), fmt_sps(m["sequences_per_s"]))


def fmt_sps(v):
    return "%.0f" % v if v >= 100 else "%.3g" % v


def fmt_ratio(r):
    return "—" if r is None else "%.2f×" % r


def verdict(r, target):
    if r is None:
        return "n/a"
    return "met" if r >= target else "not met"


def median_of(runs, key):
    vals = [r[key] for r in runs if r and "error" not in r]
    return statistics.median(vals) if vals else None


def summarize(runs):
    ok = [r for r in runs if r and "error" not in r]
    if not ok:
        return None
    s = {"p50_ms": median_of(ok, "p50_ms"), "p90_ms": median_of(ok, "p90_ms"),
         "sequences_per_s": median_of(ok, "sequences_per_s"), "rounds": len(ok)}
    if "layer_precisions" in ok[0]:
        s["layer_precisions"] = ok[0]["layer_precisions"]
        s["isa"] = ok[0].get("isa")
    return s


def diff_stats(np, a, b):
    if a.shape != b.shape:
        return {"shape_mismatch": [list(a.shape), list(b.shape)]}
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"mean_abs": float(d.mean()), "max_abs": float(d.max())}


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny shapes, 2 rounds, short durations (test suite; < 60 s)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="A/B rounds per variant (default 5; --quick: 2)")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds per measurement (default 1.0; --quick: 0.15)")
    ap.add_argument("--bin", default=None,
                    help="directory holding rnnserve-model (default <repo>/build/bin)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for rnnserve (--threads) and torch.set_num_threads")
    ap.add_argument("--json", metavar="FILE", help="write all numbers to FILE")
    args = ap.parse_args()
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 5)
    duration = args.duration if args.duration is not None else (0.15 if args.quick else 1.0)
    min_iter = 2 if args.quick else 3
    if rounds < 1 or duration <= 0 or args.threads < 1:
        ap.error("--rounds, --duration and --threads must be positive")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bin_dir = args.bin or os.path.join(repo, "build", "bin")

    t_start = time.time()
    try:
        import numpy as np
        import torch
    except ImportError as e:
        log("error: %s (run with Debian's /usr/bin/python3 and python3-torch)" % e)
        return 2
    blas = ensure_openblas(torch)  # may re-exec this script
    quiet_glog()
    torch.set_num_threads(args.threads)
    if blas["kind"] == "OpenBLAS":
        try:
            lib = ctypes.CDLL(blas["provider_realpath"])
            lib.openblas_set_num_threads(args.threads)
        except (OSError, AttributeError):
            pass
    engines = [e for e in ("onednn", "qnnpack")
               if e in torch.backends.quantized.supported_engines]
    if not engines:
        engines = [torch.backends.quantized.engine]
    log("PyTorch %s, BLAS: %s (%s), quantized engines: %s"
        % (torch.__version__, blas["kind"], blas["provider_realpath"], ", ".join(engines)))

    rs = Rnnserve(bin_dir, args.threads)
    if not os.path.exists(rs.exe):
        log("error: %s not found (build: ninja -C build rnnserve-model, or pass --bin)" % rs.exe)
        return 2

    models = QUICK_MODELS if args.quick else FULL_MODELS
    workers_shape = QUICK_WORKERS if args.quick else FULL_WORKERS
    load_before = os.getloadavg()
    meter_all = CpuMeter()
    result = {
        "mode": "quick" if args.quick else "full",
        "machine": {"cpu": cpu_model(), "nproc": os.cpu_count(),
                    "platform": platform.platform(), "loadavg_start": load_before},
        "pytorch": {"version": torch.__version__, "blas": blas,
                    "quantized_engines": engines, "threads": torch.get_num_threads()},
        "settings": {"rounds": rounds, "duration_s": duration, "min_iterations": min_iter,
                     "threads": args.threads, "bin": rs.exe},
        "bounds": {"f32_max_abs": F32_MAX_ABS, "int8_mean_abs": INT8_MEAN_ABS,
                   "int8_max_abs": INT8_MAX_ABS},
        "checks": [], "shapes": [], "workers": None, "targets": [], "errors": [],
    }
    check_failed = False
    hard_error = False
    isa = None

    with tempfile.TemporaryDirectory(prefix="rnnserve-bench-") as tmp:
        for (mid, cell, inp, hidden, layers, seq, batches) in models:
            log("== %s: %s I%d H%d L%d T%d" % (mid, cell, inp, hidden, layers, seq))
            model = make_model(torch, cell, inp, hidden, layers, seed=1234)
            onnx_path = os.path.join(tmp, mid + ".onnx")
            export_onnx(torch, model, inp, seq, onnx_path)
            qmodels = {}
            for e in engines:
                qmodels[e] = quantize_dynamic(torch, model, e)

            # ---- correctness on this model (same weights as the timings) ----
            gen = torch.Generator().manual_seed(99)
            xc = torch.randn(4, seq, inp, generator=gen)
            cal = torch.randn(32 if not args.quick else 8, seq, inp, generator=gen)
            x_path = os.path.join(tmp, mid + "_x.npy")
            cal_path = os.path.join(tmp, mid + "_cal.npy")
            np.save(x_path, xc.numpy())
            np.save(cal_path, cal.numpy())
            with torch.no_grad():
                ref = model(xc).numpy()
            checks = []
            for prec in ("f32", "int8"):
                y_path = os.path.join(tmp, "%s_y_%s.npy" % (mid, prec))
                err = rs.run(onnx_path, x_path, y_path, prec,
                             cal_path if prec == "int8" else None)
                c = {"model": mid, "what": "rnnserve %s vs PyTorch f32" % prec}
                if err:
                    c.update(error=err, passed=False)
                    hard_error = True
                else:
                    c.update(diff_stats(np, np.load(y_path), ref))
                checks.append(c)
            for e in engines:
                torch.backends.quantized.engine = e
                with torch.no_grad():
                    yq = qmodels[e](xc).numpy()
                c = {"model": mid, "what": "quantize_dynamic (%s) vs PyTorch f32" % e}
                c.update(diff_stats(np, yq, ref))
                checks.append(c)
            for c in checks:
                if "passed" in c:
                    continue
                if "shape_mismatch" in c:
                    c["passed"] = False
                elif c["what"].startswith("rnnserve f32"):
                    c["bound"] = "max <= %g" % F32_MAX_ABS
                    c["passed"] = c["max_abs"] <= F32_MAX_ABS
                else:
                    c["bound"] = "mean <= %g, max <= %g" % (INT8_MEAN_ABS, INT8_MAX_ABS)
                    c["passed"] = (c["mean_abs"] <= INT8_MEAN_ABS
                                   and c["max_abs"] <= INT8_MAX_ABS)
                if not c["passed"]:
                    check_failed = True
                log("  check %-40s %s" % (c["what"], "ok" if c["passed"] else "FAILED %s" % c))
            result["checks"] += checks

            # ---- timings ----
            for N in batches:
                x = torch.randn(N, seq, inp, generator=torch.Generator().manual_seed(7))
                variants = ["rnnserve_int8", "rnnserve_f32"]
                probe = rs.bench(onnx_path, N, seq, "bf16", duration, min_iter)
                bf16_error = probe.get("error")
                if not bf16_error:
                    variants.append("rnnserve_bf16")
                variants += ["pytorch_f32"] + ["qd_" + e for e in engines]
                runs = {v: [] for v in variants}
                if not bf16_error:
                    runs["rnnserve_bf16"].append(probe)
                t_shape = time.time()
                for r in range(rounds):
                    order = variants[r % len(variants):] + variants[:r % len(variants)]
                    for v in order:
                        if v.startswith("rnnserve_"):
                            m = rs.bench(onnx_path, N, seq, v.split("_")[1], duration, min_iter)
                            if "error" in m:
                                result["errors"].append("%s N=%d %s: %s" % (mid, N, v, m["error"]))
                                log("  ERROR %s: %s" % (v, m["error"]))
                                hard_error = True
                            elif isa is None:
                                isa = m.get("isa")
                        elif v == "pytorch_f32":
                            m = time_torch(torch, model, x, duration, min_iter)
                        else:
                            e = v[3:]
                            m = time_torch(torch, qmodels[e], x, duration, min_iter, engine=e)
                        runs[v].append(m)
                summary = {v: summarize(runs[v]) for v in variants}
                qd = [(e, summary["qd_" + e]) for e in engines if summary.get("qd_" + e)]
                best_engine, best_qd = (min(qd, key=lambda t: t[1]["p50_ms"]) if qd
                                        else (None, None))
                i8, f32 = summary.get("rnnserve_int8"), summary.get("rnnserve_f32")
                ptf = summary.get("pytorch_f32")

                def thr(a, b):
                    if a and b:
                        return a["sequences_per_s"] / b["sequences_per_s"]
                    return None
                shape = {
                    "model": mid, "cell": cell, "input": inp, "hidden": hidden,
                    "layers": layers, "seq": seq, "batch": N,
                    "median": summary, "runs": runs,
                    "bf16": None if not bf16_error else {"error": bf16_error},
                    "qd_best_engine": best_engine,
                    "ratios": {
                        "int8_vs_qd_throughput": thr(i8, best_qd),
                        "int8_vs_qd_latency": (best_qd["p50_ms"] / i8["p50_ms"]
                                               if i8 and best_qd else None),
                        "int8_vs_f32_throughput": thr(i8, f32),
                        "f32_vs_pytorch_f32_throughput": thr(f32, ptf),
                    },
                    "seconds": time.time() - t_shape,
                }
                result["shapes"].append(shape)
                log("  N=%d: int8 %s | f32 %s | PyTorch f32 %s | qd(%s) %s  [%.0f s]"
                    % (N, fmt_cell(i8), fmt_cell(f32), fmt_cell(ptf), best_engine,
                       fmt_cell(best_qd), shape["seconds"]))

        # ---- workers: 2 vs 1 ----
        wmid, wN = workers_shape
        wspec = [m for m in models if m[0] == wmid][0]
        wpath = os.path.join(tmp, wmid + ".onnx")
        log("== workers 2 vs 1: %s N=%d (int8, --threads %d)" % (wmid, wN, args.threads))
        wruns = {1: [], 2: []}
        meter_w = CpuMeter()
        for r in range(rounds):
            for w in ((1, 2) if r % 2 == 0 else (2, 1)):
                m = rs.bench(wpath, wN, wspec[5], "int8", duration, min_iter, workers=w)
                if "error" in m:
                    result["errors"].append("workers=%d: %s" % (w, m["error"]))
                    hard_error = True
                wruns[w].append(m)
        w1, w2 = summarize(wruns[1]), summarize(wruns[2])
        result["workers"] = {
            "model": wmid, "batch": wN, "seq": wspec[5], "precision": "int8",
            "threads_per_worker": args.threads, "median": {"1": w1, "2": w2},
            "runs": {"1": wruns[1], "2": wruns[2]},
            "ratio": (w2["sequences_per_s"] / w1["sequences_per_s"]) if w1 and w2 else None,
            "other_processes_cpus": meter_w.others(),
        }

    result["machine"]["loadavg_end"] = os.getloadavg()
    result["machine"]["other_processes_cpus"] = meter_all.others()
    result["machine"]["isa"] = isa
    result["seconds_total"] = time.time() - t_start
    targets = evaluate_targets(result)
    result["targets"] = targets
    result["checks_passed"] = not check_failed
    report = render(result)
    print(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    if check_failed:
        log("FAILED: a correctness check failed (see the checks table)")
        return 1
    if hard_error:
        log("FAILED: rnnserve could not run a required variant: %s" % result["errors"])
        return 2
    return 0


def evaluate_targets(result):
    shapes = result["shapes"]
    out = []
    max_n = {}
    for s in shapes:
        max_n[s["model"]] = max(max_n.get(s["model"], 0), s["batch"])
    for s in shapes:
        label = "%s N=%d" % (s["model"], s["batch"])
        if s["batch"] == 1:
            r = s["ratios"]["int8_vs_qd_latency"]
            out.append({"target": "int8 latency >= %g× lower than quantize_dynamic (N=1)"
                        % TARGET_INT8_VS_QD_LATENCY, "shape": label, "ratio": r,
                        "status": verdict(r, TARGET_INT8_VS_QD_LATENCY)})
        if s["batch"] == max_n[s["model"]] and s["batch"] > 1:
            r = s["ratios"]["int8_vs_qd_throughput"]
            out.append({"target": "int8 throughput >= %g× quantize_dynamic (largest N)"
                        % TARGET_INT8_VS_QD_THROUGHPUT, "shape": label, "ratio": r,
                        "status": verdict(r, TARGET_INT8_VS_QD_THROUGHPUT)})
    w = result["workers"]
    if w:
        r = w["ratio"]
        status = verdict(r, TARGET_WORKERS)
        if (result["machine"]["nproc"] or 1) < 2:
            status = "n/a (1 cpu)"
        elif (w.get("other_processes_cpus") or 0) > 0.5 and status == "not met":
            status = "not met (unreliable: other processes kept %.1f CPUs busy)" \
                % w["other_processes_cpus"]
        out.append({"target": "2 workers vs 1 throughput >= %g×" % TARGET_WORKERS,
                    "shape": "%s N=%d" % (w["model"], w["batch"]), "ratio": r,
                    "status": status})
    return out


def render(res):
    L = []
    m, pt = res["machine"], res["pytorch"]
    blas = pt["blas"]
    st = res["settings"]
    L.append("# rnnserve engine benchmark (%s)" % res["mode"])
    L.append("")
    L.append("- CPU: %s, %s logical CPUs, rnnserve ISA: %s; load average %.2f at start, "
             "%.2f at end" % (m["cpu"], m["nproc"], m["isa"], m["loadavg_start"][0],
                              m["loadavg_end"][0]))
    if m.get("other_processes_cpus") is not None:
        L.append("- other processes kept %.2f of %s CPUs busy on average during the run "
                 "(anything well above 0 makes the numbers noisy)"
                 % (m["other_processes_cpus"], m["nproc"]))
    L.append("- threads: %d everywhere (rnnserve --threads, torch.set_num_threads); "
             "%d rounds alternating the variants, medians; %.2g s per measurement "
             "(min %d iterations)" % (st["threads"], st["rounds"], st["duration_s"],
                                      st["min_iterations"]))
    blas_line = "- PyTorch %s f32 BLAS: **%s** (%s; %s)" % (
        pt["version"], blas["kind"], blas["provider_realpath"], blas["why"])
    if blas["openblas_config"]:
        blas_line += ", config: %s" % blas["openblas_config"]
    if blas["reexecuted_with_openblas"]:
        blas_line += "; torch first loaded the reference BLAS (%s), so this run " \
                     "re-executed itself with LD_PRELOAD=%s" % (blas["blas_before_reexec"],
                                                               blas["ld_preload"])
    L.append(blas_line)
    L.append("- quantize_dynamic engines measured: %s (the faster one per shape is used "
             "for the ratios and named in the table)" % ", ".join(pt["quantized_engines"]))
    L.append("- cells: p50 latency per batch · throughput (sequences/s), median over rounds")
    L.append("")
    L.append("## Measurements")
    L.append("")
    L.append("| model | N | T | rnnserve int8 | rnnserve f32 | rnnserve bf16 | PyTorch f32 "
             "| quantize_dynamic (faster engine) | quantize_dynamic (other engine) |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    notes = []
    for s in res["shapes"]:
        md = s["median"]
        i8 = md.get("rnnserve_int8")
        c_i8 = fmt_cell(i8)
        if i8 and any(p != "int8" for p in i8.get("layer_precisions", [])):
            c_i8 += " †"
            notes.append("† %s: int8 requested, layers ran %s (see `rnnserve-model "
                         "inspect`; oneDNN 2.6 has no int8 linear-before-reset GRU)"
                         % (s["model"], "/".join(i8["layer_precisions"])))
        if s["bf16"]:
            c_bf = "n/a (cpu: %s)" % (m["isa"] or "?")
        else:
            c_bf = fmt_cell(md.get("rnnserve_bf16"))
        best = s["qd_best_engine"]
        others = [e for e in pt["quantized_engines"] if e != best]
        c_qd = "%s (%s)" % (fmt_cell(md.get("qd_" + best)), best) if best else "—"
        c_other = "; ".join("%s (%s)" % (fmt_cell(md.get("qd_" + e)), e) for e in others) or "—"
        L.append("| %s | %d | %d | %s | %s | %s | %s | %s | %s |" % (
            "%s I%d H%d%s" % (s["cell"], s["input"], s["hidden"],
                              " ×%d layers" % s["layers"] if s["layers"] > 1 else ""),
            s["batch"], s["seq"], c_i8, fmt_cell(md.get("rnnserve_f32")), c_bf,
            fmt_cell(md.get("pytorch_f32")), c_qd, c_other))
    for n in sorted(set(notes)):
        L.append("")
        L.append(n)
    bf = [s["bf16"]["error"] for s in res["shapes"] if s["bf16"]]
    if bf:
        L.append("")
        L.append("bf16: rnnserve answered `%s`" % bf[0])
    L.append("")
    L.append("## Ratios (higher is better for rnnserve)")
    L.append("")
    L.append("| model | N | int8 vs quantize_dynamic, throughput | quantize_dynamic / int8, "
             "p50 latency | int8 vs rnnserve f32, throughput | rnnserve f32 vs PyTorch f32, "
             "throughput |")
    L.append("|---|---|---|---|---|---|")
    tmap = {}
    for t in res["targets"]:
        tmap[(t["shape"], t["target"].split(" ")[1])] = t
    for s in res["shapes"]:
        r = s["ratios"]
        label = "%s N=%d" % (s["model"], s["batch"])
        c_thr = fmt_ratio(r["int8_vs_qd_throughput"])
        t = tmap.get((label, "throughput"))
        if t:
            c_thr += " (%s, ≥ %g×)" % (t["status"], TARGET_INT8_VS_QD_THROUGHPUT)
        c_lat = fmt_ratio(r["int8_vs_qd_latency"])
        t = tmap.get((label, "latency"))
        if t:
            c_lat += " (%s, ≥ %g×)" % (t["status"], TARGET_INT8_VS_QD_LATENCY)
        L.append("| %s | %d | %s | %s | %s | %s |" % (
            s["model"], s["batch"], c_thr, c_lat, fmt_ratio(r["int8_vs_f32_throughput"]),
            fmt_ratio(r["f32_vs_pytorch_f32_throughput"])))
    L.append("")
    L.append("int8 vs rnnserve f32 and rnnserve f32 vs PyTorch f32 have no target "
             "(informational).")
    w = res["workers"]
    if w:
        L.append("")
        L.append("## Workers (%s N=%d T=%d, int8, --threads %d per worker)"
                 % (w["model"], w["batch"], w["seq"], w["threads_per_worker"]))
        L.append("")
        L.append("| workers | p50 ms | sequences/s |")
        L.append("|---|---|---|")
        for k in ("1", "2"):
            mm = w["median"][k]
            L.append("| %s | %s | %s |" % (k, fmt_ms(mm["p50_ms"]) if mm else "—",
                                          fmt_sps(mm["sequences_per_s"]) if mm else "—"))
        L.append("")
        L.append("2 vs 1 throughput: %s" % fmt_ratio(w["ratio"]))
        if w.get("other_processes_cpus") is not None:
            L.append("")
            L.append("Other processes kept %.2f of %s CPUs busy during this section: two "
                     "workers need two free cores." % (w["other_processes_cpus"], m["nproc"]))
    L.append("")
    L.append("## Targets")
    L.append("")
    L.append("| target | shape | ratio | status |")
    L.append("|---|---|---|---|")
    for t in res["targets"]:
        L.append("| %s | %s | %s | %s |" % (t["target"], t["shape"], fmt_ratio(t["ratio"]),
                                           t["status"]))
    if res["mode"] == "quick":
        L.append("")
        L.append("(--quick: tiny shapes; the targets are meant for the full run)")
    L.append("")
    L.append("## Correctness checks (hidden-state outputs y[N,T,H], 4 sequences)")
    L.append("")
    L.append("| model | check | mean abs diff | max abs diff | bound | result |")
    L.append("|---|---|---|---|---|---|")
    for c in res["checks"]:
        L.append("| %s | %s | %s | %s | %s | %s |" % (
            c["model"], c["what"],
            "%.2e" % c["mean_abs"] if "mean_abs" in c else "—",
            "%.2e" % c["max_abs"] if "max_abs" in c else "—",
            c.get("bound", c.get("error", "shape mismatch")),
            "pass" if c["passed"] else "FAIL"))
    if res["errors"]:
        L.append("")
        L.append("Errors: " + "; ".join(res["errors"]))
    L.append("")
    L.append("Total %.0f s." % res["seconds_total"])
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
