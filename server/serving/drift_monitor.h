// DriftMonitor: live accuracy and calibration drift of one int8 model
// version (SPEC §5), off the critical path.
//
// For every request the scheduler ran, Observe():
//   - counts the layer-0 input values outside the calibrated int8 range
//     (for token models through a per-token table of the embedding, O(T))
//     and tracks the observed input range;
//   - offers the input sequences to a bounded reservoir (live recalibration);
//   - with probability drift.sample_rate, queues the request for an f32
//     re-run. The queue is bounded (drift.queue_size): when full the sample
//     is shed and counted, so the worker never waits.
// A background thread re-runs each sample in f32 (and in int8 when the
// request was served by the f32 fallback, so drift stays measurable while
// falling back), compares the outputs (metrics/divergence.h), counts
// hidden-state values outside each int8 layer's grid, exports histograms and
// window averages, and feeds the DriftPolicy; when it triggers or recovers
// and drift.action is fallback_f32, `set_fallback` is called and the switch
// logged and counted.
//
// Stateful chunks are re-run from the chunk's own initial state, so their
// drift is that of one chunk, not of the whole stream so far.
//
// Threads: Observe is thread-safe and cheap (counting, a try-push);
// everything else runs on the monitor's thread, joined by the destructor.
#ifndef RNNSERVE_SERVING_DRIFT_MONITOR_H_
#define RNNSERVE_SERVING_DRIFT_MONITOR_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "server/engine/quantization.h"
#include "server/engine/run_types.h"
#include "server/metrics/clipping.h"
#include "server/metrics/divergence.h"
#include "server/metrics/drift_policy.h"
#include "server/metrics/reservoir.h"
#include "server/metrics/server_metrics.h"
#include "server/repository/model_repository.h"

namespace rnnserve::serving {

// One input sequence kept for recalibration: [T][F] features or [T] tokens.
struct SequenceSample {
  int steps = 0;
  std::vector<float> features;
  std::vector<int64_t> tokens;
};

class DriftMonitor {
 public:
  struct Options {
    // The version monitored; must be int8 (quantization set).
    std::shared_ptr<const repository::LoadedModel> model;
    metrics::ModelMetrics* metrics = nullptr;  // not owned; optional
    // Called from the monitor's thread with true to serve f32, false to
    // return to int8 (drift.action fallback_f32 only).
    std::function<void(bool use_f32)> set_fallback;
    // Fixed seed for sampling and the reservoir (tests); unset: random.
    std::optional<uint64_t> seed;
  };

  // FAILED_PRECONDITION unless the model is int8.
  static StatusOr<std::unique_ptr<DriftMonitor>> Create(const Options& options);
  ~DriftMonitor();

  DriftMonitor(const DriftMonitor&) = delete;
  DriftMonitor& operator=(const DriftMonitor&) = delete;

  // See the file comment. `input` holds `batch` sequences of `steps`;
  // `initial_state` (batch 1, or null for zero state) is the chunk's start
  // state; `output` is what the request was answered with; `ran_int8` says
  // which model produced it.
  void Observe(int batch, int steps, const std::vector<float>& features,
               const std::vector<int64_t>& tokens,
               const std::vector<engine::LayerState>* initial_state,
               const std::vector<float>& output, bool ran_int8);

  // The reservoir's sequences (for recalibration), and how many it holds.
  std::vector<SequenceSample> ReservoirSnapshot() const;
  int64_t reservoir_size() const;
  // True while the policy has triggered (fallback active for fallback_f32).
  bool triggered() const { return triggered_.load(); }
  // Samples compared so far (for tests waiting on the background thread).
  int64_t samples_done() const { return samples_done_.load(); }

 private:
  struct Job {
    int batch = 0;
    int steps = 0;
    std::vector<float> features;
    std::vector<int64_t> tokens;
    std::vector<engine::LayerState> initial_state;
    bool has_initial_state = false;
    std::vector<float> output;
    bool ran_int8 = true;
    int64_t input_values = 0;
    int64_t input_clipped = 0;
  };

  explicit DriftMonitor(const Options& options);
  void Loop();
  void Process(Job& job);

  const Options options_;
  const repository::LoadedModel& model_;
  const engine::QuantizationSpec& quantization_;
  const metrics::OutputKind output_kind_;
  std::unique_ptr<metrics::TokenClipTable> token_clip_;  // token models
  float input_limit_ = 0;                                 // feature models
  mutable metrics::Reservoir<SequenceSample> reservoir_;
  metrics::RangeTracker input_range_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;  // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::mt19937_64 rng_;    // guarded by mu_
  // Recent requests' (values, clipped) for the input clip-fraction gauge.
  std::deque<std::pair<int64_t, int64_t>> recent_input_;  // guarded by mu_
  int64_t recent_values_ = 0, recent_clipped_ = 0;         // guarded by mu_

  // Monitor thread only.
  metrics::DriftPolicy policy_;
  std::deque<std::pair<int64_t, int64_t>> recent_hidden_;
  int64_t recent_hidden_values_ = 0, recent_hidden_clipped_ = 0;
  float observed_hidden_absmax_ = 0;

  std::atomic<bool> triggered_{false};
  std::atomic<int64_t> samples_done_{0};
  std::thread thread_;
};

}  // namespace rnnserve::serving

#endif  // RNNSERVE_SERVING_DRIFT_MONITOR_H_
