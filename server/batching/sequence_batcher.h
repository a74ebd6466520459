// SequenceBatcher: batches chunks of live streams for stateful models
// (SPEC §4), keeping each stream's recurrent state between chunks.
//
// A stream is named by a uint64 correlation id (Triton's sequence_id). Its
// first chunk sets sequence_start, its last sets sequence_end (one chunk may
// set both). The batcher stores the stream's State between chunks; the
// processor gets, per chunk, the state to start from (a default-constructed
// State when the chunk sets sequence_start, i.e. zero state) and hands back
// the state after the chunk. A batch holds at most one chunk per stream, and
// a stream's chunks are processed one at a time in arrival order, so
// streaming a sequence in chunks computes exactly what sending it whole does.
//
// Ownership: Schedule(&chunk) takes the chunk only when it returns OK (then
// *chunk is null); from then on chunk->done(status, payload) is called
// exactly once, on a worker thread, without the batcher's mutex held (done
// may Schedule the stream's next chunk). A stream's chunks are completed in
// order: its next chunk is not processed before done() of the previous one
// has returned. When Schedule fails the chunk stays
// with the caller and done is not called. The processor borrows the chunks.
//
// Never blocks. Schedule errors, at once:
//   INVALID_ARGUMENT     null chunk, no done callback, or steps < 1;
//   UNAVAILABLE          the batcher is stopping;
//   RESOURCE_EXHAUSTED   max_queue_size chunks already queued, or a new
//                        stream over max_active_sequences live streams;
//   FAILED_PRECONDITION  a chunk without sequence_start for a stream that is
//                        not live (never started, ended, freed after
//                        max_sequence_idle_us idle, or aborted);
//   DEADLINE_EXCEEDED    the chunk's deadline has already passed.
// sequence_start on a live id restarts the stream: chunks queued before it
// still run first with the old state; from the start chunk on the state is
// reset. After a chunk with sequence_end is processed (and nothing else is
// queued for the id) the stream is freed.
//
// Failures after Schedule: a chunk whose deadline has passed when it
// reaches the front of its stream gets DEADLINE_EXCEEDED (not processed); a
// chunk the processor fails gets the processor's status. Either way the rest of
// the stream cannot be computed, so the stream is aborted: its later queued
// chunks (up to a restarting sequence_start chunk) get ABORTED and the stream's
// state is freed.
//
// Idle streams: a live stream with nothing queued or running for
// max_sequence_idle_us is freed (checked by the workers, which wake for it,
// and by Schedule, so expiry is exact on a FakeClock). Idle time counts from
// when the last chunk's result was ready, i.e. from before its done() is
// called, so a chunk sent after the caller saw that answer is judged on the
// caller's timeline.
//
// Batch formation: like DynamicBatcher (see dynamic_batcher.h) without
// preferred sizes; every chunk is one sequence of the batch. Among streams
// that have a chunk queued and none running, chunks are grouped by steps
// (when group_by_length) and a group is dispatched when it has
// max_batch_size chunks, its oldest chunk has waited max_queue_delay_us, or
// the batcher is stopping; the group with the oldest chunk goes first.
// Finding a batch is O(live streams), fine for the thousands this bounds.
//
// Shutdown: Stop() (also run by the destructor) makes Schedule answer
// UNAVAILABLE, processes every queued chunk, then joins the workers; the
// states left are dropped. Stop must not be called from the processor.
#ifndef RNNSERVE_BATCHING_SEQUENCE_BATCHER_H_
#define RNNSERVE_BATCHING_SEQUENCE_BATCHER_H_

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
#include <unordered_map>
#include <utility>
#include <vector>

#include "server/batching/batch_stats.h"
#include "server/batching/clock.h"
#include "server/common/status.h"

namespace rnnserve::batching {

// Maps 1:1 from config::BatchingConfig (kind sequence), plus the worker pool
// size, the clock and the metrics hook.
struct SequenceBatcherOptions {
  // Largest batch (chunks, one stream each) run at once.
  int max_batch_size = 64;
  // How long the oldest ready chunk may wait for a fuller batch; 0
  // dispatches as soon as a worker is free.
  int64_t max_queue_delay_us = 0;
  // Chunks waiting (all streams); beyond it RESOURCE_EXHAUSTED at once.
  int max_queue_size = 1024;
  // Batch only chunks of equal steps together (no padding).
  bool group_by_length = true;
  // A live stream with nothing queued or running for this long is freed;
  // a later chunk for it gets FAILED_PRECONDITION. Longer tolerates slow
  // clients, costs state memory.
  int64_t max_sequence_idle_us = 60'000'000;
  // Live streams held at once (each holds its state); a new stream over the
  // bound gets RESOURCE_EXHAUSTED.
  int max_active_sequences = 1024;
  // Worker threads, i.e. batches processed concurrently.
  int num_batch_threads = 1;
  // Time source; not owned, must outlive the batcher. nullptr = RealClock.
  Clock* clock = nullptr;
  // Optional metrics hook, run on the worker before each batch.
  std::function<void(const BatchInfo&)> on_batch;
};

Status ValidateSequenceBatcherOptions(const SequenceBatcherOptions& options);

// State: the per-stream state, default-constructible and movable (e.g.
// std::vector<engine::LayerState>; default = zero state). Payload: the
// chunk's data, opaque to the batcher (inputs, and where outputs go).
template <typename State, typename Payload>
class SequenceBatcher {
 public:
  using Options = SequenceBatcherOptions;

  struct Chunk {
    uint64_t sequence_id = 0;
    bool sequence_start = false;
    bool sequence_end = false;
    int64_t steps = 1;                  // T of this chunk (grouping key)
    int64_t deadline_us = kNoDeadline;  // absolute, on Options::clock
    Payload payload;
    // Called exactly once after Schedule accepted the chunk.
    std::function<void(Status status, Payload& payload)> done;
  };

  // One chunk of a batch as the processor sees it.
  struct Item {
    Chunk* chunk;   // borrowed for the call
    State state;    // in: the stream's state; out: state after the chunk
    Status status;  // out: non-OK fails the chunk and aborts the stream
  };
  // Runs on a worker thread, one call per batch.
  using Processor = std::function<void(std::vector<Item>& batch)>;

  static StatusOr<std::unique_ptr<SequenceBatcher>> Create(
      const Options& options, Processor processor) {
    RETURN_IF_ERROR(ValidateSequenceBatcherOptions(options));
    if (!processor) return InvalidArgument("SequenceBatcher: no processor");
    return std::unique_ptr<SequenceBatcher>(
        new SequenceBatcher(options, std::move(processor)));
  }

  ~SequenceBatcher() { Stop(); }
  SequenceBatcher(const SequenceBatcher&) = delete;
  SequenceBatcher& operator=(const SequenceBatcher&) = delete;

  // See the file comment.
  Status Schedule(std::unique_ptr<Chunk>* chunk) {
    if (chunk == nullptr || *chunk == nullptr || !(*chunk)->done) {
      return InvalidArgument(
          "SequenceBatcher::Schedule: null chunk or no done callback");
    }
    Chunk& c = **chunk;
    if (c.steps < 1) {
      return InvalidArgument("chunk of sequence " +
                             std::to_string(c.sequence_id) + " has " +
                             std::to_string(c.steps) + " steps; need >= 1");
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      return Status(StatusCode::kUnavailable, "batcher is shutting down");
    }
    if (queued_chunks_ >= options_.max_queue_size) {
      ++stats_.rejected_queue_full;
      return ResourceExhausted("sequence batch queue full (max_queue_size " +
                               std::to_string(options_.max_queue_size) + ")");
    }
    const int64_t now = clock_->NowMicros();
    if (c.deadline_us <= now) {
      return Status(StatusCode::kDeadlineExceeded,
                    "deadline passed before the chunk was queued");
    }
    auto it = sequences_.find(c.sequence_id);
    if (it != sequences_.end() && IsExpiredLocked(it->second, now)) {
      sequences_.erase(it);
      ++stats_.expired_sequences;
      it = sequences_.end();
    }
    if (!c.sequence_start) {
      if (it == sequences_.end() || !it->second.open) {
        return FailedPrecondition(
            "sequence " + std::to_string(c.sequence_id) +
            " is not active (never started, already ended, idle for more "
            "than max_sequence_idle_us, or aborted); its first chunk must "
            "set sequence_start");
      }
    } else if (it == sequences_.end()) {
      if (static_cast<int64_t>(sequences_.size()) >=
          options_.max_active_sequences) {
        SweepExpiredLocked(now);
      }
      if (static_cast<int64_t>(sequences_.size()) >=
          options_.max_active_sequences) {
        return ResourceExhausted(
            "too many live sequences (max_active_sequences " +
            std::to_string(options_.max_active_sequences) + ")");
      }
      it = sequences_.emplace(c.sequence_id, Sequence()).first;
      it->second.generation = next_generation_++;
    }
    Sequence& seq = it->second;
    seq.open = !c.sequence_end;
    seq.last_active_us = now;
    seq.pending.push_back(Pending{std::move(*chunk), now, next_order_++});
    ++queued_chunks_;
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
    stats.queued = queued_chunks_;
    stats.active_sequences = static_cast<int64_t>(sequences_.size());
    return stats;
  }

 private:
  struct Pending {
    std::unique_ptr<Chunk> chunk;
    int64_t enqueue_us;
    uint64_t order;  // global arrival order
  };
  struct Sequence {
    State state;
    std::deque<Pending> pending;
    bool open = true;        // no sequence_end queued since the last start
    bool in_flight = false;  // a chunk of it is being processed
    bool answering = false;  // ...and its done() is being called
    int64_t last_active_us = 0;
    uint64_t generation = 0;  // tells a restarted-after-free stream apart
  };
  // A chunk to answer outside the lock.
  struct Completion {
    std::unique_ptr<Chunk> chunk;
    Status status;
  };

  SequenceBatcher(const Options& options, Processor processor)
      : options_(options),
        clock_(options.clock != nullptr ? options.clock : RealClock::Default()),
        processor_(std::move(processor)) {
    stats_.batch_size_counts.assign(options_.max_batch_size + 1, 0);
    for (int i = 0; i < options_.num_batch_threads; ++i) {
      workers_.emplace_back([this] { WorkerLoop(); });
    }
  }

  int64_t ExpiresAt(const Sequence& seq) const {
    return seq.last_active_us > kNoDeadline - options_.max_sequence_idle_us
               ? kNoDeadline
               : seq.last_active_us + options_.max_sequence_idle_us;
  }
  // A stream whose chunk is being answered is idle already (its result is
  // out); it stays in flight only to keep its answers in order.
  static bool IsIdle(const Sequence& seq) {
    return seq.pending.empty() && (!seq.in_flight || seq.answering);
  }
  bool IsExpiredLocked(const Sequence& seq, int64_t now) const {
    return IsIdle(seq) && now >= ExpiresAt(seq);
  }

  // Frees idle streams; returns when the next one would expire.
  int64_t SweepExpiredLocked(int64_t now) {
    int64_t next = kNoDeadline;
    for (auto it = sequences_.begin(); it != sequences_.end();) {
      if (IsExpiredLocked(it->second, now)) {
        it = sequences_.erase(it);
        ++stats_.expired_sequences;
        continue;
      }
      if (IsIdle(it->second)) {
        next = std::min(next, ExpiresAt(it->second));
      }
      ++it;
    }
    return next;
  }

  // Fails the queued chunks of the stream up to a restarting start chunk
  // and frees the stream unless such a chunk remains. The stream must not
  // be in flight.
  void AbortLocked(typename std::unordered_map<uint64_t, Sequence>::iterator it,
                   std::vector<Completion>* completions) {
    Sequence& seq = it->second;
    while (!seq.pending.empty() && !seq.pending.front().chunk->sequence_start) {
      completions->push_back(
          Completion{std::move(seq.pending.front().chunk),
                     Status(StatusCode::kAborted,
                            "sequence " + std::to_string(it->first) +
                                " was aborted: an earlier chunk failed")});
      seq.pending.pop_front();
      --queued_chunks_;
    }
    if (seq.pending.empty()) {
      sequences_.erase(it);
    } else {
      seq.state = State();
    }
  }

  // Fails the head chunks whose deadline passed (aborting their streams);
  // returns the earliest deadline among the remaining head chunks.
  int64_t TakeExpiredHeadsLocked(int64_t now,
                                 std::vector<Completion>* completions) {
    int64_t next = kNoDeadline;
    for (auto it = sequences_.begin(); it != sequences_.end();) {
      Sequence& seq = it->second;
      if (seq.in_flight || seq.pending.empty()) {
        ++it;
        continue;
      }
      const int64_t deadline = seq.pending.front().chunk->deadline_us;
      if (deadline > now) {
        next = std::min(next, deadline);
        ++it;
        continue;
      }
      ++stats_.deadline_exceeded;
      completions->push_back(
          Completion{std::move(seq.pending.front().chunk),
                     Status(StatusCode::kDeadlineExceeded,
                            "deadline exceeded while queued for a batch")});
      seq.pending.pop_front();
      --queued_chunks_;
      auto next_it = std::next(it);
      AbortLocked(it, completions);  // may erase `it` only
      it = next_it;
    }
    return next;
  }

  // Picks the next ready batch (stream ids in arrival order of their head
  // chunks), or returns false and lowers *wake_at.
  bool FormBatchLocked(int64_t now, std::vector<uint64_t>* ids,
                       int64_t* wake_at) {
    // key -> (head order, id) of streams with a runnable head chunk.
    std::map<int64_t, std::vector<std::pair<uint64_t, uint64_t>>> groups;
    for (const auto& [id, seq] : sequences_) {
      if (seq.in_flight || seq.pending.empty()) continue;
      const int64_t key =
          options_.group_by_length ? seq.pending.front().chunk->steps : 0;
      groups[key].emplace_back(seq.pending.front().order, id);
    }
    const std::vector<std::pair<uint64_t, uint64_t>>* best = nullptr;
    uint64_t best_order = 0;
    for (auto& [key, members] : groups) {
      std::sort(members.begin(), members.end());
      const Pending& oldest =
          sequences_.at(members.front().second).pending.front();
      const int64_t ready_at =
          oldest.enqueue_us > kNoDeadline - options_.max_queue_delay_us
              ? kNoDeadline
              : oldest.enqueue_us + options_.max_queue_delay_us;
      const bool ready =
          static_cast<int64_t>(members.size()) >= options_.max_batch_size ||
          stopping_ || now >= ready_at;
      if (!ready) {
        *wake_at = std::min(*wake_at, ready_at);
        continue;
      }
      if (best == nullptr || oldest.order < best_order) {
        best = &members;
        best_order = oldest.order;
      }
    }
    if (best == nullptr) return false;
    const size_t n =
        std::min(best->size(), static_cast<size_t>(options_.max_batch_size));
    for (size_t i = 0; i < n; ++i) ids->push_back((*best)[i].second);
    return true;
  }

  void WorkerLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      const int64_t now = clock_->NowMicros();
      int64_t wake_at = SweepExpiredLocked(now);
      std::vector<Completion> completions;
      wake_at = std::min(wake_at, TakeExpiredHeadsLocked(now, &completions));
      if (!completions.empty()) {
        lock.unlock();
        Complete(completions);
        lock.lock();
        continue;
      }
      std::vector<uint64_t> ids;
      if (FormBatchLocked(now, &ids, &wake_at)) {
        RunBatch(ids, now, lock);
        continue;
      }
      if (stopping_ && queued_chunks_ == 0) {
        // Others may be parked waiting for a stream that was in flight;
        // let them see that nothing is left.
        cv_.notify_all();
        return;
      }
      clock_->WaitUntil(cv_, lock, wake_at);
    }
  }

  // Called and returns with `lock` held; releases it around the processor.
  void RunBatch(const std::vector<uint64_t>& ids, int64_t now,
                std::unique_lock<std::mutex>& lock) {
    std::vector<std::unique_ptr<Chunk>> chunks;
    std::vector<Item> items;
    items.reserve(ids.size());
    BatchInfo info;
    for (uint64_t id : ids) {
      Sequence& seq = sequences_.at(id);
      Pending& head = seq.pending.front();
      if (chunks.empty()) {
        info.steps = head.chunk->steps;
        info.oldest_wait_us = now - head.enqueue_us;
      }
      seq.in_flight = true;
      State state = head.chunk->sequence_start ? State() : std::move(seq.state);
      items.push_back(Item{head.chunk.get(), std::move(state), Status::Ok()});
      chunks.push_back(std::move(head.chunk));
      seq.pending.pop_front();
      --queued_chunks_;
    }
    info.size = info.num_tasks = static_cast<int>(ids.size());
    ++stats_.batches;
    stats_.processed += info.num_tasks;
    ++stats_.batch_size_counts[info.size];
    if (queued_chunks_ > 0) cv_.notify_one();
    lock.unlock();

    if (options_.on_batch) options_.on_batch(info);
    processor_(items);

    lock.lock();
    const int64_t done_at = clock_->NowMicros();
    std::vector<Completion> completions;
    // (id, generation): stay in flight until done() ran.
    std::vector<std::pair<uint64_t, uint64_t>> continuing;
    for (size_t i = 0; i < ids.size(); ++i) {
      auto it = sequences_.find(ids[i]);  // in-flight streams are never freed
      Sequence& seq = it->second;
      seq.last_active_us = done_at;
      Status status = std::move(items[i].status);
      completions.push_back(Completion{std::move(chunks[i]), status});
      if (!status.ok()) {
        seq.in_flight = false;
        AbortLocked(it, &completions);
      } else if (!seq.open && seq.pending.empty()) {
        sequences_.erase(it);
      } else {
        seq.state = std::move(items[i].state);
        seq.answering = true;
        continuing.emplace_back(ids[i], seq.generation);
      }
    }
    lock.unlock();
    Complete(completions);
    lock.lock();
    // Only now may a stream's next chunk run: its done() is then called
    // after this one's, so callers see a stream's answers in order.
    // A stream freed meanwhile (expired while answering) may have been
    // started again under the same id: leave that one alone.
    for (const auto& [id, generation] : continuing) {
      auto it = sequences_.find(id);
      if (it == sequences_.end() || it->second.generation != generation) continue;
      it->second.in_flight = false;  // idle time counts from done_at
      it->second.answering = false;
    }
    if (queued_chunks_ > 0) cv_.notify_one();
  }

  static void Complete(std::vector<Completion>& completions) {
    for (Completion& c : completions) {
      c.chunk->done(std::move(c.status), c.chunk->payload);
    }
  }

  const Options options_;
  Clock* const clock_;
  const Processor processor_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // queue changed, stream runnable, stopping
  std::unordered_map<uint64_t, Sequence> sequences_;  // guarded by mu_
  int64_t queued_chunks_ = 0;                         // guarded by mu_
  uint64_t next_order_ = 0;                           // guarded by mu_
  uint64_t next_generation_ = 0;                      // guarded by mu_
  bool stopping_ = false;                             // guarded by mu_
  BatcherStats stats_;                                // guarded by mu_

  std::mutex join_mu_;  // serializes joins in concurrent Stop() calls
  std::vector<std::thread> workers_;  // written only in the constructor
};

}  // namespace rnnserve::batching

#endif  // RNNSERVE_BATCHING_SEQUENCE_BATCHER_H_
