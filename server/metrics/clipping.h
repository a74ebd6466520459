// Counting helpers for calibration drift (SPEC §5): how many live input
// values fall outside a layer's calibrated int8 range, and the range live
// inputs actually span.
//
// The int8 grid is symmetric (engine/quantization.h): the first layer's
// input clips at LayerQuantization::input_clip, so a value is counted as
// clipped when |v| > limit. (The u8 grid's rounding lets values up to half
// a step past the limit through unchanged; counting from the limit itself
// slightly over-counts and is what the calibration report calls clipping.)
// NaN is always counted as outside.
//
// Feature inputs: CountOutside() over the request's floats, O(values).
// Token inputs: the first layer's input is an embedding row, a function of
// the token id alone, so TokenClipTable precomputes each token's clipped
// count and range once per model and a request costs O(tokens).
#ifndef RNNSERVE_METRICS_CLIPPING_H_
#define RNNSERVE_METRICS_CLIPPING_H_

#include <cstdint>
#include <limits>
#include <mutex>
#include <vector>

#include "server/engine/model_spec.h"

namespace rnnserve::metrics {

// Number of x[0..n) with |x| > limit or NaN. Pure, thread-safe.
int64_t CountOutside(const float* x, int64_t n, float limit);

// A closed interval of observed values; empty until something is seen.
struct ValueRange {
  float min = std::numeric_limits<float>::infinity();
  float max = -std::numeric_limits<float>::infinity();

  bool empty() const { return min > max; }
  // max(|min|, |max|), comparable with the calibrated absmax; 0 if empty.
  float absmax() const;
  // Widens to include v (NaN is ignored: CountOutside reports it).
  void Include(float v);
  void Merge(const ValueRange& other);
};

// The range of x[0..n) (NaN ignored). Pure, thread-safe.
ValueRange RangeOf(const float* x, int64_t n);

// Per-token clipping counts and ranges of an embedding table, for token
// inputs. Immutable after construction: share it read-only across threads.
class TokenClipTable {
 public:
  // `table` is [vocab_size][dim] row-major (the caller keeps it); `limit` is
  // the calibrated clip of the first layer's input.
  TokenClipTable(const float* table, int64_t vocab_size, int dim, float limit);
  TokenClipTable(const engine::EmbeddingSpec& embedding, float limit);

  // Clipped embedding values of the tokens ids[0..n) (each token counts its
  // whole row: dim() values). Ids outside [0, vocab_size) count 0; the
  // server has rejected them before running the model.
  int64_t Clipped(const int64_t* ids, int64_t n) const;
  int64_t Clipped(const int32_t* ids, int64_t n) const;

  // Range of the embedding values of ids[0..n) (invalid ids ignored).
  ValueRange Range(const int64_t* ids, int64_t n) const;
  ValueRange Range(const int32_t* ids, int64_t n) const;

  // Values per token, so clip fraction = Clipped(ids, n) / (n * dim()).
  int dim() const { return dim_; }
  int64_t vocab_size() const { return static_cast<int64_t>(counts_.size()); }
  float limit() const { return limit_; }

 private:
  template <typename Id>
  int64_t ClippedImpl(const Id* ids, int64_t n) const;
  template <typename Id>
  ValueRange RangeImpl(const Id* ids, int64_t n) const;

  int dim_;
  float limit_;
  std::vector<int32_t> counts_;     // [vocab]: values with |v| > limit
  std::vector<ValueRange> ranges_;  // [vocab]
};

// Observed range of the live values of one tensor, merged from many request
// threads. Thread-safe (one mutex, held for O(1) per call: callers compute a
// request's ValueRange first and merge it once).
class RangeTracker {
 public:
  void Merge(const ValueRange& range);
  void Observe(const float* x, int64_t n) { Merge(RangeOf(x, n)); }
  ValueRange Get() const;
  // Returns the range seen so far and starts over (for a gauge that shows
  // the range per scrape interval rather than since start-up).
  ValueRange TakeAndReset();

 private:
  mutable std::mutex mu_;
  ValueRange range_;  // guarded by mu_
};

}  // namespace rnnserve::metrics

#endif  // RNNSERVE_METRICS_CLIPPING_H_
