// Reservoir: the bound, Algorithm R's uniform inclusion probability
// (checked over many seeds, loosely), reproducibility, lazy Offer, and
// concurrent Add.
#include "server/metrics/reservoir.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <thread>
#include <vector>

namespace rnnserve::metrics {
namespace {

Reservoir<int>::Options Opts(size_t capacity, uint64_t seed) {
  Reservoir<int>::Options o;
  o.capacity = capacity;
  o.seed = seed;
  return o;
}

TEST(ReservoirTest, KeepsEverythingUntilFull) {
  Reservoir<int> r(Opts(5, 1));
  for (int i = 0; i < 3; ++i) r.Add(i);
  EXPECT_EQ(r.size(), 3u);
  EXPECT_EQ(r.seen(), 3u);
  EXPECT_EQ(r.Snapshot(), (std::vector<int>{0, 1, 2}));
}

TEST(ReservoirTest, SizeIsBoundedAndItemsComeFromTheStream) {
  Reservoir<int> r(Opts(10, 7));
  for (int i = 0; i < 1000; ++i) r.Add(i);
  EXPECT_EQ(r.size(), 10u);
  EXPECT_EQ(r.capacity(), 10u);
  EXPECT_EQ(r.seen(), 1000u);
  const std::vector<int> items = r.Snapshot();
  ASSERT_EQ(items.size(), 10u);
  EXPECT_EQ(std::set<int>(items.begin(), items.end()).size(), 10u);
  for (int v : items) {
    EXPECT_GE(v, 0);
    EXPECT_LT(v, 1000);
  }
  // With 1000 items and 10 slots, the first 10 surviving is ~impossible.
  EXPECT_NE(items, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

TEST(ReservoirTest, ZeroCapacityOnlyCounts) {
  Reservoir<int> r(Opts(0, 1));
  for (int i = 0; i < 10; ++i) r.Add(i);
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(r.seen(), 10u);
  EXPECT_FALSE(r.Offer([] { return 1; }));
}

TEST(ReservoirTest, EveryItemIsKeptWithProbabilityCapacityOverN) {
  // 4000 runs (seeds 1..4000) of a 100-item stream into 10 slots: each item
  // is expected in 400 samples. Pearson's statistic over the 100 items has
  // mean about 99 x (1 - 0.1) = 89 for a uniform sampler; 150 is a loose
  // bound (an off-by-one in the slot draw scores over 1000). Also compare
  // the first, middle and last tenths, where a biased sampler shows.
  constexpr int kItems = 100, kCapacity = 10, kRuns = 4000;
  std::vector<int> hits(kItems, 0);
  for (int run = 1; run <= kRuns; ++run) {
    Reservoir<int> r(Opts(kCapacity, static_cast<uint64_t>(run)));
    for (int i = 0; i < kItems; ++i) r.Add(i);
    for (int v : r.Snapshot()) ++hits[v];
  }
  const double expected = static_cast<double>(kRuns) * kCapacity / kItems;
  double chi2 = 0.0;
  for (int h : hits) chi2 += (h - expected) * (h - expected) / expected;
  EXPECT_LT(chi2, 150.0);
  auto tenth = [&](int k) {
    int sum = 0;
    for (int i = 10 * k; i < 10 * k + 10; ++i) sum += hits[i];
    return sum / 10.0;
  };
  EXPECT_NEAR(tenth(0), expected, 0.1 * expected);
  EXPECT_NEAR(tenth(5), expected, 0.1 * expected);
  EXPECT_NEAR(tenth(9), expected, 0.1 * expected);
}

TEST(ReservoirTest, SameSeedSameSample) {
  Reservoir<int> a(Opts(8, 42));
  Reservoir<int> b(Opts(8, 42));
  Reservoir<int> c(Opts(8, 43));
  for (int i = 0; i < 500; ++i) {
    a.Add(i);
    b.Add(i);
    c.Add(i);
  }
  EXPECT_EQ(a.Snapshot(), b.Snapshot());
  EXPECT_NE(a.Snapshot(), c.Snapshot());
}

TEST(ReservoirTest, OfferBuildsOnlyKeptItems) {
  Reservoir<std::vector<float>>::Options o;
  o.capacity = 4;
  o.seed = 3;
  Reservoir<std::vector<float>> r(o);
  int made = 0, kept = 0;
  for (int i = 0; i < 1000; ++i) {
    if (r.Offer([&] {
          ++made;
          return std::vector<float>(3, static_cast<float>(i));
        })) {
      ++kept;
    }
  }
  EXPECT_EQ(made, kept);
  EXPECT_EQ(r.seen(), 1000u);
  EXPECT_EQ(r.size(), 4u);
  // Expected kept: 4 + sum_{i=5..1000} 4/i ~= 4 + 4 (ln 1000 - ln 4.5) ~= 25.6.
  EXPECT_GT(made, 8);
  EXPECT_LT(made, 60);
  for (const auto& v : r.Snapshot()) EXPECT_EQ(v.size(), 3u);
}

TEST(ReservoirTest, ClearStartsOver) {
  Reservoir<int> r(Opts(3, 1));
  for (int i = 0; i < 10; ++i) r.Add(i);
  r.Clear();
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(r.seen(), 0u);
  r.Add(99);
  EXPECT_EQ(r.Snapshot(), std::vector<int>{99});
}

TEST(ReservoirTest, ConcurrentAddsAreAllCounted) {
  constexpr int kThreads = 4, kPerThread = 20000;
  Reservoir<int> r(Opts(64, 5));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&r, t] {
      for (int i = 0; i < kPerThread; ++i) {
        r.Add(t * kPerThread + i);
        if (i % 1000 == 0) (void)r.Snapshot();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(r.seen(), static_cast<uint64_t>(kThreads * kPerThread));
  const std::vector<int> items = r.Snapshot();
  ASSERT_EQ(items.size(), 64u);
  EXPECT_EQ(std::set<int>(items.begin(), items.end()).size(), 64u);
  for (int v : items) {
    EXPECT_GE(v, 0);
    EXPECT_LT(v, kThreads * kPerThread);
  }
}

TEST(ReservoirTest, UnseededReservoirsWork) {
  Reservoir<int> r(Reservoir<int>::Options{});
  EXPECT_EQ(r.capacity(), 256u);
  for (int i = 0; i < 1000; ++i) r.Add(i);
  EXPECT_EQ(r.size(), 256u);
}

}  // namespace
}  // namespace rnnserve::metrics
