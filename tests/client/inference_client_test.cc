// InferenceClient and the load generator against an in-process fake server
// whose "toy" model is simple enough to compute here independently: for
// token ids x[n][t] it answers [N, T, 2] with (running sum of x since the
// sequence started, x). The running sum is the recurrent state, kept per
// sequence_id across requests, so streaming in chunks must reproduce the
// whole-sequence answer only if the client sets the sequence flags right.
#include "client/inference_client.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <thread>

#include "client/perf.h"
#include "proto/health.grpc.pb.h"

namespace rnnserve::client {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;

class FakeInferenceService final
    : public inference::GRPCInferenceService::Service {
 public:
  struct Seen {
    uint64_t sequence_id;
    bool start;
    bool end;
    int64_t steps;
  };

  grpc::Status ServerLive(grpc::ServerContext*,
                          const inference::ServerLiveRequest*,
                          inference::ServerLiveResponse* r) override {
    r->set_live(true);
    return grpc::Status::OK;
  }
  grpc::Status ServerReady(grpc::ServerContext*,
                           const inference::ServerReadyRequest*,
                           inference::ServerReadyResponse* r) override {
    r->set_ready(true);
    return grpc::Status::OK;
  }
  grpc::Status ModelReady(grpc::ServerContext*,
                          const inference::ModelReadyRequest* q,
                          inference::ModelReadyResponse* r) override {
    r->set_ready(q->name() == "toy");
    return grpc::Status::OK;
  }
  grpc::Status ServerMetadata(grpc::ServerContext*,
                              const inference::ServerMetadataRequest*,
                              inference::ServerMetadataResponse* r) override {
    r->set_name("fake");
    r->set_version("0.0");
    return grpc::Status::OK;
  }
  grpc::Status ModelMetadata(grpc::ServerContext*,
                             const inference::ModelMetadataRequest* q,
                             inference::ModelMetadataResponse* r) override {
    if (q->name() != "toy") return NotFound(q->name());
    r->set_name("toy");
    r->add_versions("1");
    auto* in = r->add_inputs();
    in->set_name("tokens");
    in->set_datatype("INT64");
    in->add_shape(-1);
    in->add_shape(-1);
    auto* out = r->add_outputs();
    out->set_name("sums");
    out->set_datatype("FP32");
    for (int64_t d : {-1, -1, 2}) out->add_shape(d);
    return grpc::Status::OK;
  }
  grpc::Status RepositoryIndex(grpc::ServerContext*,
                               const inference::RepositoryIndexRequest*,
                               inference::RepositoryIndexResponse* r) override {
    auto* a = r->add_models();
    a->set_name("toy");
    a->set_version("1");
    a->set_state("READY");
    auto* b = r->add_models();
    b->set_name("broken");
    b->set_version("1");
    b->set_state("UNAVAILABLE");
    b->set_reason("bad onnx");
    return grpc::Status::OK;
  }
  grpc::Status RepositoryModelLoad(
      grpc::ServerContext*, const inference::RepositoryModelLoadRequest* q,
      inference::RepositoryModelLoadResponse*) override {
    if (q->model_name() != "toy") return NotFound(q->model_name());
    std::lock_guard<std::mutex> lock(mu_);
    loads_.push_back(q->model_name());
    return grpc::Status::OK;
  }
  grpc::Status RepositoryModelUnload(
      grpc::ServerContext*, const inference::RepositoryModelUnloadRequest* q,
      inference::RepositoryModelUnloadResponse*) override {
    if (q->model_name() != "toy") return NotFound(q->model_name());
    return grpc::Status::OK;
  }
  grpc::Status ModelInfer(grpc::ServerContext*, const ModelInferRequest* q,
                          ModelInferResponse* r) override {
    if (q->id() == "slow")
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    return Run(*q, r);
  }
  grpc::Status ModelStreamInfer(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<inference::ModelStreamInferResponse,
                               ModelInferRequest>* stream) override {
    ModelInferRequest q;
    while (stream->Read(&q)) {
      inference::ModelStreamInferResponse r;
      grpc::Status s = Run(q, r.mutable_infer_response());
      if (!s.ok()) {
        r.Clear();
        r.set_error_message(
            std::string(s.error_code() == grpc::StatusCode::NOT_FOUND
                            ? "NOT_FOUND: "
                            : "INVALID_ARGUMENT: ") +
            s.error_message());
      }
      if (!stream->Write(r)) break;
    }
    return grpc::Status::OK;
  }

  std::vector<Seen> seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }
  std::vector<std::string> loads() {
    std::lock_guard<std::mutex> lock(mu_);
    return loads_;
  }

 private:
  static grpc::Status NotFound(const std::string& name) {
    return {grpc::StatusCode::NOT_FOUND, "model '" + name + "' is not known"};
  }

  grpc::Status Run(const ModelInferRequest& q, ModelInferResponse* r) {
    if (q.model_name() != "toy") return NotFound(q.model_name());
    if (q.inputs_size() != 1 || q.inputs(0).name() != "tokens" ||
        q.inputs(0).datatype() != "INT64" || q.inputs(0).shape_size() != 2) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              "inputs[0]: want tokens INT64 [N, T]"};
    }
    const int64_t n = q.inputs(0).shape(0), t = q.inputs(0).shape(1);
    std::vector<int64_t> x(static_cast<size_t>(n * t));
    const bool raw = q.raw_input_contents_size() == 1;
    if (raw) {
      if (q.raw_input_contents(0).size() != x.size() * 8) {
        return {grpc::StatusCode::INVALID_ARGUMENT,
                "raw_input_contents: wrong size"};
      }
      std::memcpy(x.data(), q.raw_input_contents(0).data(), x.size() * 8);
    } else {
      const auto& c = q.inputs(0).contents().int64_contents();
      if (static_cast<size_t>(c.size()) != x.size()) {
        return {grpc::StatusCode::INVALID_ARGUMENT, "contents: wrong size"};
      }
      std::copy(c.begin(), c.end(), x.begin());
    }
    for (size_t i = 0; i < x.size(); ++i) {
      if (x[i] < 0) {
        return {grpc::StatusCode::INVALID_ARGUMENT,
                "inputs[0] element " + std::to_string(i) + ": token id " +
                    std::to_string(x[i]) + " outside [0, 100)"};
      }
    }
    uint64_t sequence_id = 0;
    bool start = false, end = false;
    const auto& p = q.parameters();
    if (auto it = p.find("sequence_id"); it != p.end())
      sequence_id = it->second.int64_param();
    if (auto it = p.find("sequence_start"); it != p.end())
      start = it->second.bool_param();
    if (auto it = p.find("sequence_end"); it != p.end())
      end = it->second.bool_param();

    std::vector<float> out(static_cast<size_t>(n * t * 2));
    {
      std::lock_guard<std::mutex> lock(mu_);
      seen_.push_back({sequence_id, start, end, t});
      for (int64_t row = 0; row < n; ++row) {
        double sum = 0;
        if (sequence_id != 0 && !start) sum = state_[sequence_id];
        for (int64_t s = 0; s < t; ++s) {
          sum += static_cast<double>(x[row * t + s]);
          out[(row * t + s) * 2] = static_cast<float>(sum);
          out[(row * t + s) * 2 + 1] = static_cast<float>(x[row * t + s]);
        }
        if (sequence_id != 0) state_[sequence_id] = sum;
      }
      if (end) state_.erase(sequence_id);
    }
    r->set_model_name("toy");
    r->set_model_version("1");
    r->set_id(q.id());
    (*r->mutable_parameters())["batch_size"].set_int64_param(n);
    auto* o = r->add_outputs();
    o->set_name("sums");
    o->set_datatype("FP32");
    for (int64_t d : {n, t, int64_t{2}}) o->add_shape(d);
    if (raw) {
      r->add_raw_output_contents(reinterpret_cast<const char*>(out.data()),
                                 out.size() * 4);
    } else {
      for (float v : out) o->mutable_contents()->add_fp32_contents(v);
    }
    return grpc::Status::OK;
  }

  std::mutex mu_;
  std::map<uint64_t, double> state_;
  std::vector<Seen> seen_;
  std::vector<std::string> loads_;
};

class FakeHealthService final : public grpc::health::v1::Health::Service {
 public:
  grpc::Status Check(grpc::ServerContext*,
                     const grpc::health::v1::HealthCheckRequest* q,
                     grpc::health::v1::HealthCheckResponse* r) override {
    if (q->service().empty()) {
      r->set_status(grpc::health::v1::HealthCheckResponse::SERVING);
    } else if (q->service() == "down") {
      r->set_status(grpc::health::v1::HealthCheckResponse::NOT_SERVING);
    } else {
      return {grpc::StatusCode::NOT_FOUND, "unknown service"};
    }
    return grpc::Status::OK;
  }
};

class InferenceClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service_);
    builder.RegisterService(&health_);
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_);
    ASSERT_GT(port, 0);
    options_.address = "127.0.0.1:" + std::to_string(port);
    auto client = InferenceClient::Create(options_);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
  }
  void TearDown() override {
    if (server_)
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::seconds(5));
  }

  // The oracle: running sums of each row of x [N, T] -> [N, T, 2].
  static std::vector<float> Expected(const std::vector<int64_t>& x, int64_t n,
                                     int64_t t) {
    std::vector<float> out;
    for (int64_t row = 0; row < n; ++row) {
      double sum = 0;
      for (int64_t s = 0; s < t; ++s) {
        sum += static_cast<double>(x[row * t + s]);
        out.push_back(static_cast<float>(sum));
        out.push_back(static_cast<float>(x[row * t + s]));
      }
    }
    return out;
  }

  FakeInferenceService service_;
  FakeHealthService health_;
  std::unique_ptr<grpc::Server> server_;
  InferenceClient::Options options_;
  std::unique_ptr<InferenceClient> client_;
};

TEST_F(InferenceClientTest, ProbesAndMetadata) {
  EXPECT_TRUE(*client_->ServerLive());
  EXPECT_TRUE(*client_->ServerReady());
  EXPECT_TRUE(*client_->ModelReady("toy"));
  EXPECT_FALSE(*client_->ModelReady("other", "3"));
  EXPECT_EQ(*client_->Health(), HealthStatus::kServing);
  EXPECT_EQ(*client_->Health("down"), HealthStatus::kNotServing);
  EXPECT_EQ(client_->Health("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(client_->ServerMetadata()->name(), "fake");
  auto md = client_->ModelMetadata("toy");
  ASSERT_TRUE(md.ok());
  EXPECT_EQ(md->inputs(0).name(), "tokens");
  const Status missing = client_->ModelMetadata("nope").status();
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), "model 'nope' is not known");
}

TEST_F(InferenceClientTest, RepositoryIndexLoadAndUnload) {
  auto index = client_->RepositoryIndex();
  ASSERT_TRUE(index.ok());
  ASSERT_EQ(index->size(), 2u);
  EXPECT_EQ((*index)[0].name, "toy");
  EXPECT_EQ((*index)[0].state, "READY");
  EXPECT_EQ((*index)[1].reason, "bad onnx");
  EXPECT_TRUE(client_->LoadModel("toy").ok());
  EXPECT_EQ(service_.loads(), std::vector<std::string>{"toy"});
  EXPECT_TRUE(client_->UnloadModel("toy").ok());
  EXPECT_EQ(client_->LoadModel("nope").code(), StatusCode::kNotFound);
}

TEST_F(InferenceClientTest, InferSendsRawTensorsAndReadsTheAnswer) {
  const std::vector<int64_t> x = {1, 2, 3, 10, 20, 30};
  InferRequest q;
  q.model = "toy";
  q.id = "req-7";
  q.input = NpyArray::FromInt64({2, 3}, x);
  auto r = client_->Infer(q);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->id, "req-7");
  EXPECT_EQ(r->output_name, "sums");
  EXPECT_EQ(r->shape, (std::vector<int64_t>{2, 3, 2}));
  EXPECT_EQ(r->data, Expected(x, 2, 3));
  EXPECT_EQ(r->batch_size(), 2);
  EXPECT_EQ(service_.seen().back().sequence_id, 0u);  // no sequence parameters
}

TEST_F(InferenceClientTest, TypedOutputsAreReadToo) {
  ModelInferResponse response;
  response.add_outputs()->set_name("y");
  response.mutable_outputs(0)->set_datatype("FP32");
  response.mutable_outputs(0)->add_shape(1);
  response.mutable_outputs(0)->add_shape(2);
  response.mutable_outputs(0)->mutable_contents()->add_fp32_contents(1.5f);
  response.mutable_outputs(0)->mutable_contents()->add_fp32_contents(-2.0f);
  auto r = ParseInferResponse(response);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->data, (std::vector<float>{1.5f, -2.0f}));
  response.mutable_outputs(0)->add_shape(2);  // now claims 4 values
  EXPECT_EQ(ParseInferResponse(response).status().code(),
            StatusCode::kInternal);
}

TEST_F(InferenceClientTest, ServerErrorsKeepCodeAndMessage) {
  InferRequest q;
  q.model = "nope";
  q.input_name = "tokens";
  q.input = NpyArray::FromInt64({1, 1}, {0});
  const Status s = client_->Infer(q).status();
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "model 'nope' is not known");
  q.model = "toy";
  q.input = NpyArray::FromInt64({1, 2}, {0, -1});
  const Status bad = client_->Infer(q).status();
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("element 1"), std::string::npos)
      << bad.message();
}

TEST_F(InferenceClientTest, DeadlinesApplyPerCall) {
  options_.timeout = std::chrono::milliseconds(100);
  auto client = InferenceClient::Create(options_);
  ASSERT_TRUE(client.ok());
  InferRequest q;
  q.model = "toy";
  q.id = "slow";
  q.input = NpyArray::FromInt64({1, 1}, {1});
  EXPECT_EQ((*client)->Infer(q).status().code(), StatusCode::kDeadlineExceeded);
}

TEST_F(InferenceClientTest, StreamInChunksEqualsTheWholeSequence) {
  std::vector<int64_t> x;
  for (int i = 0; i < 10; ++i) x.push_back(i * i % 7);
  StreamRequest q;
  q.model = "toy";
  q.sequence = NpyArray::FromInt64({10}, x);  // no batch dimension
  q.chunk_steps = 3;
  q.sequence_id = 42;
  q.id_prefix = "c";
  auto r = client_->StreamSequence(q);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->output.shape, (std::vector<int64_t>{1, 10, 2}));
  EXPECT_EQ(r->output.data, Expected(x, 1, 10));
  EXPECT_EQ(r->chunk_latency_ms.size(), 4u);
  EXPECT_EQ(r->chunk_batch_size.size(), 4u);
  const auto seen = service_.seen();
  ASSERT_EQ(seen.size(), 4u);
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(seen[k].sequence_id, 42u);
    EXPECT_EQ(seen[k].start, k == 0);
    EXPECT_EQ(seen[k].end, k == 3);
    EXPECT_EQ(seen[k].steps, k == 3 ? 1 : 3);
  }
}

TEST_F(InferenceClientTest, AChunkErrorNamesTheChunk) {
  std::vector<int64_t> x(10, 1);
  x[7] = -1;  // in chunk 2 (steps 6..9)
  StreamRequest q;
  q.model = "toy";
  q.sequence = NpyArray::FromInt64({1, 10}, x);
  q.chunk_steps = 3;
  q.sequence_id = 5;
  const Status s = client_->StreamSequence(q).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("chunk 2 of 4 (steps 6..9)"), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("token id -1"), std::string::npos) << s.message();
}

TEST_F(InferenceClientTest, StreamRejectsBadRequestsBeforeSending) {
  StreamRequest q;
  q.model = "toy";
  q.sequence =
      NpyArray::FromInt64({2, 3}, {1, 2, 3, 4, 5, 6});  // two sequences
  EXPECT_EQ(client_->StreamSequence(q).status().code(),
            StatusCode::kInvalidArgument);
  q.sequence = NpyArray::FromInt64({1, 3}, {1, 2, 3});
  q.sequence_id = 0;
  EXPECT_EQ(client_->StreamSequence(q).status().code(),
            StatusCode::kInvalidArgument);
  q.sequence_id = 1;
  q.model = "nope";
  EXPECT_EQ(client_->StreamSequence(q).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(service_.seen().empty());
}

TEST_F(InferenceClientTest, PerfUnaryAndStreams) {
  PerfOptions o;
  o.model = "toy";
  o.concurrency = 3;
  o.duration_s = 0.3;
  o.warmup_s = 0.05;
  o.batch = 2;
  o.steps = 5;
  o.vocab = 9;
  auto unary = RunPerf(client_.get(), o);
  ASSERT_TRUE(unary.ok()) << unary.status().ToString();
  EXPECT_GT(unary->requests, 0);
  EXPECT_EQ(unary->errors, 0);
  EXPECT_DOUBLE_EQ(*unary->mean_batch_size, 2.0);
  EXPECT_NEAR(unary->throughput_seq_per_s, 2 * unary->throughput_infer_per_s,
              1e-9);
  EXPECT_LE(unary->p50_ms, unary->p99_ms);

  o.streams = true;
  o.chunk_steps = 2;  // 3 chunks per 5-step sequence
  auto streams = RunPerf(client_.get(), o);
  ASSERT_TRUE(streams.ok()) << streams.status().ToString();
  EXPECT_GT(streams->requests, 0);
  EXPECT_EQ(streams->errors, 0);
  EXPECT_NEAR(streams->throughput_infer_per_s,
              3 * streams->throughput_seq_per_s, 1e-9);
  EXPECT_DOUBLE_EQ(*streams->mean_batch_size, 1.0);
  // Every stream started once and ended once, under distinct ids.
  std::map<uint64_t, int> starts;
  for (const auto& s : service_.seen()) {
    if (s.sequence_id != 0 && s.start) ++starts[s.sequence_id];
  }
  for (const auto& [id, n] : starts) EXPECT_EQ(n, 1) << id;
}

TEST_F(InferenceClientTest, PerfCountsServerErrors) {
  PerfOptions o;
  o.model = "toy";
  o.duration_s = 0.2;
  o.warmup_s = 0;
  o.input =
      NpyArray::FromInt64({2, 2}, {1, -1, 2, -2});  // every row is refused
  auto r = RunPerf(client_.get(), o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GT(r->errors, 0);
  EXPECT_EQ(r->errors, r->requests);
  EXPECT_EQ(r->errors_by_code.at("INVALID_ARGUMENT"), r->errors);
  EXPECT_EQ(RunPerf(client_.get(),
                    [&] {
                      PerfOptions bad = o;
                      bad.model = "nope";
                      return bad;
                    }())
                .status()
                .code(),
            StatusCode::kNotFound);
}

TEST(InferenceClientCreateTest, ChecksOptions) {
  InferenceClient::Options o;
  o.address = "";
  EXPECT_EQ(InferenceClient::Create(o).status().code(),
            StatusCode::kInvalidArgument);
  o.address = "127.0.0.1:1";
  o.tls_cert_file = "/nonexistent/cert.pem";
  EXPECT_EQ(InferenceClient::Create(o).status().code(),
            StatusCode::kInvalidArgument);
  o.tls_key_file = "/nonexistent/key.pem";
  const Status s = InferenceClient::Create(o).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("/nonexistent/cert.pem"), std::string::npos)
      << s.message();
}

TEST(InferenceClientCreateTest, NoServerIsUnavailable) {
  InferenceClient::Options o;
  o.address = "127.0.0.1:1";
  o.timeout = std::chrono::milliseconds(2000);
  auto client = InferenceClient::Create(o);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->ServerLive().status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace rnnserve::client
