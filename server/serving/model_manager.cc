#include "server/serving/model_manager.h"

#include <algorithm>
#include <utility>

#include "server/common/log.h"

namespace rnnserve::serving {

ModelManager::ModelManager(
    const Options& options,
    std::unique_ptr<repository::ModelRepository> repository)
    : options_(options), repository_(std::move(repository)) {}

ModelManager::~ModelManager() { Stop(); }

StatusOr<std::unique_ptr<ModelManager>> ModelManager::Create(
    const Options& options) {
  if (options.worker_threads < 1) {
    return InvalidArgument("worker_threads must be >= 1 (got " +
                           std::to_string(options.worker_threads) + ")");
  }
  auto repository = repository::ModelRepository::Create(options.repository);
  if (!repository.ok()) return repository.status();
  return std::unique_ptr<ModelManager>(
      new ModelManager(options, std::move(repository).value()));
}

ModelManager::VersionMap ModelManager::BuildSchedulers(
    const std::string& name, const VersionMap& current) const {
  VersionMap versions;
  auto state = repository_->ModelState(name);
  if (!state.ok()) return versions;
  for (const repository::VersionStatus& v : state->versions) {
    if (v.state != repository::ReadyState::kReady) continue;
    auto model = repository_->Get(name, v.version);
    if (!model.ok()) continue;  // unloaded meanwhile
    auto same = current.find(v.version);
    if (same != current.end() && same->second->source_model() == *model &&
        !same->second->stopped()) {
      versions.emplace(v.version, same->second);
      continue;
    }
    ModelScheduler::Options so;
    so.model = *model;
    so.num_batch_threads =
        (*model)->config.instance.count.value_or(options_.worker_threads);
    so.clock = options_.clock;
    so.intra_op_threads = options_.repository.intra_op_threads;
    if (options_.metrics != nullptr) {
      so.metrics = options_.metrics->ForModel(name, v.version);
    }
    auto scheduler = ModelScheduler::Create(so);
    if (!scheduler.ok()) {
      // The config was validated at load, so this is a bug; say so loudly.
      LogLine(LogSeverity::kError, "serving",
              "model " + name + " v" + std::to_string(v.version) +
                  ": cannot start its batcher: " +
                  scheduler.status().ToString());
      continue;
    }
    versions.emplace(v.version, std::move(scheduler).value());
  }
  return versions;
}

void ModelManager::Replace(const std::string& name, VersionMap versions) {
  VersionMap old;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopped_) {
      old = std::move(versions);  // shutting down: never start them
    } else {
      auto it = models_.find(name);
      if (it != models_.end()) old = std::move(it->second);
      if (versions.empty()) {
        if (it != models_.end()) models_.erase(it);
      } else {
        models_[name] = std::move(versions);
      }
    }
  }
  // Drain outside the lock: Get keeps answering (with the new versions).
  for (auto& [version, scheduler] : old) {
    bool carried_on = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = models_.find(name);
      carried_on = it != models_.end() && it->second.count(version) > 0 &&
                   it->second.at(version) == scheduler;
    }
    if (!carried_on) scheduler->Stop();
  }
  if (options_.on_change) options_.on_change();
}

Status ModelManager::LoadModel(const std::string& name) {
  std::lock_guard<std::mutex> load_lock(load_mutex_);
  const Status status = repository_->LoadModel(name);
  VersionMap current;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = models_.find(name);
    if (it != models_.end()) current = it->second;
  }
  Replace(name, BuildSchedulers(name, current));
  return status;
}

Status ModelManager::UnloadModel(const std::string& name) {
  std::lock_guard<std::mutex> load_lock(load_mutex_);
  const Status status = repository_->UnloadModel(name);
  if (!status.ok()) return status;
  Replace(name, VersionMap());
  return Status::Ok();
}

Status ModelManager::LoadModels(const std::vector<std::string>& names) {
  std::vector<std::string> todo;
  const bool all =
      std::find(names.begin(), names.end(), "*") != names.end();
  if (all) {
    auto folders = repository_->Scan();
    if (!folders.ok()) return folders.status();
    for (const repository::ModelFolder& f : *folders) todo.push_back(f.name);
  } else {
    todo = names;
  }
  for (const std::string& name : todo) {
    (void)LoadModel(name);  // the state and the log say why it failed
  }
  return Status::Ok();
}

StatusOr<std::shared_ptr<ModelScheduler>> ModelManager::Get(
    const std::string& name, std::optional<int64_t> version) const {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = models_.find(name);
    if (it != models_.end() && !it->second.empty()) {
      if (!version.has_value()) return it->second.rbegin()->second;
      auto v = it->second.find(*version);
      if (v != it->second.end()) return v->second;
    }
  }
  // Not served: let the repository say why (unknown, failed, not selected).
  auto model = repository_->Get(name, version);
  if (!model.ok()) return model.status();
  return Status(StatusCode::kUnavailable,
                "model '" + name + "' is loaded but not being served yet");
}

std::vector<repository::ModelStatus> ModelManager::ModelStates() const {
  return repository_->ModelStates();
}

StatusOr<repository::ModelStatus> ModelManager::ModelState(
    const std::string& name, std::optional<int64_t> version) const {
  return repository_->ModelState(name, version);
}

void ModelManager::Stop() {
  std::map<std::string, VersionMap> models;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopped_ = true;
    models = models_;  // keep serving Get; schedulers refuse new work
  }
  for (auto& [name, versions] : models) {
    for (auto& [version, scheduler] : versions) scheduler->Stop();
  }
}

std::vector<std::shared_ptr<ModelScheduler>> ModelManager::Schedulers() const {
  std::vector<std::shared_ptr<ModelScheduler>> out;
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [name, versions] : models_) {
    for (const auto& [version, scheduler] : versions) out.push_back(scheduler);
  }
  return out;
}

}  // namespace rnnserve::serving
