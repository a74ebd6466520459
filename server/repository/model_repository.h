// ModelRepository: the model folders under the repository root (SPEC §3) and
// the model versions loaded from them.
//
// Layout:
//   <root>/<model>/config.yaml               optional
//   <root>/<model>/<version>/model.onnx      required, version = 1, 2, ...
//   <root>/<model>/<version>/model.rnnq      optional quantized artifact
//   <root>/<model>/<version>/calibration.npy optional (config's
//                                             calibration.file)
// Non-numeric version folders are ignored (with a log line). A model without
// config.yaml is served with InferModelConfig(): int8 when calibration data
// or an artifact is there, else f32.
//
// Loading a version imports model.onnx, builds the f32 RnnModel (always: the
// drift monitor and the f32 fallback need it) and the serving RnnModel in
// the effective precision. For int8 the quantization comes from model.rnnq
// when present (its source_sha256 must equal the SHA-256 of model.onnx),
// else from calibrating on the calibration file with the config's method.
//
// Failures are per model and per version: a model whose config is invalid,
// or a version that fails to load, is UNAVAILABLE with a reason naming the
// model, the version and the file ("charlm v1: <root>/charlm/1/model.onnx:
// node ..."), a log line says why, and every other model still loads.
//
// Ownership and threads: every method is thread-safe. Loaded versions are
// immutable LoadedModel objects held by shared_ptr; Get() hands out a
// reference that stays valid for as long as the caller holds it, even if
// the model is unloaded or reloaded meanwhile, so in-flight requests finish
// on the model they started with. LoadModel/UnloadModel/LoadAll are
// serialized among themselves; a (re)load builds the new versions without
// blocking Get(), then swaps the model's versions in at once.
#ifndef RNNSERVE_REPOSITORY_MODEL_REPOSITORY_H_
#define RNNSERVE_REPOSITORY_MODEL_REPOSITORY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "server/common/status.h"
#include "server/config/model_config.h"
#include "server/engine/model_spec.h"
#include "server/engine/quantization.h"
#include "server/engine/rnn_model.h"

namespace rnnserve::repository {

// File names inside a version folder.
inline constexpr char kModelFileName[] = "model.onnx";
inline constexpr char kArtifactFileName[] = "model.rnnq";
inline constexpr char kConfigFileName[] = "config.yaml";

// One loaded model version. Immutable once built; shared by every request
// that uses it.
struct LoadedModel {
  std::string name;
  int64_t version = 0;
  // The user's normalized and completed config, or the inferred one.
  config::ModelConfig config;
  bool config_inferred = false;
  // The graph as imported from model.onnx (f32 weights).
  std::shared_ptr<const engine::ModelSpec> spec;
  // f32 execution of the original graph (drift checks, f32 fallback).
  std::shared_ptr<const engine::RnnModel> f32_model;
  // The model requests run on, in `precision`; the same object as f32_model
  // when the precision is f32.
  std::shared_ptr<const engine::RnnModel> serving_model;
  engine::Precision precision = engine::Precision::kF32;
  // The quantization the serving model uses; null unless precision is int8.
  std::shared_ptr<const engine::QuantizationSpec> quantization;
  bool quantization_from_artifact = false;
  // Wall time of the whole load (import, calibration, packing), seconds.
  double load_seconds = 0.0;
  // Packed weight bytes of the serving model and of the f32 model (0 extra
  // when they are the same object).
  int64_t weights_bytes = 0;
  int64_t f32_weights_bytes = 0;
  // Source files.
  std::string model_path;
  std::string artifact_path;     // empty when no artifact was used
  std::string calibration_path;  // empty when no calibration was run
  std::string config_path;       // empty when the config was inferred
};

enum class ReadyState { kReady, kUnavailable };
const char* ReadyStateName(ReadyState state);  // "READY", "UNAVAILABLE"

struct VersionStatus {
  int64_t version = 0;
  ReadyState state = ReadyState::kUnavailable;
  std::string reason;  // empty when ready
};

// A model's state: READY when at least one version is ready. A model-level
// failure (invalid config.yaml, no version folders) leaves `versions` empty
// and says why in `reason`.
struct ModelStatus {
  std::string name;
  ReadyState state = ReadyState::kUnavailable;
  std::string reason;
  std::vector<VersionStatus> versions;  // ascending
};

// A model folder found by Scan().
struct ModelFolder {
  std::string name;
  std::string path;
  std::vector<int64_t> versions;  // numeric version folders, ascending
  bool has_config = false;
};

class ModelRepository {
 public:
  using LogSink = std::function<void(const std::string&)>;

  struct Options {
    // The repository root (server.model_repository).
    std::string root;
    // Defaults for every field a config.yaml does not set, and the config of
    // models without one (ServerConfig::model_defaults).
    config::ModelConfig model_defaults;
    // OpenMP threads per Run() call unless a model's instance config says
    // otherwise; 1 is the measured best for a server (rnn_model.h).
    int intra_op_threads = 1;
    // Where load and error lines go, one line per call, no trailing newline.
    // Empty: stderr, prefixed with a UTC timestamp.
    LogSink log;
  };

  // NOT_FOUND when `root` is not a directory. Loads nothing.
  static StatusOr<std::unique_ptr<ModelRepository>> Create(
      const Options& options);

  ModelRepository(const ModelRepository&) = delete;
  ModelRepository& operator=(const ModelRepository&) = delete;

  // Lists the model folders (sorted by name) and their numeric versions;
  // non-numeric version folders are left out (and logged at load);
  // hidden entries (".x") and plain files are skipped.
  StatusOr<std::vector<ModelFolder>> Scan() const;

  // Loads, or reloads, every version of `name` its version policy selects.
  // The new set of versions replaces the old one at once (versions no longer
  // selected are dropped). A reload that fails keeps what was serving: a
  // version whose files no longer load keeps its previous copy (READY, its
  // reason saying so), and a model whose config.yaml no longer parses keeps
  // all its versions; the result is then UNAVAILABLE naming the failure.
  // Otherwise returns OK when at least one version is ready, else the
  // model's error (NOT_FOUND for a missing folder); either way the outcome
  // is in ModelState().
  Status LoadModel(const std::string& name);

  // Drops `name` and its state; requests holding its versions finish on
  // them. NOT_FOUND if it is not known.
  Status UnloadModel(const std::string& name);

  // Loads every model folder. A failing model never stops the others; the
  // result is an error only when the root cannot be listed.
  Status LoadAll();

  // The ready version `version`, or the highest ready version when unset.
  // NOT_FOUND for an unknown/unloaded model or a version not served,
  // UNAVAILABLE (with the reason) for a version that failed to load.
  StatusOr<std::shared_ptr<const LoadedModel>> Get(
      const std::string& name,
      std::optional<int64_t> version = std::nullopt) const;

  // State of a model known to the repository (loaded, or failed to load);
  // with `version`, only that version's entry. NOT_FOUND otherwise.
  StatusOr<ModelStatus> ModelState(
      const std::string& name,
      std::optional<int64_t> version = std::nullopt) const;

  // States of every known model, sorted by name.
  std::vector<ModelStatus> ModelStates() const;

  const Options& options() const { return options_; }

 private:
  struct ModelEntry {
    ModelStatus status;
    std::map<int64_t, std::shared_ptr<const LoadedModel>> versions;
  };

  explicit ModelRepository(Options options);

  void Log(const std::string& line) const;
  // Builds a model's entry (config, versions) without touching the map.
  ModelEntry BuildModel(const std::string& name) const;
  StatusOr<std::shared_ptr<const LoadedModel>> LoadVersion(
      const std::string& name, int64_t version,
      const std::optional<config::ModelConfig>& user_config,
      const std::string& config_path) const;

  const Options options_;
  std::mutex load_mutex_;  // serializes LoadModel/UnloadModel/LoadAll
  mutable std::mutex mutex_;
  std::map<std::string, ModelEntry> models_;  // guarded by mutex_
};

}  // namespace rnnserve::repository

#endif  // RNNSERVE_REPOSITORY_MODEL_REPOSITORY_H_
