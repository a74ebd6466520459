// Clock: the time source of the batchers, injectable so timeout tests are
// deterministic.
//
// Every timed wait in server/batching goes through Clock::WaitUntil, so a
// FakeClock controls both what "now" is and when timed waiters wake. Tests
// advance a FakeClock by hand instead of sleeping.
//
// Thread safety: all methods of both clocks are safe to call concurrently.
#ifndef RNNSERVE_BATCHING_CLOCK_H_
#define RNNSERVE_BATCHING_CLOCK_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <vector>

namespace rnnserve::batching {

// A deadline that never passes.
inline constexpr int64_t kNoDeadline = std::numeric_limits<int64_t>::max();

class Clock {
 public:
  virtual ~Clock() = default;

  // Monotonic microseconds since an arbitrary origin.
  virtual int64_t NowMicros() const = 0;

  // Blocks on `cv` (`lock` held on entry, released while blocked, held again
  // on return) until `cv` is notified, NowMicros() >= deadline_us, or a
  // spurious wake-up. Returns at once if the deadline has already passed.
  // Callers re-check their condition in a loop, as with any condition
  // variable. kNoDeadline waits for a notification only.
  virtual void WaitUntil(std::condition_variable& cv,
                         std::unique_lock<std::mutex>& lock,
                         int64_t deadline_us) = 0;
};

// std::chrono::steady_clock.
class RealClock final : public Clock {
 public:
  // Process-wide instance; never destroyed.
  static RealClock* Default();

  int64_t NowMicros() const override;
  void WaitUntil(std::condition_variable& cv,
                 std::unique_lock<std::mutex>& lock,
                 int64_t deadline_us) override;
};

// Time stands still until AdvanceMicros/SetMicros; then every waiter is
// woken to re-check its state at the new time (under its own mutex, so no
// wake-up is lost). The mutex and condition variable of a waiter must outlive
// any concurrent AdvanceMicros call (true for a batcher owned by the test).
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_us = 0) : now_us_(start_us) {}

  int64_t NowMicros() const override;
  void WaitUntil(std::condition_variable& cv,
                 std::unique_lock<std::mutex>& lock,
                 int64_t deadline_us) override;

  void AdvanceMicros(int64_t delta_us);
  void SetMicros(int64_t now_us);  // must not go backwards

  // Blocks (for at most `timeout` of real time) until at least `n` threads
  // are parked in WaitUntil having started to wait at the current fake time
  // with a deadline still in the future, i.e. they have looked at their
  // state after the last time change and decided to wait. Returns false on
  // timeout. Tests use it to assert that nothing happens before a deadline.
  bool BlockUntilWaiters(
      int n, std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Threads currently parked in WaitUntil (whatever their deadline).
  int NumWaiters() const;

 private:
  struct Waiter {
    std::condition_variable* cv;
    std::mutex* mu;
    int64_t deadline_us;
    int64_t since_us;  // fake time when the wait began
  };

  mutable std::mutex mu_;
  std::condition_variable waiters_changed_;
  int64_t now_us_;                // guarded by mu_
  std::vector<Waiter*> waiters_;  // guarded by mu_; entries live on stacks
};

}  // namespace rnnserve::batching

#endif  // RNNSERVE_BATCHING_CLOCK_H_
