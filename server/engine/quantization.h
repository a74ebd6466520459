// Quantization parameters of an int8 model, and post-training calibration.
//
// Scheme (SPEC §2, FINDINGS "oneDNN 2.6.3 int8 RNN"): per LSTM layer, one u8
// grid shared by the layer input, h and the output,
//     u8 = clamp(round(data_scale * x' + data_shift), 0, 255),
// with data_shift = 128 so that h = 0 is exact. The grid is symmetric,
// [-G, G] with G = 127 / data_scale, G <= 1 since h = o * tanh(c) is in
// [-1, 1]. The layer input x (whose range differs from h's) is rescaled,
// x' = input_alpha * x, and the inverse is folded into the input weights
// (w_layer / input_alpha), so one grid serves both. For a layer fed by an
// int8 layer, input_alpha = G_this / G_previous, which makes the previous
// layer's u8 output a valid u8 input as is (chained_u8_input).
// Weights are s8 with one multiplier per gate and unit (per-channel, oneDNN
// mask (1<<3)+(1<<4), the same vector for w_layer and w_iter) or one for the
// whole layer (per-tensor): s8 = round(w * scale). Bias and cell state stay
// f32. GRU layers (linear-before-reset, which oneDNN 2.6 has no int8 RNN
// kernel for) use the same scheme on rnnserve's own int8 GRU built from
// oneDNN int8 matmuls (gru_int8.h); they quantize their own input and are
// never chained. Artifacts written before that have GRU layers with
// quantized = false, which run in f32.
#ifndef RNNSERVE_ENGINE_QUANTIZATION_H_
#define RNNSERVE_ENGINE_QUANTIZATION_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "server/common/status.h"
#include "server/engine/model_spec.h"
#include "server/engine/run_types.h"

namespace rnnserve::engine {

enum class CalibrationMethod { kMinMax, kPercentile, kMse };
const char* CalibrationMethodName(CalibrationMethod m);
StatusOr<CalibrationMethod> ParseCalibrationMethod(const std::string& name);

struct LayerQuantization {
  bool quantized = false;  // false: this layer runs in f32
  float data_scale = 127.0f;
  float data_shift = 128.0f;
  float input_alpha = 1.0f;
  bool chained_u8_input = false;  // input is the previous layer's u8 output
  // gates*hidden multipliers (per-channel) or one (per-tensor).
  std::vector<float> weight_scales;
  std::vector<int8_t> w_layer_s8;  // round((w_layer / input_alpha) * scale)
  std::vector<int8_t> w_iter_s8;   // round(w_iter * scale)
  // What calibration saw (f32 model on the calibration set), for reports and
  // calibration-drift metrics: max |x| of the layer input and of h, and the
  // clipping range actually used for the input (G / input_alpha).
  float observed_input_absmax = 0.0f;
  float observed_hidden_absmax = 0.0f;
  float input_clip = 0.0f;
  float grid = 1.0f;  // G
};

struct QuantizationSpec {
  CalibrationMethod method = CalibrationMethod::kMinMax;
  double percentile = 99.99;
  bool per_channel = true;
  int64_t calibration_sequences = 0;
  std::vector<LayerQuantization> layers;  // one per ModelSpec layer
};

// A set of equal-length sequences (calibration data, tool inputs):
// batch-major features [N][T][F] or token ids [N][T].
struct SequenceSet {
  int64_t sequences = 0;
  int steps = 0;
  std::vector<float> features;
  std::vector<int64_t> tokens;
  // Optional initial states of all sequences, one LayerState per layer laid
  // out [dirs][sequences][H] (for models whose graph takes h0/c0): they run
  // with the sequences, and calibration makes the h grid cover them.
  std::vector<LayerState> initial_state;
};

struct CalibrationOptions {
  CalibrationMethod method = CalibrationMethod::kMinMax;
  double percentile = 99.99;  // for kPercentile, in (50, 100]
  bool per_channel = true;
  // kMse evaluates candidate ranges end to end on at most this many
  // calibration sequences (the rest still feed the range statistics).
  int mse_max_sequences = 32;
  int batch_size = 32;  // sequences per f32 forward pass
  // Called with (done, total) work units as calibration proceeds.
  std::function<void(int64_t, int64_t)> progress;
};

// Runs the f32 model on `data`, chooses every int8 LSTM layer's grid and
// input rescale with `options.method`, and quantizes the weights.
StatusOr<QuantizationSpec> Calibrate(const ModelSpec& spec,
                                     const SequenceSet& data,
                                     const CalibrationOptions& options);

// Quantizes one layer's weights for a given grid G and input rescale alpha
// (exposed for tests and for the report's per-tensor/per-channel comparison).
LayerQuantization QuantizeLayer(const RnnLayerSpec& layer, float grid,
                                float input_alpha, bool per_channel);

// Consistency checks of a QuantizationSpec against its model (sizes, scales
// finite and positive); used by the artifact loader.
Status ValidateQuantization(const ModelSpec& spec, const QuantizationSpec& q);

}  // namespace rnnserve::engine

#endif  // RNNSERVE_ENGINE_QUANTIZATION_H_
