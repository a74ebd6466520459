#include "server/repository/model_repository.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "server/common/log.h"
#include "server/common/npy.h"
#include "server/engine/artifact.h"
#include "server/engine/onnx_import.h"
#include "server/engine/sequence_io.h"

namespace rnnserve::repository {
namespace {

namespace fs = std::filesystem;

std::string JoinPath(const std::string& a, const std::string& b) {
  return (fs::path(a) / b).string();
}

bool IsRegularFile(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

// Version folder names: decimal digits only, value >= 1 (no sign, no
// spaces, no overflow).
std::optional<int64_t> ParseVersion(const std::string& name) {
  if (name.empty() || name.size() > 18) return std::nullopt;
  for (char ch : name) {
    if (ch < '0' || ch > '9') return std::nullopt;
  }
  const int64_t value = std::stoll(name);
  if (value < 1) return std::nullopt;
  return value;
}

StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return NotFound(path + ": cannot open file");
  std::ostringstream contents;
  contents << file.rdbuf();
  if (file.bad()) return NotFound(path + ": cannot read file");
  return contents.str();
}

// Makes sure an error names `path` (some callers' messages already do).
Status NamingFile(const Status& status, const std::string& path) {
  if (status.ok() || status.message().find(path) != std::string::npos) {
    return status;
  }
  return status.Annotate(path);
}

std::string LayerPrecisions(const engine::RnnModel& model) {
  std::string out;
  for (engine::Precision p : model.layer_precisions()) {
    if (!out.empty()) out += ",";
    out += engine::PrecisionName(p);
  }
  return out;
}

void DefaultLog(const std::string& line) {
  LogLine(LogSeverity::kInfo, "repository", line);
}

}  // namespace

const char* ReadyStateName(ReadyState state) {
  return state == ReadyState::kReady ? "READY" : "UNAVAILABLE";
}

ModelRepository::ModelRepository(Options options)
    : options_(std::move(options)) {}

StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::Create(
    const Options& options) {
  std::error_code ec;
  if (options.root.empty() || !fs::is_directory(options.root, ec)) {
    return NotFound("model repository '" + options.root +
                    "' is not a directory");
  }
  if (options.intra_op_threads < 1) {
    return InvalidArgument("intra_op_threads must be >= 1 (got " +
                           std::to_string(options.intra_op_threads) + ")");
  }
  return std::unique_ptr<ModelRepository>(new ModelRepository(options));
}

void ModelRepository::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    DefaultLog(line);
  }
}

StatusOr<std::vector<ModelFolder>> ModelRepository::Scan() const {
  std::vector<ModelFolder> folders;
  std::error_code ec;
  fs::directory_iterator it(options_.root, ec);
  if (ec) {
    return NotFound("cannot list model repository '" + options_.root +
                    "': " + ec.message());
  }
  for (const fs::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    std::error_code dir_ec;
    if (!entry.is_directory(dir_ec)) continue;
    ModelFolder folder;
    folder.name = name;
    folder.path = entry.path().string();
    folder.has_config = IsRegularFile(JoinPath(folder.path, kConfigFileName));
    fs::directory_iterator vit(folder.path, dir_ec);
    if (!dir_ec) {
      for (const fs::directory_entry& v : vit) {
        std::error_code v_ec;
        if (!v.is_directory(v_ec)) continue;
        const std::string vname = v.path().filename().string();
        if (!vname.empty() && vname[0] == '.') continue;
        // Non-numeric folders are logged when the model loads.
        if (std::optional<int64_t> number = ParseVersion(vname)) {
          folder.versions.push_back(*number);
        }
      }
    }
    std::sort(folder.versions.begin(), folder.versions.end());
    folders.push_back(std::move(folder));
  }
  std::sort(folders.begin(), folders.end(),
            [](const ModelFolder& a, const ModelFolder& b) {
              return a.name < b.name;
            });
  return folders;
}

StatusOr<std::shared_ptr<const LoadedModel>> ModelRepository::LoadVersion(
    const std::string& name, int64_t version,
    const std::optional<config::ModelConfig>& user_config,
    const std::string& config_path) const {
  const auto start = std::chrono::steady_clock::now();
  auto loaded = std::make_shared<LoadedModel>();
  loaded->name = name;
  loaded->version = version;
  const std::string dir =
      JoinPath(JoinPath(options_.root, name), std::to_string(version));
  loaded->model_path = JoinPath(dir, kModelFileName);

  StatusOr<engine::ModelSpec> imported =
      engine::ImportOnnxFile(loaded->model_path);
  if (!imported.ok()) return NamingFile(imported.status(), loaded->model_path);
  auto spec =
      std::make_shared<const engine::ModelSpec>(std::move(imported).value());
  loaded->spec = spec;

  const std::string artifact_path = JoinPath(dir, kArtifactFileName);
  const bool has_artifact = IsRegularFile(artifact_path);
  auto calibration_path_for = [&dir](const config::ModelConfig& c) {
    const fs::path file(c.calibration.file);
    return file.is_absolute() ? file.string() : JoinPath(dir, file.string());
  };

  // The config: the user's, completed from the graph, or inferred.
  if (user_config.has_value()) {
    loaded->config = *user_config;
    loaded->config_path = config_path;
    Status completed = config::CompleteModelConfig(*spec, &loaded->config);
    if (!completed.ok()) return completed.Annotate(config_path);
  } else {
    const bool has_calibration =
        IsRegularFile(calibration_path_for(options_.model_defaults));
    loaded->config = config::InferModelConfig(
        *spec, name, has_calibration || has_artifact, options_.model_defaults);
    loaded->config_inferred = true;
  }
  const config::ModelConfig& cfg = loaded->config;
  const std::string calibration_path = calibration_path_for(cfg);
  const bool has_calibration = IsRegularFile(calibration_path);
  loaded->precision =
      config::EffectivePrecision(cfg, has_artifact || has_calibration);

  engine::RnnModelOptions f32_options;
  f32_options.precision = engine::Precision::kF32;
  f32_options.intra_op_threads =
      cfg.instance.intra_op_threads.value_or(options_.intra_op_threads);
  StatusOr<std::unique_ptr<engine::RnnModel>> f32_model =
      engine::RnnModel::Create(spec, f32_options);
  if (!f32_model.ok()) {
    return f32_model.status().Annotate(loaded->model_path + ": f32 model");
  }
  loaded->f32_model = std::move(f32_model).value();

  switch (loaded->precision) {
    case engine::Precision::kF32:
      loaded->serving_model = loaded->f32_model;
      break;
    case engine::Precision::kBf16: {
      engine::RnnModelOptions bf16_options = f32_options;
      bf16_options.precision = engine::Precision::kBf16;
      StatusOr<std::unique_ptr<engine::RnnModel>> model =
          engine::RnnModel::Create(spec, bf16_options);
      if (!model.ok()) {
        return model.status().Annotate(loaded->model_path + ": bf16 model");
      }
      loaded->serving_model = std::move(model).value();
      break;
    }
    case engine::Precision::kInt8: {
      std::shared_ptr<const engine::ModelSpec> int8_spec = spec;
      if (has_artifact) {
        // The artifact replaces calibration; it must come from this graph.
        StatusOr<engine::LoadedArtifact> artifact =
            engine::LoadArtifactFile(artifact_path);
        if (!artifact.ok()) {
          return NamingFile(artifact.status(), artifact_path);
        }
        StatusOr<std::string> onnx_bytes = ReadWholeFile(loaded->model_path);
        if (!onnx_bytes.ok()) return onnx_bytes.status();
        const std::string onnx_sha = engine::Sha256Hex(*onnx_bytes);
        if (artifact->source_sha256 != onnx_sha) {
          return FailedPrecondition(
              artifact_path + " was made from a different model than " +
              loaded->model_path + " (artifact source_sha256 " +
              artifact->source_sha256 + ", model.onnx SHA-256 " + onnx_sha +
              "); re-export the artifact or remove it to calibrate at load");
        }
        int8_spec = std::make_shared<const engine::ModelSpec>(
            std::move(artifact->spec));
        loaded->quantization = std::make_shared<const engine::QuantizationSpec>(
            std::move(artifact->quantization));
        loaded->quantization_from_artifact = true;
        loaded->artifact_path = artifact_path;
      } else if (has_calibration) {
        StatusOr<NpyArray> array = ReadNpy(calibration_path);
        if (!array.ok()) return NamingFile(array.status(), calibration_path);
        StatusOr<engine::SequenceSet> set =
            engine::SequencesFromNpy(*spec, *array, calibration_path);
        if (!set.ok()) return NamingFile(set.status(), calibration_path);
        engine::CalibrationOptions calibration;
        calibration.method = cfg.calibration.method;
        calibration.percentile = cfg.calibration.percentile;
        calibration.per_channel = cfg.calibration.per_channel;
        StatusOr<engine::QuantizationSpec> q =
            engine::Calibrate(*spec, *set, calibration);
        if (!q.ok()) return NamingFile(q.status(), calibration_path);
        loaded->quantization = std::make_shared<const engine::QuantizationSpec>(
            std::move(q).value());
        loaded->calibration_path = calibration_path;
      } else {
        return FailedPrecondition("precision int8 needs a quantized artifact " +
                                  artifact_path + " or calibration data " +
                                  calibration_path + ", and neither exists");
      }
      engine::RnnModelOptions int8_options = f32_options;
      int8_options.precision = engine::Precision::kInt8;
      int8_options.quantization = loaded->quantization;
      StatusOr<std::unique_ptr<engine::RnnModel>> model =
          engine::RnnModel::Create(int8_spec, int8_options);
      if (!model.ok()) {
        return model.status().Annotate(loaded->model_path + ": int8 model");
      }
      loaded->serving_model = std::move(model).value();
      break;
    }
  }

  loaded->weights_bytes = loaded->serving_model->weights_bytes();
  loaded->f32_weights_bytes = loaded->f32_model->weights_bytes();
  loaded->load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  return std::shared_ptr<const LoadedModel>(std::move(loaded));
}

ModelRepository::ModelEntry ModelRepository::BuildModel(
    const std::string& name) const {
  ModelEntry entry;
  entry.status.name = name;
  auto fail = [&](const std::string& reason) {
    entry.status.state = ReadyState::kUnavailable;
    entry.status.reason = reason;
    Log("model " + name + " unavailable: " + reason);
  };

  const std::string name_problem = config::CheckModelName(name);
  if (!name_problem.empty()) {
    fail(name + ": invalid model name: " + name_problem);
    return entry;
  }
  const std::string model_dir = JoinPath(options_.root, name);
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) {
    fail(name + ": " + model_dir + ": no such model folder");
    return entry;
  }

  // The folder's version list (Scan() logs ignored folders).
  std::vector<int64_t> available;
  {
    fs::directory_iterator it(model_dir, ec);
    for (const fs::directory_entry& v : it) {
      std::error_code v_ec;
      if (!v.is_directory(v_ec)) continue;
      const std::string vname = v.path().filename().string();
      if (!vname.empty() && vname[0] == '.') continue;
      if (std::optional<int64_t> number = ParseVersion(vname)) {
        available.push_back(*number);
      } else {
        Log("model " + name + ": ignoring folder '" + v.path().string() +
            "' (version folders are numbers >= 1)");
      }
    }
    std::sort(available.begin(), available.end());
  }

  std::optional<config::ModelConfig> user_config;
  const std::string config_path = JoinPath(model_dir, kConfigFileName);
  if (IsRegularFile(config_path)) {
    StatusOr<config::ModelConfig> parsed =
        config::LoadModelConfigFile(config_path, name, options_.model_defaults);
    if (!parsed.ok()) {
      fail(name + ": " + NamingFile(parsed.status(), config_path).message());
      return entry;
    }
    user_config = std::move(parsed).value();
  }
  const config::VersionPolicy& policy =
      user_config ? user_config->version_policy
                  : options_.model_defaults.version_policy;

  // Versions the policy selects; a specific version without a folder is an
  // error for that version.
  std::vector<int64_t> selected;
  std::vector<int64_t> missing;
  switch (policy.kind) {
    case config::VersionPolicy::Kind::kAll:
      selected = available;
      break;
    case config::VersionPolicy::Kind::kLatest: {
      const size_t n = static_cast<size_t>(std::max(policy.num_versions, 1));
      const size_t first = available.size() > n ? available.size() - n : 0;
      selected.assign(available.begin() + static_cast<ptrdiff_t>(first),
                      available.end());
      break;
    }
    case config::VersionPolicy::Kind::kSpecific:
      for (int64_t v : policy.versions) {
        if (std::binary_search(available.begin(), available.end(), v)) {
          selected.push_back(v);
        } else {
          missing.push_back(v);
        }
      }
      break;
  }
  if (selected.empty() && missing.empty()) {
    fail(name + ": " + model_dir + " has no version folders (1/" +
         kModelFileName + ", ...)");
    return entry;
  }

  for (int64_t v : missing) {
    VersionStatus vs;
    vs.version = v;
    vs.reason = name + " v" + std::to_string(v) + ": version " +
                std::to_string(v) + " is listed in version_policy.specific " +
                "but " + JoinPath(model_dir, std::to_string(v)) +
                " does not exist";
    Log("model " + vs.reason);
    entry.status.versions.push_back(std::move(vs));
  }
  for (int64_t v : selected) {
    VersionStatus vs;
    vs.version = v;
    StatusOr<std::shared_ptr<const LoadedModel>> loaded =
        LoadVersion(name, v, user_config, config_path);
    if (loaded.ok()) {
      const LoadedModel& m = **loaded;
      vs.state = ReadyState::kReady;
      std::ostringstream line;
      line << "loaded model " << name << " v" << v << ": precision "
           << engine::PrecisionName(m.precision) << " (layers "
           << LayerPrecisions(*m.serving_model) << "), quantization "
           << (m.quantization_from_artifact ? "from artifact"
               : m.quantization             ? "calibrated"
                                            : "none")
           << ", config " << (m.config_inferred ? "inferred" : "config.yaml")
           << ", weights " << m.weights_bytes << " bytes, " << m.load_seconds
           << " s";
      Log(line.str());
      entry.versions[v] = std::move(loaded).value();
    } else {
      vs.reason =
          name + " v" + std::to_string(v) + ": " + loaded.status().message();
      Log("model " + vs.reason);
    }
    entry.status.versions.push_back(std::move(vs));
  }
  std::sort(entry.status.versions.begin(), entry.status.versions.end(),
            [](const VersionStatus& a, const VersionStatus& b) {
              return a.version < b.version;
            });
  if (!entry.versions.empty()) {
    entry.status.state = ReadyState::kReady;
  } else {
    entry.status.state = ReadyState::kUnavailable;
    entry.status.reason = entry.status.versions.empty()
                              ? name + ": no version loaded"
                              : entry.status.versions.back().reason;
  }
  return entry;
}

Status ModelRepository::LoadModel(const std::string& name) {
  std::lock_guard<std::mutex> load_lock(load_mutex_);
  ModelEntry entry = BuildModel(name);
  const bool missing_folder =
      entry.status.reason.find("no such model folder") != std::string::npos;
  // A reload that fails keeps what was serving (as Triton does): a version
  // that no longer loads keeps its previous copy, and a model whose config
  // or folder no longer loads keeps all of its versions. The failure is
  // reported (the result, the log, the version's reason).
  ModelEntry previous;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = models_.find(name);
    if (it != models_.end()) previous = it->second;
  }
  std::string kept;
  if (!missing_folder && !previous.versions.empty()) {
    if (entry.versions.empty() && entry.status.versions.empty()) {
      kept = entry.status.reason;
      Log("model " + name + ": reload failed, still serving the versions "
          "loaded before: " + kept);
      previous.status.reason = "reload failed: " + kept;
      entry = std::move(previous);
    } else {
      for (VersionStatus& vs : entry.status.versions) {
        if (vs.state == ReadyState::kReady) continue;
        auto old = previous.versions.find(vs.version);
        if (old == previous.versions.end()) continue;
        kept = vs.reason;
        Log("model " + name + " v" + std::to_string(vs.version) +
            ": reload failed, still serving the copy loaded before");
        vs.state = ReadyState::kReady;
        vs.reason = "reload failed, serving the copy loaded before: " + kept;
        entry.versions[vs.version] = old->second;
        entry.status.state = ReadyState::kReady;
        entry.status.reason.clear();
      }
    }
  }
  const bool ready = entry.status.state == ReadyState::kReady;
  const std::string reason = entry.status.reason;
  {
    // The old versions' shared_ptrs are released here (outside Get()'s way);
    // requests holding them keep them alive.
    std::lock_guard<std::mutex> lock(mutex_);
    models_[name] = std::move(entry);
  }
  if (!kept.empty()) {
    return Status(StatusCode::kUnavailable,
                  "reload of model '" + name +
                      "' failed; the previously loaded copy keeps serving: " +
                      kept);
  }
  if (ready) return Status::Ok();
  return Status(
      missing_folder ? StatusCode::kNotFound : StatusCode::kUnavailable,
      reason);
}

Status ModelRepository::UnloadModel(const std::string& name) {
  std::lock_guard<std::mutex> load_lock(load_mutex_);
  ModelEntry removed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = models_.find(name);
    if (it == models_.end()) {
      return NotFound("model '" + name + "' is not loaded");
    }
    removed = std::move(it->second);
    models_.erase(it);
  }
  Log("unloaded model " + name);
  return Status::Ok();
}

Status ModelRepository::LoadAll() {
  StatusOr<std::vector<ModelFolder>> folders = Scan();
  if (!folders.ok()) return folders.status();
  int ready = 0;
  for (const ModelFolder& folder : *folders) {
    if (LoadModel(folder.name).ok()) ++ready;
  }
  Log("loaded " + std::to_string(ready) + " of " +
      std::to_string(folders->size()) + " models from " + options_.root);
  return Status::Ok();
}

StatusOr<std::shared_ptr<const LoadedModel>> ModelRepository::Get(
    const std::string& name, std::optional<int64_t> version) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = models_.find(name);
  if (it == models_.end()) {
    return NotFound("model '" + name + "' is not loaded");
  }
  const ModelEntry& entry = it->second;
  if (!version.has_value()) {
    if (entry.versions.empty()) {
      return Status(
          StatusCode::kUnavailable,
          "model '" + name + "' is not ready: " + entry.status.reason);
    }
    return entry.versions.rbegin()->second;
  }
  auto v = entry.versions.find(*version);
  if (v != entry.versions.end()) return v->second;
  for (const VersionStatus& vs : entry.status.versions) {
    if (vs.version == *version) {
      return Status(StatusCode::kUnavailable,
                    "model '" + name + "' version " + std::to_string(*version) +
                        " is not ready: " + vs.reason);
    }
  }
  return NotFound("model '" + name + "' has no version " +
                  std::to_string(*version) + " being served");
}

StatusOr<ModelStatus> ModelRepository::ModelState(
    const std::string& name, std::optional<int64_t> version) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = models_.find(name);
  if (it == models_.end()) {
    return NotFound("model '" + name + "' is not loaded");
  }
  ModelStatus status = it->second.status;
  if (!version.has_value()) return status;
  for (const VersionStatus& entry : status.versions) {
    if (entry.version == *version) {
      VersionStatus vs = entry;  // copied: status.versions is replaced below
      status.versions = {vs};
      status.state = vs.state;
      status.reason = vs.reason;
      return status;
    }
  }
  return NotFound("model '" + name + "' has no version " +
                  std::to_string(*version));
}

std::vector<ModelStatus> ModelRepository::ModelStates() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<ModelStatus> states;
  states.reserve(models_.size());
  for (const auto& [name, entry] : models_) states.push_back(entry.status);
  return states;
}

}  // namespace rnnserve::repository
