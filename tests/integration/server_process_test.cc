// The real `rnnserve` binary as users run it: command line, exit codes,
// start-up log, and SIGTERM under load (no accepted request lost, exit 0).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/integration/server_process.h"
#include "tests/integration/test_server.h"

namespace rnnserve::testing {
namespace {

using ::testing::HasSubstr;

TEST(ServerBinaryTest, HelpListsEveryFlagAndBadFlagsExitTwo) {
  auto help = RunCommand({ServerBinary(), "--help"});
  ASSERT_TRUE(help.ok()) << help.status().ToString();
  EXPECT_EQ(help->exit_code, 0);
  for (const char* flag : {"--config", "--model-repository", "--grpc-address", "--metrics-address",
                           "--worker-threads", "--intra-op-threads", "--max-message-bytes",
                           "--log-level", "--tls-cert", "--tls-key", "--model-control"}) {
    EXPECT_THAT(help->out, HasSubstr(flag));
  }
  auto bad = RunCommand({ServerBinary(), "--worker-threads", "0"});
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->exit_code, 2);
  EXPECT_THAT(bad->err, HasSubstr("--worker-threads: must be >= 1"));
  auto typo = RunCommand({ServerBinary(), "--grpc-adress", "x"});
  ASSERT_TRUE(typo.ok());
  EXPECT_EQ(typo->exit_code, 2);
  EXPECT_THAT(typo->err, HasSubstr("--grpc-adress"));
}

TEST(ServerBinaryTest, MissingRepositoryAndBusyPortExitOne) {
  auto missing = RunCommand({ServerBinary(), "--model-repository", "/nonexistent/models",
                             "--grpc-address", "127.0.0.1:0", "--metrics-address",
                             "127.0.0.1:0"});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->exit_code, 1);
  EXPECT_THAT(missing->err, HasSubstr("server.model_repository"));

  TempRepository repo;
  repo.AddCharlm("charlm", "{kind: dynamic}");
  auto first = ServerProcess::StartWithRepository(repo.root());
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = RunCommand({ServerBinary(), "--model-repository", repo.root(),
                            "--grpc-address", first->address(), "--metrics-address",
                            "127.0.0.1:0"});
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->exit_code, 1);
  EXPECT_THAT(second->err, HasSubstr("cannot listen"));
}

TEST(ServerBinaryTest, LogsStartupStepsWithTimestampsAndNoPerRequestLines) {
  TempRepository repo;
  repo.AddCharlm("charlm", "{kind: dynamic}");
  repo.AddModel("broken", 1, kGoldensDir + "/lstm_2l/input.npy", "", "");
  auto server = ServerProcess::StartWithRepository(repo.root());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  int64_t rows = 0, cols = 0;
  const auto heldout = HeldoutTokens(&rows, &cols);
  const auto tokens = TokenSlice(heldout, cols, 0, 1, 10);
  auto stub = inference::GRPCInferenceService::NewStub(Connect(server->address()));
  for (int i = 0; i < 20; ++i) {
    grpc::ClientContext ctx;
    inference::ModelInferResponse response;
    ASSERT_TRUE(stub->ModelInfer(&ctx, TokenRequest("charlm", tokens, 1, 10), &response).ok());
  }
  // An idle open connection would hold gRPC's shutdown ~5 s (it waits for
  // the client to close after GOAWAY); not what this test is about.
  stub.reset();
  auto code = server->Stop();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
  const std::string log = server->Log();
  // Every line starts with an ISO-8601 UTC timestamp.
  std::istringstream lines(log);
  std::string line;
  int count = 0;
  const std::regex stamp(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [DIWE] \w+: .+)");
  while (std::getline(lines, line)) {
    ++count;
    EXPECT_TRUE(std::regex_match(line, stamp)) << line;
  }
  EXPECT_THAT(log, HasSubstr("listening on gRPC"));
  EXPECT_THAT(log, HasSubstr("loaded model charlm v1"));
  EXPECT_THAT(log, HasSubstr("broken"));  // why it failed
  EXPECT_THAT(log, HasSubstr("shutdown complete"));
  // Start-up, loads, shutdown: a handful of lines, not one per request.
  EXPECT_LT(count, 15) << log;
}

TEST(ServerBinaryTest, SigtermUnderLoadLosesNoAcceptedRequest) {
  TempRepository repo;
  repo.AddCharlm("charlm", "{kind: dynamic, max_batch_size: 16, max_queue_delay_us: 500}");
  auto server = ServerProcess::StartWithRepository(repo.root(), {"--worker-threads", "2"});
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  int64_t rows = 0, cols = 0;
  const auto heldout = HeldoutTokens(&rows, &cols);
  const auto tokens = TokenSlice(heldout, cols, 0, 2, 60);

  std::atomic<bool> signalled{false}, stop{false};
  std::atomic<int> ok_before{0}, ok_after{0};
  std::mutex mu;
  std::map<grpc::StatusCode, int> errors;
  std::string first_error;
  std::vector<std::thread> clients;
  for (int c = 0; c < 16; ++c) {
    clients.emplace_back([&] {
      auto stub = inference::GRPCInferenceService::NewStub(Connect(server->address()));
      while (!stop.load()) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        inference::ModelInferResponse response;
        const bool after = signalled.load();
        const grpc::Status status =
            stub->ModelInfer(&ctx, TokenRequest("charlm", tokens, 2, 60), &response);
        if (status.ok() && OutputFloats(response).size() == 2u * 60 * 97) {
          ++(after ? ok_after : ok_before);
          continue;
        }
        std::lock_guard<std::mutex> lock(mu);
        ++errors[status.error_code()];
        if (first_error.empty()) first_error = status.error_message();
        if (!signalled.load()) continue;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  }
  while (ok_before.load() < 50) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  signalled = true;
  auto code = server->Stop(std::chrono::seconds(60));
  stop = true;
  for (auto& t : clients) t.join();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << server->LogTail();
  // Everything the server accepted was answered, and every answer reached
  // its client: the server's count of accepted requests equals the clients'
  // count of OK answers. The only failures are calls gRPC refused once it
  // stopped accepting (UNAVAILABLE, or CANCELLED for calls that were still
  // waiting to be matched to a handler; the server never saw them).
  const auto accepted = server->FindInLog(R"((\d+) inference requests accepted)");
  const auto answered_ok = server->FindInLog(R"(answered \((\d+) OK\))");
  ASSERT_TRUE(accepted && answered_ok) << server->LogTail();
  EXPECT_EQ(std::stoi(*accepted), ok_before.load() + ok_after.load());
  EXPECT_EQ(std::stoi(*answered_ok), ok_before.load() + ok_after.load());
  for (const auto& [status_code, n] : errors) {
    EXPECT_TRUE(status_code == grpc::StatusCode::UNAVAILABLE ||
                status_code == grpc::StatusCode::CANCELLED)
        << n << " calls failed with code " << status_code << ": " << first_error;
  }
  EXPECT_GT(ok_before.load(), 0);
  EXPECT_THAT(server->Log(), HasSubstr("shutdown complete"));
}

}  // namespace
}  // namespace rnnserve::testing
