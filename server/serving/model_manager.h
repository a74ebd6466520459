// ModelManager: the served models — the repository's loaded versions, each
// behind its own ModelScheduler (batcher + engine).
//
// Load and unload are what the repository RPCs and start-up call; Get is
// what every request calls. A (re)load builds the new versions and their
// schedulers first, then swaps them in at once; the schedulers it replaces
// (or an unload removes) are drained: requests already queued on them run to
// completion on the model they started with, and only then are the old
// versions freed. A request that looked a scheduler up just before the swap
// and finds it stopped may look again (ModelScheduler::stopped()).
//
// Threads: every method is thread-safe. LoadModel/UnloadModel/LoadModels
// block for the whole load (import, calibration, packing) or drain, so call
// them from a thread that may block, never from a gRPC callback. They are
// serialized among themselves; Get never waits for them.
#ifndef RNNSERVE_SERVING_MODEL_MANAGER_H_
#define RNNSERVE_SERVING_MODEL_MANAGER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "server/batching/clock.h"
#include "server/common/status.h"
#include "server/repository/model_repository.h"
#include "server/serving/model_scheduler.h"

namespace rnnserve::serving {

class ModelManager {
 public:
  struct Options {
    // Root, model defaults, intra-op threads, log sink.
    repository::ModelRepository::Options repository;
    // Batches of one model version run at once, unless the model's
    // instance.count says otherwise. One per core keeps every core busy.
    int worker_threads = 1;
    // Time source of every scheduler; not owned. nullptr = RealClock.
    batching::Clock* clock = nullptr;
    // Called after each load or unload (outside the manager's locks), e.g.
    // to update health statuses.
    std::function<void()> on_change;
    // Where each version's series are created; not owned; optional.
    metrics::ServerMetrics* metrics = nullptr;
  };

  // NOT_FOUND when the repository root is not a directory. Loads nothing.
  static StatusOr<std::unique_ptr<ModelManager>> Create(const Options& options);
  ~ModelManager();  // Stop()

  ModelManager(const ModelManager&) = delete;
  ModelManager& operator=(const ModelManager&) = delete;

  // Loads (or reloads) `name` and starts its versions' schedulers; errors as
  // ModelRepository::LoadModel (the model's state says why either way).
  Status LoadModel(const std::string& name);
  // Removes `name` and drains its schedulers. NOT_FOUND if not known.
  Status UnloadModel(const std::string& name);
  // Loads `names` ("*" = every model folder); a failing model never stops
  // the others. Errors only when the repository cannot be listed.
  Status LoadModels(const std::vector<std::string>& names);

  // The scheduler serving `name` at `version` (unset: the highest ready
  // version). NOT_FOUND for an unknown model or version, UNAVAILABLE (with
  // the reason) for one that failed to load.
  StatusOr<std::shared_ptr<ModelScheduler>> Get(
      const std::string& name,
      std::optional<int64_t> version = std::nullopt) const;

  // Every model's state, as the repository reports it.
  std::vector<repository::ModelStatus> ModelStates() const;
  StatusOr<repository::ModelStatus> ModelState(
      const std::string& name,
      std::optional<int64_t> version = std::nullopt) const;

  // Refuses new requests on every scheduler and drains them all.
  void Stop();

  // Every live scheduler (e.g. for metrics), by model then version.
  std::vector<std::shared_ptr<ModelScheduler>> Schedulers() const;

 private:
  using VersionMap = std::map<int64_t, std::shared_ptr<ModelScheduler>>;

  ModelManager(const Options& options,
               std::unique_ptr<repository::ModelRepository> repository);
  // Schedulers for the repository's ready versions of `name`: those of
  // `current` whose version the repository kept as it was (a failed reload
  // keeps the old copy) carry on, with their streams; the others are new.
  VersionMap BuildSchedulers(const std::string& name,
                             const VersionMap& current) const;
  // Swaps `name`'s schedulers for `versions` (none: removes the model) and
  // drains the old ones that are not carried on.
  void Replace(const std::string& name, VersionMap versions);

  const Options options_;
  const std::unique_ptr<repository::ModelRepository> repository_;
  std::mutex load_mutex_;  // serializes loads and unloads
  mutable std::mutex mutex_;
  std::map<std::string, VersionMap> models_;  // guarded by mutex_
  bool stopped_ = false;                      // guarded by mutex_
};

}  // namespace rnnserve::serving

#endif  // RNNSERVE_SERVING_MODEL_MANAGER_H_
