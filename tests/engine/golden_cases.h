// Test helpers: the PyTorch golden cases of tests/testdata/goldens
// (manifest.json, written by tools/make_goldens.py).
#ifndef RNNSERVE_TESTS_ENGINE_GOLDEN_CASES_H_
#define RNNSERVE_TESTS_ENGINE_GOLDEN_CASES_H_

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/common/npy.h"
#include "server/engine/onnx_import.h"
#include "server/engine/run_types.h"
#include "server/engine/tensor_layout.h"
#include "tests/engine/test_json.h"

namespace rnnserve::testing {

inline std::string GoldenRoot() {
  return std::string(RNNSERVE_TESTDATA) + "/goldens";
}

// The whole file, or "" if it cannot be read.
inline std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

struct GoldenCase {
  Json json;        // the manifest entry
  std::string dir;  // absolute directory of the case

  std::string name() const { return json.Str("name"); }
  // Absolute path of files[key] ("input", "h0", "expected_hn", ...), or "".
  std::string File(const std::string& key) const {
    const Json* files = json.Find("files");
    const std::string f = files ? files->Str(key) : "";
    return f.empty() ? "" : dir + "/" + f;
  }
  std::string Model() const { return dir + "/model.onnx"; }
};

// Loads manifest.json; sets `error` (and returns {}) when it is missing or
// malformed.
inline std::vector<GoldenCase> LoadGoldenCases(std::string* error) {
  const std::string text = ReadFileOrEmpty(GoldenRoot() + "/manifest.json");
  if (text.empty()) {
    *error = "cannot read " + GoldenRoot() + "/manifest.json";
    return {};
  }
  Json root;
  if (!Json::Parse(text, &root, error)) return {};
  if (root.type != Json::Type::kArray) {
    *error = "manifest.json is not an array";
    return {};
  }
  std::vector<GoldenCase> cases;
  for (const Json& entry : root.array) {
    const std::string dir = entry.Str("dir", entry.Str("name"));
    cases.push_back({entry, GoldenRoot() + "/" + dir});
  }
  return cases;
}

// One golden case made ready to run: the imported spec, the batch-major
// inputs (and initial states) as a RunInput, and PyTorch's expected arrays.
struct GoldenRun {
  engine::ModelSpec spec;
  int batch = 0;
  int steps = 0;
  std::vector<float> features;
  std::vector<int64_t> tokens;
  std::vector<engine::LayerState> initial;
  engine::RunInput input;  // points into the members above: do not copy
  NpyArray expected, expected_hn, expected_cn;
  bool has_cn = false;
};

inline NpyArray MustReadNpy(const std::string& path) {
  StatusOr<NpyArray> array = ReadNpy(path);
  EXPECT_TRUE(array.ok()) << array.status().ToString();
  return array.ok() ? std::move(array).value() : NpyArray{};
}

// Imports and loads `c`; returns false (with a test failure) on error.
inline bool PrepareGoldenRun(const GoldenCase& c, GoldenRun* run) {
  StatusOr<engine::ModelSpec> imported = engine::ImportOnnxFile(c.Model());
  EXPECT_TRUE(imported.ok()) << imported.status().ToString();
  if (!imported.ok()) return false;
  run->spec = std::move(imported).value();
  const engine::ModelSpec& spec = run->spec;
  const NpyArray input = MustReadNpy(c.File("input"));
  EXPECT_GE(input.shape.size(), 2u);
  if (input.shape.size() < 2) return false;
  // The graph's layout: [N, T, ...] or [T, N, ...].
  run->batch = static_cast<int>(spec.batch_first ? input.shape[0] : input.shape[1]);
  run->steps = static_cast<int>(spec.batch_first ? input.shape[1] : input.shape[0]);
  const int width = input.shape.size() == 3 ? static_cast<int>(input.shape[2]) : 1;
  engine::RunInput& in = run->input;
  in = engine::RunInput();
  in.batch = run->batch;
  in.steps = run->steps;
  if (spec.input_kind == engine::InputKind::kTokenIds) {
    run->tokens = input.ToInt64();
    if (!spec.batch_first) {
      run->tokens = engine::SequenceToBatchMajor(run->tokens.data(), run->steps,
                                                 run->batch, 1);
    }
    in.tokens = run->tokens.data();
  } else {
    run->features = input.ToFloat();
    if (!spec.batch_first) {
      run->features = engine::SequenceToBatchMajor(run->features.data(), run->steps,
                                                   run->batch, width);
    }
    in.features = run->features.data();
  }
  if (!c.File("h0").empty()) {
    const std::vector<float> h0 = MustReadNpy(c.File("h0")).ToFloat();
    std::vector<float> c0;
    if (!c.File("c0").empty()) c0 = MustReadNpy(c.File("c0")).ToFloat();
    StatusOr<std::vector<engine::LayerState>> split = engine::SplitStates(
        spec, run->batch, h0.data(), c0.empty() ? nullptr : c0.data());
    EXPECT_TRUE(split.ok()) << split.status().ToString();
    if (!split.ok()) return false;
    run->initial = std::move(split).value();
    in.initial_state = &run->initial;
  }
  run->expected = MustReadNpy(c.File("expected"));
  run->expected_hn = MustReadNpy(c.File("expected_hn"));
  run->has_cn = !c.File("expected_cn").empty();
  if (run->has_cn) run->expected_cn = MustReadNpy(c.File("expected_cn"));
  return true;
}

// Largest |a - b|; infinity when the sizes differ.
inline double MaxAbsDifference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 1e30;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(a[i] - b[i])));
  }
  return worst;
}

// Checks an engine's output for `run` against PyTorch's: shape, main output,
// final h and c, each within `tolerance`.
inline void ExpectMatchesGolden(const GoldenRun& run, const engine::RunOutput& out,
                                double tolerance) {
  std::vector<float> actual = out.output;
  std::vector<int64_t> shape = out.shape;
  if (!run.spec.batch_first && !run.spec.last_step_only) {
    actual = engine::BatchToSequenceMajor(actual.data(), run.batch, run.steps,
                                          static_cast<int>(shape[2]));
    std::swap(shape[0], shape[1]);
  }
  EXPECT_EQ(shape, run.expected.shape);
  EXPECT_LE(MaxAbsDifference(actual, run.expected.ToFloat()), tolerance) << "output";
  EXPECT_LE(MaxAbsDifference(
                engine::MergeStates(out.final_state, engine::StateKind::kHidden),
                run.expected_hn.ToFloat()),
            tolerance)
      << "h_n";
  if (run.has_cn) {
    EXPECT_LE(MaxAbsDifference(
                  engine::MergeStates(out.final_state, engine::StateKind::kCell),
                  run.expected_cn.ToFloat()),
              tolerance)
        << "c_n";
  } else {
    EXPECT_TRUE(engine::MergeStates(out.final_state, engine::StateKind::kCell).empty());
  }
}

}  // namespace rnnserve::testing

#endif  // RNNSERVE_TESTS_ENGINE_GOLDEN_CASES_H_
