#include "server/engine/quantization.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "server/engine/rnn_model.h"
#include "server/engine/sequence_io.h"

namespace rnnserve::engine {
namespace {

// The grid never shrinks below this (an all-zero layer would otherwise give
// an infinite scale).
constexpr float kMinGrid = 1e-3f;
// Keep at most this many |values| per layer for percentiles.
constexpr size_t kMaxSamples = 1 << 22;

// Collects |x| of a stream of values: the exact maximum, and a uniform
// reservoir sample for percentiles.
class AbsStats {
 public:
  AbsStats() : rng_(12345) {}
  void Add(const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const float a = std::fabs(x[i]);
      max_ = std::max(max_, a);
      ++seen_;
      if (sample_.size() < kMaxSamples) {
        sample_.push_back(a);
      } else {
        std::uniform_int_distribution<uint64_t> pick(0, seen_ - 1);
        const uint64_t j = pick(rng_);
        if (j < kMaxSamples) sample_[j] = a;
      }
    }
  }
  float max() const { return max_; }
  // p in (0, 100].
  float Percentile(double p) {
    if (sample_.empty()) return 0.0f;
    const size_t k = std::min(
        sample_.size() - 1,
        static_cast<size_t>(std::ceil(p / 100.0 * sample_.size())) - 1);
    std::nth_element(sample_.begin(), sample_.begin() + k, sample_.end());
    return sample_[k];
  }

 private:
  float max_ = 0.0f;
  uint64_t seen_ = 0;
  std::vector<float> sample_;
  std::mt19937_64 rng_;
};

// Per-layer choice the methods search over: the grid G and the input clip R.
struct RangeChoice {
  float grid = 1.0f;
  float input_clip = 1.0f;
};

// LSTM layers run on oneDNN's int8 RNN primitive, GRU layers on rnnserve's
// int8 GRU (gru_int8.h): every layer is quantized.
bool Quantizable(const ModelSpec& spec, size_t i) {
  return spec.layers[i].cell == CellType::kLstm ||
         spec.layers[i].cell == CellType::kGru;
}

// Whether layer i takes layer i-1's u8 output as is (its grid then fixes
// this layer's input rescale). Only between oneDNN int8 LSTM layers; the
// GRU layer quantizes its f32 input itself.
bool Chained(const ModelSpec& spec, size_t i) {
  return i > 0 && spec.layers[i].cell == CellType::kLstm &&
         spec.layers[i - 1].cell == CellType::kLstm;
}

QuantizationSpec BuildSpec(const ModelSpec& spec,
                           const std::vector<RangeChoice>& choice,
                           const CalibrationOptions& options) {
  QuantizationSpec q;
  q.method = options.method;
  q.percentile = options.percentile;
  q.per_channel = options.per_channel;
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    if (!Quantizable(spec, i)) {
      q.layers.emplace_back();  // runs in f32
      continue;
    }
    const bool chained = Chained(spec, i);
    const float alpha = chained ? choice[i].grid / choice[i - 1].grid
                                : choice[i].grid / choice[i].input_clip;
    LayerQuantization lq =
        QuantizeLayer(spec.layers[i], choice[i].grid, alpha, options.per_channel);
    lq.chained_u8_input = chained;
    lq.input_clip = chained ? choice[i - 1].grid : choice[i].input_clip;
    q.layers.push_back(std::move(lq));
  }
  return q;
}

}  // namespace

const char* CalibrationMethodName(CalibrationMethod m) {
  switch (m) {
    case CalibrationMethod::kMinMax: return "minmax";
    case CalibrationMethod::kPercentile: return "percentile";
    case CalibrationMethod::kMse: return "mse";
  }
  return "?";
}

StatusOr<CalibrationMethod> ParseCalibrationMethod(const std::string& name) {
  if (name == "minmax") return CalibrationMethod::kMinMax;
  if (name == "percentile") return CalibrationMethod::kPercentile;
  if (name == "mse") return CalibrationMethod::kMse;
  return InvalidArgument("unknown calibration method '" + name +
                         "' (expected minmax, percentile or mse)");
}

LayerQuantization QuantizeLayer(const RnnLayerSpec& layer, float grid,
                                float input_alpha, bool per_channel) {
  LayerQuantization q;
  q.quantized = true;
  q.grid = grid;
  q.data_scale = 127.0f / grid;
  q.data_shift = 128.0f;
  q.input_alpha = input_alpha;
  const int GH = layer.gates() * layer.hidden_size;
  std::vector<float> absmax(GH, 0.0f);
  auto scan = [&](const std::vector<float>& w, float mult) {
    for (size_t k = 0; k < w.size(); ++k) {
      absmax[k % GH] = std::max(absmax[k % GH], std::fabs(w[k] * mult));
    }
  };
  scan(layer.w_layer, 1.0f / input_alpha);
  scan(layer.w_iter, 1.0f);
  if (per_channel) {
    q.weight_scales.resize(GH);
    for (int k = 0; k < GH; ++k) {
      q.weight_scales[k] = 127.0f / std::max(absmax[k], 1e-8f);
    }
  } else {
    const float m = *std::max_element(absmax.begin(), absmax.end());
    q.weight_scales = {127.0f / std::max(m, 1e-8f)};
  }
  auto quantize = [&](const std::vector<float>& w, float mult,
                      std::vector<int8_t>* out) {
    out->resize(w.size());
    for (size_t k = 0; k < w.size(); ++k) {
      const float s = per_channel ? q.weight_scales[k % GH] : q.weight_scales[0];
      float v = std::nearbyint(w[k] * mult * s);
      v = std::min(127.0f, std::max(-127.0f, v));
      (*out)[k] = static_cast<int8_t>(v);
    }
  };
  quantize(layer.w_layer, 1.0f / input_alpha, &q.w_layer_s8);
  quantize(layer.w_iter, 1.0f, &q.w_iter_s8);
  return q;
}

Status ValidateQuantization(const ModelSpec& spec, const QuantizationSpec& q) {
  if (q.layers.size() != spec.layers.size()) {
    return InvalidArgument("quantization has " +
                           std::to_string(q.layers.size()) +
                           " layers, the model " +
                           std::to_string(spec.layers.size()));
  }
  for (size_t i = 0; i < q.layers.size(); ++i) {
    const LayerQuantization& lq = q.layers[i];
    const RnnLayerSpec& l = spec.layers[i];
    const std::string where = "quantization of layer " + std::to_string(i);
    if (!lq.quantized) continue;
    if (lq.chained_u8_input && l.cell != CellType::kLstm) {
      return InvalidArgument(where + ": only LSTM layers take a chained u8 input");
    }
    const size_t GH = static_cast<size_t>(l.gates()) * l.hidden_size;
    if (lq.weight_scales.size() != GH && lq.weight_scales.size() != 1) {
      return InvalidArgument(where + ": " +
                             std::to_string(lq.weight_scales.size()) +
                             " weight scales, expected 1 or " +
                             std::to_string(GH));
    }
    for (float s : lq.weight_scales) {
      if (!std::isfinite(s) || s <= 0) {
        return InvalidArgument(where + ": weight scale not finite and > 0");
      }
    }
    if (lq.w_layer_s8.size() != l.w_layer.size() ||
        lq.w_iter_s8.size() != l.w_iter.size()) {
      return InvalidArgument(where + ": quantized weight sizes do not match");
    }
    if (!std::isfinite(lq.data_scale) || lq.data_scale <= 0 ||
        !std::isfinite(lq.input_alpha) || lq.input_alpha <= 0 ||
        !(lq.data_shift >= 0 && lq.data_shift <= 255)) {
      return InvalidArgument(where + ": bad data scale, shift or alpha");
    }
    if (lq.chained_u8_input && (i == 0 || !q.layers[i - 1].quantized)) {
      return InvalidArgument(where + ": chained input without an int8 "
                             "previous layer");
    }
  }
  return Status::Ok();
}

StatusOr<QuantizationSpec> Calibrate(const ModelSpec& spec_in,
                                     const SequenceSet& data,
                                     const CalibrationOptions& options) {
  if (data.sequences < 1 || data.steps < 1) {
    return InvalidArgument("calibration set is empty");
  }
  const bool tokens = spec_in.input_kind == InputKind::kTokenIds;
  const int64_t want = data.sequences * data.steps *
                       (tokens ? 1 : spec_in.feature_size);
  if (static_cast<int64_t>(tokens ? data.tokens.size() : data.features.size()) !=
      want) {
    return InvalidArgument("calibration set: expected " +
                           std::string(tokens ? "[N, T] token ids"
                                              : "[N, T, F] features, F = " +
                                                    std::to_string(spec_in.feature_size)));
  }
  if (!data.initial_state.empty() &&
      data.initial_state.size() != spec_in.layers.size()) {
    return InvalidArgument("calibration set: initial states for " +
                           std::to_string(data.initial_state.size()) +
                           " layers, the model has " +
                           std::to_string(spec_in.layers.size()));
  }
  for (size_t l = 0; l < data.initial_state.size(); ++l) {
    const auto& layer = spec_in.layers[l];
    const size_t want_state =
        static_cast<size_t>(layer.directions) * data.sequences * layer.hidden_size;
    if (data.initial_state[l].h.size() != want_state ||
        (!data.initial_state[l].c.empty() && data.initial_state[l].c.size() != want_state) ||
        (layer.cell == CellType::kLstm && data.initial_state[l].c.size() != want_state)) {
      return InvalidArgument("calibration set: initial state of layer " +
                             std::to_string(l) + " has the wrong size");
    }
  }
  if (options.method == CalibrationMethod::kPercentile &&
      !(options.percentile > 50.0 && options.percentile <= 100.0)) {
    return InvalidArgument("calibration percentile must be in (50, 100]");
  }
  auto spec = std::make_shared<const ModelSpec>(spec_in);
  RnnModelOptions f32_options;
  ASSIGN_OR_RETURN(auto f32, RnnModel::Create(spec, f32_options));

  const size_t L = spec->layers.size();
  std::vector<AbsStats> in_stats(L), h_stats(L);
  const int bs = std::max(1, options.batch_size);
  const int64_t f32_batches = (data.sequences + bs - 1) / bs;
  const int mse_n = static_cast<int>(
      std::min<int64_t>(data.sequences, std::max(1, options.mse_max_sequences)));
  // Work units: f32 batches, then (mse only) candidate evaluations.
  const int kGridCandidates = 6, kClipCandidates = 5;
  int64_t total = f32_batches;
  if (options.method == CalibrationMethod::kMse) {
    for (size_t i = 0; i < L; ++i) {
      if (!Quantizable(*spec, i)) continue;
      const bool chained = Chained(*spec, i);
      total += kGridCandidates * (chained ? 1 : kClipCandidates);
    }
  }
  int64_t done = 0;
  auto tick = [&]() {
    ++done;
    if (options.progress) options.progress(done, total);
  };

  RunOutput scratch;
  for (int64_t first = 0; first < data.sequences; first += bs) {
    const int n = static_cast<int>(std::min<int64_t>(bs, data.sequences - first));
    std::vector<LayerState> states;
    RunInput in = SliceSequences(*spec, data, first, n, &states);
    // Initial states are h values the grid must hold too.
    for (size_t l = 0; l < states.size(); ++l) {
      h_stats[l].Add(states[l].h.data(), static_cast<int64_t>(states[l].h.size()));
    }
    RETURN_IF_ERROR(f32->RunObserved(
        in, &scratch,
        [&](int layer, const float* x, int xc, const float* y, int yc,
            int steps, int batch) {
          in_stats[layer].Add(x, static_cast<int64_t>(steps) * batch * xc);
          h_stats[layer].Add(y, static_cast<int64_t>(steps) * batch * yc);
        }).Annotate("calibration forward pass"));
    tick();
  }

  std::vector<RangeChoice> choice(L);
  std::vector<float> hmax(L), xmax(L);
  for (size_t i = 0; i < L; ++i) {
    hmax[i] = std::clamp(h_stats[i].max(), kMinGrid, 1.0f);
    xmax[i] = std::max(in_stats[i].max(), kMinGrid);
    if (options.method == CalibrationMethod::kPercentile) {
      choice[i].grid =
          std::clamp(h_stats[i].Percentile(options.percentile), kMinGrid, 1.0f);
      choice[i].input_clip =
          std::max(in_stats[i].Percentile(options.percentile), kMinGrid);
    } else {
      choice[i].grid = hmax[i];
      choice[i].input_clip = xmax[i];
    }
  }

  if (options.method == CalibrationMethod::kMse) {
    // Greedy coordinate search, layer by layer, on the end-to-end output error
    // of the int8 model against the f32 model on the first mse_n sequences.
    std::vector<LayerState> eval_states;
    RunInput eval_in = SliceSequences(*spec, data, 0, mse_n, &eval_states);
    RunOutput ref;
    RETURN_IF_ERROR(f32->Run(eval_in, &ref));
    auto error_of = [&](const std::vector<RangeChoice>& c) -> StatusOr<double> {
      RnnModelOptions o;
      o.precision = Precision::kInt8;
      o.quantization =
          std::make_shared<const QuantizationSpec>(BuildSpec(*spec, c, options));
      o.max_cached_shapes = 1;
      ASSIGN_OR_RETURN(auto m, RnnModel::Create(spec, o));
      RunOutput got;
      RETURN_IF_ERROR(m->Run(eval_in, &got));
      double se = 0;
      for (size_t k = 0; k < got.output.size(); ++k) {
        const double d = got.output[k] - ref.output[k];
        se += d * d;
      }
      return se / std::max<size_t>(1, got.output.size());
    };
    static const float kGridFactor[kGridCandidates] = {1.0f, 0.9f, 0.8f,
                                                       0.7f, 0.6f, 0.5f};
    static const double kClipPct[kClipCandidates] = {100.0, 99.99, 99.9, 99.5,
                                                     99.0};
    for (size_t i = 0; i < L; ++i) {
      if (!Quantizable(*spec, i)) continue;
      const bool chained = Chained(*spec, i);
      RangeChoice best = choice[i];
      double best_err = -1;
      for (int g = 0; g < kGridCandidates; ++g) {
        for (int c = 0; c < (chained ? 1 : kClipCandidates); ++c) {
          std::vector<RangeChoice> trial = choice;
          trial[i].grid = std::max(kMinGrid, hmax[i] * kGridFactor[g]);
          if (!chained) {
            trial[i].input_clip =
                std::max(kMinGrid, kClipPct[c] >= 100.0
                                       ? xmax[i]
                                       : in_stats[i].Percentile(kClipPct[c]));
          }
          ASSIGN_OR_RETURN(double err, error_of(trial));
          if (best_err < 0 || err < best_err) {
            best_err = err;
            best = trial[i];
          }
          tick();
        }
      }
      choice[i] = best;
    }
  }

  QuantizationSpec q = BuildSpec(*spec, choice, options);
  q.calibration_sequences = data.sequences;
  for (size_t i = 0; i < L; ++i) {
    q.layers[i].observed_input_absmax = in_stats[i].max();
    q.layers[i].observed_hidden_absmax = h_stats[i].max();
    if (!q.layers[i].quantized) {
      q.layers[i].grid = choice[i].grid;
      q.layers[i].input_clip = choice[i].input_clip;
    }
  }
  return q;
}

}  // namespace rnnserve::engine
