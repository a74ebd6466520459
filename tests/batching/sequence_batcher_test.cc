#include "server/batching/sequence_batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "server/batching/clock.h"
#include "tests/batching/test_util.h"

namespace rnnserve::batching {
namespace {

using testing::WaitFor;

// The state is the list of values the stream has seen, so the tests can
// check both order and resets; the processor appends the chunk's value and
// fails chunks whose value is negative.
using State = std::vector<int>;
using Batcher = SequenceBatcher<State, int>;

struct Recorder {
  std::mutex mu;
  std::condition_variable cv;
  // (sequence id, value) -> status codes of every completion.
  std::map<std::pair<uint64_t, int>, std::vector<StatusCode>> done;
  // (sequence id, value) -> the state after that chunk.
  std::map<std::pair<uint64_t, int>, State> after;
  std::vector<std::vector<std::pair<uint64_t, int>>> batches;
  int completions = 0;
  // Simulated compute time (not timing: it only lets other workers park).
  std::chrono::microseconds work{0};

  Batcher::Processor Processor() {
    return [this](std::vector<Batcher::Item>& batch) {
      if (work.count() > 0) std::this_thread::sleep_for(work);
      std::vector<std::pair<uint64_t, int>> chunks;
      for (Batcher::Item& item : batch) {
        chunks.emplace_back(item.chunk->sequence_id, item.chunk->payload);
        if (item.chunk->payload < 0) {
          item.status = Internal("bad chunk");
          continue;
        }
        item.state.push_back(item.chunk->payload);
        std::lock_guard<std::mutex> lock(mu);
        after[{item.chunk->sequence_id, item.chunk->payload}] = item.state;
      }
      std::lock_guard<std::mutex> lock(mu);
      batches.push_back(chunks);
    };
  }

  std::unique_ptr<Batcher::Chunk> Chunk(uint64_t id, int value,
                                        bool start = false, bool end = false,
                                        int64_t steps = 1) {
    auto chunk = std::make_unique<Batcher::Chunk>();
    chunk->sequence_id = id;
    chunk->sequence_start = start;
    chunk->sequence_end = end;
    chunk->steps = steps;
    chunk->payload = value;
    chunk->done = [this, id](Status status, int& value) {
      std::lock_guard<std::mutex> lock(mu);
      done[{id, value}].push_back(status.code());
      ++completions;
      cv.notify_all();
    };
    return chunk;
  }

  bool WaitCompletions(int n) {
    return WaitFor(mu, cv, [&] { return completions >= n; });
  }
  State After(uint64_t id, int value) {
    std::lock_guard<std::mutex> lock(mu);
    return after[{id, value}];
  }
  std::vector<StatusCode> Done(uint64_t id, int value) {
    std::lock_guard<std::mutex> lock(mu);
    return done[{id, value}];
  }
};

std::unique_ptr<Batcher> MakeBatcher(SequenceBatcherOptions options,
                                     Recorder& recorder) {
  auto batcher = Batcher::Create(options, recorder.Processor());
  EXPECT_TRUE(batcher.ok()) << batcher.status().ToString();
  return std::move(batcher).value();
}

Status Schedule(Batcher& batcher, std::unique_ptr<Batcher::Chunk> chunk) {
  return batcher.Schedule(&chunk);
}

const std::vector<StatusCode> kOk = {StatusCode::kOk};

TEST(SequenceBatcherTest, RejectsBadOptions) {
  Recorder r;
  SequenceBatcherOptions options;
  options.max_active_sequences = 0;
  EXPECT_EQ(Batcher::Create(options, r.Processor()).status().code(),
            StatusCode::kInvalidArgument);
  options = SequenceBatcherOptions();
  options.max_sequence_idle_us = 0;
  EXPECT_EQ(Batcher::Create(options, r.Processor()).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(SequenceBatcherTest, CarriesStateAcrossChunksInOrder) {
  FakeClock clock;
  Recorder r;
  SequenceBatcherOptions options;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 10, /*start=*/true)).ok());
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 11)).ok());
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 12, false, /*end=*/true)).ok());
  ASSERT_TRUE(r.WaitCompletions(3));
  EXPECT_EQ(r.After(1, 10), (State{10}));
  EXPECT_EQ(r.After(1, 11), (State{10, 11}));
  EXPECT_EQ(r.After(1, 12), (State{10, 11, 12}));
  EXPECT_EQ(r.Done(1, 12), kOk);
  EXPECT_EQ(r.batches.size(), 3u);  // one chunk per stream per batch
}

// A stream's answers must reach its caller in order even with several
// workers: the next chunk may not run before done() of the previous one has
// returned (a slow done() here would otherwise be overtaken).
TEST(SequenceBatcherTest, DoneOfAChunkReturnsBeforeTheNextChunkRuns) {
  SequenceBatcherOptions options;
  options.num_batch_threads = 3;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> processed, completed;
  auto batcher = Batcher::Create(options, [&](std::vector<Batcher::Item>& batch) {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& item : batch) processed.push_back(item.chunk->payload);
  });
  ASSERT_TRUE(batcher.ok());
  constexpr int kChunks = 20;
  std::atomic<bool> overtaken{false};
  for (int i = 0; i < kChunks; ++i) {
    auto chunk = std::make_unique<Batcher::Chunk>();
    chunk->sequence_id = 5;
    chunk->sequence_start = i == 0;
    chunk->sequence_end = i == kChunks - 1;
    chunk->payload = i;
    chunk->done = [&, i](Status status, int&) {
      // Not timing: only widens the window in which a later chunk could run.
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      std::lock_guard<std::mutex> lock(mu);
      if (static_cast<int>(processed.size()) > i + 1) overtaken = true;
      completed.push_back(i);
      cv.notify_all();
    };
    ASSERT_TRUE((*batcher)->Schedule(&chunk).ok());
  }
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30),
                          [&] { return completed.size() == kChunks; }));
  EXPECT_FALSE(overtaken.load());
  for (int i = 0; i < kChunks; ++i) EXPECT_EQ(completed[i], i);
}

TEST(SequenceBatcherTest, BatchesChunksOfDifferentStreams) {
  FakeClock clock;
  Recorder r;
  SequenceBatcherOptions options;
  options.max_batch_size = 4;
  options.max_queue_delay_us = 1000;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 10, true)).ok());
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 11)).ok());
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(2, 20, true)).ok());
  clock.AdvanceMicros(999);
  ASSERT_TRUE(clock.BlockUntilWaiters(1));
  EXPECT_EQ(batcher->GetStats().batches, 0);
  clock.AdvanceMicros(1);
  ASSERT_TRUE(r.WaitCompletions(2));
  // Stream 1's second chunk became runnable only now; it waited since
  // t=0, so it goes at once, alone.
  ASSERT_TRUE(r.WaitCompletions(3));
  std::lock_guard<std::mutex> lock(r.mu);
  ASSERT_EQ(r.batches.size(), 2u);
  EXPECT_EQ(r.batches[0],
            (std::vector<std::pair<uint64_t, int>>{{1, 10}, {2, 20}}));
  EXPECT_EQ(r.batches[1], (std::vector<std::pair<uint64_t, int>>{{1, 11}}));
  EXPECT_EQ((r.after[{1, 11}]), (State{10, 11}));
  EXPECT_EQ((r.after[{2, 20}]), (State{20}));
}

TEST(SequenceBatcherTest, FullBatchGoesWithoutDelayAndGroupsByLength) {
  FakeClock clock;
  Recorder r;
  SequenceBatcherOptions options;
  options.max_batch_size = 2;
  options.max_queue_delay_us = 1'000'000;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 10, true, false, 5)).ok());
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(2, 20, true, false, 7)).ok());
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(3, 30, true, false, 5)).ok());
  ASSERT_TRUE(r.WaitCompletions(2));  // the two T=5 chunks, no clock move
  clock.AdvanceMicros(1);
  ASSERT_TRUE(clock.BlockUntilWaiters(1));
  {
    std::lock_guard<std::mutex> lock(r.mu);
    ASSERT_EQ(r.batches.size(), 1u);
    EXPECT_EQ(r.batches[0],
              (std::vector<std::pair<uint64_t, int>>{{1, 10}, {3, 30}}));
  }
  clock.AdvanceMicros(1'000'000);
  ASSERT_TRUE(r.WaitCompletions(3));
}

TEST(SequenceBatcherTest, UnknownStreamWithoutStartIsFailedPrecondition) {
  Recorder r;
  auto batcher = MakeBatcher(SequenceBatcherOptions(), r);
  auto chunk = r.Chunk(42, 1);
  Status status = batcher->Schedule(&chunk);
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("sequence 42"), std::string::npos);
  EXPECT_NE(status.message().find("sequence_start"), std::string::npos);
  EXPECT_NE(chunk, nullptr);
}

TEST(SequenceBatcherTest, IdleStreamIsFreed) {
  FakeClock clock;
  Recorder r;
  SequenceBatcherOptions options;
  options.max_sequence_idle_us = 10'000;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 10, true)).ok());
  ASSERT_TRUE(r.WaitCompletions(1));
  clock.AdvanceMicros(9'999);
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 11)).ok());  // still live
  ASSERT_TRUE(r.WaitCompletions(2));
  EXPECT_EQ(r.After(1, 11), (State{10, 11}));
  clock.AdvanceMicros(9'999);
  ASSERT_TRUE(clock.BlockUntilWaiters(1));
  EXPECT_EQ(batcher->GetStats().active_sequences, 1);
  clock.AdvanceMicros(1);  // 10 ms after the last chunk finished
  ASSERT_TRUE(clock.BlockUntilWaiters(1));
  BatcherStats stats = batcher->GetStats();
  EXPECT_EQ(stats.active_sequences, 0);  // the worker freed it
  EXPECT_EQ(stats.expired_sequences, 1);
  EXPECT_EQ(Schedule(*batcher, r.Chunk(1, 12)).code(),
            StatusCode::kFailedPrecondition);
  // A new start works and begins from zero state.
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 13, true)).ok());
  ASSERT_TRUE(r.WaitCompletions(3));
  EXPECT_EQ(r.After(1, 13), (State{13}));
}

// A caller that got its answer and then waited past the idle limit finds
// the stream gone, even if it sends before the batcher finished answering
// (done() still running). Done here from inside done() itself, the widest
// form of that window; a restart under the same id in that window is a new
// stream the old answer's bookkeeping must not touch.
TEST(SequenceBatcherTest, IdleTimeCountsFromTheAnswerNotFromDoneReturning) {
  FakeClock clock;
  SequenceBatcherOptions options;
  options.max_sequence_idle_us = 10'000;
  options.num_batch_threads = 1;  // 12 runs after 10's done() returned
  options.clock = &clock;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> completed;
  std::map<int, State> after;
  Batcher* batcher_ptr = nullptr;
  Status late = Status::Ok(), restart = Status::Ok();
  auto batcher = Batcher::Create(options, [&](std::vector<Batcher::Item>& batch) {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& item : batch) {
      item.state.push_back(item.chunk->payload);
      after[item.chunk->payload] = item.state;
    }
  });
  ASSERT_TRUE(batcher.ok());
  batcher_ptr = batcher->get();
  auto make = [&](int value, bool start, bool end) {
    auto chunk = std::make_unique<Batcher::Chunk>();
    chunk->sequence_id = 1;
    chunk->sequence_start = start;
    chunk->sequence_end = end;
    chunk->payload = value;
    chunk->done = [&](Status, int& v) {
      std::lock_guard<std::mutex> lock(mu);
      completed.push_back(v);
      cv.notify_all();
    };
    return chunk;
  };
  auto first = make(10, true, false);
  first->done = [&](Status, int& v) {
    clock.AdvanceMicros(10'000);
    auto next = make(11, false, false);
    late = batcher_ptr->Schedule(&next);
    auto again = make(12, true, false);
    restart = batcher_ptr->Schedule(&again);
    std::lock_guard<std::mutex> lock(mu);
    completed.push_back(v);
    cv.notify_all();
  };
  ASSERT_TRUE((*batcher)->Schedule(&first).ok());
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30),
                          [&] { return completed.size() == 2; }));
  EXPECT_EQ(late.code(), StatusCode::kFailedPrecondition) << late.ToString();
  EXPECT_TRUE(restart.ok()) << restart.ToString();
  EXPECT_EQ(after[12], (State{12}));  // the restart began from zero state
  lock.unlock();
  // The restarted stream is live and takes its next chunk in order.
  auto last = make(13, false, true);
  ASSERT_TRUE((*batcher)->Schedule(&last).ok());
  lock.lock();
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30),
                          [&] { return completed.size() == 3; }));
  EXPECT_EQ(after[13], (State{12, 13}));
  EXPECT_EQ(completed, (std::vector<int>{10, 12, 13}));
}

TEST(SequenceBatcherTest, BoundsLiveStreams) {
  FakeClock clock;
  Recorder r;
  SequenceBatcherOptions options;
  options.max_active_sequences = 2;
  options.max_sequence_idle_us = 1000;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 10, true)).ok());
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(2, 20, true)).ok());
  EXPECT_EQ(Schedule(*batcher, r.Chunk(3, 30, true)).code(),
            StatusCode::kResourceExhausted);
  // Restarting a live id is not a new stream.
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(2, 21, true)).ok());
  // Ending stream 1 frees its slot once its last chunk ran.
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 11, false, true)).ok());
  ASSERT_TRUE(r.WaitCompletions(4));
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(3, 31, true)).ok());
  ASSERT_TRUE(r.WaitCompletions(5));
  EXPECT_EQ(Schedule(*batcher, r.Chunk(4, 40, true)).code(),
            StatusCode::kResourceExhausted);
  // Idle expiry frees slots too (checked at Schedule time as well).
  clock.AdvanceMicros(1000);
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(4, 41, true)).ok());
  ASSERT_TRUE(r.WaitCompletions(6));
}

TEST(SequenceBatcherTest, StartOnLiveStreamRestartsIt) {
  Recorder r;
  auto batcher = MakeBatcher(SequenceBatcherOptions(), r);
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 10, true)).ok());
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 11)).ok());
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 20, true)).ok());
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 21)).ok());
  ASSERT_TRUE(r.WaitCompletions(4));
  EXPECT_EQ(r.After(1, 11), (State{10, 11}));
  EXPECT_EQ(r.After(1, 20), (State{20}));
  EXPECT_EQ(r.After(1, 21), (State{20, 21}));
}

TEST(SequenceBatcherTest, EndFreesTheStream) {
  Recorder r;
  auto batcher = MakeBatcher(SequenceBatcherOptions(), r);
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(5, 1, true, true)).ok());
  // Refused at once: the end is already queued.
  EXPECT_EQ(Schedule(*batcher, r.Chunk(5, 2)).code(),
            StatusCode::kFailedPrecondition);
  ASSERT_TRUE(r.WaitCompletions(1));
  EXPECT_EQ(r.Done(5, 1), kOk);
  batcher->Stop();
  EXPECT_EQ(batcher->GetStats().active_sequences, 0);
}

TEST(SequenceBatcherTest, FailedChunkAbortsTheRestOfItsStream) {
  FakeClock clock;
  Recorder r;
  SequenceBatcherOptions options;
  options.max_queue_delay_us = 1000;  // all three queue before any runs
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, -1, true)).ok());  // fails
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 11)).ok());
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 20, true)).ok());  // restart
  clock.AdvanceMicros(1000);
  ASSERT_TRUE(r.WaitCompletions(3));
  EXPECT_EQ(r.Done(1, -1), (std::vector<StatusCode>{StatusCode::kInternal}));
  EXPECT_EQ(r.Done(1, 11), (std::vector<StatusCode>{StatusCode::kAborted}));
  EXPECT_EQ(r.Done(1, 20), kOk);
  EXPECT_EQ(r.After(1, 20), (State{20}));
}

TEST(SequenceBatcherTest, ExpiredChunkIsNotRunAndAbortsItsStream) {
  FakeClock clock;
  Recorder r;
  SequenceBatcherOptions options;
  options.max_queue_delay_us = 1000;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  auto first = r.Chunk(1, 10, true);
  first->deadline_us = 500;
  ASSERT_TRUE(batcher->Schedule(&first).ok());
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 11)).ok());
  clock.AdvanceMicros(500);
  ASSERT_TRUE(r.WaitCompletions(2));
  EXPECT_EQ(r.Done(1, 10),
            (std::vector<StatusCode>{StatusCode::kDeadlineExceeded}));
  EXPECT_EQ(r.Done(1, 11), (std::vector<StatusCode>{StatusCode::kAborted}));
  EXPECT_EQ(batcher->GetStats().batches, 0);
  EXPECT_EQ(Schedule(*batcher, r.Chunk(1, 12)).code(),
            StatusCode::kFailedPrecondition);
}

TEST(SequenceBatcherTest, FullQueueRefusesAtOnce) {
  FakeClock clock;
  Recorder r;
  SequenceBatcherOptions options;
  options.max_queue_size = 2;
  options.max_queue_delay_us = 1'000'000;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, 10, true)).ok());
  ASSERT_TRUE(Schedule(*batcher, r.Chunk(2, 20, true)).ok());
  EXPECT_EQ(Schedule(*batcher, r.Chunk(3, 30, true)).code(),
            StatusCode::kResourceExhausted);
  batcher->Stop();
  std::lock_guard<std::mutex> lock(r.mu);
  EXPECT_EQ(r.completions, 2);
}

TEST(SequenceBatcherTest, StopDrainsEveryChunkInOrder) {
  FakeClock clock;
  Recorder r;
  SequenceBatcherOptions options;
  options.max_queue_delay_us = 1'000'000'000;
  options.num_batch_threads = 2;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  for (uint64_t id = 1; id <= 5; ++id) {
    for (int v = 0; v < 4; ++v) {
      ASSERT_TRUE(Schedule(*batcher, r.Chunk(id, v, v == 0)).ok());
    }
  }
  batcher->Stop();
  EXPECT_EQ(Schedule(*batcher, r.Chunk(9, 0, true)).code(),
            StatusCode::kUnavailable);
  std::lock_guard<std::mutex> lock(r.mu);
  EXPECT_EQ(r.completions, 20);
  for (uint64_t id = 1; id <= 5; ++id) {
    EXPECT_EQ((r.after[{id, 3}]), (State{0, 1, 2, 3})) << id;
    for (int v = 0; v < 4; ++v) EXPECT_EQ((r.done[{id, v}]), kOk);
  }
}

// More workers than runnable streams: idle workers park while chunks are
// still queued behind in-flight ones, and must still be released by Stop.
TEST(SequenceBatcherTest, StopJoinsWorkersParkedBehindInFlightStreams) {
  FakeClock clock;
  Recorder r;
  SequenceBatcherOptions options;
  options.max_queue_delay_us = 1'000'000'000;
  options.num_batch_threads = 4;
  options.clock = &clock;
  r.work = std::chrono::microseconds(200);
  auto batcher = MakeBatcher(options, r);
  for (int v = 0; v < 30; ++v) {
    ASSERT_TRUE(Schedule(*batcher, r.Chunk(1, v, v == 0)).ok());
  }
  batcher->Stop();
  std::lock_guard<std::mutex> lock(r.mu);
  EXPECT_EQ(r.completions, 30);
  EXPECT_EQ((r.after[{1, 29}]).size(), 30u);
}

TEST(SequenceBatcherTest, ConcurrentStreams) {
  constexpr int kThreads = 8;
  constexpr int kStreamsPerThread = 4;
  constexpr int kChunks = 50;
  Recorder r;
  SequenceBatcherOptions options;  // real clock
  options.max_batch_size = 16;
  options.max_queue_delay_us = 200;
  options.max_queue_size = kThreads * kStreamsPerThread * kChunks;
  options.num_batch_threads = 3;
  auto batcher = MakeBatcher(options, r);
  std::atomic<int> refused{0};
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&, t] {
      for (int v = 0; v < kChunks; ++v) {
        for (int s = 0; s < kStreamsPerThread; ++s) {
          const uint64_t id = t * kStreamsPerThread + s;
          Status st =
              Schedule(*batcher, r.Chunk(id, v, v == 0, v == kChunks - 1));
          if (!st.ok()) refused.fetch_add(1);
        }
      }
    });
  }
  for (auto& p : producers) p.join();
  ASSERT_TRUE(r.WaitCompletions(kThreads * kStreamsPerThread * kChunks));
  batcher->Stop();
  EXPECT_EQ(refused.load(), 0);
  State expected;
  for (int v = 0; v < kChunks; ++v) expected.push_back(v);
  std::lock_guard<std::mutex> lock(r.mu);
  for (uint64_t id = 0; id < kThreads * kStreamsPerThread; ++id) {
    EXPECT_EQ((r.after[{id, kChunks - 1}]), expected) << id;
    for (int v = 0; v < kChunks; ++v) ASSERT_EQ((r.done[{id, v}]), kOk);
  }
  size_t biggest = 0;
  for (const auto& b : r.batches) biggest = std::max(biggest, b.size());
  EXPECT_GT(biggest, 1u);
  EXPECT_EQ(batcher->GetStats().active_sequences, 0);
}

}  // namespace
}  // namespace rnnserve::batching
