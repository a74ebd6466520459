#include "server/repository/model_repository.h"

#include <stdlib.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "server/common/npy.h"
#include "server/engine/artifact.h"
#include "server/engine/onnx_import.h"
#include "server/engine/quantization.h"
#include "server/engine/rnn_model.h"
#include "server/engine/sequence_io.h"

namespace rnnserve::repository {
namespace {

namespace fs = std::filesystem;

const std::string kTestData = RNNSERVE_TESTDATA;
const std::string kGoldens = kTestData + "/goldens";
const std::string kCharlm =
    std::string(RNNSERVE_SOURCE_DIR) + "/deploy/model-repository/charlm";

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

void Copy(const std::string& from, const std::string& to) {
  fs::create_directories(fs::path(to).parent_path());
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
}

// A fresh repository root under the test temp dir, removed at the end.
class RepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = getenv("TEST_TMPDIR");
    std::string pattern =
        std::string(tmp ? tmp : "/tmp") + "/rnnserve_repo_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // Model `name`, version `v` from golden `golden`: model.onnx and, with
  // `calibration`, its input.npy as calibration.npy.
  void AddGoldenVersion(const std::string& name, int v,
                        const std::string& golden, bool calibration) {
    const std::string dir = Dir(name, v);
    Copy(kGoldens + "/" + golden + "/model.onnx", dir + "/model.onnx");
    if (calibration) {
      Copy(kGoldens + "/" + golden + "/input.npy", dir + "/calibration.npy");
    }
  }

  std::string Dir(const std::string& name, int v) const {
    return root_ + "/" + name + "/" + std::to_string(v);
  }

  std::unique_ptr<ModelRepository> MakeRepository() {
    ModelRepository::Options options;
    options.root = root_;
    options.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(log_mutex_);
      log_.push_back(line);
    };
    StatusOr<std::unique_ptr<ModelRepository>> repo =
        ModelRepository::Create(options);
    EXPECT_TRUE(repo.ok()) << repo.status().ToString();
    return repo.ok() ? std::move(repo).value() : nullptr;
  }

  bool LogContains(const std::string& text) {
    std::lock_guard<std::mutex> lock(log_mutex_);
    for (const std::string& line : log_) {
      if (line.find(text) != std::string::npos) return true;
    }
    return false;
  }

  std::string root_;
  std::mutex log_mutex_;
  std::vector<std::string> log_;
};

// Runs `model` on the first `count` sequences of the npy at `input_path`.
std::vector<float> RunOn(const engine::RnnModel& model,
                         const std::string& input_path, int count = 4) {
  StatusOr<NpyArray> array = ReadNpy(input_path);
  EXPECT_TRUE(array.ok()) << array.status().ToString();
  StatusOr<engine::SequenceSet> set =
      engine::SequencesFromNpy(model.spec(), *array, input_path);
  EXPECT_TRUE(set.ok()) << set.status().ToString();
  const int n = static_cast<int>(std::min<int64_t>(count, set->sequences));
  std::vector<engine::LayerState> states;
  engine::RunInput input =
      engine::SliceSequences(model.spec(), *set, 0, n, &states);
  engine::RunOutput output;
  Status run = model.Run(input, &output);
  EXPECT_TRUE(run.ok()) << run.ToString();
  return output.output;
}

// The independent path: import + calibrate + RnnModel::Create directly.
struct DirectModels {
  std::shared_ptr<const engine::ModelSpec> spec;
  std::shared_ptr<const engine::QuantizationSpec> quantization;
  std::unique_ptr<engine::RnnModel> f32;
  std::unique_ptr<engine::RnnModel> int8;
};

DirectModels BuildDirect(const std::string& onnx, const std::string& calib,
                         const engine::CalibrationOptions& calibration = {}) {
  DirectModels d;
  StatusOr<engine::ModelSpec> spec = engine::ImportOnnxFile(onnx);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  d.spec = std::make_shared<const engine::ModelSpec>(std::move(spec).value());
  engine::RnnModelOptions f32_options;
  d.f32 = std::move(engine::RnnModel::Create(d.spec, f32_options)).value();
  if (!calib.empty()) {
    StatusOr<NpyArray> array = ReadNpy(calib);
    EXPECT_TRUE(array.ok());
    StatusOr<engine::SequenceSet> set =
        engine::SequencesFromNpy(*d.spec, *array, calib);
    EXPECT_TRUE(set.ok()) << set.status().ToString();
    StatusOr<engine::QuantizationSpec> q =
        engine::Calibrate(*d.spec, *set, calibration);
    EXPECT_TRUE(q.ok()) << q.status().ToString();
    d.quantization =
        std::make_shared<const engine::QuantizationSpec>(std::move(q).value());
    engine::RnnModelOptions int8_options;
    int8_options.precision = engine::Precision::kInt8;
    int8_options.quantization = d.quantization;
    d.int8 = std::move(engine::RnnModel::Create(d.spec, int8_options)).value();
  }
  return d;
}

void ExpectSame(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i], b[i]) << "at " << i;
  }
}

TEST_F(RepositoryTest, DemoRepositoryLoadsInt8AndMatchesDirectModel) {
  Copy(kCharlm + "/config.yaml", root_ + "/charlm/config.yaml");
  Copy(kCharlm + "/1/model.onnx", Dir("charlm", 1) + "/model.onnx");
  Copy(kCharlm + "/1/calibration.npy", Dir("charlm", 1) + "/calibration.npy");
  auto repo = MakeRepository();
  ASSERT_TRUE(repo->LoadAll().ok());

  StatusOr<ModelStatus> state = repo->ModelState("charlm");
  ASSERT_TRUE(state.ok()) << state.status().ToString();
  EXPECT_EQ(state->state, ReadyState::kReady) << state->reason;
  ASSERT_EQ(state->versions.size(), 1u);
  EXPECT_EQ(state->versions[0].version, 1);

  auto model = repo->Get("charlm");
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const LoadedModel& m = **model;
  EXPECT_EQ(m.name, "charlm");
  EXPECT_EQ(m.version, 1);
  EXPECT_FALSE(m.config_inferred);
  EXPECT_EQ(m.config.batching.max_queue_delay_us, 200);
  EXPECT_EQ(m.precision, engine::Precision::kInt8);
  ASSERT_NE(m.quantization, nullptr);
  EXPECT_FALSE(m.quantization_from_artifact);
  for (engine::Precision p : m.serving_model->layer_precisions()) {
    EXPECT_EQ(p, engine::Precision::kInt8);  // 2 LSTM layers
  }
  EXPECT_EQ(m.f32_model->precision(), engine::Precision::kF32);
  EXPECT_GT(m.weights_bytes, 0);
  EXPECT_GE(m.load_seconds, 0.0);
  EXPECT_TRUE(LogContains("loaded model charlm v1: precision int8"));

  const std::string calib = Dir("charlm", 1) + "/calibration.npy";
  DirectModels direct = BuildDirect(Dir("charlm", 1) + "/model.onnx", calib);
  ExpectSame(RunOn(*m.serving_model, calib), RunOn(*direct.int8, calib));
  ExpectSame(RunOn(*m.f32_model, calib), RunOn(*direct.f32, calib));
}

TEST_F(RepositoryTest, OnnxOnlyFolderIsServedF32WithInferredConfig) {
  AddGoldenVersion("plain", 1, "lstm_2l", /*calibration=*/false);
  auto repo = MakeRepository();
  ASSERT_TRUE(repo->LoadModel("plain").ok());
  auto model = repo->Get("plain", 1);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const LoadedModel& m = **model;
  EXPECT_TRUE(m.config_inferred);
  EXPECT_EQ(m.config.name, "plain");
  EXPECT_EQ(m.config.inputs.size(), 1u);
  EXPECT_EQ(m.precision, engine::Precision::kF32);
  EXPECT_EQ(m.quantization, nullptr);
  EXPECT_EQ(m.serving_model, m.f32_model);

  // Against the PyTorch golden (independent oracle).
  const std::string input = kGoldens + "/lstm_2l/input.npy";
  StatusOr<NpyArray> in = ReadNpy(input);
  ASSERT_TRUE(in.ok());
  StatusOr<engine::SequenceSet> set =
      engine::SequencesFromNpy(*m.spec, *in, input);
  ASSERT_TRUE(set.ok());
  const std::vector<float> got =
      RunOn(*m.serving_model, input, static_cast<int>(set->sequences));
  StatusOr<NpyArray> expected = ReadNpy(kGoldens + "/lstm_2l/expected.npy");
  ASSERT_TRUE(expected.ok());
  // lstm_2l is batch-first, so the batch-major output is in its layout.
  const std::vector<float> want = expected->ToFloat();
  const std::vector<float>& have = got;
  ASSERT_EQ(want.size(), have.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(have[i], want[i], 1e-4) << "at " << i;
  }
}

TEST_F(RepositoryTest, OnnxWithCalibrationIsServedInt8) {
  AddGoldenVersion("quant", 1, "lstm_2l", /*calibration=*/true);
  auto repo = MakeRepository();
  ASSERT_TRUE(repo->LoadModel("quant").ok());
  auto model = repo->Get("quant");
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const LoadedModel& m = **model;
  EXPECT_TRUE(m.config_inferred);
  EXPECT_EQ(m.precision, engine::Precision::kInt8);
  EXPECT_EQ(m.calibration_path, Dir("quant", 1) + "/calibration.npy");
  const std::string calib = Dir("quant", 1) + "/calibration.npy";
  DirectModels direct = BuildDirect(Dir("quant", 1) + "/model.onnx", calib);
  ExpectSame(RunOn(*m.serving_model, calib), RunOn(*direct.int8, calib));
}

TEST_F(RepositoryTest, ArtifactIsLoadedWithoutCalibration) {
  AddGoldenVersion("art", 1, "lstm_2l", /*calibration=*/false);
  const std::string onnx = Dir("art", 1) + "/model.onnx";
  const std::string calib = kGoldens + "/lstm_2l/input.npy";
  DirectModels direct = BuildDirect(onnx, calib);
  StatusOr<std::string> bytes = engine::SerializeArtifact(
      *direct.spec, *direct.quantization, engine::Sha256Hex(ReadFile(onnx)),
      "model.onnx");
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  ASSERT_TRUE(
      engine::WriteArtifact(Dir("art", 1) + "/model.rnnq", *bytes).ok());

  auto repo = MakeRepository();
  ASSERT_TRUE(repo->LoadModel("art").ok());
  auto model = repo->Get("art");
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const LoadedModel& m = **model;
  EXPECT_EQ(m.precision, engine::Precision::kInt8);
  EXPECT_TRUE(m.quantization_from_artifact);
  EXPECT_TRUE(m.calibration_path.empty());
  EXPECT_EQ(m.artifact_path, Dir("art", 1) + "/model.rnnq");
  ExpectSame(RunOn(*m.serving_model, calib), RunOn(*direct.int8, calib));
}

TEST_F(RepositoryTest, ArtifactOfAnotherModelIsAnErrorNamingBothFiles) {
  AddGoldenVersion("mismatch", 1, "lstm_2l", /*calibration=*/true);
  // An artifact made from lstm_1l next to lstm_2l's model.onnx.
  const std::string other = kGoldens + "/lstm_1l/model.onnx";
  DirectModels direct = BuildDirect(other, kGoldens + "/lstm_1l/input.npy");
  StatusOr<std::string> bytes = engine::SerializeArtifact(
      *direct.spec, *direct.quantization, engine::Sha256Hex(ReadFile(other)),
      "model.onnx");
  ASSERT_TRUE(bytes.ok());
  ASSERT_TRUE(
      engine::WriteArtifact(Dir("mismatch", 1) + "/model.rnnq", *bytes).ok());

  auto repo = MakeRepository();
  EXPECT_FALSE(repo->LoadModel("mismatch").ok());
  StatusOr<ModelStatus> state = repo->ModelState("mismatch", 1);
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->state, ReadyState::kUnavailable);
  EXPECT_NE(state->reason.find("mismatch v1"), std::string::npos);
  EXPECT_NE(state->reason.find(Dir("mismatch", 1) + "/model.rnnq"),
            std::string::npos)
      << state->reason;
  EXPECT_NE(state->reason.find(Dir("mismatch", 1) + "/model.onnx"),
            std::string::npos)
      << state->reason;
  EXPECT_EQ(repo->Get("mismatch").status().code(), StatusCode::kUnavailable);
}

class VersionPolicyTest : public RepositoryTest {
 protected:
  void SetUp() override {
    RepositoryTest::SetUp();
    AddGoldenVersion("multi", 1, "lstm_1l", false);
    AddGoldenVersion("multi", 2, "lstm_2l", false);
    AddGoldenVersion("multi", 3, "gru_1l", false);
    fs::create_directories(root_ + "/multi/notes");
  }
  std::vector<int64_t> ReadyVersions(ModelRepository& repo) {
    std::vector<int64_t> out;
    StatusOr<ModelStatus> state = repo.ModelState("multi");
    EXPECT_TRUE(state.ok());
    if (!state.ok()) return out;
    for (const VersionStatus& v : state->versions) {
      if (v.state == ReadyState::kReady) out.push_back(v.version);
    }
    return out;
  }
};

TEST_F(VersionPolicyTest, LatestServesHighestVersions) {
  auto repo = MakeRepository();
  ASSERT_TRUE(repo->LoadModel("multi").ok());  // default: latest 1
  EXPECT_EQ(ReadyVersions(*repo), std::vector<int64_t>({3}));
  EXPECT_TRUE(LogContains("multi/notes"));
  auto latest = repo->Get("multi");
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ((*latest)->version, 3);
  EXPECT_EQ(repo->Get("multi", 1).status().code(), StatusCode::kNotFound);

  WriteFile(root_ + "/multi/config.yaml",
            "version_policy: {latest: {num_versions: 2}}\n");
  ASSERT_TRUE(repo->LoadModel("multi").ok());
  EXPECT_EQ(ReadyVersions(*repo), std::vector<int64_t>({2, 3}));
}

TEST_F(VersionPolicyTest, AllAndSpecific) {
  WriteFile(root_ + "/multi/config.yaml", "version_policy: all\n");
  auto repo = MakeRepository();
  ASSERT_TRUE(repo->LoadModel("multi").ok());
  EXPECT_EQ(ReadyVersions(*repo), std::vector<int64_t>({1, 2, 3}));
  EXPECT_EQ((*repo->Get("multi", 2))->version, 2);

  WriteFile(root_ + "/multi/config.yaml",
            "version_policy: {specific: {versions: [1, 3, 4]}}\n");
  ASSERT_TRUE(repo->LoadModel("multi").ok());
  EXPECT_EQ(ReadyVersions(*repo), std::vector<int64_t>({1, 3}));
  StatusOr<ModelStatus> v4 = repo->ModelState("multi", 4);
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->state, ReadyState::kUnavailable);
  EXPECT_NE(v4->reason.find("multi v4"), std::string::npos) << v4->reason;
  EXPECT_EQ(repo->Get("multi", 4).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(repo->Get("multi", 2).status().code(), StatusCode::kNotFound);
}

TEST_F(RepositoryTest, BrokenModelsDoNotStopTheOthers) {
  AddGoldenVersion("good", 1, "gru_1l", false);
  Copy(kTestData + "/bad_onnx/garbage.onnx", Dir("garbage", 1) + "/model.onnx");
  Copy(kTestData + "/bad_onnx/unsupported_op.onnx",
       Dir("relu", 1) + "/model.onnx");
  AddGoldenVersion("badconfig", 1, "lstm_1l", false);
  WriteFile(root_ + "/badconfig/config.yaml", "max_sequence_length: -3\n");
  fs::create_directories(root_ + "/empty");

  auto repo = MakeRepository();
  ASSERT_TRUE(repo->LoadAll().ok());
  std::vector<ModelStatus> states = repo->ModelStates();
  ASSERT_EQ(states.size(), 5u);
  for (const ModelStatus& s : states) {
    if (s.name == "good") {
      EXPECT_EQ(s.state, ReadyState::kReady) << s.reason;
    } else {
      EXPECT_EQ(s.state, ReadyState::kUnavailable) << s.name;
      EXPECT_TRUE(LogContains("model " + s.name)) << s.name;
    }
  }
  EXPECT_TRUE(repo->Get("good").ok());

  const std::string garbage = (*repo->ModelState("garbage")).reason;
  EXPECT_NE(garbage.find("garbage v1: " + Dir("garbage", 1) + "/model.onnx"),
            std::string::npos)
      << garbage;
  const std::string relu = (*repo->ModelState("relu")).reason;
  EXPECT_NE(relu.find(Dir("relu", 1) + "/model.onnx"), std::string::npos)
      << relu;
  const std::string config = (*repo->ModelState("badconfig")).reason;
  EXPECT_NE(config.find(root_ + "/badconfig/config.yaml"), std::string::npos)
      << config;
  EXPECT_NE(config.find("max_sequence_length"), std::string::npos) << config;
  EXPECT_EQ(repo->Get("garbage").status().code(), StatusCode::kUnavailable);
}

TEST_F(RepositoryTest, UnloadKeepsHeldModelsAndReloadSwaps) {
  AddGoldenVersion("m", 1, "lstm_2l", false);
  auto repo = MakeRepository();
  ASSERT_TRUE(repo->LoadModel("m").ok());
  StatusOr<std::shared_ptr<const LoadedModel>> held = repo->Get("m");
  ASSERT_TRUE(held.ok());
  std::shared_ptr<const LoadedModel> first = *held;

  // Reload: a new object replaces the old; the held one still runs.
  ASSERT_TRUE(repo->LoadModel("m").ok());
  std::shared_ptr<const LoadedModel> second = *repo->Get("m");
  EXPECT_NE(first.get(), second.get());

  // A new version appears: latest now serves it.
  AddGoldenVersion("m", 2, "gru_1l", false);
  ASSERT_TRUE(repo->LoadModel("m").ok());
  EXPECT_EQ((*repo->Get("m"))->version, 2);

  ASSERT_TRUE(repo->UnloadModel("m").ok());
  EXPECT_EQ(repo->Get("m").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(repo->ModelState("m").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(repo->UnloadModel("m").code(), StatusCode::kNotFound);

  const std::string input = kGoldens + "/lstm_2l/input.npy";
  DirectModels direct = BuildDirect(Dir("m", 1) + "/model.onnx", "");
  ExpectSame(RunOn(*first->serving_model, input), RunOn(*direct.f32, input));
}

TEST_F(RepositoryTest, FailedReloadKeepsServingTheCopyLoadedBefore) {
  AddGoldenVersion("m", 1, "lstm_2l", false);
  auto repo = MakeRepository();
  ASSERT_TRUE(repo->LoadModel("m").ok());
  std::shared_ptr<const LoadedModel> before = *repo->Get("m");

  // The model file is replaced by garbage and reloaded: an error naming the
  // file, and the old copy keeps serving (READY, reason saying so).
  WriteFile(Dir("m", 1) + "/model.onnx", "this is not an ONNX model");
  const Status reload = repo->LoadModel("m");
  EXPECT_EQ(reload.code(), StatusCode::kUnavailable);
  EXPECT_NE(reload.message().find("model.onnx"), std::string::npos) << reload.message();
  auto after = repo->Get("m");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->get(), before.get());
  auto state = repo->ModelState("m");
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->state, ReadyState::kReady);
  ASSERT_EQ(state->versions.size(), 1u);
  EXPECT_NE(state->versions[0].reason.find("reload failed"), std::string::npos);
  EXPECT_TRUE(LogContains("reload failed"));

  // A config.yaml that no longer parses: every version loaded before stays.
  WriteFile(Dir("m", 1) + "/../config.yaml", "batching: {max_batch_size: -4}\n");
  EXPECT_EQ(repo->LoadModel("m").code(), StatusCode::kUnavailable);
  EXPECT_EQ(repo->Get("m")->get(), before.get());

  // Fixed again: a fresh copy replaces the kept one.
  Copy(kGoldens + "/lstm_2l/model.onnx", Dir("m", 1) + "/model.onnx");
  WriteFile(Dir("m", 1) + "/../config.yaml", "");
  ASSERT_TRUE(repo->LoadModel("m").ok());
  EXPECT_NE(repo->Get("m")->get(), before.get());
  EXPECT_EQ(repo->ModelState("m")->versions[0].reason, "");
}

TEST_F(RepositoryTest, GetDuringReloadsAlwaysYieldsAUsableModel) {
  AddGoldenVersion("m", 1, "lstm_2l", false);
  auto repo = MakeRepository();
  ASSERT_TRUE(repo->LoadModel("m").ok());
  const std::string input = kGoldens + "/lstm_2l/input.npy";
  const std::vector<float> want =
      RunOn(*(*repo->Get("m"))->serving_model, input);
  std::atomic<bool> done{false};
  std::atomic<int> mismatches{0};
  std::thread reader([&] {
    while (!done.load()) {
      auto model = repo->Get("m");
      if (!model.ok() || RunOn(*(*model)->serving_model, input) != want) {
        ++mismatches;
      }
    }
  });
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(repo->LoadModel("m").ok());
  done = true;
  reader.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(RepositoryTest, ScanListsFoldersAndNumericVersions) {
  AddGoldenVersion("b", 2, "lstm_1l", false);
  AddGoldenVersion("b", 10, "lstm_1l", false);
  fs::create_directories(root_ + "/b/latest");
  AddGoldenVersion("a", 1, "lstm_1l", false);
  WriteFile(root_ + "/a/config.yaml", "");
  WriteFile(root_ + "/README.md", "not a model");
  fs::create_directories(root_ + "/.hidden/1");
  auto repo = MakeRepository();
  StatusOr<std::vector<ModelFolder>> folders = repo->Scan();
  ASSERT_TRUE(folders.ok());
  ASSERT_EQ(folders->size(), 2u);
  EXPECT_EQ((*folders)[0].name, "a");
  EXPECT_TRUE((*folders)[0].has_config);
  EXPECT_EQ((*folders)[1].name, "b");
  EXPECT_EQ((*folders)[1].versions, std::vector<int64_t>({2, 10}));
  EXPECT_EQ(repo->LoadModel("nope").code(), StatusCode::kNotFound);
}

TEST(RepositoryCreateTest, MissingRootIsNotFound) {
  ModelRepository::Options options;
  options.root = "/nonexistent/rnnserve/repo";
  EXPECT_EQ(ModelRepository::Create(options).status().code(),
            StatusCode::kNotFound);
}

}  // namespace
}  // namespace rnnserve::repository
