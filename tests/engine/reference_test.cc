#include "server/engine/reference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/common/npy.h"
#include "server/engine/onnx_import.h"
#include "server/engine/tensor_layout.h"
#include "tests/engine/golden_cases.h"

namespace rnnserve::engine {
namespace {

using ::rnnserve::testing::GoldenCase;
using ::rnnserve::testing::LoadGoldenCases;

constexpr float kTolerance = 1e-4f;

// Runs one golden case through ImportOnnxFile + ReferenceRun and compares the
// main output and the final states with PyTorch's.
void CheckGoldenCase(const GoldenCase& c) {
  ::rnnserve::testing::GoldenRun run;
  ASSERT_TRUE(::rnnserve::testing::PrepareGoldenRun(c, &run));
  RunOutput out;
  Status status = ReferenceRun(run.spec, run.input, &out);
  ASSERT_TRUE(status.ok()) << status.ToString();
  ::rnnserve::testing::ExpectMatchesGolden(run, out, kTolerance);
}

TEST(ReferenceTest, MatchesPyTorchGoldens) {
  std::string error;
  const std::vector<GoldenCase> cases = LoadGoldenCases(&error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_FALSE(cases.empty());
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.name());
    CheckGoldenCase(c);
  }
}

// --- hand-built specs
// ------------------------------------------------------------

// One layer with weights w_layer = a, w_iter = r, bias = b (all constant).
ModelSpec TinySpec(CellType cell, int features, int hidden, int dirs, float a,
                   float r, float b) {
  ModelSpec spec;
  spec.input_name = "x";
  spec.output_name = "y";
  spec.feature_size = features;
  RnnLayerSpec layer;
  layer.cell = cell;
  layer.input_size = features;
  layer.hidden_size = hidden;
  layer.directions = dirs;
  layer.w_layer.assign(
      static_cast<size_t>(dirs) * features * layer.gates() * hidden, a);
  layer.w_iter.assign(
      static_cast<size_t>(dirs) * hidden * layer.gates() * hidden, r);
  layer.bias.assign(static_cast<size_t>(dirs) * 4 * hidden, b);
  spec.layers.push_back(layer);
  return spec;
}

// A one-unit LSTM step computed by hand from the formulas.
TEST(ReferenceTest, LstmSingleStepByHand) {
  ModelSpec spec = TinySpec(CellType::kLstm, 1, 1, 1, 0.5f, 0.0f, 0.1f);
  // Gates differ: i, f, c~, o weights 0.5, -0.25, 1.0, 2.0.
  spec.layers[0].w_layer = {0.5f, -0.25f, 1.0f, 2.0f};
  const float x = 0.8f;
  RunInput in;
  in.batch = 1;
  in.steps = 1;
  in.features = &x;
  RunOutput out;
  ASSERT_TRUE(ReferenceRun(spec, in, &out).ok());
  auto sigmoid = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  const double i = sigmoid(0.5 * x + 0.1), c_tilde = std::tanh(1.0 * x + 0.1);
  const double o = sigmoid(2.0 * x + 0.1);
  const double c = i * c_tilde;  // c0 = 0
  EXPECT_NEAR(out.output[0], o * std::tanh(c), 1e-6);
  EXPECT_NEAR(out.final_state[0].c[0], c, 1e-6);
  EXPECT_EQ(out.shape, (std::vector<int64_t>{1, 1, 1}));
}

// A one-unit linear-before-reset GRU step by hand, with a non-zero h0 so the
// reset gate multiplies (R h + b_hn).
TEST(ReferenceTest, GruSingleStepByHand) {
  ModelSpec spec = TinySpec(CellType::kGru, 1, 1, 1, 0.0f, 0.0f, 0.0f);
  spec.layers[0].w_layer = {0.3f, -0.6f, 0.9f};  // u, r, o
  spec.layers[0].w_iter = {0.2f, 0.4f, -0.7f};
  spec.layers[0].bias = {0.1f, 0.2f, 0.3f,
                         0.4f};  // u, r, o (input), o (recurrent)
  const float x = 1.5f;
  std::vector<LayerState> h0 = {{{0.5f}, {}}};
  RunInput in;
  in.batch = 1;
  in.steps = 1;
  in.features = &x;
  in.initial_state = &h0;
  RunOutput out;
  ASSERT_TRUE(ReferenceRun(spec, in, &out).ok());
  auto sigmoid = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  const double h = 0.5;
  const double u = sigmoid(0.3 * x + 0.2 * h + 0.1);
  const double r = sigmoid(-0.6 * x + 0.4 * h + 0.2);
  const double n = std::tanh(0.9 * x + 0.3 + r * (-0.7 * h + 0.4));
  EXPECT_NEAR(out.output[0], (1 - u) * n + u * h, 1e-6);
  EXPECT_TRUE(out.final_state[0].c.empty());
}

// Feeding final_state back continues the sequence: T=7 in one call equals
// 3 + 4 steps in two calls.
TEST(ReferenceTest, StateCarryEqualsOneCall) {
  ModelSpec spec = TinySpec(CellType::kLstm, 3, 4, 1, 0.0f, 0.0f, 0.0f);
  RnnLayerSpec& layer = spec.layers[0];
  for (size_t i = 0; i < layer.w_layer.size(); ++i)
    layer.w_layer[i] = std::sin(0.7f * i);
  for (size_t i = 0; i < layer.w_iter.size(); ++i)
    layer.w_iter[i] = 0.3f * std::cos(1.3f * i);
  for (size_t i = 0; i < layer.bias.size(); ++i) layer.bias[i] = 0.05f * i;
  spec.layers.push_back(layer);
  spec.layers[1].input_size = 4;
  spec.layers[1].w_layer.resize(4 * 4 * 4);
  const int batch = 2, steps = 7, f = 3;
  std::vector<float> x(batch * steps * f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);

  RunInput whole;
  whole.batch = batch;
  whole.steps = steps;
  whole.features = x.data();
  RunOutput full;
  ASSERT_TRUE(ReferenceRun(spec, whole, &full).ok());

  auto chunk = [&](int t0, int t1) {
    std::vector<float> part;
    for (int n = 0; n < batch; ++n) {
      part.insert(part.end(), x.begin() + (n * steps + t0) * f,
                  x.begin() + (n * steps + t1) * f);
    }
    return part;
  };
  const std::vector<float> first = chunk(0, 3), second = chunk(3, 7);
  RunInput a;
  a.batch = batch;
  a.steps = 3;
  a.features = first.data();
  RunOutput out_a;
  ASSERT_TRUE(ReferenceRun(spec, a, &out_a).ok());
  RunInput b = a;
  b.steps = 4;
  b.features = second.data();
  b.initial_state = &out_a.final_state;
  RunOutput out_b;
  ASSERT_TRUE(ReferenceRun(spec, b, &out_b).ok());
  for (int n = 0; n < batch; ++n) {
    for (int t = 3; t < 7; ++t) {
      for (int h = 0; h < 4; ++h) {
        EXPECT_FLOAT_EQ(out_b.output[(n * 4 + t - 3) * 4 + h],
                        full.output[(n * steps + t) * 4 + h]);
      }
    }
  }
  EXPECT_EQ(MergeStates(out_b.final_state, StateKind::kCell),
            MergeStates(full.final_state, StateKind::kCell));
}

TEST(ReferenceTest, RejectsBadInputs) {
  ModelSpec spec = TinySpec(CellType::kGru, 2, 3, 2, 0.1f, 0.1f, 0.1f);
  RunOutput out;
  RunInput in;
  in.batch = 1;
  in.steps = 2;
  EXPECT_EQ(ReferenceRun(spec, in, &out).code(),
            StatusCode::kInvalidArgument);  // no data
  const std::vector<float> x(4, 1.0f);
  in.features = x.data();
  EXPECT_TRUE(ReferenceRun(spec, in, &out).ok());
  in.steps = 0;
  EXPECT_EQ(ReferenceRun(spec, in, &out).code(), StatusCode::kInvalidArgument);
  in.steps = 2;
  std::vector<LayerState> wrong = {{std::vector<float>(3), {}}};  // needs 2*1*3
  in.initial_state = &wrong;
  EXPECT_EQ(ReferenceRun(spec, in, &out).code(), StatusCode::kInvalidArgument);
  in.initial_state = nullptr;
  spec.layers[0].bias.pop_back();
  EXPECT_EQ(ReferenceRun(spec, in, &out).code(), StatusCode::kInvalidArgument);
}

TEST(ReferenceTest, RejectsTokenOutOfVocabulary) {
  ModelSpec spec = TinySpec(CellType::kLstm, 2, 2, 1, 0.1f, 0.1f, 0.1f);
  spec.input_kind = InputKind::kTokenIds;
  spec.input_type = ElementType::kInt64;
  spec.has_embedding = true;
  spec.embedding.vocab_size = 5;
  spec.embedding.dim = 2;
  spec.embedding.table.assign(10, 0.5f);
  const std::vector<int64_t> ids = {0, 4, 5};
  RunInput in;
  in.batch = 1;
  in.steps = 3;
  in.tokens = ids.data();
  RunOutput out;
  Status status = ReferenceRun(spec, in, &out);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("token id 5"), std::string::npos);
}

// --- tensor_layout
// ---------------------------------------------------------------

TEST(TensorLayoutTest, SwapsTimeAndBatch) {
  // [T=2][N=3][X=2] -> [N][T][X]
  std::vector<float> seq(12);
  for (int i = 0; i < 12; ++i) seq[i] = static_cast<float>(i);
  const std::vector<float> batch = SequenceToBatchMajor(seq.data(), 2, 3, 2);
  // element (n=1, t=1, x=0) came from (t=1, n=1, x=0) = 1*6 + 1*2 + 0 = 8
  EXPECT_EQ(batch[(1 * 2 + 1) * 2 + 0], 8.0f);
  EXPECT_EQ(BatchToSequenceMajor(batch.data(), 3, 2, 2), seq);
  const std::vector<int64_t> ids = {1, 2, 3, 4, 5, 6};  // [T=3][N=2]
  EXPECT_EQ(SequenceToBatchMajor(ids.data(), 3, 2, 1),
            (std::vector<int64_t>{1, 3, 5, 2, 4, 6}));
}

TEST(TensorLayoutTest, SplitAndMergeStates) {
  ModelSpec spec = TinySpec(CellType::kLstm, 2, 3, 2, 0, 0, 0);
  spec.layers.push_back(spec.layers[0]);
  spec.layers[1].input_size = 6;
  const int batch = 2;
  const size_t total = 2 * 2 * batch * 3;  // layers*dirs*N*H
  std::vector<float> h(total), c(total);
  for (size_t i = 0; i < total; ++i) {
    h[i] = static_cast<float>(i);
    c[i] = -static_cast<float>(i);
  }
  StatusOr<std::vector<LayerState>> states =
      SplitStates(spec, batch, h.data(), c.data());
  ASSERT_TRUE(states.ok());
  ASSERT_EQ(states->size(), 2u);
  EXPECT_EQ((*states)[1].h.front(), 12.0f);  // layer 1 starts at row dirs*1
  EXPECT_EQ(MergeStates(*states, StateKind::kHidden), h);
  EXPECT_EQ(MergeStates(*states, StateKind::kCell), c);
  StatusOr<std::vector<LayerState>> zeros_c =
      SplitStates(spec, batch, h.data(), nullptr);
  ASSERT_TRUE(zeros_c.ok());
  EXPECT_EQ((*zeros_c)[0].c, std::vector<float>(12, 0.0f));
  EXPECT_FALSE(SplitStates(spec, batch, nullptr, nullptr).ok());
}

}  // namespace
}  // namespace rnnserve::engine
