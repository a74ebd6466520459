// Reservoir<T>: a bounded, uniform random sample of a stream (Vitter's
// Algorithm R), used to keep recent live inputs per model for live
// recalibration (SPEC §5).
//
// After n items have been offered, the reservoir holds min(n, capacity) of
// them, and every offered item is in it with the same probability
// capacity / n (for n > capacity). Item i (1-based) beyond the first
// `capacity` is kept with probability capacity / i and then replaces a slot
// chosen uniformly.
//
// Ownership: the reservoir owns its copies; Snapshot() returns copies, in
// slot order (not stream order).
// Thread safety: every method may be called concurrently (one mutex). Add()
// and Offer() hold it only for O(1) work plus, when the item is kept, a
// move (Add) or the `make` call (Offer).
// Randomness: std::mt19937_64 seeded from Options::seed, or from
// std::random_device when unset; a fixed seed makes the sample reproducible
// for a given sequence of calls (with one thread).
#ifndef RNNSERVE_METRICS_RESERVOIR_H_
#define RNNSERVE_METRICS_RESERVOIR_H_

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <random>
#include <utility>
#include <vector>

namespace rnnserve::metrics {

template <typename T>
class Reservoir {
 public:
  struct Options {
    // Items kept at most. Larger gives calibration more data and costs
    // memory (capacity x item size); 0 keeps nothing (Add only counts).
    size_t capacity = 256;
    // Fixed seed for reproducible tests; unset draws one from the OS.
    std::optional<uint64_t> seed;
  };

  explicit Reservoir(const Options& options)
      : capacity_(options.capacity),
        rng_(options.seed ? *options.seed : DrawSeed()) {
    items_.reserve(capacity_);
  }

  Reservoir(const Reservoir&) = delete;
  Reservoir& operator=(const Reservoir&) = delete;

  // Offers `item` to the sample; it is kept or dropped as Algorithm R says.
  void Add(T item) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::optional<size_t> slot = ChooseSlotLocked();
    if (!slot) return;
    if (*slot == items_.size()) {
      items_.push_back(std::move(item));
    } else {
      items_[*slot] = std::move(item);
    }
  }

  // Like Add(make()), but calls `make` (which returns a T) only when the
  // item is kept, so a caller with a large item (a whole input sequence)
  // copies it only for the capacity/n of requests that enter the sample.
  // `make` runs under the lock: keep it to a copy. Returns whether it was
  // kept.
  template <typename Make>
  bool Offer(Make&& make) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::optional<size_t> slot = ChooseSlotLocked();
    if (!slot) return false;
    if (*slot == items_.size()) {
      items_.push_back(make());
    } else {
      items_[*slot] = make();
    }
    return true;
  }

  // Copies of the items currently held.
  std::vector<T> Snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return items_;
  }

  // Items currently held, <= capacity().
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return items_.size();
  }

  // Items offered since construction (or the last Clear()).
  uint64_t seen() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

  size_t capacity() const { return capacity_; }

  // Empties the sample and restarts the count, e.g. after a recalibration
  // so the next one sees only data from after it.
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    items_.clear();
    seen_ = 0;
  }

 private:
  static uint64_t DrawSeed() {
    std::random_device device;
    return (static_cast<uint64_t>(device()) << 32) ^ device();
  }

  // Counts one offered item; returns the slot it goes to (== items_.size()
  // to append), or nothing if it is dropped.
  std::optional<size_t> ChooseSlotLocked() {
    ++seen_;
    if (items_.size() < capacity_) return items_.size();
    if (capacity_ == 0) return std::nullopt;
    std::uniform_int_distribution<uint64_t> index(0, seen_ - 1);
    const uint64_t j = index(rng_);
    if (j >= capacity_) return std::nullopt;
    return static_cast<size_t>(j);
  }

  const size_t capacity_;
  mutable std::mutex mu_;
  std::vector<T> items_;  // guarded by mu_
  uint64_t seen_ = 0;     // guarded by mu_
  std::mt19937_64 rng_;   // guarded by mu_
};

}  // namespace rnnserve::metrics

#endif  // RNNSERVE_METRICS_RESERVOIR_H_
