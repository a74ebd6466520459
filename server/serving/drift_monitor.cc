#include "server/serving/drift_monitor.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "server/common/log.h"

namespace rnnserve::serving {
namespace {

// Requests whose input clipping the input clip-fraction gauge averages.
constexpr size_t kRecentRequests = 256;
// Samples whose hidden clipping the hidden clip-fraction gauge averages.
constexpr size_t kRecentSamples = 100;

void PushRecent(std::deque<std::pair<int64_t, int64_t>>* ring, size_t limit,
                int64_t values, int64_t clipped, int64_t* sum_values,
                int64_t* sum_clipped) {
  ring->emplace_back(values, clipped);
  *sum_values += values;
  *sum_clipped += clipped;
  if (ring->size() > limit) {
    *sum_values -= ring->front().first;
    *sum_clipped -= ring->front().second;
    ring->pop_front();
  }
}

}  // namespace

DriftMonitor::DriftMonitor(const Options& options)
    : options_(options),
      model_(*options.model),
      quantization_(*options.model->quantization),
      output_kind_(metrics::OutputKindOf(*options.model->spec)),
      reservoir_(metrics::Reservoir<SequenceSample>::Options{
          static_cast<size_t>(
              std::max(0, options.model->config.drift.reservoir_size)),
          options.seed}),
      rng_(options.seed ? *options.seed + 1 : std::random_device()()),
      policy_(options.model->config.drift) {
  const engine::LayerQuantization& first = quantization_.layers.front();
  input_limit_ = first.input_clip;
  if (model_.spec->has_embedding) {
    token_clip_ = std::make_unique<metrics::TokenClipTable>(
        model_.spec->embedding, input_limit_);
  }
  if (metrics::ModelMetrics* m = options_.metrics) {
    m->absmax_calibrated[static_cast<int>(metrics::Tensor::kInput)]->Set(
        first.input_clip);
    m->absmax_calibrated[static_cast<int>(metrics::Tensor::kHidden)]->Set(
        first.grid);
  }
  thread_ = std::thread([this] { Loop(); });
}

DriftMonitor::~DriftMonitor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

StatusOr<std::unique_ptr<DriftMonitor>> DriftMonitor::Create(
    const Options& options) {
  if (options.model == nullptr || options.model->quantization == nullptr ||
      options.model->quantization->layers.empty() ||
      options.model->precision != engine::Precision::kInt8) {
    return FailedPrecondition(
        "drift monitoring needs an int8 model (with its quantization)");
  }
  return std::unique_ptr<DriftMonitor>(new DriftMonitor(options));
}

void DriftMonitor::Observe(int batch, int steps,
                           const std::vector<float>& features,
                           const std::vector<int64_t>& tokens,
                           const std::vector<engine::LayerState>* initial_state,
                           const std::vector<float>& output, bool ran_int8) {
  // Calibration drift of the layer-0 input, for every request.
  int64_t values = 0, clipped = 0;
  metrics::ValueRange range;
  if (token_clip_ != nullptr) {
    values = static_cast<int64_t>(tokens.size()) * token_clip_->dim();
    clipped = token_clip_->Clipped(tokens.data(), tokens.size());
    range = token_clip_->Range(tokens.data(), tokens.size());
  } else {
    values = static_cast<int64_t>(features.size());
    clipped = metrics::CountOutside(features.data(), values, input_limit_);
    range = metrics::RangeOf(features.data(), values);
  }
  input_range_.Merge(range);
  metrics::ModelMetrics* m = options_.metrics;
  constexpr int kInput = static_cast<int>(metrics::Tensor::kInput);
  if (m != nullptr) {
    m->calibration_values[kInput]->Increment(static_cast<double>(values));
    m->calibration_clipped[kInput]->Increment(static_cast<double>(clipped));
    m->absmax_observed[kInput]->Set(input_range_.Get().absmax());
  }

  // The reservoir keeps whole sequences (one per row of the batch).
  const int64_t row_tokens = steps;
  const int64_t row_features =
      batch > 0 ? static_cast<int64_t>(features.size()) / batch : 0;
  for (int r = 0; r < batch; ++r) {
    reservoir_.Offer([&] {
      SequenceSample s;
      s.steps = steps;
      if (!tokens.empty()) {
        s.tokens.assign(tokens.begin() + r * row_tokens,
                        tokens.begin() + (r + 1) * row_tokens);
      } else {
        s.features.assign(features.begin() + r * row_features,
                          features.begin() + (r + 1) * row_features);
      }
      return s;
    });
  }

  const config::DriftConfig& drift = model_.config.drift;
  bool sampled = false, shed = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    PushRecent(&recent_input_, kRecentRequests, values, clipped,
               &recent_values_, &recent_clipped_);
    if (m != nullptr && recent_values_ > 0) {
      m->clip_fraction[kInput]->Set(static_cast<double>(recent_clipped_) /
                                    static_cast<double>(recent_values_));
    }
    if (drift.sample_rate > 0 &&
        std::uniform_real_distribution<double>(0.0, 1.0)(rng_) <
            drift.sample_rate) {
      if (static_cast<int>(queue_.size()) >= drift.queue_size || stopping_) {
        shed = true;
      } else {
        sampled = true;
        Job job;
        job.batch = batch;
        job.steps = steps;
        job.features = features;
        job.tokens = tokens;
        if (initial_state != nullptr && !initial_state->empty()) {
          job.initial_state = *initial_state;
          job.has_initial_state = true;
        }
        job.output = output;
        job.ran_int8 = ran_int8;
        job.input_values = values;
        job.input_clipped = clipped;
        queue_.push_back(std::move(job));
      }
    }
  }
  if (sampled) cv_.notify_one();
  if (shed && m != nullptr) m->drift_shed->Increment();
}

void DriftMonitor::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;  // pending samples are dropped: nobody waits
    Job job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    Process(job);
    lock.lock();
  }
}

void DriftMonitor::Process(Job& job) {
  engine::RunInput input;
  input.batch = job.batch;
  input.steps = job.steps;
  if (!job.tokens.empty()) input.tokens = job.tokens.data();
  if (!job.features.empty()) input.features = job.features.data();
  if (job.has_initial_state) input.initial_state = &job.initial_state;

  // f32 reference, counting hidden values outside each int8 layer's grid.
  int64_t hidden_values = 0, hidden_clipped = 0;
  float hidden_absmax = 0;
  engine::RunOutput reference;
  const Status ref_status = model_.f32_model->RunObserved(
      input, &reference,
      [&](int layer, const float*, int, const float* out, int out_channels,
          int steps, int batch) {
        const engine::LayerQuantization& q = quantization_.layers[layer];
        if (!q.quantized) return;
        const int64_t n = static_cast<int64_t>(out_channels) * steps * batch;
        hidden_values += n;
        hidden_clipped += metrics::CountOutside(out, n, q.grid);
        hidden_absmax = std::max(hidden_absmax, metrics::RangeOf(out, n).absmax());
      });
  if (!ref_status.ok()) {
    LogLine(LogSeverity::kWarning, "drift",
            "model " + model_.name + ": f32 re-run failed: " +
                ref_status.ToString());
    return;
  }
  // The int8 answer: the one the client got, or (while falling back to f32)
  // a fresh int8 run, so drift stays measurable.
  std::vector<float> quantized = std::move(job.output);
  if (!job.ran_int8) {
    engine::RunOutput q;
    if (!model_.serving_model->Run(input, &q).ok()) return;
    quantized = std::move(q.output);
  }
  if (quantized.size() != reference.output.size() || reference.shape.empty()) {
    return;
  }
  const int64_t width = reference.shape.back();
  const int64_t rows =
      width > 0 ? static_cast<int64_t>(reference.output.size()) / width : 0;
  const metrics::DivergenceStats stats = metrics::CompareOutputs(
      quantized.data(), reference.output.data(), rows, width, output_kind_);

  PushRecent(&recent_hidden_, kRecentSamples, hidden_values, hidden_clipped,
             &recent_hidden_values_, &recent_hidden_clipped_);
  observed_hidden_absmax_ = std::max(observed_hidden_absmax_, hidden_absmax);
  const double input_clip_fraction =
      job.input_values > 0 ? static_cast<double>(job.input_clipped) /
                                 static_cast<double>(job.input_values)
                           : 0.0;
  const metrics::DriftPolicy::Update update =
      policy_.Observe(stats, input_clip_fraction);
  const metrics::DriftPolicy::Averages avg = policy_.averages();

  if (metrics::ModelMetrics* m = options_.metrics) {
    constexpr int kHidden = static_cast<int>(metrics::Tensor::kHidden);
    m->drift_samples->Increment();
    m->drift_max_abs_error->Observe(stats.max_abs_error);
    m->drift_mean_abs_error->Observe(stats.mean_abs_error);
    m->drift_relative_l2->Observe(stats.relative_l2);
    if (stats.kl) m->drift_kl->Observe(*stats.kl);
    if (avg.top1_disagreement) {
      m->drift_top1_agreement->Set(1.0 - *avg.top1_disagreement);
    }
    const std::optional<double> window[metrics::kNumDriftWindowMetrics] = {
        avg.max_abs_error,     avg.mean_abs_error, avg.relative_l2,
        avg.top1_disagreement, avg.kl,             avg.clip_fraction};
    for (int w = 0; w < metrics::kNumDriftWindowMetrics; ++w) {
      if (window[w]) m->drift_window[w]->Set(*window[w]);
    }
    m->calibration_values[kHidden]->Increment(static_cast<double>(hidden_values));
    m->calibration_clipped[kHidden]->Increment(
        static_cast<double>(hidden_clipped));
    if (recent_hidden_values_ > 0) {
      m->clip_fraction[kHidden]->Set(static_cast<double>(recent_hidden_clipped_) /
                                     static_cast<double>(recent_hidden_values_));
    }
    m->absmax_observed[kHidden]->Set(observed_hidden_absmax_);
    m->drift_triggered->Set(policy_.triggered() ? 1 : 0);
  }
  samples_done_.fetch_add(1);

  if (update.event == metrics::DriftPolicy::Event::kNone) return;
  const bool triggered = update.event == metrics::DriftPolicy::Event::kTriggered;
  triggered_.store(triggered);
  const bool fallback =
      model_.config.drift.action == config::DriftAction::kFallbackF32;
  LogLine(triggered ? LogSeverity::kWarning : LogSeverity::kInfo, "drift",
          "model " + model_.name + " v" + std::to_string(model_.version) +
              (triggered ? ": drift over threshold (" : ": drift recovered (") +
              update.reason + ")" +
              (fallback ? (triggered ? "; serving f32" : "; serving int8 again")
                        : ""));
  if (fallback && options_.set_fallback) {
    options_.set_fallback(triggered);
    if (options_.metrics != nullptr) {
      options_.metrics->precision_switches->Increment();
    }
  }
}

std::vector<SequenceSample> DriftMonitor::ReservoirSnapshot() const {
  return reservoir_.Snapshot();
}

int64_t DriftMonitor::reservoir_size() const {
  return static_cast<int64_t>(reservoir_.size());
}

}  // namespace rnnserve::serving
