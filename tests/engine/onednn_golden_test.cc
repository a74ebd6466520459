// The oneDNN engine against PyTorch's own outputs on every golden model:
// f32 within 1e-4, and calibrated int8 within stated bounds of PyTorch.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "server/engine/quantization.h"
#include "server/engine/rnn_model.h"
#include "tests/engine/golden_cases.h"

namespace rnnserve::engine {
namespace {

using ::rnnserve::testing::ExpectMatchesGolden;
using ::rnnserve::testing::GoldenCase;
using ::rnnserve::testing::GoldenRun;
using ::rnnserve::testing::LoadGoldenCases;
using ::rnnserve::testing::PrepareGoldenRun;

std::vector<GoldenCase> Cases() {
  std::string error;
  std::vector<GoldenCase> cases = LoadGoldenCases(&error);
  EXPECT_TRUE(error.empty()) << error;
  EXPECT_GE(cases.size(), 20u);
  return cases;
}

TEST(OneDnnGoldenTest, F32MatchesPyTorchOnEveryGolden) {
  for (const GoldenCase& c : Cases()) {
    SCOPED_TRACE(c.name());
    GoldenRun run;
    ASSERT_TRUE(PrepareGoldenRun(c, &run));
    auto model = RnnModel::Create(std::make_shared<const ModelSpec>(run.spec), {});
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    RunOutput out;
    ASSERT_TRUE((*model)->Run(run.input, &out).ok());
    ExpectMatchesGolden(run, out, 1e-4);
  }
}

// int8 calibrated on the case's own input (minmax). Bounds, against PyTorch:
// hidden-state outputs (|h| <= 1) max |d| <= 0.06 and mean |d| <= 0.012 (a
// few u8 steps of the grid); outputs after a head scale with the head, so
// they are bounded relative to the output's range. GRU layers run f32, so a
// pure-GRU model must match to f32 precision.
TEST(OneDnnGoldenTest, Int8WithinBoundsOfPyTorchOnEveryGolden) {
  for (const GoldenCase& c : Cases()) {
    SCOPED_TRACE(c.name());
    GoldenRun run;
    ASSERT_TRUE(PrepareGoldenRun(c, &run));
    SequenceSet cal;
    cal.sequences = run.batch;
    cal.steps = run.steps;
    cal.features = run.features;
    cal.tokens = run.tokens;
    cal.initial_state = run.initial;  // the case's h0/c0, if the graph takes them
    auto q = Calibrate(run.spec, cal, {});
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    RnnModelOptions o;
    o.precision = Precision::kInt8;
    o.quantization = std::make_shared<const QuantizationSpec>(*q);
    auto model = RnnModel::Create(std::make_shared<const ModelSpec>(run.spec), o);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    RunOutput out;
    ASSERT_TRUE((*model)->Run(run.input, &out).ok());
    // Compare in batch-major order.
    std::vector<float> want = run.expected.ToFloat();
    if (!run.spec.batch_first && !run.spec.last_step_only) {
      want = SequenceToBatchMajor(want.data(), run.steps, run.batch,
                                  static_cast<int>(out.shape.back()));
    }
    ASSERT_EQ(want.size(), out.output.size());
    double max_d = 0, sum_d = 0, lo = want[0], hi = want[0];
    for (size_t i = 0; i < want.size(); ++i) {
      const double d = std::fabs(static_cast<double>(out.output[i]) - want[i]);
      max_d = std::max(max_d, d);
      sum_d += d;
      lo = std::min<double>(lo, want[i]);
      hi = std::max<double>(hi, want[i]);
    }
    const double mean_d = sum_d / want.size();
    const double range = std::max(1.0, hi - lo);
    const bool any_int8 = [&] {
      for (Precision p : (*model)->layer_precisions()) {
        if (p == Precision::kInt8) return true;
      }
      return false;
    }();
    std::cout << c.name() << ": int8 layers " << any_int8 << ", max |d| " << max_d
              << ", mean |d| " << mean_d << " (output range " << hi - lo << ")\n";
    if (!any_int8) {
      EXPECT_LE(max_d, 1e-4);
    } else {
      EXPECT_LE(max_d, 0.06 * range);
      EXPECT_LE(mean_d, 0.012 * range);
    }
  }
}

}  // namespace
}  // namespace rnnserve::engine
