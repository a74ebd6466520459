// rnnserve-client, every subcommand, against the real rnnserve binary serving
// the demo model (charlm). Outputs are checked against PyTorch's f32 logits
// (tests/testdata/demo/expected_logits.npy) within the int8 tolerance of the
// engine's golden tests, and streaming against a whole-sequence ModelInfer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <regex>

#include "server/common/npy.h"
#include "tests/integration/server_process.h"

namespace rnnserve {
namespace {

namespace fs = std::filesystem;
using ::rnnserve::testing::ClientBinary;
using ::rnnserve::testing::CommandResult;
using ::rnnserve::testing::RunCommand;
using ::rnnserve::testing::ServerProcess;

const std::string kDemoRepository =
    std::string(RNNSERVE_SOURCE_DIR) + "/deploy/model-repository";
const std::string kDemoData = std::string(RNNSERVE_TESTDATA) + "/demo";

// A repository under `dir` holding the demo charlm (weights, calibration set
// and vocabulary of deploy/model-repository) with the demo's config but its
// own batching and drift settings.
std::string CharlmRepository(const std::string& dir, const std::string& batching,
                             const std::string& drift) {
  const std::string repo = dir + "/repository";
  fs::create_directories(repo + "/charlm/1");
  for (const char* f : {"1/model.onnx", "1/calibration.npy", "vocab.json"}) {
    fs::copy_file(kDemoRepository + "/charlm/" + f, repo + "/charlm/" + f);
  }
  std::ofstream(repo + "/charlm/config.yaml")
      << "name: charlm\n"
         "inputs:\n"
         "  - {name: tokens, dtype: INT64, dims: [-1, -1]}\n"
         "outputs:\n"
         "  - {name: logits, dtype: FP32, dims: [-1, -1, 97]}\n"
         "precision: int8\n"
         "calibration: {method: minmax, file: calibration.npy, per_channel: true}\n"
         "version_policy: {latest: {num_versions: 1}}\n"
         "max_sequence_length: 1024\n"
         "batching: " << batching << "\n"
         "drift: " << drift << "\n";
  return repo;
}

NpyArray MustRead(const std::string& path) {
  auto a = ReadNpy(path);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  return a.ok() ? *a : NpyArray();
}

// Rows [0, rows) of an int64 [N, T] array; with drop_batch, [T] for one row.
NpyArray FirstRows(const NpyArray& a, int64_t rows, bool drop_batch = false) {
  const std::vector<int64_t> all = a.ToInt64();
  const int64_t t = a.shape[1];
  std::vector<int64_t> v(all.begin(), all.begin() + rows * t);
  if (drop_batch) return NpyArray::FromInt64({t}, v);
  return NpyArray::FromInt64({rows, t}, v);
}

// A temporary directory removed at the end of the test suite.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        fs::temp_directory_path().string() + "/rnnserve-client-test-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    path_ = mkdtemp(buf.data()) ? buf.data() : "";
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) fs::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The server processes are shared by all tests of the suite: loading and
// calibrating charlm is the slow part.
class ClientCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    ASSERT_FALSE(tmp_->path().empty());
    // The demo's charlm with sequence (stateful) batching.
    const std::string seq_repo =
        CharlmRepository(tmp_->path(), "{kind: sequence, max_batch_size: 16}",
                         "{sample_rate: 0.01, action: alert}");

    auto demo = ServerProcess::StartWithRepository(kDemoRepository);
    ASSERT_TRUE(demo.ok()) << demo.status().ToString();
    demo_ = new ServerProcess(std::move(*demo));
    auto seq = ServerProcess::StartWithRepository(seq_repo);
    ASSERT_TRUE(seq.ok()) << seq.status().ToString();
    sequence_ = new ServerProcess(std::move(*seq));
  }

  static void TearDownTestSuite() {
    for (ServerProcess** s : {&demo_, &sequence_}) {
      if (*s) {
        auto code = (*s)->Stop();
        EXPECT_TRUE(code.ok() && *code == 0)
            << "server exit " << (code.ok() ? *code : -1) << "\n"
            << (*s)->LogTail();
        delete *s;
        *s = nullptr;
      }
    }
    delete tmp_;
    tmp_ = nullptr;
  }

  void SetUp() override {
    if (!demo_ || !sequence_)
      GTEST_SKIP() << "servers did not start (see the suite set-up)";
  }

  static std::string Path(const std::string& name) {
    return tmp_->path() + "/" + name;
  }

  // Runs `rnnserve-client command --address <server> args...`.
  static CommandResult Client(const std::string& command,
                              const ServerProcess& server,
                              std::vector<std::string> args) {
    std::vector<std::string> argv = {ClientBinary(), command, "--address",
                                     server.address()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = RunCommand(argv, std::chrono::seconds(120));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : CommandResult{};
  }

  static TempDir* tmp_;
  static ServerProcess* demo_;  // deploy/model-repository (dynamic batching)
  static ServerProcess* sequence_;  // the same model with sequence batching
};

TempDir* ClientCliTest::tmp_ = nullptr;
ServerProcess* ClientCliTest::demo_ = nullptr;
ServerProcess* ClientCliTest::sequence_ = nullptr;

// Runs argv as is (no --address added).
CommandResult RunArgv(const std::vector<std::string>& argv) {
  auto r = RunCommand(argv, std::chrono::seconds(120));
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : CommandResult{};
}

std::string Describe(const CommandResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out +
         "\nstderr:\n" + r.err;
}

TEST_F(ClientCliTest, HealthSaysServing) {
  const CommandResult r = Client("health", *demo_, {});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "SERVING\n");
}

TEST_F(ClientCliTest, HealthOfOneModelAndOfAnUnknownService) {
  const CommandResult model = Client("health", *demo_, {"--service", "charlm"});
  EXPECT_EQ(model.exit_code, 0) << Describe(model);
  EXPECT_EQ(model.out, "SERVING\n");
  const CommandResult unknown = Client("health", *demo_, {"--service", "nope"});
  EXPECT_EQ(unknown.exit_code, 1) << Describe(unknown);
  EXPECT_NE(unknown.err.find("NOT_FOUND"), std::string::npos)
      << Describe(unknown);
}

TEST_F(ClientCliTest, HealthFailsWithoutAServer) {
  const CommandResult r = RunArgv({ClientBinary(), "health", "--address",
                                   "127.0.0.1:1", "--timeout-ms", "2000"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_NE(r.err.find("UNAVAILABLE"), std::string::npos) << Describe(r);
}

TEST_F(ClientCliTest, ModelsListsCharlmReadyWithItsTensors) {
  const CommandResult r = Client("models", *demo_, {});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_NE(r.out.find("charlm version 1 READY\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  input  tokens INT64 [-1, -1]\n"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("  output logits FP32 [-1, -1, 97]\n"),
            std::string::npos)
      << r.out;
}

TEST_F(ClientCliTest, InferMatchesPyTorchWithinInt8Tolerance) {
  const NpyArray expected =
      MustRead(kDemoData + "/expected_logits.npy");  // [8, 64, 97]
  ASSERT_EQ(expected.shape, (std::vector<int64_t>{8, 64, 97}));
  const NpyArray tokens =
      FirstRows(MustRead(kDemoData + "/heldout_tokens.npy"), 8);
  ASSERT_TRUE(WriteNpy(Path("infer_in.npy"), tokens).ok());
  const CommandResult r =
      Client("infer", *demo_,
             {"--model", "charlm", "--input", Path("infer_in.npy"), "--output",
              Path("infer_out.npy")});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_NE(r.out.find("output logits FP32 [8, 64, 97]"), std::string::npos)
      << r.out;
  const NpyArray got = MustRead(Path("infer_out.npy"));
  ASSERT_EQ(got.dtype, NpyDtype::kFloat32);
  ASSERT_EQ(got.shape, expected.shape);
  // The int8 bound of tests/engine/onednn_golden_test.cc: max |d| within 6%
  // and mean |d| within 1.2% of the output range.
  double max_d = 0, sum_d = 0, lo = expected.f32()[0], hi = lo;
  int64_t top1_agree = 0;
  for (int64_t i = 0; i < expected.size(); ++i) {
    const double d =
        std::fabs(static_cast<double>(got.f32()[i]) - expected.f32()[i]);
    max_d = std::max(max_d, d);
    sum_d += d;
    lo = std::min<double>(lo, expected.f32()[i]);
    hi = std::max<double>(hi, expected.f32()[i]);
  }
  for (int64_t p = 0; p < 8 * 64; ++p) {
    const float* a = got.f32() + p * 97;
    const float* b = expected.f32() + p * 97;
    top1_agree +=
        (std::max_element(a, a + 97) - a) == (std::max_element(b, b + 97) - b);
  }
  const double range = std::max(1.0, hi - lo);
  const double mean_d = sum_d / static_cast<double>(expected.size());
  std::cout << "infer vs PyTorch f32: max |d| " << max_d << ", mean |d| "
            << mean_d << ", top-1 agreement " << top1_agree << "/512\n";
  EXPECT_LE(max_d, 0.06 * range);
  EXPECT_LE(mean_d, 0.012 * range);
}

TEST_F(ClientCliTest, UnknownModelIsNotFound) {
  ASSERT_TRUE(
      WriteNpy(Path("one.npy"), NpyArray::FromInt64({1, 3}, {1, 2, 3})).ok());
  const CommandResult r =
      Client("infer", *demo_, {"--model", "nope", "--input", Path("one.npy")});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_NE(r.err.find("NOT_FOUND"), std::string::npos) << Describe(r);
  EXPECT_NE(r.err.find("nope"), std::string::npos) << Describe(r);
}

TEST_F(ClientCliTest, BadUsageExitsTwo) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {ClientBinary()},
           {ClientBinary(), "frobnicate"},
           {ClientBinary(), "infer", "--model", "charlm"},
           {ClientBinary(), "stream", "--model", "charlm", "--input", "x.npy",
            "--chunk", "0"},
           {ClientBinary(), "perf", "--model", "charlm", "--concurrency",
            "many"}}) {
    const CommandResult r = RunArgv(args);
    EXPECT_EQ(r.exit_code, 2) << args.back() << "\n" << Describe(r);
    EXPECT_FALSE(r.err.empty());
  }
  const CommandResult help = RunArgv({ClientBinary(), "perf", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--concurrency"), std::string::npos) << help.out;
}

TEST_F(ClientCliTest, StreamInChunksEqualsWholeSequenceInference) {
  const NpyArray heldout = MustRead(kDemoData + "/heldout_tokens.npy");
  // One sequence of 64 steps, written as [T] (the CLI adds the batch axis).
  ASSERT_TRUE(
      WriteNpy(Path("seq.npy"), FirstRows(heldout, 1, /*drop_batch=*/true))
          .ok());
  ASSERT_TRUE(WriteNpy(Path("seq_batch.npy"), FirstRows(heldout, 1)).ok());
  const CommandResult whole =
      Client("infer", *demo_,
             {"--model", "charlm", "--input", Path("seq_batch.npy"), "--output",
              Path("whole.npy")});
  ASSERT_EQ(whole.exit_code, 0) << Describe(whole);
  const NpyArray want = MustRead(Path("whole.npy"));
  ASSERT_EQ(want.shape, (std::vector<int64_t>{1, 64, 97}));

  for (const char* chunk : {"5", "16", "64"}) {  // 5 leaves a short last chunk
    const std::string out = Path(std::string("stream_") + chunk + ".npy");
    const CommandResult r = Client(
        "stream", *sequence_,
        {"--model", "charlm", "--input", Path("seq.npy"), "--chunk", chunk,
         "--output", out, "--sequence-id", std::string("7") + chunk});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    const NpyArray got = MustRead(out);
    ASSERT_EQ(got.shape, want.shape) << chunk;
    double max_d = 0;
    for (int64_t i = 0; i < want.size(); ++i) {
      max_d = std::max(
          max_d, std::fabs(static_cast<double>(got.f32()[i]) - want.f32()[i]));
    }
    std::cout << "stream --chunk " << chunk << " vs infer: max |d| " << max_d
              << "\n";
    EXPECT_LE(max_d, 1e-4) << "chunk " << chunk;
  }
}

TEST_F(ClientCliTest, StreamChunkErrorNamesTheChunk) {
  std::vector<int64_t> ids(20, 5);
  ids[13] = 500;  // outside the vocabulary, in chunk 2 of 4 (steps 12..18)
  ASSERT_TRUE(
      WriteNpy(Path("bad_seq.npy"), NpyArray::FromInt64({1, 20}, ids)).ok());
  const CommandResult r = Client(
      "stream", *sequence_,
      {"--model", "charlm", "--input", Path("bad_seq.npy"), "--chunk", "6"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_NE(r.err.find("chunk 2 of 4 (steps 12..18)"), std::string::npos)
      << Describe(r);
  std::cout << r.err;
}

// The JSON line's keys and values, numbers only ("errors_by_code" is
// checked separately).
std::map<std::string, double> JsonNumbers(const std::string& line) {
  std::map<std::string, double> values;
  const std::regex pair("\"([a-z0-9_]+)\": (-?[0-9.eE+]+|null)");
  for (auto it = std::sregex_iterator(line.begin(), line.end(), pair);
       it != std::sregex_iterator(); ++it) {
    values[(*it)[1]] = (*it)[2] == "null" ? NAN : std::stod((*it)[2]);
  }
  return values;
}

void ExpectPerfJson(const CommandResult& r, int concurrency) {
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  ASSERT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  const auto v = JsonNumbers(r.out);
  for (const char* key :
       {"throughput_infer_per_s", "throughput_seq_per_s", "p50_ms", "p90_ms",
        "p99_ms", "max_ms", "requests", "errors", "mean_batch_size",
        "concurrency", "duration_s"}) {
    EXPECT_EQ(v.count(key), 1u) << key << " missing in " << r.out;
  }
  EXPECT_NE(r.out.find("\"errors_by_code\": {}"), std::string::npos) << r.out;
  EXPECT_GT(v.at("requests"), 0) << r.out;
  EXPECT_EQ(v.at("errors"), 0) << r.out;
  EXPECT_GT(v.at("throughput_infer_per_s"), 0) << r.out;
  EXPECT_LE(v.at("p50_ms"), v.at("p99_ms")) << r.out;
  EXPECT_LE(v.at("p99_ms"), v.at("max_ms")) << r.out;
  EXPECT_GE(v.at("mean_batch_size"), 1.0)
      << r.out;  // the server sends batch_size
  EXPECT_EQ(v.at("concurrency"), concurrency) << r.out;
}

TEST_F(ClientCliTest, PerfJsonUnary) {
  const CommandResult r = Client(
      "perf", *demo_,
      {"--model", "charlm", "--concurrency", "3", "--duration", "2", "--warmup",
       "0.5", "--batch", "2", "--seq", "16", "--vocab", "97", "--json"});
  ExpectPerfJson(r, 3);
}

TEST_F(ClientCliTest, PerfJsonFromAnInputFile) {
  ASSERT_TRUE(
      WriteNpy(Path("perf_in.npy"),
               FirstRows(MustRead(kDemoData + "/heldout_tokens.npy"), 16))
          .ok());
  const CommandResult r =
      Client("perf", *demo_,
             {"--model", "charlm", "--concurrency", "2", "--duration", "1",
              "--warmup", "0.2", "--input", Path("perf_in.npy"), "--json"});
  ExpectPerfJson(r, 2);
}

TEST_F(ClientCliTest, PerfJsonStreams) {
  const CommandResult r =
      Client("perf", *sequence_,
             {"--model", "charlm", "--concurrency", "2", "--duration", "2",
              "--warmup", "0.5", "--streams", "--chunk", "8", "--seq", "32",
              "--vocab", "97", "--json"});
  ExpectPerfJson(r, 2);
  const auto v = JsonNumbers(r.out);
  // 32 steps in chunks of 8: four chunk answers per sequence.
  EXPECT_NEAR(v.at("throughput_infer_per_s"), 4 * v.at("throughput_seq_per_s"),
              1e-3)
      << r.out;
}

TEST_F(ClientCliTest, PerfTextReport) {
  const CommandResult r =
      Client("perf", *demo_,
             {"--model", "charlm", "--duration", "0.5", "--warmup", "0.1"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  for (const char* line :
       {"mode unary, concurrency 1", "requests ", "throughput ",
        "latency ms: p50 ", "mean server batch size "}) {
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << r.out;
  }
}

// Mutual TLS: a throw-away CA signs the server's certificate (for
// 127.0.0.1 and localhost) and the client's.
TEST(ClientTlsTest, HealthAndInferOverMutualTls) {
  const std::string openssl = "/usr/bin/openssl";
  if (access(openssl.c_str(), X_OK) != 0) GTEST_SKIP() << "no " << openssl;
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  auto at = [&](const std::string& f) { return dir.path() + "/" + f; };
  std::ofstream(at("san.cnf")) << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
  const std::vector<std::vector<std::string>> steps = {
      {openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
       at("ca.key"), "-out", at("ca.pem"), "-days", "2", "-subj",
       "/CN=rnnserve-test-ca"},
      {openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout",
       at("server.key"), "-out", at("server.csr"), "-subj", "/CN=localhost"},
      {openssl, "x509", "-req", "-in", at("server.csr"), "-CA", at("ca.pem"),
       "-CAkey", at("ca.key"), "-CAcreateserial", "-out", at("server.pem"),
       "-days", "2", "-extfile", at("san.cnf")},
      {openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout",
       at("client.key"), "-out", at("client.csr"), "-subj",
       "/CN=rnnserve-test-client"},
      {openssl, "x509", "-req", "-in", at("client.csr"), "-CA", at("ca.pem"),
       "-CAkey", at("ca.key"), "-CAcreateserial", "-out", at("client.pem"),
       "-days", "2"},
  };
  for (const auto& step : steps) {
    const CommandResult r = RunArgv(step);
    ASSERT_EQ(r.exit_code, 0) << step[1] << "\n" << Describe(r);
  }
  auto read = [&](const std::string& f) {
    std::ifstream in(at(f));
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  ServerProcess::Options options;
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = read("ca.pem");
  ssl.pem_cert_chain = read("client.pem");
  ssl.pem_private_key = read("client.key");
  options.credentials = grpc::SslCredentials(ssl);
  auto server = ServerProcess::StartWithRepository(
      kDemoRepository,
      {"--tls-cert", at("server.pem"), "--tls-key", at("server.key"),
       "--tls-client-ca", at("ca.pem")},
      options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::vector<std::string> tls = {"--tls-ca",   at("ca.pem"),
                                        "--tls-cert", at("client.pem"),
                                        "--tls-key",  at("client.key")};
  std::vector<std::string> health = {ClientBinary(), "health", "--address",
                                     server->address()};
  health.insert(health.end(), tls.begin(), tls.end());
  CommandResult r = RunArgv(health);
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "SERVING\n");

  ASSERT_TRUE(
      WriteNpy(at("x.npy"), NpyArray::FromInt64({1, 4}, {40, 41, 42, 43}))
          .ok());
  std::vector<std::string> infer = {
      ClientBinary(),      "infer",
      "--address",         "localhost:" + std::to_string(server->port()),
      "--model",           "charlm",
      "--input",           at("x.npy"),
      "--tls-server-name", "localhost"};
  infer.insert(infer.end(), tls.begin(), tls.end());
  r = RunArgv(infer);
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_NE(r.out.find("output logits FP32 [1, 4, 97]"), std::string::npos)
      << r.out;

  // Without a client certificate the handshake fails.
  r = RunArgv({ClientBinary(), "health", "--address", server->address(),
               "--tls-ca", at("ca.pem"), "--timeout-ms", "3000"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  // Without TLS at all, too.
  r = RunArgv({ClientBinary(), "health", "--address", server->address(),
               "--timeout-ms", "3000"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
}

// rnnserve-client recalibrate: refused while the reservoir is empty, then
// computed from exactly the sequences the test sent since the last
// recalibration, the model serving throughout.
TEST(ClientRecalibrateTest, RecalibratesOnTheLiveSequencesSent) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  // Dynamic batching, keeping up to 64 recent live input sequences for
  // recalibration (drift sampling stays off: every request feeds the
  // reservoir regardless).
  const std::string repo = CharlmRepository(
      dir.path(), "{kind: dynamic, max_batch_size: 64}", "{reservoir_size: 64}");
  auto server = ServerProcess::StartWithRepository(repo);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto client = [&](const std::string& command, std::vector<std::string> args) {
    std::vector<std::string> argv = {ClientBinary(), command, "--address",
                                     server->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunArgv(argv);
  };

  CommandResult r = client("recalibrate", {"--model", "charlm"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_NE(r.err.find("FAILED_PRECONDITION"), std::string::npos)
      << Describe(r);

  // Requests of one held-out sequence each (rows first..first+n-1): one
  // reservoir entry per request, all kept below its capacity of 64.
  const NpyArray heldout = MustRead(kDemoData + "/heldout_tokens.npy");
  const std::vector<int64_t> ids = heldout.ToInt64();
  const int64_t t = heldout.shape[1];
  auto send = [&](int first, int n) {
    for (int i = first; i < first + n; ++i) {
      const std::string path = dir.path() + "/row" + std::to_string(i) + ".npy";
      ASSERT_TRUE(WriteNpy(path, NpyArray::FromInt64(
                                     {1, t}, std::vector<int64_t>(
                                                 ids.begin() + i * t,
                                                 ids.begin() + (i + 1) * t)))
                      .ok());
      const CommandResult infer =
          client("infer", {"--model", "charlm", "--input", path});
      ASSERT_EQ(infer.exit_code, 0) << Describe(infer);
      EXPECT_NE(infer.out.find("output logits FP32 [1, " + std::to_string(t) +
                               ", 97]"),
                std::string::npos)
          << Describe(infer);
    }
  };
  // "recalibrated charlm on N live sequences" -> N, or -1.
  auto recalibrated_on = [](const CommandResult& result) -> int64_t {
    const std::regex done(R"(recalibrated charlm on (\d+) live sequences\n)");
    std::smatch m;
    if (!std::regex_match(result.out, m, done)) return -1;
    return std::stoll(m[1].str());
  };

  send(0, 10);
  r = client("recalibrate", {"--model", "charlm"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_GT(recalibrated_on(r), 0) << Describe(r);
  EXPECT_EQ(recalibrated_on(r), 10) << Describe(r);

  // The recalibrated model starts an empty reservoir (the next
  // recalibration sees only inputs from after this one), and serves.
  r = client("recalibrate", {"--model", "charlm", "--version", "1"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_NE(r.err.find("FAILED_PRECONDITION"), std::string::npos)
      << Describe(r);
  send(10, 3);
  r = client("recalibrate", {"--model", "charlm", "--version", "1"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(recalibrated_on(r), 3) << Describe(r);

  r = client("recalibrate", {"--model", "nope"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_NE(r.err.find("NOT_FOUND"), std::string::npos) << Describe(r);

  auto code = server->Stop();
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 0) << server->LogTail();
}

TEST(ServerProcessTest, AnEarlyExitFailsFastWithTheLogTail) {
  const auto start = std::chrono::steady_clock::now();
  auto server = ServerProcess::Start({"--no-such-flag"});
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("exited with code"),
            std::string::npos)
      << server.status().ToString();
  EXPECT_NE(server.status().message().find("no-such-flag"), std::string::npos)
      << server.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

TEST(ServerProcessTest, AMissingBinaryIsNotFound) {
  ServerProcess::Options options;
  options.binary = "/nonexistent/rnnserve";
  EXPECT_EQ(ServerProcess::Start({}, options).status().code(),
            StatusCode::kNotFound);
}

}  // namespace
}  // namespace rnnserve
