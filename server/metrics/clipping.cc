#include "server/metrics/clipping.h"

#include <algorithm>
#include <cmath>

namespace rnnserve::metrics {
namespace {

// |v| > limit, with NaN outside.
inline bool Outside(float v, float limit) { return !(std::fabs(v) <= limit); }

}  // namespace

int64_t CountOutside(const float* x, int64_t n, float limit) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += Outside(x[i], limit) ? 1 : 0;
  return count;
}

float ValueRange::absmax() const {
  if (empty()) return 0.0f;
  return std::max(std::fabs(min), std::fabs(max));
}

void ValueRange::Include(float v) {
  if (std::isnan(v)) return;
  min = std::min(min, v);
  max = std::max(max, v);
}

void ValueRange::Merge(const ValueRange& other) {
  if (other.empty()) return;
  min = std::min(min, other.min);
  max = std::max(max, other.max);
}

ValueRange RangeOf(const float* x, int64_t n) {
  ValueRange r;
  for (int64_t i = 0; i < n; ++i) r.Include(x[i]);
  return r;
}

TokenClipTable::TokenClipTable(const float* table, int64_t vocab_size, int dim,
                               float limit)
    : dim_(std::max(dim, 0)), limit_(limit) {
  const int64_t vocab = std::max<int64_t>(vocab_size, 0);
  counts_.resize(static_cast<size_t>(vocab));
  ranges_.resize(static_cast<size_t>(vocab));
  for (int64_t t = 0; t < vocab; ++t) {
    const float* row = table + t * dim_;
    counts_[t] = static_cast<int32_t>(CountOutside(row, dim_, limit));
    ranges_[t] = RangeOf(row, dim_);
  }
}

TokenClipTable::TokenClipTable(const engine::EmbeddingSpec& embedding,
                               float limit)
    : TokenClipTable(
          embedding.table.data(),
          // Never read past the table, whatever the sizes claim.
          embedding.dim > 0
              ? std::min<int64_t>(embedding.vocab_size,
                                  static_cast<int64_t>(embedding.table.size()) /
                                      embedding.dim)
              : 0,
          embedding.dim, limit) {}

template <typename Id>
int64_t TokenClipTable::ClippedImpl(const Id* ids, int64_t n) const {
  const int64_t vocab = vocab_size();
  int64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids[i];
    if (id >= 0 && id < vocab) total += counts_[static_cast<size_t>(id)];
  }
  return total;
}

template <typename Id>
ValueRange TokenClipTable::RangeImpl(const Id* ids, int64_t n) const {
  const int64_t vocab = vocab_size();
  ValueRange r;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids[i];
    if (id >= 0 && id < vocab) r.Merge(ranges_[static_cast<size_t>(id)]);
  }
  return r;
}

int64_t TokenClipTable::Clipped(const int64_t* ids, int64_t n) const {
  return ClippedImpl(ids, n);
}
int64_t TokenClipTable::Clipped(const int32_t* ids, int64_t n) const {
  return ClippedImpl(ids, n);
}
ValueRange TokenClipTable::Range(const int64_t* ids, int64_t n) const {
  return RangeImpl(ids, n);
}
ValueRange TokenClipTable::Range(const int32_t* ids, int64_t n) const {
  return RangeImpl(ids, n);
}

void RangeTracker::Merge(const ValueRange& range) {
  if (range.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  range_.Merge(range);
}

ValueRange RangeTracker::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  return range_;
}

ValueRange RangeTracker::TakeAndReset() {
  std::lock_guard<std::mutex> lock(mu_);
  ValueRange r = range_;
  range_ = ValueRange();
  return r;
}

}  // namespace rnnserve::metrics
