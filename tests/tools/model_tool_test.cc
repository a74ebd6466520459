// End-to-end tests of build/bin/rnnserve-model: the real binary on the
// committed PyTorch goldens and the demo model, outputs checked against
// PyTorch's own outputs.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "server/common/npy.h"

namespace rnnserve {
namespace {

const std::string kTool = std::string(RNNSERVE_BIN_DIR) + "/rnnserve-model";
const std::string kData = RNNSERVE_TESTDATA;
const std::string kDemo =
    std::string(RNNSERVE_SOURCE_DIR) + "/deploy/model-repository/charlm/1";

struct Result {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};

Result Tool(const std::string& args) {
  Result r;
  // A bounded run: a hang is a failure (exit 124), not a stuck suite.
  const std::string cmd = "timeout 120 " + kTool + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string base = dir ? dir : "/tmp";
  return base + "/rnnserve_tool_test_" + std::to_string(getpid()) + "_" + name;
}

NpyArray MustRead(const std::string& path) {
  auto a = ReadNpy(path);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  return a.ok() ? *a : NpyArray();
}

double MaxAbs(const NpyArray& a, const NpyArray& b) {
  if (a.shape != b.shape) return INFINITY;
  double m = 0;
  for (int64_t i = 0; i < a.size(); ++i) {
    m = std::max(m, static_cast<double>(std::fabs(a.f32()[i] - b.f32()[i])));
  }
  return m;
}

TEST(ModelToolTest, RunF32MatchesPyTorchOnGoldens) {
  for (const std::string c : {"lstm_2l_n5_t20_head_every", "gru_bidir_seqmajor",
                              "lstm_tokens_bidir_head_every_softmax",
                              "gru_head_last_logsoftmax_seqmajor"}) {
    const std::string dir = kData + "/goldens/" + c;
    const std::string out = TempPath(c + ".npy");
    const Result r = Tool("run " + dir + "/model.onnx --input " + dir +
                          "/input.npy --output " + out + " --batch 2");
    ASSERT_EQ(r.exit_code, 0) << c << ": " << r.output;
    const NpyArray want = MustRead(dir + "/expected.npy");
    const NpyArray got = MustRead(out);
    EXPECT_EQ(got.shape, want.shape) << c;
    EXPECT_LE(MaxAbs(got, want), 1e-4) << c;
    std::remove(out.c_str());
  }
}

TEST(ModelToolTest, InspectNamesLayersAndPrecisionSupport) {
  const Result r = Tool("inspect " + kData + "/goldens/gru_2l_seqmajor/model.onnx");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("GRU"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("runs f32"), std::string::npos) << r.output;
  const Result l = Tool("inspect " + kData + "/goldens/lstm_bidir_2l/model.onnx");
  ASSERT_EQ(l.exit_code, 0) << l.output;
  EXPECT_NE(l.output.find("bidirectional"), std::string::npos) << l.output;
  EXPECT_NE(l.output.find("int8: yes"), std::string::npos) << l.output;
}

TEST(ModelToolTest, QuantizeWritesArtifactAndReportThatRunsInInt8) {
  const std::string dir = kData + "/goldens/lstm_long_t100";
  const std::string art = TempPath("long.rnnq");
  const std::string rep = TempPath("long.json");
  const Result q = Tool("quantize " + dir + "/model.onnx --calibration " + dir +
                        "/input.npy --method mse -o " +
                        art + " --report " + rep);
  ASSERT_EQ(q.exit_code, 0) << q.output;
  EXPECT_NE(q.output.find("calibrating"), std::string::npos) << "no progress bar";
  std::ifstream f(rep);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string json = ss.str();
  for (const char* key : {"\"per_step_mean_abs_error\"", "\"relative_l2_error\"",
                          "\"artifact_bytes\"", "\"int8_ms\"", "\"percentile\"",
                          "\"method\": \"mse\""}) {
    EXPECT_NE(json.find(key), std::string::npos) << key << " missing in " << json;
  }
  // The artifact runs without calibration data and stays close to PyTorch.
  const std::string out = TempPath("long_out.npy");
  const Result r = Tool("run " + art + " --input " + dir + "/input.npy --output " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const NpyArray want = MustRead(dir + "/expected.npy");
  const NpyArray got = MustRead(out);
  EXPECT_EQ(got.shape, want.shape);
  EXPECT_LE(MaxAbs(got, want), 0.05);
  EXPECT_GT(MaxAbs(got, want), 0.0) << "int8 output identical to f32?";
  const Result i = Tool("inspect " + art);
  EXPECT_EQ(i.exit_code, 0) << i.output;
  EXPECT_NE(i.output.find("int8 (quantized)"), std::string::npos) << i.output;
  for (const auto& p : {art, rep, out}) std::remove(p.c_str());
}

// Regression: run an artifact of the demo model with OpenMP defaulting to 2
// threads while the engine runs 1. oneDNN sized per-thread buffers when the
// primitives were created (2 threads) and ran with 1, writing past a buffer
// in gemm_s8x8s32 ("corrupted double-linked list", exit 134).
TEST(ModelToolTest, DemoArtifactRunsWhateverTheOpenMpDefault) {
  const std::string art = TempPath("charlm.rnnq");
  const std::string out = TempPath("charlm.npy");
  Result q = Tool("quantize " + kDemo + "/model.onnx --calibration " + kDemo +
                  "/calibration.npy -o " + art);
  ASSERT_EQ(q.exit_code, 0) << q.output;
  for (const char* threads : {"2", "1"}) {
    setenv("OMP_NUM_THREADS", threads, 1);
    const Result r = Tool("run " + art + " --input " + kData +
                          "/demo/heldout_tokens.npy --output " + out + " --batch 64");
    EXPECT_EQ(r.exit_code, 0) << "OMP_NUM_THREADS=" << threads << ": " << r.output;
    const NpyArray got = MustRead(out);
    EXPECT_EQ(got.shape, (std::vector<int64_t>{128, 64, 97}));
  }
  setenv("OMP_NUM_THREADS", "1", 1);
  std::remove(art.c_str());
  std::remove(out.c_str());
}

TEST(ModelToolTest, UsageAndInputErrorsAreClear) {
  EXPECT_EQ(Tool("").exit_code, 2);
  EXPECT_EQ(Tool("frobnicate x").exit_code, 2);
  EXPECT_EQ(Tool("run").exit_code, 2);
  EXPECT_EQ(Tool("run m.onnx --input").exit_code, 2);
  EXPECT_EQ(Tool("run m.onnx --bogus 1 --input a --output b").exit_code, 2);
  const std::string dir = kData + "/goldens/lstm_1l";
  const std::string out = TempPath("x.npy");
  // Wrong model file.
  Result r = Tool("run " + kData + "/bad_onnx/garbage.onnx --input " + dir +
                  "/input.npy --output " + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("garbage.onnx"), std::string::npos) << r.output;
  // Wrong input shape: lstm_2l_n5_t20 takes another feature size? Use tokens.
  r = Tool("run " + dir + "/model.onnx --input " + kData +
           "/goldens/lstm_tokens_head_every/input.npy --output " + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("dtype"), std::string::npos) << r.output;
  // Not an npy at all.
  r = Tool("run " + dir + "/model.onnx --input " + dir + "/model.onnx --output " + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("not a .npy"), std::string::npos) << r.output;
  // int8 from ONNX without calibration data.
  r = Tool("run " + dir + "/model.onnx --input " + dir + "/input.npy --output " +
           out + " --precision int8");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("--calibration"), std::string::npos) << r.output;
  r = Tool("run " + dir + "/model.onnx --input " + dir + "/input.npy --output " +
           out + " --batch 0");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("--batch"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace rnnserve
