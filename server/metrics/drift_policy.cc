#include "server/metrics/drift_policy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

namespace rnnserve::metrics {
namespace {

// Metric slots of a Sample, named as the config's threshold keys.
enum Metric {
  kMaxAbs,
  kMeanAbs,
  kRelativeL2,
  kTop1Disagreement,
  kKl,
  kClipFraction,
  kMetricCount,
};

constexpr const char* kMetricNames[kMetricCount] = {
    "max_abs_error", "mean_abs_error", "relative_l2", "top1_disagreement", "kl",
    "clip_fraction",
};

std::optional<double> Threshold(const config::DriftThresholds& t, int m) {
  switch (m) {
    case kMaxAbs:
      return t.max_abs_error;
    case kMeanAbs:
      return t.mean_abs_error;
    case kRelativeL2:
      return t.relative_l2;
    case kTop1Disagreement:
      return t.top1_disagreement;
    case kKl:
      return t.kl;
    case kClipFraction:
      return t.clip_fraction;
  }
  return std::nullopt;
}

std::string FormatNumber(double v, int precision) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
  return buf;
}

// "name value op bound", with the value printed to 3 significant digits, or
// more when 3 would print it equal to the bound.
std::string Describe(int m, double value, const char* op, double bound) {
  const std::string b = FormatNumber(bound, 6);
  std::string v = FormatNumber(value, 3);
  for (int p = 4; v == b && p <= 17; ++p) v = FormatNumber(value, p);
  return std::string(kMetricNames[m]) + " " + v + " " + op + " " + b;
}

void AppendReason(std::string* reason, const std::string& part) {
  if (!reason->empty()) *reason += ", ";
  *reason += part;
}

}  // namespace

const char* DriftEventName(DriftPolicy::Event event) {
  switch (event) {
    case DriftPolicy::Event::kNone:
      return "none";
    case DriftPolicy::Event::kTriggered:
      return "triggered";
    case DriftPolicy::Event::kRecovered:
      return "recovered";
  }
  return "unknown";
}

DriftPolicy::DriftPolicy(const config::DriftConfig& config)
    : DriftPolicy(config, Options()) {}

DriftPolicy::DriftPolicy(const config::DriftConfig& config,
                         const Options& options)
    : thresholds_(config.thresholds),
      min_samples_(std::max(config.min_samples, 0)),
      hysteresis_(std::isfinite(config.hysteresis)
                      ? std::clamp(config.hysteresis, 0.0, 0.999999)
                      : 0.0) {
  ring_.reserve(static_cast<size_t>(std::max(options.window, 1)));
}

DriftPolicy::Averages DriftPolicy::averages() const {
  double sum[kMetricCount] = {};
  int64_t count[kMetricCount] = {};
  for (const Sample& s : ring_) {
    for (int m = 0; m < kMetricCount; ++m) {
      if (s.values[m]) {
        sum[m] += *s.values[m];
        ++count[m];
      }
    }
  }
  std::optional<double> avg[kMetricCount];
  for (int m = 0; m < kMetricCount; ++m) {
    if (count[m] > 0) avg[m] = sum[m] / static_cast<double>(count[m]);
  }
  Averages a;
  a.window_samples = static_cast<int64_t>(ring_.size());
  a.max_abs_error = avg[kMaxAbs];
  a.mean_abs_error = avg[kMeanAbs];
  a.relative_l2 = avg[kRelativeL2];
  a.top1_disagreement = avg[kTop1Disagreement];
  a.kl = avg[kKl];
  a.clip_fraction = avg[kClipFraction];
  return a;
}

DriftPolicy::Update DriftPolicy::Observe(const DivergenceStats& stats,
                                         std::optional<double> clip_fraction) {
  Sample s;
  s.values[kMaxAbs] = stats.max_abs_error;
  s.values[kMeanAbs] = stats.mean_abs_error;
  s.values[kRelativeL2] = stats.relative_l2;
  if (stats.top1_agreement) {
    s.values[kTop1Disagreement] = 1.0 - *stats.top1_agreement;
  }
  s.values[kKl] = stats.kl;
  s.values[kClipFraction] = clip_fraction;
  if (ring_.size() < ring_.capacity()) {
    ring_.push_back(s);
  } else {
    ring_[next_] = s;
  }
  next_ = (next_ + 1) % ring_.capacity();
  ++samples_;

  Update update;
  if (samples_ < min_samples_) return update;
  const Averages a = averages();
  const std::optional<double> avg[kMetricCount] = {
      a.max_abs_error,
      a.mean_abs_error,
      a.relative_l2,
      a.top1_disagreement,
      a.kl,
      a.clip_fraction,
  };
  if (!triggered_) {
    std::string reason;
    for (int m = 0; m < kMetricCount; ++m) {
      const std::optional<double> t = Threshold(thresholds_, m);
      if (!t || !avg[m]) continue;
      if (!(*avg[m] <= *t))
        AppendReason(&reason, Describe(m, *avg[m], ">", *t));
    }
    if (!reason.empty()) {
      triggered_ = true;
      update.event = Event::kTriggered;
      update.reason = std::move(reason);
    }
    return update;
  }
  std::string reason;
  for (int m = 0; m < kMetricCount; ++m) {
    const std::optional<double> t = Threshold(thresholds_, m);
    if (!t || !avg[m]) continue;
    const double bound = (1.0 - hysteresis_) * *t;
    if (!(*avg[m] < bound)) return update;  // still in or above the band
    AppendReason(&reason, Describe(m, *avg[m], "<", bound));
  }
  triggered_ = false;
  update.event = Event::kRecovered;
  update.reason = reason.empty() ? "no threshold is checked" : reason;
  return update;
}

}  // namespace rnnserve::metrics
