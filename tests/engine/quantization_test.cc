// Calibration and weight quantization, checked against values computed here
// independently (the f32 reference for activation ranges, plain arithmetic
// for the s8 weights).
#include "server/engine/quantization.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "server/engine/reference.h"
#include "server/engine/rnn_model.h"
#include "server/engine/sequence_io.h"
#include "tests/engine/test_models.h"

namespace rnnserve::engine {
namespace {

using testing::MeanAbsDiff;
using testing::RandomModel;
using testing::RandomModelOptions;
using testing::RandomSequences;

TEST(QuantizeLayerTest, PerChannelScalesAndRoundingMatchTheDefinition) {
  RandomModelOptions o;
  o.input_size = 5;
  o.hidden_size = 3;
  o.directions = 2;
  const RnnLayerSpec layer = RandomModel(o).layers[0];
  const float alpha = 0.5f;
  const LayerQuantization q = QuantizeLayer(layer, 0.8f, alpha, true);
  EXPECT_FLOAT_EQ(q.data_scale, 127.0f / 0.8f);
  EXPECT_FLOAT_EQ(q.data_shift, 128.0f);
  const int G = 4, H = 3, GH = G * H;
  ASSERT_EQ(q.weight_scales.size(), static_cast<size_t>(GH));
  for (int go = 0; go < GH; ++go) {
    // max |w| of this gate/unit over both directions, W_ih/alpha and W_hh.
    float m = 0;
    for (size_t k = go; k < layer.w_layer.size(); k += GH) {
      m = std::max(m, std::fabs(layer.w_layer[k] / alpha));
    }
    for (size_t k = go; k < layer.w_iter.size(); k += GH) {
      m = std::max(m, std::fabs(layer.w_iter[k]));
    }
    EXPECT_NEAR(q.weight_scales[go], 127.0f / m, 1e-3 * q.weight_scales[go]);
  }
  for (size_t k = 0; k < layer.w_layer.size(); ++k) {
    const float want = std::round(layer.w_layer[k] / alpha * q.weight_scales[k % GH]);
    EXPECT_EQ(q.w_layer_s8[k], static_cast<int8_t>(want)) << k;
  }
  // The largest weight of each channel uses the full range.
  EXPECT_EQ(*std::max_element(q.w_iter_s8.begin(), q.w_iter_s8.end(),
                              [](int8_t a, int8_t b) { return std::abs(a) < std::abs(b); }) == 127 ||
                *std::min_element(q.w_iter_s8.begin(), q.w_iter_s8.end()) == -127 ||
                *std::max_element(q.w_layer_s8.begin(), q.w_layer_s8.end()) == 127 ||
                *std::min_element(q.w_layer_s8.begin(), q.w_layer_s8.end()) == -127,
            true);
  const LayerQuantization t = QuantizeLayer(layer, 0.8f, alpha, false);
  ASSERT_EQ(t.weight_scales.size(), 1u);
  EXPECT_NEAR(t.weight_scales[0],
              *std::min_element(q.weight_scales.begin(), q.weight_scales.end()),
              1e-3);
}

// Ranges observed by calibration equal those of the f32 reference run.
TEST(CalibrateTest, MinMaxRangesEqualTheReferenceActivations) {
  RandomModelOptions o;
  o.layers = 2;
  o.input_size = 6;
  o.hidden_size = 10;
  const ModelSpec spec = RandomModel(o);
  const SequenceSet cal = RandomSequences(spec, 12, 15, 4, 3.0f);
  CalibrationOptions co;
  co.batch_size = 5;  // several passes
  auto q = Calibrate(spec, cal, co);
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  // Independent: max |x| of the input, and max |h| of each layer from the
  // reference implementation (layer 0's output = layer 1's input).
  float xmax = 0;
  for (float v : cal.features) xmax = std::max(xmax, std::fabs(v));
  ModelSpec first = spec;
  first.layers.resize(1);
  RunOutput r0, r1;
  ASSERT_TRUE(ReferenceRun(first, SliceSequences(first, cal, 0, 12), &r0).ok());
  ASSERT_TRUE(ReferenceRun(spec, SliceSequences(spec, cal, 0, 12), &r1).ok());
  float h0 = 0, h1 = 0;
  for (float v : r0.output) h0 = std::max(h0, std::fabs(v));
  for (float v : r1.output) h1 = std::max(h1, std::fabs(v));
  EXPECT_NEAR(q->layers[0].observed_input_absmax, xmax, 1e-6);
  EXPECT_NEAR(q->layers[0].observed_hidden_absmax, h0, 1e-5);
  EXPECT_NEAR(q->layers[1].observed_input_absmax, h0, 1e-5);
  EXPECT_NEAR(q->layers[1].observed_hidden_absmax, h1, 1e-5);
  // minmax: grid = max|h|, layer 0 clips the input at max|x| (alpha folds
  // it onto the grid), layer 1 takes layer 0's u8 output as is.
  EXPECT_NEAR(q->layers[0].grid, h0, 1e-5);
  EXPECT_NEAR(q->layers[0].input_alpha, h0 / xmax, 1e-5);
  EXPECT_TRUE(q->layers[1].chained_u8_input);
  EXPECT_NEAR(q->layers[1].input_alpha, h1 / h0, 1e-4);
  EXPECT_EQ(q->calibration_sequences, 12);
}

TEST(CalibrateTest, PercentileClipsTighterThanMinMax) {
  RandomModelOptions o;
  const ModelSpec spec = RandomModel(o);
  SequenceSet cal = RandomSequences(spec, 16, 20, 4);
  cal.features[7] = 40.0f;  // one outlier
  CalibrationOptions minmax, pct;
  pct.method = CalibrationMethod::kPercentile;
  pct.percentile = 99.0;
  auto a = Calibrate(spec, cal, minmax);
  auto b = Calibrate(spec, cal, pct);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FLOAT_EQ(a->layers[0].input_clip, 40.0f);
  // 99th percentile of |N(0,1)| is about 2.58.
  EXPECT_GT(b->layers[0].input_clip, 2.0f);
  EXPECT_LT(b->layers[0].input_clip, 3.2f);
  EXPECT_LE(b->layers[0].grid, a->layers[0].grid);
}

TEST(CalibrateTest, MseIsNoWorseThanMinMaxOnItsEvaluationSet) {
  RandomModelOptions o;
  o.layers = 2;
  o.input_size = 16;
  o.hidden_size = 32;
  o.forget_bias = 2.0f;  // long memory: the case where ranges matter
  const ModelSpec spec = RandomModel(o);
  SequenceSet cal = RandomSequences(spec, 24, 30, 4);
  for (size_t k = 0; k < cal.features.size(); k += 97) cal.features[k] *= 6;
  CalibrationOptions minmax, mse;
  mse.method = CalibrationMethod::kMse;
  mse.mse_max_sequences = 24;
  int64_t last_done = 0, last_total = 0;
  mse.progress = [&](int64_t d, int64_t t) {
    EXPECT_GT(d, last_done);
    last_done = d;
    last_total = t;
  };
  auto a = Calibrate(spec, cal, minmax);
  auto b = Calibrate(spec, cal, mse);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(last_done, last_total);
  auto err = [&](const QuantizationSpec& q) {
    RnnModelOptions o8;
    o8.precision = Precision::kInt8;
    o8.quantization = std::make_shared<const QuantizationSpec>(q);
    auto shared = std::make_shared<const ModelSpec>(spec);
    auto m8 = RnnModel::Create(shared, o8);
    auto m32 = RnnModel::Create(shared, {});
    RunOutput x, y;
    EXPECT_TRUE((*m8)->Run(SliceSequences(spec, cal, 0, 24), &x).ok());
    EXPECT_TRUE((*m32)->Run(SliceSequences(spec, cal, 0, 24), &y).ok());
    return MeanAbsDiff(x.output, y.output);
  };
  EXPECT_LE(err(*b), err(*a) * 1.02) << "mse " << err(*b) << " minmax " << err(*a);
}

TEST(CalibrateTest, BadCalibrationSetsAreErrors) {
  const ModelSpec spec = RandomModel({});
  SequenceSet empty;
  EXPECT_EQ(Calibrate(spec, empty, {}).status().code(),
            StatusCode::kInvalidArgument);
  SequenceSet wrong = RandomSequences(spec, 2, 3, 1);
  wrong.features.pop_back();
  EXPECT_EQ(Calibrate(spec, wrong, {}).status().code(),
            StatusCode::kInvalidArgument);
  CalibrationOptions bad;
  bad.method = CalibrationMethod::kPercentile;
  bad.percentile = 120;
  EXPECT_EQ(Calibrate(spec, RandomSequences(spec, 2, 3, 1), bad).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseCalibrationMethod("kmeans").ok());
}

}  // namespace
}  // namespace rnnserve::engine
