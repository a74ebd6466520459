// Helpers shared by the batching tests: bounded real-time waits (timing
// itself is always driven by a FakeClock).
#ifndef RNNSERVE_TESTS_BATCHING_TEST_UTIL_H_
#define RNNSERVE_TESTS_BATCHING_TEST_UTIL_H_

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>

namespace rnnserve::batching::testing {

// Waits (at most 10 s of real time, so a bug fails instead of hanging)
// until `done()` holds; `done` is evaluated with `mu` held.
inline bool WaitFor(std::mutex& mu, std::condition_variable& cv,
                    const std::function<bool()>& done) {
  std::unique_lock<std::mutex> lock(mu);
  return cv.wait_for(lock, std::chrono::seconds(10), done);
}

}  // namespace rnnserve::batching::testing

#endif  // RNNSERVE_TESTS_BATCHING_TEST_UTIL_H_
