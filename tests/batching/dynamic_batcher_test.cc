#include "server/batching/dynamic_batcher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "server/batching/clock.h"
#include "tests/batching/test_util.h"

namespace rnnserve::batching {
namespace {

using testing::WaitFor;

struct TestTask {
  int id = 0;
  int n = 1;      // sequences
  int64_t t = 1;  // steps
  int64_t deadline = kNoDeadline;
  std::function<void(int id, Status)> on_done;

  int size() const { return n; }
  int64_t steps() const { return t; }
  int64_t deadline_us() const { return deadline; }
  void Fail(Status status) { on_done(id, std::move(status)); }
};

// Records every completion and every batch; the processor completes tasks
// with OK. All fields guarded by mu.
struct Recorder {
  std::mutex mu;
  std::condition_variable cv;
  std::map<int, std::vector<StatusCode>> done;  // id -> every completion
  std::vector<std::vector<int>> batches;        // task ids per batch
  std::vector<std::vector<int64_t>> batch_steps;

  void Done(int id, const Status& status) {
    std::lock_guard<std::mutex> lock(mu);
    done[id].push_back(status.code());
    cv.notify_all();
  }
  DynamicBatcher<TestTask>::Processor Processor() {
    return [this](DynamicBatcher<TestTask>::Batch& batch) {
      std::vector<int> ids;
      std::vector<int64_t> steps;
      for (auto& task : batch) {
        ids.push_back(task->id);
        steps.push_back(task->t);
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        batches.push_back(ids);
        batch_steps.push_back(steps);
      }
      for (auto& task : batch) task->on_done(task->id, Status::Ok());
    };
  }
  std::unique_ptr<TestTask> Task(int id, int n = 1, int64_t t = 1,
                                 int64_t deadline = kNoDeadline) {
    auto task = std::make_unique<TestTask>();
    task->id = id;
    task->n = n;
    task->t = t;
    task->deadline = deadline;
    task->on_done = [this](int i, Status s) { Done(i, s); };
    return task;
  }
  bool WaitDone(size_t count) {
    return WaitFor(mu, cv, [&] { return done.size() >= count; });
  }
  size_t NumBatches() {
    std::lock_guard<std::mutex> lock(mu);
    return batches.size();
  }
};

std::unique_ptr<DynamicBatcher<TestTask>> MakeBatcher(
    DynamicBatcherOptions options, Recorder& recorder) {
  auto batcher =
      DynamicBatcher<TestTask>::Create(options, recorder.Processor());
  EXPECT_TRUE(batcher.ok()) << batcher.status().ToString();
  return std::move(batcher).value();
}

void ScheduleOk(DynamicBatcher<TestTask>& batcher,
                std::unique_ptr<TestTask> task) {
  Status status = batcher.Schedule(&task);
  ASSERT_TRUE(status.ok()) << status.ToString();
  ASSERT_EQ(task, nullptr);
}

TEST(DynamicBatcherTest, RejectsBadOptions) {
  Recorder r;
  DynamicBatcherOptions options;
  options.max_batch_size = 0;
  EXPECT_EQ(
      DynamicBatcher<TestTask>::Create(options, r.Processor()).status().code(),
      StatusCode::kInvalidArgument);
  options = DynamicBatcherOptions();
  options.preferred_batch_sizes = {65};
  EXPECT_EQ(
      DynamicBatcher<TestTask>::Create(options, r.Processor()).status().code(),
      StatusCode::kInvalidArgument);
  options = DynamicBatcherOptions();
  EXPECT_EQ(DynamicBatcher<TestTask>::Create(options, nullptr).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(DynamicBatcherTest, FillsToMaxBatchSizeWithoutWaitingForDelay) {
  FakeClock clock;
  Recorder r;
  DynamicBatcherOptions options;
  options.max_batch_size = 4;
  options.max_queue_delay_us = 1'000'000;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  for (int i = 0; i < 8; ++i) ScheduleOk(*batcher, r.Task(i));
  ASSERT_TRUE(r.WaitDone(8));  // the clock never moved
  std::lock_guard<std::mutex> lock(r.mu);
  ASSERT_EQ(r.batches.size(), 2u);
  EXPECT_EQ(r.batches[0], (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(r.batches[1], (std::vector<int>{4, 5, 6, 7}));
  const BatcherStats stats = batcher->GetStats();
  EXPECT_EQ(stats.batches, 2);
  EXPECT_EQ(stats.processed, 8);
  EXPECT_EQ(stats.queued, 0);
  EXPECT_EQ(stats.batch_size_counts, (std::vector<int64_t>{0, 0, 0, 0, 2}));
}

TEST(DynamicBatcherTest, MultiSequenceTasksCountTowardMaxBatchSize) {
  FakeClock clock;
  Recorder r;
  DynamicBatcherOptions options;
  options.max_batch_size = 4;
  options.max_queue_delay_us = 1'000'000;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  ScheduleOk(*batcher, r.Task(0, 3));
  ScheduleOk(*batcher, r.Task(1, 2));  // 3 + 2 > 4: the first cannot grow
  ASSERT_TRUE(r.WaitDone(1));
  clock.AdvanceMicros(1);
  ASSERT_TRUE(clock.BlockUntilWaiters(1));
  {
    std::lock_guard<std::mutex> lock(r.mu);
    ASSERT_EQ(r.batches.size(), 1u);
    EXPECT_EQ(r.batches[0], (std::vector<int>{0}));
  }
  ScheduleOk(*batcher, r.Task(2, 2));  // 2 + 2 == 4: full
  ASSERT_TRUE(r.WaitDone(3));
  std::lock_guard<std::mutex> lock(r.mu);
  EXPECT_EQ(r.batches[1], (std::vector<int>{1, 2}));
}

TEST(DynamicBatcherTest, PartialBatchReleasedExactlyWhenDelayPasses) {
  FakeClock clock;
  Recorder r;
  DynamicBatcherOptions options;
  options.max_batch_size = 8;
  options.max_queue_delay_us = 1000;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  ScheduleOk(*batcher, r.Task(0));
  clock.AdvanceMicros(400);
  ScheduleOk(*batcher, r.Task(1));
  ScheduleOk(*batcher, r.Task(2));
  clock.AdvanceMicros(599);  // oldest has waited 999 us
  ASSERT_TRUE(clock.BlockUntilWaiters(1));
  EXPECT_EQ(r.NumBatches(), 0u);
  EXPECT_EQ(batcher->GetStats().queued, 3);
  clock.AdvanceMicros(1);  // 1000 us
  ASSERT_TRUE(r.WaitDone(3));
  std::lock_guard<std::mutex> lock(r.mu);
  ASSERT_EQ(r.batches.size(), 1u);
  EXPECT_EQ(r.batches[0], (std::vector<int>{0, 1, 2}));
}

TEST(DynamicBatcherTest, PreferredBatchSizeDispatchesAtOnce) {
  FakeClock clock;
  Recorder r;
  DynamicBatcherOptions options;
  options.max_batch_size = 8;
  options.max_queue_delay_us = 1'000'000;
  options.preferred_batch_sizes = {4, 2};
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  ScheduleOk(*batcher, r.Task(0));
  clock.AdvanceMicros(1);
  ASSERT_TRUE(clock.BlockUntilWaiters(1));
  EXPECT_EQ(r.NumBatches(), 0u);    // 1 is not preferred
  ScheduleOk(*batcher, r.Task(1));  // 2 is
  ASSERT_TRUE(r.WaitDone(2));
  ScheduleOk(*batcher, r.Task(2, 3));
  clock.AdvanceMicros(1);
  ASSERT_TRUE(clock.BlockUntilWaiters(1));
  EXPECT_EQ(r.NumBatches(), 1u);       // 3 is not preferred
  ScheduleOk(*batcher, r.Task(3, 1));  // 3 + 1 == 4 is
  ASSERT_TRUE(r.WaitDone(4));
  std::lock_guard<std::mutex> lock(r.mu);
  ASSERT_EQ(r.batches.size(), 2u);
  EXPECT_EQ(r.batches[0], (std::vector<int>{0, 1}));
  EXPECT_EQ(r.batches[1], (std::vector<int>{2, 3}));
}

TEST(DynamicBatcherTest, FullQueueRefusesAtOnceAndNeverCallsBack) {
  FakeClock clock;
  Recorder r;
  DynamicBatcherOptions options;
  options.max_batch_size = 8;
  options.max_queue_size = 2;
  options.max_queue_delay_us = 1'000'000;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  ScheduleOk(*batcher, r.Task(0));
  ScheduleOk(*batcher, r.Task(1));
  auto refused = r.Task(2);
  Status status = batcher->Schedule(&refused);
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted);
  ASSERT_NE(refused, nullptr);  // still the caller's
  EXPECT_EQ(batcher->GetStats().rejected_queue_full, 1);
  batcher->Stop();
  std::lock_guard<std::mutex> lock(r.mu);
  EXPECT_EQ(r.done.size(), 2u);
  EXPECT_EQ(r.done.count(2), 0u);
}

TEST(DynamicBatcherTest, ExpiredTasksFailWithDeadlineExceededAndAreNotRun) {
  FakeClock clock;
  Recorder r;
  DynamicBatcherOptions options;
  options.max_batch_size = 8;
  options.max_queue_delay_us = 1000;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  auto late = r.Task(9, 1, 1, /*deadline=*/0);
  EXPECT_EQ(batcher->Schedule(&late).code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(late, nullptr);

  ScheduleOk(*batcher, r.Task(0, 1, 1, /*deadline=*/500));
  ScheduleOk(*batcher, r.Task(1));
  clock.AdvanceMicros(499);
  ASSERT_TRUE(clock.BlockUntilWaiters(1));
  EXPECT_EQ(r.NumBatches(), 0u);
  clock.AdvanceMicros(1);  // task 0's deadline
  ASSERT_TRUE(r.WaitDone(1));
  clock.AdvanceMicros(500);  // task 1's delay
  ASSERT_TRUE(r.WaitDone(2));
  std::lock_guard<std::mutex> lock(r.mu);
  EXPECT_EQ(r.done[0],
            (std::vector<StatusCode>{StatusCode::kDeadlineExceeded}));
  EXPECT_EQ(r.done[1], (std::vector<StatusCode>{StatusCode::kOk}));
  ASSERT_EQ(r.batches.size(), 1u);
  EXPECT_EQ(r.batches[0], (std::vector<int>{1}));
  EXPECT_EQ(batcher->GetStats().deadline_exceeded, 1);
}

TEST(DynamicBatcherTest, GroupsByLength) {
  FakeClock clock;
  Recorder r;
  DynamicBatcherOptions options;
  options.max_batch_size = 8;
  options.max_queue_delay_us = 100;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  for (int i = 0; i < 6; ++i) ScheduleOk(*batcher, r.Task(i, 1, i % 2 ? 7 : 5));
  clock.AdvanceMicros(100);
  ASSERT_TRUE(r.WaitDone(6));
  std::lock_guard<std::mutex> lock(r.mu);
  ASSERT_EQ(r.batches.size(), 2u);
  for (const auto& steps : r.batch_steps) {
    EXPECT_EQ(std::set<int64_t>(steps.begin(), steps.end()).size(), 1u);
  }
  EXPECT_EQ(r.batches[0], (std::vector<int>{0, 2, 4}));  // oldest group first
  EXPECT_EQ(r.batches[1], (std::vector<int>{1, 3, 5}));
}

TEST(DynamicBatcherTest, MixesLengthsWhenGroupingIsOff) {
  FakeClock clock;
  Recorder r;
  DynamicBatcherOptions options;
  options.max_batch_size = 8;
  options.max_queue_delay_us = 100;
  options.group_by_length = false;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  for (int i = 0; i < 4; ++i) ScheduleOk(*batcher, r.Task(i, 1, i % 2 ? 7 : 5));
  clock.AdvanceMicros(100);
  ASSERT_TRUE(r.WaitDone(4));
  std::lock_guard<std::mutex> lock(r.mu);
  ASSERT_EQ(r.batches.size(), 1u);
  EXPECT_EQ(r.batches[0], (std::vector<int>{0, 1, 2, 3}));
}

TEST(DynamicBatcherTest, RejectsOversizeAndEmptyTasks) {
  Recorder r;
  DynamicBatcherOptions options;
  options.max_batch_size = 4;
  auto batcher = MakeBatcher(options, r);
  auto big = r.Task(0, 5);
  EXPECT_EQ(batcher->Schedule(&big).code(), StatusCode::kInvalidArgument);
  EXPECT_NE(big, nullptr);
  auto empty = r.Task(1, 0);
  EXPECT_EQ(batcher->Schedule(&empty).code(), StatusCode::kInvalidArgument);
  std::unique_ptr<TestTask> null;
  EXPECT_EQ(batcher->Schedule(&null).code(), StatusCode::kInvalidArgument);
  batcher->Stop();
  EXPECT_EQ(r.NumBatches(), 0u);
}

TEST(DynamicBatcherTest, StopDrainsEveryTaskExactlyOnce) {
  FakeClock clock;
  Recorder r;
  DynamicBatcherOptions options;
  options.max_batch_size = 8;
  options.max_queue_delay_us = 1'000'000'000;
  options.num_batch_threads = 3;
  options.clock = &clock;
  auto batcher = MakeBatcher(options, r);
  for (int i = 0; i < 50; ++i) ScheduleOk(*batcher, r.Task(i, 1, 1 + i % 5));
  batcher->Stop();  // no clock movement: the delay never passes
  auto after = r.Task(99);
  EXPECT_EQ(batcher->Schedule(&after).code(), StatusCode::kUnavailable);
  std::lock_guard<std::mutex> lock(r.mu);
  ASSERT_EQ(r.done.size(), 50u);
  for (const auto& [id, codes] : r.done) {
    EXPECT_EQ(codes, (std::vector<StatusCode>{StatusCode::kOk})) << id;
  }
  batcher->Stop();  // idempotent
}

TEST(DynamicBatcherTest, ConcurrentProducersEveryCallbackExactlyOnce) {
  constexpr int kProducers = 16;
  constexpr int kPerProducer = 200;
  constexpr int kTotal = kProducers * kPerProducer;
  Recorder r;
  DynamicBatcherOptions options;  // real clock
  options.max_batch_size = 16;
  options.max_queue_delay_us = 500;
  options.max_queue_size = kTotal;
  options.num_batch_threads = 4;
  auto batcher = MakeBatcher(options, r);
  std::vector<std::atomic<int>> calls(kTotal);
  std::atomic<int> refused{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        const int id = p * kPerProducer + i;
        auto task = r.Task(id, 1 + id % 3, 1 + id % 4);
        task->on_done = [&](int done_id, Status s) {
          calls[done_id].fetch_add(1);
          r.Done(done_id, s);
        };
        if (!batcher->Schedule(&task).ok()) refused.fetch_add(1);
      }
    });
  }
  for (auto& t : producers) t.join();
  ASSERT_TRUE(r.WaitDone(kTotal));
  batcher->Stop();
  EXPECT_EQ(refused.load(), 0);
  for (int i = 0; i < kTotal; ++i) ASSERT_EQ(calls[i].load(), 1) << i;
  const BatcherStats stats = batcher->GetStats();
  EXPECT_EQ(stats.processed, kTotal);
  EXPECT_LT(stats.batches, kTotal);  // batches of more than one task formed
  std::lock_guard<std::mutex> lock(r.mu);
  size_t biggest = 0;
  for (size_t b = 0; b < r.batches.size(); ++b) {
    biggest = std::max(biggest, r.batches[b].size());
    const auto& steps = r.batch_steps[b];
    EXPECT_EQ(std::set<int64_t>(steps.begin(), steps.end()).size(), 1u);
  }
  EXPECT_GT(biggest, 1u);
}

TEST(DynamicBatcherTest, BatchHookSeesEveryBatch) {
  FakeClock clock;
  Recorder r;
  std::atomic<int> hooked_sizes{0};
  DynamicBatcherOptions options;
  options.max_batch_size = 3;
  options.clock = &clock;
  options.on_batch = [&](const BatchInfo& info) {
    hooked_sizes.fetch_add(info.size);
  };
  auto batcher = MakeBatcher(options, r);
  for (int i = 0; i < 5; ++i) ScheduleOk(*batcher, r.Task(i));
  batcher->Stop();
  EXPECT_EQ(hooked_sizes.load(), 5);
}

}  // namespace
}  // namespace rnnserve::batching
