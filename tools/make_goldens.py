#!/usr/bin/python3
"""Generate PyTorch golden data for rnnserve's ONNX importer and engine tests.

For every case this script builds a small nn.LSTM / nn.GRU model with fixed seeds,
exports it with torch.onnx.export (dynamic batch and time axes) and stores PyTorch's
own float32 outputs next to the model:

  tests/testdata/goldens/<case>/model.onnx
  tests/testdata/goldens/<case>/input.npy          float32 [N,T,F] / [T,N,F] or int64 [N,T] / [T,N]
  tests/testdata/goldens/<case>/h0.npy, c0.npy     only when the graph takes initial states
  tests/testdata/goldens/<case>/expected.npy       main output (PyTorch f32)
  tests/testdata/goldens/<case>/expected_hn.npy    final h_n [layers*dirs, N, H] (always)
  tests/testdata/goldens/<case>/expected_cn.npy    final c_n (LSTM only, always)
  tests/testdata/goldens/manifest.json
  tests/testdata/goldens/README.md

and ONNX files the importer must reject in tests/testdata/bad_onnx/ (with a README.md
naming the node and op each error must mention).

The model is exported with a dummy input of a DIFFERENT batch/time size (N=2, T=5) than
the golden input, so a graph that baked N or T into a constant would fail the goldens.

Deterministic: fixed seeds, single-threaded torch; re-running reproduces the same bytes.
Run from anywhere with Debian's interpreter:

  /usr/bin/python3 tools/make_goldens.py            # writes into the repo's tests/testdata
  /usr/bin/python3 tools/make_goldens.py --out DIR  # writes DIR/goldens and DIR/bad_onnx
"""

import argparse
import io
import json
import os
import shutil
import sys
import warnings

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper, TensorProto

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPORT_N, EXPORT_T = 2, 5  # dummy shape used only for tracing the export


# ----------------------------------------------------------------------------------------
# Case table
# ----------------------------------------------------------------------------------------
def case(name, cell, layers=1, bidir=False, bf=True, kind="features", F=8, H=16, V=None,
         head="none", head_out=None, act="none", state_in=False, state_out=False,
         opset=14, N=3, T=7, seed=None):
    assert cell in ("lstm", "gru") and kind in ("features", "tokens")
    assert head in ("none", "every_step", "last_step")
    assert act in ("none", "softmax", "logsoftmax")
    assert act == "none" or head != "none"
    assert (head == "none") == (head_out is None)
    assert (kind == "tokens") == (V is not None)
    assert not state_out or state_in, "state outputs only together with state inputs"
    return dict(name=name, cell=cell, layers=layers, bidir=bidir, bf=bf, kind=kind, F=F, H=H,
                V=V, head=head, head_out=head_out, act=act, state_in=state_in,
                state_out=state_out, opset=opset, N=N, T=T, seed=seed)


CASES = [
    # plain recurrent layers, output = the RNN's output sequence
    case("lstm_1l", "lstm", F=8, H=16, opset=14),
    case("gru_1l", "gru", F=8, H=16, opset=14),
    case("lstm_1l_seqmajor", "lstm", bf=False, F=6, H=12, opset=13),
    case("gru_1l_seqmajor", "gru", bf=False, F=6, H=12, opset=13),
    case("lstm_2l", "lstm", layers=2, F=10, H=20, opset=15),
    case("gru_2l_seqmajor", "gru", layers=2, bf=False, F=10, H=20, opset=15),
    case("lstm_3l_seqmajor", "lstm", layers=3, bf=False, F=5, H=8, opset=16),
    case("gru_3l", "gru", layers=3, F=5, H=8, opset=16),
    case("lstm_bidir", "lstm", bidir=True, F=8, H=16, opset=17),
    case("gru_bidir_seqmajor", "gru", bidir=True, bf=False, F=8, H=16, opset=17),
    case("lstm_bidir_2l", "lstm", layers=2, bidir=True, F=7, H=12, opset=14),
    case("gru_bidir_2l_seqmajor", "gru", layers=2, bidir=True, bf=False, F=7, H=12, opset=15),
    # initial states as graph inputs (and final states as graph outputs)
    case("lstm_2l_h0c0", "lstm", layers=2, F=6, H=10, state_in=True, opset=13),
    case("gru_1l_h0_seqmajor", "gru", bf=False, F=6, H=10, state_in=True, opset=16),
    case("lstm_state_io", "lstm", F=4, H=8, state_in=True, state_out=True, opset=14),
    case("gru_2l_state_io", "gru", layers=2, F=4, H=8, state_in=True, state_out=True, opset=17),
    case("lstm_bidir_state_io_seqmajor", "lstm", bidir=True, bf=False, F=6, H=10,
         state_in=True, state_out=True, opset=16),
    # Linear heads and activations
    case("lstm_head_every", "lstm", F=8, H=16, head="every_step", head_out=5, opset=13),
    case("lstm_2l_head_last_softmax", "lstm", layers=2, F=8, H=16, head="last_step",
         head_out=4, act="softmax", opset=15),
    case("gru_head_last_logsoftmax_seqmajor", "gru", bf=False, F=9, H=14, head="last_step",
         head_out=6, act="logsoftmax", opset=16),
    case("gru_head_every_softmax", "gru", F=4, H=24, head="every_step", head_out=3,
         act="softmax", opset=17),
    case("lstm_bidir_2l_head_last_seqmajor", "lstm", layers=2, bidir=True, bf=False, F=6, H=12,
         head="last_step", head_out=5, opset=14),
    # token ids through nn.Embedding
    case("lstm_tokens_head_every", "lstm", kind="tokens", V=30, F=8, H=16, head="every_step",
         head_out=9, opset=14),
    case("gru_tokens_2l_head_last_logsoftmax_seqmajor", "gru", layers=2, bf=False, kind="tokens",
         V=30, F=10, H=12, head="last_step", head_out=4, act="logsoftmax", opset=13),
    case("lstm_tokens_bidir_head_every_softmax", "lstm", bidir=True, kind="tokens", V=30, F=6,
         H=12, head="every_step", head_out=7, act="softmax", opset=17),
    case("gru_tokens_state_io", "gru", kind="tokens", V=30, F=12, H=16, state_in=True,
         state_out=True, opset=15),
    # unusual shapes
    case("lstm_n1_t1_head_every", "lstm", F=8, H=16, head="every_step", head_out=3, N=1, T=1,
         opset=17),
    case("gru_bidir_2l_n1_t1", "gru", layers=2, bidir=True, F=5, H=8, N=1, T=1, opset=13),
    case("lstm_2l_n5_t20_head_every", "lstm", layers=2, F=10, H=24, head="every_step",
         head_out=8, N=5, T=20, opset=15),
    case("gru_bidir_n5_t20_seqmajor", "gru", bidir=True, bf=False, F=7, H=16, N=5, T=20,
         opset=14),
    case("lstm_long_t100", "lstm", F=8, H=16, N=3, T=100, opset=16),
]


# ----------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------
class Net(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = torch.nn.Embedding(c["V"], c["F"]) if c["kind"] == "tokens" else None
        rnn_cls = torch.nn.LSTM if c["cell"] == "lstm" else torch.nn.GRU
        self.rnn = rnn_cls(c["F"], c["H"], num_layers=c["layers"], batch_first=c["bf"],
                           bidirectional=c["bidir"])
        dirs = 2 if c["bidir"] else 1
        self.head = (torch.nn.Linear(c["H"] * dirs, c["head_out"])
                     if c["head"] != "none" else None)

    def forward(self, x, *states):
        c = self.c
        if self.embed is not None:
            x = self.embed(x)
        if c["state_in"]:
            init = states if c["cell"] == "lstm" else states[0]
            out, st = self.rnn(x, init)
        else:
            out, st = self.rnn(x)
        if c["head"] == "last_step":
            out = out[:, -1, :] if c["bf"] else out[-1]
        if self.head is not None:
            out = self.head(out)
        if c["act"] == "softmax":
            out = torch.softmax(out, dim=-1)
        elif c["act"] == "logsoftmax":
            out = torch.log_softmax(out, dim=-1)
        st = st if isinstance(st, tuple) else (st,)
        return (out,) + st  # always return final states; the export wrapper drops them


class ExportWrapper(torch.nn.Module):
    """Exposes only the outputs the ONNX graph should have."""

    def __init__(self, net, n_out):
        super().__init__()
        self.net = net
        self.n_out = n_out

    def forward(self, *args):
        res = self.net(*args)
        return res[0] if self.n_out == 1 else res[: self.n_out]


def perturb_biases(module, gen):
    """PyTorch default init plus a visible per-element bias offset, so that errors in bias
    handling (b_ih vs b_hh, gate order of the bias) change the outputs."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "bias" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))


def make_inputs(c, N, T, gen):
    shape_nt = (N, T) if c["bf"] else (T, N)
    if c["kind"] == "tokens":
        x = torch.randint(0, c["V"], shape_nt, generator=gen, dtype=torch.int64)
    else:
        # input range deliberately not [-1, 1]
        x = 0.2 + 1.5 * torch.randn(shape_nt + (c["F"],), generator=gen)
    states = []
    if c["state_in"]:
        L = c["layers"] * (2 if c["bidir"] else 1)
        states.append(0.5 * torch.randn((L, N, c["H"]), generator=gen))
        if c["cell"] == "lstm":
            states.append(0.5 * torch.randn((L, N, c["H"]), generator=gen))
    return x, states


def names_for(c):
    in_names = ["tokens" if c["kind"] == "tokens" else "input"]
    if c["state_in"]:
        in_names += ["h0", "c0"] if c["cell"] == "lstm" else ["h0"]
    out_names = ["output"]
    if c["state_out"]:
        out_names += ["hn", "cn"] if c["cell"] == "lstm" else ["hn"]
    return in_names, out_names


def dynamic_axes_for(c, in_names, out_names):
    seq = {0: "batch", 1: "time"} if c["bf"] else {0: "time", 1: "batch"}
    dyn = {in_names[0]: dict(seq)}
    for n in in_names[1:]:
        dyn[n] = {1: "batch"}
    if c["head"] == "last_step":
        dyn["output"] = {0: "batch"}
    else:
        dyn["output"] = dict(seq)
    for n in out_names[1:]:
        dyn[n] = {1: "batch"}
    return dyn


def export_onnx(module, args, opset, in_names, out_names, dyn):
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(args), f, opset_version=opset, input_names=in_names,
                          output_names=out_names, dynamic_axes=dyn, do_constant_folding=True,
                          export_params=True)
    return f.getvalue()


def save_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr))


# ----------------------------------------------------------------------------------------
# Goldens
# ----------------------------------------------------------------------------------------
def build_case(c, idx, out_dir):
    seed = 1000 + idx if c["seed"] is None else c["seed"]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = Net(c)
    perturb_biases(net, gen)
    net.eval()

    in_names, out_names = names_for(c)
    wrapper = ExportWrapper(net, len(out_names)).eval()

    # export with a dummy shape different from the golden's
    dx, dstates = make_inputs(c, EXPORT_N, EXPORT_T, torch.Generator().manual_seed(seed + 7))
    model_bytes = export_onnx(wrapper, [dx] + dstates, c["opset"], in_names, out_names,
                              dynamic_axes_for(c, in_names, out_names))

    x, states = make_inputs(c, c["N"], c["T"], gen)
    with torch.no_grad():
        res = net(x, *states)
    out, hn = res[0], res[1]
    cn = res[2] if c["cell"] == "lstm" else None

    d = os.path.join(out_dir, c["name"])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(model_bytes)
    files = {"input": "input.npy"}
    save_npy(os.path.join(d, "input.npy"),
             x.numpy().astype(np.int64 if c["kind"] == "tokens" else np.float32))
    if c["state_in"]:
        files["h0"] = "h0.npy"
        save_npy(os.path.join(d, "h0.npy"), states[0].numpy().astype(np.float32))
        if c["cell"] == "lstm":
            files["c0"] = "c0.npy"
            save_npy(os.path.join(d, "c0.npy"), states[1].numpy().astype(np.float32))
    files["expected"] = "expected.npy"
    save_npy(os.path.join(d, "expected.npy"), out.numpy().astype(np.float32))
    files["expected_hn"] = "expected_hn.npy"
    save_npy(os.path.join(d, "expected_hn.npy"), hn.numpy().astype(np.float32))
    if cn is not None:
        files["expected_cn"] = "expected_cn.npy"
        save_npy(os.path.join(d, "expected_cn.npy"), cn.numpy().astype(np.float32))

    mp = onnx.load_from_string(model_bytes)
    onnx.checker.check_model(mp)
    ops = sorted({n.op_type for n in mp.graph.node})
    entry = {
        "name": c["name"],
        "dir": c["name"],
        "cell": c["cell"],
        "num_layers": c["layers"],
        "bidirectional": c["bidir"],
        "batch_first": c["bf"],
        "input_kind": c["kind"],
        "input_size": c["F"],
        "vocab_size": c["V"],
        "hidden_size": c["H"],
        "head": c["head"],
        "head_out": c["head_out"],
        "activation": c["act"],
        "initial_state_inputs": c["state_in"],
        "state_outputs": c["state_out"],
        "opset": c["opset"],
        "input_names": in_names,
        "output_names": out_names,
        "files": files,
        # extra information (not required by the C++ side)
        "batch": c["N"],
        "time": c["T"],
        "input_shape": list(x.shape),
        "expected_shape": list(out.shape),
        "state_shape": list(hn.shape),
        "seed": seed,
        "onnx_ops": ops,
    }
    return entry


# ----------------------------------------------------------------------------------------
# Bad ONNX files
# ----------------------------------------------------------------------------------------
class LstmThen(torch.nn.Module):
    """LSTM -> <something unsupported> -> Linear head."""

    def __init__(self, mid):
        super().__init__()
        self.rnn = torch.nn.LSTM(6, 10, batch_first=True)
        self.mid = mid
        self.head = torch.nn.Linear(10, 4)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(self.mid(out))


class ConvThenLstm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(6, 6, kernel_size=3, padding=1)
        self.rnn = torch.nn.LSTM(6, 10, batch_first=True)

    def forward(self, x):  # x [N,T,F]
        y = self.conv(x.transpose(1, 2)).transpose(1, 2)
        out, _ = self.rnn(y)
        return out


class VanillaRnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.RNN(6, 10, batch_first=True)
        self.head = torch.nn.Linear(10, 4)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out)


def export_simple(module, opset=14):
    module.eval()
    x = torch.randn(EXPORT_N, EXPORT_T, 6, generator=torch.Generator().manual_seed(5))
    dyn = {"input": {0: "batch", 1: "time"}, "output": {0: "batch", 1: "time"}}
    return onnx.load_from_string(export_onnx(module, [x], opset, ["input"], ["output"], dyn))


def find_node(mp, op):
    nodes = [n for n in mp.graph.node if n.op_type == op]
    assert len(nodes) == 1, (op, len(nodes))
    return nodes[0]


def build_bad(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rows = []  # (file, what, node name, op type)

    def save(mp, fname, what, node, op, check=True):
        if check:
            onnx.checker.check_model(mp)
        onnx.save(mp, os.path.join(out_dir, fname))
        rows.append((fname, what, node, op))

    torch.manual_seed(77)
    mp = export_simple(LstmThen(torch.nn.ReLU()))
    n = find_node(mp, "Relu")
    save(mp, "unsupported_op.onnx", "LSTM -> ReLU -> Linear head; Relu is not part of any "
         "supported pattern", n.name, n.op_type)

    torch.manual_seed(78)
    mp = export_simple(LstmThen(torch.nn.Tanh()))
    n = find_node(mp, "Tanh")
    save(mp, "unsupported_tanh.onnx", "LSTM -> Tanh -> Linear head", n.name, n.op_type)

    torch.manual_seed(79)
    mp = export_simple(ConvThenLstm())
    n = find_node(mp, "Conv")
    save(mp, "unsupported_conv.onnx", "Conv1d feature extractor before the LSTM", n.name,
         n.op_type)

    torch.manual_seed(80)
    mp = export_simple(VanillaRnn())
    n = find_node(mp, "RNN")
    save(mp, "rnn_op.onnx", "nn.RNN (vanilla tanh RNN) -> Linear; ONNX op RNN is unsupported",
         n.name, n.op_type)

    # The following are edits of a valid torch export (torch never emits them). Each is a
    # VALID ONNX model that an importer could silently mis-run if it ignored the feature.
    def plain_lstm(seed):
        torch.manual_seed(seed)
        return export_simple(LstmThen(torch.nn.Identity()))

    mp = plain_lstm(81)
    n = find_node(mp, "LSTM")
    H = 10
    p = np.random.default_rng(81).standard_normal((1, 3 * H)).astype(np.float32) * 0.5
    mp.graph.initializer.append(numpy_helper.from_array(p, "peephole_P"))
    while len(n.input) < 7:
        n.input.append("")
    n.input.append("peephole_P")
    save(mp, "lstm_peephole.onnx", "LSTM with peephole weights P (8th input); peepholes are "
         "unsupported", n.name, n.op_type)

    mp = plain_lstm(82)
    n = find_node(mp, "LSTM")
    mp.graph.input.append(helper.make_tensor_value_info("seq_lens", TensorProto.INT32,
                                                        ["batch"]))
    n.input[4] = "seq_lens"
    save(mp, "lstm_seq_lens.onnx", "LSTM with a sequence_lens graph input (5th LSTM input); "
         "variable lengths inside one LSTM node are unsupported", n.name, n.op_type)

    mp = plain_lstm(83)
    n = find_node(mp, "LSTM")
    n.attribute.append(helper.make_attribute("activations", ["Sigmoid", "Relu", "Relu"]))
    save(mp, "lstm_activations.onnx", "LSTM with non-default activations "
         "[Sigmoid, Relu, Relu]; only Sigmoid/Tanh/Tanh is supported", n.name, n.op_type)

    mp = plain_lstm(84)
    n = find_node(mp, "LSTM")
    n.attribute.append(helper.make_attribute("clip", 0.5))
    save(mp, "lstm_clip.onnx", "LSTM with a cell clip attribute (clip=0.5); unsupported",
         n.name, n.op_type)

    mp = plain_lstm(85)
    n = find_node(mp, "LSTM")
    n.attribute.append(helper.make_attribute("input_forget", 1))
    save(mp, "lstm_input_forget.onnx", "LSTM with input_forget=1 (coupled input/forget "
         "gate); unsupported", n.name, n.op_type)

    # not ONNX at all
    valid = plain_lstm(86).SerializeToString()
    with open(os.path.join(out_dir, "truncated.onnx"), "wb") as f:
        f.write(valid[: len(valid) // 2])
    rows.append(("truncated.onnx", "first half (%d of %d bytes) of a valid LSTM model; must "
                 "fail to parse" % (len(valid) // 2, len(valid)), "-", "-"))
    garbage = np.random.default_rng(1234).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with open(os.path.join(out_dir, "garbage.onnx"), "wb") as f:
        f.write(garbage)
    rows.append(("garbage.onnx", "4096 random bytes (numpy default_rng(1234)); must fail to "
                 "parse (or parse to a model without any graph)", "-", "-"))

    lines = [
        "# bad_onnx: models the importer must REJECT",
        "",
        "Generated by `tools/make_goldens.py` (do not edit by hand; regenerate with",
        "`/usr/bin/python3 tools/make_goldens.py` from the repository root).",
        "",
        "Each rejection must be a clear error (never a crash). For the first group the error",
        "must name the offending node and its op type as listed. All files in the first group",
        "pass `onnx.checker.check_model`: they are valid ONNX, just not supported by rnnserve.",
        "The edited LSTM files (peephole, seq_lens, activations, clip, input_forget) are torch",
        "exports of LSTM(6->10) + Linear(10->4) changed with onnx.helper, because torch never",
        "emits those features; an importer that ignored them would silently compute wrong",
        "results.",
        "",
        "| file | what it is | node name the error must name | op |",
        "|---|---|---|---|",
    ]
    for fname, what, node, op in rows:
        lines.append("| `%s` | %s | `%s` | `%s` |" % (fname, what, node, op))
    lines.append("")
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("\n".join(lines))
    return rows


# ----------------------------------------------------------------------------------------
def write_readme(out_dir, manifest):
    lines = [
        "# PyTorch goldens for the ONNX importer and engine",
        "",
        "Generated by `tools/make_goldens.py` with Debian's PyTorch %s and onnx %s. Do not"
        % (torch.__version__, onnx.__version__),
        "edit by hand. Regenerate (deterministic, a few seconds) from the repository root:",
        "",
        "    /usr/bin/python3 tools/make_goldens.py",
        "    /usr/bin/python3 tools/verify_goldens.py   # independent numpy ONNX evaluator",
        "",
        "Each `<case>/` holds `model.onnx` (torch.onnx.export, do_constant_folding=True,",
        "dynamic batch and time axes), `input.npy`, optional `h0.npy`/`c0.npy` (only when the",
        "graph takes initial states as inputs), `expected.npy` (the model's main output,",
        "PyTorch float32, eval mode, no_grad) and `expected_hn.npy`/`expected_cn.npy` (PyTorch's",
        "final states `[layers*dirs, N, H]`, written for EVERY case even when the graph does",
        "not output them; GRU has no `c`).",
        "",
        "Notes:",
        "- The export was traced with a dummy input of batch %d, time %d; the golden inputs"
        % (EXPORT_N, EXPORT_T),
        "  use other sizes (mostly N=3, T=7), so goldens fail if N or T were baked in.",
        "- Feature inputs are `0.2 + 1.5*randn` (range deliberately not [-1, 1]); token ids",
        "  are uniform in [0, vocab). Biases are PyTorch's default init plus `0.3*randn`.",
        "- Sequence-major cases (`batch_first: false`) take `[T, N, F]` / `[T, N]` input and",
        "  produce `[T, N, ...]` output; `last_step` is `out[:, -1, :]` (batch_first) or",
        "  `out[-1]` (sequence-major) — for bidirectional models that is the forward",
        "  direction's last step and the backward direction's FIRST processed step.",
        "- Graph input names: `input` (features) or `tokens` (ids), then `h0`, `c0`.",
        "  Output names: `output`, then `hn`, `cn` when `state_outputs` is true.",
        "- manifest.json: `vocab_size` / `head_out` are null when not applicable; `files`",
        "  lists only files that exist. Extra keys (`batch`, `time`, `input_shape`,",
        "  `expected_shape`, `state_shape`, `seed`, `onnx_ops`) are informational.",
        "- PyTorch's f32 LSTM/GRU and a plain ONNX-semantics numpy evaluation agree to ~1e-6;",
        "  compare f32 engine results with an absolute tolerance around 1e-5.",
        "",
        "| case | cell | layers | bidir | batch_first | input | head | act | states in/out |"
        " opset | input shape | expected shape |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in manifest:
        inp = ("tokens V=%d E=%d" % (e["vocab_size"], e["input_size"])
               if e["input_kind"] == "tokens" else "F=%d" % e["input_size"])
        head = e["head"] + ("(%d)" % e["head_out"] if e["head_out"] else "")
        lines.append("| %s | %s H=%d | %d | %s | %s | %s | %s | %s | %s/%s | %d | %s | %s |" % (
            e["name"], e["cell"], e["hidden_size"], e["num_layers"], e["bidirectional"],
            e["batch_first"], inp, head, e["activation"], e["initial_state_inputs"],
            e["state_outputs"], e["opset"], e["input_shape"], e["expected_shape"]))
    lines.append("")
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "testdata"),
                    help="testdata folder (goldens/ and bad_onnx/ are written below it)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    gold_dir = os.path.join(args.out, "goldens")
    bad_dir = os.path.join(args.out, "bad_onnx")
    for d in (gold_dir, bad_dir):
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)

    names = [c["name"] for c in CASES]
    assert len(set(names)) == len(names)
    assert {13, 14, 15, 16, 17} <= {c["opset"] for c in CASES}

    manifest = []
    for i, c in enumerate(CASES):
        e = build_case(c, i, gold_dir)
        manifest.append(e)
        print("%-46s opset %d  in %-14s out %s" % (e["name"], e["opset"], e["input_shape"],
                                                   e["expected_shape"]))
    with open(os.path.join(gold_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    write_readme(gold_dir, manifest)

    rows = build_bad(bad_dir)
    for r in rows:
        print("bad_onnx/%-24s %s %s" % (r[0], r[2], r[3]))

    total = sum(os.path.getsize(os.path.join(dp, fn))
                for dp, _, fns in os.walk(gold_dir) for fn in fns)
    print("%d golden cases, %.1f KB in %s" % (len(manifest), total / 1024, gold_dir))


if __name__ == "__main__":
    sys.exit(main())
