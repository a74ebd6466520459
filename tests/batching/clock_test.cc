#include "server/batching/clock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace rnnserve::batching {
namespace {

TEST(RealClockTest, IsMonotonicAndTimedWaitReturns) {
  RealClock* clock = RealClock::Default();
  const int64_t a = clock->NowMicros();
  std::mutex mu;
  std::condition_variable cv;
  std::unique_lock<std::mutex> lock(mu);
  clock->WaitUntil(cv, lock, a + 1000);  // returns by timeout (or spurious)
  EXPECT_GE(clock->NowMicros(), a);
  clock->WaitUntil(cv, lock, a - 1);  // already passed: returns at once
}

TEST(FakeClockTest, TimeMovesOnlyWhenAdvanced) {
  FakeClock clock(100);
  EXPECT_EQ(clock.NowMicros(), 100);
  clock.AdvanceMicros(50);
  EXPECT_EQ(clock.NowMicros(), 150);
  clock.SetMicros(1000);
  EXPECT_EQ(clock.NowMicros(), 1000);
}

TEST(FakeClockTest, WaiterWakesExactlyAtDeadline) {
  FakeClock clock;
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<bool> woke{false};
  std::thread waiter([&] {
    std::unique_lock<std::mutex> lock(mu);
    while (clock.NowMicros() < 1000) clock.WaitUntil(cv, lock, 1000);
    woke = true;
  });
  ASSERT_TRUE(clock.BlockUntilWaiters(1));
  clock.AdvanceMicros(999);
  ASSERT_TRUE(clock.BlockUntilWaiters(1));  // re-checked at 999, still waits
  EXPECT_FALSE(woke);
  clock.AdvanceMicros(1);
  waiter.join();
  EXPECT_TRUE(woke);
  EXPECT_EQ(clock.NumWaiters(), 0);
}

TEST(FakeClockTest, PassedDeadlineReturnsAtOnce) {
  FakeClock clock(10);
  std::mutex mu;
  std::condition_variable cv;
  std::unique_lock<std::mutex> lock(mu);
  clock.WaitUntil(cv, lock, 10);
  clock.WaitUntil(cv, lock, 5);
  EXPECT_EQ(clock.NumWaiters(), 0);
}

}  // namespace
}  // namespace rnnserve::batching
