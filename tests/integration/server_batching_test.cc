// Batching and execution through a real in-process server: many concurrent
// clients get exactly the engine's answers while batches really form;
// streamed chunks equal the whole sequence; idle streams expire; the stream
// bound, queue bound and deadlines answer with their codes; models load and
// unload under traffic without failing anyone else's requests.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/batching/clock.h"
#include "tests/integration/test_server.h"

namespace rnnserve::testing {
namespace {

using ::testing::HasSubstr;

std::vector<float> Direct(rpc::Server& server, const std::string& model,
                          const std::vector<int64_t>& tokens, int n, int t) {
  return EngineOutput(server, model, tokens, n, t);
}

grpc::Status Call(inference::GRPCInferenceService::Stub& stub,
                  const inference::ModelInferRequest& request,
                  inference::ModelInferResponse* response,
                  std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  return stub.ModelInfer(&ctx, request, response);
}

class ServerBatchingTest : public ::testing::Test {
 protected:
  void SetUp() override { tokens_ = HeldoutTokens(&rows_, &cols_); }
  std::vector<int64_t> tokens_;
  int64_t rows_ = 0, cols_ = 0;
};

TEST_F(ServerBatchingTest, SixtyFourConcurrentClientsGetEngineResultsInRealBatches) {
  TempRepository repo;
  repo.AddCharlm("charlm", "{kind: dynamic, max_batch_size: 64, max_queue_delay_us: 2000}");
  auto server = StartServer(repo.root());
  ASSERT_NE(server, nullptr);

  // Requests of two lengths and two sizes; the oracle for each is the
  // engine run on that request alone.
  struct Case {
    int first, n, t;
    std::vector<int64_t> tokens;
    std::vector<float> expected;
  };
  std::vector<Case> cases;
  for (int i = 0; i < 16; ++i) {
    Case c{i * 4 % 120, 1 + i % 2, i % 3 == 0 ? 32 : 16, {}, {}};
    c.tokens = TokenSlice(tokens_, cols_, c.first, c.n, c.t);
    c.expected = Direct(*server, "charlm", c.tokens, c.n, c.t);
    cases.push_back(std::move(c));
  }

  constexpr int kClients = 64;
  constexpr int kRequestsEach = 8;
  std::atomic<int> failures{0}, mismatches{0}, max_batch{0}, done{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      auto stub = inference::GRPCInferenceService::NewStub(Connect(server->address()));
      for (int r = 0; r < kRequestsEach; ++r) {
        const Case& k = cases[(c * kRequestsEach + r) % cases.size()];
        inference::ModelInferResponse response;
        auto request = TokenRequest("charlm", k.tokens, k.n, k.t);
        request.set_id(std::to_string(c) + "/" + std::to_string(r));
        const grpc::Status status = Call(*stub, request, &response);
        if (!status.ok() || response.id() != request.id()) {
          ++failures;
          continue;
        }
        if (MaxAbsDiff(OutputFloats(response), k.expected) > 1e-4) ++mismatches;
        int b = static_cast<int>(Int64Param(response, "batch_size"));
        int seen = max_batch.load();
        while (b > seen && !max_batch.compare_exchange_weak(seen, b)) {
        }
        ++done;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(done.load(), kClients * kRequestsEach);
  // Under 64 concurrent clients the batcher must have combined requests.
  EXPECT_GT(max_batch.load(), 2);
  const auto stats = server->manager().Get("charlm").value()->GetStats();
  EXPECT_LT(stats.batches, stats.processed);
}

// Streams `tokens` (one sequence) through ModelStreamInfer in chunks of
// `chunk` steps as sequence `id`; returns the concatenated outputs.
std::vector<float> StreamInChunks(inference::GRPCInferenceService::Stub& stub,
                                  const std::string& model,
                                  const std::vector<int64_t>& tokens, int chunk,
                                  uint64_t id) {
  grpc::ClientContext ctx;
  auto stream = stub.ModelStreamInfer(&ctx);
  const int t = static_cast<int>(tokens.size());
  for (int s = 0; s < t; s += chunk) {
    const int len = std::min(chunk, t - s);
    std::vector<int64_t> part(tokens.begin() + s, tokens.begin() + s + len);
    auto request = TokenRequest(model, part, 1, len);
    SetSequence(&request, id, s == 0, s + len == t);
    EXPECT_TRUE(stream->Write(request));
  }
  stream->WritesDone();
  std::vector<float> out;
  inference::ModelStreamInferResponse response;
  while (stream->Read(&response)) {
    EXPECT_EQ(response.error_message(), "");
    const auto part = OutputFloats(response.infer_response());
    out.insert(out.end(), part.begin(), part.end());
  }
  EXPECT_TRUE(stream->Finish().ok());
  return out;
}

TEST_F(ServerBatchingTest, ChunkedStreamsEqualWholeSequencesAndBatchAcrossStreams) {
  TempRepository repo;
  repo.AddCharlm("seq", "{kind: sequence, max_batch_size: 16, max_queue_delay_us: 1000}");
  auto server = StartServer(repo.root());
  ASSERT_NE(server, nullptr);

  constexpr int kStreams = 12;
  constexpr int kSteps = 60;
  std::vector<std::vector<int64_t>> sequences;
  std::vector<std::vector<float>> whole;
  for (int s = 0; s < kStreams; ++s) {
    sequences.push_back(TokenSlice(tokens_, cols_, 10 + s, 1, kSteps));
    // Oracle: the engine on the whole sequence from a zero state.
    whole.push_back(Direct(*server, "seq", sequences.back(), 1, kSteps));
  }
  std::vector<std::vector<float>> streamed(kStreams);
  std::vector<std::thread> clients;
  for (int s = 0; s < kStreams; ++s) {
    clients.emplace_back([&, s] {
      auto stub = inference::GRPCInferenceService::NewStub(Connect(server->address()));
      // Chunks of 10 (divides T) for even streams, 7 (ragged) for odd ones.
      streamed[s] = StreamInChunks(*stub, "seq", sequences[s], s % 2 ? 7 : 10, 1000 + s);
    });
  }
  for (auto& t : clients) t.join();
  for (int s = 0; s < kStreams; ++s) {
    EXPECT_LT(MaxAbsDiff(streamed[s], whole[s]), 1e-4) << "stream " << s;
  }
  // Chunks of different streams ran together, and every stream was freed
  // after its sequence_end.
  const auto stats = server->manager().Get("seq").value()->GetStats();
  EXPECT_LT(stats.batches, stats.processed);
  EXPECT_EQ(stats.active_sequences, 0);

  // The same sequence sent whole (start and end in one request) agrees too.
  auto stub = inference::GRPCInferenceService::NewStub(Connect(server->address()));
  auto request = TokenRequest("seq", sequences[0], 1, kSteps);
  SetSequence(&request, 77, true, true);
  inference::ModelInferResponse response;
  ASSERT_TRUE(Call(*stub, request, &response).ok());
  EXPECT_LT(MaxAbsDiff(OutputFloats(response), whole[0]), 1e-4);
  EXPECT_EQ(response.parameters().at("sequence_id").uint64_param(), 77u);
}

// A stacked GRU (no cell state) streamed in ragged chunks of 3 steps from
// several streams at once, against PyTorch's output for the whole sequence.
TEST_F(ServerBatchingTest, GruStreamsMatchPyTorchGoldens) {
  TempRepository repo;
  repo.AddModel("gru", 1, kGoldensDir + "/gru_3l/model.onnx", "",
                "batching: {kind: sequence, max_batch_size: 4, max_queue_delay_us: 1000}\n");
  auto server = StartServer(repo.root());
  ASSERT_NE(server, nullptr);
  auto input = ReadNpy(kGoldensDir + "/gru_3l/input.npy");
  auto golden = ReadNpy(kGoldensDir + "/gru_3l/expected.npy");
  ASSERT_TRUE(input.ok() && golden.ok());
  const int n = static_cast<int>(input->shape[0]), t = static_cast<int>(input->shape[1]),
            f = static_cast<int>(input->shape[2]);
  const int64_t h = golden->shape[2];
  const std::string name = server->manager().Get("gru").value()->model().config.inputs[0].name;
  const std::vector<float> features = input->ToFloat(), expected = golden->ToFloat();
  std::vector<std::vector<float>> outputs(n);
  std::vector<std::thread> clients;
  for (int s = 0; s < n; ++s) {
    clients.emplace_back([&, s] {
      auto stub = inference::GRPCInferenceService::NewStub(Connect(server->address()));
      grpc::ClientContext ctx;
      auto stream = stub->ModelStreamInfer(&ctx);
      for (int start = 0; start < t; start += 3) {
        const int len = std::min(3, t - start);
        auto request = FeatureRequest("gru", name, &features[(s * t + start) * f], 1, len, f);
        SetSequence(&request, 50 + s, start == 0, start + len == t);
        EXPECT_TRUE(stream->Write(request));
      }
      stream->WritesDone();
      inference::ModelStreamInferResponse response;
      while (stream->Read(&response)) {
        EXPECT_EQ(response.error_message(), "");
        const auto part = OutputFloats(response.infer_response());
        outputs[s].insert(outputs[s].end(), part.begin(), part.end());
      }
      EXPECT_TRUE(stream->Finish().ok());
    });
  }
  for (auto& c : clients) c.join();
  for (int s = 0; s < n; ++s) {
    const std::vector<float> want(expected.begin() + s * t * h, expected.begin() + (s + 1) * t * h);
    EXPECT_LT(MaxAbsDiff(outputs[s], want), 1e-4) << "stream " << s;
  }
}

TEST_F(ServerBatchingTest, IdleStreamsExpireAndLiveStreamsAreBounded) {
  batching::FakeClock clock(1'000'000);
  TempRepository repo;
  repo.AddCharlm("seq",
                 "{kind: sequence, max_batch_size: 4, max_sequence_idle_us: 5000000, "
                 "max_active_sequences: 2}");
  auto server = StartServer(repo.root(), {}, &clock);
  ASSERT_NE(server, nullptr);
  auto stub = inference::GRPCInferenceService::NewStub(Connect(server->address()));
  const auto chunk = TokenSlice(tokens_, cols_, 0, 1, 5);
  auto send = [&](uint64_t id, bool start, bool end) {
    auto request = TokenRequest("seq", chunk, 1, 5);
    SetSequence(&request, id, start, end);
    inference::ModelInferResponse response;
    return Call(*stub, request, &response);
  };

  ASSERT_TRUE(send(1, true, false).ok());
  ASSERT_TRUE(send(2, true, false).ok());
  // Over the bound of two live streams.
  grpc::Status third = send(3, true, false);
  EXPECT_EQ(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(third.error_message(), HasSubstr("max_active_sequences"));
  // Ending one makes room.
  ASSERT_TRUE(send(2, false, true).ok());
  ASSERT_TRUE(send(3, true, false).ok());

  // Just inside the idle limit stream 1 lives; past it, it is gone.
  clock.AdvanceMicros(4'000'000);
  ASSERT_TRUE(send(1, false, false).ok());
  clock.AdvanceMicros(5'000'001);
  const grpc::Status expired = send(1, false, false);
  EXPECT_EQ(expired.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(expired.error_message(), HasSubstr("max_sequence_idle_us"));
  // Restarting it with sequence_start works.
  EXPECT_TRUE(send(1, true, true).ok());
}

TEST_F(ServerBatchingTest, QueuedRequestsPastTheirDeadlineAreNotComputed) {
  TempRepository repo;
  // A lone request waits up to 3 s for company: long enough to expire.
  repo.AddCharlm("slow", "{kind: dynamic, max_batch_size: 8, max_queue_delay_us: 3000000}");
  auto server = StartServer(repo.root());
  ASSERT_NE(server, nullptr);
  auto stub = inference::GRPCInferenceService::NewStub(Connect(server->address()));
  const auto tokens = TokenSlice(tokens_, cols_, 0, 1, 5);

  // The request's own `timeout` parameter: the server answers it.
  auto request = TokenRequest("slow", tokens, 1, 5);
  (*request.mutable_parameters())["timeout"].set_int64_param(200'000);
  inference::ModelInferResponse response;
  const grpc::Status by_param = Call(*stub, request, &response);
  EXPECT_EQ(by_param.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The gRPC deadline.
  const grpc::Status by_grpc =
      Call(*stub, TokenRequest("slow", tokens, 1, 5), &response, std::chrono::milliseconds(200));
  EXPECT_EQ(by_grpc.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);

  // Give the batcher time to expire the second one too, then check that
  // neither reached the engine.
  const auto scheduler = server->manager().Get("slow").value();
  for (int i = 0; i < 100 && scheduler->GetStats().deadline_exceeded < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto stats = scheduler->GetStats();
  EXPECT_EQ(stats.deadline_exceeded, 2);
  EXPECT_EQ(stats.processed, 0);
}

TEST_F(ServerBatchingTest, FullQueueIsResourceExhaustedAtOnce) {
  TempRepository repo;
  repo.AddCharlm("slow",
                 "{kind: dynamic, max_batch_size: 2, max_queue_size: 2, "
                 "max_queue_delay_us: 2000000}");
  auto server = StartServer(repo.root());
  ASSERT_NE(server, nullptr);
  auto stub = inference::GRPCInferenceService::NewStub(Connect(server->address()));

  // Two requests of different lengths wait (neither group is full).
  std::vector<std::thread> waiting;
  std::atomic<int> ok{0};
  for (int t : {5, 6}) {
    waiting.emplace_back([&, t] {
      auto s = inference::GRPCInferenceService::NewStub(Connect(server->address()));
      inference::ModelInferResponse response;
      if (Call(*s, TokenRequest("slow", TokenSlice(tokens_, cols_, 0, 1, t), 1, t), &response).ok()) {
        ++ok;
      }
    });
  }
  const auto scheduler = server->manager().Get("slow").value();
  for (int i = 0; i < 200 && scheduler->GetStats().queued < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(scheduler->GetStats().queued, 2);
  const auto start = std::chrono::steady_clock::now();
  inference::ModelInferResponse response;
  const grpc::Status full =
      Call(*stub, TokenRequest("slow", TokenSlice(tokens_, cols_, 0, 1, 7), 1, 7), &response);
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(full.error_message(), HasSubstr("max_queue_size"));
  // Refused at once, not after the 2 s queue delay (a generous bound).
  EXPECT_LT(waited, std::chrono::milliseconds(1500));
  for (auto& t : waiting) t.join();
  EXPECT_EQ(ok.load(), 2);  // the queued ones were served
}

// Clients sending the same request to `model` in a loop until Stop(),
// counting answers equal to `expected` and everything else (with the first
// failure's message).
class Traffic {
 public:
  Traffic(const std::string& address, const std::string& model,
          std::vector<int64_t> tokens, int t, std::vector<float> expected,
          int clients) {
    for (int c = 0; c < clients; ++c) {
      threads_.emplace_back([this, address, model, tokens, t, expected] {
        auto stub = inference::GRPCInferenceService::NewStub(Connect(address));
        while (!stop_.load()) {
          inference::ModelInferResponse response;
          const grpc::Status status = Call(*stub, TokenRequest(model, tokens, 1, t), &response);
          if (status.ok() && MaxAbsDiff(OutputFloats(response), expected) < 1e-4) {
            ++served_;
            continue;
          }
          ++failed_;
          std::lock_guard<std::mutex> lock(mu_);
          if (first_error_.empty()) first_error_ = status.error_message() + " ";
        }
      });
    }
  }
  ~Traffic() { Stop(); }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  int served() const { return served_.load(); }
  int failed() const { return failed_.load(); }
  std::string first_error() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_error_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> served_{0}, failed_{0};
  std::mutex mu_;
  std::string first_error_;  // guarded by mu_
  std::vector<std::thread> threads_;
};

// A server in model_control explicit with `startup` loaded.
std::unique_ptr<rpc::Server> StartExplicit(const TempRepository& repo,
                                           std::vector<std::string> startup) {
  return StartServer(repo.root(), [startup](config::ServerConfig* c) {
    c->model_control = config::ModelControl::kExplicit;
    c->startup_models = startup;
  });
}

TEST_F(ServerBatchingTest, LoadAndUnloadUnderTrafficFailNothingElse) {
  TempRepository repo;
  repo.AddCharlm("busy", "{kind: dynamic, max_batch_size: 16, max_queue_delay_us: 500}");
  repo.AddCharlm("other", "{kind: dynamic, max_batch_size: 16}");
  auto server = StartExplicit(repo, {"busy"});
  ASSERT_NE(server, nullptr);
  const auto tokens = TokenSlice(tokens_, cols_, 2, 1, 24);
  Traffic traffic(server->address(), "busy", tokens, 24,
                  Direct(*server, "busy", tokens, 1, 24), 8);
  auto stub = inference::GRPCInferenceService::NewStub(Connect(server->address()));
  auto repository_call = [&](const std::string& name, bool load) {
    grpc::ClientContext ctx;
    if (load) {
      inference::RepositoryModelLoadRequest request;
      request.set_model_name(name);
      inference::RepositoryModelLoadResponse r;
      return stub->RepositoryModelLoad(&ctx, request, &r);
    }
    inference::RepositoryModelUnloadRequest request;
    request.set_model_name(name);
    inference::RepositoryModelUnloadResponse r;
    return stub->RepositoryModelUnload(&ctx, request, &r);
  };
  const auto other_tokens = TokenSlice(tokens_, cols_, 0, 1, 8);
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(repository_call("other", true).ok());
    inference::ModelInferResponse response;
    EXPECT_TRUE(Call(*stub, TokenRequest("other", other_tokens, 1, 8), &response).ok());
    ASSERT_TRUE(repository_call("other", false).ok());
    EXPECT_EQ(Call(*stub, TokenRequest("other", other_tokens, 1, 8), &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
    // Reloading the busy model itself must not fail its in-flight requests.
    ASSERT_TRUE(repository_call("busy", true).ok());
  }
  traffic.Stop();
  EXPECT_GT(traffic.served(), 0);
  EXPECT_EQ(traffic.failed(), 0) << traffic.first_error();
  // Unloading an unknown model is NOT_FOUND; a bad name is refused.
  EXPECT_EQ(repository_call("never", false).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(repository_call("../etc", true).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// A model file replaced by garbage and reloaded under traffic: the load
// RPC reports the error, the old copy keeps serving every request (its
// batcher, and the streams in it, carry on).
TEST_F(ServerBatchingTest, GarbageModelReloadKeepsTheOldCopyServing) {
  TempRepository repo;
  repo.AddCharlm("busy", "{kind: dynamic, max_batch_size: 16, max_queue_delay_us: 500}");
  auto server = StartExplicit(repo, {"busy"});
  ASSERT_NE(server, nullptr);
  const auto tokens = TokenSlice(tokens_, cols_, 2, 1, 24);
  const auto scheduler_before = server->manager().Get("busy").value();
  Traffic traffic(server->address(), "busy", tokens, 24,
                  Direct(*server, "busy", tokens, 1, 24), 4);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::ofstream(repo.root() + "/busy/1/model.onnx", std::ios::trunc) << "garbage";
  auto stub = inference::GRPCInferenceService::NewStub(Connect(server->address()));
  grpc::ClientContext ctx;
  inference::RepositoryModelLoadRequest request;
  request.set_model_name("busy");
  inference::RepositoryModelLoadResponse r;
  const grpc::Status load = stub->RepositoryModelLoad(&ctx, request, &r);
  EXPECT_EQ(load.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(load.error_message(), HasSubstr("previously loaded copy keeps serving"));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  traffic.Stop();
  EXPECT_GT(traffic.served(), 0);
  EXPECT_EQ(traffic.failed(), 0) << traffic.first_error();
  EXPECT_EQ(server->manager().Get("busy").value(), scheduler_before);
  grpc::ClientContext ctx2;
  inference::RepositoryIndexResponse index;
  ASSERT_TRUE(stub->RepositoryIndex(&ctx2, {}, &index).ok());
  ASSERT_EQ(index.models_size(), 1);
  EXPECT_EQ(index.models(0).state(), "READY");
  EXPECT_THAT(index.models(0).reason(), HasSubstr("reload failed"));
}

}  // namespace
}  // namespace rnnserve::testing
