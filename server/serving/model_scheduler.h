// ModelScheduler: one loaded model version behind its batcher (SPEC §4).
//
// A model whose config says `batching.kind: dynamic` gets a DynamicBatcher:
// independent requests of equal sequence length are packed into one engine
// batch (so padding never changes a result) and the output rows are handed
// back to each request. `kind: sequence` gets a SequenceBatcher: every
// request is one chunk (batch 1) of a stream named by its sequence_id; the
// scheduler keeps each stream's recurrent state (h, c) between chunks and
// batches chunks of different streams together, so a sequence streamed in
// chunks gives the outputs of the whole sequence.
//
// Submit never blocks and never computes: it validates what only the
// scheduler knows (sequence parameters against the batching kind), queues
// the request and returns. The batcher's worker threads run the engine and
// call `done`. Requests reaching Submit are already decoded and checked
// (rpc/tensor_codec.h), so one request cannot fail another's batch.
//
// Ownership and threads: Submit and Stop are thread-safe. The scheduler
// holds the LoadedModel it runs (shared_ptr), so a scheduler that is being
// drained after an unload or reload keeps its model alive until the last
// batch is done.
#ifndef RNNSERVE_SERVING_MODEL_SCHEDULER_H_
#define RNNSERVE_SERVING_MODEL_SCHEDULER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <memory>
#include <vector>

#include "server/batching/batch_stats.h"
#include "server/batching/clock.h"
#include "server/batching/dynamic_batcher.h"
#include "server/batching/sequence_batcher.h"
#include "server/common/status.h"
#include "server/engine/run_types.h"
#include "server/metrics/server_metrics.h"
#include "server/repository/model_repository.h"
#include "server/serving/drift_monitor.h"

namespace rnnserve::serving {

// Sequence-batching parameters of a request (Triton's names).
struct SequenceControl {
  uint64_t id = 0;  // 0: not part of a sequence
  bool start = false;
  bool end = false;
};

// One decoded request: N sequences of T steps, batch-major.
struct InferRequest {
  int batch = 0;
  int steps = 0;
  std::vector<float> features;  // [N][T][F] for feature models
  std::vector<int64_t> tokens;  // [N][T] for token models
  SequenceControl sequence;
  // Absolute, on the scheduler's clock; batching::kNoDeadline when none.
  int64_t deadline_us = batching::kNoDeadline;
};

struct InferResult {
  std::vector<int64_t> shape;  // [N][T][O] or [N][O]
  std::vector<float> output;
  // Sequences in the engine batch the request ran in (>= its own N): shows
  // whether the batcher combined requests.
  int batch_size = 0;
  int64_t queue_us = 0;    // Submit -> batch start
  int64_t compute_us = 0;  // engine time of the batch
};

// Called exactly once per accepted request, on a worker thread.
using InferDone = std::function<void(Status status, InferResult result)>;

class ModelScheduler {
 public:
  struct Options {
    // The model version to serve; required.
    std::shared_ptr<const repository::LoadedModel> model;
    // Batches of this model run at once (the batcher's worker threads).
    int num_batch_threads = 1;
    // Time source for deadlines, delays and idle expiry; not owned.
    // nullptr = a RealClock.
    batching::Clock* clock = nullptr;
    // Optional hook run before each batch.
    std::function<void(const batching::BatchInfo&)> on_batch;
    // The version's Prometheus series (queue and compute time, batch
    // sizes); optional.
    std::shared_ptr<metrics::ModelMetrics> metrics;
    // OpenMP threads of models built later (recalibration).
    int intra_op_threads = 1;
    // Seed of the drift monitor's sampling (tests); unset: random.
    std::optional<uint64_t> drift_seed;
  };

  static StatusOr<std::unique_ptr<ModelScheduler>> Create(
      const Options& options);
  ~ModelScheduler();  // Stop()

  ModelScheduler(const ModelScheduler&) = delete;
  ModelScheduler& operator=(const ModelScheduler&) = delete;

  // Queues `request`. OK: `done` will be called exactly once. Otherwise
  // `done` is never called and the status says why:
  //   INVALID_ARGUMENT    batch above max_batch_size; for a sequence model a
  //                       request without sequence_id or with batch != 1;
  //                       for a dynamic model a request with sequence_id
  //   RESOURCE_EXHAUSTED  queue full, or too many live streams
  //   FAILED_PRECONDITION a chunk for a stream that is not live
  //   DEADLINE_EXCEEDED   the deadline has already passed
  //   UNAVAILABLE         the scheduler is stopped (see stopped())
  Status Submit(InferRequest request, InferDone done);

  // Refuses new requests, runs everything queued, joins the workers.
  void Stop();
  // True once Stop has begun: a caller whose Submit was refused may look
  // the model up again (it may have been reloaded).
  bool stopped() const { return stopped_.load(); }

  // The model requests run on now. Recalibration swaps in a new object
  // (same config and graph, new int8 weights), so the server holds
  // model_ptr() while it uses one; model() is for tests, which do not
  // recalibrate concurrently.
  const repository::LoadedModel& model() const { return *model_ptr(); }
  std::shared_ptr<const repository::LoadedModel> model_ptr() const {
    return std::atomic_load(&model_);
  }
  // The LoadedModel the repository gave this scheduler (model_ptr() may be
  // a recalibrated copy of it); the manager keeps a scheduler across a
  // reload that leaves this version untouched.
  const std::shared_ptr<const repository::LoadedModel>& source_model() const {
    return source_model_;
  }
  // True while drift made the model fall back to f32 (drift.action
  // fallback_f32); requests then run on the f32 model.
  bool serving_f32_fallback() const { return use_f32_.load(); }
  // The drift monitor of an int8 model; null otherwise.
  std::shared_ptr<DriftMonitor> drift_monitor() const {
    return std::atomic_load(&drift_);
  }

  // Recomputes the int8 ranges from the drift monitor's reservoir of recent
  // live inputs with the model's calibration method, and swaps the new
  // model in; queued and running batches finish on the old one. Blocks for
  // the calibration: call it off the gRPC threads. Returns the sequences
  // used. FAILED_PRECONDITION when the model is not int8 or the reservoir
  // is empty.
  StatusOr<int64_t> Recalibrate();
  bool is_sequence() const { return sequence_batcher_ != nullptr; }
  batching::BatcherStats GetStats() const;
  batching::Clock& clock() const { return *clock_; }
  // The version's series; null when the server runs without metrics.
  metrics::ModelMetrics* metrics() const { return metrics_.get(); }

 private:
  // Defined in the .cc: a queued request, and a stream chunk's payload.
  struct DynamicTask;
  struct ChunkPayload;
  // Per stream: one LayerState per layer for a batch of 1 (empty = zero).
  using StreamState = std::vector<engine::LayerState>;
  using DynamicBatcherT = batching::DynamicBatcher<DynamicTask>;
  using SequenceBatcherT = batching::SequenceBatcher<StreamState, ChunkPayload>;

  explicit ModelScheduler(const Options& options);
  // A drift monitor for `model` (int8 only; else null).
  std::shared_ptr<DriftMonitor> MakeDriftMonitor(
      std::shared_ptr<const repository::LoadedModel> model);
  // What one batch runs on, fixed for the batch: the current model (held),
  // its drift monitor, and whether the f32 fallback is on.
  struct Execution {
    std::shared_ptr<const repository::LoadedModel> model;
    std::shared_ptr<DriftMonitor> drift;
    bool f32 = false;
    const engine::RnnModel* engine_model = nullptr;  // owned by `model`
  };
  Execution CurrentExecution() const;
  // The processors, on the batchers' worker threads.
  void RunTasks(std::vector<std::unique_ptr<DynamicTask>>& batch);
  void RunChunks(std::vector<SequenceBatcherT::Item>& items);

  const std::shared_ptr<const repository::LoadedModel> source_model_;
  // Accessed with std::atomic_load/store (recalibration swaps them).
  std::shared_ptr<const repository::LoadedModel> model_;
  std::shared_ptr<DriftMonitor> drift_;
  std::atomic<bool> use_f32_{false};
  std::mutex recalibrate_mutex_;  // one recalibration at a time
  const int intra_op_threads_;
  const std::optional<uint64_t> drift_seed_;
  std::shared_ptr<metrics::ModelMetrics> metrics_;
  std::unique_ptr<batching::Clock> owned_clock_;
  batching::Clock* clock_ = nullptr;
  std::atomic<bool> stopped_{false};
  // Exactly one is set, by the model's batching kind.
  std::unique_ptr<DynamicBatcherT> dynamic_batcher_;
  std::unique_ptr<SequenceBatcherT> sequence_batcher_;
};

}  // namespace rnnserve::serving

#endif  // RNNSERVE_SERVING_MODEL_SCHEDULER_H_
