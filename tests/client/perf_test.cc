#include "client/perf.h"

#include <gtest/gtest.h>

#include <regex>

namespace rnnserve::client {
namespace {

TEST(PercentileTest, NearestRank) {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  EXPECT_EQ(Percentile(v, 50), 50);
  EXPECT_EQ(Percentile(v, 90), 90);
  EXPECT_EQ(Percentile(v, 99), 99);
  EXPECT_EQ(Percentile(v, 100), 100);
  // Five samples: the 50th percentile is the 3rd, the 90th and 99th the 5th.
  const std::vector<double> five = {1, 2, 3, 4, 50};
  EXPECT_EQ(Percentile(five, 50), 3);
  EXPECT_EQ(Percentile(five, 90), 50);
  EXPECT_EQ(Percentile(five, 99), 50);
  EXPECT_EQ(Percentile({7}, 50), 7);
  EXPECT_EQ(Percentile({}, 50), 0);
}

TEST(MakePerfReportTest, CountsThroughputErrorsAndBatchSizes) {
  PerfCounts a, b;
  a.latencies_ms = {4, 1, 3};
  a.sequences = 3;
  a.batch_size_sum = 6;
  a.batch_size_count = 3;
  b.latencies_ms = {2};
  b.sequences = 1;
  b.errors_by_code["UNAVAILABLE"] = 2;
  b.first_error = "UNAVAILABLE: down";
  a.Merge(b);
  const PerfReport r = MakePerfReport(a, 2, 2.0, "unary");
  EXPECT_EQ(r.requests, 6);
  EXPECT_EQ(r.errors, 2);
  EXPECT_DOUBLE_EQ(r.throughput_infer_per_s, 2.0);  // 4 successes / 2 s
  EXPECT_DOUBLE_EQ(r.throughput_seq_per_s, 2.0);
  EXPECT_EQ(r.p50_ms, 2);
  EXPECT_EQ(r.max_ms, 4);
  ASSERT_TRUE(r.mean_batch_size.has_value());
  EXPECT_DOUBLE_EQ(*r.mean_batch_size, 2.0);
  EXPECT_EQ(r.first_error, "UNAVAILABLE: down");
}

TEST(FormatPerfJsonTest, OneLineWithExactlyTheDocumentedKeys) {
  PerfCounts c;
  c.latencies_ms = {1.5, 2.5};
  c.sequences = 2;
  c.errors_by_code["DEADLINE_EXCEEDED"] = 1;
  const std::string json = FormatPerfJson(MakePerfReport(c, 3, 1.0, "unary"));
  EXPECT_EQ(json.find('\n'), std::string::npos);
  std::vector<std::string> keys;
  const std::regex key("\"([a-zA-Z0-9_]+)\":");
  for (auto it = std::sregex_iterator(json.begin(), json.end(), key);
       it != std::sregex_iterator(); ++it) {
    keys.push_back((*it)[1]);
  }
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "throughput_infer_per_s", "throughput_seq_per_s",
                      "p50_ms", "p90_ms", "p99_ms", "max_ms", "requests",
                      "errors", "errors_by_code", "DEADLINE_EXCEEDED",
                      "mean_batch_size", "concurrency", "duration_s"}))
      << json;
  EXPECT_NE(json.find("\"mean_batch_size\": null"), std::string::npos) << json;
  EXPECT_NE(json.find("\"requests\": 3"), std::string::npos) << json;
  EXPECT_NE(json.find("\"concurrency\": 3"), std::string::npos) << json;
}

inference::ModelMetadataResponse Metadata(const std::string& dtype,
                                          std::vector<int64_t> shape) {
  inference::ModelMetadataResponse m;
  m.set_name("m");
  auto* in = m.add_inputs();
  in->set_name("x");
  in->set_datatype(dtype);
  for (int64_t d : shape) in->add_shape(d);
  return m;
}

TEST(PlanInputsTest, TokenAndFeatureModels) {
  PerfOptions o;
  o.steps = 12;
  auto tokens = PlanInputs(Metadata("INT64", {-1, -1}), o, 4);
  ASSERT_TRUE(tokens.ok()) << tokens.status().ToString();
  EXPECT_EQ(tokens->input_name, "x");
  EXPECT_EQ(tokens->dtype, NpyDtype::kInt64);
  EXPECT_EQ(tokens->shape, (std::vector<int64_t>{4, 12}));
  auto features = PlanInputs(Metadata("FP32", {-1, 20, 6}), o, 2);
  ASSERT_TRUE(features.ok()) << features.status().ToString();
  EXPECT_EQ(features->shape, (std::vector<int64_t>{2, 20, 6}));  // fixed T wins
}

TEST(PlanInputsTest, RejectsWhatItCannotGenerate) {
  PerfOptions o;
  EXPECT_FALSE(
      PlanInputs(Metadata("FP32", {-1, -1, -1}), o, 1).ok());  // unknown F
  EXPECT_FALSE(PlanInputs(Metadata("BYTES", {-1, -1}), o, 1).ok());
  EXPECT_FALSE(PlanInputs(Metadata("INT64", {-1, -1, 3}), o, 1).ok());
  EXPECT_FALSE(PlanInputs(Metadata("INT64", {8, -1}), o, 1).ok());  // fixed N
}

TEST(RandomInputTest, DrawsValidValues) {
  std::mt19937_64 rng(7);
  InputPlan ids{"x", NpyDtype::kInt64, {8, 50}};
  const NpyArray t = RandomInput(ids, 5, &rng);
  EXPECT_EQ(t.shape, ids.shape);
  bool saw_top = false;
  for (int64_t v : t.ToInt64()) {
    EXPECT_GE(v, 0);
    EXPECT_LT(v, 5);
    saw_top |= v == 4;
  }
  EXPECT_TRUE(saw_top);
  InputPlan ids32{"x", NpyDtype::kInt32, {2, 3}};
  EXPECT_EQ(RandomInput(ids32, 5, &rng).dtype, NpyDtype::kInt32);
  InputPlan features{"x", NpyDtype::kFloat32, {2, 3, 4}};
  const NpyArray f = RandomInput(features, 0, &rng);
  EXPECT_EQ(f.size(), 24);
  for (float v : f.ToFloat()) {
    EXPECT_GE(v, -1.0f);
    EXPECT_LT(v, 1.0f);
  }
}

}  // namespace
}  // namespace rnnserve::client
