// Integration-test helpers: a temporary model repository built from the
// demo model and the PyTorch goldens, an in-process rnnserve Server on
// 127.0.0.1 port 0, and KServe V2 request builders. Header-only: each
// integration test file includes it (tests/integration is one binary).
#ifndef RNNSERVE_TESTS_INTEGRATION_TEST_SERVER_H_
#define RNNSERVE_TESTS_INTEGRATION_TEST_SERVER_H_

#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "proto/grpc_service.grpc.pb.h"
#include "server/common/npy.h"
#include "server/rpc/server.h"

namespace rnnserve::testing {

inline const std::string kSourceDir = RNNSERVE_SOURCE_DIR;
inline const std::string kCharlmDir =
    kSourceDir + "/deploy/model-repository/charlm";
inline const std::string kGoldensDir = std::string(RNNSERVE_TESTDATA) + "/goldens";
inline const std::string kDemoDir = std::string(RNNSERVE_TESTDATA) + "/demo";

// A model repository in a fresh temporary folder, removed at destruction.
class TempRepository {
 public:
  TempRepository() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp ? tmp : "/tmp") + "/rnnserve-repo-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    root_ = mkdtemp(buf.data());
  }
  ~TempRepository() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  TempRepository(const TempRepository&) = delete;
  TempRepository& operator=(const TempRepository&) = delete;

  const std::string& root() const { return root_; }

  // <root>/<name>/<version>/model.onnx (+ calibration.npy when given) and
  // <root>/<name>/config.yaml holding `config_yaml` (none when empty).
  void AddModel(const std::string& name, int version, const std::string& onnx,
                const std::string& calibration, const std::string& config_yaml) {
    namespace fs = std::filesystem;
    const std::string dir = root_ + "/" + name + "/" + std::to_string(version);
    fs::create_directories(dir);
    fs::copy_file(onnx, dir + "/model.onnx", fs::copy_options::overwrite_existing);
    if (!calibration.empty()) {
      fs::copy_file(calibration, dir + "/calibration.npy",
                    fs::copy_options::overwrite_existing);
    }
    if (!config_yaml.empty()) {
      std::ofstream(root_ + "/" + name + "/config.yaml") << config_yaml;
    }
  }

  // The demo char-LSTM (int8, calibrated) with `batching` as the config's
  // flow-style batching map, e.g. "{kind: dynamic, max_batch_size: 64}".
  void AddCharlm(const std::string& name, const std::string& batching,
                 const std::string& extra = "") {
    AddModel(name, 1, kCharlmDir + "/1/model.onnx",
             kCharlmDir + "/1/calibration.npy",
             "precision: int8\n"
             "calibration: {method: minmax, file: calibration.npy}\n"
             "max_sequence_length: 256\n"
             "batching: " + batching + "\n" + extra);
  }

 private:
  std::string root_;
};

// An in-process server on 127.0.0.1 port 0 with its start-up models loaded.
inline std::unique_ptr<rpc::Server> StartServer(
    const std::string& repository,
    const std::function<void(config::ServerConfig*)>& tweak = {},
    batching::Clock* clock = nullptr) {
  rpc::Server::Options options;
  options.config.model_repository = repository;
  options.config.grpc_address = "127.0.0.1:0";
  // No /metrics listener unless a test asks for one (server_metrics_test):
  // stopping prometheus-cpp's web server takes ~2 s.
  options.config.metrics_address = "";
  options.config.worker_threads = 2;
  options.config.intra_op_threads = 1;
  options.shutdown_grace = std::chrono::seconds(20);
  options.clock = clock;
  if (tweak) tweak(&options.config);
  auto server = rpc::Server::Create(options);
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  if (!server.ok()) return nullptr;
  (*server)->LoadModels();
  return std::move(server).value();
}

inline std::shared_ptr<grpc::Channel> Connect(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // the server's limits are under test
  args.SetMaxSendMessageSize(-1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   args);
}

// The demo's held-out token ids, [128, 64] int64.
inline std::vector<int64_t> HeldoutTokens(int64_t* rows, int64_t* cols) {
  auto npy = ReadNpy(kDemoDir + "/heldout_tokens.npy");
  EXPECT_TRUE(npy.ok()) << npy.status().ToString();
  *rows = npy->shape[0];
  *cols = npy->shape[1];
  return npy->ToInt64();
}

// Rows [first, first + n) of a [rows, cols] token matrix, first `t` steps.
inline std::vector<int64_t> TokenSlice(const std::vector<int64_t>& tokens,
                                       int64_t cols, int first, int n, int t) {
  std::vector<int64_t> out;
  for (int r = first; r < first + n; ++r) {
    out.insert(out.end(), tokens.begin() + r * cols,
               tokens.begin() + r * cols + t);
  }
  return out;
}

// A ModelInferRequest with INT64 token ids [n, t] as raw_input_contents.
inline inference::ModelInferRequest TokenRequest(
    const std::string& model, const std::vector<int64_t>& tokens, int n,
    int t, const std::string& input_name = "tokens") {
  inference::ModelInferRequest request;
  request.set_model_name(model);
  auto* input = request.add_inputs();
  input->set_name(input_name);
  input->set_datatype("INT64");
  input->add_shape(n);
  input->add_shape(t);
  request.add_raw_input_contents(
      std::string(reinterpret_cast<const char*>(tokens.data()),
                  tokens.size() * sizeof(int64_t)));
  return request;
}

// A ModelInferRequest with FP32 features [n, t, f] as raw_input_contents.
inline inference::ModelInferRequest FeatureRequest(
    const std::string& model, const std::string& input_name,
    const float* features, int n, int t, int f) {
  inference::ModelInferRequest request;
  request.set_model_name(model);
  auto* input = request.add_inputs();
  input->set_name(input_name);
  input->set_datatype("FP32");
  input->add_shape(n);
  input->add_shape(t);
  input->add_shape(f);
  request.add_raw_input_contents(std::string(
      reinterpret_cast<const char*>(features), sizeof(float) * n * t * f));
  return request;
}

inline void SetSequence(inference::ModelInferRequest* request, uint64_t id,
                        bool start, bool end) {
  auto& params = *request->mutable_parameters();
  params["sequence_id"].set_uint64_param(id);
  params["sequence_start"].set_bool_param(start);
  params["sequence_end"].set_bool_param(end);
}

// The output floats of a response (raw or typed).
inline std::vector<float> OutputFloats(const inference::ModelInferResponse& r) {
  if (r.raw_output_contents_size() > 0) {
    const std::string& raw = r.raw_output_contents(0);
    std::vector<float> out(raw.size() / sizeof(float));
    std::memcpy(out.data(), raw.data(), out.size() * sizeof(float));
    return out;
  }
  if (r.outputs_size() == 0) return {};
  const auto& c = r.outputs(0).contents().fp32_contents();
  return std::vector<float>(c.begin(), c.end());
}

inline int64_t Int64Param(const inference::ModelInferResponse& r,
                          const std::string& name) {
  auto it = r.parameters().find(name);
  return it == r.parameters().end() ? -1 : it->second.int64_param();
}

// The serving engine's own answer for tokens [n, t] on `model` (the oracle
// for what the server returns).
inline std::vector<float> EngineOutput(rpc::Server& server, const std::string& model,
                                       const std::vector<int64_t>& tokens, int n, int t) {
  auto scheduler = server.manager().Get(model);
  EXPECT_TRUE(scheduler.ok()) << scheduler.status().ToString();
  if (!scheduler.ok()) return {};
  engine::RunInput in;
  in.batch = n;
  in.steps = t;
  in.tokens = tokens.data();
  engine::RunOutput out;
  EXPECT_TRUE((*scheduler)->model_ptr()->serving_model->Run(in, &out).ok());
  return out.output;
}

inline double MaxAbsDiff(const std::vector<float>& a,
                         const std::vector<float>& b) {
  if (a.size() != b.size()) return 1e30;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, static_cast<double>(std::abs(a[i] - b[i])));
  }
  return m;
}

}  // namespace rnnserve::testing

#endif  // RNNSERVE_TESTS_INTEGRATION_TEST_SERVER_H_
