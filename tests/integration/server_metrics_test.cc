// Metrics of a real in-process server, scraped over HTTP from its /metrics
// port, checked against what the test itself sent and computed: request
// counters, calibration clipping, accuracy drift, the f32 fallback and live
// recalibration.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <sstream>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "proto/rnnserve_service.grpc.pb.h"
#include "tests/integration/test_server.h"
#include "tests/testing/http_get.h"

namespace rnnserve::testing {
namespace {

// The exposed key of a series of version 1 of `model` (version "" for
// model ""): labels sorted by name, as the server writes them.
std::string Series(const std::string& name, const std::string& model,
                   const std::string& extra_labels = "") {
  std::vector<std::string> labels = {"model=\"" + model + "\"",
                                     "version=\"" + std::string(model.empty() ? "" : "1") + "\""};
  std::stringstream extra(extra_labels);
  for (std::string l; std::getline(extra, l, ',');) labels.push_back(l);
  std::sort(labels.begin(), labels.end());
  std::string key = name + "{";
  for (size_t i = 0; i < labels.size(); ++i) key += (i ? "," : "") + labels[i];
  return key + "}";
}

// A scrape whose at() names the missing series instead of throwing bare.
struct Scraped {
  std::map<std::string, double> series;
  double at(const std::string& key) const {
    auto it = series.find(key);
    if (it == series.end()) {
      ADD_FAILURE() << "no series " << key;
      return std::nan("");
    }
    return it->second;
  }
};

Scraped Scrape(rpc::Server& server) {
  return Scraped{ParseExposition(HttpGet(server.metrics_port(), "/metrics"))};
}

void WithMetrics(config::ServerConfig* c) { c->metrics_address = "127.0.0.1:0"; }

grpc::Status Infer(inference::GRPCInferenceService::Stub& stub,
                   const inference::ModelInferRequest& request,
                   inference::ModelInferResponse* response) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return stub.ModelInfer(&ctx, request, response);
}

TEST(ServerMetricsTest, RequestCountersMatchWhatTheClientSent) {
  TempRepository repo;
  repo.AddCharlm("charlm", "{kind: dynamic, max_batch_size: 8, max_queue_size: 100}");
  auto server = StartServer(repo.root(), WithMetrics);
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->metrics_port(), 0);
  auto stub = inference::GRPCInferenceService::NewStub(Connect(server->address()));
  int64_t rows = 0, cols = 0;
  const auto heldout = HeldoutTokens(&rows, &cols);
  const auto tokens = TokenSlice(heldout, cols, 0, 2, 12);

  const auto before = Scrape(*server);
  constexpr int kOk = 25, kInvalid = 3, kUnknown = 2;
  inference::ModelInferResponse response;
  for (int i = 0; i < kOk; ++i) {
    ASSERT_TRUE(Infer(*stub, TokenRequest("charlm", tokens, 2, 12), &response).ok());
  }
  for (int i = 0; i < kInvalid; ++i) {
    auto bad = TokenRequest("charlm", tokens, 2, 12);
    bad.mutable_inputs(0)->set_datatype("FP32");
    EXPECT_EQ(Infer(*stub, bad, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  for (int i = 0; i < kUnknown; ++i) {
    EXPECT_EQ(Infer(*stub, TokenRequest("nope", tokens, 2, 12), &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  const auto after = Scrape(*server);
  auto delta = [&](const std::string& key) { return after.at(key) - before.at(key); };
  EXPECT_EQ(delta(Series("rnnserve_requests_total", "charlm", "code=\"OK\"")), kOk);
  EXPECT_EQ(delta(Series("rnnserve_requests_total", "charlm", "code=\"INVALID_ARGUMENT\"")),
            kInvalid);
  EXPECT_EQ(delta(Series("rnnserve_requests_total", "", "code=\"NOT_FOUND\"")), kUnknown);
  EXPECT_EQ(delta(Series("rnnserve_request_duration_seconds_count", "charlm")), kOk + kInvalid);
  // Each OK request ran in a batch (sequential requests: one batch each)
  // of 2 sequences, and waited in the queue once.
  EXPECT_EQ(delta(Series("rnnserve_batch_size_count", "charlm")), kOk);
  EXPECT_EQ(delta(Series("rnnserve_batch_size_sum", "charlm")), 2 * kOk);
  EXPECT_EQ(delta(Series("rnnserve_queue_duration_seconds_count", "charlm")), kOk);
  EXPECT_EQ(after.at(Series("rnnserve_queue_capacity", "charlm")), 100);
  EXPECT_EQ(after.at(Series("rnnserve_model_ready", "charlm")), 1);
  EXPECT_EQ(after.at(Series("rnnserve_model_precision", "charlm", "precision=\"int8\"")), 1);
  EXPECT_GT(after.at(Series("rnnserve_model_weights_bytes", "charlm")), 0);
  bool build_info = false;
  for (const auto& [key, value] : after.series) {
    if (key.rfind("rnnserve_build_info{", 0) == 0 && value == 1) build_info = true;
  }
  EXPECT_TRUE(build_info);
}

// The /metrics listener outlives the model manager a scrape reads (members
// go in reverse order), so the server detaches the scrape before the manager
// goes. Scrapes run on their own thread while the server is torn down under
// them; every scrape that got an answer parses. Under the TSan build
// (tests/sanitize/run_tsan.sh) the missing detach is reported even when no
// scrape happens to overlap the teardown in time.
TEST(ServerMetricsTest, ScrapesDuringShutdownNeverReadAFreedModelManager) {
  TempRepository repo;
  repo.AddCharlm("charlm", "{kind: dynamic, max_batch_size: 8, max_queue_size: 100}");
  auto server = StartServer(repo.root(), WithMetrics);
  ASSERT_NE(server, nullptr);
  const int port = server->metrics_port();
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0}, unparsable{0};
  std::thread scraper([&] {
    while (!stop.load()) {
      const std::string body = HttpGet(port, "/metrics");
      if (body.empty()) continue;  // the listener is closed (or closing)
      if (ParseExposition(body).empty()) ++unparsable;
      ++answered;
    }
  });
  while (answered.load() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  server.reset();
  stop = true;
  scraper.join();
  EXPECT_GE(answered.load(), 3);
  EXPECT_EQ(unparsable.load(), 0);
}

// An int8 feature model (the lstm_2l golden, calibrated on its own input)
// fed its calibration data, then the same data scaled up.
class DriftTest : public ::testing::Test {
 protected:
  void Start(const std::string& drift) {
    repo_.AddModel("m", 1, kGoldensDir + "/lstm_2l/model.onnx", kGoldensDir + "/lstm_2l/input.npy",
                   "precision: int8\ncalibration: {method: minmax}\n"
                   "batching: {kind: dynamic, max_batch_size: 8}\n"
                   "drift: " + drift + "\n");
    server_ = StartServer(repo_.root(), WithMetrics);
    ASSERT_NE(server_, nullptr);
    stub_ = inference::GRPCInferenceService::NewStub(Connect(server_->address()));
    auto input = ReadNpy(kGoldensDir + "/lstm_2l/input.npy");
    ASSERT_TRUE(input.ok());
    shape_ = input->shape;
    data_ = input->ToFloat();
    name_ = server_->manager().Get("m").value()->model().config.inputs[0].name;
  }

  std::shared_ptr<serving::ModelScheduler> Scheduler() {
    return server_->manager().Get("m").value();
  }

  // Sends the data scaled by `scale` `times` times; returns the last output.
  std::vector<float> Send(float scale, int times) {
    std::vector<float> x = data_;
    for (float& v : x) v *= scale;
    std::vector<float> out;
    for (int i = 0; i < times; ++i) {
      inference::ModelInferResponse response;
      auto request = FeatureRequest("m", name_, x.data(), shape_[0], shape_[1], shape_[2]);
      EXPECT_TRUE(Infer(*stub_, request, &response).ok());
      out = OutputFloats(response);
    }
    return out;
  }

  // Waits until the drift monitor compared `n` samples in all.
  void WaitSamples(int64_t n) {
    for (int i = 0; i < 1000; ++i) {
      auto drift = Scheduler()->drift_monitor();
      if (drift != nullptr && drift->samples_done() >= n) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "drift monitor did not process " << n << " samples";
  }

  // Values of the data scaled by `scale` outside the calibrated input range:
  // the test's own count, from the data and the calibrated limit.
  int64_t ExpectedClipped(float scale) {
    const float limit = Scheduler()->model().quantization->layers[0].input_clip;
    int64_t n = 0;
    for (float v : data_) n += std::abs(v * scale) > limit;
    return n;
  }

  double Window(const std::string& metric) {
    return Scrape(*server_).at(Series("rnnserve_drift_window", "m", "metric=\"" + metric + "\""));
  }

  TempRepository repo_;
  std::unique_ptr<rpc::Server> server_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
  std::vector<int64_t> shape_;
  std::vector<float> data_;
  std::string name_;
};

TEST_F(DriftTest, InDistributionIsLowScaledUpClipsAndDrifts) {
  Start("{sample_rate: 1.0, action: alert, min_samples: 1}");
  const std::string input_values = Series("rnnserve_calibration_values_total", "m", "tensor=\"input\"");
  const std::string input_clipped =
      Series("rnnserve_calibration_clipped_values_total", "m", "tensor=\"input\"");

  Send(1.0f, 10);
  WaitSamples(10);
  auto in_dist = Scrape(*server_);
  // minmax calibration on this very data: nothing is clipped.
  EXPECT_EQ(in_dist.at(input_clipped), 0);
  EXPECT_EQ(in_dist.at(input_values), 10.0 * data_.size());
  EXPECT_EQ(in_dist.at(Series("rnnserve_drift_samples_total", "m")), 10);
  const double l2_in = Window("relative_l2");
  EXPECT_LT(l2_in, 0.05);

  Send(4.0f, 10);
  WaitSamples(20);
  auto scaled = Scrape(*server_);
  const int64_t expected = ExpectedClipped(4.0f);
  ASSERT_GT(expected, 0);
  EXPECT_EQ(scaled.at(input_clipped), 10.0 * expected);
  EXPECT_EQ(scaled.at(input_values), 20.0 * data_.size());
  EXPECT_NEAR(scaled.at(Series("rnnserve_calibration_clip_fraction", "m", "tensor=\"input\"")),
              10.0 * expected / (20.0 * data_.size()), 1e-9);
  EXPECT_GT(scaled.at(Series("rnnserve_calibration_absmax", "m", "source=\"observed\",tensor=\"input\"")),
            scaled.at(Series("rnnserve_calibration_absmax", "m", "source=\"calibrated\",tensor=\"input\"")));
  // The window now averages 10 in-distribution and 10 scaled samples.
  const double l2_mixed = Window("relative_l2");
  EXPECT_GT(l2_mixed, 2 * l2_in);
  EXPECT_GT(Window("clip_fraction"), 0);
}

TEST_F(DriftTest, FallbackServesF32ExactlyAndRecalibrationBringsDriftDown) {
  Start("{sample_rate: 1.0, action: fallback_f32, min_samples: 5, hysteresis: 0.2, "
        "thresholds: {clip_fraction: 0.01}}");
  Send(1.0f, 6);
  WaitSamples(6);
  EXPECT_FALSE(Scheduler()->serving_f32_fallback());

  // Scaled-up data clips, the clip-fraction threshold passes: f32 fallback.
  Send(4.0f, 12);
  WaitSamples(18);
  ASSERT_TRUE(Scheduler()->serving_f32_fallback());
  auto metrics = Scrape(*server_);
  EXPECT_EQ(metrics.at(Series("rnnserve_model_precision", "m", "precision=\"f32\"")), 1);
  EXPECT_EQ(metrics.at(Series("rnnserve_model_precision", "m", "precision=\"int8\"")), 0);
  EXPECT_EQ(metrics.at(Series("rnnserve_precision_switches_total", "m")), 1);
  EXPECT_EQ(metrics.at(Series("rnnserve_drift_triggered", "m")), 1);

  // Answers are now the f32 model's, exactly.
  std::vector<float> x = data_;
  for (float& v : x) v *= 4.0f;
  const std::vector<float> served = Send(4.0f, 1);
  engine::RunInput in;
  in.batch = static_cast<int>(shape_[0]);
  in.steps = static_cast<int>(shape_[1]);
  in.features = x.data();
  engine::RunOutput f32;
  ASSERT_TRUE(Scheduler()->model().f32_model->Run(in, &f32).ok());
  EXPECT_EQ(served, f32.output);

  // Drift of the scaled data before recalibration: what int8 would answer.
  engine::RunOutput int8_before;
  ASSERT_TRUE(Scheduler()->model().serving_model->Run(in, &int8_before).ok());

  // Recalibrate on the live reservoir (which now holds the scaled inputs).
  auto control = rnnserve::RnnserveControl::NewStub(Connect(server_->address()));
  grpc::ClientContext ctx;
  rnnserve::RecalibrateRequest request;
  request.set_model_name("m");
  rnnserve::RecalibrateResponse response;
  const grpc::Status status = control->Recalibrate(&ctx, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(response.samples_used(), 0u);
  EXPECT_FALSE(Scheduler()->serving_f32_fallback());  // back on int8

  engine::RunOutput int8_after;
  ASSERT_TRUE(Scheduler()->model().serving_model->Run(in, &int8_after).ok());
  auto rel_l2 = [&](const std::vector<float>& q) {
    double num = 0, den = 0;
    for (size_t i = 0; i < q.size(); ++i) {
      num += (q[i] - f32.output[i]) * (q[i] - f32.output[i]);
      den += f32.output[i] * f32.output[i];
    }
    return std::sqrt(num / den);
  };
  EXPECT_LT(rel_l2(int8_after.output), 0.5 * rel_l2(int8_before.output));

  // And the live drift metrics show it: new samples of the scaled data
  // clip nothing and drift less than before.
  const double l2_before = Window("relative_l2");
  const int64_t done = Scheduler()->drift_monitor()->samples_done();
  Send(4.0f, 6);
  WaitSamples(done + 6);
  EXPECT_LT(Window("relative_l2"), l2_before);
  EXPECT_EQ(Window("clip_fraction"), 0);
  metrics = Scrape(*server_);
  EXPECT_EQ(metrics.at(Series("rnnserve_recalibrations_total", "m")), 1);
  EXPECT_EQ(metrics.at(Series("rnnserve_model_precision", "m", "precision=\"int8\"")), 1);
}

// The fallback ends on its own once the windowed drift is back under
// (1 - hysteresis) x threshold, and the switch back is counted.
TEST_F(DriftTest, FallbackRecoversWhenDriftFallsBelowTheHysteresisBand) {
  Start("{sample_rate: 1.0, action: fallback_f32, min_samples: 5, hysteresis: 0.2, "
        "thresholds: {clip_fraction: 0.01}}");
  Send(1.0f, 6);
  Send(4.0f, 6);
  WaitSamples(12);
  ASSERT_TRUE(Scheduler()->serving_f32_fallback());
  // In-distribution traffic dilutes the window (100 samples) until the
  // clip-fraction average is under 0.8 x 0.01.
  for (int i = 0; i < 20 && Scheduler()->serving_f32_fallback(); ++i) {
    const int64_t done = Scheduler()->drift_monitor()->samples_done();
    Send(1.0f, 10);
    WaitSamples(done + 10);
  }
  EXPECT_FALSE(Scheduler()->serving_f32_fallback());
  EXPECT_LT(Window("clip_fraction"), 0.8 * 0.01);
  auto metrics = Scrape(*server_);
  EXPECT_EQ(metrics.at(Series("rnnserve_precision_switches_total", "m")), 2);
  EXPECT_EQ(metrics.at(Series("rnnserve_model_precision", "m", "precision=\"int8\"")), 1);
  EXPECT_EQ(metrics.at(Series("rnnserve_drift_triggered", "m")), 0);
}

TEST_F(DriftTest, RecalibrateNeedsLiveInputsAndAnInt8Model) {
  Start("{sample_rate: 0.0}");
  auto control = rnnserve::RnnserveControl::NewStub(Connect(server_->address()));
  auto call = [&](const std::string& model) {
    grpc::ClientContext ctx;
    rnnserve::RecalibrateRequest request;
    request.set_model_name(model);
    rnnserve::RecalibrateResponse response;
    return control->Recalibrate(&ctx, request, &response);
  };
  EXPECT_EQ(call("m").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(call("nope").error_code(), grpc::StatusCode::NOT_FOUND);
  Send(1.0f, 2);
  EXPECT_TRUE(call("m").ok());
}

}  // namespace
}  // namespace rnnserve::testing
