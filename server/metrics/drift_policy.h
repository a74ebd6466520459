// DriftPolicy: decides from sampled int8-vs-f32 divergences whether a model
// has drifted past its configured thresholds (config::DriftConfig), and when
// it has recovered. It only decides; the caller acts (logs, switches the
// model to f32 for DriftAction::kFallbackF32, sets the precision gauge).
//
// Semantics:
//  * Each Observe() adds one sample: the DivergenceStats of one sampled
//    request and, when known, the fraction of its input values clipped by the
//    calibrated range. The policy keeps the last `Options::window` samples
//    (a ring buffer) and averages every metric over those of them that carry
//    it: top-1 disagreement (1 - top1_agreement) and KL only exist for
//    classifier outputs, clip_fraction only when the caller passes it. A
//    metric no sample in the window carries has no average and is never
//    checked (nor does it block recovery).
//  * Trigger: once samples() >= min_samples, if ANY set threshold is
//    exceeded by its metric's windowed average (average > threshold), the
//    policy enters the triggered state and that Observe() returns
//    kTriggered with a reason naming every exceeded metric, its average and
//    its threshold, e.g. "relative_l2 0.071 > 0.05".
//  * Recovery: while triggered, the policy leaves the state (kRecovered,
//    with a reason such as "relative_l2 0.031 < 0.04") only when EVERY set
//    threshold's average is below (1 - hysteresis) x threshold. Averages
//    oscillating between that bound and the threshold change nothing, so
//    the action does not flap. A threshold of 0 never recovers.
//  * Unset thresholds are never checked; with none set the policy never
//    triggers. Every other Observe() returns kNone with an empty reason.
//  * Non-finite samples count as drift: an Inf error (see divergence.h)
//    makes its metric's average Inf until the sample leaves the window, and
//    a NaN average (e.g. a NaN clip fraction) counts as exceeding and as not
//    recovered.
//  * While kFallbackF32 serves f32, the caller must keep feeding samples of
//    the int8 path against f32, or the policy can never recover.
//
// Thread safety: none; the owner serialises calls (one lock per model).
// Cost: Observe() is O(window) (averages are recomputed from the ring, so
// Inf/NaN samples cannot poison a running sum after they leave the window).
#ifndef RNNSERVE_METRICS_DRIFT_POLICY_H_
#define RNNSERVE_METRICS_DRIFT_POLICY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "server/config/model_config.h"
#include "server/metrics/divergence.h"

namespace rnnserve::metrics {

class DriftPolicy {
 public:
  struct Options {
    // Samples the averages cover. Larger is steadier and slower to react
    // (and to recover); at a 1% sample rate, 100 samples span ~10k requests.
    int window = 100;
  };

  enum class Event { kNone, kTriggered, kRecovered };

  struct Update {
    Event event = Event::kNone;
    // For kTriggered / kRecovered: why, e.g. "kl 0.12 > 0.1, ...".
    std::string reason;
  };

  // Windowed averages; unset when no sample in the window carries the metric.
  struct Averages {
    int64_t window_samples = 0;  // samples currently in the window
    std::optional<double> max_abs_error;
    std::optional<double> mean_abs_error;
    std::optional<double> relative_l2;
    std::optional<double> top1_disagreement;
    std::optional<double> kl;
    std::optional<double> clip_fraction;
  };

  // Keeps a copy of the thresholds, min_samples and hysteresis of `config`
  // (hysteresis is clamped into [0, 1), window to >= 1).
  explicit DriftPolicy(const config::DriftConfig& config);
  DriftPolicy(const config::DriftConfig& config, const Options& options);

  Update Observe(const DivergenceStats& stats,
                 std::optional<double> clip_fraction);

  bool triggered() const { return triggered_; }
  // Samples observed since construction (not only those in the window).
  int64_t samples() const { return samples_; }
  Averages averages() const;

 private:
  // One observed sample: the six metrics, each unset if not carried.
  struct Sample {
    std::optional<double> values[6];
  };

  config::DriftThresholds thresholds_;
  int64_t min_samples_;
  double hysteresis_;
  std::vector<Sample> ring_;  // capacity = window
  size_t next_ = 0;           // ring slot the next sample goes to
  int64_t samples_ = 0;
  bool triggered_ = false;
};

const char* DriftEventName(DriftPolicy::Event event);

}  // namespace rnnserve::metrics

#endif  // RNNSERVE_METRICS_DRIFT_POLICY_H_
