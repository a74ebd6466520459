#include <string>

#include "server/batching/dynamic_batcher.h"
#include "server/batching/sequence_batcher.h"

namespace rnnserve::batching {
namespace {

Status ValidateCommon(const char* what, int max_batch_size,
                      int64_t max_queue_delay_us, int max_queue_size,
                      int num_batch_threads) {
  const std::string prefix = std::string(what) + ": ";
  if (max_batch_size < 1) {
    return InvalidArgument(prefix + "max_batch_size must be >= 1");
  }
  if (max_queue_delay_us < 0) {
    return InvalidArgument(prefix + "max_queue_delay_us must be >= 0");
  }
  if (max_queue_size < 1) {
    return InvalidArgument(prefix + "max_queue_size must be >= 1");
  }
  if (num_batch_threads < 1) {
    return InvalidArgument(prefix + "num_batch_threads must be >= 1");
  }
  return Status::Ok();
}

}  // namespace

Status ValidateDynamicBatcherOptions(const DynamicBatcherOptions& options) {
  RETURN_IF_ERROR(ValidateCommon(
      "DynamicBatcher", options.max_batch_size, options.max_queue_delay_us,
      options.max_queue_size, options.num_batch_threads));
  for (int64_t size : options.preferred_batch_sizes) {
    if (size < 1 || size > options.max_batch_size) {
      return InvalidArgument("DynamicBatcher: preferred batch size " +
                             std::to_string(size) +
                             " is not in [1, max_batch_size " +
                             std::to_string(options.max_batch_size) + "]");
    }
  }
  return Status::Ok();
}

Status ValidateSequenceBatcherOptions(const SequenceBatcherOptions& options) {
  RETURN_IF_ERROR(ValidateCommon(
      "SequenceBatcher", options.max_batch_size, options.max_queue_delay_us,
      options.max_queue_size, options.num_batch_threads));
  if (options.max_sequence_idle_us < 1) {
    return InvalidArgument(
        "SequenceBatcher: max_sequence_idle_us must be >= 1");
  }
  if (options.max_active_sequences < 1) {
    return InvalidArgument(
        "SequenceBatcher: max_active_sequences must be >= 1");
  }
  return Status::Ok();
}

}  // namespace rnnserve::batching
