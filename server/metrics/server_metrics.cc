#include "server/metrics/server_metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cassert>
#include <exception>
#include <utility>

namespace rnnserve::metrics {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

// 100 µs ... 10 s, about three buckets per decade.
const Histogram::BucketBoundaries kSecondsBuckets = {
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
    0.05, 0.1,    0.25, 0.5,  1,      2.5,  5,    10};
const Histogram::BucketBoundaries kBatchBuckets = {1,  2,  4,   8,
                                                   16, 32, 64, 128, 256};
// Output-unit errors (logits, features): 1e-4 ... 100.
const Histogram::BucketBoundaries kErrorBuckets = {
    1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100};
// Ratios and divergences: 1e-6 ... 1.
const Histogram::BucketBoundaries kRatioBuckets = {
    1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1};

const char* TensorName(int t) { return t == 0 ? "input" : "hidden"; }

const char* DriftWindowName(int m) {
  static const char* const kNames[kNumDriftWindowMetrics] = {
      "max_abs_error", "mean_abs_error", "relative_l2",
      "top1_disagreement", "kl", "clip_fraction"};
  return kNames[m];
}

}  // namespace

struct ServerMetrics::Families {
  explicit Families(prometheus::Registry& r)
      : build_info(prometheus::BuildGauge()
                       .Name("rnnserve_build_info")
                       .Help("1, labelled with the server version and the CPU "
                             "ISA oneDNN dispatches to")
                       .Register(r)),
        requests(prometheus::BuildCounter()
                     .Name("rnnserve_requests_total")
                     .Help("Inference requests answered, by gRPC status code")
                     .Register(r)),
        request_duration(prometheus::BuildHistogram()
                             .Name("rnnserve_request_duration_seconds")
                             .Help("Time from receiving an inference request "
                                   "to its answer being ready, in the server")
                             .Register(r)),
        queue_duration(prometheus::BuildHistogram()
                           .Name("rnnserve_queue_duration_seconds")
                           .Help("Time a request waited in its model's batch "
                                 "queue")
                           .Register(r)),
        compute_duration(prometheus::BuildHistogram()
                             .Name("rnnserve_compute_duration_seconds")
                             .Help("Engine time of one batch")
                             .Register(r)),
        batch_size(prometheus::BuildHistogram()
                       .Name("rnnserve_batch_size")
                       .Help("Sequences per engine batch")
                       .Register(r)),
        drift_samples(prometheus::BuildCounter()
                          .Name("rnnserve_drift_samples_total")
                          .Help("Live requests re-run in f32 to measure drift")
                          .Register(r)),
        drift_shed(prometheus::BuildCounter()
                       .Name("rnnserve_drift_shed_total")
                       .Help("Drift samples dropped because the background "
                             "queue was full")
                       .Register(r)),
        drift_max_abs(prometheus::BuildHistogram()
                          .Name("rnnserve_drift_max_abs_error")
                          .Help("Per sampled request: max |int8 - f32| of the "
                                "outputs")
                          .Register(r)),
        drift_mean_abs(prometheus::BuildHistogram()
                           .Name("rnnserve_drift_mean_abs_error")
                           .Help("Per sampled request: mean |int8 - f32| of "
                                 "the outputs")
                           .Register(r)),
        drift_relative_l2(prometheus::BuildHistogram()
                              .Name("rnnserve_drift_relative_l2")
                              .Help("Per sampled request: ||int8 - f32|| / "
                                    "||f32||")
                              .Register(r)),
        drift_kl(prometheus::BuildHistogram()
                     .Name("rnnserve_drift_kl_divergence")
                     .Help("Per sampled request of a classifier: mean "
                           "KL(f32 || int8) over output rows, nats")
                     .Register(r)),
        drift_top1(prometheus::BuildGauge()
                       .Name("rnnserve_drift_top1_agreement_ratio")
                       .Help("Fraction of classifier output rows whose top-1 "
                             "class agrees with f32, recent window")
                       .Register(r)),
        drift_window(prometheus::BuildGauge()
                         .Name("rnnserve_drift_window")
                         .Help("Recent-window averages the drift action "
                               "compares with its thresholds")
                         .Register(r)),
        drift_triggered(prometheus::BuildGauge()
                            .Name("rnnserve_drift_triggered")
                            .Help("1 while a configured drift threshold is "
                                  "passed")
                            .Register(r)),
        calibration_values(prometheus::BuildCounter()
                               .Name("rnnserve_calibration_values_total")
                               .Help("Values checked against the calibrated "
                                     "quantization range")
                               .Register(r)),
        calibration_clipped(prometheus::BuildCounter()
                                .Name("rnnserve_calibration_clipped_values_"
                                      "total")
                                .Help("Values outside the calibrated range "
                                      "(clipped by int8)")
                                .Register(r)),
        clip_fraction(prometheus::BuildGauge()
                          .Name("rnnserve_calibration_clip_fraction")
                          .Help("Fraction of values clipped, recent window")
                          .Register(r)),
        absmax(prometheus::BuildGauge()
                   .Name("rnnserve_calibration_absmax")
                   .Help("Largest |value| of a tensor: calibrated (the int8 "
                         "range) and observed live")
                   .Register(r)),
        precision_switches(prometheus::BuildCounter()
                               .Name("rnnserve_precision_switches_total")
                               .Help("Switches between int8 and the f32 "
                                     "fallback")
                               .Register(r)),
        recalibrations(prometheus::BuildCounter()
                           .Name("rnnserve_recalibrations_total")
                           .Help("Live recalibrations swapped in")
                           .Register(r)) {}

  Family<Gauge>& build_info;
  Family<Counter>& requests;
  Family<Histogram>& request_duration;
  Family<Histogram>& queue_duration;
  Family<Histogram>& compute_duration;
  Family<Histogram>& batch_size;
  Family<Counter>& drift_samples;
  Family<Counter>& drift_shed;
  Family<Histogram>& drift_max_abs;
  Family<Histogram>& drift_mean_abs;
  Family<Histogram>& drift_relative_l2;
  Family<Histogram>& drift_kl;
  Family<Gauge>& drift_top1;
  Family<Gauge>& drift_window;
  Family<Gauge>& drift_triggered;
  Family<Counter>& calibration_values;
  Family<Counter>& calibration_clipped;
  Family<Gauge>& clip_fraction;
  Family<Gauge>& absmax;
  Family<Counter>& precision_switches;
  Family<Counter>& recalibrations;
};

// Scrape-time gauges from the snapshot source.
class ServerMetrics::SnapshotCollector final : public prometheus::Collectable {
 public:
  static constexpr size_t kSnapshotFamilies = 9;

  void SetSource(std::function<std::vector<ModelSnapshot>()> source) {
    std::lock_guard<std::mutex> lock(mu_);
    source_ = std::move(source);
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<ModelSnapshot> snapshots;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (source_) snapshots = source_();
    }
    std::vector<prometheus::MetricFamily> out;
    out.reserve(kSnapshotFamilies);  // family() hands out references into it
    auto family = [&](const char* name, const char* help) -> auto& {
      out.push_back(prometheus::MetricFamily{name, help,
                                             prometheus::MetricType::Gauge, {}});
      return out.back().metric;
    };
    auto gauge = [](const ModelSnapshot& s, double value,
                    std::vector<prometheus::ClientMetric::Label> extra = {}) {
      prometheus::ClientMetric m;
      m.label = {{"model", s.model}, {"version", s.version}};
      m.label.insert(m.label.end(), extra.begin(), extra.end());
      std::sort(m.label.begin(), m.label.end());  // as the registry writes them
      m.gauge.value = value;
      return m;
    };
    auto& ready = family("rnnserve_model_ready",
                         "1 while the model version serves requests");
    auto& depth = family("rnnserve_queue_depth",
                         "Requests (or stream chunks) waiting in the batch "
                         "queue");
    auto& capacity = family("rnnserve_queue_capacity",
                            "The queue's bound (max_queue_size)");
    auto& live = family("rnnserve_live_sequences",
                        "Live stateful streams (sequence batching)");
    auto& live_capacity = family("rnnserve_live_sequences_capacity",
                                 "The bound on live streams "
                                 "(max_active_sequences)");
    auto& load = family("rnnserve_model_load_duration_seconds",
                        "Time the version took to load (import, calibrate, "
                        "pack)");
    auto& weights = family("rnnserve_model_weights_bytes",
                           "Packed weight bytes of the serving model");
    auto& precision = family("rnnserve_model_precision",
                             "1 for the precision requests run in now");
    auto& reservoir = family("rnnserve_reservoir_sequences",
                             "Live input sequences kept for recalibration");
    assert(out.size() == kSnapshotFamilies);
    for (const ModelSnapshot& s : snapshots) {
      ready.push_back(gauge(s, s.ready ? 1 : 0));
      depth.push_back(gauge(s, static_cast<double>(s.queue_depth)));
      capacity.push_back(gauge(s, static_cast<double>(s.queue_capacity)));
      live.push_back(gauge(s, static_cast<double>(s.live_sequences)));
      live_capacity.push_back(
          gauge(s, static_cast<double>(s.live_sequences_capacity)));
      load.push_back(gauge(s, s.load_seconds));
      weights.push_back(gauge(s, static_cast<double>(s.weights_bytes)));
      precision.push_back(gauge(s, s.int8_active ? 1 : 0, {{"precision", "int8"}}));
      precision.push_back(gauge(s, s.int8_active ? 0 : 1, {{"precision", "f32"}}));
      reservoir.push_back(gauge(s, static_cast<double>(s.reservoir_sequences)));
    }
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::function<std::vector<ModelSnapshot>()> source_;  // guarded by mu_
};

void ModelMetrics::ObserveRequest(StatusCode code, double seconds) {
  const int c = static_cast<int>(code);
  if (c >= 0 && c < kNumCodes && requests[c] != nullptr) requests[c]->Increment();
  if (request_duration != nullptr) request_duration->Observe(seconds);
}

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      families_(std::make_unique<Families>(*registry_)),
      snapshots_(std::make_shared<SnapshotCollector>()) {}

ServerMetrics::~ServerMetrics() = default;

StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Create(
    const Options& options) {
  std::unique_ptr<ServerMetrics> metrics(new ServerMetrics());
  metrics->families_->build_info
      .Add({{"version", options.version}, {"isa", options.isa}})
      .Set(1);
  metrics->unresolved_ = metrics->ForModel("", 0);
  if (!options.address.empty()) {
    // prometheus-cpp (civetweb underneath) throws when it cannot listen.
    try {
      metrics->exposer_ = std::make_unique<prometheus::Exposer>(
          options.address, /*num_threads=*/1);
    } catch (const std::exception& e) {
      return Status(StatusCode::kUnavailable,
                    "server.metrics_address: cannot listen on '" +
                        options.address + "': " + e.what());
    }
    metrics->exposer_->RegisterCollectable(metrics->registry_);
    metrics->exposer_->RegisterCollectable(metrics->snapshots_);
    const std::vector<int> ports = metrics->exposer_->GetListeningPorts();
    if (!ports.empty()) metrics->port_ = ports.front();
  }
  return metrics;
}

std::shared_ptr<ModelMetrics> ServerMetrics::ForModel(const std::string& model,
                                                      int64_t version) {
  const std::string v = version > 0 ? std::to_string(version) : "";
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find({model, v});
  if (it != models_.end()) return it->second;
  auto m = std::make_shared<ModelMetrics>();
  m->model = model;
  m->version = v;
  const prometheus::Labels labels = {{"model", model}, {"version", v}};
  auto with = [&](const char* key, const std::string& value) {
    prometheus::Labels l = labels;
    l[key] = value;
    return l;
  };
  Families& f = *families_;
  for (int c = 0; c < kNumCodes; ++c) {
    m->requests[c] =
        &f.requests.Add(with("code", StatusCodeName(static_cast<StatusCode>(c))));
  }
  m->request_duration = &f.request_duration.Add(labels, kSecondsBuckets);
  m->queue_duration = &f.queue_duration.Add(labels, kSecondsBuckets);
  m->compute_duration = &f.compute_duration.Add(labels, kSecondsBuckets);
  m->batch_size = &f.batch_size.Add(labels, kBatchBuckets);
  m->drift_samples = &f.drift_samples.Add(labels);
  m->drift_shed = &f.drift_shed.Add(labels);
  m->drift_max_abs_error = &f.drift_max_abs.Add(labels, kErrorBuckets);
  m->drift_mean_abs_error = &f.drift_mean_abs.Add(labels, kErrorBuckets);
  m->drift_relative_l2 = &f.drift_relative_l2.Add(labels, kRatioBuckets);
  m->drift_kl = &f.drift_kl.Add(labels, kRatioBuckets);
  m->drift_top1_agreement = &f.drift_top1.Add(labels);
  m->drift_top1_agreement->Set(1);
  for (int w = 0; w < kNumDriftWindowMetrics; ++w) {
    m->drift_window[w] = &f.drift_window.Add(with("metric", DriftWindowName(w)));
  }
  m->drift_triggered = &f.drift_triggered.Add(labels);
  for (int t = 0; t < kNumTensors; ++t) {
    m->calibration_values[t] = &f.calibration_values.Add(with("tensor", TensorName(t)));
    m->calibration_clipped[t] = &f.calibration_clipped.Add(with("tensor", TensorName(t)));
    m->clip_fraction[t] = &f.clip_fraction.Add(with("tensor", TensorName(t)));
    prometheus::Labels cal = with("tensor", TensorName(t));
    cal["source"] = "calibrated";
    m->absmax_calibrated[t] = &f.absmax.Add(cal);
    cal["source"] = "observed";
    m->absmax_observed[t] = &f.absmax.Add(cal);
  }
  m->precision_switches = &f.precision_switches.Add(labels);
  m->recalibrations = &f.recalibrations.Add(labels);
  models_.emplace(std::make_pair(model, v), m);
  return m;
}

void ServerMetrics::SetSnapshotSource(
    std::function<std::vector<ModelSnapshot>()> source) {
  snapshots_->SetSource(std::move(source));
}

std::string ServerMetrics::TextExposition() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (auto& f : snapshots_->Collect()) families.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace rnnserve::metrics
