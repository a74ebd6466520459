// Clients that go away: cancelled calls, expiring deadlines, streams
// cancelled with requests still queued, channels dropped mid-call. The
// server must answer what it can, free what it holds, never crash, and keep
// serving everybody else (run these under -DRNNSERVE_SANITIZE=address,
// undefined too).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "tests/integration/test_server.h"

namespace rnnserve::testing {
namespace {

class ServerFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokens_ = HeldoutTokens(&rows_, &cols_);
    repo_.AddCharlm("dyn", "{kind: dynamic, max_batch_size: 16, max_queue_delay_us: 2000}");
    repo_.AddCharlm("seq", "{kind: sequence, max_batch_size: 16, max_queue_delay_us: 2000}");
    server_ = StartServer(repo_.root());
    ASSERT_NE(server_, nullptr);
  }

  // A good request and a good stream still work, with the right answers.
  void ExpectHealthy() {
    auto stub = inference::GRPCInferenceService::NewStub(Connect(server_->address()));
    const auto t = TokenSlice(tokens_, cols_, 1, 1, 30);
    grpc::ClientContext ctx;
    inference::ModelInferResponse response;
    ASSERT_TRUE(stub->ModelInfer(&ctx, TokenRequest("dyn", t, 1, 30), &response).ok());
    EXPECT_LT(MaxAbsDiff(OutputFloats(response), EngineOutput(*server_, "dyn", t, 1, 30)), 1e-4);

    grpc::ClientContext sctx;
    auto stream = stub->ModelStreamInfer(&sctx);
    for (int s = 0; s < 30; s += 10) {
      auto request = TokenRequest("seq", std::vector<int64_t>(t.begin() + s, t.begin() + s + 10), 1, 10);
      SetSequence(&request, 999, s == 0, s == 20);
      ASSERT_TRUE(stream->Write(request));
    }
    stream->WritesDone();
    std::vector<float> out;
    inference::ModelStreamInferResponse r;
    while (stream->Read(&r)) {
      EXPECT_EQ(r.error_message(), "");
      auto part = OutputFloats(r.infer_response());
      out.insert(out.end(), part.begin(), part.end());
    }
    EXPECT_TRUE(stream->Finish().ok());
    EXPECT_LT(MaxAbsDiff(out, EngineOutput(*server_, "seq", t, 1, 30)), 1e-4);
  }

  TempRepository repo_;
  std::unique_ptr<rpc::Server> server_;
  std::vector<int64_t> tokens_;
  int64_t rows_ = 0, cols_ = 0;
};

TEST_F(ServerFaultsTest, CancelledAndExpiredCallsLeaveTheServerServing) {
  const auto t = TokenSlice(tokens_, cols_, 0, 4, 64);
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      auto stub = inference::GRPCInferenceService::NewStub(Connect(server_->address()));
      for (int i = 0; i < 25; ++i) {
        grpc::ClientContext ctx;
        inference::ModelInferResponse response;
        if ((c + i) % 2) {
          // Deadlines of 0.2 to 2 ms: some expire queued, some mid-compute.
          ctx.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::microseconds(200 + 200 * (i % 10)));
          stub->ModelInfer(&ctx, TokenRequest("dyn", t, 4, 64), &response);
        } else {
          // Cancelled by the client while in flight.
          std::thread canceller([&ctx, i] {
            std::this_thread::sleep_for(std::chrono::microseconds(100 * (i % 7)));
            ctx.TryCancel();
          });
          stub->ModelInfer(&ctx, TokenRequest("dyn", t, 4, 64), &response);
          canceller.join();
        }
        ++answered;
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(answered.load(), 200);
  ExpectHealthy();
}

TEST_F(ServerFaultsTest, StreamsCancelledWithChunksQueuedAreCleanedUp) {
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      auto stub = inference::GRPCInferenceService::NewStub(Connect(server_->address()));
      for (int round = 0; round < 5; ++round) {
        grpc::ClientContext ctx;
        auto stream = stub->ModelStreamInfer(&ctx);
        const uint64_t id = 1 + c * 100 + round;
        for (int k = 0; k < 12; ++k) {
          auto request = TokenRequest("seq", TokenSlice(tokens_, cols_, c, 1, 8), 1, 8);
          SetSequence(&request, id, k == 0, false);
          if (!stream->Write(request)) break;
        }
        if (round % 2) {
          inference::ModelStreamInferResponse r;
          stream->Read(&r);  // take one answer, leave the rest unread
        }
        ctx.TryCancel();  // mid-stream, with chunks queued or running
        stream->Finish();
      }
    });
  }
  for (auto& c : clients) c.join();
  // The cancelled streams' sequences were never ended: they stay live
  // until idle expiry, but nothing else is held up.
  ExpectHealthy();
}

TEST_F(ServerFaultsTest, DroppedChannelsMidCallDoNotDisturbOthers) {
  // Channels (with their connections) destroyed while calls are in flight,
  // as when a client process dies.
  for (int round = 0; round < 10; ++round) {
    auto channel = Connect(server_->address());
    auto stub = inference::GRPCInferenceService::NewStub(channel);
    struct Call {
      grpc::ClientContext ctx;
      inference::ModelInferRequest request;
      inference::ModelInferResponse response;
    };
    std::vector<std::unique_ptr<Call>> calls;
    std::atomic<int> done{0};
    for (int i = 0; i < 8; ++i) {
      calls.push_back(std::make_unique<Call>());
      Call* call = calls.back().get();
      call->request = TokenRequest("dyn", TokenSlice(tokens_, cols_, i, 1, 64), 1, 64);
      stub->async()->ModelInfer(&call->ctx, &call->request, &call->response,
                                [&done](grpc::Status) { ++done; });
    }
    for (auto& call : calls) call->ctx.TryCancel();
    while (done.load() < 8) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    stub.reset();
    channel.reset();
  }
  ExpectHealthy();
}

}  // namespace
}  // namespace rnnserve::testing
