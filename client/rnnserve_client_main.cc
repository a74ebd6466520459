// rnnserve-client: health, models, infer, stream and perf against a KServe V2
// gRPC server, and recalibrate (an rnnserve extension). Exit status: 0
// success, 1 the server (or a file) said no, 2 bad usage. Errors go to stderr
// as "rnnserve-client CMD: CODE: message" with CODE the gRPC code name
// (NOT_FOUND, UNAVAILABLE, ...).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "client/cli_flags.h"
#include "client/inference_client.h"
#include "client/perf.h"
#include "server/common/npy.h"

namespace rnnserve::client {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

constexpr char kUsage[] =
    "usage: rnnserve-client COMMAND [flags]   (rnnserve-client COMMAND "
    "--help)\n"
    "\n"
    "commands:\n"
    "  health   grpc.health.v1 check; exit 0 only when SERVING\n"
    "  models   list the repository: model, version, state, input/output "
    "metadata\n"
    "  infer    run one .npy batch through ModelInfer\n"
    "  stream   run one sequence through ModelStreamInfer in chunks of K "
    "steps\n"
    "  perf     closed-loop load generator (throughput, p50/p90/p99 latency)\n"
    "  recalibrate  recompute a model's int8 ranges from the server's recent "
    "live inputs\n"
    "\n"
    "exit status: 0 ok, 1 server or file error, 2 bad usage\n";

struct Command {
  const char* name;
  const char* summary;
  void (*declare)(FlagSet*);
  int (*run)(const FlagSet&, InferenceClient*);
};

void CommonFlags(FlagSet* flags, const std::string& timeout_ms = "30000") {
  flags->Value("address", "server HOST:PORT", "127.0.0.1:8001");
  flags->Value("timeout-ms", "deadline of each call in ms (0: none)",
               timeout_ms);
  flags->Value("tls-ca", "PEM root CA of the server; enables TLS");
  flags->Value("tls-cert",
               "PEM client certificate for mutual TLS (with --tls-key)");
  flags->Value("tls-key", "PEM client private key for mutual TLS");
  flags->Value("tls-server-name", "name to check in the server certificate");
  flags->Switch("help", "show this help");
}

int Fail(const std::string& command, const Status& status) {
  std::cerr << "rnnserve-client " << command << ": " << status.ToString()
            << "\n";
  return kExitFailure;
}

int Usage(const std::string& command, const std::string& message) {
  std::cerr << "rnnserve-client " << command << ": " << message << "\n"
            << "try: rnnserve-client " << command << " --help\n";
  return kExitUsage;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  NpyArray a;
  a.shape = shape;
  return a.ShapeString();
}

// "min -1.2 max 3.4 mean 0.5" (+ non-finite count when there are any).
std::string Summary(const std::vector<float>& v) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo, sum = 0;
  int64_t finite = 0, bad = 0;
  for (float x : v) {
    if (!std::isfinite(x)) {
      ++bad;
      continue;
    }
    lo = std::min<double>(lo, x);
    hi = std::max<double>(hi, x);
    sum += x;
    ++finite;
  }
  char buf[160];
  if (finite == 0) {
    std::snprintf(buf, sizeof(buf), "no finite values");
  } else {
    std::snprintf(buf, sizeof(buf), "min %.6g max %.6g mean %.6g", lo, hi,
                  sum / static_cast<double>(finite));
  }
  std::string out = buf;
  if (bad) out += " non-finite " + std::to_string(bad);
  return out;
}

// ---- health ---------------------------------------------------------------

void DeclareHealth(FlagSet* f) {
  f->Value("service", "service name to check (empty: the whole server)");
  CommonFlags(f, "5000");
}

int RunHealth(const FlagSet& f, InferenceClient* client) {
  auto health = client->Health(f.Get("service"));
  if (!health.ok()) return Fail("health", health.status());
  std::cout << HealthStatusName(*health) << "\n";
  return *health == HealthStatus::kServing ? kExitOk : kExitFailure;
}

// ---- models ---------------------------------------------------------------

void DeclareModels(FlagSet* f) { CommonFlags(f); }

std::string TensorLine(
    const char* kind,
    const inference::ModelMetadataResponse::TensorMetadata& t) {
  std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
  return std::string("  ") + kind + " " + t.name() + " " + t.datatype() + " " +
         ShapeString(shape);
}

int RunModels(const FlagSet&, InferenceClient* client) {
  auto models = client->RepositoryIndex();
  if (!models.ok()) return Fail("models", models.status());
  if (models->empty()) std::cout << "no models\n";
  for (const ModelIndexEntry& m : *models) {
    std::cout << m.name << " version " << (m.version.empty() ? "-" : m.version)
              << " " << m.state;
    if (!m.reason.empty()) std::cout << " (" << m.reason << ")";
    std::cout << "\n";
    if (m.state != "READY") continue;
    auto metadata = client->ModelMetadata(m.name, m.version);
    if (!metadata.ok()) {
      std::cout << "  metadata: " << metadata.status().ToString() << "\n";
      continue;
    }
    if (!metadata->platform().empty())
      std::cout << "  platform " << metadata->platform() << "\n";
    for (const auto& t : metadata->inputs())
      std::cout << TensorLine("input ", t) << "\n";
    for (const auto& t : metadata->outputs())
      std::cout << TensorLine("output", t) << "\n";
  }
  return kExitOk;
}

// ---- infer ----------------------------------------------------------------

void DeclareInfer(FlagSet* f) {
  f->Value("model", "model name", "", true);
  f->Value("input", "float32 [N,T,F] or int64/int32 [N,T] .npy", "", true);
  f->Value("output", "write the output here as float32 .npy");
  f->Value("version", "model version (default: the server's choice)");
  f->Value("id", "request id");
  CommonFlags(f);
}

// Prints "model M version V", `details` (lines), "output NAME DTYPE SHAPE",
// the value summary, and "wrote PATH" once the .npy is written.
int PrintResult(const InferResult& r, const std::string& details,
                const std::string& output_path, const char* command) {
  std::cout << "model " << r.model_name << " version " << r.model_version
            << "\n"
            << details << "output " << r.output_name << " " << r.output_datatype
            << " " << ShapeString(r.shape) << "\n"
            << Summary(r.data) << "\n";
  if (!output_path.empty()) {
    if (Status s = WriteNpy(output_path, r.ToNpy()); !s.ok())
      return Fail(command, s);
    std::cout << "wrote " << output_path << "\n";
  }
  return kExitOk;
}

int RunInfer(const FlagSet& f, InferenceClient* client) {
  auto input = ReadNpy(f.Get("input"));
  if (!input.ok()) return Fail("infer", input.status());
  InferRequest request;
  request.model = f.Get("model");
  request.version = f.Get("version");
  request.id = f.Get("id");
  request.input = std::move(*input);
  auto result = client->Infer(request);
  if (!result.ok()) return Fail("infer", result.status());
  std::string details;
  if (!result->id.empty()) details += "id " + result->id + "\n";
  if (auto b = result->batch_size()) {
    details += "server batch_size " + std::to_string(*b) + "\n";
  }
  return PrintResult(*result, details, f.Get("output"), "infer");
}

// ---- stream ---------------------------------------------------------------

void DeclareStream(FlagSet* f) {
  f->Value("model", "model name (its config needs batching kind: sequence)", "",
           true);
  f->Value("input", "one sequence .npy: [1,T,F]/[T,F] float32 or [1,T]/[T] ids",
           "", true);
  f->Value("chunk", "steps per chunk", "", true);
  f->Value("output", "write the concatenated output here as float32 .npy");
  f->Value("version", "model version (default: the server's choice)");
  f->Value("sequence-id", "sequence id, > 0 (default: random)");
  CommonFlags(f);
}

int RunStream(const FlagSet& f, InferenceClient* client) {
  auto chunk = f.GetInt("chunk", 1, std::numeric_limits<int32_t>::max());
  if (!chunk.ok()) return Usage("stream", chunk.status().message());
  StreamRequest request;
  if (f.Given("sequence-id")) {
    auto id = f.GetInt("sequence-id", 1, std::numeric_limits<int64_t>::max());
    if (!id.ok()) return Usage("stream", id.status().message());
    request.sequence_id = static_cast<uint64_t>(*id);
  } else {
    // Random, so that concurrent clients do not share a server-side state.
    std::mt19937_64 rng(
        std::random_device{}() ^
        static_cast<uint64_t>(
            std::chrono::steady_clock::now().time_since_epoch().count()));
    request.sequence_id = (rng() >> 2) + 1;
  }
  auto input = ReadNpy(f.Get("input"));
  if (!input.ok()) return Fail("stream", input.status());
  request.model = f.Get("model");
  request.version = f.Get("version");
  request.sequence = std::move(*input);
  request.chunk_steps = *chunk;
  auto result = client->StreamSequence(request);
  if (!result.ok()) return Fail("stream", result.status());
  double sum = 0, worst = 0;
  for (double ms : result->chunk_latency_ms) {
    sum += ms;
    worst = std::max(worst, ms);
  }
  const size_t n = result->chunk_latency_ms.size();
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "sequence_id %llu, %zu chunks of up to %lld steps\n"
                "chunk latency ms: mean %.3f, max %.3f\n",
                static_cast<unsigned long long>(request.sequence_id), n,
                static_cast<long long>(request.chunk_steps),
                n ? sum / static_cast<double>(n) : 0.0, worst);
  return PrintResult(result->output, buf, f.Get("output"), "stream");
}

// ---- perf -----------------------------------------------------------------

void DeclarePerf(FlagSet* f) {
  f->Value("model", "model name", "", true);
  f->Value("version", "model version (default: the server's choice)");
  f->Value("concurrency", "concurrent closed-loop workers", "1");
  f->Value("duration", "measured seconds", "10");
  f->Value("warmup", "unmeasured seconds before measuring", "1");
  f->Value("batch", "sequences per request (unary mode)", "1");
  f->Value("seq", "steps T of generated inputs", "32");
  f->Value("vocab", "token models: ids drawn from [0, V) (not in the metadata)",
           "2");
  f->Value("input", ".npy whose rows are sent instead of random data");
  f->Switch("streams",
            "run whole sequences through ModelStreamInfer in chunks");
  f->Value("chunk", "steps per chunk with --streams", "8");
  f->Value("seed", "random seed of generated inputs", "1");
  f->Switch("json", "print one JSON line instead of text");
  CommonFlags(f);
}

int RunPerfCommand(const FlagSet& f, InferenceClient* client) {
  PerfOptions o;
  o.model = f.Get("model");
  o.version = f.Get("version");
  auto concurrency = f.GetInt("concurrency", 1, 4096);
  auto duration = f.GetDouble("duration", 1e-3, 1e6);
  auto warmup = f.GetDouble("warmup", 0, 1e6);
  auto batch = f.GetInt("batch", 1, 1 << 20);
  auto seq = f.GetInt("seq", 1, 1 << 24);
  auto vocab = f.GetInt("vocab", 1, std::numeric_limits<int32_t>::max());
  auto chunk = f.GetInt("chunk", 1, 1 << 24);
  auto seed = f.GetInt("seed", 0, std::numeric_limits<int64_t>::max());
  for (const Status* s : {&concurrency.status(), &duration.status(),
                          &warmup.status(), &batch.status(), &seq.status(),
                          &vocab.status(), &chunk.status(), &seed.status()}) {
    if (!s->ok()) return Usage("perf", s->message());
  }
  o.concurrency = static_cast<int>(*concurrency);
  o.duration_s = *duration;
  o.warmup_s = *warmup;
  o.batch = *batch;
  o.steps = *seq;
  o.vocab = *vocab;
  o.streams = f.On("streams");
  o.chunk_steps = *chunk;
  o.seed = static_cast<uint64_t>(*seed);
  if (f.Given("input")) {
    auto input = ReadNpy(f.Get("input"));
    if (!input.ok()) return Fail("perf", input.status());
    o.input = std::move(*input);
  }
  auto report = RunPerf(client, o);
  if (!report.ok()) return Fail("perf", report.status());
  std::cout << (f.On("json") ? FormatPerfJson(*report) + "\n"
                             : FormatPerfText(*report));
  // Every request failing means nothing was measured.
  return report->errors > 0 && report->errors == report->requests ? kExitFailure
                                                                  : kExitOk;
}

// ---- recalibrate ----------------------------------------------------------

void DeclareRecalibrate(FlagSet* f) {
  f->Value("model", "model name", "", true);
  f->Value("version", "model version (default: every version served)");
  // Recalibration re-runs the reservoir's sequences through the f32 model on
  // the server: longer than one request.
  CommonFlags(f, "120000");
}

int RunRecalibrate(const FlagSet& f, InferenceClient* client) {
  const std::string model = f.Get("model");
  auto used = client->Recalibrate(model, f.Get("version"));
  if (!used.ok()) return Fail("recalibrate", used.status());
  std::cout << "recalibrated " << model << " on " << *used
            << " live sequences\n";
  return kExitOk;
}

const Command kCommands[] = {
    {"health", "grpc.health.v1 check; exit 0 only when SERVING", DeclareHealth,
     RunHealth},
    {"models", "list models with version, state and tensor metadata",
     DeclareModels, RunModels},
    {"infer", "run one .npy through ModelInfer", DeclareInfer, RunInfer},
    {"stream", "stream one sequence through ModelStreamInfer in chunks",
     DeclareStream, RunStream},
    {"perf", "closed-loop load generator", DeclarePerf, RunPerfCommand},
    {"recalibrate",
     "recompute a model's int8 ranges from the server's reservoir of recent "
     "live inputs and swap it in",
     DeclareRecalibrate, RunRecalibrate},
};

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return kExitUsage;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    std::cout << kUsage;
    return kExitOk;
  }
  const Command* command = nullptr;
  for (const Command& c : kCommands) {
    if (name == c.name) command = &c;
  }
  if (!command) {
    std::cerr << "rnnserve-client: unknown command '" << name << "'\n"
              << kUsage;
    return kExitUsage;
  }
  FlagSet flags;
  command->declare(&flags);
  const std::vector<std::string> args(argv + 2, argv + argc);
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout << "usage: rnnserve-client " << name << " [flags]\n"
                << command->summary << "\n\nflags:\n"
                << flags.Help();
      return kExitOk;
    }
  }
  if (Status s = flags.Parse(args); !s.ok()) return Usage(name, s.message());

  InferenceClient::Options options;
  options.address = flags.Get("address");
  auto timeout =
      flags.GetInt("timeout-ms", 0, std::numeric_limits<int32_t>::max());
  if (!timeout.ok()) return Usage(name, timeout.status().message());
  options.timeout = std::chrono::milliseconds(*timeout);
  options.tls_root_ca_file = flags.Get("tls-ca");
  options.tls_cert_file = flags.Get("tls-cert");
  options.tls_key_file = flags.Get("tls-key");
  options.tls_server_name_override = flags.Get("tls-server-name");
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return Usage(name, "--tls-cert and --tls-key go together");
  }
  auto client = InferenceClient::Create(options);
  if (!client.ok()) return Fail(name, client.status());
  return command->run(flags, client->get());
}

}  // namespace
}  // namespace rnnserve::client

int main(int argc, char** argv) { return rnnserve::client::Main(argc, argv); }
