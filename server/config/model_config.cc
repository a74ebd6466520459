#include "server/config/model_config.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "server/config/config_reader.h"
#include "server/config/model_config_internal.h"
#include "server/config/yaml_tree.h"

namespace rnnserve::config {
namespace {

using engine::CalibrationMethod;
using engine::ElementType;
using engine::Precision;
using internal::ModelSection;

const EnumNames<ElementType>& DataTypeNames() {
  static const auto* names =
      new EnumNames<ElementType>{{"FP32", ElementType::kFloat32},
                                 {"INT64", ElementType::kInt64},
                                 {"INT32", ElementType::kInt32}};
  return *names;
}

// "auto" is the unset precision (decided by EffectivePrecision).
const EnumNames<std::optional<Precision>>& PrecisionNames() {
  static const auto* names =
      new EnumNames<std::optional<Precision>>{{"auto", std::nullopt},
                                              {"int8", Precision::kInt8},
                                              {"f32", Precision::kF32},
                                              {"bf16", Precision::kBf16}};
  return *names;
}

const EnumNames<CalibrationMethod>& MethodNames() {
  static const auto* names = new EnumNames<CalibrationMethod>{
      {"minmax", CalibrationMethod::kMinMax},
      {"percentile", CalibrationMethod::kPercentile},
      {"mse", CalibrationMethod::kMse}};
  return *names;
}

const EnumNames<BatchingKind>& BatchingKindNames() {
  static const auto* names =
      new EnumNames<BatchingKind>{{"dynamic", BatchingKind::kDynamic},
                                  {"sequence", BatchingKind::kSequence}};
  return *names;
}

const EnumNames<DriftAction>& DriftActionNames() {
  static const auto* names =
      new EnumNames<DriftAction>{{"alert", DriftAction::kAlert},
                                 {"fallback_f32", DriftAction::kFallbackF32}};
  return *names;
}

const EnumNames<VersionPolicy::Kind>& VersionPolicyNames() {
  static const auto* names = new EnumNames<VersionPolicy::Kind>{
      {"latest", VersionPolicy::Kind::kLatest},
      {"all", VersionPolicy::Kind::kAll},
      {"specific", VersionPolicy::Kind::kSpecific}};
  return *names;
}

// "models.<name>", the root of every error path of a model.
std::string ModelPath(const std::string& name) {
  return "models." + (name.empty() ? std::string("<unnamed>") : name);
}

// Batching keys that belong to one kind only.
const std::vector<std::string> kDynamicOnlyKeys = {"preferred_batch_sizes"};
const std::vector<std::string> kSequenceOnlyKeys = {"max_sequence_idle_us",
                                                    "max_active_sequences"};

// ------------------------------------------------------------------ parsing

Status ReadTensors(MapReader& parent, const std::string& key,
                   std::vector<TensorConfig>* out) {
  const YamlNode* node = parent.Find(key);
  if (node == nullptr) return Status::Ok();
  ConfigContext* ctx = parent.context();
  const std::string path = parent.Child(key);
  if (node->kind == YamlNode::Kind::kNull) {
    out->clear();
    return Status::Ok();
  }
  if (node->kind != YamlNode::Kind::kSequence) {
    return ctx->Error(path, std::string("must be a list of {name, dtype, "
                                        "dims} (got a ") +
                                node->KindName() + ")");
  }
  std::vector<TensorConfig> tensors;
  for (size_t i = 0; i < node->items.size(); ++i) {
    const std::string item_path = IndexPath(path, i);
    ctx->RecordFile(item_path, node->items[i].line, node->items[i].column);
    ASSIGN_OR_RETURN(MapReader m,
                     MapReader::Open(node->items[i], item_path, ctx));
    TensorConfig t;
    for (const char* required : {"name", "dtype", "dims"}) {
      if (m.Find(required) == nullptr) {
        return ctx->Error(m.Child(required), "must be set");
      }
    }
    RETURN_IF_ERROR(m.Read("name", &t.name));
    RETURN_IF_ERROR(m.ReadEnum("dtype", DataTypeNames(), &t.dtype));
    RETURN_IF_ERROR(m.Read("dims", &t.dims));
    RETURN_IF_ERROR(m.Finish());
    tensors.push_back(std::move(t));
  }
  *out = std::move(tensors);
  return Status::Ok();
}

// The policy is one value: a file that sets it replaces the default whole.
Status ReadVersionPolicy(MapReader& parent, VersionPolicy* out) {
  const YamlNode* node = parent.Find("version_policy");
  if (node == nullptr) return Status::Ok();
  ConfigContext* ctx = parent.context();
  const std::string path = parent.Child("version_policy");
  VersionPolicy policy;
  if (node->kind == YamlNode::Kind::kScalar) {
    if (node->scalar == "latest" || node->scalar == "all") {
      policy.kind = node->scalar == "all" ? VersionPolicy::Kind::kAll
                                          : VersionPolicy::Kind::kLatest;
      *out = policy;
      return Status::Ok();
    }
    return ctx->Error(path,
                      "must be latest, all, {latest: {num_versions: N}} "
                      "or {specific: {versions: [...]}} (got " +
                          Quoted(node->scalar) + ")");
  }
  ASSIGN_OR_RETURN(MapReader m, MapReader::Open(*node, path, ctx));
  std::vector<std::string> given;
  for (const auto& [name, kind] : VersionPolicyNames()) {
    const YamlNode* choice = m.Find(name);
    if (choice == nullptr) continue;
    given.push_back(name);
    policy.kind = kind;
    ASSIGN_OR_RETURN(MapReader c, MapReader::Open(*choice, m.Child(name), ctx));
    if (kind == VersionPolicy::Kind::kLatest) {
      RETURN_IF_ERROR(c.Read("num_versions", &policy.num_versions));
    } else if (kind == VersionPolicy::Kind::kSpecific) {
      RETURN_IF_ERROR(c.Read("versions", &policy.versions));
    }
    RETURN_IF_ERROR(c.Finish());
  }
  RETURN_IF_ERROR(m.Finish());
  if (given.size() != 1) {
    return ctx->Error(path,
                      "must set exactly one of latest, all, specific (got " +
                          (given.empty() ? std::string("none")
                                         : given[0] + " and " + given[1]) +
                          ")");
  }
  *out = policy;
  return Status::Ok();
}

Status ReadCalibration(MapReader& parent, CalibrationConfig* out) {
  const YamlNode* node = parent.Find("calibration");
  if (node == nullptr) return Status::Ok();
  ASSIGN_OR_RETURN(
      MapReader m,
      MapReader::Open(*node, parent.Child("calibration"), parent.context()));
  RETURN_IF_ERROR(m.ReadEnum("method", MethodNames(), &out->method));
  RETURN_IF_ERROR(m.Read("file", &out->file));
  RETURN_IF_ERROR(m.Read("percentile", &out->percentile));
  RETURN_IF_ERROR(m.Read("per_channel", &out->per_channel));
  return m.Finish();
}

Status ReadBatching(MapReader& parent, ModelSection section,
                    BatchingConfig* out) {
  const YamlNode* node = parent.Find("batching");
  if (node == nullptr) return Status::Ok();
  ConfigContext* ctx = parent.context();
  ASSIGN_OR_RETURN(MapReader m,
                   MapReader::Open(*node, parent.Child("batching"), ctx));
  RETURN_IF_ERROR(m.ReadEnum("kind", BatchingKindNames(), &out->kind));
  RETURN_IF_ERROR(m.Read("max_batch_size", &out->max_batch_size));
  RETURN_IF_ERROR(m.Read("max_queue_delay_us", &out->max_queue_delay_us));
  RETURN_IF_ERROR(m.Read("max_queue_size", &out->max_queue_size));
  RETURN_IF_ERROR(m.Read("group_by_length", &out->group_by_length));
  RETURN_IF_ERROR(m.Read("preferred_batch_sizes", &out->preferred_batch_sizes));
  RETURN_IF_ERROR(m.Read("max_sequence_idle_us", &out->max_sequence_idle_us));
  RETURN_IF_ERROR(m.Read("max_active_sequences", &out->max_active_sequences));
  RETURN_IF_ERROR(m.Finish());
  // model_defaults may preset both kinds; a model's own file may not set
  // keys its batcher would silently ignore.
  if (section == ModelSection::kModel) {
    const bool dynamic = out->kind == BatchingKind::kDynamic;
    for (const std::string& key :
         dynamic ? kSequenceOnlyKeys : kDynamicOnlyKeys) {
      if (ctx->InFile(m.Child(key))) {
        return ctx->Error(m.Child(key),
                          std::string("applies only to batching.kind ") +
                              (dynamic ? "sequence" : "dynamic") +
                              " (kind is " + BatchingKindName(out->kind) + ")");
      }
    }
  }
  return Status::Ok();
}

Status ReadDrift(MapReader& parent, DriftConfig* out) {
  const YamlNode* node = parent.Find("drift");
  if (node == nullptr) return Status::Ok();
  ConfigContext* ctx = parent.context();
  ASSIGN_OR_RETURN(MapReader m,
                   MapReader::Open(*node, parent.Child("drift"), ctx));
  RETURN_IF_ERROR(m.Read("sample_rate", &out->sample_rate));
  if (const YamlNode* t = m.Find("thresholds")) {
    ASSIGN_OR_RETURN(MapReader tm,
                     MapReader::Open(*t, m.Child("thresholds"), ctx));
    DriftThresholds& th = out->thresholds;
    RETURN_IF_ERROR(tm.Read("max_abs_error", &th.max_abs_error));
    RETURN_IF_ERROR(tm.Read("mean_abs_error", &th.mean_abs_error));
    RETURN_IF_ERROR(tm.Read("relative_l2", &th.relative_l2));
    RETURN_IF_ERROR(tm.Read("top1_disagreement", &th.top1_disagreement));
    RETURN_IF_ERROR(tm.Read("kl", &th.kl));
    RETURN_IF_ERROR(tm.Read("clip_fraction", &th.clip_fraction));
    RETURN_IF_ERROR(tm.Finish());
  }
  RETURN_IF_ERROR(m.Read("min_samples", &out->min_samples));
  RETURN_IF_ERROR(m.Read("hysteresis", &out->hysteresis));
  RETURN_IF_ERROR(m.ReadEnum("action", DriftActionNames(), &out->action));
  RETURN_IF_ERROR(m.Read("queue_size", &out->queue_size));
  RETURN_IF_ERROR(m.Read("reservoir_size", &out->reservoir_size));
  return m.Finish();
}

Status ReadInstance(MapReader& parent, InstanceConfig* out) {
  const YamlNode* node = parent.Find("instance");
  if (node == nullptr) return Status::Ok();
  ASSIGN_OR_RETURN(MapReader m, MapReader::Open(*node, parent.Child("instance"),
                                                parent.context()));
  RETURN_IF_ERROR(m.Read("count", &out->count));
  RETURN_IF_ERROR(m.Read("intra_op_threads", &out->intra_op_threads));
  return m.Finish();
}

// --------------------------------------------------------------- validation

std::string DimsText(const std::vector<int64_t>& dims) {
  return YamlIntList(dims);
}

// A finite number in [lo, hi] (or [lo, hi) when `hi_open`).
Status CheckUnitRange(const ConfigContext& ctx, const std::string& path,
                      double v, double lo, double hi, bool hi_open = false) {
  const bool ok = std::isfinite(v) && v >= lo && (hi_open ? v < hi : v <= hi);
  if (ok) return Status::Ok();
  return ctx.ValueError(path, "must be in [" + FormatDouble(lo) + ", " +
                                  FormatDouble(hi) + (hi_open ? ")" : "]") +
                                  " (got " + FormatDouble(v) + ")");
}

Status CheckNonNegative(const ConfigContext& ctx, const std::string& path,
                        const std::optional<double>& v) {
  if (!v.has_value()) return Status::Ok();
  if (!std::isfinite(*v)) {
    return ctx.ValueError(
        path, "must be a finite number (got " + FormatDouble(*v) + ")");
  }
  if (*v < 0) {
    return ctx.ValueError(path, "must be >= 0 (got " + FormatDouble(*v) + ")");
  }
  return Status::Ok();
}

Status ValidateTensor(const TensorConfig& t, const std::string& path,
                      bool is_input, const ConfigContext& ctx) {
  if (t.name.empty())
    return ctx.Error(JoinPath(path, "name"), "must not be empty");
  const std::string dims_path = JoinPath(path, "dims");
  if (is_input) {
    const size_t rank = t.dtype == ElementType::kFloat32 ? 3 : 2;
    if (t.dims.size() != rank) {
      return ctx.Error(
          dims_path,
          std::string("must have ") + std::to_string(rank) +
              " dimensions for a " + DataTypeName(t.dtype) + " input (" +
              (rank == 3 ? "[N, T, F] features" : "[N, T] token ids") +
              ") (got " + DimsText(t.dims) + ")");
    }
  } else {
    if (t.dtype != ElementType::kFloat32) {
      return ctx.Error(JoinPath(path, "dtype"),
                       std::string("must be FP32: outputs are float (got ") +
                           DataTypeName(t.dtype) + ")");
    }
    if (t.dims.size() != 2 && t.dims.size() != 3) {
      return ctx.Error(dims_path,
                       "must have 2 dimensions [N, O] or 3 [N, T, O] (got " +
                           DimsText(t.dims) + ")");
    }
  }
  for (size_t i = 0; i < t.dims.size(); ++i) {
    const std::string dim_path = IndexPath(dims_path, i);
    if (i == 0 && t.dims[0] != -1) {
      return ctx.Error(dim_path, "the batch dimension must be -1 (got " +
                                     std::to_string(t.dims[0]) + ")");
    }
    if (t.dims[i] != -1 && t.dims[i] < 1) {
      return ctx.Error(dim_path, "must be -1 (variable) or >= 1 (got " +
                                     std::to_string(t.dims[i]) + ")");
    }
  }
  return Status::Ok();
}

Status ValidateTensors(const ModelConfig& c, const std::string& path,
                       const ConfigContext& ctx) {
  const std::string in_path = JoinPath(path, "inputs");
  const std::string out_path = JoinPath(path, "outputs");
  if (c.inputs.size() > 1) {
    return ctx.Error(in_path, "must list exactly one input (got " +
                                  std::to_string(c.inputs.size()) + ")");
  }
  if (c.outputs.size() > 1) {
    return ctx.Error(out_path, "must list exactly one output (got " +
                                   std::to_string(c.outputs.size()) + ")");
  }
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    RETURN_IF_ERROR(
        ValidateTensor(c.inputs[i], IndexPath(in_path, i), true, ctx));
  }
  for (size_t i = 0; i < c.outputs.size(); ++i) {
    RETURN_IF_ERROR(
        ValidateTensor(c.outputs[i], IndexPath(out_path, i), false, ctx));
  }
  if (!c.inputs.empty() && !c.outputs.empty()) {
    const TensorConfig& in = c.inputs[0];
    const TensorConfig& out = c.outputs[0];
    if (in.name == out.name) {
      return ctx.Error(
          IndexPath(out_path, 0) + ".name",
          "must differ from the input's name (both " + Quoted(in.name) + ")");
    }
    if (out.dims.size() == 3 && out.dims[1] != -1 &&
        out.dims[1] != in.dims[1]) {
      return ctx.Error(IndexPath(out_path, 0) + ".dims[1]",
                       "the output has one step per input step: must be -1 "
                       "or the input's dims[1] (" +
                           std::to_string(in.dims[1]) + ") (got " +
                           std::to_string(out.dims[1]) + ")");
    }
  }
  if (!c.inputs.empty() && c.inputs[0].dims[1] > c.max_sequence_length) {
    return ctx.Error(IndexPath(in_path, 0) + ".dims[1]",
                     "must be <= max_sequence_length (" +
                         std::to_string(c.max_sequence_length) + ") (got " +
                         std::to_string(c.inputs[0].dims[1]) + ")");
  }
  return Status::Ok();
}

Status ValidateVersionPolicy(const VersionPolicy& p, const std::string& path,
                             const ConfigContext& ctx) {
  switch (p.kind) {
    case VersionPolicy::Kind::kAll:
      return Status::Ok();
    case VersionPolicy::Kind::kLatest:
      return CheckIntRange(ctx, JoinPath(path, "latest.num_versions"),
                           p.num_versions, 1, 1000);
    case VersionPolicy::Kind::kSpecific: {
      const std::string vpath = JoinPath(path, "specific.versions");
      if (p.versions.empty()) {
        return ctx.Error(vpath, "must list at least one version");
      }
      std::set<int64_t> seen;
      for (size_t i = 0; i < p.versions.size(); ++i) {
        const std::string ipath = IndexPath(vpath, i);
        if (p.versions[i] < 1) {
          return ctx.ValueError(ipath, "version numbers must be >= 1 (got " +
                                           std::to_string(p.versions[i]) + ")");
        }
        if (!seen.insert(p.versions[i]).second) {
          return ctx.Error(ipath, "version " + std::to_string(p.versions[i]) +
                                      " is listed twice");
        }
      }
      return Status::Ok();
    }
  }
  return Status::Ok();
}

Status ValidateBatching(const BatchingConfig& b, const std::string& path,
                        const ConfigContext& ctx) {
  auto at = [&](const char* key) { return JoinPath(path, key); };
  RETURN_IF_ERROR(
      CheckIntRange(ctx, at("max_batch_size"), b.max_batch_size, 1, 65536));
  RETURN_IF_ERROR(CheckIntRange(ctx, at("max_queue_delay_us"),
                                b.max_queue_delay_us, 0, 10'000'000));
  if (b.max_queue_size < b.max_batch_size) {
    return ctx.ValueError(at("max_queue_size"),
                          "must be >= batching.max_batch_size (" +
                              std::to_string(b.max_batch_size) + ") (got " +
                              std::to_string(b.max_queue_size) + ")");
  }
  RETURN_IF_ERROR(
      CheckIntRange(ctx, at("max_queue_size"), b.max_queue_size, 1, 1'000'000));
  std::set<int64_t> seen;
  for (size_t i = 0; i < b.preferred_batch_sizes.size(); ++i) {
    const std::string ipath = IndexPath(at("preferred_batch_sizes"), i);
    const int64_t size = b.preferred_batch_sizes[i];
    if (size < 1) {
      return ctx.ValueError(ipath,
                            "must be >= 1 (got " + std::to_string(size) + ")");
    }
    if (size > b.max_batch_size) {
      return ctx.ValueError(ipath, "must be <= batching.max_batch_size (" +
                                       std::to_string(b.max_batch_size) +
                                       ") (got " + std::to_string(size) + ")");
    }
    if (!seen.insert(size).second) {
      return ctx.Error(
          ipath, "batch size " + std::to_string(size) + " is listed twice");
    }
  }
  RETURN_IF_ERROR(CheckIntRange(ctx, at("max_sequence_idle_us"),
                                b.max_sequence_idle_us, 1000, 86'400'000'000));
  RETURN_IF_ERROR(CheckIntRange(ctx, at("max_active_sequences"),
                                b.max_active_sequences, 1, 1'000'000));
  return Status::Ok();
}

Status ValidateDrift(const DriftConfig& d,
                     const std::optional<Precision>& precision,
                     const std::string& path, const ConfigContext& ctx) {
  auto at = [&](const char* key) { return JoinPath(path, key); };
  RETURN_IF_ERROR(CheckUnitRange(ctx, at("sample_rate"), d.sample_rate, 0, 1));
  const DriftThresholds& t = d.thresholds;
  const std::string tp = at("thresholds");
  RETURN_IF_ERROR(
      CheckNonNegative(ctx, JoinPath(tp, "max_abs_error"), t.max_abs_error));
  RETURN_IF_ERROR(
      CheckNonNegative(ctx, JoinPath(tp, "mean_abs_error"), t.mean_abs_error));
  RETURN_IF_ERROR(
      CheckNonNegative(ctx, JoinPath(tp, "relative_l2"), t.relative_l2));
  if (t.top1_disagreement) {
    RETURN_IF_ERROR(CheckUnitRange(ctx, JoinPath(tp, "top1_disagreement"),
                                   *t.top1_disagreement, 0, 1));
  }
  RETURN_IF_ERROR(CheckNonNegative(ctx, JoinPath(tp, "kl"), t.kl));
  if (t.clip_fraction) {
    RETURN_IF_ERROR(CheckUnitRange(ctx, JoinPath(tp, "clip_fraction"),
                                   *t.clip_fraction, 0, 1));
  }
  RETURN_IF_ERROR(
      CheckIntRange(ctx, at("min_samples"), d.min_samples, 1, 100'000'000));
  RETURN_IF_ERROR(CheckUnitRange(ctx, at("hysteresis"), d.hysteresis, 0, 1,
                                 /*hi_open=*/true));
  RETURN_IF_ERROR(
      CheckIntRange(ctx, at("queue_size"), d.queue_size, 1, 1'000'000));
  RETURN_IF_ERROR(
      CheckIntRange(ctx, at("reservoir_size"), d.reservoir_size, 0, 1'000'000));
  if (d.action == DriftAction::kFallbackF32) {
    const bool any = t.max_abs_error || t.mean_abs_error || t.relative_l2 ||
                     t.top1_disagreement || t.kl || t.clip_fraction;
    if (!any) {
      return ctx.Error(tp,
                       "drift.action fallback_f32 needs at least one "
                       "threshold");
    }
    if (d.sample_rate <= 0) {
      return ctx.ValueError(at("sample_rate"),
                            "must be > 0 when drift.action is fallback_f32 "
                            "(got " +
                                FormatDouble(d.sample_rate) + ")");
    }
    if (precision == Precision::kF32) {
      return ctx.Error(at("action"),
                       "fallback_f32 needs precision int8 or bf16 (precision "
                       "is f32)");
    }
  }
  return Status::Ok();
}

}  // namespace

// ------------------------------------------------------------------ names

const char* DataTypeName(ElementType type) {
  return EnumName(DataTypeNames(), type);
}

StatusOr<ElementType> ParseDataType(const std::string& name) {
  ElementType t = ElementType::kFloat32;
  const std::string rule = ParseEnumText(name, DataTypeNames(), &t);
  if (!rule.empty()) return InvalidArgument("dtype " + rule);
  return t;
}

const char* VersionPolicyKindName(VersionPolicy::Kind kind) {
  return EnumName(VersionPolicyNames(), kind);
}
const char* BatchingKindName(BatchingKind kind) {
  return EnumName(BatchingKindNames(), kind);
}
const char* DriftActionName(DriftAction action) {
  return EnumName(DriftActionNames(), action);
}

std::string CheckModelName(const std::string& name) {
  if (name.empty()) return "must not be empty";
  if (name.size() > 128) {
    return "must be at most 128 characters (got " +
           std::to_string(name.size()) + ")";
  }
  if (name == "." || name == "..") return "must not be '.' or '..'";
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (!ok) {
      return "must use only letters, digits, '_', '.' and '-' (got " +
             Quoted(name) + ")";
    }
  }
  return "";
}

// --------------------------------------------------------------- internal

namespace internal {

Status ReadModelFields(const YamlNode& node, const std::string& path,
                       ModelSection section, ConfigContext* context,
                       ModelConfig* config) {
  ASSIGN_OR_RETURN(MapReader m, MapReader::Open(node, path, context));
  if (section == ModelSection::kModel) {
    RETURN_IF_ERROR(m.Read("name", &config->name));
    RETURN_IF_ERROR(ReadTensors(m, "inputs", &config->inputs));
    RETURN_IF_ERROR(ReadTensors(m, "outputs", &config->outputs));
  }
  RETURN_IF_ERROR(
      m.ReadEnum("precision", PrecisionNames(), &config->precision));
  RETURN_IF_ERROR(ReadVersionPolicy(m, &config->version_policy));
  RETURN_IF_ERROR(ReadCalibration(m, &config->calibration));
  RETURN_IF_ERROR(m.Read("max_sequence_length", &config->max_sequence_length));
  RETURN_IF_ERROR(ReadBatching(m, section, &config->batching));
  RETURN_IF_ERROR(ReadDrift(m, &config->drift));
  RETURN_IF_ERROR(ReadInstance(m, &config->instance));
  return m.Finish();
}

void NormalizeModelFields(ModelConfig* config) {
  std::sort(config->batching.preferred_batch_sizes.begin(),
            config->batching.preferred_batch_sizes.end());
  std::sort(config->version_policy.versions.begin(),
            config->version_policy.versions.end());
}

Status ValidateModelFields(const ModelConfig& c, const std::string& path,
                           ModelSection section, const ConfigContext& ctx) {
  auto at = [&](const char* key) { return JoinPath(path, key); };
  if (section == ModelSection::kModel) {
    const std::string rule = CheckModelName(c.name);
    if (!rule.empty()) return ctx.Error(at("name"), rule);
    RETURN_IF_ERROR(ValidateTensors(c, path, ctx));
  }
  RETURN_IF_ERROR(
      ValidateVersionPolicy(c.version_policy, at("version_policy"), ctx));
  const std::string cal = at("calibration");
  if (c.calibration.file.empty()) {
    return ctx.Error(JoinPath(cal, "file"), "must not be empty");
  }
  const double pct = c.calibration.percentile;
  if (!(std::isfinite(pct) && pct > 50 && pct <= 100)) {
    return ctx.ValueError(
        JoinPath(cal, "percentile"),
        "must be in (50, 100] (got " + FormatDouble(pct) + ")");
  }
  RETURN_IF_ERROR(CheckIntRange(ctx, at("max_sequence_length"),
                                c.max_sequence_length, 1, 1'000'000));
  RETURN_IF_ERROR(ValidateBatching(c.batching, at("batching"), ctx));
  RETURN_IF_ERROR(ValidateDrift(c.drift, c.precision, at("drift"), ctx));
  if (c.instance.count) {
    RETURN_IF_ERROR(
        CheckIntRange(ctx, at("instance.count"), *c.instance.count, 1, 1024));
  }
  if (c.instance.intra_op_threads) {
    RETURN_IF_ERROR(CheckIntRange(ctx, at("instance.intra_op_threads"),
                                  *c.instance.intra_op_threads, 1, 1024));
  }
  return Status::Ok();
}

namespace {

std::string TensorYaml(const TensorConfig& t) {
  return std::string("{name: ") + YamlString(t.name) +
         ", dtype: " + DataTypeName(t.dtype) +
         ", dims: " + YamlIntList(t.dims) + "}";
}

std::string VersionPolicyYaml(const VersionPolicy& p) {
  switch (p.kind) {
    case VersionPolicy::Kind::kLatest:
      return "{latest: {num_versions: " + std::to_string(p.num_versions) + "}}";
    case VersionPolicy::Kind::kAll:
      return "{all: {}}";
    case VersionPolicy::Kind::kSpecific:
      return "{specific: {versions: " + YamlIntList(p.versions) + "}}";
  }
  return "";
}

void OptionalField(YamlWriter* out, int indent, const char* key,
                   const std::optional<double>& v, const char* comment) {
  if (v) out->Field(indent, key, FormatDouble(*v), comment);
}

}  // namespace

void WriteModelFields(const ModelConfig& c, ModelSection section, int indent,
                      YamlWriter* out) {
  const int in2 = indent + 2;
  const int in4 = indent + 4;
  if (section == ModelSection::kModel) {
    out->Field(indent, "name", YamlString(c.name),
               "Must equal the model's folder name.");
    for (const auto* list : {&c.inputs, &c.outputs}) {
      const char* key = list == &c.inputs ? "inputs" : "outputs";
      if (list->empty()) {
        out->Field(indent, key, "[]", "Empty: taken from the graph.");
        continue;
      }
      out->Section(indent, key, "");
      for (const TensorConfig& t : *list) {
        out->Item(in2, TensorYaml(t));
      }
    }
  }
  out->Field(indent, "precision", EnumName(PrecisionNames(), c.precision),
             "int8 | f32 | bf16 | auto (int8 when calibration data or an "
             "artifact exists, else f32).");
  out->Field(indent, "version_policy", VersionPolicyYaml(c.version_policy),
             "{latest: {num_versions: N}} | {all: {}} | {specific: {versions: "
             "[...]}}");
  out->Section(indent, "calibration", "int8 calibration at load.");
  out->Field(in2, "method", EnumName(MethodNames(), c.calibration.method),
             "minmax | percentile | mse");
  out->Field(in2, "file", YamlString(c.calibration.file),
             "NumPy file in the version folder.");
  out->Field(in2, "percentile", FormatDouble(c.calibration.percentile),
             "For method percentile, in (50, 100].");
  out->Field(in2, "per_channel", YamlBool(c.calibration.per_channel),
             "Per-output-channel weight scales.");
  out->Field(indent, "max_sequence_length",
             std::to_string(c.max_sequence_length),
             "Longest T a request may carry.");
  const BatchingConfig& b = c.batching;
  const bool all_kinds = section == ModelSection::kDefaults;
  out->Section(indent, "batching", "");
  out->Field(in2, "kind", BatchingKindName(b.kind),
             "dynamic (stateless) | sequence (stateful streams)");
  out->Field(in2, "max_batch_size", std::to_string(b.max_batch_size),
             "Largest batch run at once.");
  out->Field(in2, "max_queue_delay_us", std::to_string(b.max_queue_delay_us),
             "Longest wait for a fuller batch; 0 dispatches when a worker "
             "is free.");
  out->Field(in2, "max_queue_size", std::to_string(b.max_queue_size),
             "Waiting requests; beyond it RESOURCE_EXHAUSTED.");
  out->Field(in2, "group_by_length", YamlBool(b.group_by_length),
             "Batch equal sequence lengths only (no padding).");
  if (all_kinds || b.kind == BatchingKind::kDynamic) {
    out->Field(in2, "preferred_batch_sizes",
               YamlIntList(b.preferred_batch_sizes),
               "dynamic: dispatch at once when a batch reaches one of these.");
  }
  if (all_kinds || b.kind == BatchingKind::kSequence) {
    out->Field(in2, "max_sequence_idle_us",
               std::to_string(b.max_sequence_idle_us),
               "sequence: free a stream idle this long.");
    out->Field(in2, "max_active_sequences",
               std::to_string(b.max_active_sequences),
               "sequence: live streams at most.");
  }
  const DriftConfig& d = c.drift;
  out->Section(indent, "drift", "Live int8-vs-f32 drift monitoring.");
  out->Field(in2, "sample_rate", FormatDouble(d.sample_rate),
             "Fraction of requests re-run in f32, in [0, 1].");
  const DriftThresholds& t = d.thresholds;
  const bool any = t.max_abs_error || t.mean_abs_error || t.relative_l2 ||
                   t.top1_disagreement || t.kl || t.clip_fraction;
  if (!any) {
    out->Field(in2, "thresholds", "{}",
               "max_abs_error, mean_abs_error, relative_l2, top1_disagreement, "
               "kl, clip_fraction; unset are not checked.");
  } else {
    out->Section(in2, "thresholds", "Unset thresholds are not checked.");
    OptionalField(out, in4, "max_abs_error", t.max_abs_error, "");
    OptionalField(out, in4, "mean_abs_error", t.mean_abs_error, "");
    OptionalField(out, in4, "relative_l2", t.relative_l2, "");
    OptionalField(out, in4, "top1_disagreement", t.top1_disagreement, "");
    OptionalField(out, in4, "kl", t.kl, "");
    OptionalField(out, in4, "clip_fraction", t.clip_fraction, "");
  }
  out->Field(in2, "min_samples", std::to_string(d.min_samples),
             "Samples needed before a threshold can trigger the action.");
  out->Field(in2, "hysteresis", FormatDouble(d.hysteresis),
             "Undo the action below (1 - hysteresis) x threshold; in [0, 1).");
  out->Field(in2, "action", DriftActionName(d.action), "alert | fallback_f32");
  out->Field(in2, "queue_size", std::to_string(d.queue_size),
             "Pending f32 re-runs; beyond it samples are shed.");
  out->Field(in2, "reservoir_size", std::to_string(d.reservoir_size),
             "Recent inputs kept for live recalibration; 0 disables it.");
  if (!c.instance.count && !c.instance.intra_op_threads) {
    out->Field(indent, "instance", "{}",
               "count, intra_op_threads; unset means the server's settings.");
  } else {
    out->Section(indent, "instance", "Unset means the server's settings.");
    if (c.instance.count) {
      out->Field(in2, "count", std::to_string(*c.instance.count), "");
    }
    if (c.instance.intra_op_threads) {
      out->Field(in2, "intra_op_threads",
                 std::to_string(*c.instance.intra_op_threads), "");
    }
  }
}

}  // namespace internal

// ----------------------------------------------------------------- public

StatusOr<ModelConfig> ParseModelConfig(const std::string& yaml_text,
                                       const std::string& source,
                                       const std::string& model_name,
                                       const ModelConfig& defaults) {
  ConfigContext ctx(source);
  ctx.set_inherited_note("inherited: not set in this file");
  const std::string path = "models." + model_name;
  if (const std::string rule = CheckModelName(model_name); !rule.empty()) {
    return ctx.Error(path, "invalid model folder name: " + rule);
  }
  ASSIGN_OR_RETURN(YamlNode root, ParseYaml(yaml_text, source));

  ModelConfig config = defaults;
  config.name.clear();
  config.inputs.clear();
  config.outputs.clear();
  RETURN_IF_ERROR(internal::ReadModelFields(root, path, ModelSection::kModel,
                                            &ctx, &config));
  const std::string name_path = JoinPath(path, "name");
  if (!ctx.InFile(name_path)) {
    config.name = model_name;
  } else if (config.name != model_name) {
    return ctx.Error(name_path, "must equal the model's folder name " +
                                    Quoted(model_name) + " (got " +
                                    Quoted(config.name) + ")");
  }
  internal::NormalizeModelFields(&config);
  RETURN_IF_ERROR(
      internal::ValidateModelFields(config, path, ModelSection::kModel, ctx));
  return config;
}

StatusOr<ModelConfig> LoadModelConfigFile(const std::string& path,
                                          const std::string& model_name,
                                          const ModelConfig& defaults) {
  ASSIGN_OR_RETURN(std::string text, ReadConfigFile(path));
  return ParseModelConfig(text, path, model_name, defaults);
}

Status ValidateModelConfig(const ModelConfig& config) {
  ModelConfig normalized = config;
  internal::NormalizeModelFields(&normalized);
  return internal::ValidateModelFields(normalized, ModelPath(config.name),
                                       ModelSection::kModel, ConfigContext());
}

engine::Precision EffectivePrecision(const ModelConfig& config,
                                     bool has_quantization) {
  if (config.precision) return *config.precision;
  return has_quantization ? Precision::kInt8 : Precision::kF32;
}

// ------------------------------------------------------- graph agreement

namespace {

TensorConfig GraphInput(const engine::ModelSpec& spec) {
  TensorConfig t;
  t.name = spec.input_name;
  if (spec.input_kind == engine::InputKind::kTokenIds) {
    t.dtype = spec.input_type;
    t.dims = {-1, -1};
  } else {
    t.dtype = ElementType::kFloat32;
    t.dims = {-1, -1, spec.feature_size};
  }
  return t;
}

TensorConfig GraphOutput(const engine::ModelSpec& spec) {
  TensorConfig t;
  t.name = spec.output_name;
  t.dtype = ElementType::kFloat32;
  const int64_t width =
      (spec.has_head || !spec.layers.empty()) ? spec.output_size() : 0;
  if (spec.last_step_only) {
    t.dims = {-1, width};
  } else {
    t.dims = {-1, -1, width};
  }
  return t;
}

Status CheckTensorAgainstGraph(const TensorConfig& c, const TensorConfig& g,
                               bool is_input, const std::string& path,
                               const engine::ModelSpec& spec,
                               const ConfigContext& ctx) {
  const std::string what = is_input ? "input" : "output";
  const std::string graph_tensor = "the graph " + what + " " + Quoted(g.name);
  if (c.name != g.name) {
    const bool is_state =
        is_input
            ? (c.name == spec.initial_h_name || c.name == spec.initial_c_name)
            : (c.name == spec.final_h_name || c.name == spec.final_c_name);
    if (is_state && !c.name.empty()) {
      return ctx.Error(JoinPath(path, "name"),
                       Quoted(c.name) +
                           " is a recurrent-state tensor, which the "
                           "server manages; list the data " +
                           what + " " + Quoted(g.name) + " instead");
    }
    return ctx.Error(JoinPath(path, "name"),
                     "the graph has no data " + what + " " + Quoted(c.name) +
                         " (its " + what + " is " + Quoted(g.name) + ")");
  }
  if (c.dtype != g.dtype) {
    return ctx.Error(JoinPath(path, "dtype"),
                     std::string("must be ") + DataTypeName(g.dtype) +
                         " to match " + graph_tensor + " (got " +
                         DataTypeName(c.dtype) + ")");
  }
  if (c.dims.size() != g.dims.size()) {
    return ctx.Error(JoinPath(path, "dims"),
                     "must have " + std::to_string(g.dims.size()) +
                         " dimensions to match " + graph_tensor + " " +
                         YamlIntList(g.dims) + " (got " + YamlIntList(c.dims) +
                         ")");
  }
  for (size_t i = 0; i < g.dims.size(); ++i) {
    if (g.dims[i] != -1 && c.dims[i] != g.dims[i]) {
      return ctx.Error(IndexPath(JoinPath(path, "dims"), i),
                       "must be " + std::to_string(g.dims[i]) + " to match " +
                           graph_tensor + " " + YamlIntList(g.dims) + " (got " +
                           std::to_string(c.dims[i]) + ")");
    }
  }
  return Status::Ok();
}

}  // namespace

Status CheckConfigAgainstModel(const ModelConfig& config,
                               const engine::ModelSpec& spec) {
  const ConfigContext ctx;
  const std::string path = ModelPath(config.name);
  for (size_t i = 0; i < config.inputs.size(); ++i) {
    RETURN_IF_ERROR(CheckTensorAgainstGraph(
        config.inputs[i], GraphInput(spec), true,
        IndexPath(JoinPath(path, "inputs"), i), spec, ctx));
  }
  for (size_t i = 0; i < config.outputs.size(); ++i) {
    RETURN_IF_ERROR(CheckTensorAgainstGraph(
        config.outputs[i], GraphOutput(spec), false,
        IndexPath(JoinPath(path, "outputs"), i), spec, ctx));
  }
  if (config.batching.kind == BatchingKind::kSequence) {
    for (size_t l = 0; l < spec.layers.size(); ++l) {
      if (spec.layers[l].directions == 1) continue;
      return InvalidArgument(
          JoinPath(path, "batching.kind") +
          ": sequence batching streams a sequence in chunks, which a "
          "bidirectional layer cannot do (layer " +
          std::to_string(l) +
          " reads the whole sequence backwards); use kind dynamic");
    }
  }
  return Status::Ok();
}

Status CompleteModelConfig(const engine::ModelSpec& spec, ModelConfig* config) {
  if (config->inputs.empty()) config->inputs.push_back(GraphInput(spec));
  if (config->outputs.empty()) config->outputs.push_back(GraphOutput(spec));
  RETURN_IF_ERROR(CheckConfigAgainstModel(*config, spec));
  return ValidateModelConfig(*config);
}

ModelConfig InferModelConfig(const engine::ModelSpec& spec,
                             const std::string& name, bool has_calibration,
                             const ModelConfig& defaults) {
  ModelConfig config = defaults;
  config.name = name;
  config.inputs = {GraphInput(spec)};
  config.outputs = {GraphOutput(spec)};
  if (!config.precision) {
    config.precision = has_calibration ? Precision::kInt8 : Precision::kF32;
  }
  return config;
}

std::string FormatModelConfigYaml(const ModelConfig& config, bool comments) {
  YamlWriter out(comments);
  internal::WriteModelFields(config, ModelSection::kModel, 0, &out);
  return out.text();
}

}  // namespace rnnserve::config
