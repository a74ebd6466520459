// The quantization report of `rnnserve-model quantize ... --report R.json`.
//
// It compares, on hold-out data (or the calibration set), the f32 model with
// several quantized variants of it:
//   int8-minmax-per-channel, int8-percentile-per-channel,
//   int8-mse-per-channel, int8-minmax-per-tensor   (the serving int8 engine)
//   log2-4bit-per-channel                          (simulated, see below)
// plus the variant the artifact was written with, when the flags chose one
// outside this list. For each: mean and max |output - f32 output| per time
// step and overall, relative L2 error, top-1 agreement and mean KL for
// classifier-like outputs, task accuracy against --labels, model size, and
// the f32 vs int8 median batch time. Outputs: the JSON report, a table on
// stdout, and a PNG plot of the per-step error drawn by gnuplot (skipped,
// with a note, when gnuplot is not installed).
//
// log2 (power-of-two) weights are an evaluated alternative, not a serving
// kernel (SPEC §2): the weights are rounded to signed powers of two and the
// model runs with the f32 engine. Scheme, per output channel c of each RNN
// weight matrix (W_ih = w_layer and W_hh = w_iter of every layer and
// direction; a channel is one (gate, unit) column, with its own scale per
// matrix):
//   s_c  = max |w| over the channel
//   code = 4 bits: 1 sign bit + a 3-bit field e in {0..7};
//          e = 0..6 -> sign * s_c * 2^-e, e = 7 -> 0 (the zero code)
//   k    = round(log2(s_c / |w|)) (rounding in the log domain), clamped to
//          [0, 6]; |w| < s_c * 2^-7 (half the smallest level, where 0 is the
//          nearer value) gets the zero code.
// So there are K = 7 non-zero magnitudes, not 8: a 4-bit code cannot hold 8
// exponents, two signs and a zero. Biases, the embedding and the head stay
// f32. The size is an estimate: 4 bits per RNN weight, one f32 scale per
// channel, 4 bytes per other parameter (no container overhead).
#ifndef RNNSERVE_TOOLS_QUANT_REPORT_H_
#define RNNSERVE_TOOLS_QUANT_REPORT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "server/common/status.h"
#include "server/engine/model_spec.h"
#include "server/engine/quantization.h"
#include "server/engine/rnn_model.h"

namespace rnnserve::tool {

// ---- output comparison ------------------------------------------------------

// A quantized model's output against the f32 model's on the same inputs.
struct Comparison {
  std::vector<double> step_mean_abs, step_max_abs;  // per time step
  double mean_abs = 0, max_abs = 0, rel_l2 = 0;
  bool classifier = false;  // top1_agreement and mean_kl are meaningful
  double top1_agreement = 0, mean_kl = 0;
};

// Probabilities of one output row of O values, whatever the activation
// (softmax of logits when the model has none).
std::vector<double> Probabilities(const engine::ModelSpec& s, const float* y,
                                  int O);

// `ref` and `got` are batch-major outputs of `shape` ([N,T,O] or [N,O]).
// Outputs count as class scores when the model ends in (log-)softmax or has a
// head with at least 2 outputs.
Comparison Compare(const engine::ModelSpec& s,
                   const std::vector<int64_t>& shape,
                   const std::vector<float>& ref,
                   const std::vector<float>& got);

// Median milliseconds of one batch (the first min(batch, N) sequences of
// `set`) for two models, timed alternately so that both see the same machine
// load.
void TimeModels(const engine::RnnModel& a, const engine::RnnModel& b,
                const engine::SequenceSet& set, int batch, double* ms_a,
                double* ms_b);

// JSON text of a number array and of a string (quoted, escaped).
std::string JsonArray(const std::vector<double>& v);
std::string JsonString(const std::string& v);

// ---- log2 weights (simulation) ----------------------------------------------

// Non-zero magnitudes s * 2^-k, k = 0 .. kLog2Levels - 1 (see the header).
inline constexpr int kLog2Levels = 7;
inline constexpr int kLog2BitsPerWeight = 4;

// One weight rounded to the log2 grid of a channel with scale `scale`.
float Log2Round(float w, float scale);

struct Log2Summary {
  int64_t weights = 0;   // RNN weights approximated
  int64_t zeros = 0;     // of which got the zero code
  int64_t channels = 0;  // channel scales (one f32 each)
};

// A copy of `spec` whose RNN weights (every layer, W_ih and W_hh) are rounded
// to the log2 grid, per output channel of each matrix.
engine::ModelSpec Log2ApproximateWeights(const engine::ModelSpec& spec,
                                         Log2Summary* summary);

// Estimated bytes of a log2 model: 4 bits per RNN weight, f32 channel scales,
// f32 for every other parameter.
int64_t Log2SizeEstimateBytes(const engine::ModelSpec& spec);

// ---- the report -------------------------------------------------------------

struct QuantizationReportOptions {
  // The source model: path (for the report), parsed spec, file size, hash.
  std::string model_path;
  std::shared_ptr<const engine::ModelSpec> spec;
  int64_t source_bytes = 0;
  std::string source_sha256;
  // The artifact written to -o, its quantization and serialized size: the
  // "chosen" variant, which the top-level "evaluation"/"speed" keys describe.
  std::string artifact_path;
  std::shared_ptr<const engine::QuantizationSpec> chosen;
  int64_t artifact_bytes = 0;
  // Calibration set and the options the flags gave (method, percentile,
  // per-channel, batch size); the int8 variants re-calibrate with these,
  // changing only method and per-channel.
  std::string calibration_path;
  engine::CalibrationOptions calibration;
  // Evaluation data; empty = the calibration set.
  std::string holdout_path;
  // int64 class ids shaped like the output without its last axis ([N,T] or
  // [T,N] per step in the model's layout, [N] for last-step models); empty =
  // no task metric. Negative ids are ignored (PyTorch's ignore_index).
  std::string labels_path;
  std::string report_path;
  // PNG of the per-step error; empty = report_path with .png for .json.
  std::string plot_path;
  int batch = 32;   // sequences per evaluation batch and timed batch
  int threads = 1;  // intra-op threads of every model
  // Progress of the variant calibrations: (label, done, total).
  std::function<void(const char* label, int64_t done, int64_t total)> progress;
};

// Runs the comparison, prints the table to stdout, writes the JSON report and
// the plot. A missing or failing gnuplot is not an error (the report says the
// plot was skipped); unreadable data, bad labels or an unwritable report are.
Status WriteQuantizationReport(const QuantizationReportOptions& options);

}  // namespace rnnserve::tool

#endif  // RNNSERVE_TOOLS_QUANT_REPORT_H_
