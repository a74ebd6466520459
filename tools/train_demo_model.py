#!/usr/bin/python3
"""Train rnnserve's bundled demo model: a character-level LSTM language model on the text
of Debian's `fortunes` package (apt-get install fortunes; /usr/share/games/fortunes/).

  Embedding(V, 32) -> LSTM(32, 128, num_layers=2, batch_first=True) -> Linear(128, V)

on every step, outputting logits (no softmax). ONNX input "tokens" int64 [N, T], output
"logits" float32 [N, T, V], opset 14, dynamic N and T.

Writes:
  deploy/model-repository/charlm/1/model.onnx
  deploy/model-repository/charlm/1/calibration.npy   int64 [64, 64], TRAIN split
  deploy/model-repository/charlm/vocab.json
  tests/testdata/demo/heldout_tokens.npy             int64 [128, 64], TEST split
  tests/testdata/demo/heldout_targets.npy            int64 [128, 64], next characters
  tests/testdata/demo/expected_logits.npy            float32 [8, 64, V] (first 8 sequences)
  tests/testdata/demo/metrics.json

Deterministic given the seeds and the fortunes package contents: training stops after a
fixed number of steps (not wall time), torch uses 2 threads. About 5-6 minutes on 2 cores.

  /usr/bin/python3 tools/train_demo_model.py             # full run
  /usr/bin/python3 tools/train_demo_model.py --steps 50  # quick smoke run (into --out-root)
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time
import warnings
import zlib

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORTUNE_DIR = "/usr/share/games/fortunes"

# ---- vocabulary: id = ord(c) - 32 for ' '..'~' (0..94), '\n' = 95, <unk> = 96 ----------
PRINTABLE = [chr(c) for c in range(32, 127)]
NEWLINE_ID = len(PRINTABLE)  # 95
UNK_ID = NEWLINE_ID + 1  # 96
VOCAB = PRINTABLE + ["\n", "<unk>"]
V = len(VOCAB)  # 97

SEQ_LEN = 64
BATCH = 64
EMBED = 32
HIDDEN = 128
LAYERS = 2
TEST_MOD = 10  # fortunes with crc32(text) % 10 == 0 form the held-out (test) split
SEED = 20261126


def encode(text):
    """str -> int64 ids. Call normalize() first."""
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    ids = np.full(cps.shape, UNK_ID, np.int64)
    printable = (cps >= 32) & (cps <= 126)
    ids[printable] = cps[printable] - 32
    ids[cps == 10] = NEWLINE_ID
    return ids


def decode(ids):
    return "".join(VOCAB[i] if i != UNK_ID else "\ufffd" for i in ids)


def normalize(text):
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")


def fortune_files():
    files = []
    for fn in sorted(os.listdir(FORTUNE_DIR)):
        p = os.path.join(FORTUNE_DIR, fn)
        if fn.endswith(".dat") or fn.endswith(".u8") or os.path.islink(p) or not os.path.isfile(p):
            continue
        files.append(p)
    if not files:
        raise SystemExit("no fortune files in %s: apt-get install -y fortunes" % FORTUNE_DIR)
    return files


def load_fortunes(files):
    """Returns (list of unique fortunes in file order, per-file info)."""
    seen = set()
    fortunes = []
    info = []
    for p in files:
        raw = open(p, "rb").read()
        text = normalize(raw.decode("utf-8", errors="replace"))
        n = 0
        cur = []
        for line in text.split("\n") + ["%"]:
            if line == "%":
                f = "\n".join(cur).strip("\n")
                cur = []
                if f and f not in seen:
                    seen.add(f)
                    fortunes.append(f + "\n")
                    n += 1
            else:
                cur.append(line)
        info.append({"file": p, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
                     "fortunes": n})
    return fortunes, info


def split(fortunes):
    train, test = [], []
    for f in fortunes:
        (test if zlib.crc32(f.encode("utf-8")) % TEST_MOD == 0 else train).append(f)
    # a fortune file's own separator line between fortunes
    join = lambda fs: "".join(f + "%\n" for f in fs)  # noqa: E731
    return join(train), join(test), len(train), len(test)


class CharLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(V, EMBED)
        self.lstm = torch.nn.LSTM(EMBED, HIDDEN, num_layers=LAYERS, batch_first=True)
        self.head = torch.nn.Linear(HIDDEN, V)

    def forward(self, tokens):
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out)


def windows(stream, starts, length):
    idx = np.asarray(starts, np.int64)[:, None] + np.arange(length)[None, :]
    return stream[idx]


@torch.no_grad()
def evaluate(model, tokens, targets, chunk=256):
    model.eval()
    tot_loss, correct, count = 0.0, 0, 0
    for s in range(0, len(tokens), chunk):
        x = torch.from_numpy(tokens[s:s + chunk])
        y = torch.from_numpy(targets[s:s + chunk])
        logits = model(x)
        tot_loss += torch.nn.functional.cross_entropy(
            logits.reshape(-1, V), y.reshape(-1), reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        count += y.numel()
    model.train()
    return tot_loss / count, correct / count


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1800)
    ap.add_argument("--lr", type=float, default=8e-3)
    ap.add_argument("--out-root", default=REPO,
                    help="repository root to write deploy/ and tests/testdata/demo/ under")
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    t_start = time.time()

    files = fortune_files()
    fortunes, file_info = load_fortunes(files)
    train_text, test_text, n_train, n_test = split(fortunes)
    train = encode(train_text)
    test = encode(test_text)
    print("fortunes: %d files, %d unique fortunes -> train %d (%d chars), test %d (%d chars)"
          % (len(files), len(fortunes), n_train, len(train), n_test, len(test)))
    unk_frac = float((train == UNK_ID).mean())

    # fixed evaluation / calibration sets
    n_held = 128
    held_starts = np.linspace(0, len(test) - SEQ_LEN - 1, n_held).round().astype(np.int64)
    held = windows(test, held_starts, SEQ_LEN + 1)
    held_tokens, held_targets = held[:, :-1].copy(), held[:, 1:].copy()
    full_starts = np.arange(0, len(test) - SEQ_LEN - 1, SEQ_LEN)
    full = windows(test, full_starts, SEQ_LEN + 1)
    full_tokens, full_targets = full[:, :-1].copy(), full[:, 1:].copy()
    calib_starts = rng.integers(0, len(train) - SEQ_LEN, 64)
    calibration = windows(train, calib_starts, SEQ_LEN)

    # unigram baseline (train frequencies, add-one smoothing)
    counts = np.bincount(train, minlength=V).astype(np.float64) + 1.0
    probs = counts / counts.sum()
    uni_loss = float(-np.log(probs[held_targets]).mean())
    uni_acc = float((held_targets == probs.argmax()).mean())
    print("unigram baseline on held-out 128x64: loss %.3f nats, top-1 %.3f (always %r)"
          % (uni_loss, uni_acc, VOCAB[int(probs.argmax())]))

    model = CharLM()
    with torch.no_grad():  # LSTM forget-gate bias 1 (PyTorch rows i, f, g, o)
        for name, p in model.lstm.named_parameters():
            if name.startswith("bias_ih"):
                p[HIDDEN:2 * HIDDEN].fill_(1.0)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    gen = torch.Generator().manual_seed(SEED + 1)
    train_t = torch.from_numpy(train)
    model.train()
    t0 = time.time()
    run_loss = None
    for step in range(1, args.steps + 1):
        starts = torch.randint(0, len(train) - SEQ_LEN - 1, (BATCH,), generator=gen)
        idx = starts[:, None] + torch.arange(SEQ_LEN + 1)[None, :]
        batch = train_t[idx]
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        run_loss = loss.item() if run_loss is None else 0.98 * run_loss + 0.02 * loss.item()
        if step % 100 == 0 or step == args.steps:
            msg = "step %5d/%d  train loss %.3f  lr %.2e  %.0fs" % (
                step, args.steps, run_loss, sched.get_last_lr()[0], time.time() - t0)
            if step % 600 == 0 or step == args.steps:
                hl, ha = evaluate(model, held_tokens, held_targets)
                msg += "  | held-out loss %.3f top-1 %.3f" % (hl, ha)
            print(msg, flush=True)
    train_seconds = time.time() - t0

    model.eval()
    held_loss, held_acc = evaluate(model, held_tokens, held_targets)
    full_loss, full_acc = evaluate(model, full_tokens, full_targets)
    with torch.no_grad():
        expected = model(torch.from_numpy(held_tokens[:8])).numpy().astype(np.float32)
        # a short sample, greedy, for the log only
        ctx = torch.from_numpy(encode("The ")[None, :])
        out, st = model.lstm(model.embed(ctx))
        sample = []
        nxt = model.head(out[:, -1]).argmax(-1)
        for _ in range(120):
            sample.append(int(nxt))
            out, st = model.lstm(model.embed(nxt[:, None]), st)
            nxt = model.head(out[:, -1]).argmax(-1)
    print("held-out 128x64: loss %.4f nats (%.3f bits/char), top-1 %.4f"
          % (held_loss, held_loss / math.log(2), held_acc))
    print("full test split (%d x 64): loss %.4f, top-1 %.4f" % (len(full_tokens), full_loss,
                                                               full_acc))
    print("greedy sample: %r" % ("The " + decode(sample)))

    # ---- export and write everything ----------------------------------------------------
    repo_dir = os.path.join(args.out_root, "deploy", "model-repository", "charlm")
    ver_dir = os.path.join(repo_dir, "1")
    demo_dir = os.path.join(args.out_root, "tests", "testdata", "demo")
    os.makedirs(ver_dir, exist_ok=True)
    os.makedirs(demo_dir, exist_ok=True)
    onnx_path = os.path.join(ver_dir, "model.onnx")
    dummy = torch.from_numpy(held_tokens[:2, :16].copy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), onnx_path, opset_version=14,
                          input_names=["tokens"], output_names=["logits"],
                          dynamic_axes={"tokens": {0: "batch", 1: "time"},
                                        "logits": {0: "batch", 1: "time"}},
                          do_constant_folding=True)
    np.save(os.path.join(ver_dir, "calibration.npy"), calibration.astype(np.int64))
    np.save(os.path.join(demo_dir, "heldout_tokens.npy"), held_tokens.astype(np.int64))
    np.save(os.path.join(demo_dir, "heldout_targets.npy"), held_targets.astype(np.int64))
    np.save(os.path.join(demo_dir, "expected_logits.npy"), expected)

    vocab = {
        "size": V,
        "tokens": VOCAB,
        "unk_id": UNK_ID,
        "newline_id": NEWLINE_ID,
        "encoding": "id = ord(c) - 32 for printable ASCII ' '..'~' (ids 0..94); '\\n' -> 95; "
                    "any other character -> 96 (<unk>)",
        "normalization": "CRLF/CR -> '\\n', TAB -> ' ' before encoding",
        "model_input": "tokens int64 [N, T]",
        "model_output": "logits float32 [N, T, %d]: unnormalized next-character scores" % V,
    }
    with open(os.path.join(repo_dir, "vocab.json"), "w") as f:
        json.dump(vocab, f, indent=1)
        f.write("\n")

    import onnx  # noqa: E402  (only needed here)
    onnx.checker.check_model(onnx.load(onnx_path))
    metrics = {
        "model": "charlm",
        "framework": "PyTorch %s (Debian), float32" % torch.__version__,
        "heldout_top1_accuracy": round(held_acc, 6),
        "heldout_loss_nats": round(held_loss, 6),
        "heldout_bits_per_char": round(held_loss / math.log(2), 6),
        "heldout_positions": int(held_targets.size),
        "heldout_note": "heldout_tokens.npy [128,64] -> heldout_targets.npy, each sequence "
                        "run from a zero initial state; accuracy/loss over all 128x64 "
                        "positions",
        "full_test_split": {"sequences": int(len(full_tokens)), "seq_len": SEQ_LEN,
                            "top1_accuracy": round(full_acc, 6),
                            "loss_nats": round(full_loss, 6)},
        "unigram_baseline": {"top1_accuracy": round(uni_acc, 6), "loss_nats": round(uni_loss, 6),
                             "note": "train-split character frequencies, on the same 128x64 "
                                     "held-out positions"},
        "vocab_size": V,
        "architecture": {"embedding": [V, EMBED], "lstm": {"input_size": EMBED,
                         "hidden_size": HIDDEN, "num_layers": LAYERS, "batch_first": True},
                         "head": [HIDDEN, V], "output": "logits (no softmax)"},
        "onnx": {"opset": 14, "input": "tokens int64 [N,T]", "output": "logits float32 [N,T,V]",
                 "dynamic_axes": ["batch", "time"]},
        "training": {"optimizer": "Adam", "lr": args.lr,
                     "lr_schedule": "cosine from lr to 0.1*lr over all steps",
                     "grad_clip_norm": 1.0, "steps": args.steps, "batch": BATCH,
                     "seq_len": SEQ_LEN, "seed": SEED, "torch_threads": 2,
                     "forget_gate_bias_init": 1.0,
                     "batches": "random windows of the train stream, zero initial state",
                     "train_seconds": round(train_seconds, 1)},
        "data": {"package": "fortunes (Debian)", "dir": FORTUNE_DIR,
                 "split": "unique fortunes (split on '%%' lines, deduplicated); "
                          "crc32(fortune utf-8) %% %d == 0 -> test, else train; each split "
                          "is the concatenation of 'fortune\\n%%\\n'" % TEST_MOD,
                 "train_fortunes": n_train, "test_fortunes": n_test,
                 "train_chars": int(len(train)), "test_chars": int(len(test)),
                 "train_unk_fraction": round(unk_frac, 6),
                 "calibration": "64 random windows of 64 from the train split (seed %d)" % SEED,
                 "heldout": "128 windows of 65 at evenly spaced offsets of the test split",
                 "files": file_info},
    }
    with open(os.path.join(demo_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
        f.write("\n")
    print("wrote %s (%d bytes), total time %.0fs" % (onnx_path, os.path.getsize(onnx_path),
                                                     time.time() - t_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
