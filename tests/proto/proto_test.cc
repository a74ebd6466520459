// The protocol definitions and their generated code, end to end: the KServe V2
// wire contract (field numbers), the C++ stubs over a real loopback gRPC
// server (unary, typed and raw tensors, bidirectional stream), server
// reflection and grpc.health.v1 as Debian's grpc++ 1.51 provides them, and
// the Python stubs generated with python3-grpc-tools calling the same server.
#include <gtest/gtest.h>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/client_unary_call.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/unknown_field_set.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "proto/grpc_service.grpc.pb.h"
#include "proto/grpc_service.pb.h"
#include "proto/rnnserve_service.grpc.pb.h"
#include "tests/testing/reflection_client.h"

namespace {

using inference::GRPCInferenceService;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;

// Test-only service: ServerLive says live; ModelInfer echoes the request id,
// the model name and every input (name, dtype, shape, data) as an output.
class EchoInferenceService final : public GRPCInferenceService::Service {
 public:
  grpc::Status ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*,
                          inference::ServerLiveResponse* response) override {
    response->set_live(true);
    return grpc::Status::OK;
  }

  grpc::Status ModelInfer(grpc::ServerContext*, const ModelInferRequest* request,
                          ModelInferResponse* response) override {
    return Echo(*request, response);
  }

  grpc::Status ModelStreamInfer(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<ModelStreamInferResponse, ModelInferRequest>* stream) override {
    ModelInferRequest request;
    while (stream->Read(&request)) {
      ModelStreamInferResponse response;
      grpc::Status status = Echo(request, response.mutable_infer_response());
      if (!status.ok()) {
        response.Clear();
        response.set_error_message(status.error_message());
      }
      if (!stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }

 private:
  static grpc::Status Echo(const ModelInferRequest& request, ModelInferResponse* response) {
    if (request.model_name().empty()) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "model_name is empty"};
    }
    response->set_model_name(request.model_name());
    response->set_model_version(request.model_version().empty() ? "1" : request.model_version());
    response->set_id(request.id());
    for (const auto& [key, value] : request.parameters()) {
      (*response->mutable_parameters())[key] = value;
    }
    for (const auto& input : request.inputs()) {
      auto* output = response->add_outputs();
      output->set_name(input.name());
      output->set_datatype(input.datatype());
      *output->mutable_shape() = input.shape();
      if (input.has_contents()) *output->mutable_contents() = input.contents();
    }
    *response->mutable_raw_output_contents() = request.raw_input_contents();
    return grpc::Status::OK;
  }
};

using rnnserve::testing::ByteBufferToString;
using rnnserve::testing::StringToByteBuffer;

// Loopback server with the test service, reflection and the default health
// service, on a port the kernel picks.
class ProtoServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    channel_ = grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials());
    stub_ = GRPCInferenceService::NewStub(channel_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  std::string Address() const { return "127.0.0.1:" + std::to_string(port_); }

  EchoInferenceService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<GRPCInferenceService::Stub> stub_;
};

// ---------------------------------------------------------------------------
// The wire contract: names and numbers of the public protocol.

int FieldNumber(const google::protobuf::Descriptor* d, const std::string& field) {
  const auto* f = d->FindFieldByName(field);
  return f ? f->number() : -1;
}

TEST(ProtoContract, KServeV2AndTritonFieldNumbers) {
  const auto* file = inference::ModelInferRequest::descriptor()->file();
  EXPECT_EQ(file->package(), "inference");
  const auto* svc = file->FindServiceByName("GRPCInferenceService");
  ASSERT_NE(svc, nullptr);
  EXPECT_EQ(svc->full_name(), "inference.GRPCInferenceService");
  for (const char* rpc : {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                          "ModelMetadata", "ModelInfer", "ModelStreamInfer", "RepositoryIndex",
                          "RepositoryModelLoad", "RepositoryModelUnload"}) {
    EXPECT_NE(svc->FindMethodByName(rpc), nullptr) << rpc;
  }
  const auto* stream = svc->FindMethodByName("ModelStreamInfer");
  ASSERT_NE(stream, nullptr);
  EXPECT_TRUE(stream->client_streaming());
  EXPECT_TRUE(stream->server_streaming());
  EXPECT_EQ(stream->input_type()->full_name(), "inference.ModelInferRequest");
  EXPECT_EQ(stream->output_type()->full_name(), "inference.ModelStreamInferResponse");

  const auto* req = inference::ModelInferRequest::descriptor();
  EXPECT_EQ(FieldNumber(req, "model_name"), 1);
  EXPECT_EQ(FieldNumber(req, "model_version"), 2);
  EXPECT_EQ(FieldNumber(req, "id"), 3);
  EXPECT_EQ(FieldNumber(req, "parameters"), 4);
  EXPECT_EQ(FieldNumber(req, "inputs"), 5);
  EXPECT_EQ(FieldNumber(req, "outputs"), 6);
  EXPECT_EQ(FieldNumber(req, "raw_input_contents"), 7);
  const auto* in = inference::ModelInferRequest::InferInputTensor::descriptor();
  EXPECT_EQ(FieldNumber(in, "name"), 1);
  EXPECT_EQ(FieldNumber(in, "datatype"), 2);
  EXPECT_EQ(FieldNumber(in, "shape"), 3);
  EXPECT_EQ(FieldNumber(in, "parameters"), 4);
  EXPECT_EQ(FieldNumber(in, "contents"), 5);
  const auto* res = inference::ModelInferResponse::descriptor();
  EXPECT_EQ(FieldNumber(res, "id"), 3);
  EXPECT_EQ(FieldNumber(res, "outputs"), 5);
  EXPECT_EQ(FieldNumber(res, "raw_output_contents"), 6);
  const auto* contents = inference::InferTensorContents::descriptor();
  EXPECT_EQ(FieldNumber(contents, "bool_contents"), 1);
  EXPECT_EQ(FieldNumber(contents, "int_contents"), 2);
  EXPECT_EQ(FieldNumber(contents, "int64_contents"), 3);
  EXPECT_EQ(FieldNumber(contents, "uint_contents"), 4);
  EXPECT_EQ(FieldNumber(contents, "uint64_contents"), 5);
  EXPECT_EQ(FieldNumber(contents, "fp32_contents"), 6);
  EXPECT_EQ(FieldNumber(contents, "fp64_contents"), 7);
  EXPECT_EQ(FieldNumber(contents, "bytes_contents"), 8);
  const auto* param = inference::InferParameter::descriptor();
  EXPECT_EQ(FieldNumber(param, "bool_param"), 1);
  EXPECT_EQ(FieldNumber(param, "int64_param"), 2);
  EXPECT_EQ(FieldNumber(param, "string_param"), 3);
  EXPECT_EQ(FieldNumber(param, "double_param"), 4);
  EXPECT_EQ(FieldNumber(param, "uint64_param"), 5);
  const auto* sres = inference::ModelStreamInferResponse::descriptor();
  EXPECT_EQ(FieldNumber(sres, "error_message"), 1);
  EXPECT_EQ(FieldNumber(sres, "infer_response"), 2);
  const auto* meta = inference::ModelMetadataResponse::descriptor();
  EXPECT_EQ(FieldNumber(meta, "versions"), 2);
  EXPECT_EQ(FieldNumber(meta, "platform"), 3);
  EXPECT_EQ(FieldNumber(meta, "inputs"), 4);
  EXPECT_EQ(FieldNumber(meta, "outputs"), 5);
  const auto* index = inference::RepositoryIndexResponse::ModelIndex::descriptor();
  EXPECT_EQ(FieldNumber(index, "name"), 1);
  EXPECT_EQ(FieldNumber(index, "version"), 2);
  EXPECT_EQ(FieldNumber(index, "state"), 3);
  EXPECT_EQ(FieldNumber(index, "reason"), 4);
  EXPECT_EQ(FieldNumber(inference::RepositoryModelLoadRequest::descriptor(), "model_name"), 2);
  EXPECT_EQ(FieldNumber(inference::RepositoryModelLoadRequest::descriptor(), "parameters"), 3);
  EXPECT_EQ(FieldNumber(inference::RepositoryModelUnloadRequest::descriptor(), "parameters"), 3);
  EXPECT_EQ(FieldNumber(inference::ModelRepositoryParameter::descriptor(), "bytes_param"), 4);
}

TEST(ProtoContract, RnnserveControlIsSeparate) {
  const auto* svc = rnnserve::RnnserveControl::service_full_name();
  EXPECT_STREQ(svc, "rnnserve.RnnserveControl");
  EXPECT_EQ(FieldNumber(rnnserve::RecalibrateRequest::descriptor(), "model_name"), 1);
}

// ---------------------------------------------------------------------------
// C++ stubs over loopback.

TEST_F(ProtoServerTest, ServerLive) {
  grpc::ClientContext ctx;
  inference::ServerLiveRequest request;
  inference::ServerLiveResponse response;
  ASSERT_TRUE(stub_->ServerLive(&ctx, request, &response).ok());
  EXPECT_TRUE(response.live());
}

TEST_F(ProtoServerTest, UnregisteredRpcIsUnimplemented) {
  grpc::ClientContext ctx;
  inference::RepositoryIndexRequest request;
  inference::RepositoryIndexResponse response;
  EXPECT_EQ(stub_->RepositoryIndex(&ctx, request, &response).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(ProtoServerTest, ModelInferRawInputContents) {
  const std::vector<float> x = {0.5f, -1.25f, 3.0f, 4.5f, 0.0f, -7.0f};
  ModelInferRequest request;
  request.set_model_name("demo");
  request.set_id("req-raw-42");
  (*request.mutable_parameters())["sequence_id"].set_int64_param(7);
  auto* input = request.add_inputs();
  input->set_name("features");
  input->set_datatype("FP32");
  for (int64_t d : {1, 3, 2}) input->add_shape(d);
  request.add_raw_input_contents(
      std::string(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float)));

  grpc::ClientContext ctx;
  ModelInferResponse response;
  grpc::Status status = stub_->ModelInfer(&ctx, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.id(), "req-raw-42");
  EXPECT_EQ(response.model_name(), "demo");
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).name(), "features");
  EXPECT_EQ(response.outputs(0).datatype(), "FP32");
  EXPECT_EQ(std::vector<int64_t>(response.outputs(0).shape().begin(),
                                 response.outputs(0).shape().end()),
            (std::vector<int64_t>{1, 3, 2}));
  EXPECT_EQ(response.parameters().at("sequence_id").int64_param(), 7);
  ASSERT_EQ(response.raw_output_contents_size(), 1);
  std::vector<float> y(x.size());
  ASSERT_EQ(response.raw_output_contents(0).size(), y.size() * sizeof(float));
  std::memcpy(y.data(), response.raw_output_contents(0).data(), y.size() * sizeof(float));
  EXPECT_EQ(y, x);
}

TEST_F(ProtoServerTest, ModelInferTypedContents) {
  ModelInferRequest request;
  request.set_model_name("demo");
  request.set_model_version("3");
  request.set_id("req-typed");
  auto* tokens = request.add_inputs();
  tokens->set_name("tokens");
  tokens->set_datatype("INT64");
  tokens->add_shape(2);
  tokens->add_shape(2);
  for (int64_t t : {11, 12, 13, 14}) tokens->mutable_contents()->add_int64_contents(t);
  auto* feats = request.add_inputs();
  feats->set_name("features");
  feats->set_datatype("FP32");
  feats->add_shape(1);
  feats->add_shape(3);
  for (float f : {1.f, 2.f, 3.f}) feats->mutable_contents()->add_fp32_contents(f);
  request.add_outputs()->set_name("logits");

  grpc::ClientContext ctx;
  ModelInferResponse response;
  ASSERT_TRUE(stub_->ModelInfer(&ctx, request, &response).ok());
  EXPECT_EQ(response.id(), "req-typed");
  EXPECT_EQ(response.model_version(), "3");
  ASSERT_EQ(response.outputs_size(), 2);
  EXPECT_EQ(response.outputs(0).datatype(), "INT64");
  EXPECT_EQ(response.outputs(0).contents().int64_contents_size(), 4);
  EXPECT_EQ(response.outputs(0).contents().int64_contents(3), 14);
  EXPECT_EQ(response.outputs(1).datatype(), "FP32");
  EXPECT_EQ(response.outputs(1).shape_size(), 2);
  EXPECT_FLOAT_EQ(response.outputs(1).contents().fp32_contents(2), 3.f);
  EXPECT_EQ(response.raw_output_contents_size(), 0);
}

TEST_F(ProtoServerTest, ModelInferErrorStatus) {
  ModelInferRequest request;  // no model name
  grpc::ClientContext ctx;
  ModelInferResponse response;
  grpc::Status status = stub_->ModelInfer(&ctx, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "model_name is empty");
}

TEST_F(ProtoServerTest, ModelStreamInferThreeChunks) {
  grpc::ClientContext ctx;
  auto stream = stub_->ModelStreamInfer(&ctx);
  for (int i = 0; i < 3; ++i) {
    ModelInferRequest request;
    request.set_model_name("demo");
    request.set_id("chunk-" + std::to_string(i));
    auto& params = *request.mutable_parameters();
    params["sequence_id"].set_uint64_param(99);
    params["sequence_start"].set_bool_param(i == 0);
    params["sequence_end"].set_bool_param(i == 2);
    auto* input = request.add_inputs();
    input->set_name("features");
    input->set_datatype("FP32");
    input->add_shape(1);
    input->add_shape(i + 1);
    request.add_raw_input_contents(std::string(4 * (i + 1), static_cast<char>(i)));
    ASSERT_TRUE(stream->Write(request));

    ModelStreamInferResponse response;
    ASSERT_TRUE(stream->Read(&response));
    EXPECT_TRUE(response.error_message().empty());
    EXPECT_EQ(response.infer_response().id(), "chunk-" + std::to_string(i));
    EXPECT_EQ(response.infer_response().parameters().at("sequence_id").uint64_param(), 99u);
    EXPECT_EQ(response.infer_response().parameters().at("sequence_end").bool_param(), i == 2);
    ASSERT_EQ(response.infer_response().outputs_size(), 1);
    EXPECT_EQ(response.infer_response().outputs(0).shape(1), i + 1);
    ASSERT_EQ(response.infer_response().raw_output_contents_size(), 1);
    EXPECT_EQ(response.infer_response().raw_output_contents(0).size(), 4u * (i + 1));
  }
  // An error for one message is reported in-band; the stream stays open.
  ModelInferRequest bad;
  ASSERT_TRUE(stream->Write(bad));
  ModelStreamInferResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.error_message(), "model_name is empty");
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_TRUE(stream->Finish().ok());
}

// ---------------------------------------------------------------------------
// Reflection and health, as Debian's grpc++ 1.51 ships them. Their .proto
// files and client headers are not installed, so the calls go out as raw
// bytes (ByteBuffer) and the answers are decoded with UnknownFieldSet.

TEST_F(ProtoServerTest, ReflectionListsInferenceService) {
  bool ok = false;
  const std::vector<std::string> services =
      rnnserve::testing::ListServicesByReflection(channel_, &ok);
  ASSERT_TRUE(ok);
  auto has = [&](const std::string& s) {
    return std::find(services.begin(), services.end(), s) != services.end();
  };
  EXPECT_TRUE(has("inference.GRPCInferenceService"));
  EXPECT_TRUE(has("grpc.health.v1.Health"));
  EXPECT_TRUE(has("grpc.reflection.v1alpha.ServerReflection"));
}

// grpc.health.v1.Health/Check for `service`; returns the ServingStatus
// (1 SERVING, 2 NOT_SERVING) or -1 on a failed call (code in *code).
int HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                grpc::StatusCode* code) {
  const grpc::internal::RpcMethod method("/grpc.health.v1.Health/Check",
                                         grpc::internal::RpcMethod::NORMAL_RPC, channel);
  std::string request;
  if (!service.empty()) {  // HealthCheckRequest{service = 1}
    request.push_back('\x0a');
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  grpc::ClientContext ctx;
  grpc::ByteBuffer reply;
  grpc::Status status = grpc::internal::BlockingUnaryCall(channel.get(), method, &ctx,
                                                          StringToByteBuffer(request), &reply);
  *code = status.error_code();
  if (!status.ok()) return -1;
  google::protobuf::UnknownFieldSet fields;  // HealthCheckResponse{status = 1}
  if (!fields.ParseFromString(ByteBufferToString(reply))) return -1;
  for (int i = 0; i < fields.field_count(); ++i) {
    if (fields.field(i).number() == 1) return static_cast<int>(fields.field(i).varint());
  }
  return 0;  // UNKNOWN, the proto3 default
}

TEST_F(ProtoServerTest, DefaultHealthServiceAndPerServiceStatus) {
  ASSERT_NE(server_->GetHealthCheckService(), nullptr);
  grpc::StatusCode code;
  EXPECT_EQ(HealthCheck(channel_, "", &code), 1) << "overall: SERVING";
  // Per-model (per-name) statuses, as the server sets them when models load.
  server_->GetHealthCheckService()->SetServingStatus("demo", true);
  server_->GetHealthCheckService()->SetServingStatus("broken", false);
  EXPECT_EQ(HealthCheck(channel_, "demo", &code), 1);
  EXPECT_EQ(HealthCheck(channel_, "broken", &code), 2);
  EXPECT_EQ(HealthCheck(channel_, "never-registered", &code), -1);
  EXPECT_EQ(code, grpc::StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------
// Python stubs: generated at test time by client/python/gen_stubs.sh with
// Debian's python3-grpc-tools, imported, and used against this server.

TEST_F(ProtoServerTest, PythonStubsGenerateImportAndCall) {
  const std::string python = "/usr/bin/python3";
  // tools/install_deps.sh installs both; their absence is a failure, not a skip.
  ASSERT_EQ(std::system((python + " -c 'import grpc, grpc_tools.protoc' 2>/dev/null").c_str()), 0)
      << python << " lacks python3-grpcio / python3-grpc-tools (run tools/install_deps.sh)";
  char tmpl[] = "/tmp/rnnserve_pystubs_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string gen = "sh " RNNSERVE_SOURCE_DIR "/client/python/gen_stubs.sh " + dir;
  ASSERT_EQ(std::system(gen.c_str()), 0) << gen;

  const std::string script = dir + "/call.py";
  {
    std::ofstream py(script);
    py << R"PY(import struct, sys
sys.path.insert(0, sys.argv[1])
import grpc
import grpc_service_pb2 as pb
import grpc_service_pb2_grpc as pbg
import rnnserve_service_pb2, rnnserve_service_pb2_grpc
assert hasattr(rnnserve_service_pb2_grpc, "RnnserveControlStub")
with grpc.insecure_channel(sys.argv[2]) as channel:
    stub = pbg.GRPCInferenceServiceStub(channel)
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    req = pb.ModelInferRequest(model_name="demo", id="py-1")
    t = req.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    req.raw_input_contents.append(struct.pack("<2f", 1.5, -2.0))
    res = stub.ModelInfer(req, timeout=10)
    assert res.id == "py-1", res
    assert list(res.outputs[0].shape) == [1, 2], res
    assert struct.unpack("<2f", res.raw_output_contents[0]) == (1.5, -2.0)
    def chunks():
        for i in range(3):
            r = pb.ModelInferRequest(model_name="demo", id="s%d" % i)
            r.parameters["sequence_id"].int64_param = 5
            yield r
    ids = [m.infer_response.id for m in stub.ModelStreamInfer(chunks(), timeout=10)]
    assert ids == ["s0", "s1", "s2"], ids
print("python ok")
)PY";
  }
  const std::string run = python + " " + script + " " + dir + " " + Address();
  EXPECT_EQ(std::system(run.c_str()), 0) << run;
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
