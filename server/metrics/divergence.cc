#include "server/metrics/divergence.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace rnnserve::metrics {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Fills out[0..width) with the row's log-probabilities in double; false when
// they cannot be formed (see the header for which rows).
bool LogProbabilities(const float* x, int64_t width, OutputKind kind,
                      double* out) {
  switch (kind) {
    case OutputKind::kLogits: {
      double max = -kInf;
      for (int64_t i = 0; i < width; ++i) {
        const double v = x[i];
        if (std::isnan(v) || v == kInf) return false;
        max = std::max(max, v);
      }
      if (max == -kInf) return false;
      double sum = 0.0;
      for (int64_t i = 0; i < width; ++i) sum += std::exp(x[i] - max);
      const double log_sum = std::log(sum);
      for (int64_t i = 0; i < width; ++i) out[i] = (x[i] - max) - log_sum;
      return true;
    }
    case OutputKind::kProbabilities: {
      for (int64_t i = 0; i < width; ++i) {
        const double v = x[i];
        if (!std::isfinite(v)) return false;
        out[i] = std::log(std::max(v, kMinProbability));
      }
      return true;
    }
    case OutputKind::kLogProbabilities: {
      const double floor = std::log(kMinProbability);
      for (int64_t i = 0; i < width; ++i) {
        const double v = x[i];
        if (std::isnan(v) || v == kInf) return false;
        out[i] = std::max(v, floor);  // log(max(exp(v), kMinProbability))
      }
      return true;
    }
    case OutputKind::kRegression:
      break;
  }
  return false;
}

// Index of the row's largest value, the lowest on ties. Only called on rows
// LogProbabilities accepted, so there is no NaN.
int64_t ArgMax(const float* x, int64_t width) {
  int64_t best = 0;
  for (int64_t i = 1; i < width; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

}  // namespace

const char* OutputKindName(OutputKind kind) {
  switch (kind) {
    case OutputKind::kRegression:
      return "regression";
    case OutputKind::kLogits:
      return "logits";
    case OutputKind::kProbabilities:
      return "probabilities";
    case OutputKind::kLogProbabilities:
      return "log_probabilities";
  }
  return "unknown";
}

OutputKind OutputKindOf(const engine::ModelSpec& spec) {
  switch (spec.activation) {
    case engine::OutputActivation::kSoftmax:
      return OutputKind::kProbabilities;
    case engine::OutputActivation::kLogSoftmax:
      return OutputKind::kLogProbabilities;
    case engine::OutputActivation::kNone:
      break;
  }
  if (spec.has_head && spec.head.out_features > 1) return OutputKind::kLogits;
  return OutputKind::kRegression;
}

DivergenceStats CompareOutputs(const float* quantized, const float* reference,
                               int64_t rows, int64_t width, OutputKind kind) {
  DivergenceStats stats;
  const bool classifier = IsClassifier(kind);
  if (classifier) {
    stats.top1_agreement = 1.0;
    stats.kl = 0.0;
  }
  if (rows <= 0 || width <= 0 || quantized == nullptr || reference == nullptr) {
    return stats;
  }
  stats.rows = rows;

  const int64_t n = rows * width;
  double max_abs = 0.0;
  double sum_abs = 0.0;
  double sum_sq_diff = 0.0;
  double sum_sq_ref = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double q = quantized[i];
    const double r = reference[i];
    double d = 0.0;
    if (q != r) {  // equal infinities are no error
      d = std::fabs(q - r);
      if (!std::isfinite(d)) {
        d = kInf;
        ++stats.non_finite_elements;
      }
    }
    max_abs = std::max(max_abs, d);
    sum_abs += d;
    sum_sq_diff += d * d;
    if (std::isfinite(r)) {
      sum_sq_ref += r * r;
    } else if (q == r) {
      sum_sq_ref = kInf;  // an infinite reference matched exactly
    }
  }
  stats.max_abs_error = max_abs;
  stats.mean_abs_error = sum_abs / static_cast<double>(n);
  if (sum_sq_diff == kInf) {
    stats.relative_l2 = kInf;
  } else {
    // sqrt(finite) / inf is 0, the right limit for an infinite reference.
    stats.relative_l2 =
        std::sqrt(sum_sq_diff) / std::max(std::sqrt(sum_sq_ref), kTinyNorm);
  }

  if (!classifier) return stats;
  std::vector<double> log_q(static_cast<size_t>(width));
  std::vector<double> log_r(static_cast<size_t>(width));
  int64_t agree = 0;
  double kl_sum = 0.0;
  for (int64_t row = 0; row < rows; ++row) {
    const float* q = quantized + row * width;
    const float* r = reference + row * width;
    const bool ok_q = LogProbabilities(q, width, kind, log_q.data());
    const bool ok_r = LogProbabilities(r, width, kind, log_r.data());
    if (!ok_q || !ok_r) {
      kl_sum = kInf;
      continue;
    }
    if (ArgMax(q, width) == ArgMax(r, width)) ++agree;
    double kl = 0.0;
    for (int64_t i = 0; i < width; ++i) {
      const double p = std::exp(log_r[i]);
      if (p == 0.0) continue;  // 0 * log(0 / q) = 0, also when q = 0
      kl += p * (log_r[i] - log_q[i]);
    }
    kl_sum += std::max(kl, 0.0);
  }
  stats.top1_agreement = static_cast<double>(agree) / static_cast<double>(rows);
  stats.kl = kl_sum / static_cast<double>(rows);
  return stats;
}

}  // namespace rnnserve::metrics
