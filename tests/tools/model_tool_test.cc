// End-to-end tests of build/bin/rnnserve-model: the real binary on the
// committed PyTorch goldens and the demo model, outputs checked against
// PyTorch's own outputs.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "server/common/npy.h"
#include "tests/engine/test_json.h"

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
  EXPECT_NE(r.output.find("int8: yes (rnnserve int8 GRU"), std::string::npos)
      << r.output;
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
  const std::string png = TempPath("long.png");  // the report's default plot
  for (const auto& p : {art, rep, out, png}) std::remove(p.c_str());
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

std::string ReadText(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

testing::Json MustParseJson(const std::string& path) {
  testing::Json j;
  std::string error;
  EXPECT_TRUE(testing::Json::Parse(ReadText(path), &j, &error))
      << path << ": " << error;
  return j;
}

double Number(const testing::Json& j, const std::string& key) {
  const testing::Json* v = j.Find(key);
  EXPECT_TRUE(v && v->type == testing::Json::Type::kNumber) << key;
  return v && v->type == testing::Json::Type::kNumber ? v->number : NAN;
}

// The report on the demo model: every variant, its per-step errors, the task
// accuracy against PyTorch's, sizes and the plot. The f32 accuracy and the
// log2 size are checked against independent values (PyTorch's metrics.json;
// the architecture's parameter counts); the variants' orderings were measured
// before being asserted (see the comments).
TEST(ModelToolTest, QuantizeReportComparesVariantsOnTheDemoModel) {
  const std::string art = TempPath("report.rnnq");
  const std::string rep = TempPath("report.json");
  const std::string png = TempPath("report.png");  // the default: .json -> .png
  std::remove(png.c_str());
  const Result q = Tool("quantize " + kDemo + "/model.onnx --calibration " +
                        kDemo + "/calibration.npy --holdout " + kData +
                        "/demo/heldout_tokens.npy --labels " + kData +
                        "/demo/heldout_targets.npy -o " + art + " --report " +
                        rep + " --batch 64");
  ASSERT_EQ(q.exit_code, 0) << q.output;
  const testing::Json r = MustParseJson(rep);
  const testing::Json metrics = MustParseJson(kData + "/demo/metrics.json");
  const double pytorch_accuracy = Number(metrics, "heldout_top1_accuracy");
  ASSERT_GT(pytorch_accuracy, 0.3);

  // The keys earlier scripts read keep their meaning: the written artifact.
  for (const char* key : {"model", "artifact", "calibration", "layers",
                          "evaluation", "size", "speed", "variants"}) {
    EXPECT_NE(r.Find(key), nullptr) << key;
  }
  const testing::Json& size = *r.Find("size");
  const double source_bytes = Number(size, "source_bytes");
  EXPECT_EQ(source_bytes,
            static_cast<double>(ReadText(kDemo + "/model.onnx").size()));
  EXPECT_EQ(Number(size, "artifact_bytes"),
            static_cast<double>(ReadText(art).size()));
  const testing::Json& evaluation = *r.Find("evaluation");
  EXPECT_EQ(evaluation.Int("steps"), 64);
  EXPECT_NEAR(Number(evaluation, "f32_task_accuracy"), pytorch_accuracy,
              2.0 / 8192);

  std::map<std::string, const testing::Json*> by_name;
  for (const auto& v : r.Find("variants")->array) by_name[v.Str("name")] = &v;
  for (const char* name :
       {"int8-minmax-per-channel", "int8-percentile-per-channel",
        "int8-mse-per-channel", "int8-minmax-per-tensor",
        "log2-4bit-per-channel"}) {
    ASSERT_TRUE(by_name.count(name)) << name << " missing";
    const testing::Json& v = *by_name[name];
    EXPECT_EQ(v.Find("per_step_mean_abs_error")->array.size(), 64u) << name;
    EXPECT_EQ(v.Find("per_step_max_abs_error")->array.size(), 64u) << name;
    EXPECT_GT(Number(v, "mean_abs_error"), 0.0) << name;
    EXPECT_GE(Number(v, "max_abs_error"), Number(v, "mean_abs_error")) << name;
    EXPECT_GT(Number(v, "top1_agreement"), 0.5) << name;
    EXPECT_GT(Number(v, "mean_kl"), 0.0) << name;
    const bool int8 = v.Str("weights") == "int8";
    const auto& layers = v.Find("layer_precisions")->array;
    ASSERT_EQ(layers.size(), 2u) << name;
    for (const auto& l : layers)
      EXPECT_EQ(l.string, int8 ? "int8" : "f32") << name;
    if (int8) {
      EXPECT_LT(Number(v, "size_bytes"), 0.4 * source_bytes) << name;
      EXPECT_GT(Number(v, "int8_ms"), 0.0) << name;
      EXPECT_GT(Number(v, "f32_ms"), 0.0) << name;
    } else {
      EXPECT_EQ(v.Str("speed"), "n/a: simulation");
      EXPECT_TRUE(v.Bool("size_estimated"));
    }
  }
  const testing::Json& minmax = *by_name["int8-minmax-per-channel"];
  EXPECT_TRUE(minmax.Bool("chosen"));
  EXPECT_EQ(minmax.Str("method"), "minmax");
  EXPECT_TRUE(minmax.Bool("per_channel"));
  EXPECT_EQ(Number(minmax, "size_bytes"), Number(size, "artifact_bytes"));
  EXPECT_EQ(Number(minmax, "mean_abs_error"),
            Number(evaluation, "mean_abs_error"));
  EXPECT_EQ(by_name["int8-percentile-per-channel"]->Str("method"),
            "percentile");
  EXPECT_EQ(Number(*by_name["int8-percentile-per-channel"], "percentile"),
            99.99);
  EXPECT_EQ(by_name["int8-mse-per-channel"]->Str("method"), "mse");
  EXPECT_FALSE(by_name["int8-minmax-per-tensor"]->Bool("per_channel", true));

  // Task accuracy. Measured (AVX2 host, no VNNI): f32 0.4844 = PyTorch;
  // per-channel minmax/percentile/mse 0.4816/0.4822/0.4816; per-tensor 0.4722
  // and log2 0.4565, which lose more than 0.005, so they get wider bounds.
  for (const char* name :
       {"int8-minmax-per-channel", "int8-percentile-per-channel",
        "int8-mse-per-channel"}) {
    EXPECT_NEAR(Number(*by_name[name], "task_accuracy"), pytorch_accuracy,
                0.005)
        << name;
  }
  EXPECT_NEAR(Number(*by_name["int8-minmax-per-tensor"], "task_accuracy"),
              pytorch_accuracy, 0.02);
  EXPECT_NEAR(Number(*by_name["log2-4bit-per-channel"], "task_accuracy"),
              pytorch_accuracy, 0.05);

  // Orderings (measured mean |d|: per-channel minmax 0.111, per-tensor 0.227,
  // log2 0.344): 4-bit log2 weights lose more than 8-bit linear ones, and one
  // scale per tensor more than one per channel.
  const double pc = Number(minmax, "mean_abs_error");
  EXPECT_GT(Number(*by_name["log2-4bit-per-channel"], "mean_abs_error"), pc);
  EXPECT_GT(Number(*by_name["log2-4bit-per-channel"], "relative_l2_error"),
            Number(minmax, "relative_l2_error"));
  EXPECT_GE(Number(*by_name["int8-minmax-per-tensor"], "mean_abs_error"), pc);
  EXPECT_GE(Number(*by_name["int8-minmax-per-tensor"], "relative_l2_error"),
            Number(minmax, "relative_l2_error"));

  // log2 size from the architecture (metrics.json): LSTM weights
  // 4*128*(32+128) + 4*128*(128+128) at 4 bits, one f32 scale per gate x unit
  // of each of the 4 matrices, and f32 embedding 97x32, folded biases 2x512,
  // head 128x97+97.
  const double rnn_weights = 4 * 128 * (32 + 128) + 4 * 128 * (128 + 128);
  const double want_log2 =
      rnn_weights / 2 + 4 * (4 * 512) + 4 * (97 * 32 + 2 * 512 + 128 * 97 + 97);
  EXPECT_EQ(Number(*by_name["log2-4bit-per-channel"], "size_bytes"), want_log2);
  EXPECT_EQ(Number(*by_name["log2-4bit-per-channel"], "rnn_weights"),
            rnn_weights);

  // The table on stdout and the plot.
  for (const char* text : {"int8-mse-per-channel", "log2-4bit-per-channel",
                           "f32 (reference)", "wrote plot"}) {
    EXPECT_NE(q.output.find(text), std::string::npos) << text << "\n"
                                                      << q.output;
  }
  EXPECT_TRUE(r.Find("plot")->Bool("written")) << q.output;
  EXPECT_EQ(r.Find("plot")->Str("path"), png);
  const std::string image = ReadText(png);
  ASSERT_GE(image.size(), 8u) << "no plot at " << png;
  EXPECT_EQ(image.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  for (const auto& p : {art, rep, png}) std::remove(p.c_str());
}

// A GRU model with a last-step log-softmax head: the report says its layer
// runs int8 (rnnserve's int8 GRU) in every int8 variant, computes the accuracy on [N] labels (PyTorch's
// own argmax, so f32 scores 1), skips the plot when gnuplot is missing, and
// rejects labels of the wrong shape.
TEST(ModelToolTest,
     QuantizeReportOnGruNamesLayerPrecisionsAndSkipsPlotWithoutGnuplot) {
  const std::string dir = kData + "/goldens/gru_head_last_logsoftmax_seqmajor";
  const NpyArray expected = MustRead(dir + "/expected.npy");
  ASSERT_EQ(expected.shape.size(), 2u);
  const int64_t N = expected.shape[0], O = expected.shape[1];
  std::vector<int64_t> argmax(N);
  for (int64_t n = 0; n < N; ++n) {
    const float* row = expected.f32() + n * O;
    argmax[n] = std::max_element(row, row + O) - row;
  }
  const std::string labels = TempPath("gru_labels.npy");
  ASSERT_TRUE(WriteNpy(labels, NpyArray::FromInt64({N}, argmax)).ok());

  // A PATH with `timeout` but no gnuplot.
  const std::string bin = TempPath("bin");
  mkdir(bin.c_str(), 0755);
  ASSERT_EQ(symlink("/usr/bin/timeout", (bin + "/timeout").c_str()), 0);
  const std::string old_path = std::getenv("PATH") ? std::getenv("PATH") : "";
  setenv("PATH", bin.c_str(), 1);
  const std::string art = TempPath("gru.rnnq");
  const std::string rep = TempPath("gru.json");
  const Result q = Tool("quantize " + dir + "/model.onnx --calibration " + dir +
                        "/input.npy --labels " + labels + " -o " + art +
                        " --report " + rep + " --plot " + TempPath("gru.png"));
  const Result bad =
      Tool("quantize " + dir + "/model.onnx --calibration " + dir +
           "/input.npy --labels " + kData + "/demo/heldout_targets.npy -o " +
           art + " --report " + rep);
  setenv("PATH", old_path.c_str(), 1);
  std::remove((bin + "/timeout").c_str());
  rmdir(bin.c_str());

  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("labels shaped"), std::string::npos) << bad.output;
  ASSERT_EQ(q.exit_code, 0) << q.output;
  EXPECT_NE(q.output.find("plot skipped: gnuplot not found"), std::string::npos)
      << q.output;
  EXPECT_EQ(q.output.find("runs f32 in the int8 variants"), std::string::npos)
      << q.output;
  const testing::Json r = MustParseJson(rep);
  EXPECT_FALSE(r.Find("plot")->Bool("written", true));
  EXPECT_NE(r.Find("plot")->Str("skipped").find("gnuplot"), std::string::npos);
  EXPECT_EQ(Number(*r.Find("reference"), "task_accuracy"), 1.0);
  const auto& variants = r.Find("variants")->array;
  EXPECT_EQ(variants.size(), 5u);
  for (const auto& v : variants) {
    const auto& layers = v.Find("layer_precisions")->array;
    ASSERT_EQ(layers.size(), 1u);
    // log2 is simulated with the f32 engine; every other variant is int8.
    EXPECT_EQ(layers[0].string, v.Str("weights") == "log2" ? "f32" : "int8")
        << v.Str("name");
    EXPECT_EQ(v.Find("per_step_mean_abs_error")->array.size(), 1u);
  }
  for (const auto& p : {art, rep, labels}) std::remove(p.c_str());
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
