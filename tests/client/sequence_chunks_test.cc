#include "client/sequence_chunks.h"

#include <gtest/gtest.h>

#include <numeric>

namespace rnnserve::client {
namespace {

NpyArray Iota(std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return NpyArray::FromInt64(std::move(shape), v);
}

TEST(SplitStepsTest, CoversTheSequenceWithAShortLastChunk) {
  auto r = SplitSteps(10, 4);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, (std::vector<StepRange>{{0, 4}, {4, 8}, {8, 10}}));
  auto exact = SplitSteps(8, 4);
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(*exact, (std::vector<StepRange>{{0, 4}, {4, 8}}));
  auto one = SplitSteps(3, 100);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, (std::vector<StepRange>{{0, 3}}));
  auto each = SplitSteps(3, 1);
  ASSERT_TRUE(each.ok());
  EXPECT_EQ(each->size(), 3u);
}

TEST(SplitStepsTest, RejectsEmptySequencesAndChunks) {
  EXPECT_EQ(SplitSteps(0, 4).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SplitSteps(5, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SplitSteps(5, -2).status().code(), StatusCode::kInvalidArgument);
}

TEST(AsSingleSequenceTest, AddsTheBatchDimension) {
  auto tokens = AsSingleSequence(Iota({7}));
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ(tokens->shape, (std::vector<int64_t>{1, 7}));
  auto features =
      AsSingleSequence(NpyArray::FromFloat({5, 3}, std::vector<float>(15)));
  ASSERT_TRUE(features.ok());
  EXPECT_EQ(features->shape, (std::vector<int64_t>{1, 5, 3}));
  auto already = AsSingleSequence(Iota({1, 7}));
  ASSERT_TRUE(already.ok());
  EXPECT_EQ(already->shape, (std::vector<int64_t>{1, 7}));
}

TEST(AsSingleSequenceTest, RejectsBatchesAndWrongRanks) {
  EXPECT_FALSE(AsSingleSequence(Iota({2, 7})).ok());
  EXPECT_FALSE(AsSingleSequence(Iota({1, 2, 3})).ok());  // ids have no F
  EXPECT_FALSE(
      AsSingleSequence(NpyArray::FromFloat({4}, std::vector<float>(4))).ok());
}

TEST(SliceStepsTest, TakesTheStepsOfEveryRow) {
  const NpyArray x = Iota({2, 5, 3});  // value = (n * 5 + t) * 3 + f
  const NpyArray s = SliceSteps(x, {1, 3});
  EXPECT_EQ(s.shape, (std::vector<int64_t>{2, 2, 3}));
  const std::vector<int64_t> got = s.ToInt64();
  std::vector<int64_t> want;
  for (int n = 0; n < 2; ++n)
    for (int t = 1; t < 3; ++t)
      for (int f = 0; f < 3; ++f) want.push_back((n * 5 + t) * 3 + f);
  EXPECT_EQ(got, want);
}

TEST(SliceRowsTest, WrapsAroundTheBatch) {
  const NpyArray x = Iota({3, 2});
  const NpyArray s = SliceRows(x, 2, 3);
  EXPECT_EQ(s.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(s.ToInt64(), (std::vector<int64_t>{4, 5, 0, 1, 2, 3}));
}

TEST(AppendStepsTest, ConcatenatesAlongTimePerRow) {
  std::vector<int64_t> shape;
  std::vector<float> whole;
  // Two rows, outputs of width 2; chunk of 1 step then of 2 steps.
  ASSERT_TRUE(AppendSteps({2, 1, 2}, {0, 1, 10, 11}, &shape, &whole).ok());
  ASSERT_TRUE(
      AppendSteps({2, 2, 2}, {2, 3, 4, 5, 12, 13, 14, 15}, &shape, &whole)
          .ok());
  EXPECT_EQ(shape, (std::vector<int64_t>{2, 3, 2}));
  EXPECT_EQ(whole,
            (std::vector<float>{0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15}));
}

TEST(AppendStepsTest, RejectsMismatchedChunks) {
  std::vector<int64_t> shape;
  std::vector<float> whole;
  ASSERT_TRUE(
      AppendSteps({1, 2, 3}, std::vector<float>(6), &shape, &whole).ok());
  EXPECT_FALSE(
      AppendSteps({1, 2, 4}, std::vector<float>(8), &shape, &whole).ok());
  EXPECT_FALSE(
      AppendSteps({2, 2, 3}, std::vector<float>(12), &shape, &whole).ok());
  EXPECT_FALSE(
      AppendSteps({1, 2, 3}, std::vector<float>(5), &shape, &whole).ok());
  EXPECT_FALSE(AppendSteps({6}, std::vector<float>(6), &shape, &whole).ok());
}

// A response's shape comes off the wire: negative dims and shapes whose
// product overflows int64 are errors naming the shape, not arithmetic.
TEST(AppendStepsTest, RejectsNegativeAndOverflowingShapes) {
  std::vector<int64_t> shape;
  std::vector<float> whole;
  Status negative =
      AppendSteps({1, -2, -3}, std::vector<float>(6), &shape, &whole);
  EXPECT_EQ(negative.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(negative.message().find("[1, -2, -3]"), std::string::npos)
      << negative.message();
  const int64_t big = int64_t{1} << 40;
  Status overflow =
      AppendSteps({1, big, big}, std::vector<float>(6), &shape, &whole);
  EXPECT_EQ(overflow.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(overflow.message().find("not a shape"), std::string::npos)
      << overflow.message();
  EXPECT_TRUE(shape.empty());  // nothing was appended
  // A zero dim after huge ones is an empty chunk, not an overflow.
  EXPECT_TRUE(AppendSteps({1, big, 0}, {}, &shape, &whole).ok());
}

}  // namespace
}  // namespace rnnserve::client
