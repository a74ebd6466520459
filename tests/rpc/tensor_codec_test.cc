#include "server/rpc/tensor_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "proto/grpc_service.pb.h"
#include "server/common/status.h"
#include "server/config/model_config.h"
#include "server/engine/model_spec.h"

namespace rnnserve::rpc {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int64_t kVocab = 10;
constexpr int kFeatures = 3;

// A character-level token model: ids in [0, 10), INT64 [N, T] in,
// FP32 [N, T, 10] out.
engine::ModelSpec TokenSpec() {
  engine::ModelSpec spec;
  spec.input_name = "tokens";
  spec.input_kind = engine::InputKind::kTokenIds;
  spec.input_type = engine::ElementType::kInt64;
  spec.feature_size = 4;  // embedding dim: irrelevant to the codec
  spec.output_name = "logits";
  spec.has_embedding = true;
  spec.embedding.vocab_size = kVocab;
  spec.embedding.dim = 4;
  spec.has_head = true;
  spec.head.in_features = 8;
  spec.head.out_features = static_cast<int>(kVocab);
  return spec;
}

// A feature model: FP32 [N, T, 3] in, FP32 [N, 2] (last step) out.
engine::ModelSpec FeatureSpec() {
  engine::ModelSpec spec;
  spec.input_name = "x";
  spec.input_kind = engine::InputKind::kFeatures;
  spec.input_type = engine::ElementType::kFloat32;
  spec.feature_size = kFeatures;
  spec.output_name = "y";
  spec.last_step_only = true;
  spec.has_head = true;
  spec.head.in_features = 8;
  spec.head.out_features = 2;
  return spec;
}

config::ModelConfig ConfigFor(const engine::ModelSpec& spec,
                              const std::string& name,
                              int max_sequence_length = 64) {
  config::ModelConfig defaults;
  defaults.max_sequence_length = max_sequence_length;
  return config::InferModelConfig(spec, name, false, defaults);
}

// Little-endian bytes written digit by digit, independently of the codec's
// memcpy.
std::string LittleEndian(uint64_t bits, int size) {
  std::string out;
  for (int i = 0; i < size; ++i) {
    out.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  }
  return out;
}

std::string RawInt64(const std::vector<int64_t>& values) {
  std::string out;
  for (int64_t v : values) out += LittleEndian(static_cast<uint64_t>(v), 8);
  return out;
}

std::string RawInt32(const std::vector<int32_t>& values) {
  std::string out;
  for (int32_t v : values) {
    out += LittleEndian(static_cast<uint32_t>(v), 4);
  }
  return out;
}

uint32_t FloatBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

std::string RawFloat(const std::vector<float>& values) {
  std::string out;
  for (float v : values) out += LittleEndian(FloatBits(v), 4);
  return out;
}

ModelInferRequest::InferInputTensor* AddInput(
    ModelInferRequest* request, const std::string& name,
    const std::string& datatype, const std::vector<int64_t>& shape) {
  auto* input = request->add_inputs();
  input->set_name(name);
  input->set_datatype(datatype);
  for (int64_t d : shape) input->add_shape(d);
  return input;
}

ModelInferRequest TypedTokens(const std::vector<int64_t>& shape,
                              const std::vector<int64_t>& ids) {
  ModelInferRequest request;
  auto* input = AddInput(&request, "tokens", "INT64", shape);
  for (int64_t id : ids) input->mutable_contents()->add_int64_contents(id);
  return request;
}

ModelInferRequest RawTokens(const std::vector<int64_t>& shape,
                            const std::vector<int64_t>& ids) {
  ModelInferRequest request;
  AddInput(&request, "tokens", "INT64", shape);
  request.add_raw_input_contents(RawInt64(ids));
  return request;
}

ModelInferRequest TypedFeatures(const std::vector<int64_t>& shape,
                                const std::vector<float>& values) {
  ModelInferRequest request;
  auto* input = AddInput(&request, "x", "FP32", shape);
  for (float v : values) input->mutable_contents()->add_fp32_contents(v);
  return request;
}

ModelInferRequest RawFeatures(const std::vector<int64_t>& shape,
                              const std::vector<float>& values) {
  ModelInferRequest request;
  AddInput(&request, "x", "FP32", shape);
  request.add_raw_input_contents(RawFloat(values));
  return request;
}

InferParameter Int64Param(int64_t v) {
  InferParameter p;
  p.set_int64_param(v);
  return p;
}
InferParameter Uint64Param(uint64_t v) {
  InferParameter p;
  p.set_uint64_param(v);
  return p;
}
InferParameter StringParam(const std::string& v) {
  InferParameter p;
  p.set_string_param(v);
  return p;
}
InferParameter BoolParam(bool v) {
  InferParameter p;
  p.set_bool_param(v);
  return p;
}
InferParameter DoubleParam(double v) {
  InferParameter p;
  p.set_double_param(v);
  return p;
}

void SetParam(ModelInferRequest* request, const std::string& name,
              const InferParameter& p) {
  (*request->mutable_parameters())[name] = p;
}

class TokenCodecTest : public ::testing::Test {
 protected:
  StatusOr<DecodedRequest> Decode(const ModelInferRequest& request) {
    return DecodeInferRequest(request, config_, spec_);
  }
  // Expects INVALID_ARGUMENT with a message starting with `field`.
  void ExpectError(const ModelInferRequest& request, const std::string& field) {
    const StatusOr<DecodedRequest> decoded = Decode(request);
    ASSERT_FALSE(decoded.ok());
    EXPECT_EQ(decoded.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(decoded.status().message(), StartsWith(field + ":"));
  }

  engine::ModelSpec spec_ = TokenSpec();
  config::ModelConfig config_ = ConfigFor(spec_, "charlm");
};

class FeatureCodecTest : public TokenCodecTest {
 protected:
  FeatureCodecTest() {
    spec_ = FeatureSpec();
    config_ = ConfigFor(spec_, "sensor", 16);
  }
};

// The test's own copy of the sequences, one row per batch entry.
const std::vector<int64_t> kIds = {0, 1, 9, 3, 4, 5};  // [2, 3]

TEST_F(TokenCodecTest, DecodesTypedInt64) {
  const StatusOr<DecodedRequest> decoded = Decode(TypedTokens({2, 3}, kIds));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->batch, 2);
  EXPECT_EQ(decoded->steps, 3);
  EXPECT_EQ(decoded->tokens, (std::vector<int64_t>{0, 1, 9, 3, 4, 5}));
  EXPECT_TRUE(decoded->features.empty());
  EXPECT_FALSE(decoded->raw);
  EXPECT_EQ(decoded->sequence.id, 0u);
  EXPECT_FALSE(decoded->sequence.start);
  EXPECT_FALSE(decoded->sequence.end);
  EXPECT_FALSE(decoded->timeout_us.has_value());
}

TEST_F(TokenCodecTest, DecodesRawInt64) {
  const StatusOr<DecodedRequest> decoded = Decode(RawTokens({2, 3}, kIds));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->batch, 2);
  EXPECT_EQ(decoded->steps, 3);
  EXPECT_EQ(decoded->tokens, (std::vector<int64_t>{0, 1, 9, 3, 4, 5}));
  EXPECT_TRUE(decoded->raw);
}

TEST_F(TokenCodecTest, WidensTypedInt32) {
  ModelInferRequest request;
  auto* input = AddInput(&request, "tokens", "INT32", {1, 4});
  for (int32_t id : {7, 0, 9, 2}) {
    input->mutable_contents()->add_int_contents(id);
  }
  const StatusOr<DecodedRequest> decoded = Decode(request);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->tokens, (std::vector<int64_t>{7, 0, 9, 2}));
  EXPECT_FALSE(decoded->raw);
}

TEST_F(TokenCodecTest, WidensRawInt32) {
  ModelInferRequest request;
  AddInput(&request, "tokens", "INT32", {2, 2});
  request.add_raw_input_contents(RawInt32({9, 8, 1, 0}));
  const StatusOr<DecodedRequest> decoded = Decode(request);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->tokens, (std::vector<int64_t>{9, 8, 1, 0}));
  EXPECT_TRUE(decoded->raw);
}

TEST_F(TokenCodecTest, AcceptsInt64WhenConfigAdvertisesInt32) {
  spec_.input_type = engine::ElementType::kInt32;
  config_ = ConfigFor(spec_, "charlm");
  ASSERT_EQ(config_.inputs[0].dtype, engine::ElementType::kInt32);
  const StatusOr<DecodedRequest> decoded = Decode(RawTokens({2, 3}, kIds));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->tokens, kIds);
}

TEST_F(TokenCodecTest, RejectsTokenIdEqualToVocab) {
  const StatusOr<DecodedRequest> decoded =
      Decode(TypedTokens({2, 3}, {0, 1, 2, 3, 4, 10}));
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(decoded.status().message(), StartsWith("inputs[0] element 5"));
  EXPECT_THAT(decoded.status().message(),
              HasSubstr("token id 10 outside the vocabulary [0, 10)"));
}

TEST_F(TokenCodecTest, RejectsNegativeTokenId) {
  const StatusOr<DecodedRequest> decoded =
      Decode(RawTokens({1, 3}, {0, -1, 2}));
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(decoded.status().message(), StartsWith("inputs[0] element 1"));
  EXPECT_THAT(decoded.status().message(), HasSubstr("token id -1"));
}

TEST_F(TokenCodecTest, RejectsNegativeRawInt32TokenAfterWidening) {
  ModelInferRequest request;
  AddInput(&request, "tokens", "INT32", {1, 2});
  request.add_raw_input_contents(RawInt32({3, -2147483647 - 1}));
  const StatusOr<DecodedRequest> decoded = Decode(request);
  ASSERT_FALSE(decoded.ok());
  EXPECT_THAT(decoded.status().message(), StartsWith("inputs[0] element 1"));
  EXPECT_THAT(decoded.status().message(), HasSubstr("token id -2147483648"));
}

TEST_F(TokenCodecTest, RejectsFeatureDatatype) {
  ModelInferRequest request = TypedFeatures({1, 1, 3}, {1, 2, 3});
  request.mutable_inputs(0)->set_name("tokens");
  ExpectError(request, "inputs[0].datatype");
  EXPECT_THAT(Decode(request).status().message(), HasSubstr("\"FP32\""));
}

TEST_F(TokenCodecTest, RejectsUnknownDatatypes) {
  for (const char* datatype :
       {"FP16", "BYTES", "int64", "fp32", "UINT8", "INT8", "", "INT64 "}) {
    SCOPED_TRACE(datatype);
    ModelInferRequest request = TypedTokens({2, 3}, kIds);
    request.mutable_inputs(0)->set_datatype(datatype);
    ExpectError(request, "inputs[0].datatype");
  }
}

TEST_F(TokenCodecTest, RejectsWrongInputCount) {
  ModelInferRequest none;
  ExpectError(none, "inputs");
  ModelInferRequest two = TypedTokens({2, 3}, kIds);
  *two.add_inputs() = two.inputs(0);
  ExpectError(two, "inputs");
  EXPECT_THAT(Decode(two).status().message(), HasSubstr("(got 2)"));
}

TEST_F(TokenCodecTest, RejectsWrongInputName) {
  ModelInferRequest request = TypedTokens({2, 3}, kIds);
  request.mutable_inputs(0)->set_name("input_ids");
  ExpectError(request, "inputs[0].name");
  EXPECT_THAT(Decode(request).status().message(), HasSubstr("'tokens'"));
}

TEST_F(TokenCodecTest, RejectsWrongRank) {
  ExpectError(TypedTokens({2, 3, 1}, kIds), "inputs[0].shape");
  ExpectError(TypedTokens({6}, kIds), "inputs[0].shape");
  ExpectError(TypedTokens({}, kIds), "inputs[0].shape");
}

TEST_F(TokenCodecTest, RejectsEmptyBatch) {
  ExpectError(TypedTokens({0, 3}, {}), "inputs[0].shape[0]");
  ExpectError(RawTokens({0, 3}, {}), "inputs[0].shape[0]");
}

TEST_F(TokenCodecTest, RejectsZeroSteps) {
  ExpectError(TypedTokens({2, 0}, {}), "inputs[0].shape[1]");
}

TEST_F(TokenCodecTest, RejectsNegativeDims) {
  ExpectError(TypedTokens({-1, 3}, kIds), "inputs[0].shape[0]");
  ExpectError(TypedTokens({2, -3}, kIds), "inputs[0].shape[1]");
  ExpectError(TypedTokens({std::numeric_limits<int64_t>::min(), 3}, kIds),
              "inputs[0].shape[0]");
}

TEST_F(TokenCodecTest, StepsLimitedByMaxSequenceLength) {
  const std::vector<int64_t> ids64(64, 1);
  EXPECT_TRUE(Decode(TypedTokens({1, 64}, ids64)).ok());
  const std::vector<int64_t> ids65(65, 1);
  ExpectError(TypedTokens({1, 65}, ids65), "inputs[0].shape[1]");
  EXPECT_THAT(Decode(TypedTokens({1, 65}, ids65)).status().message(),
              HasSubstr("65 steps exceed the model's max_sequence_length 64"));
}

TEST_F(TokenCodecTest, FixedStepsMustMatch) {
  config_.inputs[0].dims = {-1, 3};
  EXPECT_TRUE(Decode(TypedTokens({2, 3}, kIds)).ok());
  ExpectError(TypedTokens({3, 2}, kIds), "inputs[0].shape[1]");
  EXPECT_THAT(Decode(TypedTokens({3, 2}, kIds)).status().message(),
              HasSubstr("exactly 3 steps (got 2)"));
}

TEST_F(TokenCodecTest, RejectsHugeShapesWithoutAllocating) {
  const int64_t big = int64_t{1} << 40;
  ExpectError(TypedTokens({big, big}, kIds), "inputs[0].shape[0]");
  ExpectError(RawTokens({big, 1}, kIds), "inputs[0].shape[0]");
  // A batch that fits an int but whose data is absent: the byte count is
  // checked before anything is allocated.
  ModelInferRequest request = RawTokens({int64_t{1} << 30, 2}, kIds);
  ExpectError(request, "raw_input_contents[0]");
  EXPECT_THAT(Decode(request).status().message(),
              HasSubstr("48 bytes, expected 17179869184"));
  ExpectError(TypedTokens({int64_t{1} << 30, 2}, kIds), "inputs[0].contents");
}

TEST_F(TokenCodecTest, RejectsElementCountOverflow) {
  config_.max_sequence_length = std::numeric_limits<int>::max();
  const int64_t big = std::numeric_limits<int>::max();
  // 2^31-1 squared fits int64, but not times 8 bytes.
  const ModelInferRequest request = RawTokens({big, big}, kIds);
  ExpectError(request, "inputs[0].shape");
  EXPECT_THAT(Decode(request).status().message(), HasSubstr("overflow"));
}

TEST_F(TokenCodecTest, RawByteLengthMustMatchExactly) {
  const std::vector<int64_t> ids(50, 3);
  ModelInferRequest request = RawTokens({1, 50}, ids);
  ASSERT_TRUE(Decode(request).ok());

  request.mutable_raw_input_contents(0)->resize(396);
  ExpectError(request, "raw_input_contents[0]");
  EXPECT_EQ(Decode(request).status().message(),
            "raw_input_contents[0]: 396 bytes, expected 400 for INT64 [1, 50]");

  request.mutable_raw_input_contents(0)->resize(399);
  ExpectError(request, "raw_input_contents[0]");
  request.mutable_raw_input_contents(0)->resize(401);
  ExpectError(request, "raw_input_contents[0]");
  request.mutable_raw_input_contents(0)->clear();
  ExpectError(request, "raw_input_contents[0]");
}

TEST_F(TokenCodecTest, RawInt32LengthUsesFourBytes) {
  ModelInferRequest request;
  AddInput(&request, "tokens", "INT32", {2, 3});
  request.add_raw_input_contents(RawInt64(kIds));  // 48 bytes, wants 24
  ExpectError(request, "raw_input_contents[0]");
  EXPECT_THAT(Decode(request).status().message(),
              HasSubstr("48 bytes, expected 24 for INT32 [2, 3]"));
}

TEST_F(TokenCodecTest, RejectsRawCountNotOnePerInput) {
  ModelInferRequest request = RawTokens({2, 3}, kIds);
  request.add_raw_input_contents(RawInt64(kIds));
  ExpectError(request, "raw_input_contents");
  EXPECT_THAT(Decode(request).status().message(),
              HasSubstr("2 entries, expected 1"));
}

TEST_F(TokenCodecTest, RejectsBothRawAndContents) {
  ModelInferRequest request = RawTokens({2, 3}, kIds);
  for (int64_t id : kIds) {
    request.mutable_inputs(0)->mutable_contents()->add_int64_contents(id);
  }
  ExpectError(request, "inputs[0].contents");
  EXPECT_THAT(Decode(request).status().message(),
              HasSubstr("raw_input_contents"));
}

TEST_F(TokenCodecTest, RejectsContentsInAnotherField) {
  ModelInferRequest request = TypedTokens({2, 3}, kIds);
  request.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1.0f);
  ExpectError(request, "inputs[0].contents");
  EXPECT_THAT(Decode(request).status().message(), HasSubstr("fp32_contents"));

  // INT64 data in the INT32 field, and the reverse.
  ModelInferRequest narrow;
  auto* input = AddInput(&narrow, "tokens", "INT64", {1, 2});
  input->mutable_contents()->add_int_contents(1);
  input->mutable_contents()->add_int_contents(2);
  ExpectError(narrow, "inputs[0].contents");
  EXPECT_THAT(Decode(narrow).status().message(), HasSubstr("int64_contents"));

  ModelInferRequest wide = TypedTokens({1, 2}, {1, 2});
  wide.mutable_inputs(0)->set_datatype("INT32");
  ExpectError(wide, "inputs[0].contents");
}

TEST_F(TokenCodecTest, RejectsWrongContentsCount) {
  ExpectError(TypedTokens({2, 3}, {1, 2, 3, 4, 5}), "inputs[0].contents");
  EXPECT_THAT(Decode(TypedTokens({2, 3}, {1, 2, 3, 4, 5})).status().message(),
              HasSubstr("5 elements in int64_contents, expected 6"));
  ExpectError(TypedTokens({2, 3}, {1, 2, 3, 4, 5, 6, 7}), "inputs[0].contents");
}

TEST_F(TokenCodecTest, RejectsMissingData) {
  ExpectError(TypedTokens({2, 3}, {}), "inputs[0].contents");
}

TEST_F(TokenCodecTest, RequestedOutputsMustBeTheModelsOutput) {
  ModelInferRequest request = TypedTokens({2, 3}, kIds);
  request.add_outputs()->set_name("logits");
  request.add_outputs()->set_name("logits");  // duplicates are fine
  EXPECT_TRUE(Decode(request).ok());
  request.add_outputs()->set_name("hidden");
  ExpectError(request, "outputs[2].name");
  EXPECT_THAT(Decode(request).status().message(), HasSubstr("'hidden'"));
}

TEST_F(TokenCodecTest, SequenceIdFromInt64Uint64AndString) {
  ModelInferRequest request = TypedTokens({2, 3}, kIds);
  SetParam(&request, "sequence_id", Int64Param(42));
  EXPECT_EQ(Decode(request)->sequence.id, 42u);

  SetParam(&request, "sequence_id",
           Uint64Param(std::numeric_limits<uint64_t>::max()));
  EXPECT_EQ(Decode(request)->sequence.id, std::numeric_limits<uint64_t>::max());

  SetParam(&request, "sequence_id", StringParam("18446744073709551615"));
  EXPECT_EQ(Decode(request)->sequence.id, std::numeric_limits<uint64_t>::max());

  SetParam(&request, "sequence_id", StringParam("0"));
  EXPECT_EQ(Decode(request)->sequence.id, 0u);
}

TEST_F(TokenCodecTest, RejectsBadSequenceIds) {
  ModelInferRequest request = TypedTokens({2, 3}, kIds);
  const std::vector<InferParameter> bad = {
      Int64Param(-1),
      StringParam(""),
      StringParam("-1"),
      StringParam("+5"),
      StringParam(" 5"),
      StringParam("5 "),
      StringParam("12a"),
      StringParam("0x10"),
      StringParam("18446744073709551616"),  // 2^64
      StringParam(std::string(10000, '9')),
      BoolParam(true),
      DoubleParam(3.0),
      InferParameter(),  // no value set
  };
  for (const InferParameter& p : bad) {
    SCOPED_TRACE(p.DebugString());
    SetParam(&request, "sequence_id", p);
    ExpectError(request, "parameters.sequence_id");
  }
}

TEST_F(TokenCodecTest, SequenceStartAndEndAreBools) {
  ModelInferRequest request = TypedTokens({2, 3}, kIds);
  SetParam(&request, "sequence_id", Uint64Param(7));
  SetParam(&request, "sequence_start", BoolParam(true));
  SetParam(&request, "sequence_end", BoolParam(false));
  StatusOr<DecodedRequest> decoded = Decode(request);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->sequence.id, 7u);
  EXPECT_TRUE(decoded->sequence.start);
  EXPECT_FALSE(decoded->sequence.end);

  SetParam(&request, "sequence_start", BoolParam(false));
  SetParam(&request, "sequence_end", BoolParam(true));
  decoded = Decode(request);
  ASSERT_TRUE(decoded.ok());
  EXPECT_FALSE(decoded->sequence.start);
  EXPECT_TRUE(decoded->sequence.end);
}

TEST_F(TokenCodecTest, RejectsNonBoolSequenceFlags) {
  for (const char* name : {"sequence_start", "sequence_end"}) {
    for (const InferParameter& p :
         {Int64Param(1), StringParam("true"), Uint64Param(1), DoubleParam(1),
          InferParameter()}) {
      SCOPED_TRACE(std::string(name) + " " + p.DebugString());
      ModelInferRequest request = TypedTokens({2, 3}, kIds);
      SetParam(&request, name, p);
      ExpectError(request, std::string("parameters.") + name);
    }
  }
}

TEST_F(TokenCodecTest, TimeoutInMicroseconds) {
  ModelInferRequest request = TypedTokens({2, 3}, kIds);
  SetParam(&request, "timeout", Int64Param(2500));
  EXPECT_EQ(Decode(request)->timeout_us, std::optional<int64_t>(2500));
  SetParam(&request, "timeout", Int64Param(0));
  EXPECT_FALSE(Decode(request)->timeout_us.has_value());
}

TEST_F(TokenCodecTest, RejectsBadTimeouts) {
  for (const InferParameter& p :
       {Int64Param(-1), StringParam("100"), Uint64Param(100), DoubleParam(1.5),
        BoolParam(true)}) {
    SCOPED_TRACE(p.DebugString());
    ModelInferRequest request = TypedTokens({2, 3}, kIds);
    SetParam(&request, "timeout", p);
    ExpectError(request, "parameters.timeout");
  }
}

TEST_F(TokenCodecTest, IgnoresOtherParameters) {
  ModelInferRequest request = TypedTokens({2, 3}, kIds);
  SetParam(&request, "priority", StringParam("high"));
  SetParam(&request, "binary_data_output", BoolParam(true));
  (*request.mutable_inputs(0)->mutable_parameters())["binary_data_size"] =
      Int64Param(48);
  EXPECT_TRUE(Decode(request).ok());
}

const std::vector<float> kFeatureValues = {0.5f,  -1.0f,  2.25f,  // n0 t0
                                           0.0f,  1e-30f, -7.0f,  // n0 t1
                                           3.0f,  4.0f,   5.0f,   // n1 t0
                                           -0.0f, 1e30f,  6.5f};  // n1 t1

TEST_F(FeatureCodecTest, DecodesTypedFeatures) {
  const StatusOr<DecodedRequest> decoded =
      Decode(TypedFeatures({2, 2, 3}, kFeatureValues));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->batch, 2);
  EXPECT_EQ(decoded->steps, 2);
  EXPECT_EQ(decoded->features,
            (std::vector<float>{0.5f, -1.0f, 2.25f, 0.0f, 1e-30f, -7.0f, 3.0f,
                                4.0f, 5.0f, -0.0f, 1e30f, 6.5f}));
  EXPECT_TRUE(decoded->tokens.empty());
  EXPECT_FALSE(decoded->raw);
}

TEST_F(FeatureCodecTest, DecodesRawFeaturesBitExactly) {
  const StatusOr<DecodedRequest> decoded =
      Decode(RawFeatures({2, 2, 3}, kFeatureValues));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_TRUE(decoded->raw);
  ASSERT_EQ(decoded->features.size(), kFeatureValues.size());
  for (size_t i = 0; i < kFeatureValues.size(); ++i) {
    EXPECT_EQ(FloatBits(decoded->features[i]), FloatBits(kFeatureValues[i]))
        << i;  // keeps -0.0 and denormal-free bits
  }
}

TEST_F(FeatureCodecTest, RejectsNonFiniteFeatures) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    float value;
    const char* word;
  };
  for (const Case& c :
       {Case{nan, "NaN"}, Case{inf, "+Inf"}, Case{-inf, "-Inf"}}) {
    for (bool raw : {false, true}) {
      SCOPED_TRACE(std::string(c.word) + (raw ? " raw" : " typed"));
      std::vector<float> values = kFeatureValues;
      values[10] = c.value;  // n1, t1, f1
      const ModelInferRequest request = raw ? RawFeatures({2, 2, 3}, values)
                                            : TypedFeatures({2, 2, 3}, values);
      const StatusOr<DecodedRequest> decoded = Decode(request);
      ASSERT_FALSE(decoded.ok());
      EXPECT_EQ(decoded.status().code(), StatusCode::kInvalidArgument);
      EXPECT_THAT(decoded.status().message(),
                  StartsWith("inputs[0] element 10"));
      EXPECT_THAT(decoded.status().message(), HasSubstr("[1, 1, 1]"));
      EXPECT_THAT(decoded.status().message(), HasSubstr(c.word));
    }
  }
}

TEST_F(FeatureCodecTest, RejectsWrongFeatureSize) {
  ExpectError(TypedFeatures({2, 3, 2}, std::vector<float>(12, 1.0f)),
              "inputs[0].shape[2]");
  EXPECT_THAT(Decode(TypedFeatures({2, 3, 2}, std::vector<float>(12, 1.0f)))
                  .status()
                  .message(),
              HasSubstr("3 features per step (got 2)"));
}

TEST_F(FeatureCodecTest, RejectsTokenDatatypesAndTokenRank) {
  for (const char* datatype : {"INT64", "INT32", "FP64", "FP16"}) {
    SCOPED_TRACE(datatype);
    ModelInferRequest request = TypedFeatures({2, 2, 3}, kFeatureValues);
    request.mutable_inputs(0)->set_datatype(datatype);
    ExpectError(request, "inputs[0].datatype");
  }
  ExpectError(TypedFeatures({2, 6}, kFeatureValues), "inputs[0].shape");
  ExpectError(TypedFeatures({2, 2, 3, 1}, kFeatureValues), "inputs[0].shape");
}

TEST_F(FeatureCodecTest, StepsAboveMaxAndOverflow) {
  ExpectError(TypedFeatures({1, 17, 3}, std::vector<float>(51, 0.0f)),
              "inputs[0].shape[1]");
  config_.max_sequence_length = std::numeric_limits<int>::max();
  const int64_t big = std::numeric_limits<int>::max();
  const ModelInferRequest request = RawFeatures({big, big, 3}, kFeatureValues);
  ExpectError(request, "inputs[0].shape");
  EXPECT_THAT(Decode(request).status().message(), HasSubstr("overflow"));
}

TEST_F(FeatureCodecTest, RawFeatureLengthOffByOne) {
  ModelInferRequest request = RawFeatures({2, 2, 3}, kFeatureValues);
  request.mutable_raw_input_contents(0)->push_back('\0');
  ExpectError(request, "raw_input_contents[0]");
  EXPECT_THAT(Decode(request).status().message(),
              HasSubstr("49 bytes, expected 48 for FP32 [2, 2, 3]"));
}

TEST_F(FeatureCodecTest, RejectsFeaturesInFp64Contents) {
  ModelInferRequest request;
  auto* input = AddInput(&request, "x", "FP32", {1, 1, 3});
  for (double v : {1.0, 2.0, 3.0}) {
    input->mutable_contents()->add_fp64_contents(v);
  }
  ExpectError(request, "inputs[0].contents");
  EXPECT_THAT(Decode(request).status().message(), HasSubstr("fp64_contents"));
}

// The response's raw bytes read back, independently of the codec.
std::vector<float> ReadLittleEndianFloats(const std::string& bytes) {
  std::vector<float> out;
  for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
    uint32_t bits = 0;
    for (int b = 0; b < 4; ++b) {
      bits |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + b]))
              << (8 * b);
    }
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    out.push_back(f);
  }
  return out;
}

const std::vector<float> kOutput = {0.25f, -1.5f, 3.0f, 1e-3f, -0.0f, 42.0f};

TEST_F(FeatureCodecTest, EncodesRawWhenAskedRaw) {
  ModelInferRequest request = RawFeatures({3, 2, 3}, {});
  request.set_id("req-7");
  ModelInferResponse response;
  response.set_model_name("stale");
  response.add_raw_output_contents("stale");
  EncodeInferResponse(request, config_, 4, {3, 2}, kOutput.data(), true,
                      &response);
  EXPECT_EQ(response.model_name(), "sensor");
  EXPECT_EQ(response.model_version(), "4");
  EXPECT_EQ(response.id(), "req-7");
  ASSERT_EQ(response.outputs_size(), 1);
  const auto& output = response.outputs(0);
  EXPECT_EQ(output.name(), "y");
  EXPECT_EQ(output.datatype(), "FP32");
  EXPECT_EQ(std::vector<int64_t>(output.shape().begin(), output.shape().end()),
            (std::vector<int64_t>{3, 2}));
  EXPECT_FALSE(output.has_contents());
  ASSERT_EQ(response.raw_output_contents_size(), 1);
  EXPECT_EQ(response.raw_output_contents(0).size(), 24u);
  const std::vector<float> back =
      ReadLittleEndianFloats(response.raw_output_contents(0));
  ASSERT_EQ(back.size(), kOutput.size());
  for (size_t i = 0; i < kOutput.size(); ++i) {
    EXPECT_EQ(FloatBits(back[i]), FloatBits(kOutput[i])) << i;
  }
}

TEST_F(FeatureCodecTest, EncodesTypedWhenAskedTyped) {
  ModelInferRequest request;
  ModelInferResponse response;
  response.set_id("stale");
  EncodeInferResponse(request, config_, 1, {2, 3}, kOutput.data(), false,
                      &response);
  EXPECT_EQ(response.id(), "");
  EXPECT_EQ(response.model_version(), "1");
  EXPECT_EQ(response.raw_output_contents_size(), 0);
  ASSERT_EQ(response.outputs_size(), 1);
  const auto& output = response.outputs(0);
  EXPECT_EQ(output.datatype(), "FP32");
  EXPECT_EQ(std::vector<int64_t>(output.shape().begin(), output.shape().end()),
            (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::vector<float>(output.contents().fp32_contents().begin(),
                               output.contents().fp32_contents().end()),
            kOutput);
}

TEST_F(TokenCodecTest, DecodeThenEncodeRoundTripKeepsTheRequestsForm) {
  for (bool raw : {false, true}) {
    SCOPED_TRACE(raw ? "raw" : "typed");
    ModelInferRequest request =
        raw ? RawTokens({2, 3}, kIds) : TypedTokens({2, 3}, kIds);
    request.set_id("abc");
    const StatusOr<DecodedRequest> decoded = Decode(request);
    ASSERT_TRUE(decoded.ok());
    // Pretend logits [2, 3, 10].
    std::vector<float> logits;
    for (int i = 0; i < 2 * 3 * 10; ++i) logits.push_back(i * 0.5f);
    ModelInferResponse response;
    EncodeInferResponse(request, config_, 2, {2, 3, 10}, logits.data(),
                        decoded->raw, &response);
    EXPECT_EQ(response.outputs(0).name(), "logits");
    EXPECT_EQ(response.id(), "abc");
    std::vector<float> back;
    if (raw) {
      ASSERT_EQ(response.raw_output_contents_size(), 1);
      EXPECT_FALSE(response.outputs(0).has_contents());
      back = ReadLittleEndianFloats(response.raw_output_contents(0));
    } else {
      EXPECT_EQ(response.raw_output_contents_size(), 0);
      const auto& c = response.outputs(0).contents().fp32_contents();
      back.assign(c.begin(), c.end());
    }
    ASSERT_EQ(back.size(), 60u);
    for (int i = 0; i < 60; ++i) EXPECT_EQ(back[i], i * 0.5f);
  }
}

TEST_F(FeatureCodecTest, EncodesAnEmptyTensor) {
  ModelInferResponse response;
  EncodeInferResponse(ModelInferRequest(), config_, 1, {0, 2}, nullptr, true,
                      &response);
  ASSERT_EQ(response.raw_output_contents_size(), 1);
  EXPECT_TRUE(response.raw_output_contents(0).empty());
  EncodeInferResponse(ModelInferRequest(), config_, 1, {0, 2}, nullptr, false,
                      &response);
  EXPECT_EQ(response.raw_output_contents_size(), 0);
  EXPECT_EQ(response.outputs(0).contents().fp32_contents_size(), 0);
}

// Random mutations of valid requests: every result is OK (then consistent
// with the shape) or INVALID_ARGUMENT, never a crash or a huge allocation.
void MutateRandomly(std::mt19937_64* rng, ModelInferRequest* request) {
  auto pick = [&](int n) {
    return static_cast<int>(std::uniform_int_distribution<int>(0, n - 1)(*rng));
  };
  const int64_t interesting[] = {-1,
                                 0,
                                 1,
                                 2,
                                 3,
                                 64,
                                 65,
                                 int64_t{1} << 31,
                                 int64_t{1} << 40,
                                 std::numeric_limits<int64_t>::max(),
                                 std::numeric_limits<int64_t>::min()};
  const char* datatypes[] = {"FP32", "INT64", "INT32", "FP16", "BYTES", ""};
  const char* params[] = {"sequence_id", "sequence_start", "sequence_end",
                          "timeout", "other"};
  const int mutations = 1 + pick(4);
  for (int m = 0; m < mutations; ++m) {
    auto* input = request->inputs_size() > 0 ? request->mutable_inputs(0)
                                             : request->add_inputs();
    switch (pick(9)) {
      case 0: {  // a shape dimension
        if (input->shape_size() == 0) input->add_shape(1);
        input->set_shape(pick(input->shape_size()), interesting[pick(11)]);
        break;
      }
      case 1:  // rank
        if (pick(2) == 0) {
          input->add_shape(interesting[pick(11)]);
        } else if (input->shape_size() > 0) {
          input->mutable_shape()->RemoveLast();
        }
        break;
      case 2: {  // raw byte length
        if (request->raw_input_contents_size() == 0) {
          request->add_raw_input_contents();
        }
        request->mutable_raw_input_contents(0)->resize(pick(200), '\x01');
        break;
      }
      case 3:
        input->set_datatype(datatypes[pick(6)]);
        break;
      case 4: {  // a parameter of a random type and value
        InferParameter p;
        switch (pick(6)) {
          case 0:
            p.set_bool_param(pick(2));
            break;
          case 1:
            p.set_int64_param(interesting[pick(11)]);
            break;
          case 2:
            p.set_uint64_param(static_cast<uint64_t>((*rng)()));
            break;
          case 3:
            p.set_string_param(std::to_string((*rng)()) + (pick(2) ? "" : "x"));
            break;
          case 4:
            p.set_double_param(0.5);
            break;
          default:
            break;
        }
        SetParam(request, params[pick(5)], p);
        break;
      }
      case 5:  // random typed contents
        switch (pick(4)) {
          case 0:
            input->mutable_contents()->add_fp32_contents(
                std::numeric_limits<float>::quiet_NaN());
            break;
          case 1:
            input->mutable_contents()->add_int64_contents(
                interesting[pick(11)]);
            break;
          case 2:
            input->mutable_contents()->add_int_contents(pick(20) - 5);
            break;
          default:
            input->mutable_contents()->add_bytes_contents("b");
            break;
        }
        break;
      case 6:  // random raw bytes, right length perhaps
        if (request->raw_input_contents_size() > 0) {
          std::string* raw = request->mutable_raw_input_contents(0);
          for (char& c : *raw) c = static_cast<char>(pick(256));
        }
        break;
      case 7:
        if (pick(3) == 0) {
          *request->add_inputs() = request->inputs(0);
        } else {
          request->add_outputs()->set_name(pick(2) ? "logits" : "y");
        }
        break;
      default:
        if (pick(2) == 0)
          request->clear_raw_input_contents();
        else
          input->clear_contents();
        break;
    }
  }
}

TEST(TensorCodecFuzzTest, RandomMutationsNeverCrash) {
  const engine::ModelSpec token_spec = TokenSpec();
  const engine::ModelSpec feature_spec = FeatureSpec();
  const config::ModelConfig token_config = ConfigFor(token_spec, "charlm");
  const config::ModelConfig feature_config =
      ConfigFor(feature_spec, "sensor", 16);
  std::mt19937_64 rng(20261126);
  int ok = 0;
  for (int i = 0; i < 2000; ++i) {
    const bool tokens = i % 2 == 0;
    const bool raw = (i / 2) % 2 == 0;
    ModelInferRequest request =
        tokens ? (raw ? RawTokens({2, 3}, kIds) : TypedTokens({2, 3}, kIds))
               : (raw ? RawFeatures({2, 2, 3}, kFeatureValues)
                      : TypedFeatures({2, 2, 3}, kFeatureValues));
    MutateRandomly(&rng, &request);
    const StatusOr<DecodedRequest> decoded =
        tokens ? DecodeInferRequest(request, token_config, token_spec)
               : DecodeInferRequest(request, feature_config, feature_spec);
    if (decoded.ok()) {
      ++ok;
      const size_t expected = static_cast<size_t>(decoded->batch) *
                              decoded->steps * (tokens ? 1 : kFeatures);
      ASSERT_GE(decoded->batch, 1);
      ASSERT_GE(decoded->steps, 1);
      ASSERT_EQ(tokens ? decoded->tokens.size() : decoded->features.size(),
                expected)
          << request.DebugString();
    } else {
      ASSERT_EQ(decoded.status().code(), StatusCode::kInvalidArgument)
          << decoded.status().ToString();
      ASSERT_FALSE(decoded.status().message().empty());
    }
  }
  // Mutations such as an extra requested output keep some requests valid.
  EXPECT_GT(ok, 0);
  EXPECT_LT(ok, 2000);
}

}  // namespace
}  // namespace rnnserve::rpc
