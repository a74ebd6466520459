// Int8-vs-f32 divergence: hand-checkable cases, and PyTorch-computed values
// (float32 inputs widened to float64, F.kl_div with reduction="batchmean").
#include "server/metrics/divergence.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace rnnserve::metrics {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kNaNf = std::numeric_limits<float>::quiet_NaN();
constexpr float kInff = std::numeric_limits<float>::infinity();

// Shared prefix of the Python one-liners below:
//   import torch, torch.nn.functional as F
//   f = lambda x: torch.tensor(x, dtype=torch.float32).double()
//   d = (q - r).abs(); d.max(), d.mean(), torch.linalg.norm(q - r) /
//   torch.linalg.norm(r)

TEST(DivergenceTest, IdenticalOutputsGiveZerosAndFullAgreement) {
  const std::vector<float> x = {0.5f, -1.0f, 2.0f, 3.0f, 0.0f, -4.0f};
  for (OutputKind kind : {OutputKind::kLogits, OutputKind::kLogProbabilities}) {
    const DivergenceStats s = CompareOutputs(x.data(), x.data(), 2, 3, kind);
    EXPECT_EQ(s.rows, 2);
    EXPECT_EQ(s.max_abs_error, 0.0);
    EXPECT_EQ(s.mean_abs_error, 0.0);
    EXPECT_EQ(s.relative_l2, 0.0);
    ASSERT_TRUE(s.top1_agreement.has_value());
    EXPECT_EQ(*s.top1_agreement, 1.0);
    ASSERT_TRUE(s.kl.has_value());
    EXPECT_EQ(*s.kl, 0.0);
    EXPECT_EQ(s.non_finite_elements, 0);
  }
}

TEST(DivergenceTest, OneFlippedArgmaxInFourRowsIsThreeQuarters) {
  // Row 2's argmax moves from index 0 to index 1; the others keep theirs.
  const std::vector<float> r = {0.1f, 0.9f, 0.8f, 0.2f, 0.6f, 0.4f, 0.3f, 0.7f};
  const std::vector<float> q = {0.2f, 0.8f, 0.7f, 0.3f, 0.4f, 0.6f, 0.3f, 0.7f};
  const DivergenceStats s =
      CompareOutputs(q.data(), r.data(), 4, 2, OutputKind::kProbabilities);
  EXPECT_DOUBLE_EQ(*s.top1_agreement, 0.75);
  EXPECT_NEAR(s.max_abs_error, 0.2, 1e-7);
  // By hand: |d| = .1 .1 .1 .1 .2 .2 0 0 -> mean 0.1.
  EXPECT_NEAR(s.mean_abs_error, 0.1, 1e-7);
}

TEST(DivergenceTest, TiesGoToTheLowestIndex) {
  // q row 0 ties at 0 and 1 -> 0, r row 0 argmax 0: agree.
  // q row 1 ties at 0 and 1 -> 0, r row 1 argmax 1: disagree.
  const std::vector<float> q = {1.0f, 1.0f, 0.0f, 1.0f, 1.0f, 0.0f};
  const std::vector<float> r = {1.0f, 0.5f, 0.0f, 0.5f, 1.0f, 0.0f};
  const DivergenceStats s =
      CompareOutputs(q.data(), r.data(), 2, 3, OutputKind::kLogits);
  EXPECT_DOUBLE_EQ(*s.top1_agreement, 0.5);
}

TEST(DivergenceTest, LogitsMatchPyTorch) {
  const std::vector<float> q = {1.0f, 2.0f, 0.5f,  -1.0f, 0.3f, 0.2f,
                                0.1f, 0.0f, -2.0f, 4.0f,  4.5f, 1.0f};
  const std::vector<float> r = {1.1f, 1.9f,  0.4f,  -1.2f, 0.1f, 0.25f,
                                0.1f, 0.05f, -2.5f, 4.2f,  4.1f, 0.8f};
  const DivergenceStats s =
      CompareOutputs(q.data(), r.data(), 3, 4, OutputKind::kLogits);
  EXPECT_EQ(s.rows, 3);
  // q, r = f([[1.0, 2.0, 0.5, -1.0], [0.3, 0.2, 0.1, 0.0],
  //   [-2.0, 4.0, 4.5, 1.0]]), f([[1.1, 1.9, 0.4, -1.2],
  //   [0.1, 0.25, 0.1, 0.05], [-2.5, 4.2, 4.1, 0.8]])
  EXPECT_NEAR(s.max_abs_error, 0.5, 1e-12);
  EXPECT_NEAR(s.mean_abs_error, 0.17499999919285378, 1e-12);
  EXPECT_NEAR(s.relative_l2, 0.11244999171582466, 1e-12);
  // (q.argmax(-1) == r.argmax(-1)).double().mean()
  EXPECT_NEAR(*s.top1_agreement, 1.0 / 3.0, 1e-15);
  // F.kl_div(F.log_softmax(q, -1), F.log_softmax(r, -1),
  //          reduction='batchmean', log_target=True)
  EXPECT_NEAR(*s.kl, 0.017799799284564963, 1e-12);
}

TEST(DivergenceTest, ProbabilitiesMatchPyTorchWithClamping) {
  // q has an exact 0, clamped to 1e-12 before the log.
  const std::vector<float> q = {0.7f, 0.2f, 0.1f, 0.0f, 0.6f, 0.4f};
  const std::vector<float> r = {0.6f, 0.3f, 0.1f, 0.05f, 0.5f, 0.45f};
  const DivergenceStats s =
      CompareOutputs(q.data(), r.data(), 2, 3, OutputKind::kProbabilities);
  // q, r = f([[0.7, 0.2, 0.1], [0.0, 0.6, 0.4]]),
  //        f([[0.6, 0.3, 0.1], [0.05, 0.5, 0.45]])
  EXPECT_NEAR(s.max_abs_error, 0.10000002384185791, 1e-12);
  EXPECT_NEAR(s.mean_abs_error, 0.0666666633139054, 1e-12);
  EXPECT_NEAR(s.relative_l2, 0.19557955551096998, 1e-12);
  EXPECT_DOUBLE_EQ(*s.top1_agreement, 1.0);
  // F.kl_div(torch.log(q.clamp_min(1e-12)), r.clamp_min(1e-12),
  //          reduction='batchmean')
  EXPECT_NEAR(*s.kl, 0.6113775880864541, 1e-12);
}

TEST(DivergenceTest, LogProbabilitiesMatchPyTorch) {
  const std::vector<float> q = {-0.5f, -1.2f, -2.5f, -3.0f, -0.1f, -3.5f};
  const std::vector<float> r = {-0.4f, -1.5f, -2.2f, -2.0f, -0.3f, -1.9f};
  const DivergenceStats s =
      CompareOutputs(q.data(), r.data(), 2, 3, OutputKind::kLogProbabilities);
  // q, r = f([[-0.5, -1.2, -2.5], [-3.0, -0.1, -3.5]]),
  //        f([[-0.4, -1.5, -2.2], [-2.0, -0.3, -1.9]])
  EXPECT_NEAR(s.max_abs_error, 1.600000023841858, 1e-12);
  EXPECT_NEAR(s.mean_abs_error, 0.5833333221574625, 1e-12);
  EXPECT_NEAR(s.relative_l2, 0.5034994587257955, 1e-12);
  EXPECT_DOUBLE_EQ(*s.top1_agreement, 1.0);
  // F.kl_div(torch.log(q.exp().clamp_min(1e-12)), r.exp().clamp_min(1e-12),
  //          reduction='batchmean')
  EXPECT_NEAR(*s.kl, 0.1299076683054365, 1e-12);
}

TEST(DivergenceTest, RegressionHasNoClassifierMetrics) {
  const std::vector<float> q = {1.0f, -2.0f, 3.5f, 0.25f};
  const std::vector<float> r = {1.5f, -2.0f, 3.0f, 0.0f};
  const DivergenceStats s =
      CompareOutputs(q.data(), r.data(), 2, 2, OutputKind::kRegression);
  // By hand: |d| = .5 0 .5 .25; ||d|| = 0.75, ||r|| = sqrt(15.25).
  EXPECT_DOUBLE_EQ(s.max_abs_error, 0.5);
  EXPECT_DOUBLE_EQ(s.mean_abs_error, 0.3125);
  // PyTorch: 0.19205531989934396
  EXPECT_NEAR(s.relative_l2, 0.75 / std::sqrt(15.25), 1e-15);
  EXPECT_NEAR(s.relative_l2, 0.19205531989934396, 1e-12);
  EXPECT_FALSE(s.top1_agreement.has_value());
  EXPECT_FALSE(s.kl.has_value());
}

TEST(DivergenceTest, AllZeroReferenceUsesTheNormFloor) {
  const std::vector<float> zeros(4, 0.0f);
  const std::vector<float> q = {3.0f, 0.0f, 4.0f, 0.0f};
  EXPECT_EQ(
      CompareOutputs(zeros.data(), zeros.data(), 1, 4, OutputKind::kRegression)
          .relative_l2,
      0.0);
  EXPECT_DOUBLE_EQ(
      CompareOutputs(q.data(), zeros.data(), 1, 4, OutputKind::kRegression)
          .relative_l2,
      5.0 / kTinyNorm);
}

TEST(DivergenceTest, EmptyInputGivesZeroStats) {
  const DivergenceStats s =
      CompareOutputs(nullptr, nullptr, 0, 7, OutputKind::kLogits);
  EXPECT_EQ(s.rows, 0);
  EXPECT_EQ(s.max_abs_error, 0.0);
  EXPECT_EQ(*s.top1_agreement, 1.0);
  EXPECT_EQ(*s.kl, 0.0);
}

TEST(DivergenceTest, MaskedLogitsEqualTheKlOverTheUnmaskedColumns) {
  // A -inf logit in both q and r has probability 0 in both: the KL equals
  // the KL of the row without that column, and that element has no error.
  const std::vector<float> q3 = {0.5f, 1.5f, -kInff};
  const std::vector<float> r3 = {0.7f, 1.1f, -kInff};
  const std::vector<float> q2 = {0.5f, 1.5f};
  const std::vector<float> r2 = {0.7f, 1.1f};
  const DivergenceStats s3 =
      CompareOutputs(q3.data(), r3.data(), 1, 3, OutputKind::kLogits);
  const DivergenceStats s2 =
      CompareOutputs(q2.data(), r2.data(), 1, 2, OutputKind::kLogits);
  EXPECT_DOUBLE_EQ(*s3.kl, *s2.kl);
  EXPECT_GT(*s3.kl, 0.0);
  EXPECT_NEAR(s3.max_abs_error, 0.4, 1e-6);
  EXPECT_EQ(s3.non_finite_elements, 0);
  EXPECT_TRUE(std::isfinite(s3.relative_l2));
}

TEST(DivergenceTest, NonFiniteValuesAreInfiniteErrorNeverNaN) {
  for (float bad : {kNaNf, kInff, -kInff}) {
    const std::vector<float> q = {0.1f, bad, 0.3f, 0.2f, 0.5f, 0.3f};
    const std::vector<float> r = {0.1f, 0.6f, 0.3f, 0.2f, 0.5f, 0.3f};
    for (OutputKind kind :
         {OutputKind::kRegression, OutputKind::kLogits,
          OutputKind::kProbabilities, OutputKind::kLogProbabilities}) {
      SCOPED_TRACE(std::string(OutputKindName(kind)) + " " +
                   std::to_string(bad));
      const DivergenceStats s = CompareOutputs(q.data(), r.data(), 2, 3, kind);
      EXPECT_EQ(s.max_abs_error, kInf);
      EXPECT_EQ(s.mean_abs_error, kInf);
      EXPECT_EQ(s.relative_l2, kInf);
      EXPECT_EQ(s.non_finite_elements, 1);
      if (!IsClassifier(kind)) continue;
      // Row 0 disagrees: it is unusable, or (a -inf logit or log-probability
      // is a probability of 0) q's argmax is 2 where r's is 1. Row 1 agrees.
      EXPECT_DOUBLE_EQ(*s.top1_agreement, 0.5);
      if (bad == -kInff && kind == OutputKind::kLogProbabilities) {
        // exp(-inf) is clamped to 1e-12: a large but finite KL.
        EXPECT_GT(*s.kl, 1.0);
        EXPECT_TRUE(std::isfinite(*s.kl));
      } else {
        // Unusable row, or a logit of -inf where r has mass: log(p/0).
        EXPECT_EQ(*s.kl, kInf);
      }
    }
  }
  // NaN in the reference as well.
  const std::vector<float> q = {1.0f, 2.0f};
  const std::vector<float> r = {kNaNf, 2.0f};
  const DivergenceStats s =
      CompareOutputs(q.data(), r.data(), 1, 2, OutputKind::kLogits);
  EXPECT_EQ(s.max_abs_error, kInf);
  EXPECT_EQ(s.relative_l2, kInf);
  EXPECT_EQ(*s.top1_agreement, 0.0);
  EXPECT_EQ(*s.kl, kInf);
}

TEST(DivergenceTest, EqualInfinitiesAreNoError) {
  const std::vector<float> x = {kInff, 1.0f};
  const std::vector<float> q = {kInff, 1.5f};
  const DivergenceStats s =
      CompareOutputs(q.data(), x.data(), 1, 2, OutputKind::kRegression);
  EXPECT_EQ(s.max_abs_error, 0.5);
  EXPECT_EQ(s.mean_abs_error, 0.25);
  EXPECT_EQ(s.relative_l2, 0.0);  // finite error over an infinite norm
  EXPECT_EQ(s.non_finite_elements, 0);
}

engine::ModelSpec SpecWith(bool has_head, int out_features,
                           engine::OutputActivation activation) {
  engine::ModelSpec spec;
  engine::RnnLayerSpec layer;
  layer.hidden_size = 8;
  spec.layers.push_back(layer);
  spec.has_head = has_head;
  spec.head.out_features = out_features;
  spec.activation = activation;
  return spec;
}

TEST(DivergenceTest, OutputKindOfFollowsHeadAndActivation) {
  using engine::OutputActivation;
  EXPECT_EQ(OutputKindOf(SpecWith(true, 10, OutputActivation::kSoftmax)),
            OutputKind::kProbabilities);
  EXPECT_EQ(OutputKindOf(SpecWith(true, 10, OutputActivation::kLogSoftmax)),
            OutputKind::kLogProbabilities);
  EXPECT_EQ(OutputKindOf(SpecWith(true, 10, OutputActivation::kNone)),
            OutputKind::kLogits);
  EXPECT_EQ(OutputKindOf(SpecWith(true, 1, OutputActivation::kNone)),
            OutputKind::kRegression);
  EXPECT_EQ(OutputKindOf(SpecWith(false, 0, OutputActivation::kNone)),
            OutputKind::kRegression);
  EXPECT_STREQ(OutputKindName(OutputKind::kLogits), "logits");
}

}  // namespace
}  // namespace rnnserve::metrics
