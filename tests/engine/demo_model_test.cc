// The bundled demo model (a character LSTM trained on Debian's fortunes by
// tools/train_demo_model.py): f32 reproduces PyTorch, and int8 keeps the task
// metric (next-character top-1 accuracy on held-out text) within 0.5 points.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "server/common/npy.h"
#include "server/engine/onnx_import.h"
#include "server/engine/quantization.h"
#include "server/engine/rnn_model.h"
#include "server/engine/sequence_io.h"
#include "tests/engine/golden_cases.h"
#include "tests/engine/test_json.h"

namespace rnnserve::engine {
namespace {

using ::rnnserve::testing::Json;

const std::string kModelDir =
    std::string(RNNSERVE_SOURCE_DIR) + "/deploy/model-repository/charlm/1";
const std::string kDemoData = std::string(RNNSERVE_TESTDATA) + "/demo";

NpyArray MustRead(const std::string& path) {
  auto a = ReadNpy(path);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  return a.ok() ? *a : NpyArray();
}

class DemoModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto spec = ImportOnnxFile(kModelDir + "/model.onnx");
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    spec_ = std::make_shared<const ModelSpec>(*spec);
    auto heldout = SequencesFromNpy(*spec_, MustRead(kDemoData + "/heldout_tokens.npy"),
                                    "heldout_tokens.npy");
    ASSERT_TRUE(heldout.ok()) << heldout.status().ToString();
    heldout_ = *heldout;
    targets_ = MustRead(kDemoData + "/heldout_targets.npy").ToInt64();
    std::string error;
    ASSERT_TRUE(Json::Parse(
        testing::ReadFileOrEmpty(kDemoData + "/metrics.json"), &metrics_, &error))
        << error;
  }

  // Logits for every held-out sequence, [N, T, V].
  std::vector<float> Logits(const RnnModel& model) {
    std::vector<float> all;
    RunOutput out;
    for (int64_t first = 0; first < heldout_.sequences; first += 32) {
      EXPECT_TRUE(model.Run(SliceSequences(*spec_, heldout_, first, 32), &out).ok());
      all.insert(all.end(), out.output.begin(), out.output.end());
    }
    return all;
  }

  double Accuracy(const std::vector<float>& logits) {
    const int V = spec_->output_size();
    int64_t correct = 0;
    for (size_t p = 0; p < targets_.size(); ++p) {
      const float* row = &logits[p * V];
      correct += (std::max_element(row, row + V) - row) == targets_[p];
    }
    return static_cast<double>(correct) / targets_.size();
  }

  std::shared_ptr<const ModelSpec> spec_;
  SequenceSet heldout_;
  std::vector<int64_t> targets_;
  Json metrics_;
};

TEST_F(DemoModelTest, F32ReproducesPyTorch) {
  auto model = RnnModel::Create(spec_, {});
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const std::vector<float> logits = Logits(**model);
  const NpyArray expected = MustRead(kDemoData + "/expected_logits.npy");
  ASSERT_LE(expected.size(), static_cast<int64_t>(logits.size()));
  double worst = 0;
  for (int64_t i = 0; i < expected.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(logits[i] - expected.f32()[i])));
  }
  EXPECT_LE(worst, 1e-4);
  const double pytorch = metrics_.Find("heldout_top1_accuracy")->number;
  // Argmax ties may flip on ~1e-6 differences: allow two positions of 8192.
  EXPECT_NEAR(Accuracy(logits), pytorch, 2.0 / targets_.size());
}

TEST_F(DemoModelTest, Int8KeepsAccuracyWithinHalfAPoint) {
  auto cal = SequencesFromNpy(*spec_, MustRead(kModelDir + "/calibration.npy"),
                              "calibration.npy");
  ASSERT_TRUE(cal.ok()) << cal.status().ToString();
  auto f32 = RnnModel::Create(spec_, {});
  ASSERT_TRUE(f32.ok());
  const double acc32 = Accuracy(Logits(**f32));
  for (CalibrationMethod method : {CalibrationMethod::kMinMax,
                                   CalibrationMethod::kPercentile,
                                   CalibrationMethod::kMse}) {
    CalibrationOptions co;
    co.method = method;
    auto q = Calibrate(*spec_, *cal, co);
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    RnnModelOptions o;
    o.precision = Precision::kInt8;
    o.quantization = std::make_shared<const QuantizationSpec>(*q);
    auto int8 = RnnModel::Create(spec_, o);
    ASSERT_TRUE(int8.ok()) << int8.status().ToString();
    EXPECT_EQ((*int8)->layer_precisions(),
              (std::vector<Precision>{Precision::kInt8, Precision::kInt8}));
    const double acc8 = Accuracy(Logits(**int8));
    std::cout << CalibrationMethodName(method) << ": f32 top-1 " << acc32
              << ", int8 " << acc8 << "\n";
    EXPECT_NEAR(acc8, acc32, 0.005) << CalibrationMethodName(method);
  }
}

}  // namespace
}  // namespace rnnserve::engine
