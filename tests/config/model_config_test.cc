// Model config.yaml: defaults, a full file, every rule's error (path and
// rule), inheritance from model_defaults, and agreement with a graph.
#include "server/config/model_config.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/config/config_test_util.h"

namespace rnnserve::config {
namespace {

using engine::CalibrationMethod;
using engine::ElementType;
using engine::Precision;
using testing::IsInvalidArgumentWith;

constexpr char kSource[] = "charlm/config.yaml";

StatusOr<ModelConfig> Parse(const std::string& yaml,
                            const ModelConfig& defaults = {}) {
  return ParseModelConfig(yaml, kSource, "charlm", defaults);
}

TEST(ModelConfigTest, BuiltInDefaults) {
  const ModelConfig c;
  EXPECT_EQ(c.name, "");
  EXPECT_TRUE(c.inputs.empty());
  EXPECT_TRUE(c.outputs.empty());
  EXPECT_FALSE(c.precision.has_value());
  EXPECT_EQ(c.version_policy.kind, VersionPolicy::Kind::kLatest);
  EXPECT_EQ(c.version_policy.num_versions, 1);
  EXPECT_TRUE(c.version_policy.versions.empty());
  EXPECT_EQ(c.calibration.method, CalibrationMethod::kMinMax);
  EXPECT_EQ(c.calibration.file, "calibration.npy");
  EXPECT_DOUBLE_EQ(c.calibration.percentile, 99.99);
  EXPECT_TRUE(c.calibration.per_channel);
  EXPECT_EQ(c.max_sequence_length, 2048);
  EXPECT_EQ(c.batching.kind, BatchingKind::kDynamic);
  EXPECT_EQ(c.batching.max_batch_size, 64);
  EXPECT_EQ(c.batching.max_queue_delay_us, 0);
  EXPECT_EQ(c.batching.max_queue_size, 1024);
  EXPECT_TRUE(c.batching.group_by_length);
  EXPECT_TRUE(c.batching.preferred_batch_sizes.empty());
  EXPECT_EQ(c.batching.max_sequence_idle_us, 60'000'000);
  EXPECT_EQ(c.batching.max_active_sequences, 1024);
  EXPECT_DOUBLE_EQ(c.drift.sample_rate, 0.0);
  EXPECT_FALSE(c.drift.thresholds.max_abs_error.has_value());
  EXPECT_FALSE(c.drift.thresholds.mean_abs_error.has_value());
  EXPECT_FALSE(c.drift.thresholds.relative_l2.has_value());
  EXPECT_FALSE(c.drift.thresholds.top1_disagreement.has_value());
  EXPECT_FALSE(c.drift.thresholds.kl.has_value());
  EXPECT_FALSE(c.drift.thresholds.clip_fraction.has_value());
  EXPECT_EQ(c.drift.min_samples, 100);
  EXPECT_DOUBLE_EQ(c.drift.hysteresis, 0.2);
  EXPECT_EQ(c.drift.action, DriftAction::kAlert);
  EXPECT_EQ(c.drift.queue_size, 64);
  EXPECT_EQ(c.drift.reservoir_size, 256);
  EXPECT_FALSE(c.instance.count.has_value());
  EXPECT_FALSE(c.instance.intra_op_threads.has_value());
}

TEST(ModelConfigTest, EmptyFileGivesDefaultsNamedAfterTheFolder) {
  for (const char* text : {"", "# only a comment\n", "~\n"}) {
    auto c = Parse(text);
    ASSERT_TRUE(c.ok()) << text << ": " << c.status().ToString();
    EXPECT_EQ(c->name, "charlm");
    EXPECT_EQ(c->batching.max_batch_size, 64);
    EXPECT_FALSE(c->precision.has_value());
  }
}

TEST(ModelConfigTest, FullFileRoundsToTheExpectedStruct) {
  const char* yaml = R"(
name: charlm
inputs:
  - name: features
    dtype: FP32
    dims: [-1, 50, 40]
outputs:
  - {name: scores, dtype: FP32, dims: [-1, 12]}
precision: bf16
version_policy:
  specific: {versions: [3, 1]}
calibration:
  method: percentile
  file: calib/other.npy
  percentile: 99.9
  per_channel: false
max_sequence_length: 500
batching:
  kind: sequence
  max_batch_size: 16
  max_queue_delay_us: 250
  max_queue_size: 64
  group_by_length: false
  max_sequence_idle_us: 5000000
  max_active_sequences: 300
drift:
  sample_rate: 0.25
  thresholds:
    max_abs_error: 0.5
    mean_abs_error: 0.05
    relative_l2: 0.1
    top1_disagreement: 0.02
    kl: 0.01
    clip_fraction: 0.001
  min_samples: 20
  hysteresis: 0.5
  action: fallback_f32
  queue_size: 8
  reservoir_size: 0
instance:
  count: 2
  intra_op_threads: 4
)";
  auto c = Parse(yaml);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->name, "charlm");
  ASSERT_EQ(c->inputs.size(), 1u);
  EXPECT_EQ(c->inputs[0].name, "features");
  EXPECT_EQ(c->inputs[0].dtype, ElementType::kFloat32);
  EXPECT_EQ(c->inputs[0].dims, (std::vector<int64_t>{-1, 50, 40}));
  ASSERT_EQ(c->outputs.size(), 1u);
  EXPECT_EQ(c->outputs[0].name, "scores");
  EXPECT_EQ(c->outputs[0].dims, (std::vector<int64_t>{-1, 12}));
  EXPECT_EQ(c->precision, Precision::kBf16);
  EXPECT_EQ(c->version_policy.kind, VersionPolicy::Kind::kSpecific);
  EXPECT_EQ(c->version_policy.versions,
            (std::vector<int64_t>{1, 3}));  // sorted
  EXPECT_EQ(c->calibration.method, CalibrationMethod::kPercentile);
  EXPECT_EQ(c->calibration.file, "calib/other.npy");
  EXPECT_DOUBLE_EQ(c->calibration.percentile, 99.9);
  EXPECT_FALSE(c->calibration.per_channel);
  EXPECT_EQ(c->max_sequence_length, 500);
  EXPECT_EQ(c->batching.kind, BatchingKind::kSequence);
  EXPECT_EQ(c->batching.max_batch_size, 16);
  EXPECT_EQ(c->batching.max_queue_delay_us, 250);
  EXPECT_EQ(c->batching.max_queue_size, 64);
  EXPECT_FALSE(c->batching.group_by_length);
  EXPECT_EQ(c->batching.max_sequence_idle_us, 5'000'000);
  EXPECT_EQ(c->batching.max_active_sequences, 300);
  EXPECT_DOUBLE_EQ(c->drift.sample_rate, 0.25);
  EXPECT_EQ(c->drift.thresholds.max_abs_error, 0.5);
  EXPECT_EQ(c->drift.thresholds.mean_abs_error, 0.05);
  EXPECT_EQ(c->drift.thresholds.relative_l2, 0.1);
  EXPECT_EQ(c->drift.thresholds.top1_disagreement, 0.02);
  EXPECT_EQ(c->drift.thresholds.kl, 0.01);
  EXPECT_EQ(c->drift.thresholds.clip_fraction, 0.001);
  EXPECT_EQ(c->drift.min_samples, 20);
  EXPECT_DOUBLE_EQ(c->drift.hysteresis, 0.5);
  EXPECT_EQ(c->drift.action, DriftAction::kFallbackF32);
  EXPECT_EQ(c->drift.queue_size, 8);
  EXPECT_EQ(c->drift.reservoir_size, 0);
  EXPECT_EQ(c->instance.count, 2);
  EXPECT_EQ(c->instance.intra_op_threads, 4);

  // Written back out, it parses to the same configuration.
  const std::string text = FormatModelConfigYaml(*c, /*comments=*/true);
  auto again = Parse(text);
  ASSERT_TRUE(again.ok()) << again.status().ToString() << "\n" << text;
  EXPECT_EQ(FormatModelConfigYaml(*again), FormatModelConfigYaml(*c));
}

TEST(ModelConfigTest, VersionPolicyForms) {
  struct Case {
    const char* yaml;
    VersionPolicy::Kind kind;
    int num_versions;
  };
  for (const Case& t : std::vector<Case>{
           {"version_policy: latest", VersionPolicy::Kind::kLatest, 1},
           {"version_policy: all", VersionPolicy::Kind::kAll, 1},
           {"version_policy: {all: {}}", VersionPolicy::Kind::kAll, 1},
           {"version_policy: {all: }", VersionPolicy::Kind::kAll, 1},
           {"version_policy: {latest: {}}", VersionPolicy::Kind::kLatest, 1},
           {"version_policy: {latest: {num_versions: 3}}",
            VersionPolicy::Kind::kLatest, 3}}) {
    auto c = Parse(t.yaml);
    ASSERT_TRUE(c.ok()) << t.yaml << ": " << c.status().ToString();
    EXPECT_EQ(c->version_policy.kind, t.kind) << t.yaml;
    EXPECT_EQ(c->version_policy.num_versions, t.num_versions) << t.yaml;
  }
}

TEST(ModelConfigTest, ModelDefaultsFillWhatTheFileLeavesOut) {
  ModelConfig defaults;
  defaults.precision = Precision::kF32;
  defaults.batching.max_batch_size = 32;
  defaults.batching.max_queue_delay_us = 500;
  defaults.batching.max_active_sequences = 7;
  defaults.drift.sample_rate = 0.05;
  defaults.max_sequence_length = 100;
  defaults.name = "ignored";
  defaults.inputs = {{"ignored", ElementType::kFloat32, {-1, -1, 3}}};

  auto c =
      Parse("batching: {max_queue_delay_us: 10}\nprecision: auto\n", defaults);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->name, "charlm");
  EXPECT_TRUE(c->inputs.empty());
  EXPECT_FALSE(c->precision.has_value());         // "auto" overrides f32
  EXPECT_EQ(c->batching.max_batch_size, 32);      // inherited
  EXPECT_EQ(c->batching.max_queue_delay_us, 10);  // the file's
  EXPECT_EQ(c->batching.max_active_sequences, 7);
  EXPECT_DOUBLE_EQ(c->drift.sample_rate, 0.05);
  EXPECT_EQ(c->max_sequence_length, 100);
}

TEST(ModelConfigTest, AnInheritedValueThatBreaksARuleSaysSo) {
  ModelConfig defaults;
  defaults.batching.preferred_batch_sizes = {16, 64};
  auto c = Parse("batching: {max_batch_size: 32}\n", defaults);
  EXPECT_TRUE(IsInvalidArgumentWith(
      c.status(),
      {"models.charlm.batching.preferred_batch_sizes[1]: must be <= "
       "batching.max_batch_size (32) (got 64)",
       "inherited: not set in this file"}));
}

TEST(ModelConfigTest, ValuesOfEveryYamlSpelling) {
  auto c = Parse(
      "batching: {max_batch_size: \"8\", max_queue_delay_us: +7, "
      "group_by_length: False}\ndrift: {sample_rate: 1e-2, hysteresis: 0}\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->batching.max_batch_size, 8);
  EXPECT_EQ(c->batching.max_queue_delay_us, 7);
  EXPECT_FALSE(c->batching.group_by_length);
  EXPECT_DOUBLE_EQ(c->drift.sample_rate, 0.01);
  EXPECT_DOUBLE_EQ(c->drift.hysteresis, 0.0);
}

struct BadCase {
  const char* name;
  const char* yaml;
  const char* expected;  // "<path>: <rule>" as it must appear
};

class BadModelConfigTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadModelConfigTest, NamesThePathAndTheRule) {
  const BadCase& t = GetParam();
  auto c = Parse(t.yaml);
  EXPECT_TRUE(IsInvalidArgumentWith(c.status(), {kSource, t.expected}))
      << t.yaml;
}

const BadCase kBadModelCases[] = {
    {"UnknownTopKey", "max_batch_size: 8\n",
     "models.charlm.max_batch_size: unknown key"},
    {"TypoSuggestsTheKey", "batching:\n  max_queue_delay: 5\n",
     "models.charlm.batching.max_queue_delay: unknown key (did you mean "
     "'max_queue_delay_us'?)"},
    {"NegativeDelay", "batching:\n  max_queue_delay_us: -5\n",
     "charlm/config.yaml:2:23: models.charlm.batching.max_queue_delay_us: "
     "must be >= 0 (got -5)"},
    {"StringForInt", "batching: {max_batch_size: lots}\n",
     "models.charlm.batching.max_batch_size: must be an integer (got 'lots')"},
    {"FloatForInt", "batching: {max_batch_size: 8.5}\n",
     "models.charlm.batching.max_batch_size: must be an integer (got '8.5')"},
    {"ListForInt", "batching: {max_batch_size: [8]}\n",
     "models.charlm.batching.max_batch_size: must be an integer (got a list)"},
    {"IntOverflow", "max_sequence_length: 99999999999\n",
     "models.charlm.max_sequence_length: must be an integer in "
     "[-2147483648, 2147483647] (got 99999999999)"},
    {"NullForInt", "max_sequence_length:\n",
     "models.charlm.max_sequence_length: must be an integer (got a null)"},
    {"ZeroBatch", "batching: {max_batch_size: 0}\n",
     "models.charlm.batching.max_batch_size: must be >= 1 (got 0)"},
    {"HugeDelay", "batching: {max_queue_delay_us: 20000000}\n",
     "models.charlm.batching.max_queue_delay_us: must be <= 10000000 (got "
     "20000000)"},
    {"PreferredOverMax",
     "batching: {max_batch_size: 64, preferred_batch_sizes: [8, 128]}\n",
     "models.charlm.batching.preferred_batch_sizes[1]: must be <= "
     "batching.max_batch_size (64) (got 128)"},
    {"PreferredZero", "batching: {preferred_batch_sizes: [0]}\n",
     "models.charlm.batching.preferred_batch_sizes[0]: must be >= 1 (got 0)"},
    {"PreferredTwice", "batching: {preferred_batch_sizes: [8, 8]}\n",
     "models.charlm.batching.preferred_batch_sizes[1]: batch size 8 is listed "
     "twice"},
    {"QueueSmallerThanBatch",
     "batching: {max_batch_size: 64, max_queue_size: 8}\n",
     "models.charlm.batching.max_queue_size: must be >= "
     "batching.max_batch_size "
     "(64) (got 8)"},
    {"BadBatchingKind", "batching: {kind: static}\n",
     "models.charlm.batching.kind: must be one of dynamic, sequence (got "
     "'static')"},
    {"SequenceNeedsActiveSequences",
     "batching: {kind: sequence, max_active_sequences: 0}\n",
     "models.charlm.batching.max_active_sequences: must be >= 1 (got 0)"},
    {"SequenceIdleTooShort",
     "batching: {kind: sequence, max_sequence_idle_us: 10}\n",
     "models.charlm.batching.max_sequence_idle_us: must be >= 1000 (got 10)"},
    {"DynamicKeyOnSequence",
     "batching: {kind: sequence, preferred_batch_sizes: [4]}\n",
     "models.charlm.batching.preferred_batch_sizes: applies only to "
     "batching.kind dynamic (kind is sequence)"},
    {"SequenceKeyOnDynamic", "batching: {max_active_sequences: 4}\n",
     "models.charlm.batching.max_active_sequences: applies only to "
     "batching.kind sequence (kind is dynamic)"},
    {"BatchingNotAMap", "batching: dynamic\n",
     "models.charlm.batching: must be a map of key: value (got a scalar)"},
    {"SampleRateAboveOne", "drift: {sample_rate: 1.5}\n",
     "models.charlm.drift.sample_rate: must be in [0, 1] (got 1.5)"},
    {"SampleRateNegative", "drift: {sample_rate: -0.1}\n",
     "models.charlm.drift.sample_rate: must be in [0, 1] (got -0.1)"},
    {"SampleRateNan", "drift: {sample_rate: .nan}\n",
     "models.charlm.drift.sample_rate: must be in [0, 1] (got nan)"},
    {"SampleRateText", "drift: {sample_rate: often}\n",
     "models.charlm.drift.sample_rate: must be a number (got 'often')"},
    {"NegativeThreshold", "drift: {thresholds: {kl: -1}}\n",
     "models.charlm.drift.thresholds.kl: must be >= 0 (got -1)"},
    {"InfiniteThreshold", "drift: {thresholds: {relative_l2: .inf}}\n",
     "models.charlm.drift.thresholds.relative_l2: must be a finite number (got "
     "inf)"},
    {"Top1AboveOne", "drift: {thresholds: {top1_disagreement: 2}}\n",
     "models.charlm.drift.thresholds.top1_disagreement: must be in [0, 1] (got "
     "2)"},
    {"UnknownThreshold", "drift: {thresholds: {l2: 0.1}}\n",
     "models.charlm.drift.thresholds.l2: unknown key"},
    {"HysteresisOne", "drift: {hysteresis: 1}\n",
     "models.charlm.drift.hysteresis: must be in [0, 1) (got 1)"},
    {"MinSamplesZero", "drift: {min_samples: 0}\n",
     "models.charlm.drift.min_samples: must be >= 1 (got 0)"},
    {"BadDriftAction", "drift: {action: panic}\n",
     "models.charlm.drift.action: must be one of alert, fallback_f32 (got "
     "'panic')"},
    {"FallbackWithoutThreshold",
     "drift: {sample_rate: 0.1, action: fallback_f32}\n",
     "models.charlm.drift.thresholds: drift.action fallback_f32 needs at least "
     "one threshold"},
    {"FallbackWithoutSampling",
     "drift: {action: fallback_f32, thresholds: {kl: 0.1}}\n",
     "models.charlm.drift.sample_rate: must be > 0 when drift.action is "
     "fallback_f32 (got 0)"},
    {"FallbackFromF32",
     "precision: f32\ndrift: {sample_rate: 0.1, action: fallback_f32, "
     "thresholds: {kl: 0.1}}\n",
     "models.charlm.drift.action: fallback_f32 needs precision int8 or bf16 "
     "(precision is f32)"},
    {"BadPrecision", "precision: int4\n",
     "models.charlm.precision: must be one of auto, int8, f32, bf16 (got "
     "'int4')"},
    {"BadCalibrationMethod", "calibration: {method: kmeans}\n",
     "models.charlm.calibration.method: must be one of minmax, percentile, mse "
     "(got 'kmeans')"},
    {"PercentileTooLow", "calibration: {percentile: 40}\n",
     "models.charlm.calibration.percentile: must be in (50, 100] (got 40)"},
    {"EmptyCalibrationFile", "calibration: {file: ''}\n",
     "models.charlm.calibration.file: must not be empty"},
    {"NotABool", "calibration: {per_channel: maybe}\n",
     "models.charlm.calibration.per_channel: must be true or false (got "
     "'maybe')"},
    {"ZeroSequenceLength", "max_sequence_length: 0\n",
     "models.charlm.max_sequence_length: must be >= 1 (got 0)"},
    {"InstanceCountZero", "instance: {count: 0}\n",
     "models.charlm.instance.count: must be >= 1 (got 0)"},
    {"VersionZero", "version_policy: {specific: {versions: [2, 0]}}\n",
     "models.charlm.version_policy.specific.versions[0]: version numbers must "
     "be >= 1 (got 0)"},
    {"NoVersions", "version_policy: {specific: {versions: []}}\n",
     "models.charlm.version_policy.specific.versions: must list at least one "
     "version"},
    {"VersionTwice", "version_policy: {specific: {versions: [2, 2]}}\n",
     "models.charlm.version_policy.specific.versions[1]: version 2 is listed "
     "twice"},
    {"LatestZero", "version_policy: {latest: {num_versions: 0}}\n",
     "models.charlm.version_policy.latest.num_versions: must be >= 1 (got 0)"},
    {"TwoPolicies", "version_policy: {latest: {}, all: {}}\n",
     "models.charlm.version_policy: must set exactly one of latest, all, "
     "specific (got latest and all)"},
    {"UnknownPolicy", "version_policy: newest\n",
     "models.charlm.version_policy: must be latest, all,"},
    {"NameMismatch", "name: other\n",
     "models.charlm.name: must equal the model's folder name 'charlm' (got "
     "'other')"},
    {"BadDtype", "inputs: [{name: x, dtype: FP16, dims: [-1, -1, 4]}]\n",
     "models.charlm.inputs[0].dtype: must be one of FP32, INT64, INT32 (got "
     "'FP16')"},
    {"MissingDims", "inputs: [{name: x, dtype: FP32}]\n",
     "models.charlm.inputs[0].dims: must be set"},
    {"TokenRank", "inputs: [{name: t, dtype: INT64, dims: [-1, -1, 1]}]\n",
     "models.charlm.inputs[0].dims: must have 2 dimensions for a INT64 input"},
    {"ZeroDim", "inputs: [{name: x, dtype: FP32, dims: [-1, 0, 4]}]\n",
     "models.charlm.inputs[0].dims[1]: must be -1 (variable) or >= 1 (got 0)"},
    {"FixedBatch", "inputs: [{name: x, dtype: FP32, dims: [8, -1, 4]}]\n",
     "models.charlm.inputs[0].dims[0]: the batch dimension must be -1 (got 8)"},
    {"StepsOverLimit",
     "max_sequence_length: 10\ninputs: [{name: x, dtype: FP32, dims: [-1, 20, "
     "4]}]\n",
     "models.charlm.inputs[0].dims[1]: must be <= max_sequence_length (10) "
     "(got 20)"},
    {"IntegerOutput", "outputs: [{name: y, dtype: INT64, dims: [-1, 3]}]\n",
     "models.charlm.outputs[0].dtype: must be FP32: outputs are float (got "
     "INT64)"},
    {"TwoInputs",
     "inputs:\n  - {name: a, dtype: FP32, dims: [-1, -1, 4]}\n  - {name: b, "
     "dtype: FP32, dims: [-1, -1, 4]}\n",
     "models.charlm.inputs: must list exactly one input (got 2)"},
    {"InputsAsMap", "inputs: {name: x}\n",
     "models.charlm.inputs: must be a list of {name, dtype, dims} (got a map)"},
    {"UnknownTensorKey",
     "inputs: [{name: x, dtype: FP32, dims: [-1, -1, 4], shape: [1]}]\n",
     "models.charlm.inputs[0].shape: unknown key"},
    {"TopLevelList", "- name: charlm\n",
     "models.charlm: must be a map of key: value (got a list)"},
    {"MalformedYaml",
     "precision: int8\nbatching:\n  kind: dynamic\n max_batch_size: 3\n",
     "charlm/config.yaml:4:2: invalid YAML"},
    {"DuplicateKey", "precision: int8\nprecision: f32\n",
     "charlm/config.yaml:2:1: invalid YAML: duplicate key 'precision'"},
};

INSTANTIATE_TEST_SUITE_P(Cases, BadModelConfigTest,
                         ::testing::ValuesIn(kBadModelCases),
                         [](const auto& info) { return info.param.name; });

TEST(ModelConfigTest, BadFolderName) {
  auto c = ParseModelConfig("", "x/config.yaml", "my model", {});
  EXPECT_TRUE(IsInvalidArgumentWith(
      c.status(), {"models.my model: invalid model folder name"}));
}

TEST(ModelConfigTest, LoadMissingFileIsNotFound) {
  auto c = LoadModelConfigFile("/nonexistent/config.yaml", "x");
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
}

TEST(ModelConfigTest, ValidateModelConfigBuiltInCode) {
  ModelConfig c;
  c.name = "m";
  EXPECT_TRUE(ValidateModelConfig(c).ok());
  c.batching.max_queue_delay_us = -5;
  EXPECT_TRUE(IsInvalidArgumentWith(
      ValidateModelConfig(c),
      {"models.m.batching.max_queue_delay_us: must be >= 0 (got -5)"}));
  c = ModelConfig();
  c.name = "";
  EXPECT_TRUE(IsInvalidArgumentWith(
      ValidateModelConfig(c), {"models.<unnamed>.name: must not be empty"}));
}

TEST(ModelConfigTest, EffectivePrecision) {
  ModelConfig c;
  EXPECT_EQ(EffectivePrecision(c, true), Precision::kInt8);
  EXPECT_EQ(EffectivePrecision(c, false), Precision::kF32);
  c.precision = Precision::kBf16;
  EXPECT_EQ(EffectivePrecision(c, true), Precision::kBf16);
}

TEST(ModelConfigTest, CheckModelName) {
  EXPECT_EQ(CheckModelName("charlm-v2_1.0"), "");
  EXPECT_NE(CheckModelName(""), "");
  EXPECT_NE(CheckModelName(".."), "");
  EXPECT_NE(CheckModelName("a/b"), "");
  EXPECT_NE(CheckModelName(std::string(129, 'a')), "");
}

// ------------------------------------------------- graph auto-completion

engine::RnnLayerSpec Layer(int input, int hidden, int directions) {
  engine::RnnLayerSpec l;
  l.input_size = input;
  l.hidden_size = hidden;
  l.directions = directions;
  return l;
}

// Float features [N, T, 40] -> bidirectional LSTM(64) on every step.
engine::ModelSpec FeatureSpec() {
  engine::ModelSpec s;
  s.input_name = "mel";
  s.input_kind = engine::InputKind::kFeatures;
  s.input_type = ElementType::kFloat32;
  s.feature_size = 40;
  s.initial_h_name = "h0";
  s.output_name = "frames";
  s.final_h_name = "h_n";
  s.layers = {Layer(40, 64, 2)};
  return s;
}

// int32 token ids -> embedding(16) -> GRU(32) -> last step -> Linear(32, 5).
engine::ModelSpec TokenSpec() {
  engine::ModelSpec s;
  s.input_name = "ids";
  s.input_kind = engine::InputKind::kTokenIds;
  s.input_type = ElementType::kInt32;
  s.feature_size = 16;
  s.has_embedding = true;
  s.embedding.vocab_size = 100;
  s.embedding.dim = 16;
  s.output_name = "probs";
  s.layers = {Layer(16, 32, 1)};
  s.layers[0].cell = engine::CellType::kGru;
  s.last_step_only = true;
  s.has_head = true;
  s.head.in_features = 32;
  s.head.out_features = 5;
  s.activation = engine::OutputActivation::kSoftmax;
  return s;
}

TEST(InferModelConfigTest, FeaturesPerStepOutput) {
  const ModelConfig c = InferModelConfig(FeatureSpec(), "kws", false);
  EXPECT_EQ(c.name, "kws");
  ASSERT_EQ(c.inputs.size(), 1u);
  EXPECT_EQ(c.inputs[0].name, "mel");
  EXPECT_EQ(c.inputs[0].dtype, ElementType::kFloat32);
  EXPECT_EQ(c.inputs[0].dims, (std::vector<int64_t>{-1, -1, 40}));
  ASSERT_EQ(c.outputs.size(), 1u);
  EXPECT_EQ(c.outputs[0].name, "frames");
  EXPECT_EQ(c.outputs[0].dtype, ElementType::kFloat32);
  EXPECT_EQ(c.outputs[0].dims, (std::vector<int64_t>{-1, -1, 128}));  // 2 x 64
  EXPECT_EQ(c.precision, Precision::kF32);  // no calibration data
  EXPECT_TRUE(ValidateModelConfig(c).ok());
  EXPECT_TRUE(CheckConfigAgainstModel(c, FeatureSpec()).ok());
}

TEST(InferModelConfigTest, TokensLastStepHeadOutput) {
  const ModelConfig c = InferModelConfig(TokenSpec(), "intent", true);
  ASSERT_EQ(c.inputs.size(), 1u);
  EXPECT_EQ(c.inputs[0].name, "ids");
  EXPECT_EQ(c.inputs[0].dtype, ElementType::kInt32);
  EXPECT_EQ(c.inputs[0].dims, (std::vector<int64_t>{-1, -1}));
  ASSERT_EQ(c.outputs.size(), 1u);
  EXPECT_EQ(c.outputs[0].name, "probs");
  EXPECT_EQ(c.outputs[0].dims, (std::vector<int64_t>{-1, 5}));
  EXPECT_EQ(c.precision, Precision::kInt8);  // calibration.npy present
  EXPECT_TRUE(ValidateModelConfig(c).ok());
  EXPECT_TRUE(CheckConfigAgainstModel(c, TokenSpec()).ok());
}

TEST(InferModelConfigTest, Int64TokensAndServerDefaults) {
  engine::ModelSpec spec = TokenSpec();
  spec.input_type = ElementType::kInt64;
  spec.last_step_only = false;
  ModelConfig defaults;
  defaults.batching.max_batch_size = 8;
  defaults.drift.sample_rate = 0.5;
  defaults.precision = Precision::kF32;
  const ModelConfig c = InferModelConfig(spec, "lm", true, defaults);
  EXPECT_EQ(c.inputs[0].dtype, ElementType::kInt64);
  EXPECT_EQ(c.outputs[0].dims, (std::vector<int64_t>{-1, -1, 5}));
  EXPECT_EQ(c.batching.max_batch_size, 8);
  EXPECT_DOUBLE_EQ(c.drift.sample_rate, 0.5);
  EXPECT_EQ(c.precision, Precision::kF32);  // the defaults say so
}

struct MismatchCase {
  const char* name;
  const char* yaml;  // inputs/outputs of a config for FeatureSpec()
  const char* expected;
};

class CheckAgainstModelTest : public ::testing::TestWithParam<MismatchCase> {};

TEST_P(CheckAgainstModelTest, NamesTheField) {
  auto c = ParseModelConfig(GetParam().yaml, "kws/config.yaml", "kws", {});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(IsInvalidArgumentWith(CheckConfigAgainstModel(*c, FeatureSpec()),
                                    {GetParam().expected}));
}

const MismatchCase kMismatchCases[] = {
    {"InputName", "inputs: [{name: audio, dtype: FP32, dims: [-1, -1, 40]}]",
     "models.kws.inputs[0].name: the graph has no data input 'audio' (its "
     "input is 'mel')"},
    {"StateInput", "inputs: [{name: h0, dtype: FP32, dims: [-1, -1, 40]}]",
     "models.kws.inputs[0].name: 'h0' is a recurrent-state tensor, which the "
     "server manages; list the data input 'mel' instead"},
    {"InputDtype", "inputs: [{name: mel, dtype: INT64, dims: [-1, -1]}]",
     "models.kws.inputs[0].dtype: must be FP32 to match the graph input 'mel' "
     "(got INT64)"},
    {"FeatureSize", "inputs: [{name: mel, dtype: FP32, dims: [-1, -1, 80]}]",
     "models.kws.inputs[0].dims[2]: must be 40 to match the graph input 'mel' "
     "[-1, -1, 40] (got 80)"},
    {"FeatureVariable",
     "inputs: [{name: mel, dtype: FP32, dims: [-1, -1, -1]}]",
     "models.kws.inputs[0].dims[2]: must be 40"},
    {"OutputName",
     "outputs: [{name: logits, dtype: FP32, dims: [-1, -1, 128]}]",
     "models.kws.outputs[0].name: the graph has no data output 'logits' (its "
     "output is 'frames')"},
    {"StateOutput", "outputs: [{name: h_n, dtype: FP32, dims: [-1, -1, 128]}]",
     "models.kws.outputs[0].name: 'h_n' is a recurrent-state tensor"},
    {"OutputRank", "outputs: [{name: frames, dtype: FP32, dims: [-1, 128]}]",
     "models.kws.outputs[0].dims: must have 3 dimensions to match the graph "
     "output 'frames' [-1, -1, 128] (got [-1, 128])"},
    {"OutputWidth",
     "outputs: [{name: frames, dtype: FP32, dims: [-1, -1, 64]}]",
     "models.kws.outputs[0].dims[2]: must be 128 to match the graph output "
     "'frames' [-1, -1, 128] (got 64)"},
};

INSTANTIATE_TEST_SUITE_P(Cases, CheckAgainstModelTest,
                         ::testing::ValuesIn(kMismatchCases),
                         [](const auto& info) { return info.param.name; });

TEST(CheckConfigAgainstModelTest, FixedStepsAreARestrictionNotAMismatch) {
  auto c = ParseModelConfig(
      "inputs: [{name: mel, dtype: FP32, dims: [-1, 49, 40]}]\n"
      "outputs: [{name: frames, dtype: FP32, dims: [-1, 49, 128]}]\n",
      "kws/config.yaml", "kws", {});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(CheckConfigAgainstModel(*c, FeatureSpec()).ok());
}

TEST(CompleteModelConfigTest, FillsOnlyWhatIsMissing) {
  auto c = ParseModelConfig("precision: int8\n", "kws/config.yaml", "kws", {});
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(CompleteModelConfig(FeatureSpec(), &*c).ok());
  ASSERT_EQ(c->inputs.size(), 1u);
  EXPECT_EQ(c->inputs[0].dims, (std::vector<int64_t>{-1, -1, 40}));
  EXPECT_EQ(c->outputs[0].dims, (std::vector<int64_t>{-1, -1, 128}));
  EXPECT_EQ(c->precision, Precision::kInt8);

  auto fixed = ParseModelConfig(
      "inputs: [{name: mel, dtype: FP32, dims: [-1, 49, 40]}]\n",
      "kws/config.yaml", "kws", {});
  ASSERT_TRUE(fixed.ok());
  ASSERT_TRUE(CompleteModelConfig(FeatureSpec(), &*fixed).ok());
  EXPECT_EQ(fixed->inputs[0].dims, (std::vector<int64_t>{-1, 49, 40}));
  EXPECT_EQ(fixed->outputs[0].name, "frames");
  EXPECT_FALSE(fixed->precision.has_value());

  auto wrong = ParseModelConfig(
      "outputs: [{name: frames, dtype: FP32, dims: [-1, -1, 3]}]\n",
      "kws/config.yaml", "kws", {});
  ASSERT_TRUE(wrong.ok());
  EXPECT_TRUE(IsInvalidArgumentWith(CompleteModelConfig(FeatureSpec(), &*wrong),
                                    {"models.kws.outputs[0].dims[2]"}));
}

}  // namespace
}  // namespace rnnserve::config

namespace rnnserve::config {
namespace {

TEST(CheckConfigAgainstModelTest, SequenceBatchingNeedsAUnidirectionalModel) {
  auto c = ParseModelConfig("batching: {kind: sequence}\n", "kws/config.yaml", "kws", {});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  engine::ModelSpec spec = FeatureSpec();
  spec.layers.back().directions = 2;
  const Status status = CheckConfigAgainstModel(*c, spec);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("models.kws.batching.kind: sequence batching"),
            std::string::npos)
      << status.message();
  spec.layers.back().directions = 1;
  EXPECT_TRUE(CheckConfigAgainstModel(*c, spec).ok());
}

}  // namespace
}  // namespace rnnserve::config
