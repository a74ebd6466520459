// Counters and the per-batch hook shared by DynamicBatcher and
// SequenceBatcher, for the metrics layer.
#ifndef RNNSERVE_BATCHING_BATCH_STATS_H_
#define RNNSERVE_BATCHING_BATCH_STATS_H_

#include <cstdint>
#include <vector>

namespace rnnserve::batching {

// Passed to Options::on_batch on the worker thread just before the
// processor runs. Keep the hook cheap (e.g. observe prometheus histograms).
struct BatchInfo {
  int size = 0;       // sequences in the batch (what max_batch_size bounds)
  int num_tasks = 0;  // tasks (or chunks) in the batch
  int64_t steps = 0;  // T of the first task (all of them when grouped)
  int64_t oldest_wait_us = 0;  // queueing time of the oldest task
};

// A consistent snapshot (taken under the batcher's mutex).
struct BatcherStats {
  int64_t queued = 0;               // tasks (chunks) waiting now
  int64_t batches = 0;              // batches handed to the processor
  int64_t processed = 0;            // tasks (chunks) handed to the processor
  int64_t rejected_queue_full = 0;  // Schedule -> RESOURCE_EXHAUSTED
  int64_t deadline_exceeded = 0;    // failed with DEADLINE_EXCEEDED
  int64_t active_sequences = 0;     // SequenceBatcher: live streams now
  int64_t expired_sequences = 0;    // SequenceBatcher: freed after idling
  // batch_size_counts[s] = batches of s sequences, s in [0, max_batch_size].
  std::vector<int64_t> batch_size_counts;
};

}  // namespace rnnserve::batching

#endif  // RNNSERVE_BATCHING_BATCH_STATS_H_
