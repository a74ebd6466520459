#!/usr/bin/python3
"""Regenerates the committed seed corpus of the fuzz targets (tests/fuzz/corpus/).

Usage, from the repository root (Debian's /usr/bin/python3: numpy, protobuf,
grpc_tools):
    /usr/bin/python3 tests/fuzz/make_corpus.py [--model-tool build/bin/rnnserve-model]

Seeds are small files, valid and invalid, one per behaviour worth reaching:
  onnx_import/  golden models up to 16 KiB and every tests/testdata/bad_onnx model
  artifact/     .rnnq files written by `rnnserve-model quantize` from golden
                models (skipped with a note when the tool is not built)
  config/       the deploy configs and hand-written server/model YAML
  npy/          numpy-written arrays of every accepted dtype and version,
                and the rejected kinds (big-endian, Fortran, f8, truncated)
  model_infer/  serialized inference.ModelInferRequest messages for the
                models model_infer_fuzz.cc builds (token, feature, fixed_t)
Crash inputs found later are added by hand as crash-<what> files and are not
touched here (the script only writes the files it names).
"""
import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
GOLDENS = os.path.join(ROOT, "tests", "testdata", "goldens")
MAX_ONNX_SEED = 16384  # run_fuzz.sh's -max_len for onnx_import


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def npy_bytes(array, version=None):
    buf = io.BytesIO()
    if version is None:
        np.save(buf, array)
    else:
        np.lib.format.write_array(buf, array, version=version)
    return buf.getvalue()


def raw_npy(header, payload=b"", version=1):
    """A .npy file around a hand-written header dict (version 1.0 or 2.0)."""
    text = (header + " " * ((64 - (len(header) + 13) % 64) % 64) + "\n").encode()
    if version == 1:
        prefix = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little")
    else:
        prefix = b"\x93NUMPY\x02\x00" + len(text).to_bytes(4, "little")
    return prefix + text + payload


def onnx_seeds():
    for case in sorted(os.listdir(GOLDENS)):
        path = os.path.join(GOLDENS, case, "model.onnx")
        if os.path.isfile(path) and os.path.getsize(path) <= MAX_ONNX_SEED:
            shutil.copyfile(path, os.path.join(CORPUS, "onnx_import", case + ".onnx"))
    bad = os.path.join(ROOT, "tests", "testdata", "bad_onnx")
    for name in sorted(os.listdir(bad)):
        if name.endswith(".onnx"):
            shutil.copyfile(os.path.join(bad, name),
                            os.path.join(CORPUS, "onnx_import", "bad_" + name))


def artifact_seeds(tool):
    if not tool or not os.access(tool, os.X_OK):
        print("note: no rnnserve-model at %r; artifact seeds left as they are" % tool)
        return
    cases = ["lstm_1l", "gru_1l", "lstm_tokens_head_every", "gru_tokens_state_io",
             "lstm_bidir_state_io_seqmajor", "gru_2l_state_io", "lstm_2l_h0c0",
             "gru_head_last_logsoftmax_seqmajor"]
    for case in cases:
        out = os.path.join(CORPUS, "artifact", case + ".rnnq")
        cmd = [tool, "quantize", os.path.join(GOLDENS, case, "model.onnx"),
               "--calibration", os.path.join(GOLDENS, case, "input.npy"), "-o", out]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print("note: %s: %s" % (case, r.stderr.strip().splitlines()[-1:]))
    # A few cheap corruptions of one artifact, as seeds for the error paths.
    base = os.path.join(CORPUS, "artifact", "lstm_1l.rnnq")
    if os.path.exists(base):
        data = open(base, "rb").read()
        write("artifact", "truncated_half.rnnq", data[: len(data) // 2])
        write("artifact", "truncated_16.rnnq", data[:16])


def config_seeds():
    for src, name in [("deploy/config/server.yaml", "deploy_server.yaml"),
                      ("deploy/model-repository/charlm/config.yaml", "charlm_config.yaml")]:
        shutil.copyfile(os.path.join(ROOT, src), os.path.join(CORPUS, "config", name))
    seeds = {
        "empty.yaml": "",
        "comment_only.yaml": "# nothing here\n",
        "server_min.yaml": "server:\n  worker_threads: 2\n",
        "server_flow.yaml":
            "{server: {grpc_address: '127.0.0.1:0', log_level: debug, "
            "model_control: none, startup_models: [a, b]}, "
            "model_defaults: {precision: f32, max_sequence_length: 16}}\n",
        "server_tls.yaml":
            "server:\n  tls: {cert_file: a.pem, key_file: b.pem, client_ca_file: c.pem}\n"
            "  max_message_bytes: 1048576\n  intra_op_threads: 3\n",
        "server_defaults_sequence.yaml":
            "model_defaults:\n  batching:\n    kind: sequence\n"
            "    max_sequence_idle_us: 1000000\n    max_active_sequences: 8\n"
            "    max_batch_size: 4\n    max_queue_size: 16\n",
        "model_sequence.yaml":
            "name: charlm\nbatching: {kind: sequence, max_batch_size: 8, "
            "max_queue_size: 64, max_active_sequences: 32, max_sequence_idle_us: 5000}\n"
            "precision: int8\ncalibration: {method: percentile, percentile: 99.9, "
            "per_channel: false}\n",
        "model_versions.yaml":
            "version_policy: {specific: {versions: [3, 1, 2]}}\n"
            "instance: {count: 2, intra_op_threads: 1}\n",
        "model_version_all.yaml": "version_policy: all\nprecision: bf16\n",
        "model_drift.yaml":
            "drift:\n  sample_rate: 0.5\n  action: fallback_f32\n  min_samples: 10\n"
            "  hysteresis: 0.1\n  queue_size: 4\n  reservoir_size: 0\n"
            "  thresholds: {max_abs_error: 0.1, mean_abs_error: 0.01, relative_l2: 0.05,\n"
            "               top1_disagreement: 0.02, kl: 0.001, clip_fraction: 0.5}\n",
        "model_features.yaml":
            "inputs:\n  - {name: x, dtype: FP32, dims: [-1, 4, 3]}\n"
            "outputs:\n  - {name: y, dtype: FP32, dims: [-1, 2]}\n"
            "batching: {preferred_batch_sizes: [2, 4], max_batch_size: 4, "
            "max_queue_delay_us: 100, group_by_length: false}\n",
        "model_tokens_int32.yaml":
            "inputs: [{name: tokens, dtype: INT32, dims: [-1, -1]}]\n"
            "outputs: [{name: logits, dtype: FP32, dims: [-1, -1, 10]}]\n",
        "anchors.yaml":
            "base: &b {max_batch_size: 8, max_queue_size: 8}\n"
            "model_defaults:\n  batching: *b\n",
        "bad_types.yaml": "server:\n  worker_threads: four\n  log_level: loud\n",
        "bad_unknown_key.yaml": "server:\n  grpc_adress: x\n",
        "bad_duplicate.yaml": "name: a\nname: b\n",
        "bad_yaml.yaml": "server: [unclosed\n",
        "multi_doc.yaml": "---\nname: charlm\n---\nname: other\n",
    }
    for name, text in seeds.items():
        write("config", name, text)


def npy_seeds():
    rng = np.random.default_rng(6)
    arrays = {
        "f32_3d.npy": npy_bytes(rng.standard_normal((2, 3, 4)).astype("<f4")),
        "i64_tokens.npy": npy_bytes(rng.integers(0, 10, (2, 5)).astype("<i8")),
        "i32_1d.npy": npy_bytes(np.arange(3, dtype="<i4")),
        "f32_scalar.npy": npy_bytes(np.float32(1.5).reshape(())),
        "f32_empty.npy": npy_bytes(np.zeros((0, 4), dtype="<f4")),
        "f32_v2.npy": npy_bytes(np.ones((2, 2), dtype="<f4"), version=(2, 0)),
        "i64_v3.npy": npy_bytes(np.ones((3,), dtype="<i8"), version=(3, 0)),
        "bad_big_endian.npy": npy_bytes(np.ones((2,), dtype=">f4")),
        "bad_fortran.npy": npy_bytes(np.asfortranarray(np.ones((2, 3), dtype="<f4"))),
        "bad_f8.npy": npy_bytes(np.ones((2,), dtype="<f8")),
    }
    good = arrays["f32_3d.npy"]
    arrays["bad_truncated_payload.npy"] = good[:-5]
    arrays["bad_truncated_header.npy"] = good[:20]
    # Dimensions at the parser's 2^40 cap; the zero makes the array legal
    # (and empty), so only overflow-safe element counting survives it.
    arrays["huge_dims_empty.npy"] = raw_npy(
        "{'descr': '<f4', 'fortran_order': False, "
        "'shape': (1099511627776, 1099511627776, 0), }")
    arrays["huge_dims_payload.npy"] = raw_npy(
        "{'descr': '<i8', 'fortran_order': False, 'shape': (1099511627776, 8), }",
        b"\0" * 64)
    arrays["f32_nan_inf.npy"] = npy_bytes(
        np.array([np.nan, np.inf, -np.inf, 3e38, -1e20], dtype="<f4"))
    for name, data in arrays.items():
        write("npy", name, data)


def model_infer_seeds():
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I",
                        os.path.join(ROOT, "proto"), "--python_out=" + tmp,
                        os.path.join(ROOT, "proto", "grpc_service.proto")], check=True)
        sys.path.insert(0, tmp)
        import grpc_service_pb2 as pb  # noqa: E402 (generated just above)

    def request(name, datatype, shape, model="m", **kw):
        r = pb.ModelInferRequest(model_name=model, id="seed")
        t = r.inputs.add(name=name, datatype=datatype, shape=shape)
        if "fp32" in kw:
            t.contents.fp32_contents.extend(kw["fp32"])
        if "int64" in kw:
            t.contents.int64_contents.extend(kw["int64"])
        if "int32" in kw:
            t.contents.int_contents.extend(kw["int32"])
        if "raw" in kw:
            r.raw_input_contents.append(kw["raw"])
        for out in kw.get("outputs", []):
            r.outputs.add(name=out)
        for key, value in kw.get("params", {}).items():
            p = r.parameters[key]
            if isinstance(value, bool):
                p.bool_param = value
            elif isinstance(value, int):
                p.int64_param = value
            else:
                p.string_param = value
        return r

    seeds = {
        "tokens_int64.pb": request("tokens", "INT64", [2, 3], int64=[1, 2, 3, 4, 5, 6],
                                   outputs=["logits"]),
        "tokens_int32_raw.pb": request("tokens", "INT32", [1, 4],
                                       raw=np.array([0, 9, 3, 1], "<i4").tobytes()),
        "tokens_int64_raw.pb": request("tokens", "INT64", [1, 2],
                                       raw=np.array([7, 8], "<i8").tobytes()),
        "tokens_sequence.pb": request("tokens", "INT64", [1, 1], int64=[5],
                                      params={"sequence_id": 42, "sequence_start": True,
                                              "sequence_end": False, "timeout": 1000}),
        "tokens_sequence_string_id.pb": request("tokens", "INT64", [1, 1], int64=[5],
                                                params={"sequence_id": "17",
                                                        "sequence_end": True}),
        "features_fp32.pb": request("x", "FP32", [1, 4, 3], fp32=[0.5] * 12,
                                    outputs=["y"]),
        "features_fp32_raw.pb": request("x", "FP32", [2, 4, 3],
                                        raw=np.linspace(-1, 1, 24).astype("<f4").tobytes()),
        "features_nan.pb": request("x", "FP32", [1, 1, 3], fp32=[0.0, float("nan"), 1.0]),
        "bad_token_oov.pb": request("tokens", "INT64", [1, 2], int64=[3, 10]),
        "bad_wrong_name.pb": request("input", "INT64", [1, 1], int64=[1]),
        "bad_both_contents.pb": request("tokens", "INT64", [1, 1], int64=[1],
                                        raw=np.array([1], "<i8").tobytes()),
        "bad_huge_shape.pb": request("x", "FP32", [2 ** 31, 2 ** 31, 3], fp32=[1.0]),
        "bad_negative_shape.pb": request("tokens", "INT64", [-1, 2], int64=[1, 2]),
        "bad_raw_length.pb": request("x", "FP32", [1, 1, 3], raw=b"\x00" * 11),
        "bad_output_name.pb": request("tokens", "INT64", [1, 1], int64=[1],
                                      outputs=["nope"]),
        "bad_param_type.pb": request("tokens", "INT64", [1, 1], int64=[1],
                                     params={"sequence_start": 3, "timeout": "soon"}),
    }
    for name, message in seeds.items():
        write("model_infer", name, message.SerializeToString(deterministic=True))
    write("model_infer", "empty.pb", b"")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-tool", default=os.path.join(ROOT, "build", "bin", "rnnserve-model"))
    args = parser.parse_args()
    for target in ["onnx_import", "artifact", "config", "npy", "model_infer"]:
        os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    onnx_seeds()
    artifact_seeds(args.model_tool)
    config_seeds()
    npy_seeds()
    model_infer_seeds()


if __name__ == "__main__":
    main()
