#include "server/serving/model_scheduler.h"

#include <algorithm>
#include <map>
#include <string>
#include <utility>

#include <prometheus/counter.h>
#include <prometheus/histogram.h>

#include "server/batching/options_from_config.h"

namespace rnnserve::serving {

using batching::BatcherStats;

struct ModelScheduler::DynamicTask {
  InferRequest request;
  InferDone done;
  int64_t enqueued_us = 0;

  int size() const { return request.batch; }
  int64_t steps() const { return request.steps; }
  int64_t deadline_us() const { return request.deadline_us; }
  void Fail(Status status) { done(std::move(status), InferResult()); }
};

struct ModelScheduler::ChunkPayload {
  InferRequest request;
  InferDone done;
  InferResult result;
  int64_t enqueued_us = 0;
};

namespace {

int64_t RowElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

// Concatenates the requests' inputs along N into one engine batch.
// `requests` all have the same steps.
struct PackedBatch {
  int batch = 0;
  int steps = 0;
  std::vector<float> features;
  std::vector<int64_t> tokens;
};

PackedBatch Pack(const std::vector<const InferRequest*>& requests) {
  PackedBatch packed;
  packed.steps = requests.front()->steps;
  size_t features = 0, tokens = 0;
  for (const InferRequest* r : requests) {
    packed.batch += r->batch;
    features += r->features.size();
    tokens += r->tokens.size();
  }
  packed.features.reserve(features);
  packed.tokens.reserve(tokens);
  for (const InferRequest* r : requests) {
    packed.features.insert(packed.features.end(), r->features.begin(),
                           r->features.end());
    packed.tokens.insert(packed.tokens.end(), r->tokens.begin(),
                         r->tokens.end());
  }
  return packed;
}

engine::RunInput RunInputOf(const PackedBatch& packed) {
  engine::RunInput input;
  input.batch = packed.batch;
  input.steps = packed.steps;
  if (!packed.tokens.empty()) input.tokens = packed.tokens.data();
  if (!packed.features.empty()) input.features = packed.features.data();
  return input;
}

// Rows [row, row + n) of `out` as one request's result.
InferResult Slice(const engine::RunOutput& out, int row, int n) {
  InferResult result;
  result.shape = out.shape;
  result.shape[0] = n;
  const int64_t width = RowElements(out.shape);
  result.output.assign(out.output.begin() + row * width,
                       out.output.begin() + (row + n) * width);
  result.batch_size = static_cast<int>(out.shape[0]);
  return result;
}

// Groups indices by steps, keeping arrival order inside each group. The
// batchers already group by length unless the config turned it off; then
// each length runs as its own engine call, so no padding is ever computed.
template <typename GetSteps>
std::map<int, std::vector<size_t>> GroupBySteps(size_t n, GetSteps steps) {
  std::map<int, std::vector<size_t>> groups;
  for (size_t i = 0; i < n; ++i) groups[steps(i)].push_back(i);
  return groups;
}

// Per-stream states (batch 1 each; empty = zero state) -> one batch state,
// each layer [dirs][N][H] as run_types.h lays it out.
std::vector<engine::LayerState> MergeStreamStates(
    const engine::ModelSpec& spec,
    const std::vector<const std::vector<engine::LayerState>*>& streams) {
  const size_t n = streams.size();
  std::vector<engine::LayerState> merged(spec.layers.size());
  for (size_t l = 0; l < spec.layers.size(); ++l) {
    const engine::RnnLayerSpec& layer = spec.layers[l];
    const size_t h = layer.hidden_size;
    const size_t dirs = layer.directions;
    const bool has_c = layer.cell == engine::CellType::kLstm;
    merged[l].h.assign(dirs * n * h, 0.0f);
    if (has_c) merged[l].c.assign(dirs * n * h, 0.0f);
    for (size_t s = 0; s < n; ++s) {
      const std::vector<engine::LayerState>& state = *streams[s];
      if (state.empty()) continue;  // sequence_start: zero state
      for (size_t d = 0; d < dirs; ++d) {
        std::copy_n(state[l].h.begin() + d * h, h,
                    merged[l].h.begin() + (d * n + s) * h);
        if (has_c) {
          std::copy_n(state[l].c.begin() + d * h, h,
                      merged[l].c.begin() + (d * n + s) * h);
        }
      }
    }
  }
  return merged;
}

// Stream `s` of a batch of `n`: the inverse of MergeStreamStates.
std::vector<engine::LayerState> SplitStreamState(
    const engine::ModelSpec& spec, const std::vector<engine::LayerState>& batch,
    size_t s, size_t n) {
  std::vector<engine::LayerState> state(spec.layers.size());
  for (size_t l = 0; l < spec.layers.size(); ++l) {
    const size_t h = spec.layers[l].hidden_size;
    const size_t dirs = spec.layers[l].directions;
    state[l].h.resize(dirs * h);
    if (!batch[l].c.empty()) state[l].c.resize(dirs * h);
    for (size_t d = 0; d < dirs; ++d) {
      std::copy_n(batch[l].h.begin() + (d * n + s) * h, h,
                  state[l].h.begin() + d * h);
      if (!batch[l].c.empty()) {
        std::copy_n(batch[l].c.begin() + (d * n + s) * h, h,
                    state[l].c.begin() + d * h);
      }
    }
  }
  return state;
}

// Records one engine batch and its requests' queueing times.
void ObserveBatch(metrics::ModelMetrics* m, int sequences, int64_t compute_us,
                  const std::vector<int64_t>& queue_us) {
  if (m == nullptr) return;
  m->batch_size->Observe(sequences);
  m->compute_duration->Observe(compute_us * 1e-6);
  for (int64_t q : queue_us) m->queue_duration->Observe(q * 1e-6);
}

}  // namespace

ModelScheduler::ModelScheduler(const Options& options)
    : source_model_(options.model),
      model_(options.model),
      intra_op_threads_(options.intra_op_threads),
      drift_seed_(options.drift_seed),
      metrics_(options.metrics) {
  drift_ = MakeDriftMonitor(model_);
  if (options.clock != nullptr) {
    clock_ = options.clock;
  } else {
    owned_clock_ = std::make_unique<batching::RealClock>();
    clock_ = owned_clock_.get();
  }
}

ModelScheduler::~ModelScheduler() {
  Stop();
  // Join the drift thread while everything its callbacks touch still lives.
  std::atomic_store(&drift_, std::shared_ptr<DriftMonitor>());
}

std::shared_ptr<DriftMonitor> ModelScheduler::MakeDriftMonitor(
    std::shared_ptr<const repository::LoadedModel> model) {
  if (model->precision != engine::Precision::kInt8 ||
      model->quantization == nullptr) {
    return nullptr;
  }
  DriftMonitor::Options options;
  options.model = std::move(model);
  options.metrics = metrics_.get();
  options.seed = drift_seed_;
  options.set_fallback = [this](bool use_f32) { use_f32_.store(use_f32); };
  auto monitor = DriftMonitor::Create(options);
  if (!monitor.ok()) return nullptr;
  return std::shared_ptr<DriftMonitor>(std::move(monitor).value());
}

ModelScheduler::Execution ModelScheduler::CurrentExecution() const {
  Execution exec;
  exec.model = model_ptr();
  exec.drift = drift_monitor();
  exec.f32 = use_f32_.load();
  exec.engine_model =
      exec.f32 ? exec.model->f32_model.get() : exec.model->serving_model.get();
  return exec;
}

StatusOr<int64_t> ModelScheduler::Recalibrate() {
  std::lock_guard<std::mutex> lock(recalibrate_mutex_);
  const std::shared_ptr<const repository::LoadedModel> old = model_ptr();
  const std::shared_ptr<DriftMonitor> drift = drift_monitor();
  const std::string what = "model '" + old->name + "' v" +
                           std::to_string(old->version);
  if (drift == nullptr) {
    return FailedPrecondition(what + " is not int8; nothing to recalibrate");
  }
  std::vector<SequenceSample> samples = drift->ReservoirSnapshot();
  if (samples.empty()) {
    return FailedPrecondition(what +
                              " has no live inputs in its reservoir yet "
                              "(drift.reservoir_size " +
                              std::to_string(old->config.drift.reservoir_size) +
                              ")");
  }
  // Calibration takes equal-length sequences: crop all to the shortest.
  int steps = samples.front().steps;
  for (const SequenceSample& s : samples) steps = std::min(steps, s.steps);
  engine::SequenceSet set;
  set.sequences = static_cast<int64_t>(samples.size());
  set.steps = steps;
  for (const SequenceSample& s : samples) {
    if (!s.tokens.empty()) {
      set.tokens.insert(set.tokens.end(), s.tokens.begin(),
                        s.tokens.begin() + steps);
    } else {
      const size_t per_step = s.features.size() / s.steps;
      set.features.insert(set.features.end(), s.features.begin(),
                          s.features.begin() + steps * per_step);
    }
  }
  engine::CalibrationOptions calibration;
  calibration.method = old->config.calibration.method;
  calibration.percentile = old->config.calibration.percentile;
  calibration.per_channel = old->config.calibration.per_channel;
  StatusOr<engine::QuantizationSpec> q =
      engine::Calibrate(*old->spec, set, calibration);
  if (!q.ok()) return q.status().Annotate(what + ": recalibration");
  auto quantization =
      std::make_shared<const engine::QuantizationSpec>(std::move(q).value());
  engine::RnnModelOptions options;
  options.precision = engine::Precision::kInt8;
  options.quantization = quantization;
  options.intra_op_threads =
      old->config.instance.intra_op_threads.value_or(intra_op_threads_);
  auto int8 = engine::RnnModel::Create(old->spec, options);
  if (!int8.ok()) return int8.status().Annotate(what + ": recalibrated model");

  auto updated = std::make_shared<repository::LoadedModel>(*old);
  updated->quantization = quantization;
  updated->quantization_from_artifact = false;
  updated->serving_model = std::move(int8).value();
  updated->weights_bytes = updated->serving_model->weights_bytes();
  std::shared_ptr<const repository::LoadedModel> next = updated;
  // New drift statistics start with the new ranges; the f32 fallback, if
  // active, ends (the new ranges are the remedy; drift will say).
  std::shared_ptr<DriftMonitor> next_drift = MakeDriftMonitor(next);
  std::atomic_store(&model_, next);
  std::atomic_store(&drift_, next_drift);
  if (use_f32_.exchange(false) && metrics_ != nullptr) {
    metrics_->precision_switches->Increment();
  }
  if (metrics_ != nullptr) metrics_->recalibrations->Increment();
  return set.sequences;
}

StatusOr<std::unique_ptr<ModelScheduler>> ModelScheduler::Create(
    const Options& options) {
  if (options.model == nullptr || options.model->serving_model == nullptr) {
    return InvalidArgument("ModelScheduler: no model");
  }
  if (options.num_batch_threads < 1) {
    return InvalidArgument("ModelScheduler: num_batch_threads must be >= 1");
  }
  std::unique_ptr<ModelScheduler> scheduler(new ModelScheduler(options));
  ModelScheduler* self = scheduler.get();
  const config::BatchingConfig& batching = options.model->config.batching;
  if (batching.kind == config::BatchingKind::kSequence) {
    batching::SequenceBatcherOptions bo =
        batching::SequenceOptionsFromConfig(batching);
    bo.num_batch_threads = options.num_batch_threads;
    bo.clock = self->clock_;
    bo.on_batch = options.on_batch;
    auto batcher = SequenceBatcherT::Create(
        bo, [self](std::vector<SequenceBatcherT::Item>& items) {
          self->RunChunks(items);
        });
    if (!batcher.ok()) return batcher.status();
    scheduler->sequence_batcher_ = std::move(batcher).value();
  } else {
    batching::DynamicBatcherOptions bo =
        batching::DynamicOptionsFromConfig(batching);
    bo.num_batch_threads = options.num_batch_threads;
    bo.clock = self->clock_;
    bo.on_batch = options.on_batch;
    auto batcher = DynamicBatcherT::Create(
        bo, [self](std::vector<std::unique_ptr<DynamicTask>>& batch) {
          self->RunTasks(batch);
        });
    if (!batcher.ok()) return batcher.status();
    scheduler->dynamic_batcher_ = std::move(batcher).value();
  }
  return scheduler;
}

Status ModelScheduler::Submit(InferRequest request, InferDone done) {
  if (!done) return InvalidArgument("ModelScheduler::Submit: no callback");
  const std::shared_ptr<const repository::LoadedModel> current = model_ptr();
  const config::ModelConfig& config = current->config;
  const std::string model = "model '" + current->name + "'";
  if (stopped_.load()) {
    return Status(StatusCode::kUnavailable,
                  model + " is being unloaded or reloaded");
  }
  if (request.batch > config.batching.max_batch_size) {
    return InvalidArgument(
        "inputs[0].shape[0]: batch of " + std::to_string(request.batch) +
        " sequences exceeds the max_batch_size " +
        std::to_string(config.batching.max_batch_size) + " of " + model);
  }
  const int64_t now = clock_->NowMicros();
  if (sequence_batcher_ != nullptr) {
    if (request.sequence.id == 0) {
      return InvalidArgument(
          "parameters.sequence_id: " + model +
          " is stateful (sequence batching); every request must carry a "
          "non-zero sequence_id, with sequence_start on a stream's first "
          "chunk");
    }
    if (request.batch != 1) {
      return InvalidArgument("inputs[0].shape[0]: " + model +
                             " is stateful; a chunk holds one sequence (got " +
                             std::to_string(request.batch) + ")");
    }
    auto chunk = std::make_unique<SequenceBatcherT::Chunk>();
    chunk->sequence_id = request.sequence.id;
    chunk->sequence_start = request.sequence.start;
    chunk->sequence_end = request.sequence.end;
    chunk->steps = request.steps;
    chunk->deadline_us = request.deadline_us;
    chunk->payload.request = std::move(request);
    chunk->payload.done = std::move(done);
    chunk->payload.enqueued_us = now;
    chunk->done = [](Status status, ChunkPayload& payload) {
      payload.done(std::move(status), std::move(payload.result));
    };
    return sequence_batcher_->Schedule(&chunk);
  }
  if (request.sequence.id != 0 || request.sequence.start ||
      request.sequence.end) {
    return InvalidArgument(
        "parameters.sequence_id: " + model +
        " uses dynamic batching (stateless); sequence_id, sequence_start and "
        "sequence_end are only accepted by models with batching.kind "
        "sequence");
  }
  auto task = std::make_unique<DynamicTask>();
  task->request = std::move(request);
  task->done = std::move(done);
  task->enqueued_us = now;
  return dynamic_batcher_->Schedule(&task);
}

void ModelScheduler::Stop() {
  stopped_.store(true);
  if (dynamic_batcher_ != nullptr) dynamic_batcher_->Stop();
  if (sequence_batcher_ != nullptr) sequence_batcher_->Stop();
}

BatcherStats ModelScheduler::GetStats() const {
  return dynamic_batcher_ != nullptr ? dynamic_batcher_->GetStats()
                                     : sequence_batcher_->GetStats();
}

void ModelScheduler::RunTasks(std::vector<std::unique_ptr<DynamicTask>>& batch) {
  const Execution exec = CurrentExecution();
  const std::shared_ptr<DriftMonitor>& drift = exec.drift;
  const bool f32 = exec.f32;
  const engine::RnnModel& engine_model = *exec.engine_model;
  auto groups = GroupBySteps(
      batch.size(), [&](size_t i) { return batch[i]->request.steps; });
  for (auto& [steps, indices] : groups) {
    std::vector<const InferRequest*> requests;
    for (size_t i : indices) requests.push_back(&batch[i]->request);
    const PackedBatch packed = Pack(requests);
    const int64_t start = clock_->NowMicros();
    engine::RunOutput out;
    const Status status = engine_model.Run(RunInputOf(packed), &out);
    const int64_t compute_us = clock_->NowMicros() - start;
    std::vector<int64_t> waited;
    for (size_t i : indices) waited.push_back(start - batch[i]->enqueued_us);
    ObserveBatch(metrics_.get(), packed.batch, compute_us, waited);
    int row = 0;
    for (size_t i : indices) {
      DynamicTask& task = *batch[i];
      if (!status.ok()) {
        task.done(status, InferResult());
        continue;
      }
      InferResult result = Slice(out, row, task.request.batch);
      row += task.request.batch;
      result.queue_us = start - task.enqueued_us;
      result.compute_us = compute_us;
      if (drift != nullptr) {
        drift->Observe(task.request.batch, task.request.steps,
                       task.request.features, task.request.tokens, nullptr,
                       result.output, !f32);
      }
      task.done(Status::Ok(), std::move(result));
    }
  }
}

void ModelScheduler::RunChunks(std::vector<SequenceBatcherT::Item>& items) {
  const Execution exec = CurrentExecution();
  const std::shared_ptr<DriftMonitor>& drift = exec.drift;
  const bool f32 = exec.f32;
  const engine::RnnModel& engine_model = *exec.engine_model;
  const engine::ModelSpec& spec = *exec.model->spec;
  auto groups = GroupBySteps(items.size(), [&](size_t i) {
    return items[i].chunk->payload.request.steps;
  });
  for (auto& [steps, indices] : groups) {
    std::vector<const InferRequest*> requests;
    std::vector<const StreamState*> states;
    for (size_t i : indices) {
      requests.push_back(&items[i].chunk->payload.request);
      states.push_back(&items[i].state);
    }
    const PackedBatch packed = Pack(requests);
    const std::vector<engine::LayerState> initial =
        MergeStreamStates(spec, states);
    engine::RunInput input = RunInputOf(packed);
    input.initial_state = &initial;
    const int64_t start = clock_->NowMicros();
    engine::RunOutput out;
    const Status status = engine_model.Run(input, &out);
    const int64_t compute_us = clock_->NowMicros() - start;
    const size_t n = indices.size();
    std::vector<int64_t> waited;
    for (size_t i : indices) {
      waited.push_back(start - items[i].chunk->payload.enqueued_us);
    }
    ObserveBatch(metrics_.get(), static_cast<int>(n), compute_us, waited);
    for (size_t s = 0; s < n; ++s) {
      SequenceBatcherT::Item& item = items[indices[s]];
      if (!status.ok()) {
        item.status = status;
        continue;
      }
      ChunkPayload& payload = item.chunk->payload;
      payload.result = Slice(out, static_cast<int>(s), 1);
      payload.result.queue_us = start - payload.enqueued_us;
      payload.result.compute_us = compute_us;
      if (drift != nullptr) {
        drift->Observe(1, payload.request.steps, payload.request.features,
                       payload.request.tokens, &item.state,
                       payload.result.output, !f32);
      }
      item.state = SplitStreamState(spec, out.final_state, s, n);
    }
  }
}

}  // namespace rnnserve::serving
