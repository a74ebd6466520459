// ServerMetrics: rnnserve's Prometheus metrics (SPEC §5), exported by a
// prometheus-cpp pull exposer on the metrics address at /metrics.
//
// Every family is built once, in Create(). A model version's labelled series
// are added when the version is loaded (ForModel), never on the request path;
// requests then only touch the Counter/Histogram/Gauge objects kept in its
// ModelMetrics. Series of unloaded versions stay (Prometheus keeps history
// anyway) with rnnserve_model_ready 0. Labels are limited to model, version,
// code (the gRPC code name) and small fixed sets (tensor, metric, source,
// precision). Requests that name no served model count under model="".
//
// Values that live in other objects (queue depth, live streams, readiness,
// the active precision) are read at scrape time through the snapshot
// callback, so they are exact when scraped and cost nothing per request.
//
// The README lists every metric with its meaning.
//
// Threads: all methods are thread-safe; prometheus-cpp metric objects are.
// The exposer's adapter is the only place prometheus-cpp exceptions are
// caught (Create).
#ifndef RNNSERVE_METRICS_SERVER_METRICS_H_
#define RNNSERVE_METRICS_SERVER_METRICS_H_

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "server/common/status.h"

namespace prometheus {
class Counter;
class Exposer;
class Gauge;
class Histogram;
class Registry;
}  // namespace prometheus

namespace rnnserve::metrics {

// Number of gRPC status codes (OK = 0 ... UNAUTHENTICATED = 16).
inline constexpr int kNumCodes = 17;

// Tensors whose quantization range is monitored.
enum class Tensor { kInput = 0, kHidden = 1 };
inline constexpr int kNumTensors = 2;

// The recent-window averages the drift action uses (rnnserve_drift_window).
enum class DriftWindowMetric {
  kMaxAbsError = 0,
  kMeanAbsError,
  kRelativeL2,
  kTop1Disagreement,
  kKl,
  kClipFraction,
};
inline constexpr int kNumDriftWindowMetrics = 6;

// One model version's series. Owned by ServerMetrics; shared with the
// scheduler and drift monitor of that version.
struct ModelMetrics {
  std::string model;
  std::string version;

  std::array<prometheus::Counter*, kNumCodes> requests{};  // by code
  prometheus::Histogram* request_duration = nullptr;
  prometheus::Histogram* queue_duration = nullptr;
  prometheus::Histogram* compute_duration = nullptr;
  prometheus::Histogram* batch_size = nullptr;

  prometheus::Counter* drift_samples = nullptr;
  prometheus::Counter* drift_shed = nullptr;
  prometheus::Histogram* drift_max_abs_error = nullptr;
  prometheus::Histogram* drift_mean_abs_error = nullptr;
  prometheus::Histogram* drift_relative_l2 = nullptr;
  prometheus::Histogram* drift_kl = nullptr;
  prometheus::Gauge* drift_top1_agreement = nullptr;
  std::array<prometheus::Gauge*, kNumDriftWindowMetrics> drift_window{};
  prometheus::Gauge* drift_triggered = nullptr;

  std::array<prometheus::Counter*, kNumTensors> calibration_values{};
  std::array<prometheus::Counter*, kNumTensors> calibration_clipped{};
  std::array<prometheus::Gauge*, kNumTensors> clip_fraction{};
  std::array<prometheus::Gauge*, kNumTensors> absmax_calibrated{};
  std::array<prometheus::Gauge*, kNumTensors> absmax_observed{};

  prometheus::Counter* precision_switches = nullptr;
  prometheus::Counter* recalibrations = nullptr;

  // Counts one answered request with status `code` that took `seconds` in
  // the server (end to end).
  void ObserveRequest(StatusCode code, double seconds);
};

// Scrape-time values of one served model version.
struct ModelSnapshot {
  std::string model;
  std::string version;
  bool ready = false;
  int64_t queue_depth = 0;
  int64_t queue_capacity = 0;
  int64_t live_sequences = 0;
  int64_t live_sequences_capacity = 0;  // 0 for dynamic batching
  double load_seconds = 0;
  int64_t weights_bytes = 0;
  bool int8_active = false;  // false: requests run in f32
  bool quantized = false;    // the model has an int8 version at all
  int64_t reservoir_sequences = 0;
};

class ServerMetrics {
 public:
  struct Options {
    // HOST:PORT for /metrics; port 0 picks a free one. Empty: no exposer
    // (the registry still works, e.g. for TextExposition in tests).
    std::string address;
    // rnnserve_build_info labels.
    std::string version;
    std::string isa;
  };

  // INVALID_ARGUMENT/UNAVAILABLE naming server.metrics_address when the
  // exposer cannot listen there.
  static StatusOr<std::unique_ptr<ServerMetrics>> Create(const Options& options);
  ~ServerMetrics();

  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The series of one model version (created on first call, then shared).
  std::shared_ptr<ModelMetrics> ForModel(const std::string& model,
                                         int64_t version);
  // Requests that named no served model (model="", version="").
  ModelMetrics& Unresolved() { return *unresolved_; }

  // Sets the source of scrape-time values (replacing any previous one).
  void SetSnapshotSource(std::function<std::vector<ModelSnapshot>()> source);

  // The bound metrics port (0 without an exposer).
  int port() const { return port_; }
  // What /metrics would answer now, in the Prometheus text format.
  std::string TextExposition() const;

 private:
  struct Families;
  class SnapshotCollector;

  ServerMetrics();

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Families> families_;
  std::shared_ptr<SnapshotCollector> snapshots_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, std::shared_ptr<ModelMetrics>>
      models_;  // guarded by mu_
  std::shared_ptr<ModelMetrics> unresolved_;
};

}  // namespace rnnserve::metrics

#endif  // RNNSERVE_METRICS_SERVER_METRICS_H_
