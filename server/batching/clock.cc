#include "server/batching/clock.h"

#include <algorithm>
#include <cassert>
#include <utility>

namespace rnnserve::batching {

RealClock* RealClock::Default() {
  static RealClock* clock = new RealClock();
  return clock;
}

int64_t RealClock::NowMicros() const {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void RealClock::WaitUntil(std::condition_variable& cv,
                          std::unique_lock<std::mutex>& lock,
                          int64_t deadline_us) {
  if (deadline_us == kNoDeadline) {
    cv.wait(lock);
    return;
  }
  const int64_t now = NowMicros();
  if (now >= deadline_us) return;
  cv.wait_for(lock, std::chrono::microseconds(deadline_us - now));
}

int64_t FakeClock::NowMicros() const {
  std::lock_guard<std::mutex> guard(mu_);
  return now_us_;
}

void FakeClock::WaitUntil(std::condition_variable& cv,
                          std::unique_lock<std::mutex>& lock,
                          int64_t deadline_us) {
  Waiter waiter{&cv, lock.mutex(), deadline_us, 0};
  {
    std::lock_guard<std::mutex> guard(mu_);
    if (now_us_ >= deadline_us) return;
    waiter.since_us = now_us_;
    waiters_.push_back(&waiter);
  }
  waiters_changed_.notify_all();
  // Lock order: the waiter's mutex, then mu_. AdvanceMicros takes the
  // waiter's mutex only after releasing mu_, and cannot get it before this
  // thread is blocked inside wait(), so its notification is never lost.
  cv.wait(lock);
  {
    std::lock_guard<std::mutex> guard(mu_);
    waiters_.erase(std::find(waiters_.begin(), waiters_.end(), &waiter));
  }
  waiters_changed_.notify_all();
}

void FakeClock::AdvanceMicros(int64_t delta_us) {
  assert(delta_us >= 0);
  std::vector<std::pair<std::mutex*, std::condition_variable*>> due;
  {
    std::lock_guard<std::mutex> guard(mu_);
    now_us_ += delta_us;
    // Every waiter is woken (not only those now due) so that it re-checks
    // its state at the new time; BlockUntilWaiters relies on that.
    for (const Waiter* w : waiters_) due.emplace_back(w->mu, w->cv);
  }
  for (auto& [mu, cv] : due) {
    std::lock_guard<std::mutex> guard(*mu);
    cv->notify_all();
  }
  waiters_changed_.notify_all();
}

void FakeClock::SetMicros(int64_t now_us) {
  int64_t delta;
  {
    std::lock_guard<std::mutex> guard(mu_);
    delta = now_us - now_us_;
  }
  AdvanceMicros(delta);
}

bool FakeClock::BlockUntilWaiters(int n, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return waiters_changed_.wait_for(lock, timeout, [&] {
    int parked = 0;
    for (const Waiter* w : waiters_) {
      if (w->since_us == now_us_ && w->deadline_us > now_us_) ++parked;
    }
    return parked >= n;
  });
}

int FakeClock::NumWaiters() const {
  std::lock_guard<std::mutex> guard(mu_);
  return static_cast<int>(waiters_.size());
}

}  // namespace rnnserve::batching
