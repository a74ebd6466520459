// Divergence between a model's int8 outputs and its f32 reference outputs for
// the same request: the numbers behind the accuracy-drift metrics (SPEC §5).
//
// CompareOutputs() takes two row-major float arrays of `rows` x `width`
// (rows = N*T for per-step outputs, N for last-step outputs; width = the
// output size) and reports
//   max_abs_error   max |q - r| over all elements
//   mean_abs_error  mean |q - r| over all elements
//   relative_l2     ||q - r||_2 / max(||r||_2, kTinyNorm)
// and, for classifier outputs (OutputKind other than kRegression),
//   top1_agreement  fraction of rows whose argmax agrees (ties -> lowest
//                   index), taken on the raw outputs (every classifier kind
//                   is monotone in the probability)
//   kl              mean over rows of KL(p_ref || p_q) in nats, computed in
//                   double: softmax through a max-shifted log-softmax for
//                   kLogits; probabilities clamped below at kMinProbability
//                   (not renormalised) for kProbabilities and
//                   kLogProbabilities. This is what PyTorch's
//                   F.kl_div(log_q, p_ref, reduction="batchmean") gives.
//                   A row's rounding residue below 0 is clamped to 0.
//
// Non-finite values never crash and are never hidden: an element where q
// and r differ and either is NaN/Inf has infinite error (so max, mean and
// relative L2 become +Inf); elements that are bitwise-equal infinities count
// as 0 error. A classifier row whose probabilities cannot be formed (NaN, a
// +Inf logit, all logits -Inf, a non-finite probability) disagrees and has
// KL +Inf. Nothing here produces NaN.
//
// All functions are pure and thread-safe.
#ifndef RNNSERVE_METRICS_DIVERGENCE_H_
#define RNNSERVE_METRICS_DIVERGENCE_H_

#include <cstdint>
#include <optional>

#include "server/engine/model_spec.h"

namespace rnnserve::metrics {

// What a model's main output holds, which decides the classifier metrics.
enum class OutputKind {
  kRegression,        // arbitrary values: no top-1 / KL
  kLogits,            // unnormalised scores: softmax gives probabilities
  kProbabilities,     // already softmax
  kLogProbabilities,  // log-softmax: exp gives probabilities
};
const char* OutputKindName(OutputKind kind);

inline bool IsClassifier(OutputKind kind) {
  return kind != OutputKind::kRegression;
}

// From the graph: Softmax -> kProbabilities, LogSoftmax -> kLogProbabilities;
// with no activation, a Linear head with more than one output is taken to
// emit logits (kLogits) and anything else is kRegression (no head, or a
// one-output head). Note this is wider than ModelSpec::is_classifier(), which
// only looks at the activation; a multi-output regression head would be
// misread as logits (its top-1/KL numbers are then meaningless but harmless:
// only configured thresholds act on them).
OutputKind OutputKindOf(const engine::ModelSpec& spec);

// Denominator floor of relative_l2 (an all-zero reference).
inline constexpr double kTinyNorm = 1e-12;
// Probability floor for kProbabilities and kLogProbabilities.
inline constexpr double kMinProbability = 1e-12;

struct DivergenceStats {
  int64_t rows = 0;
  double max_abs_error = 0.0;
  double mean_abs_error = 0.0;
  double relative_l2 = 0.0;
  // Set only for classifier kinds. With rows == 0: agreement 1, kl 0.
  std::optional<double> top1_agreement;
  std::optional<double> kl;
  // Elements whose error is infinite because of NaN/Inf (0 normally).
  int64_t non_finite_elements = 0;
};

// `quantized` and `reference` each hold rows * width floats (row-major); the
// caller keeps ownership. rows <= 0 or width <= 0 gives all-zero stats.
DivergenceStats CompareOutputs(const float* quantized, const float* reference,
                               int64_t rows, int64_t width, OutputKind kind);

}  // namespace rnnserve::metrics

#endif  // RNNSERVE_METRICS_DIVERGENCE_H_
