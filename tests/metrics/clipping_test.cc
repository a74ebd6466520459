// Calibration-drift counting: CountOutside by hand, TokenClipTable against a
// brute-force count over a random embedding table, ranges, and concurrent
// RangeTracker merges.
#include "server/metrics/clipping.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <thread>
#include <vector>

namespace rnnserve::metrics {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(ClippingTest, CountOutsideByHand) {
  // Outside |x| > 1: -1.5, 2, inf, -inf, NaN. On the limit is inside.
  const std::vector<float> x = {0.0f,  1.0f, -1.0f, -1.5f, 2.0f,
                                0.99f, kInf, -kInf, kNaN};
  EXPECT_EQ(CountOutside(x.data(), static_cast<int64_t>(x.size()), 1.0f), 5);
  EXPECT_EQ(CountOutside(x.data(), 0, 1.0f), 0);
  EXPECT_EQ(CountOutside(x.data(), 3, 0.5f), 2);
}

TEST(ClippingTest, ValueRangeIgnoresNaN) {
  ValueRange empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty.absmax(), 0.0f);
  const std::vector<float> x = {0.5f, kNaN, -3.0f, 2.0f};
  const ValueRange r = RangeOf(x.data(), 4);
  EXPECT_FALSE(r.empty());
  EXPECT_EQ(r.min, -3.0f);
  EXPECT_EQ(r.max, 2.0f);
  EXPECT_EQ(r.absmax(), 3.0f);
  EXPECT_TRUE(RangeOf(x.data() + 1, 1).empty());
}

// Brute force over the table's rows for each id.
int64_t BruteClipped(const std::vector<float>& table, int64_t vocab, int dim,
                     const std::vector<int64_t>& ids, float limit) {
  int64_t n = 0;
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab) continue;
    for (int d = 0; d < dim; ++d) {
      const float v = table[id * dim + d];
      if (std::isnan(v) || std::fabs(v) > limit) ++n;
    }
  }
  return n;
}

TEST(ClippingTest, TokenTableMatchesBruteForceOnARandomTable) {
  constexpr int64_t kVocab = 97;
  constexpr int kDim = 12;
  constexpr float kLimit = 1.3f;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> table(kVocab * kDim);
  for (float& v : table) v = normal(rng);
  table[5 * kDim + 3] = kNaN;  // a broken value counts as clipped

  const TokenClipTable clip(table.data(), kVocab, kDim, kLimit);
  EXPECT_EQ(clip.dim(), kDim);
  EXPECT_EQ(clip.vocab_size(), kVocab);

  std::uniform_int_distribution<int64_t> id(-3, kVocab + 2);  // some invalid
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<int64_t> ids(500);
    for (int64_t& t : ids) t = id(rng);
    ids[0] = 5;
    const int64_t n = static_cast<int64_t>(ids.size());
    EXPECT_EQ(clip.Clipped(ids.data(), n),
              BruteClipped(table, kVocab, kDim, ids, kLimit));

    std::vector<int32_t> ids32(ids.begin(), ids.end());
    EXPECT_EQ(clip.Clipped(ids32.data(), n), clip.Clipped(ids.data(), n));

    ValueRange brute;
    for (int64_t t : ids) {
      if (t < 0 || t >= kVocab) continue;
      for (int d = 0; d < kDim; ++d) {
        const float v = table[t * kDim + d];
        if (std::isnan(v)) continue;
        brute.min = std::min(brute.min, v);
        brute.max = std::max(brute.max, v);
      }
    }
    const ValueRange r = clip.Range(ids.data(), n);
    EXPECT_EQ(r.min, brute.min);
    EXPECT_EQ(r.max, brute.max);
    const ValueRange r32 = clip.Range(ids32.data(), n);
    EXPECT_EQ(r32.min, brute.min);
    EXPECT_EQ(r32.max, brute.max);
  }
  // Nothing valid: zero and an empty range.
  const int64_t bad[] = {-1, kVocab};
  EXPECT_EQ(clip.Clipped(bad, 2), 0);
  EXPECT_TRUE(clip.Range(bad, 2).empty());
}

TEST(ClippingTest, TokenTableFromEmbeddingSpec) {
  engine::EmbeddingSpec e;
  e.vocab_size = 3;
  e.dim = 2;
  e.table = {0.1f,  2.0f,    // token 0: one outside 1.0
             -3.0f, 4.0f,    // token 1: two
             0.5f,  -0.5f};  // token 2: none
  const TokenClipTable clip(e, 1.0f);
  const int64_t ids[] = {0, 1, 1, 2};
  EXPECT_EQ(clip.Clipped(ids, 4), 5);
  EXPECT_EQ(clip.limit(), 1.0f);
  const ValueRange r = clip.Range(ids, 4);
  EXPECT_EQ(r.min, -3.0f);
  EXPECT_EQ(r.max, 4.0f);

  // A table shorter than vocab_size x dim claims is never read past.
  e.vocab_size = 10;
  const TokenClipTable short_table(e, 1.0f);
  EXPECT_EQ(short_table.vocab_size(), 3);
  const int64_t far[] = {9};
  EXPECT_EQ(short_table.Clipped(far, 1), 0);
}

TEST(ClippingTest, RangeTrackerMergesConcurrently) {
  RangeTracker tracker;
  EXPECT_TRUE(tracker.Get().empty());
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&tracker, t] {
      for (int i = 0; i < 5000; ++i) {
        // Thread t sees values in [-(t+1), t+1] * i / 4999.
        const float v = static_cast<float>(t + 1) * i / 4999.0f;
        const float x[2] = {v, -v};
        tracker.Observe(x, 2);
      }
    });
  }
  for (auto& th : threads) th.join();
  const ValueRange r = tracker.Get();
  EXPECT_EQ(r.min, -4.0f);
  EXPECT_EQ(r.max, 4.0f);
  EXPECT_EQ(r.absmax(), 4.0f);

  const ValueRange taken = tracker.TakeAndReset();
  EXPECT_EQ(taken.max, 4.0f);
  EXPECT_TRUE(tracker.Get().empty());
  tracker.Merge(ValueRange());  // an empty range changes nothing
  EXPECT_TRUE(tracker.Get().empty());
}

}  // namespace
}  // namespace rnnserve::metrics
