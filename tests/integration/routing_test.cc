// Sticky sequence routing across three real rnnserve processes on loopback
// (issue 6 §3): a RoutingClient sends every chunk of a stream to the
// replica its consistent hash names, the replicas really hold the state
// (a non-owner refuses the stream's next chunk, the owner takes it), and
// when one replica is SIGTERMed mid-run only its streams move: they restart
// on a survivor and still equal the whole-sequence answer, while the
// survivors' streams and stateless requests see no error at all.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "client/inference_client.h"
#include "client/routing_client.h"
#include "client/sequence_chunks.h"
#include "tests/integration/server_process.h"
#include "tests/integration/test_server.h"

namespace rnnserve::testing {
namespace {

using client::InferenceClient;
using client::InferRequest;
using client::RoutedStreamResult;
using client::RoutingClient;
using client::StreamRequest;

constexpr int kStreams = 30;
constexpr int kSteps = 40;
constexpr int kChunk = 8;

class RoutingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokens_ = HeldoutTokens(&rows_, &cols_);
    // "seq" holds per-stream state; "charlm" is the same model, stateless.
    repo_.AddCharlm("seq", "{kind: sequence, max_batch_size: 16}");
    repo_.AddCharlm("charlm", "{kind: dynamic, max_batch_size: 16}");
    for (int i = 0; i < 3; ++i) {
      auto server = ServerProcess::StartWithRepository(repo_.root());
      ASSERT_TRUE(server.ok()) << server.status().ToString();
      servers_.push_back(std::make_unique<ServerProcess>(std::move(*server)));
      InferenceClient::Options options;
      options.address = servers_.back()->address();
      options.timeout = std::chrono::seconds(20);
      auto direct = InferenceClient::Create(options);
      ASSERT_TRUE(direct.ok());
      direct_[options.address] = std::move(*direct);
      addresses_.push_back(options.address);
    }
    RoutingClient::Options options;
    options.endpoints = addresses_;
    options.client.timeout = std::chrono::seconds(20);
    auto router = RoutingClient::Create(options);
    ASSERT_TRUE(router.ok()) << router.status().ToString();
    router_ = std::move(*router);
    // Oracle: each stream's sequence sent whole (start and end in one
    // request) to one server.
    for (int s = 0; s < kStreams; ++s) {
      InferRequest whole;
      whole.model = "seq";
      whole.input = Sequence(s);
      whole.input.shape = {1, kSteps};
      whole.sequence = {900000u + s, true, true};
      auto out = direct_[addresses_[0]]->Infer(whole);
      ASSERT_TRUE(out.ok()) << out.status().ToString();
      whole_.push_back(out->data);
    }
  }

  NpyArray Sequence(int s) const {
    return NpyArray::FromInt64({kSteps},
                               TokenSlice(tokens_, cols_, s, 1, kSteps));
  }

  // Steps [k * kChunk, (k + 1) * kChunk) of stream s, as [1, kChunk].
  NpyArray Chunk(int s, int k) const {
    NpyArray whole = Sequence(s);
    whole.shape = {1, kSteps};
    return client::SliceSteps(whole, {k * kChunk, (k + 1) * kChunk});
  }

  StreamRequest Stream(int s, uint64_t id) const {
    StreamRequest r;
    r.model = "seq";
    r.sequence = Sequence(s);
    r.chunk_steps = kChunk;
    r.sequence_id = id;
    return r;
  }

  std::vector<int64_t> tokens_;
  int64_t rows_ = 0, cols_ = 0;
  TempRepository repo_;
  std::vector<std::unique_ptr<ServerProcess>> servers_;
  std::vector<std::string> addresses_;
  std::map<std::string, std::unique_ptr<InferenceClient>> direct_;
  std::unique_ptr<RoutingClient> router_;
  std::vector<std::vector<float>> whole_;
};

TEST_F(RoutingTest,
       StreamsStayOnTheirOwnerAndOnlyTheKilledReplicasStreamsMove) {
  // --- 1. Every chunk of every stream reaches OwnerOf(id). ---
  std::vector<StatusOr<RoutedStreamResult>> results(
      kStreams, Status(StatusCode::kUnknown, "not run"));
  {
    std::vector<std::thread> threads;
    for (int s = 0; s < kStreams; ++s) {
      threads.emplace_back([&, s] {
        results[s] = router_->StreamWithRestart(Stream(s, 1 + s));
      });
    }
    for (auto& t : threads) t.join();
  }
  std::map<std::string, int> streams_per_owner;
  for (int s = 0; s < kStreams; ++s) {
    ASSERT_TRUE(results[s].ok())
        << "stream " << s << ": " << results[s].status().ToString();
    const std::string owner = router_->OwnerOf(1 + s);
    ++streams_per_owner[owner];
    EXPECT_EQ(results[s]->restarts, 0);
    EXPECT_THAT(results[s]->chunk_endpoints,
                ::testing::Each(::testing::Eq(owner)))
        << "stream " << s;
    const int64_t width = static_cast<int64_t>(whole_[s].size()) / kSteps;
    EXPECT_EQ(results[s]->output.shape,
              (std::vector<int64_t>{1, kSteps, width}));
    EXPECT_LT(MaxAbsDiff(results[s]->output.data, whole_[s]), 1e-4)
        << "stream " << s;
  }
  EXPECT_EQ(streams_per_owner.size(), 3u)
      << "30 streams should use all three replicas";

  // The state really lives on the owner only: after a start chunk through
  // the router, the stream's next chunk is refused by both other replicas
  // and accepted by the owner, with the whole-sequence answer's steps.
  for (int s = 0; s < kStreams; ++s) {
    const uint64_t id = 1000 + s;
    InferRequest chunk;
    chunk.model = "seq";
    chunk.input = Chunk(s, 0);
    chunk.sequence = {id, true, false};
    std::string by;
    ASSERT_TRUE(router_->InferSequenceChunk(chunk, &by).ok());
    ASSERT_EQ(by, router_->OwnerOf(id));
    chunk.input = Chunk(s, 1);
    chunk.sequence = {id, false, true};
    for (const std::string& address : addresses_) {
      if (address == by) continue;
      auto refused = direct_[address]->Infer(chunk);
      EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition)
          << "stream " << id << " on non-owner " << address << ": "
          << refused.status().ToString();
    }
    auto accepted = direct_[by]->Infer(chunk);
    ASSERT_TRUE(accepted.ok()) << accepted.status().ToString();
    const size_t width = whole_[s].size() / kSteps;
    const std::vector<float> expected(whole_[s].begin() + kChunk * width,
                                      whole_[s].begin() + 2 * kChunk * width);
    EXPECT_LT(MaxAbsDiff(accepted->data, expected), 1e-4) << "stream " << id;
  }

  // --- 2. SIGTERM one replica while every stream is mid-sequence. ---
  // Every stream stops after its second chunk; the victim is stopped; then
  // all go on. Meanwhile a client sends stateless requests.
  std::string victim;
  for (const auto& [owner, count] : streams_per_owner) {
    if (victim.empty() || count > streams_per_owner[victim]) victim = owner;
  }
  std::map<uint64_t, std::string> owner_before;
  for (int s = 0; s < kStreams; ++s)
    owner_before[2000 + s] = router_->OwnerOf(2000 + s);

  std::mutex mu;
  std::condition_variable cv;
  int paused = 0;
  bool resume = false;
  std::atomic<bool> stop_stateless{false};
  std::atomic<int> stateless_ok{0}, stateless_after_kill{0};
  std::atomic<bool> killed{false};
  std::vector<std::string> stateless_errors;
  std::thread stateless([&] {
    InferRequest request;
    request.model = "charlm";
    request.input =
        NpyArray::FromInt64({1, 16}, TokenSlice(tokens_, cols_, 60, 1, 16));
    while (!stop_stateless.load()) {
      auto r = router_->Infer(request);
      if (r.ok()) {
        ++stateless_ok;
        if (killed.load()) ++stateless_after_kill;
      } else {
        std::lock_guard<std::mutex> lock(mu);
        stateless_errors.push_back(r.status().ToString());
      }
    }
  });

  std::vector<StatusOr<RoutedStreamResult>> moved(
      kStreams, Status(StatusCode::kUnknown, "not run"));
  std::vector<std::thread> threads;
  for (int s = 0; s < kStreams; ++s) {
    threads.emplace_back([&, s] {
      bool waited = false;
      moved[s] = router_->StreamWithRestart(
          Stream(s, 2000 + s), [&](int64_t chunk, const std::string&) {
            if (chunk != 1 || waited) return;
            waited = true;
            std::unique_lock<std::mutex> lock(mu);
            ++paused;
            cv.notify_all();
            cv.wait_for(lock, std::chrono::seconds(60), [&] { return resume; });
          });
    });
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60),
                            [&] { return paused == kStreams; }));
  }
  ServerProcess* victim_process = nullptr;
  for (auto& server : servers_) {
    if (server->address() == victim) victim_process = server.get();
  }
  ASSERT_NE(victim_process, nullptr);
  ASSERT_EQ(kill(victim_process->pid(), SIGTERM), 0);
  killed = true;
  // Resume once the victim no longer accepts requests (draining or gone),
  // so that its streams' next chunks cannot slip in before the signal lands.
  for (int i = 0; i < 500; ++i) {
    auto ready = direct_[victim]->ServerReady();
    if (!ready.ok() || !*ready) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    resume = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
  // Some stateless traffic after the streams finished too.
  const int after_streams = stateless_after_kill.load();
  const auto give_up =
      std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (stateless_after_kill.load() < after_streams + 10 &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop_stateless = true;
  stateless.join();

  int restarted = 0;
  for (int s = 0; s < kStreams; ++s) {
    const uint64_t id = 2000 + s;
    ASSERT_TRUE(moved[s].ok())
        << "stream " << id << ": " << moved[s].status().ToString();
    EXPECT_LT(MaxAbsDiff(moved[s]->output.data, whole_[s]), 1e-4)
        << "stream " << id;
    if (owner_before[id] == victim) {
      // Restarted once, from step 0, wholly on a survivor.
      ++restarted;
      EXPECT_EQ(moved[s]->restarts, 1) << "stream " << id;
      EXPECT_NE(router_->OwnerOf(id), victim);
      EXPECT_THAT(moved[s]->chunk_endpoints,
                  ::testing::Each(::testing::Eq(router_->OwnerOf(id))));
    } else {
      // Untouched: no restart, same owner throughout.
      EXPECT_EQ(moved[s]->restarts, 0) << "stream " << id;
      EXPECT_EQ(router_->OwnerOf(id), owner_before[id]);
      EXPECT_THAT(moved[s]->chunk_endpoints,
                  ::testing::Each(::testing::Eq(owner_before[id])));
    }
  }
  EXPECT_GT(restarted, 0);
  EXPECT_LT(restarted, kStreams);
  EXPECT_TRUE(stateless_errors.empty()) << stateless_errors.front();
  EXPECT_GE(stateless_after_kill.load(), 10);
  RecordProperty("restarted_streams", restarted);
  RecordProperty("stateless_ok", stateless_ok.load());
  EXPECT_EQ(router_->HealthyEndpoints().size(), 2u);
  // The victim finishes its graceful shutdown on its own (Stop would send
  // a second SIGTERM, which means "exit at once").
  const auto exit_deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (victim_process->Running() &&
         std::chrono::steady_clock::now() < exit_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto code = victim_process->Stop();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0) << victim_process->LogTail();
}

}  // namespace
}  // namespace rnnserve::testing
