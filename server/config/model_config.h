// ModelConfig: one served model's configuration, `<repo>/<model>/config.yaml`
// (SPEC §3), and its auto-completion from an imported ONNX graph.
//
// A config goes through three steps before anything is built, as Triton's
// model_config_utils does:
//   1. parse    YAML -> fields; wrong types and unknown keys are errors;
//   2. normalize  fields the file does not set keep the defaults passed in
//               (the server's `model_defaults`, themselves on top of the
//               built-in defaults below); the name defaults to the folder
//               name; preferred batch sizes and versions are sorted;
//   3. validate every field and the rules across fields.
// Then, once the repository has imported the graph, CompleteModelConfig()
// fills what only the graph knows (inputs, outputs, the precision when
// unset) and checks the config against it.
//
// Every error is INVALID_ARGUMENT and names the field's full path,
// `models.<name>.<field>`, and the rule, e.g.
//   charlm/config.yaml:12:25: models.charlm.batching.max_queue_delay_us:
//   must be >= 0 (got -5)
//
// Example config.yaml (every key optional):
//   name: charlm
//   inputs:
//     - {name: tokens, dtype: INT64, dims: [-1, -1]}
//   outputs:
//     - {name: logits, dtype: FP32, dims: [-1, -1, 97]}
//   precision: int8
//   version_policy: {latest: {num_versions: 1}}
//   calibration: {method: minmax, file: calibration.npy}
//   max_sequence_length: 2048
//   batching: {kind: dynamic, max_batch_size: 64, max_queue_delay_us: 200}
//   drift: {sample_rate: 0.01, action: alert}
//
// All functions are thread-safe (no shared state); configs are plain values.
#ifndef RNNSERVE_CONFIG_MODEL_CONFIG_H_
#define RNNSERVE_CONFIG_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "server/common/status.h"
#include "server/engine/model_spec.h"
#include "server/engine/quantization.h"
#include "server/engine/rnn_model.h"

namespace rnnserve::config {

// One input or output tensor as the server exposes it (KServe V2 names).
// `dims` is the full shape, batch first, batch-major whatever the graph's
// own layout (the engine converts sequence-major graphs): -1 is a variable
// dimension. Inputs are [N, T, F] FP32 features or [N, T] INT64/INT32 token
// ids; outputs are FP32 [N, T, O] (every step) or [N, O] (last step only).
// The batch dimension is always -1; T may be fixed (then every request must
// have exactly that many steps).
struct TensorConfig {
  std::string name;
  engine::ElementType dtype = engine::ElementType::kFloat32;
  std::vector<int64_t> dims;
};

// "FP32", "INT64", "INT32" (the Open Inference Protocol's names).
const char* DataTypeName(engine::ElementType type);
StatusOr<engine::ElementType> ParseDataType(const std::string& name);

// Which versions (the numeric folders under the model's folder) are served.
// YAML: `{latest: {num_versions: N}}`, `{all: {}}`,
// `{specific: {versions: [1, 3]}}`; the scalars `latest` and `all` are
// shorthands.
struct VersionPolicy {
  enum class Kind { kLatest, kAll, kSpecific };
  Kind kind = Kind::kLatest;
  // kLatest: serve the N highest versions. More versions keep rollbacks
  // instant but multiply memory.
  int num_versions = 1;
  // kSpecific: the version numbers (>= 1), sorted, unique.
  std::vector<int64_t> versions;
};
const char* VersionPolicyKindName(VersionPolicy::Kind kind);

// How int8 ranges are computed from the calibration data at load (unused
// when the version folder has a quantized artifact, or precision is not int8).
struct CalibrationConfig {
  // minmax is fastest and never clips calibration data; percentile ignores
  // outliers (better resolution, some clipping); mse searches the clipping
  // range with the least error (slowest load).
  engine::CalibrationMethod method = engine::CalibrationMethod::kMinMax;
  // NumPy file in the version folder (a relative path is resolved there).
  std::string file = "calibration.npy";
  // For method percentile, in (50, 100]: lower clips more outliers.
  double percentile = 99.99;
  // Per-output-channel weight scales: more accurate, same speed.
  bool per_channel = true;
};

enum class BatchingKind {
  kDynamic,   // stateless: whole sequences from different requests batched
  kSequence,  // stateful: chunks of live streams batched, (h, c) kept
};
const char* BatchingKindName(BatchingKind kind);

// The batcher in front of the model. The YAML section is flat
// (batching.max_queue_delay_us); a key of the other kind is rejected in a
// model's config.yaml, and allowed in model_defaults, which serves both.
struct BatchingConfig {
  BatchingKind kind = BatchingKind::kDynamic;

  // Both kinds.
  // Largest batch run at once: bigger batches raise throughput under load
  // and cost memory and per-batch latency.
  int max_batch_size = 64;
  // How long the oldest queued request may wait for a fuller batch. 0
  // dispatches as soon as a worker is free (batches still form from what
  // queued meanwhile); more trades low-load latency for larger batches.
  int64_t max_queue_delay_us = 0;
  // Requests (or stream chunks) waiting, >= max_batch_size; beyond it a
  // request is refused with RESOURCE_EXHAUSTED at once. Larger absorbs
  // bursts, smaller bounds queueing latency and memory.
  int max_queue_size = 1024;
  // Batch only requests of equal sequence length together, so no padding is
  // computed and padding can never change a result. Off lets lengths mix
  // (fuller batches, but the batcher must pad and mask).
  bool group_by_length = true;

  // kDynamic only.
  // Batch sizes dispatched at once when reached (sorted, unique, each <=
  // max_batch_size); empty means max_batch_size and the delay decide.
  std::vector<int64_t> preferred_batch_sizes;

  // kSequence only.
  // A stream with no chunk for this long is freed; a later chunk for it gets
  // FAILED_PRECONDITION. Longer tolerates slow clients, costs state memory.
  int64_t max_sequence_idle_us = 60'000'000;
  // Live streams held at once (each holds its (h, c)); a new stream over the
  // bound gets RESOURCE_EXHAUSTED.
  int max_active_sequences = 1024;
};

enum class DriftAction {
  kAlert,        // export metrics and log; the precision never changes
  kFallbackF32,  // also switch to f32 while drift is over a threshold
};
const char* DriftActionName(DriftAction action);

// Limits on the int8-vs-f32 divergence of sampled requests, averaged over
// the recent samples; an unset threshold is not checked. Passing any set
// threshold (with at least min_samples samples) triggers the action.
struct DriftThresholds {
  std::optional<double> max_abs_error;      // >= 0, output units
  std::optional<double> mean_abs_error;     // >= 0, output units
  std::optional<double> relative_l2;        // >= 0, ||q - f|| / ||f||
  std::optional<double> top1_disagreement;  // in [0, 1], classifier outputs
  std::optional<double> kl;                 // >= 0 nats, classifier outputs
  std::optional<double> clip_fraction;      // in [0, 1], inputs clipped
};

// Live accuracy-drift monitoring (SPEC §5).
struct DriftConfig {
  // Fraction of requests re-run in f32 off the critical path, in [0, 1].
  // Higher gives faster, surer drift numbers at more background CPU.
  double sample_rate = 0.0;
  DriftThresholds thresholds;
  // Samples needed before any threshold can trigger the action: fewer
  // reacts faster, more avoids acting on noise.
  int min_samples = 100;
  // Recovery band: after triggering, the action is undone only when every
  // metric is below (1 - hysteresis) x its threshold; in [0, 1). Higher
  // avoids flapping between precisions.
  double hysteresis = 0.2;
  DriftAction action = DriftAction::kAlert;
  // Sampled requests waiting for their f32 re-run; beyond it samples are
  // shed (and counted) so the critical path never waits.
  int queue_size = 64;
  // Recent live input sequences kept for live recalibration; 0 disables
  // recalibration. More gives better ranges, costs memory.
  int reservoir_size = 256;
};

// Execution overrides for this model; unset means the server's settings.
struct InstanceConfig {
  // Batches of this model that may run at once on the worker pool (>= 1).
  std::optional<int> count;
  // OpenMP threads per batch (>= 1); default server.intra_op_threads.
  std::optional<int> intra_op_threads;
};

struct ModelConfig {
  // Defaults to the model's folder name; if given it must equal it.
  std::string name;
  // Empty means "from the graph" (CompleteModelConfig); otherwise exactly
  // one of each.
  std::vector<TensorConfig> inputs;
  std::vector<TensorConfig> outputs;
  // Unset: int8 when calibration data or a quantized artifact is available,
  // else f32 (see EffectivePrecision). int8 is ~3-4x faster than f32 at a
  // small, monitored accuracy cost; bf16 needs AVX-512.
  std::optional<engine::Precision> precision;
  VersionPolicy version_policy;
  CalibrationConfig calibration;
  // Longest sequence (T) a request may carry; longer is INVALID_ARGUMENT.
  // Bounds per-request memory and compute.
  int max_sequence_length = 2048;
  BatchingConfig batching;
  DriftConfig drift;
  InstanceConfig instance;
};

// Parses a model's config.yaml. `model_name` is the model's folder name
// (used in every error path and as the default name), `source` names the
// text in messages (usually its path), and `defaults` supplies every field
// the file does not set (pass ServerConfig::model_defaults; its name, inputs
// and outputs are ignored). An empty file gives `defaults` with the name.
StatusOr<ModelConfig> ParseModelConfig(const std::string& yaml_text,
                                       const std::string& source,
                                       const std::string& model_name,
                                       const ModelConfig& defaults = {});

// Reads `path` (NOT_FOUND if missing) and parses it.
StatusOr<ModelConfig> LoadModelConfigFile(const std::string& path,
                                          const std::string& model_name,
                                          const ModelConfig& defaults = {});

// Validates a config built in code (ParseModelConfig already does this).
Status ValidateModelConfig(const ModelConfig& config);

// Rules for model names (folder names, startup_models): 1-128 characters
// from [A-Za-z0-9_.-], not "." or "..". Returns "" or the rule broken.
std::string CheckModelName(const std::string& name);

// The precision a model runs in: its own, else int8 when `has_quantization`
// (calibration data or a quantized artifact exists), else f32.
engine::Precision EffectivePrecision(const ModelConfig& config,
                                     bool has_quantization);

// The configuration the repository serves a model folder with when it has
// no config.yaml, as Triton auto-completes ONNX configs: `defaults` (the
// server's model_defaults) named `name`, with the graph's input and output
// (names, dtypes, dims as TensorConfig describes) and precision int8 when
// `has_calibration` (or an artifact) else f32 — unless `defaults` sets one.
ModelConfig InferModelConfig(const engine::ModelSpec& spec,
                             const std::string& name, bool has_calibration,
                             const ModelConfig& defaults = {});

// Reports the first disagreement between a config and the imported graph:
// an input/output name the graph's data input/output does not have (initial
// and final state tensors are managed by the server and cannot be listed),
// a dtype, a rank or a fixed dimension, naming the field
// ("models.charlm.outputs[0].dims[2]: must be 97 to match the graph output
// 'logits' (got 96)"). Inputs/outputs left empty are not checked.
Status CheckConfigAgainstModel(const ModelConfig& config,
                               const engine::ModelSpec& spec);

// Fills what only the graph knows — empty inputs/outputs from the graph —
// then runs CheckConfigAgainstModel and ValidateModelConfig. The precision
// is left as configured (unset stays unset; see EffectivePrecision), since
// only the repository knows whether calibration data or an artifact exists.
Status CompleteModelConfig(const engine::ModelSpec& spec, ModelConfig* config);

// The config as YAML that ParseModelConfig reads back to the same values;
// with `comments`, each key is preceded by a line saying what it does.
std::string FormatModelConfigYaml(const ModelConfig& config,
                                  bool comments = false);

}  // namespace rnnserve::config

#endif  // RNNSERVE_CONFIG_MODEL_CONFIG_H_
