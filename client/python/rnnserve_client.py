#!/usr/bin/python3
"""rnnserve Python client: the KServe V2 (Open Inference Protocol) gRPC API on
plain grpcio, as any gRPC language would speak it.

Library:

    from rnnserve_client import InferenceClient
    with InferenceClient("127.0.0.1:8001") as client:
        print(client.ready(), client.health())
        logits = client.infer("charlm", np.array([[40, 69, 76, 76, 79]]))

CLI (global options go before the subcommand):

    rnnserve_client.py [--address HOST:PORT] [--stubs DIR] health
    rnnserve_client.py models
    rnnserve_client.py infer --model charlm --input X.npy [--output Y.npy]
    rnnserve_client.py stream --model charlm_seq --input X.npy --chunk 10
    rnnserve_client.py generate --model charlm --prompt "The " --length 200
                                [--temperature 0.8 --seed 1] [--stateful]
    rnnserve_client.py recalibrate --model charlm [--version 1]

Needs Debian's python3-grpcio and numpy (run with /usr/bin/python3) and the
generated message/stub modules (client/python/gen_stubs.sh, or the CMake target
python_stubs), found in --stubs DIR, else $RNNSERVE_PY_STUBS, else
<repo>/build/python.

Errors: RPC failures raise grpc.RpcError (its .code() is the gRPC status,
e.g. NOT_FOUND for an unknown model); a request refused inside a
ModelStreamInfer stream raises StreamInferError (the stream stays usable).
"""

import argparse
import importlib
import json
import os
import queue
import random
import sys

import grpc
import numpy as np

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_STUBS_DIR = os.path.join(_REPO_ROOT, "build", "python")
DEFAULT_REPOSITORY = os.path.join(_REPO_ROOT, "deploy", "model-repository")

# The server's default largest message (server.max_message_bytes); gRPC's own
# default of 4 MiB would refuse e.g. a [64, 128, 97] FP32 logits answer.
MAX_MESSAGE_BYTES = 64 << 20

# Generated modules, set by load_stubs().
pb = None           # grpc_service_pb2: inference.* messages
pb_grpc = None      # grpc_service_pb2_grpc: GRPCInferenceServiceStub
health_pb = None    # health_pb2: grpc.health.v1 messages
health_grpc = None  # health_pb2_grpc: HealthStub
control_pb = None   # rnnserve_service_pb2: rnnserve.* messages (Recalibrate)
control_grpc = None  # rnnserve_service_pb2_grpc: RnnserveControlStub


def load_stubs(stubs_dir=None):
    """Imports the generated modules from stubs_dir, $RNNSERVE_PY_STUBS or
    <repo>/build/python (the first one given). Idempotent."""
    global pb, pb_grpc, health_pb, health_grpc, control_pb, control_grpc
    if pb is not None:
        return
    directory = stubs_dir or os.environ.get("RNNSERVE_PY_STUBS") or DEFAULT_STUBS_DIR
    if not os.path.isfile(os.path.join(directory, "grpc_service_pb2.py")):
        raise ImportError(
            "no gRPC stubs in %s: run client/python/gen_stubs.sh %s (or build the "
            "CMake target python_stubs), or pass --stubs DIR / set RNNSERVE_PY_STUBS"
            % (directory, directory))
    sys.path.insert(0, os.path.abspath(directory))
    pb = importlib.import_module("grpc_service_pb2")
    pb_grpc = importlib.import_module("grpc_service_pb2_grpc")
    health_pb = importlib.import_module("health_pb2")
    health_grpc = importlib.import_module("health_pb2_grpc")
    control_pb = importlib.import_module("rnnserve_service_pb2")
    control_grpc = importlib.import_module("rnnserve_service_pb2_grpc")


# ---- tensors: numpy <-> V2 messages -----------------------------------------

# V2 datatype -> (numpy dtype as laid out in raw contents: little-endian,
# InferTensorContents field for typed contents; None means raw only).
_DATATYPES = {
    "BOOL": (np.dtype("?"), "bool_contents"),
    "INT8": (np.dtype("i1"), "int_contents"),
    "INT16": (np.dtype("<i2"), "int_contents"),
    "INT32": (np.dtype("<i4"), "int_contents"),
    "INT64": (np.dtype("<i8"), "int64_contents"),
    "UINT8": (np.dtype("u1"), "uint_contents"),
    "UINT16": (np.dtype("<u2"), "uint_contents"),
    "UINT32": (np.dtype("<u4"), "uint_contents"),
    "UINT64": (np.dtype("<u8"), "uint64_contents"),
    "FP16": (np.dtype("<f2"), None),
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "FP64": (np.dtype("<f8"), "fp64_contents"),
}


def datatype_of(array):
    """The V2 datatype of a numpy array: float32 -> FP32, int64 -> INT64, ..."""
    for name, (dtype, _) in _DATATYPES.items():
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            return name
    raise ValueError("no V2 datatype for numpy dtype %s" % array.dtype)


def set_input(request, name, array, typed=False):
    """Appends `array` to a ModelInferRequest as input `name`: raw
    little-endian bytes in raw_input_contents (the default, and the fast path),
    or typed contents (e.g. int64_contents) with typed=True. A request uses one
    style for all its inputs."""
    array = np.asarray(array)
    datatype = datatype_of(array)
    dtype, field = _DATATYPES[datatype]
    tensor = request.inputs.add(name=name, datatype=datatype, shape=array.shape)
    data = np.ascontiguousarray(array, dtype=dtype)
    if typed:
        if field is None:
            raise ValueError("%s has no typed contents field; send it raw" % datatype)
        getattr(tensor.contents, field).extend(data.ravel().tolist())
    else:
        request.raw_input_contents.append(data.tobytes())


def get_outputs(response):
    """{name: numpy array} of a ModelInferResponse, read from
    raw_output_contents when present, else from each output's typed contents."""
    arrays = {}
    for i, out in enumerate(response.outputs):
        if out.datatype not in _DATATYPES:
            raise ValueError("output %s: unsupported datatype %r" % (out.name, out.datatype))
        dtype, field = _DATATYPES[out.datatype]
        shape = tuple(out.shape)
        if len(response.raw_output_contents) > i:
            flat = np.frombuffer(response.raw_output_contents[i], dtype=dtype)
        else:
            flat = np.array(getattr(out.contents, field) if field else [], dtype=dtype)
        if flat.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError("output %s: %d elements for shape %s" % (out.name, flat.size, shape))
        arrays[out.name] = flat.reshape(shape).astype(dtype.newbyteorder("="), copy=True)
    return arrays


def set_sequence(request, sequence_id, start, end):
    """Triton's sequence-batching parameters: which stream a request continues
    (sequence_id != 0), and whether it starts or ends it."""
    request.parameters["sequence_id"].int64_param = int(sequence_id)
    request.parameters["sequence_start"].bool_param = bool(start)
    request.parameters["sequence_end"].bool_param = bool(end)


class StreamInferError(RuntimeError):
    """A request refused inside a ModelStreamInfer stream (its error_message)."""


# ---- the client ---------------------------------------------------------------

class InferenceClient:
    """A connection to one rnnserve (or any KServe V2 gRPC) server.

    One gRPC channel, shared by all calls; safe to use from several threads
    (grpcio channels and stubs are thread-safe). `timeout` (seconds) is the
    deadline of every unary call; None waits for ever."""

    def __init__(self, address="127.0.0.1:8001", stubs_dir=None, timeout=None):
        load_stubs(stubs_dir)
        self.address = address
        self.timeout = timeout
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ])
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._health = health_grpc.HealthStub(self._channel)
        self._control = control_grpc.RnnserveControlStub(self._channel)
        self._input_names = {}  # model -> its (single) input's name

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Health and metadata.
    def live(self):
        return self._stub.ServerLive(pb.ServerLiveRequest(), timeout=self.timeout).live

    def ready(self):
        return self._stub.ServerReady(pb.ServerReadyRequest(), timeout=self.timeout).ready

    def model_ready(self, model, version=""):
        request = pb.ModelReadyRequest(name=model, version=version)
        return self._stub.ModelReady(request, timeout=self.timeout).ready

    def health(self, service=""):
        """grpc.health.v1 status name ("SERVING", "NOT_SERVING", ...); the
        empty service is the whole server."""
        response = self._health.Check(health_pb.HealthCheckRequest(service=service),
                                      timeout=self.timeout)
        return health_pb.HealthCheckResponse.ServingStatus.Name(response.status)

    def server_metadata(self):
        return self._stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=self.timeout)

    def model_metadata(self, model, version=""):
        request = pb.ModelMetadataRequest(name=model, version=version)
        return self._stub.ModelMetadata(request, timeout=self.timeout)

    def repository_index(self, ready_only=False):
        """The repository's models (name, version, state, reason)."""
        request = pb.RepositoryIndexRequest(ready=ready_only)
        return list(self._stub.RepositoryIndex(request, timeout=self.timeout).models)

    # rnnserve extensions.
    def recalibrate(self, model, version=""):
        """rnnserve.RnnserveControl/Recalibrate: the server recomputes the
        model's int8 ranges from its reservoir of recent live inputs (with the
        model's calibration method) and swaps the model in without dropping
        requests; an empty version means every served version. Returns how
        many live sequences the ranges came from. grpc.RpcError NOT_FOUND for
        an unknown model, FAILED_PRECONDITION when it is not int8 or has seen
        no requests since it was loaded or last recalibrated."""
        request = control_pb.RecalibrateRequest(model_name=model, model_version=version)
        return self._control.Recalibrate(request, timeout=self.timeout).samples_used

    # Inference.
    def make_request(self, model, array, sequence_id=None, start=False, end=False,
                     request_id=None, typed=False, version="", input_name=None):
        """The ModelInferRequest infer() sends: `array` as the model's one
        input (its name from ModelMetadata, asked once, unless given)."""
        if input_name is None:
            if model not in self._input_names:
                self._input_names[model] = self.model_metadata(model, version).inputs[0].name
            input_name = self._input_names[model]
        request = pb.ModelInferRequest(model_name=model, model_version=version,
                                       id=request_id or "")
        set_input(request, input_name, array, typed)
        if sequence_id is not None:
            set_sequence(request, sequence_id, start, end)
        return request

    def infer(self, model, array, sequence_id=None, start=False, end=False,
              request_id=None, typed=False, version="", input_name=None):
        """Runs `model` on `array` (float32 features [N, T, F] or int64/int32
        token ids [N, T]) and returns its output as a numpy array. The input
        goes as raw_input_contents, or as typed contents with typed=True; the
        answer is read in whichever form the server chose. sequence_id (with
        start/end) continues a stream on a sequence-batched model."""
        request = self.make_request(model, array, sequence_id, start, end,
                                    request_id, typed, version, input_name)
        response = self._stub.ModelInfer(request, timeout=self.timeout)
        return _only_output(response)

    def open_stream(self, timeout=None):
        """A ModelStreamInfer call to send requests over one by one; use as a
        context manager so the call is closed."""
        return InferStream(self, timeout)

    def stream(self, model, seq, chunk, sequence_id=None):
        """Streams `seq` ([N, T, ...]) through a sequence-batched model in
        chunks of `chunk` time steps over one ModelStreamInfer call, as one
        sequence (start on the first chunk, end on the last), and returns the
        outputs of all chunks joined along time: for a stateful model the same
        as sending `seq` whole."""
        seq = np.asarray(seq)
        if sequence_id is None:
            sequence_id = new_sequence_id()
        starts = range(0, seq.shape[1], chunk)
        outputs = []
        with self.open_stream() as stream:
            for k, t in enumerate(starts):
                outputs.append(stream.infer(
                    model, seq[:, t:t + chunk], sequence_id=sequence_id,
                    start=(k == 0), end=(k == len(starts) - 1),
                    request_id="%d/%d" % (sequence_id, k)))
        return np.concatenate(outputs, axis=1)


class InferStream:
    """One ModelStreamInfer call, used in lock step: infer() sends a request
    and waits for its response. Not thread-safe (one caller at a time)."""

    def __init__(self, client, timeout=None):
        self._client = client
        self._requests = queue.Queue()
        self._responses = client._stub.ModelStreamInfer(
            _drain(self._requests), timeout=timeout)

    def infer(self, model, array, **kwargs):
        """As InferenceClient.infer(); a refused request raises
        StreamInferError and the stream stays open."""
        request = self._client.make_request(model, array, **kwargs)
        self._requests.put(request)
        try:
            message = next(self._responses)
        except StopIteration:
            raise RuntimeError("the server closed the stream") from None
        if message.error_message:
            raise StreamInferError(message.error_message)
        if request.id and message.infer_response.id != request.id:
            raise RuntimeError("response id %r for request %r"
                               % (message.infer_response.id, request.id))
        return _only_output(message.infer_response)

    def close(self):
        """Half-closes the call and waits for the server to finish it."""
        self._requests.put(None)
        for _ in self._responses:  # nothing is outstanding in lock step
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None or issubclass(exc_type, StreamInferError):
            self.close()
        else:
            self._responses.cancel()


def _drain(requests):
    """The request iterator of a stream: what is queued, until None."""
    while True:
        request = requests.get()
        if request is None:
            return
        yield request


def _only_output(response):
    outputs = get_outputs(response)
    if len(outputs) != 1:
        raise ValueError("expected one output, got %s" % list(outputs))
    return next(iter(outputs.values()))


def new_sequence_id():
    """A random non-zero 63-bit sequence id (0 means "no sequence")."""
    return random.SystemRandom().randrange(1, 1 << 63)


# ---- the demo char-LSTM --------------------------------------------------------

class CharVocab:
    """Characters <-> token ids of the demo char-LSTM, from its vocab.json
    (as tools/train_demo_model.py encodes text: CRLF/CR -> newline and TAB ->
    space first; characters outside the vocabulary map to <unk>)."""

    def __init__(self, path):
        with open(path) as f:
            spec = json.load(f)
        self.tokens = spec["tokens"]
        self.unk_id = spec["unk_id"]
        self._ids = {c: i for i, c in enumerate(self.tokens) if i != self.unk_id}

    def encode(self, text):
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
        return [self._ids.get(c, self.unk_id) for c in text]

    def decode(self, ids):
        return "".join("\ufffd" if i == self.unk_id else self.tokens[i] for i in ids)


def generate(client, model, vocab, prompt, length, temperature=0.0, seed=None,
             context=256, stateful=False):
    """Continues `prompt` by `length` characters, one request per character.

    Stateless (a dynamically batched model): each request resends the last
    `context` characters and reads the logits of the last step. Stateful
    (a sequence-batched model): the prompt starts a sequence on one
    ModelStreamInfer stream and then only the new character is sent; the
    server keeps the LSTM state. temperature 0 is greedy (argmax); above 0 the
    next character is sampled from softmax(logits / temperature)."""
    rng = np.random.default_rng(seed)

    def pick(logits):
        if temperature <= 0:
            return int(np.argmax(logits))
        z = (logits - logits.max()) / temperature
        p = np.exp(z)
        return int(rng.choice(len(p), p=p / p.sum()))

    ids = vocab.encode(prompt) or vocab.encode("\n")  # an empty prompt starts a line
    new = []
    if stateful:
        sequence_id = new_sequence_id()
        with client.open_stream() as stream:
            logits = stream.infer(model, np.array([ids], np.int64),
                                  sequence_id=sequence_id, start=True)
            for k in range(length):
                new.append(pick(logits[0, -1]))
                logits = stream.infer(model, np.array([[new[-1]]], np.int64),
                                      sequence_id=sequence_id, end=(k == length - 1))
    else:
        for _ in range(length):
            window = (ids + new)[-context:]
            logits = client.infer(model, np.array([window], np.int64))
            new.append(pick(logits[0, -1]))
    return vocab.decode(new)


# ---- CLI -----------------------------------------------------------------------

def _cmd_health(client, args):
    live, ready, health = client.live(), client.ready(), client.health()
    print("live: %s\nready: %s\nhealth: %s" % (live, ready, health))
    return 0 if live and ready and health == "SERVING" else 1


def _cmd_models(client, args):
    for m in client.repository_index():
        line = "%-20s version %-4s %s" % (m.name, m.version or "-", m.state)
        if m.reason:
            line += " (%s)" % m.reason
        print(line)
        if m.state == "READY":
            meta = client.model_metadata(m.name)
            for kind, tensors in (("input", meta.inputs), ("output", meta.outputs)):
                for t in tensors:
                    print("    %-6s %s %s %s" % (kind, t.name, t.datatype, list(t.shape)))
    return 0


def _save_or_show(array, path):
    if path:
        np.save(path, array)
        print("wrote %s: %s %s" % (path, array.dtype, list(array.shape)))
    else:
        print("%s %s" % (array.dtype, list(array.shape)))
        print(array)


def _cmd_infer(client, args):
    x = np.load(args.input)
    y = client.infer(args.model, x, typed=args.typed,
                     sequence_id=args.sequence_id, start=args.start, end=args.end)
    _save_or_show(y, args.output)
    return 0


def _cmd_stream(client, args):
    y = client.stream(args.model, np.load(args.input), args.chunk)
    _save_or_show(y, args.output)
    return 0


def _cmd_generate(client, args):
    vocab_path = args.vocab or os.path.join(DEFAULT_REPOSITORY, args.model, "vocab.json")
    if not os.path.isfile(vocab_path):  # e.g. a second config of the demo model
        vocab_path = os.path.join(DEFAULT_REPOSITORY, "charlm", "vocab.json")
    text = generate(client, args.model, CharVocab(vocab_path), args.prompt, args.length,
                    temperature=args.temperature, seed=args.seed, context=args.context,
                    stateful=args.stateful)
    print(args.prompt + text)
    return 0


def _cmd_recalibrate(client, args):
    used = client.recalibrate(args.model, args.version)
    print("recalibrated %s on %d live sequences" % (args.model, used))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="rnnserve Python client (KServe V2 gRPC).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--address", default="127.0.0.1:8001", help="server HOST:PORT")
    ap.add_argument("--stubs", help="generated stubs dir (default $RNNSERVE_PY_STUBS "
                    "or <repo>/build/python)")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-call deadline, s")
    sub = ap.add_subparsers(dest="command", required=True)

    sub.add_parser("health", help="server live / ready / grpc.health.v1 status")
    sub.add_parser("models", help="the repository index and each model's tensors")

    p = sub.add_parser("infer", help="run a model on an .npy array")
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True, help="X.npy: float32 [N,T,F] or int64 [N,T]")
    p.add_argument("--output", help="write the output here (.npy); else print it")
    p.add_argument("--typed", action="store_true",
                   help="send typed contents instead of raw_input_contents")
    p.add_argument("--sequence-id", type=int, help="continue this sequence (stateful model)")
    p.add_argument("--start", action="store_true", help="with --sequence-id: first chunk")
    p.add_argument("--end", action="store_true", help="with --sequence-id: last chunk")

    p = sub.add_parser("stream", help="stream an .npy sequence in chunks (stateful model)")
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--chunk", type=int, default=10, help="time steps per request")
    p.add_argument("--output")

    p = sub.add_parser("generate", help="continue a text with the demo char-LSTM")
    p.add_argument("--model", default="charlm")
    p.add_argument("--prompt", default="The ")
    p.add_argument("--length", type=int, default=200, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0: greedy; > 0: sample from softmax(logits / T)")
    p.add_argument("--seed", type=int, help="sampling seed (reproducible text)")
    p.add_argument("--context", type=int, default=256,
                   help="characters resent per request (stateless models)")
    p.add_argument("--stateful", action="store_true",
                   help="the model is sequence-batched: send each character once "
                        "on a ModelStreamInfer stream")
    p.add_argument("--vocab", help="vocab.json (default: the model's in "
                   "deploy/model-repository)")

    p = sub.add_parser("recalibrate", help="recompute a model's int8 ranges from the "
                       "server's recent live inputs and swap it in")
    p.add_argument("--model", required=True)
    p.add_argument("--version", default="", help="model version (default: every "
                   "version served)")
    args = ap.parse_args(argv)

    commands = {"health": _cmd_health, "models": _cmd_models, "infer": _cmd_infer,
                "stream": _cmd_stream, "generate": _cmd_generate,
                "recalibrate": _cmd_recalibrate}
    try:
        with InferenceClient(args.address, args.stubs, args.timeout) as client:
            return commands[args.command](client, args)
    except grpc.RpcError as e:
        print("error: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
    except (StreamInferError, ImportError, OSError, ValueError) as e:
        print("error: %s" % e, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
