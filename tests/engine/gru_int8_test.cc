// The int8 linear-before-reset GRU layer against the plain C++ reference
// (f32 model, double accumulation).
#include "server/engine/gru_int8.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <iostream>
#include <random>
#include <thread>

#include "server/engine/onednn_context.h"
#include "server/engine/quantization.h"
#include "server/engine/reference.h"
#include "server/engine/rnn_model.h"
#include "server/engine/sequence_io.h"
#include "server/engine/tensor_layout.h"
#include "tests/engine/test_models.h"

namespace rnnserve::engine {
namespace {

using testing::MaxAbsDiff;
using testing::MeanAbsDiff;
using testing::RandomModel;
using testing::RandomModelOptions;
using testing::RandomSequences;

ModelSpec Gru(int input, int hidden, int dirs, unsigned seed = 1) {
  RandomModelOptions o;
  o.cell = CellType::kGru;
  o.input_size = input;
  o.hidden_size = hidden;
  o.directions = dirs;
  o.seed = seed;
  return RandomModel(o);
}

// Outputs of one layer, batch-major like the reference: y [N][T][D*H],
// h_n [D][N][H].
struct LayerResult {
  std::vector<float> y;
  std::vector<float> h_n;
};

LayerResult Reference(const ModelSpec& spec, const SequenceSet& set,
                      const std::vector<float>* h0 = nullptr) {
  RunInput in = SliceSequences(spec, set, 0, set.sequences);
  std::vector<LayerState> state(1);
  if (h0) {
    state[0].h = *h0;
    in.initial_state = &state;
  }
  RunOutput out;
  const Status st = ReferenceRun(spec, in, &out);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return {out.output, out.final_state.empty() ? std::vector<float>()
                                              : out.final_state[0].h};
}

// minmax-style quantization of the one layer of `spec` (what Calibrate does
// for LSTM): the grid covers max |h| of the f32 model on `calib`, the input
// rescale maps max |x| onto the grid.
LayerQuantization MinMax(const ModelSpec& spec, const SequenceSet& calib,
                         bool per_channel) {
  const LayerResult f32 = Reference(spec, calib);
  float h_max = 0, x_max = 0;
  for (float v : f32.y) h_max = std::max(h_max, std::fabs(v));
  for (float v : calib.features) x_max = std::max(x_max, std::fabs(v));
  return QuantizeLayer(spec.layers[0], h_max, h_max / x_max, per_channel);
}

std::unique_ptr<GruInt8Layer> Make(const ModelSpec& spec,
                                   const LayerQuantization& q,
                                   const GruInt8Options& options = {}) {
  auto layer = GruInt8Layer::Create(spec.layers[0], q, options);
  EXPECT_TRUE(layer.ok()) << layer.status().ToString();
  return layer.ok() ? std::move(layer).value() : nullptr;
}

LayerResult RunInt8(const GruInt8Layer& layer, const ModelSpec& spec,
                    const SequenceSet& set,
                    const std::vector<float>* h0 = nullptr) {
  const int N = static_cast<int>(set.sequences), T = set.steps;
  const RnnLayerSpec& l = spec.layers[0];
  const std::vector<float> x =
      BatchToSequenceMajor(set.features.data(), N, T, l.input_size);
  std::vector<float> y(static_cast<size_t>(T) * N * l.output_size());
  LayerResult r;
  r.h_n.resize(static_cast<size_t>(l.directions) * N * l.hidden_size);
  const Status st = layer.Run(x.data(), T, N, h0 ? h0->data() : nullptr,
                              y.data(), r.h_n.data());
  EXPECT_TRUE(st.ok()) << st.ToString();
  r.y = SequenceToBatchMajor(y.data(), T, N, l.output_size());
  return r;
}

void ExpectCloseToReference(const ModelSpec& spec, bool per_channel,
                            double mean_bound, double max_bound,
                            const char* what) {
  const LayerQuantization q =
      MinMax(spec, RandomSequences(spec, 32, 50, 5), per_channel);
  auto layer = Make(spec, q);
  ASSERT_NE(layer, nullptr);
  const SequenceSet test = RandomSequences(spec, 16, 50, 99);
  const LayerResult want = Reference(spec, test);
  const LayerResult got = RunInt8(*layer, spec, test);
  const double mean = MeanAbsDiff(want.y, got.y);
  const double max = MaxAbsDiff(want.y, got.y);
  std::cout << what << " int8 vs f32 on " << CpuIsaName() << " ("
            << layer->ImplementationInfo() << "): mean |dh| " << mean
            << ", max |dh| " << max << ", final state max |dh| "
            << MaxAbsDiff(want.h_n, got.h_n) << "\n";
  EXPECT_LT(mean, mean_bound) << "mean |dh|";
  EXPECT_LT(max, max_bound) << "max |dh|";
  EXPECT_GT(mean, 0.0) << "identical to f32: not quantized?";
  EXPECT_LT(MaxAbsDiff(want.h_n, got.h_n), max_bound) << "final state";
}

TEST(GruInt8Test, PyTorchStyleGruCloseToF32Reference) {
  // The int8 LSTM setting of FINDINGS.md: 128 -> 256, N = 16, T = 50.
  ExpectCloseToReference(Gru(128, 256, 1), /*per_channel=*/true, 0.004, 0.03,
                         "per-channel");
}

TEST(GruInt8Test, BidirectionalCloseToF32Reference) {
  ExpectCloseToReference(Gru(128, 256, 2, 3), /*per_channel=*/true, 0.004, 0.03,
                         "bidirectional");
}

TEST(GruInt8Test, PerTensorWeightsCloseToF32Reference) {
  ExpectCloseToReference(Gru(128, 256, 1, 4), /*per_channel=*/false, 0.006,
                         0.04, "per-tensor");
}

TEST(GruInt8Test, OddSizesCloseToF32Reference) {
  // H not a multiple of the 8-wide gate kernel: the scalar tail runs too.
  ExpectCloseToReference(Gru(13, 21, 2, 5), /*per_channel=*/true, 0.004, 0.03,
                         "13 -> 21");
}

TEST(GruInt8Test, PortableKernelAgreesWithAvx2Kernel) {
  // The scalar gate kernel (CPUs without AVX2, and the tail of rows whose H
  // is not a multiple of 8) against the AVX2 one and the reference.
  const ModelSpec spec = Gru(40, 72, 2, 15);
  const LayerQuantization q =
      MinMax(spec, RandomSequences(spec, 16, 30, 5), true);
  GruInt8Options portable;
  portable.allow_avx2 = false;
  auto fast = Make(spec, q);
  auto scalar = Make(spec, q, portable);
  ASSERT_TRUE(fast && scalar);
  EXPECT_NE(scalar->ImplementationInfo().find("gates scalar"),
            std::string::npos);
  const SequenceSet test = RandomSequences(spec, 8, 30, 16);
  const LayerResult want = Reference(spec, test);
  const LayerResult a = RunInt8(*fast, spec, test);
  const LayerResult b = RunInt8(*scalar, spec, test);
  // exp approximations differ by ~1e-7, which can flip a u8 rounding now
  // and then; the outputs stay far closer to each other than to f32.
  EXPECT_LT(MeanAbsDiff(a.y, b.y), 1e-4);
  EXPECT_LT(MeanAbsDiff(want.y, b.y), 0.004);
  EXPECT_LT(MaxAbsDiff(want.y, b.y), 0.03);
}

TEST(GruInt8Test, ExtremeValuesDoNotSaturateTheGemm) {
  // Every weight at the top of the s8 range times u8 255 inputs: a GEMM
  // built on vpmaddubsw saturates its s16 pair sums (2 * 255 * 127 > 32767)
  // unless the weights run on 7 bits; VNNI accumulates in s32. Either way
  // the result must match f32. Guards CpuHasInt8Vnni's ISA list.
  ModelSpec spec = Gru(64, 8, 1, 16);
  RnnLayerSpec& l = spec.layers[0];
  std::fill(l.w_layer.begin(), l.w_layer.end(), 0.02f);
  std::fill(l.w_iter.begin(), l.w_iter.end(), 0.01f);
  std::fill(l.bias.begin(), l.bias.end(), 0.0f);
  const LayerQuantization q = QuantizeLayer(l, 1.0f, 1.0f, true);
  ASSERT_EQ(q.w_layer_s8[0], 127);
  auto layer = Make(spec, q);
  ASSERT_NE(layer, nullptr);
  SequenceSet set;
  set.sequences = 2;
  set.steps = 6;
  set.features.assign(2 * 6 * 64, 1.0f);  // u8 255
  const LayerResult want = Reference(spec, set);
  const LayerResult got = RunInt8(*layer, spec, set);
  EXPECT_LT(MaxAbsDiff(want.y, got.y), 0.02) << layer->ImplementationInfo();
}

TEST(GruInt8Test, InitialStateIsHonoured) {
  const ModelSpec spec = Gru(32, 64, 2, 6);
  const LayerQuantization q =
      MinMax(spec, RandomSequences(spec, 16, 30, 5), true);
  auto layer = Make(spec, q);
  ASSERT_NE(layer, nullptr);
  const SequenceSet test = RandomSequences(spec, 4, 10, 8);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-0.8f * q.grid, 0.8f * q.grid);
  std::vector<float> h0(2 * 4 * 64);
  for (float& v : h0) v = dist(rng);
  const LayerResult want = Reference(spec, test, &h0);
  const LayerResult got = RunInt8(*layer, spec, test, &h0);
  const LayerResult zero = RunInt8(*layer, spec, test);
  EXPECT_LT(MeanAbsDiff(want.y, got.y), 0.004);
  EXPECT_LT(MaxAbsDiff(want.y, got.y), 0.03);
  EXPECT_LT(MaxAbsDiff(want.h_n, got.h_n), 0.03);
  EXPECT_GT(MaxAbsDiff(got.y, zero.y), 0.1) << "initial state had no effect";
}

TEST(GruInt8Test, ChunkedStateCarryEqualsWholeSequence) {
  // Everything up to the gate math is exact integer arithmetic and the f32
  // state is handed back unchanged, so any split of T gives the same bits.
  const ModelSpec spec = Gru(24, 40, 1, 7);
  const LayerQuantization q =
      MinMax(spec, RandomSequences(spec, 16, 30, 5), true);
  auto layer = Make(spec, q);
  ASSERT_NE(layer, nullptr);
  const int N = 4, T = 40, C = 24, H = 40;
  const SequenceSet set = RandomSequences(spec, N, T, 11);
  const std::vector<float> x =
      BatchToSequenceMajor(set.features.data(), N, T, C);
  std::vector<float> whole(static_cast<size_t>(T) * N * H), whole_h(N * H);
  ASSERT_TRUE(
      layer->Run(x.data(), T, N, nullptr, whole.data(), whole_h.data()).ok());
  for (int chunk : {1, 7, 10}) {
    std::vector<float> stitched(whole.size()), h(N * H);
    for (int t0 = 0; t0 < T; t0 += chunk) {
      const int len = std::min(chunk, T - t0);
      ASSERT_TRUE(layer
                      ->Run(&x[static_cast<size_t>(t0) * N * C], len, N,
                            t0 == 0 ? nullptr : h.data(),
                            &stitched[static_cast<size_t>(t0) * N * H],
                            h.data())
                      .ok());
    }
    EXPECT_EQ(stitched, whole) << "chunk " << chunk;
    EXPECT_EQ(h, whole_h) << "chunk " << chunk;
  }
  // The last output step is the final state.
  EXPECT_EQ(std::vector<float>(whole.end() - N * H, whole.end()), whole_h);
  // Projecting the input in blocks of steps changes nothing either.
  GruInt8Options small_blocks;
  small_blocks.block_rows = 3 * N;
  auto blocked = Make(spec, q, small_blocks);
  ASSERT_NE(blocked, nullptr);
  std::vector<float> y(whole.size()), h(N * H);
  ASSERT_TRUE(blocked->Run(x.data(), T, N, nullptr, y.data(), h.data()).ok());
  EXPECT_EQ(y, whole);
  EXPECT_EQ(h, whole_h);
}

TEST(GruInt8Test, BidirectionalBlocksGiveTheSameBits) {
  const ModelSpec spec = Gru(24, 40, 2, 8);
  const LayerQuantization q =
      MinMax(spec, RandomSequences(spec, 16, 30, 5), true);
  GruInt8Options small_blocks;
  small_blocks.block_rows = 7;
  auto whole = Make(spec, q);
  auto blocked = Make(spec, q, small_blocks);
  ASSERT_TRUE(whole && blocked);
  const SequenceSet set = RandomSequences(spec, 3, 23, 12);
  const LayerResult a = RunInt8(*whole, spec, set);
  const LayerResult b = RunInt8(*blocked, spec, set);
  EXPECT_EQ(a.y, b.y);
  EXPECT_EQ(a.h_n, b.h_n);
}

TEST(GruInt8Test, ConcurrentCallersGetIdenticalResults) {
  const ModelSpec spec = Gru(32, 64, 2, 9);
  const LayerQuantization q =
      MinMax(spec, RandomSequences(spec, 16, 30, 5), true);
  auto layer = Make(spec, q);
  ASSERT_NE(layer, nullptr);
  // Two shapes, so threads also race to create primitives.
  const SequenceSet sets[2] = {RandomSequences(spec, 5, 17, 13),
                               RandomSequences(spec, 3, 29, 14)};
  LayerResult expected[2];
  for (int s = 0; s < 2; ++s) expected[s] = RunInt8(*layer, spec, sets[s]);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      ScopedOmpThreads one(1);
      for (int k = 0; k < 10; ++k) {
        const int s = (i + k) % 2;
        const LayerResult r = RunInt8(*layer, spec, sets[s]);
        if (r.y != expected[s].y || r.h_n != expected[s].h_n) ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(GruInt8Test, ErrorDoesNotGrowWithSequenceLength) {
  const ModelSpec spec = Gru(64, 128, 1, 10);
  const LayerQuantization q =
      MinMax(spec, RandomSequences(spec, 32, 50, 5), true);
  auto layer = Make(spec, q);
  ASSERT_NE(layer, nullptr);
  const int N = 8, T = 200, H = 128;
  const SequenceSet test = RandomSequences(spec, N, T, 17);
  const LayerResult want = Reference(spec, test);
  const LayerResult got = RunInt8(*layer, spec, test);
  // Mean |d| over steps [0, 10) vs [190, 200).
  auto window = [&](int t0) {
    double s = 0;
    int count = 0;
    for (int n = 0; n < N; ++n) {
      for (int t = t0; t < t0 + 10; ++t) {
        for (int h = 0; h < H; ++h) {
          const size_t k = (static_cast<size_t>(n) * T + t) * H + h;
          s += std::fabs(want.y[k] - got.y[k]);
          ++count;
        }
      }
    }
    return s / count;
  };
  const double early = window(0), late = window(190);
  std::cout << "T = 200: mean |dh| steps 0-9 " << early << ", steps 190-199 "
            << late << ", all " << MeanAbsDiff(want.y, got.y) << "\n";
  EXPECT_LT(late, 2.0 * early + 1e-3) << "early " << early << " late " << late;
  EXPECT_LT(MeanAbsDiff(want.y, got.y), 0.004);
}

TEST(GruInt8Test, LongMemoryStateDoesNotStall) {
  // Update gate near 1 (b_u + 4): h moves by a small fraction of a grid step
  // per step. The f32 state follows; a state rounded onto the u8 grid would
  // stall (simulated for this model: max |dh| 0.084 on a 0.16 grid).
  ModelSpec spec = Gru(64, 128, 1, 10);
  for (int j = 0; j < 128; ++j) spec.layers[0].bias[j] += 4.0f;
  const LayerQuantization q =
      MinMax(spec, RandomSequences(spec, 32, 50, 5), true);
  auto layer = Make(spec, q);
  ASSERT_NE(layer, nullptr);
  const SequenceSet test = RandomSequences(spec, 16, 200, 99);
  const LayerResult want = Reference(spec, test);
  const LayerResult got = RunInt8(*layer, spec, test);
  const double mean = MeanAbsDiff(want.y, got.y);
  const double max = MaxAbsDiff(want.y, got.y);
  std::cout << "long memory (grid " << q.grid << "), T = 200: mean |dh| "
            << mean << ", max |dh| " << max << "\n";
  EXPECT_LT(mean, 0.004);
  EXPECT_LT(max, 0.1 * q.grid);
}

TEST(GruInt8Test, WeightScalesAreApplied) {
  // With the multipliers applied int8 is close to f32; doubling them (the
  // same s8 values meaning half the weights) must be far off.
  const ModelSpec spec = Gru(32, 64, 1, 11);
  const LayerQuantization q =
      MinMax(spec, RandomSequences(spec, 16, 20, 5), true);
  EXPECT_GT(q.weight_scales[0], 100.0f) << "scales near 1 would prove nothing";
  LayerQuantization doubled = q;
  for (float& s : doubled.weight_scales) s *= 2;
  auto good = Make(spec, q);
  auto bad = Make(spec, doubled);
  ASSERT_TRUE(good && bad);
  const SequenceSet test = RandomSequences(spec, 4, 20, 8);
  const LayerResult want = Reference(spec, test);
  const double good_err = MeanAbsDiff(want.y, RunInt8(*good, spec, test).y);
  const double bad_err = MeanAbsDiff(want.y, RunInt8(*bad, spec, test).y);
  EXPECT_LT(good_err, 0.01);
  EXPECT_GT(bad_err, 5 * good_err) << "good " << good_err << " bad " << bad_err;
}

TEST(GruInt8Test, U8InputAndOutputMatchTheF32Path) {
  // RunU8 takes the input already on the grid (as a chained int8 layer
  // delivers it) and can return u8: the same values as Run.
  const ModelSpec spec = Gru(16, 24, 2, 12);
  const LayerQuantization q =
      MinMax(spec, RandomSequences(spec, 16, 20, 5), true);
  auto layer = Make(spec, q);
  ASSERT_NE(layer, nullptr);
  const int N = 3, T = 9, C = 16, O = 48;
  const SequenceSet set = RandomSequences(spec, N, T, 15);
  const std::vector<float> x =
      BatchToSequenceMajor(set.features.data(), N, T, C);
  std::vector<uint8_t> x_u8(x.size());
  QuantizeU8(x.data(), static_cast<int64_t>(x.size()),
             q.data_scale * q.input_alpha, q.data_shift, x_u8.data());
  std::vector<float> y(static_cast<size_t>(T) * N * O), y2(y.size());
  std::vector<float> h(2 * N * 24), h2(h.size());
  std::vector<uint8_t> y_u8(y.size());
  ASSERT_TRUE(layer->Run(x.data(), T, N, nullptr, y.data(), h.data()).ok());
  ASSERT_TRUE(
      layer
          ->RunU8(x_u8.data(), T, N, nullptr, y2.data(), y_u8.data(), h2.data())
          .ok());
  EXPECT_EQ(y, y2);
  EXPECT_EQ(h, h2);
  std::vector<uint8_t> y_quantized(y.size());
  QuantizeU8(y.data(), static_cast<int64_t>(y.size()), q.data_scale,
             q.data_shift, y_quantized.data());
  EXPECT_EQ(y_u8, y_quantized);
  ASSERT_TRUE(
      layer->RunU8(x_u8.data(), T, N, nullptr, nullptr, y_u8.data(), nullptr)
          .ok());
}

TEST(GruInt8Test, BadConfigurationsAndArgumentsAreErrors) {
  const ModelSpec spec = Gru(8, 12, 1, 13);
  const LayerQuantization q = QuantizeLayer(spec.layers[0], 1.0f, 1.0f, true);
  RnnLayerSpec lstm = spec.layers[0];
  lstm.cell = CellType::kLstm;
  EXPECT_EQ(GruInt8Layer::Create(lstm, q).status().code(),
            StatusCode::kInvalidArgument);
  LayerQuantization f32 = q;
  f32.quantized = false;
  EXPECT_EQ(GruInt8Layer::Create(spec.layers[0], f32).status().code(),
            StatusCode::kInvalidArgument);
  LayerQuantization short_weights = q;
  short_weights.w_iter_s8.pop_back();
  EXPECT_EQ(GruInt8Layer::Create(spec.layers[0], short_weights).status().code(),
            StatusCode::kInvalidArgument);
  LayerQuantization bad_scale = q;
  bad_scale.weight_scales[3] = 0.0f;
  EXPECT_EQ(GruInt8Layer::Create(spec.layers[0], bad_scale).status().code(),
            StatusCode::kInvalidArgument);
  LayerQuantization bad_shift = q;
  bad_shift.data_shift = 127.5f;
  EXPECT_EQ(GruInt8Layer::Create(spec.layers[0], bad_shift).status().code(),
            StatusCode::kInvalidArgument);

  auto layer = Make(spec, q);
  ASSERT_NE(layer, nullptr);
  std::vector<float> x(8 * 2 * 3), y(12 * 2 * 3);
  EXPECT_EQ(layer->Run(x.data(), 0, 3, nullptr, y.data(), nullptr).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(layer->Run(x.data(), 2, 0, nullptr, y.data(), nullptr).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(layer->Run(nullptr, 2, 3, nullptr, y.data(), nullptr).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(layer->Run(x.data(), 2, 3, nullptr, nullptr, nullptr).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(layer->Run(x.data(), 2, 3, nullptr, y.data(), nullptr).ok());
}

TEST(GruInt8Test, ReportsItsImplementation) {
  const ModelSpec spec = Gru(8, 16, 1, 14);
  auto layer = Make(spec, QuantizeLayer(spec.layers[0], 1.0f, 1.0f, true));
  ASSERT_NE(layer, nullptr);
  const std::string info = layer->ImplementationInfo();
  EXPECT_NE(info.find("matmul"), std::string::npos) << info;
  EXPECT_NE(info.find(CpuHasInt8Vnni() ? "<= 127" : "<= 63"), std::string::npos)
      << info;
  // s8 weights (8 x 48 + 16 x 48) plus f32/s32 per-column constants.
  EXPECT_GE(layer->weights_bytes(), (8 + 16) * 48);
  EXPECT_LT(layer->weights_bytes(), 4 * (8 + 16) * 48);
  EXPECT_EQ(layer->input_size(), 8);
  EXPECT_EQ(layer->hidden_size(), 16);
  EXPECT_EQ(layer->directions(), 1);
}

}  // namespace
}  // namespace rnnserve::engine
