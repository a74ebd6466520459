#include "server/engine/artifact.h"

#include <gtest/gtest.h>

#include "server/engine/rnn_model.h"
#include "server/engine/sequence_io.h"
#include "tests/engine/test_models.h"

namespace rnnserve::engine {
namespace {

using testing::RandomModel;
using testing::RandomModelOptions;
using testing::RandomSequences;

struct Fixture {
  ModelSpec spec;
  QuantizationSpec q;
  std::string bytes;
};

Fixture Make(CellType second_cell = CellType::kLstm) {
  RandomModelOptions o;
  o.tokens = true;
  o.layers = 2;
  o.directions = 2;
  o.head_out = 5;
  o.activation = OutputActivation::kLogSoftmax;
  o.input_size = 16;
  o.hidden_size = 48;
  Fixture f;
  f.spec = RandomModel(o);
  if (second_cell == CellType::kGru) {
    RandomModelOptions g = o;
    g.cell = CellType::kGru;
    f.spec = RandomModel(g);
  }
  auto q = Calibrate(f.spec, RandomSequences(f.spec, 8, 12, 2), {});
  EXPECT_TRUE(q.ok());
  f.q = *q;
  auto bytes = SerializeArtifact(f.spec, f.q, "abc123", "model.onnx");
  EXPECT_TRUE(bytes.ok());
  f.bytes = *bytes;
  return f;
}

// The int8 model rebuilt from a parsed artifact computes exactly what the
// calibrated model it was written from computes.
void ExpectSameInt8Outputs(const Fixture& f, const LoadedArtifact& loaded) {
  RnnModelOptions o;
  o.precision = Precision::kInt8;
  o.quantization = std::make_shared<const QuantizationSpec>(f.q);
  auto original = RnnModel::Create(std::make_shared<const ModelSpec>(f.spec), o);
  o.quantization = std::make_shared<const QuantizationSpec>(loaded.quantization);
  auto reloaded = RnnModel::Create(std::make_shared<const ModelSpec>(loaded.spec), o);
  ASSERT_TRUE(original.ok() && reloaded.ok());
  const SequenceSet x = RandomSequences(f.spec, 3, 9, 5);
  RunOutput a, b;
  ASSERT_TRUE((*original)->Run(SliceSequences(f.spec, x, 0, 3), &a).ok());
  ASSERT_TRUE((*reloaded)->Run(SliceSequences(f.spec, x, 0, 3), &b).ok());
  EXPECT_EQ(a.output, b.output);
}

TEST(ArtifactTest, RoundTripRunsIdenticallyToTheCalibratedModel) {
  const Fixture f = Make();
  ASSERT_TRUE(LooksLikeArtifact(f.bytes));
  auto loaded = ParseArtifact(f.bytes, "test.rnnq");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->source_sha256, "abc123");
  EXPECT_EQ(loaded->spec.layers.size(), 2u);
  EXPECT_EQ(loaded->spec.embedding.table, f.spec.embedding.table);
  EXPECT_EQ(loaded->spec.head.weight, f.spec.head.weight);
  EXPECT_EQ(loaded->quantization.layers[1].w_iter_s8, f.q.layers[1].w_iter_s8);
  EXPECT_EQ(loaded->quantization.layers[0].weight_scales,
            f.q.layers[0].weight_scales);

  ExpectSameInt8Outputs(f, *loaded);
}

TEST(ArtifactTest, AboutFourTimesSmallerThanF32Weights) {
  const Fixture f = Make();
  const int64_t f32_bytes = f.spec.ParameterCount() * 4;
  EXPECT_LT(static_cast<double>(f.bytes.size()), 0.4 * f32_bytes)
      << f.bytes.size() << " vs " << f32_bytes;
}

TEST(ArtifactTest, GruLayersRoundTripInInt8) {
  const Fixture f = Make(CellType::kGru);
  auto loaded = ParseArtifact(f.bytes, "gru.rnnq");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_TRUE(loaded->quantization.layers[0].quantized);
  EXPECT_EQ(loaded->quantization.layers[0].w_layer_s8, f.q.layers[0].w_layer_s8);
  ExpectSameInt8Outputs(f, *loaded);
}

TEST(ArtifactTest, UnquantizedLayersKeepF32Weights) {
  Fixture f = Make(CellType::kGru);
  for (auto& l : f.q.layers) l = LayerQuantization();
  auto bytes = SerializeArtifact(f.spec, f.q, "abc", "gru.onnx");
  ASSERT_TRUE(bytes.ok());
  auto loaded = ParseArtifact(*bytes, "gru.rnnq");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_FALSE(loaded->quantization.layers[0].quantized);
  EXPECT_EQ(loaded->spec.layers[0].w_layer, f.spec.layers[0].w_layer);
}

TEST(ArtifactTest, CorruptTruncatedAndForeignFilesAreClearErrors) {
  const Fixture f = Make();
  for (size_t cut : {size_t{0}, size_t{5}, f.bytes.size() / 2, f.bytes.size() - 1}) {
    auto r = ParseArtifact(f.bytes.substr(0, cut), "cut.rnnq");
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << cut;
    EXPECT_NE(r.status().message().find("cut.rnnq"), std::string::npos);
  }
  std::string garbage(1000, '\0');
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>(i * 131 + 7);
  EXPECT_EQ(ParseArtifact(garbage, "g").status().code(), StatusCode::kInvalidArgument);
  // Flip bytes throughout a valid file: never a crash, either an error or a
  // model that still validates.
  for (size_t i = 0; i < f.bytes.size(); i += 37) {
    std::string b = f.bytes;
    b[i] = static_cast<char>(b[i] ^ 0x5a);
    auto r = ParseArtifact(b, "flip");
    if (r.ok()) {
      EXPECT_EQ(ValidateModelSpec(r->spec), "");
    }
  }
  EXPECT_EQ(LoadArtifactFile("/nonexistent/x.rnnq").status().code(),
            StatusCode::kNotFound);
}

TEST(ArtifactTest, Sha256OfKnownVector) {
  // FIPS 180-2 test vector.
  EXPECT_EQ(Sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace rnnserve::engine
