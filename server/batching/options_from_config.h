// Builds batcher Options from a model's (already validated) BatchingConfig.
//
// Header-only on purpose: it reads plain config fields, so rnnserve_batching
// does not link the config library. The fields map one to one; the worker
// pool size, clock and metrics hook are the caller's.
#ifndef RNNSERVE_BATCHING_OPTIONS_FROM_CONFIG_H_
#define RNNSERVE_BATCHING_OPTIONS_FROM_CONFIG_H_

#include "server/batching/dynamic_batcher.h"
#include "server/batching/sequence_batcher.h"
#include "server/config/model_config.h"

namespace rnnserve::batching {

inline DynamicBatcherOptions DynamicOptionsFromConfig(
    const config::BatchingConfig& config) {
  DynamicBatcherOptions options;
  options.max_batch_size = config.max_batch_size;
  options.max_queue_delay_us = config.max_queue_delay_us;
  options.max_queue_size = config.max_queue_size;
  options.group_by_length = config.group_by_length;
  options.preferred_batch_sizes = config.preferred_batch_sizes;
  return options;
}

inline SequenceBatcherOptions SequenceOptionsFromConfig(
    const config::BatchingConfig& config) {
  SequenceBatcherOptions options;
  options.max_batch_size = config.max_batch_size;
  options.max_queue_delay_us = config.max_queue_delay_us;
  options.max_queue_size = config.max_queue_size;
  options.group_by_length = config.group_by_length;
  options.max_sequence_idle_us = config.max_sequence_idle_us;
  options.max_active_sequences = config.max_active_sequences;
  return options;
}

}  // namespace rnnserve::batching

#endif  // RNNSERVE_BATCHING_OPTIONS_FROM_CONFIG_H_
