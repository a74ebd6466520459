// The shipped example configurations parse and validate, and the demo
// model's config.yaml agrees with its ONNX graph.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "server/config/model_config.h"
#include "server/config/server_config.h"
#include "server/engine/onnx_import.h"

namespace rnnserve::config {
namespace {

const std::string kDeploy = std::string(RNNSERVE_SOURCE_DIR) + "/deploy";
const std::string kCharlm = kDeploy + "/model-repository/charlm";

TEST(DeployConfigTest, ExampleServerConfigParses) {
  auto c = LoadServerConfigFile(kDeploy + "/config/server.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->model_repository, "deploy/model-repository");
  EXPECT_EQ(c->grpc_address, "0.0.0.0:8001");
  EXPECT_EQ(c->metrics_address, "0.0.0.0:8002");
  EXPECT_EQ(c->model_control, ModelControl::kExplicit);
  EXPECT_EQ(c->startup_models, std::vector<std::string>{"*"});
  EXPECT_FALSE(c->tls.enabled());
  EXPECT_EQ(c->model_defaults.batching.max_queue_delay_us, 200);
}

TEST(DeployConfigTest, DemoModelConfigParsesWithTheExampleDefaults) {
  auto server = LoadServerConfigFile(kDeploy + "/config/server.yaml");
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto c = LoadModelConfigFile(kCharlm + "/config.yaml", "charlm",
                               server->model_defaults);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->name, "charlm");
  ASSERT_EQ(c->inputs.size(), 1u);
  EXPECT_EQ(c->inputs[0].name, "tokens");
  EXPECT_EQ(c->inputs[0].dtype, engine::ElementType::kInt64);
  EXPECT_EQ(c->inputs[0].dims, (std::vector<int64_t>{-1, -1}));
  ASSERT_EQ(c->outputs.size(), 1u);
  EXPECT_EQ(c->outputs[0].name, "logits");
  EXPECT_EQ(c->outputs[0].dtype, engine::ElementType::kFloat32);
  EXPECT_EQ(c->outputs[0].dims, (std::vector<int64_t>{-1, -1, 97}));
  EXPECT_EQ(c->precision, engine::Precision::kInt8);
  EXPECT_EQ(c->calibration.method, engine::CalibrationMethod::kMinMax);
  EXPECT_EQ(c->calibration.file, "calibration.npy");
  EXPECT_EQ(c->batching.kind, BatchingKind::kDynamic);
  EXPECT_EQ(c->batching.max_batch_size, 128);
  EXPECT_EQ(c->batching.preferred_batch_sizes,
            (std::vector<int64_t>{16, 32, 64, 128}));
  EXPECT_DOUBLE_EQ(c->drift.sample_rate, 0.01);
  EXPECT_EQ(c->drift.action, DriftAction::kAlert);
}

TEST(DeployConfigTest, DemoModelConfigAgreesWithItsOnnxGraph) {
  auto spec = engine::ImportOnnxFile(kCharlm + "/1/model.onnx");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  auto c = LoadModelConfigFile(kCharlm + "/config.yaml", "charlm");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(CheckConfigAgainstModel(*c, *spec).ok())
      << CheckConfigAgainstModel(*c, *spec).ToString();

  // What the repository would infer without the file is the same interface.
  const ModelConfig inferred = InferModelConfig(*spec, "charlm", true);
  ASSERT_EQ(inferred.inputs.size(), 1u);
  ASSERT_EQ(inferred.outputs.size(), 1u);
  EXPECT_EQ(inferred.inputs[0].name, c->inputs[0].name);
  EXPECT_EQ(inferred.inputs[0].dtype, c->inputs[0].dtype);
  EXPECT_EQ(inferred.inputs[0].dims, c->inputs[0].dims);
  EXPECT_EQ(inferred.outputs[0].name, c->outputs[0].name);
  EXPECT_EQ(inferred.outputs[0].dims, c->outputs[0].dims);
  EXPECT_EQ(inferred.precision, engine::Precision::kInt8);
}

}  // namespace
}  // namespace rnnserve::config
