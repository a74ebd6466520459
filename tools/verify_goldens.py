#!/usr/bin/python3
"""Check the generated test data independently of PyTorch.

onnxruntime is not packaged in Debian 12 and onnx 1.12 has no onnx.reference, so this
script carries a small numpy evaluator of the ONNX ops that torch.onnx.export emits for
the supported patterns (LSTM/GRU per the ONNX operator spec, Gemm/MatMul heads,
Softmax/LogSoftmax and shape plumbing). It runs each golden model.onnx on the golden
inputs and compares with the PyTorch outputs stored next to it, and checks that every
file in bad_onnx/ is either unparseable or contains the op its README names.

  /usr/bin/python3 tools/verify_goldens.py [--testdata DIR] [--demo-model PATH]
"""

import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _lstm(node, ins, a):
    X, W, R = ins[0], ins[1], ins[2]
    B = ins[3] if len(ins) > 3 and ins[3] is not None else None
    if len(ins) > 4 and ins[4] is not None:
        raise NotImplementedError("sequence_lens")
    if len(ins) > 7 and ins[7] is not None:
        raise NotImplementedError("peepholes")
    for k in ("activations", "clip", "input_forget", "layout"):
        if k in a and a[k] not in (0,):
            raise NotImplementedError("LSTM attribute " + k)
    H = a["hidden_size"]
    D = W.shape[0]
    T, N, _ = X.shape
    h0 = ins[5] if len(ins) > 5 and ins[5] is not None else np.zeros((D, N, H), np.float32)
    c0 = ins[6] if len(ins) > 6 and ins[6] is not None else np.zeros((D, N, H), np.float32)
    Y = np.zeros((T, D, N, H), np.float64)
    Yh = np.zeros((D, N, H), np.float64)
    Yc = np.zeros((D, N, H), np.float64)
    for d in range(D):
        w, r = W[d].astype(np.float64), R[d].astype(np.float64)
        b = B[d].astype(np.float64) if B is not None else np.zeros(8 * H)
        bias = b[: 4 * H] + b[4 * H:]
        h, c = h0[d].astype(np.float64), c0[d].astype(np.float64)
        steps = range(T) if d == 0 else range(T - 1, -1, -1)
        for t in steps:
            g = X[t].astype(np.float64) @ w.T + h @ r.T + bias  # rows i, o, f, c
            i, o, f, cc = (g[:, k * H:(k + 1) * H] for k in range(4))
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(cc)
            h = sigmoid(o) * np.tanh(c)
            Y[t, d] = h
        Yh[d], Yc[d] = h, c
    return [Y.astype(np.float32), Yh.astype(np.float32), Yc.astype(np.float32)]


def _gru(node, ins, a):
    X, W, R = ins[0], ins[1], ins[2]
    B = ins[3] if len(ins) > 3 and ins[3] is not None else None
    if len(ins) > 4 and ins[4] is not None:
        raise NotImplementedError("sequence_lens")
    for k in ("activations", "clip", "layout"):
        if k in a and a[k] not in (0,):
            raise NotImplementedError("GRU attribute " + k)
    lbr = a.get("linear_before_reset", 0)
    H = a["hidden_size"]
    D = W.shape[0]
    T, N, _ = X.shape
    h0 = ins[5] if len(ins) > 5 and ins[5] is not None else np.zeros((D, N, H), np.float32)
    Y = np.zeros((T, D, N, H), np.float64)
    Yh = np.zeros((D, N, H), np.float64)
    for d in range(D):
        w, r = W[d].astype(np.float64), R[d].astype(np.float64)
        b = B[d].astype(np.float64) if B is not None else np.zeros(6 * H)
        wb, rb = b[: 3 * H], b[3 * H:]
        h = h0[d].astype(np.float64)
        steps = range(T) if d == 0 else range(T - 1, -1, -1)
        for t in steps:
            x = X[t].astype(np.float64)
            gx = x @ w.T + wb  # rows z, r, h
            z = sigmoid(gx[:, :H] + h @ r[:H].T + rb[:H])
            rr = sigmoid(gx[:, H:2 * H] + h @ r[H:2 * H].T + rb[H:2 * H])
            if lbr:
                n = np.tanh(gx[:, 2 * H:] + rr * (h @ r[2 * H:].T + rb[2 * H:]))
            else:
                n = np.tanh(gx[:, 2 * H:] + (rr * h) @ r[2 * H:].T + rb[2 * H:])
            h = (1 - z) * n + z * h
            Y[t, d] = h
        Yh[d] = h
    return [Y.astype(np.float32), Yh.astype(np.float32)]


def _slice(ins):
    data, starts, ends = ins[0], ins[1], ins[2]
    axes = ins[3] if len(ins) > 3 and ins[3] is not None else np.arange(len(starts))
    steps = ins[4] if len(ins) > 4 and ins[4] is not None else np.ones(len(starts), np.int64)
    sl = [slice(None)] * data.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        sl[int(ax)] = slice(int(s), int(e), int(st))
    return data[tuple(sl)]


def _reshape(data, shape):
    shape = [int(data.shape[i]) if s == 0 else int(s) for i, s in enumerate(shape)]
    return data.reshape(shape)


def _softmax(x, axis):
    m = x - x.max(axis=axis, keepdims=True)
    e = np.exp(m)
    return e / e.sum(axis=axis, keepdims=True)


def run_onnx(model, feeds):
    """Evaluate a (torch-exported) ONNX graph with numpy. Returns {output name: array}."""
    env = {}
    for init in model.graph.initializer:
        env[init.name] = numpy_helper.to_array(init)
    env.update(feeds)
    for node in model.graph.node:
        ins = [env[n] if n else None for n in node.input]
        a = _attrs(node)
        op = node.op_type
        if op == "Constant":
            out = [numpy_helper.to_array(a["value"])]
        elif op == "Shape":
            out = [np.array(ins[0].shape, np.int64)]
        elif op == "Gather":
            out = [np.take(ins[0], ins[1].astype(np.int64), axis=a.get("axis", 0))]
        elif op == "Unsqueeze":
            x = ins[0]
            axes = ins[1] if len(ins) > 1 else a["axes"]
            for ax in sorted(int(v) % (x.ndim + len(axes)) for v in np.atleast_1d(axes)):
                x = np.expand_dims(x, ax)
            out = [x]
        elif op == "Squeeze":
            axes = ins[1] if len(ins) > 1 else a.get("axes")
            out = [np.squeeze(ins[0], axis=tuple(int(v) for v in np.atleast_1d(axes)))
                   if axes is not None else np.squeeze(ins[0])]
        elif op == "Concat":
            out = [np.concatenate(ins, axis=a["axis"])]
        elif op == "ConstantOfShape":
            v = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
            out = [np.full(tuple(int(s) for s in ins[0]), v.reshape(-1)[0], dtype=v.dtype)]
        elif op == "Transpose":
            out = [np.transpose(ins[0], a.get("perm"))]
        elif op == "Slice":
            out = [_slice(ins)]
        elif op == "Reshape":
            out = [_reshape(ins[0], ins[1])]
        elif op == "MatMul":
            out = [np.matmul(ins[0], ins[1])]
        elif op == "Add":
            out = [ins[0] + ins[1]]
        elif op == "Gemm":
            A = ins[0].T if a.get("transA", 0) else ins[0]
            Bm = ins[1].T if a.get("transB", 0) else ins[1]
            y = a.get("alpha", 1.0) * (A @ Bm)
            if len(ins) > 2 and ins[2] is not None:
                y = y + a.get("beta", 1.0) * ins[2]
            out = [y.astype(np.float32)]
        elif op == "Softmax":
            out = [_softmax(ins[0], a.get("axis", -1))]
        elif op == "LogSoftmax":
            x = ins[0]
            ax = a.get("axis", -1)
            m = x.max(axis=ax, keepdims=True)
            out = [x - m - np.log(np.exp(x - m).sum(axis=ax, keepdims=True))]
        elif op == "Cast":
            out = [ins[0].astype(onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[a["to"]])]
        elif op == "Identity":
            out = [ins[0]]
        elif op == "LSTM":
            out = _lstm(node, ins, a)
        elif op == "GRU":
            out = _gru(node, ins, a)
        else:
            raise NotImplementedError("op %s (node %s)" % (op, node.name))
        for name, val in zip(node.output, out):
            if name:
                env[name] = val
    return {o.name: env[o.name] for o in model.graph.output}


def check_dynamic_io(model, case):
    """Graph inputs/outputs must carry symbolic (not fixed) batch/time dims."""
    problems = []
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.name in ("input", "tokens"):
            want = (0, 1)
        elif vi.name in ("h0", "c0", "hn", "cn"):
            want = (1,)
        elif vi.name == "output":
            want = (0,) if case["head"] == "last_step" else (0, 1)
        else:
            continue
        for i in want:
            if dims[i].HasField("dim_value"):
                problems.append("%s dim %d fixed to %d" % (vi.name, i, dims[i].dim_value))
    return problems


def verify_goldens(gold_dir):
    manifest = json.load(open(os.path.join(gold_dir, "manifest.json")))
    worst = 0.0
    bad = 0
    for e in manifest:
        d = os.path.join(gold_dir, e["dir"])
        model = onnx.load(os.path.join(d, "model.onnx"))
        onnx.checker.check_model(model)
        assert model.opset_import[0].version == e["opset"], e["name"]
        assert [i.name for i in model.graph.input] == e["input_names"], e["name"]
        assert [o.name for o in model.graph.output] == e["output_names"], e["name"]
        f = e["files"]
        x = np.load(os.path.join(d, f["input"]))
        assert x.dtype == (np.int64 if e["input_kind"] == "tokens" else np.float32)
        feeds = {e["input_names"][0]: x}
        if e["initial_state_inputs"]:
            feeds["h0"] = np.load(os.path.join(d, f["h0"]))
            if e["cell"] == "lstm":
                feeds["c0"] = np.load(os.path.join(d, f["c0"]))
        res = run_onnx(model, feeds)
        exp = np.load(os.path.join(d, f["expected"]))
        hn = np.load(os.path.join(d, f["expected_hn"]))
        L = e["num_layers"] * (2 if e["bidirectional"] else 1)
        N = x.shape[0] if e["batch_first"] else x.shape[1]
        assert hn.shape == (L, N, e["hidden_size"]), (e["name"], hn.shape)
        errs = {"output": float(np.abs(res["output"] - exp).max())}
        assert res["output"].shape == exp.shape, (e["name"], res["output"].shape, exp.shape)
        if e["state_outputs"]:
            errs["hn"] = float(np.abs(res["hn"] - hn).max())
            if e["cell"] == "lstm":
                errs["cn"] = float(np.abs(res["cn"] - np.load(os.path.join(d, f["expected_cn"]))).max())
        probs = check_dynamic_io(model, e)
        spread = float(np.abs(exp).max())
        m = max(errs.values())
        worst = max(worst, m)
        ok = m < 1e-5 and not probs and spread > 0.05
        bad += not ok
        print("%-4s %-46s max|onnx-torch| %s  max|out| %.3f %s" % (
            "ok" if ok else "FAIL", e["name"],
            " ".join("%s=%.1e" % kv for kv in errs.items()), spread, "; ".join(probs)))
        check_final_states(model, feeds, e, d)
    print("%d cases, worst abs diff %.2e, %d failures" % (len(manifest), worst, bad))
    return bad


def check_final_states(model, feeds, e, d):
    """Expose every RNN node's Y_h/Y_c as extra outputs and compare, stacked, with the
    expected_hn/cn files (which exist for every case)."""
    rnn = [n for n in model.graph.node if n.op_type in ("LSTM", "GRU")]
    m2 = onnx.ModelProto()
    m2.CopyFrom(model)
    for n in rnn:
        for k in range(1, len(n.output)):
            m2.graph.output.append(onnx.helper.make_empty_tensor_value_info(n.output[k]))
    res = run_onnx(m2, feeds)
    hn = np.concatenate([res[n.output[1]] for n in rnn], axis=0)
    err = np.abs(hn - np.load(os.path.join(d, e["files"]["expected_hn"]))).max()
    if e["cell"] == "lstm":
        cn = np.concatenate([res[n.output[2]] for n in rnn], axis=0)
        err = max(err, np.abs(cn - np.load(os.path.join(d, e["files"]["expected_cn"]))).max())
    if err > 1e-5:
        raise SystemExit("FAIL final states %s: %.2e" % (e["name"], err))


def verify_bad(bad_dir):
    fails = 0
    readme = open(os.path.join(bad_dir, "README.md")).read()
    for fn in sorted(os.listdir(bad_dir)):
        if not fn.endswith(".onnx"):
            continue
        assert "`%s`" % fn in readme, fn
        try:
            m = onnx.load(os.path.join(bad_dir, fn))
        except Exception as ex:  # noqa: BLE001
            print("ok   bad_onnx/%-24s unparseable (%s)" % (fn, type(ex).__name__))
            continue
        onnx.checker.check_model(m)
        try:
            x = np.zeros((2, 5, 6), np.float32)
            feeds = {"input": x}
            if any(i.name == "seq_lens" for i in m.graph.input):
                feeds["seq_lens"] = np.full(2, 5, np.int32)
            run_onnx(m, feeds)
            print("FAIL bad_onnx/%-24s numpy evaluator ran it" % fn)
            fails += 1
        except NotImplementedError as ex:
            print("ok   bad_onnx/%-24s valid ONNX, unsupported: %s" % (fn, ex))
    return fails


def verify_demo(model_path, demo_dir):
    model = onnx.load(model_path)
    onnx.checker.check_model(model)
    toks = np.load(os.path.join(demo_dir, "heldout_tokens.npy"))
    exp = np.load(os.path.join(demo_dir, "expected_logits.npy"))
    n = exp.shape[0]
    res = run_onnx(model, {"tokens": toks[:n]})["logits"]
    err = float(np.abs(res - exp).max())
    print("%-4s demo charlm: max|onnx-torch| logits on %d held-out sequences = %.2e" % (
        "ok" if err < 1e-4 else "FAIL", n, err))
    # a second shape, to prove the graph is not tied to N=8, T=64
    res2 = run_onnx(model, {"tokens": toks[:3, :17]})["logits"]
    err2 = float(np.abs(res2 - exp[:3, :17]).max())
    print("%-4s demo charlm: N=3,T=17 prefix agrees to %.2e" % ("ok" if err2 < 1e-4 else "FAIL",
                                                               err2))
    return int(err >= 1e-4) + int(err2 >= 1e-4)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--testdata", default=os.path.join(REPO, "tests", "testdata"))
    ap.add_argument("--demo-model", default=os.path.join(
        REPO, "deploy", "model-repository", "charlm", "1", "model.onnx"))
    args = ap.parse_args()
    fails = 0
    if os.path.exists(os.path.join(args.testdata, "goldens", "manifest.json")):
        fails += verify_goldens(os.path.join(args.testdata, "goldens"))
        fails += verify_bad(os.path.join(args.testdata, "bad_onnx"))
    else:
        print("goldens not found; skipped")
    demo_dir = os.path.join(args.testdata, "demo")
    if os.path.exists(args.demo_model) and os.path.isdir(demo_dir):
        fails += verify_demo(args.demo_model, demo_dir)
    else:
        print("demo model not found; skipped")
    print("ALL OK" if fails == 0 else "%d FAILURES" % fails)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
