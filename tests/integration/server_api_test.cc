// The KServe V2 API of a real in-process server on 127.0.0.1 (port 0),
// called through the generated stubs as any client would: every RPC, health,
// reflection, and every kind of bad input with its status code, each followed
// by a good request to show the server keeps serving.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "proto/health.grpc.pb.h"
#include "tests/integration/test_server.h"
#include "tests/testing/reflection_client.h"

namespace rnnserve::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class ServerApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repo_ = new TempRepository();
    repo_->AddCharlm("charlm", "{kind: dynamic, max_batch_size: 8}");
    repo_->AddCharlm("charlm_seq",
                     "{kind: sequence, max_batch_size: 8, "
                     "max_active_sequences: 4}");
    // A feature model (FP32 [N, T, 8]) served f32 with an inferred config.
    repo_->AddModel("lstm", 1, kGoldensDir + "/lstm_2l/model.onnx", "", "");
    // A model that cannot load: its ONNX is garbage.
    repo_->AddModel("broken", 1, kGoldensDir + "/lstm_2l/input.npy", "", "");
    server_ = StartServer(repo_->root(), [](config::ServerConfig* c) {
                c->max_message_bytes = 1 << 20;
              }).release();
    ASSERT_NE(server_, nullptr);
  }
  static void TearDownTestSuite() {
    delete server_;
    delete repo_;
  }
  void SetUp() override {
    channel_ = Connect(server_->address());
    stub_ = inference::GRPCInferenceService::NewStub(channel_);
    tokens_ = HeldoutTokens(&rows_, &cols_);
  }

  // Runs `request`; returns the status, filling *response.
  grpc::Status Infer(const inference::ModelInferRequest& request,
                     inference::ModelInferResponse* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub_->ModelInfer(&ctx, request, response);
  }

  std::vector<float> Direct(const std::string& model, const std::vector<int64_t>& tokens,
                            int n, int t) {
    return EngineOutput(*server_, model, tokens, n, t);
  }

  // Asserts a good request still succeeds (after a bad one).
  void ExpectStillServing() {
    const auto tokens = TokenSlice(tokens_, cols_, 0, 1, 16);
    inference::ModelInferResponse response;
    const grpc::Status status = Infer(TokenRequest("charlm", tokens, 1, 16), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_LT(MaxAbsDiff(OutputFloats(response), Direct("charlm", tokens, 1, 16)), 1e-4);
  }

  void ExpectError(const inference::ModelInferRequest& request, grpc::StatusCode code,
                   const std::string& message_part) {
    inference::ModelInferResponse response;
    const grpc::Status status = Infer(request, &response);
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(message_part));
    ExpectStillServing();
  }

  static TempRepository* repo_;
  static rpc::Server* server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
  std::vector<int64_t> tokens_;
  int64_t rows_ = 0, cols_ = 0;
};

TempRepository* ServerApiTest::repo_ = nullptr;
rpc::Server* ServerApiTest::server_ = nullptr;

TEST_F(ServerApiTest, LiveReadyAndMetadata) {
  {
    grpc::ClientContext ctx;
    inference::ServerLiveResponse r;
    ASSERT_TRUE(stub_->ServerLive(&ctx, {}, &r).ok());
    EXPECT_TRUE(r.live());
  }
  {
    grpc::ClientContext ctx;
    inference::ServerReadyResponse r;
    ASSERT_TRUE(stub_->ServerReady(&ctx, {}, &r).ok());
    EXPECT_TRUE(r.ready());
  }
  {
    grpc::ClientContext ctx;
    inference::ServerMetadataResponse r;
    ASSERT_TRUE(stub_->ServerMetadata(&ctx, {}, &r).ok());
    EXPECT_EQ(r.name(), "rnnserve");
    EXPECT_FALSE(r.version().empty());
    EXPECT_THAT(std::vector<std::string>(r.extensions().begin(), r.extensions().end()),
                ::testing::Contains("model_repository"));
  }
  for (const auto& [name, ready] : std::vector<std::pair<std::string, bool>>{
           {"charlm", true}, {"lstm", true}, {"broken", false}, {"nope", false}}) {
    grpc::ClientContext ctx;
    inference::ModelReadyRequest request;
    request.set_name(name);
    inference::ModelReadyResponse r;
    ASSERT_TRUE(stub_->ModelReady(&ctx, request, &r).ok());
    EXPECT_EQ(r.ready(), ready) << name;
  }
  {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest request;
    request.set_name("charlm");
    inference::ModelMetadataResponse r;
    ASSERT_TRUE(stub_->ModelMetadata(&ctx, request, &r).ok());
    EXPECT_EQ(r.name(), "charlm");
    ASSERT_EQ(r.versions_size(), 1);
    EXPECT_EQ(r.versions(0), "1");
    ASSERT_EQ(r.inputs_size(), 1);
    EXPECT_EQ(r.inputs(0).name(), "tokens");
    EXPECT_EQ(r.inputs(0).datatype(), "INT64");
    EXPECT_THAT(r.inputs(0).shape(), ::testing::ElementsAre(-1, -1));
    ASSERT_EQ(r.outputs_size(), 1);
    EXPECT_EQ(r.outputs(0).name(), "logits");
    EXPECT_EQ(r.outputs(0).datatype(), "FP32");
    EXPECT_THAT(r.outputs(0).shape(), ::testing::ElementsAre(-1, -1, 97));
  }
  {  // The inferred config of an ONNX-only folder: names and shapes of the graph.
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest request;
    request.set_name("lstm");
    inference::ModelMetadataResponse r;
    ASSERT_TRUE(stub_->ModelMetadata(&ctx, request, &r).ok());
    ASSERT_EQ(r.inputs_size(), 1);
    EXPECT_EQ(r.inputs(0).datatype(), "FP32");
    ASSERT_EQ(r.inputs(0).shape_size(), 3);
    auto input = ReadNpy(kGoldensDir + "/lstm_2l/input.npy");
    EXPECT_EQ(r.inputs(0).shape(2), input->shape[2]);
  }
  {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest request;
    request.set_name("nope");
    inference::ModelMetadataResponse r;
    EXPECT_EQ(stub_->ModelMetadata(&ctx, request, &r).error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

TEST_F(ServerApiTest, InferRawAndTypedEqualTheEngineAndEchoTheId) {
  const auto tokens = TokenSlice(tokens_, cols_, 3, 2, 40);
  const std::vector<float> expected = Direct("charlm", tokens, 2, 40);

  inference::ModelInferRequest raw = TokenRequest("charlm", tokens, 2, 40);
  raw.set_id("request-17");
  raw.add_outputs()->set_name("logits");
  inference::ModelInferResponse r1;
  ASSERT_TRUE(Infer(raw, &r1).ok());
  EXPECT_EQ(r1.id(), "request-17");
  EXPECT_EQ(r1.model_name(), "charlm");
  EXPECT_EQ(r1.model_version(), "1");
  ASSERT_EQ(r1.outputs_size(), 1);
  EXPECT_EQ(r1.outputs(0).name(), "logits");
  EXPECT_EQ(r1.outputs(0).datatype(), "FP32");
  EXPECT_THAT(r1.outputs(0).shape(), ::testing::ElementsAre(2, 40, 97));
  ASSERT_EQ(r1.raw_output_contents_size(), 1);
  EXPECT_LT(MaxAbsDiff(OutputFloats(r1), expected), 1e-4);
  EXPECT_GE(Int64Param(r1, "batch_size"), 2);

  // Typed contents, INT32 ids, explicit version: answered typed.
  inference::ModelInferRequest typed;
  typed.set_model_name("charlm");
  typed.set_model_version("1");
  auto* input = typed.add_inputs();
  input->set_name("tokens");
  input->set_datatype("INT32");
  input->add_shape(2);
  input->add_shape(40);
  for (int64_t t : tokens) input->mutable_contents()->add_int_contents(static_cast<int32_t>(t));
  inference::ModelInferResponse r2;
  ASSERT_TRUE(Infer(typed, &r2).ok());
  EXPECT_EQ(r2.raw_output_contents_size(), 0);
  ASSERT_EQ(r2.outputs_size(), 1);
  EXPECT_EQ(r2.outputs(0).contents().fp32_contents_size(), 2 * 40 * 97);
  EXPECT_LT(MaxAbsDiff(OutputFloats(r2), expected), 1e-4);
}

TEST_F(ServerApiTest, FeatureModelMatchesPyTorchGolden) {
  // The f32 model served from an ONNX-only folder against PyTorch's output.
  auto input = ReadNpy(kGoldensDir + "/lstm_2l/input.npy");
  auto golden = ReadNpy(kGoldensDir + "/lstm_2l/expected.npy");
  ASSERT_TRUE(input.ok() && golden.ok());
  inference::ModelInferRequest request;
  request.set_model_name("lstm");
  auto* in = request.add_inputs();
  in->set_name(server_->manager().Get("lstm").value()->model().config.inputs[0].name);
  in->set_datatype("FP32");
  for (int64_t d : input->shape) in->add_shape(d);
  request.add_raw_input_contents(std::string(input->data.begin(), input->data.end()));
  inference::ModelInferResponse response;
  const grpc::Status status = Infer(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_LT(MaxAbsDiff(OutputFloats(response), golden->ToFloat()), 1e-4);
}

TEST_F(ServerApiTest, RepositoryIndexReportsReadyAndBrokenModels) {
  grpc::ClientContext ctx;
  inference::RepositoryIndexResponse r;
  ASSERT_TRUE(stub_->RepositoryIndex(&ctx, {}, &r).ok());
  std::map<std::string, std::string> states;
  std::string broken_reason;
  for (const auto& m : r.models()) {
    states[m.name()] = m.state();
    if (m.name() == "broken") broken_reason = m.reason();
  }
  EXPECT_EQ(states["charlm"], "READY");
  EXPECT_EQ(states["charlm_seq"], "READY");
  EXPECT_EQ(states["lstm"], "READY");
  EXPECT_EQ(states["broken"], "UNAVAILABLE");
  EXPECT_THAT(broken_reason, HasSubstr("model.onnx"));

  grpc::ClientContext ctx2;
  inference::RepositoryIndexRequest ready_only;
  ready_only.set_ready(true);
  inference::RepositoryIndexResponse r2;
  ASSERT_TRUE(stub_->RepositoryIndex(&ctx2, ready_only, &r2).ok());
  for (const auto& m : r2.models()) EXPECT_EQ(m.state(), "READY") << m.name();
  EXPECT_EQ(r2.models_size(), 3);
}

TEST_F(ServerApiTest, LoadAndUnloadAreRefusedUnderModelControlNone) {
  grpc::ClientContext ctx;
  inference::RepositoryModelLoadRequest request;
  request.set_model_name("charlm");
  inference::RepositoryModelLoadResponse r;
  const grpc::Status status = stub_->RepositoryModelLoad(&ctx, request, &r);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("--model-control explicit"));
}

TEST_F(ServerApiTest, HealthPerServerAndPerModel) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  auto check = [&](const std::string& service, grpc::StatusCode* code) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    *code = health->Check(&ctx, request, &response).error_code();
    return response.status();
  };
  using Status = grpc::health::v1::HealthCheckResponse;
  grpc::StatusCode code;
  EXPECT_EQ(check("", &code), Status::SERVING);
  EXPECT_EQ(check("inference.GRPCInferenceService", &code), Status::SERVING);
  EXPECT_EQ(check("charlm", &code), Status::SERVING);
  EXPECT_EQ(check("broken", &code), Status::NOT_SERVING);
  check("never-heard-of", &code);
  EXPECT_EQ(code, grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerApiTest, ReflectionListsTheServices) {
  bool ok = false;
  const std::vector<std::string> services = ListServicesByReflection(channel_, &ok);
  ASSERT_TRUE(ok);
  EXPECT_THAT(services, ::testing::IsSupersetOf({"inference.GRPCInferenceService",
                                                 "grpc.health.v1.Health",
                                                 "grpc.reflection.v1alpha.ServerReflection"}));
}

TEST_F(ServerApiTest, StreamInferAnswersEachRequestAndReportsErrorsInBand) {
  grpc::ClientContext ctx;
  auto stream = stub_->ModelStreamInfer(&ctx);
  const auto tokens = TokenSlice(tokens_, cols_, 5, 1, 12);
  for (int i = 0; i < 3; ++i) {
    auto request = TokenRequest("charlm", tokens, 1, 12);
    request.set_id("s" + std::to_string(i));
    ASSERT_TRUE(stream->Write(request));
  }
  inference::ModelInferRequest bad = TokenRequest("nope", tokens, 1, 12);
  bad.set_id("bad");
  ASSERT_TRUE(stream->Write(bad));
  ASSERT_TRUE(stream->WritesDone());
  std::map<std::string, inference::ModelStreamInferResponse> by_id;
  inference::ModelStreamInferResponse response;
  while (stream->Read(&response)) by_id[response.infer_response().id()] = response;
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(by_id.size(), 4u);
  const std::vector<float> expected = Direct("charlm", tokens, 1, 12);
  for (int i = 0; i < 3; ++i) {
    const auto& r = by_id["s" + std::to_string(i)];
    EXPECT_EQ(r.error_message(), "");
    EXPECT_LT(MaxAbsDiff(OutputFloats(r.infer_response()), expected), 1e-4);
  }
  EXPECT_THAT(by_id["bad"].error_message(), HasSubstr("nope"));
  EXPECT_EQ(Int64Param(by_id["bad"].infer_response(), "status_code"),
            static_cast<int64_t>(grpc::StatusCode::NOT_FOUND));
}

// ---------------------------------------------------------------------------
// Bad input: each gets its code and a message naming the field; the next
// good request is served.

TEST_F(ServerApiTest, UnknownModelAndVersionAreNotFound) {
  const auto tokens = TokenSlice(tokens_, cols_, 0, 1, 8);
  ExpectError(TokenRequest("nope", tokens, 1, 8), grpc::StatusCode::NOT_FOUND, "nope");
  auto request = TokenRequest("charlm", tokens, 1, 8);
  request.set_model_version("7");
  ExpectError(request, grpc::StatusCode::NOT_FOUND, "7");
  request.set_model_version("latest");
  ExpectError(request, grpc::StatusCode::INVALID_ARGUMENT, "model_version");
}

TEST_F(ServerApiTest, BrokenModelIsUnavailableWithItsReason) {
  const auto tokens = TokenSlice(tokens_, cols_, 0, 1, 8);
  ExpectError(TokenRequest("broken", tokens, 1, 8), grpc::StatusCode::UNAVAILABLE,
              "model.onnx");
}

TEST_F(ServerApiTest, WrongNameShapeDtypeAndLengthAreInvalidArgument) {
  const auto tokens = TokenSlice(tokens_, cols_, 0, 2, 8);
  ExpectError(TokenRequest("charlm", tokens, 2, 8, "input_ids"),
              grpc::StatusCode::INVALID_ARGUMENT, "inputs[0].name");
  ExpectError(TokenRequest("charlm", tokens, 4, 8), grpc::StatusCode::INVALID_ARGUMENT,
              "raw_input_contents");
  auto rank3 = TokenRequest("charlm", tokens, 2, 8);
  rank3.mutable_inputs(0)->add_shape(1);
  ExpectError(rank3, grpc::StatusCode::INVALID_ARGUMENT, "inputs[0].shape");
  auto fp32 = TokenRequest("charlm", tokens, 2, 8);
  fp32.mutable_inputs(0)->set_datatype("FP32");
  ExpectError(fp32, grpc::StatusCode::INVALID_ARGUMENT, "inputs[0].datatype");
  auto short_raw = TokenRequest("charlm", tokens, 2, 8);
  short_raw.mutable_raw_input_contents(0)->pop_back();
  ExpectError(short_raw, grpc::StatusCode::INVALID_ARGUMENT, "raw_input_contents[0]");
  auto out_name = TokenRequest("charlm", tokens, 2, 8);
  out_name.add_outputs()->set_name("probabilities");
  ExpectError(out_name, grpc::StatusCode::INVALID_ARGUMENT, "outputs[0].name");
  auto oov = tokens;
  oov[3] = 97;
  ExpectError(TokenRequest("charlm", oov, 2, 8), grpc::StatusCode::INVALID_ARGUMENT, "97");
}

TEST_F(ServerApiTest, EmptyBatchAndTooLongSequencesAreInvalidArgument) {
  ExpectError(TokenRequest("charlm", {}, 0, 8), grpc::StatusCode::INVALID_ARGUMENT,
              "inputs[0].shape");
  // max_sequence_length is 256 in this repository's config.
  std::vector<int64_t> long_tokens(300, 5);
  ExpectError(TokenRequest("charlm", long_tokens, 1, 300), grpc::StatusCode::INVALID_ARGUMENT,
              "256");
  // max_batch_size is 8.
  std::vector<int64_t> wide(9 * 4, 5);
  ExpectError(TokenRequest("charlm", wide, 9, 4), grpc::StatusCode::INVALID_ARGUMENT,
              "max_batch_size");
}

TEST_F(ServerApiTest, NanAndInfFeaturesAreInvalidArgument) {
  auto input = ReadNpy(kGoldensDir + "/lstm_2l/input.npy");
  ASSERT_TRUE(input.ok());
  const std::string name = server_->manager().Get("lstm").value()->model().config.inputs[0].name;
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> values = input->ToFloat();
    values[5] = bad;
    inference::ModelInferRequest request;
    request.set_model_name("lstm");
    auto* in = request.add_inputs();
    in->set_name(name);
    in->set_datatype("FP32");
    for (int64_t d : input->shape) in->add_shape(d);
    for (float v : values) in->mutable_contents()->add_fp32_contents(v);
    ExpectError(request, grpc::StatusCode::INVALID_ARGUMENT, "element 5");
  }
}

TEST_F(ServerApiTest, OversizeMessageIsResourceExhausted) {
  // The server accepts 1 MiB (max_message_bytes); send 2 MiB of tokens.
  std::vector<int64_t> big(8 * 256 * 128, 1);
  ExpectError(TokenRequest("charlm", big, 8, 256 * 128), grpc::StatusCode::RESOURCE_EXHAUSTED,
              "");
}

TEST_F(ServerApiTest, SequenceParametersAreCheckedAgainstTheBatchingKind) {
  const auto tokens = TokenSlice(tokens_, cols_, 0, 1, 8);
  // Stateful model: a chunk of a stream never started, no sequence_id,
  // more than one sequence per chunk.
  auto unknown = TokenRequest("charlm_seq", tokens, 1, 8);
  SetSequence(&unknown, 424242, /*start=*/false, /*end=*/false);
  ExpectError(unknown, grpc::StatusCode::FAILED_PRECONDITION, "sequence_start");
  ExpectError(TokenRequest("charlm_seq", tokens, 1, 8), grpc::StatusCode::INVALID_ARGUMENT,
              "parameters.sequence_id");
  const auto two = TokenSlice(tokens_, cols_, 0, 2, 8);
  auto wide = TokenRequest("charlm_seq", two, 2, 8);
  SetSequence(&wide, 7, true, true);
  ExpectError(wide, grpc::StatusCode::INVALID_ARGUMENT, "inputs[0].shape[0]");
  // Stateless model: sequence parameters are refused, not ignored.
  auto stateless = TokenRequest("charlm", tokens, 1, 8);
  SetSequence(&stateless, 9, true, true);
  ExpectError(stateless, grpc::StatusCode::INVALID_ARGUMENT, "dynamic batching");
  auto bad_type = TokenRequest("charlm_seq", tokens, 1, 8);
  (*bad_type.mutable_parameters())["sequence_id"].set_double_param(1.5);
  ExpectError(bad_type, grpc::StatusCode::INVALID_ARGUMENT, "parameters.sequence_id");
}

}  // namespace
}  // namespace rnnserve::testing
