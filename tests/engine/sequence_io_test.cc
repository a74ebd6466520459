// .npy arrays -> model inputs: layout conversion and every rejection.
#include "server/engine/sequence_io.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/engine/test_models.h"

namespace rnnserve::engine {
namespace {

using testing::RandomModel;
using testing::RandomModelOptions;

ModelSpec Features(bool batch_first) {
  RandomModelOptions o;
  o.input_size = 3;
  ModelSpec s = RandomModel(o);
  s.batch_first = batch_first;
  return s;
}

void ExpectInvalid(const StatusOr<SequenceSet>& r, const std::string& needle) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(needle), std::string::npos)
      << r.status().message();
}

TEST(SequenceIoTest, SequenceMajorArraysBecomeBatchMajorAndBack) {
  const ModelSpec s = Features(false);
  // [T=2, N=2, F=3]: value = 100*t + 10*n + f.
  std::vector<float> v;
  for (int t = 0; t < 2; ++t)
    for (int n = 0; n < 2; ++n)
      for (int f = 0; f < 3; ++f) v.push_back(100.0f * t + 10.0f * n + f);
  auto set = SequencesFromNpy(s, NpyArray::FromFloat({2, 2, 3}, v), "x.npy");
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(set->sequences, 2);
  EXPECT_EQ(set->steps, 2);
  // Batch-major [n][t][f].
  EXPECT_EQ(set->features[(1 * 2 + 0) * 3 + 2], 12.0f);   // n=1, t=0, f=2
  EXPECT_EQ(set->features[(0 * 2 + 1) * 3 + 1], 101.0f);  // n=0, t=1, f=1
  const NpyArray back = OutputToNpy(s, {2, 2, 3}, set->features);
  EXPECT_EQ(back.shape, (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(back.ToFloat(), v);
}

TEST(SequenceIoTest, WrongDtypeRankShapeAndValuesAreRejectedNamingTheInput) {
  const ModelSpec s = Features(true);
  ExpectInvalid(SequencesFromNpy(s, NpyArray::FromInt64({1, 2, 3}, std::vector<int64_t>(6)), "x.npy"),
                "dtype");
  ExpectInvalid(SequencesFromNpy(s, NpyArray::FromFloat({2, 3}, std::vector<float>(6)), "x.npy"),
                "rank");
  ExpectInvalid(SequencesFromNpy(s, NpyArray::FromFloat({1, 2, 4}, std::vector<float>(8)), "x.npy"),
                "4 features");
  ExpectInvalid(SequencesFromNpy(s, NpyArray::FromFloat({0, 2, 3}, {}), "x.npy"), "empty");
  std::vector<float> bad(6, 0.0f);
  bad[4] = NAN;
  ExpectInvalid(SequencesFromNpy(s, NpyArray::FromFloat({1, 2, 3}, bad), "x.npy"),
                "non-finite value at sequence 0, step 1, feature 1");
  bad[4] = -INFINITY;
  ExpectInvalid(SequencesFromNpy(s, NpyArray::FromFloat({1, 2, 3}, bad), "x.npy"), "non-finite");
  // Every message names the array and what the model expects.
  auto r = SequencesFromNpy(s, NpyArray::FromFloat({2, 3}, std::vector<float>(6)), "x.npy");
  EXPECT_NE(r.status().message().find("x.npy"), std::string::npos);
  EXPECT_NE(r.status().message().find("[N, T, 3] float32"), std::string::npos)
      << r.status().message();

  RandomModelOptions t;
  t.tokens = true;
  const ModelSpec tok = RandomModel(t);
  ExpectInvalid(SequencesFromNpy(tok, NpyArray::FromFloat({1, 2}, {1, 2}), "ids.npy"), "float32");
  ExpectInvalid(SequencesFromNpy(tok, NpyArray::FromInt64({1, 2, 1}, {1, 2}), "ids.npy"), "rank");
  auto ok = SequencesFromNpy(tok, NpyArray::FromInt64({1, 2}, {4, 7}), "ids.npy");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->tokens, (std::vector<int64_t>{4, 7}));
}

}  // namespace
}  // namespace rnnserve::engine
