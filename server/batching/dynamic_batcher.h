// DynamicBatcher: batches whole, independent requests (stateless models).
//
// Callers Schedule() tasks; worker threads owned by the batcher group them
// into batches and hand each batch to the processor callback.
//
// Ownership: Schedule(&task) takes the task only when it returns OK (then
// *task is null). From then on the batcher guarantees the task is answered
// exactly once: either it is handed to the processor, which then owns it and
// must complete it, or the batcher calls task->Fail(status) itself
// (DEADLINE_EXCEEDED). When Schedule fails, the task stays with the caller
// and nothing has been called on it.
//
// Never blocks: Schedule holds the mutex only to append to a queue. A full
// queue answers RESOURCE_EXHAUSTED at once; a stopped batcher answers
// UNAVAILABLE. The processor and Fail() run on the batcher's worker threads,
// never on the thread calling Schedule, and never with the batcher's mutex held
// (so they may call Schedule again).
//
// Batch formation, per group (all tasks when !group_by_length, else tasks of
// equal steps() so no padding can change a result). Tasks are taken in
// arrival order and a batch never reorders them; the first task that would
// overflow max_batch_size starts the next batch. A group is dispatched by
// the next free worker as soon as
//   - its batch cannot grow any more (reached max_batch_size, or the next
//     queued task does not fit), or
//   - a prefix of it sums to a preferred batch size (the largest such prefix
//     is dispatched, as Triton does), or
//   - its oldest task has waited max_queue_delay_us, or
//   - the batcher is stopping.
// Of several ready groups, the one with the oldest task goes first. A task
// whose deadline passes while queued is failed with DEADLINE_EXCEEDED and
// never reaches the processor.
//
// Shutdown: Stop() (also run by the destructor) makes Schedule answer
// UNAVAILABLE, dispatches everything queued without waiting for the delay,
// and joins the workers once the queue is empty and their batches are done.
// Stop must not be called from the processor.
//
// TaskT must provide:
//   int size() const;            // sequences in the task, >= 1
//   int64_t steps() const;       // sequence length T (the grouping key)
//   int64_t deadline_us() const; // absolute, on Options::clock; kNoDeadline
//   void Fail(Status status);    // answer the task with an error
#ifndef RNNSERVE_BATCHING_DYNAMIC_BATCHER_H_
#define RNNSERVE_BATCHING_DYNAMIC_BATCHER_H_

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "server/batching/batch_stats.h"
#include "server/batching/clock.h"
#include "server/common/status.h"

namespace rnnserve::batching {

// Maps 1:1 from config::BatchingConfig (kind dynamic), plus the worker pool
// size, the clock and the metrics hook.
struct DynamicBatcherOptions {
  // Largest batch, in sequences, run at once: bigger batches raise
  // throughput under load and cost memory and per-batch latency. A larger
  // task is refused at Schedule with INVALID_ARGUMENT.
  int max_batch_size = 64;
  // How long the oldest queued task may wait for a fuller batch. 0
  // dispatches as soon as a worker is free (batches still form from what
  // queued meanwhile); more trades low-load latency for larger batches.
  int64_t max_queue_delay_us = 0;
  // Tasks waiting; beyond it Schedule answers RESOURCE_EXHAUSTED at once.
  // Larger absorbs bursts, smaller bounds queueing latency and memory.
  int max_queue_size = 1024;
  // Batch only tasks of equal steps() together. Off lets lengths mix (fuller
  // batches, but the processor must pad and mask).
  bool group_by_length = true;
  // Batch sizes dispatched at once when a prefix of a group reaches one
  // (each in [1, max_batch_size]); empty means max_batch_size and the delay
  // decide.
  std::vector<int64_t> preferred_batch_sizes;
  // Worker threads, i.e. batches processed concurrently. More overlaps
  // batches on many cores; each competes for the engine's intra-op threads.
  int num_batch_threads = 1;
  // Time source; not owned, must outlive the batcher. nullptr = RealClock.
  Clock* clock = nullptr;
  // Optional metrics hook, run on the worker before each batch.
  std::function<void(const BatchInfo&)> on_batch;
};

Status ValidateDynamicBatcherOptions(const DynamicBatcherOptions& options);

template <typename TaskT>
class DynamicBatcher {
 public:
  using Options = DynamicBatcherOptions;
  using Batch = std::vector<std::unique_ptr<TaskT>>;
  // Runs on a worker thread; takes ownership of the tasks in `batch` and
  // must complete every one of them.
  using Processor = std::function<void(Batch& batch)>;

  static StatusOr<std::unique_ptr<DynamicBatcher>> Create(
      const Options& options, Processor processor) {
    RETURN_IF_ERROR(ValidateDynamicBatcherOptions(options));
    if (!processor) return InvalidArgument("DynamicBatcher: no processor");
    return std::unique_ptr<DynamicBatcher>(
        new DynamicBatcher(options, std::move(processor)));
  }

  ~DynamicBatcher() { Stop(); }
  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  // See the file comment. Errors: INVALID_ARGUMENT (null task, size() < 1 or
  // > max_batch_size), UNAVAILABLE (stopped), RESOURCE_EXHAUSTED (queue
  // full), DEADLINE_EXCEEDED (deadline already passed).
  Status Schedule(std::unique_ptr<TaskT>* task) {
    if (task == nullptr || *task == nullptr) {
      return InvalidArgument("DynamicBatcher::Schedule: null task");
    }
    const int size = (*task)->size();
    if (size < 1 || size > options_.max_batch_size) {
      return InvalidArgument("task of " + std::to_string(size) +
                             " sequences; the batch size must be in [1, " +
                             std::to_string(options_.max_batch_size) + "]");
    }
    const int64_t key = options_.group_by_length ? (*task)->steps() : 0;
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      return Status(StatusCode::kUnavailable, "batcher is shutting down");
    }
    if (queued_tasks_ >= options_.max_queue_size) {
      ++stats_.rejected_queue_full;
      return ResourceExhausted("batch queue full (max_queue_size " +
                               std::to_string(options_.max_queue_size) + ")");
    }
    const int64_t now = clock_->NowMicros();
    if ((*task)->deadline_us() <= now) {
      return Status(StatusCode::kDeadlineExceeded,
                    "deadline passed before the request was queued");
    }
    Group& group = groups_[key];
    group.tasks.push_back(Entry{std::move(*task), now, size});
    ++queued_tasks_;
    cv_.notify_one();
    return Status::Ok();
  }

  // Idempotent; see the file comment. Returns after the workers joined.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    std::lock_guard<std::mutex> join_lock(join_mu_);
    for (std::thread& t : workers_) {
      if (t.joinable()) t.join();
    }
  }

  BatcherStats GetStats() const {
    std::lock_guard<std::mutex> lock(mu_);
    BatcherStats stats = stats_;
    stats.queued = queued_tasks_;
    return stats;
  }

  const Options& options() const { return options_; }

 private:
  struct Entry {
    std::unique_ptr<TaskT> task;
    int64_t enqueue_us;
    int size;
  };
  struct Group {
    std::deque<Entry> tasks;
  };

  DynamicBatcher(const Options& options, Processor processor)
      : options_(options),
        clock_(options.clock != nullptr ? options.clock : RealClock::Default()),
        processor_(std::move(processor)) {
    std::sort(options_.preferred_batch_sizes.begin(),
              options_.preferred_batch_sizes.end());
    stats_.batch_size_counts.assign(options_.max_batch_size + 1, 0);
    for (int i = 0; i < options_.num_batch_threads; ++i) {
      workers_.emplace_back([this] { WorkerLoop(); });
    }
  }

  bool IsPreferred(int64_t size) const {
    return std::binary_search(options_.preferred_batch_sizes.begin(),
                              options_.preferred_batch_sizes.end(), size);
  }

  // Removes queued tasks whose deadline passed; returns the earliest
  // deadline of the tasks left.
  int64_t TakeExpiredLocked(int64_t now,
                            std::vector<std::unique_ptr<TaskT>>* expired) {
    int64_t next_deadline = kNoDeadline;
    for (auto it = groups_.begin(); it != groups_.end();) {
      std::deque<Entry>& tasks = it->second.tasks;
      for (auto e = tasks.begin(); e != tasks.end();) {
        const int64_t deadline = e->task->deadline_us();
        if (deadline <= now) {
          expired->push_back(std::move(e->task));
          e = tasks.erase(e);
          --queued_tasks_;
        } else {
          next_deadline = std::min(next_deadline, deadline);
          ++e;
        }
      }
      it = tasks.empty() ? groups_.erase(it) : std::next(it);
    }
    return next_deadline;
  }

  // Moves the next ready batch into *batch, or returns false and lowers
  // *wake_at to when a group becomes ready by the delay.
  bool FormBatchLocked(int64_t now, Batch* batch, BatchInfo* info,
                       int64_t* wake_at) {
    auto best = groups_.end();
    size_t best_take = 0;
    for (auto it = groups_.begin(); it != groups_.end(); ++it) {
      const std::deque<Entry>& tasks = it->second.tasks;
      int64_t sum = 0;
      size_t take = 0, preferred_take = 0;
      for (const Entry& e : tasks) {
        if (sum + e.size > options_.max_batch_size) break;
        sum += e.size;
        ++take;
        if (IsPreferred(sum)) preferred_take = take;
      }
      const bool full = sum == options_.max_batch_size || take < tasks.size();
      const int64_t oldest = tasks.front().enqueue_us;
      const int64_t ready_at =
          oldest > kNoDeadline - options_.max_queue_delay_us
              ? kNoDeadline
              : oldest + options_.max_queue_delay_us;
      size_t n = 0;
      if (full || stopping_ || now >= ready_at) {
        n = take;
      } else if (preferred_take > 0) {
        n = preferred_take;
      } else {
        *wake_at = std::min(*wake_at, ready_at);
        continue;
      }
      if (best == groups_.end() ||
          oldest < best->second.tasks.front().enqueue_us) {
        best = it;
        best_take = n;
      }
    }
    if (best == groups_.end()) return false;
    std::deque<Entry>& tasks = best->second.tasks;
    info->steps = tasks.front().task->steps();
    info->oldest_wait_us = now - tasks.front().enqueue_us;
    info->size = 0;
    for (size_t i = 0; i < best_take; ++i) {
      info->size += tasks.front().size;
      batch->push_back(std::move(tasks.front().task));
      tasks.pop_front();
    }
    info->num_tasks = static_cast<int>(best_take);
    queued_tasks_ -= static_cast<int64_t>(best_take);
    if (tasks.empty()) groups_.erase(best);
    return true;
  }

  void WorkerLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      const int64_t now = clock_->NowMicros();
      std::vector<std::unique_ptr<TaskT>> expired;
      int64_t wake_at = TakeExpiredLocked(now, &expired);
      if (!expired.empty()) {
        stats_.deadline_exceeded += static_cast<int64_t>(expired.size());
        lock.unlock();
        for (auto& task : expired) {
          task->Fail(Status(StatusCode::kDeadlineExceeded,
                            "deadline exceeded while queued for a batch"));
        }
        lock.lock();
        continue;
      }
      Batch batch;
      BatchInfo info;
      if (FormBatchLocked(now, &batch, &info, &wake_at)) {
        ++stats_.batches;
        stats_.processed += info.num_tasks;
        ++stats_.batch_size_counts[info.size];
        // Another group may be ready too: let an idle worker look.
        if (queued_tasks_ > 0) cv_.notify_one();
        lock.unlock();
        if (options_.on_batch) options_.on_batch(info);
        processor_(batch);
        batch.clear();
        lock.lock();
        continue;
      }
      if (stopping_ && queued_tasks_ == 0) {
        // Others may be parked waiting for a stream that was in flight;
        // let them see that nothing is left.
        cv_.notify_all();
        return;
      }
      clock_->WaitUntil(cv_, lock, wake_at);
    }
  }

  Options options_;
  Clock* const clock_;
  const Processor processor_;

  mutable std::mutex mu_;
  std::condition_variable cv_;       // queue changed or stopping
  std::map<int64_t, Group> groups_;  // guarded by mu_; by steps
  int64_t queued_tasks_ = 0;         // guarded by mu_
  bool stopping_ = false;            // guarded by mu_
  BatcherStats stats_;               // guarded by mu_

  std::mutex join_mu_;  // serializes joins in concurrent Stop() calls
  std::vector<std::thread> workers_;  // written only in the constructor
};

}  // namespace rnnserve::batching

#endif  // RNNSERVE_BATCHING_DYNAMIC_BATCHER_H_
