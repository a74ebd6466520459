#include "client/inference_client.h"

#include <grpcpp/grpcpp.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "client/sequence_chunks.h"

namespace rnnserve::client {
namespace {

using Clock = std::chrono::steady_clock;

StatusOr<std::string> ReadTextFile(const std::string& path,
                                   const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return InvalidArgument(what + ": cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

const char* DatatypeOf(NpyDtype dtype) {
  switch (dtype) {
    case NpyDtype::kFloat32:
      return "FP32";
    case NpyDtype::kInt64:
      return "INT64";
    case NpyDtype::kInt32:
      return "INT32";
  }
  return "FP32";
}

// "NOT_FOUND: model x" -> NOT_FOUND; messages without a code name -> UNKNOWN.
StatusCode CodeFromMessage(const std::string& message) {
  const size_t colon = message.find(':');
  if (colon != std::string::npos) {
    const std::string head = message.substr(0, colon);
    for (int c = 1; c <= static_cast<int>(StatusCode::kDataLoss); ++c) {
      if (head == StatusCodeName(static_cast<StatusCode>(c)))
        return static_cast<StatusCode>(c);
    }
  }
  return StatusCode::kUnknown;
}

// The code of a failed ModelStreamInfer response: rnnserve sends it as the
// `status_code` parameter; other servers may only name it in the message.
StatusCode StreamErrorCode(const inference::ModelStreamInferResponse& r) {
  const auto& params = r.infer_response().parameters();
  auto it = params.find("status_code");
  if (it != params.end() &&
      it->second.parameter_choice_case() ==
          inference::InferParameter::kInt64Param &&
      it->second.int64_param() > 0 &&
      it->second.int64_param() <= static_cast<int64_t>(StatusCode::kDataLoss)) {
    return static_cast<StatusCode>(it->second.int64_param());
  }
  return CodeFromMessage(r.error_message());
}

}  // namespace

InferRequest StreamChunkRequest(const StreamRequest& request,
                                const NpyArray& sequence, StepRange range,
                                size_t k, size_t n) {
  InferRequest chunk;
  chunk.model = request.model;
  chunk.version = request.version;
  chunk.input_name = request.input_name;
  chunk.input = SliceSteps(sequence, range);
  if (!request.id_prefix.empty()) chunk.id = request.id_prefix + std::to_string(k);
  chunk.sequence = {request.sequence_id, k == 0, k + 1 == n};
  return chunk;
}

std::optional<int64_t> InferResult::batch_size() const {
  auto it = parameters.find("batch_size");
  if (it == parameters.end()) return std::nullopt;
  const inference::InferParameter& p = it->second;
  switch (p.parameter_choice_case()) {
    case inference::InferParameter::kInt64Param:
      return p.int64_param();
    case inference::InferParameter::kUint64Param:
      return static_cast<int64_t>(p.uint64_param());
    case inference::InferParameter::kDoubleParam:
      return static_cast<int64_t>(p.double_param());
    case inference::InferParameter::kStringParam:
      try {
        return std::stoll(p.string_param());
      } catch (...) {
        return std::nullopt;
      }
    default:
      return std::nullopt;
  }
}

const char* HealthStatusName(HealthStatus status) {
  switch (status) {
    case HealthStatus::kUnknown:
      return "UNKNOWN";
    case HealthStatus::kServing:
      return "SERVING";
    case HealthStatus::kNotServing:
      return "NOT_SERVING";
    case HealthStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
  }
  return "UNKNOWN";
}

Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return Status::Ok();
  std::string message = status.error_message();
  if (message.empty()) message = "(no message from the server)";
  return Status(static_cast<StatusCode>(status.error_code()),
                std::move(message));
}

StatusOr<std::unique_ptr<InferenceClient>> InferenceClient::Create(
    const Options& options) {
  if (options.address.empty())
    return InvalidArgument("address is empty (want HOST:PORT)");
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return InvalidArgument(
        "mutual TLS needs both a client certificate and its key");
  }
  grpc::ChannelArguments args;
  if (options.max_message_bytes > 0) {
    args.SetMaxReceiveMessageSize(options.max_message_bytes);
    args.SetMaxSendMessageSize(options.max_message_bytes);
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  const bool tls = !options.tls_root_ca_file.empty() ||
                   !options.tls_cert_file.empty() ||
                   !options.tls_server_name_override.empty();
  if (tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_root_ca_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_root_certs,
                       ReadTextFile(options.tls_root_ca_file, "TLS root CA"));
    }
    if (!options.tls_cert_file.empty()) {
      ASSIGN_OR_RETURN(
          ssl.pem_cert_chain,
          ReadTextFile(options.tls_cert_file, "TLS client certificate"));
      ASSIGN_OR_RETURN(ssl.pem_private_key,
                       ReadTextFile(options.tls_key_file, "TLS client key"));
    }
    if (!options.tls_server_name_override.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name_override);
    }
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  auto channel = grpc::CreateCustomChannel(options.address, credentials, args);
  if (!channel)
    return InvalidArgument("cannot create a channel to " + options.address);
  return std::unique_ptr<InferenceClient>(
      new InferenceClient(options, std::move(channel)));
}

InferenceClient::InferenceClient(Options options,
                                 std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(inference::GRPCInferenceService::NewStub(channel_)),
      health_stub_(grpc::health::v1::Health::NewStub(channel_)),
      control_stub_(rnnserve::RnnserveControl::NewStub(channel_)) {}

void InferenceClient::SetDeadline(grpc::ClientContext* context,
                                  int64_t calls) const {
  if (options_.timeout.count() <= 0) return;
  context->set_deadline(std::chrono::system_clock::now() +
                        options_.timeout * calls);
}

StatusOr<bool> InferenceClient::ServerLive() {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ServerLiveResponse response;
  RETURN_IF_ERROR(FromGrpc(stub_->ServerLive(&context, {}, &response)));
  return response.live();
}

StatusOr<bool> InferenceClient::ServerReady() {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ServerReadyResponse response;
  RETURN_IF_ERROR(FromGrpc(stub_->ServerReady(&context, {}, &response)));
  return response.ready();
}

StatusOr<bool> InferenceClient::ModelReady(const std::string& name,
                                           const std::string& version) {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ModelReadyRequest request;
  request.set_name(name);
  request.set_version(version);
  inference::ModelReadyResponse response;
  RETURN_IF_ERROR(FromGrpc(stub_->ModelReady(&context, request, &response)));
  return response.ready();
}

StatusOr<HealthStatus> InferenceClient::Health(const std::string& service) {
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  RETURN_IF_ERROR(FromGrpc(health_stub_->Check(&context, request, &response)));
  switch (response.status()) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return HealthStatus::kServing;
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return HealthStatus::kNotServing;
    case grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN:
      return HealthStatus::kServiceUnknown;
    default:
      return HealthStatus::kUnknown;
  }
}

StatusOr<inference::ServerMetadataResponse> InferenceClient::ServerMetadata() {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ServerMetadataResponse response;
  RETURN_IF_ERROR(FromGrpc(stub_->ServerMetadata(&context, {}, &response)));
  return response;
}

StatusOr<inference::ModelMetadataResponse> InferenceClient::ModelMetadata(
    const std::string& name, const std::string& version) {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ModelMetadataRequest request;
  request.set_name(name);
  request.set_version(version);
  inference::ModelMetadataResponse response;
  RETURN_IF_ERROR(FromGrpc(stub_->ModelMetadata(&context, request, &response)));
  return response;
}

StatusOr<std::vector<ModelIndexEntry>> InferenceClient::RepositoryIndex(
    bool ready_only) {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::RepositoryIndexRequest request;
  request.set_ready(ready_only);
  inference::RepositoryIndexResponse response;
  RETURN_IF_ERROR(
      FromGrpc(stub_->RepositoryIndex(&context, request, &response)));
  std::vector<ModelIndexEntry> models;
  for (const auto& m : response.models()) {
    models.push_back({m.name(), m.version(), m.state(), m.reason()});
  }
  return models;
}

Status InferenceClient::LoadModel(const std::string& name) {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::RepositoryModelLoadRequest request;
  request.set_model_name(name);
  inference::RepositoryModelLoadResponse response;
  return FromGrpc(stub_->RepositoryModelLoad(&context, request, &response));
}

Status InferenceClient::UnloadModel(const std::string& name) {
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::RepositoryModelUnloadRequest request;
  request.set_model_name(name);
  inference::RepositoryModelUnloadResponse response;
  {
    // A reloaded model may name its input differently.
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = input_names_.begin(); it != input_names_.end();) {
      it = it->first.first == name ? input_names_.erase(it) : std::next(it);
    }
  }
  return FromGrpc(stub_->RepositoryModelUnload(&context, request, &response));
}

StatusOr<uint64_t> InferenceClient::Recalibrate(const std::string& model,
                                                const std::string& version) {
  grpc::ClientContext context;
  SetDeadline(&context);
  rnnserve::RecalibrateRequest request;
  request.set_model_name(model);
  request.set_model_version(version);
  rnnserve::RecalibrateResponse response;
  RETURN_IF_ERROR(
      FromGrpc(control_stub_->Recalibrate(&context, request, &response)));
  return response.samples_used();
}

StatusOr<std::string> InferenceClient::InputName(const std::string& model,
                                                 const std::string& version,
                                                 const std::string& given) {
  if (!given.empty()) return given;
  const auto key = std::make_pair(model, version);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = input_names_.find(key);
    if (it != input_names_.end()) return it->second;
  }
  ASSIGN_OR_RETURN(auto metadata, ModelMetadata(model, version));
  if (metadata.inputs_size() != 1) {
    return FailedPrecondition("model " + model + " has " +
                              std::to_string(metadata.inputs_size()) +
                              " inputs; rnnserve models have exactly one");
  }
  std::lock_guard<std::mutex> lock(mu_);
  input_names_[key] = metadata.inputs(0).name();
  return metadata.inputs(0).name();
}

Status BuildInferRequest(const InferRequest& request,
                         const std::string& input_name,
                         inference::ModelInferRequest* proto) {
  const NpyArray& x = request.input;
  const size_t want =
      static_cast<size_t>(x.size()) * NpyArray::ElementSize(x.dtype);
  if (x.shape.empty() || x.data.size() != want) {
    return InvalidArgument("input tensor of shape " + x.ShapeString() +
                           " holds " + std::to_string(x.data.size()) +
                           " bytes, expected " + std::to_string(want));
  }
  proto->Clear();
  proto->set_model_name(request.model);
  proto->set_model_version(request.version);
  proto->set_id(request.id);
  if (request.sequence.id != 0) {
    auto& params = *proto->mutable_parameters();
    params["sequence_id"].set_int64_param(
        static_cast<int64_t>(request.sequence.id));
    params["sequence_start"].set_bool_param(request.sequence.start);
    params["sequence_end"].set_bool_param(request.sequence.end);
  }
  auto* input = proto->add_inputs();
  input->set_name(input_name);
  input->set_datatype(DatatypeOf(x.dtype));
  for (int64_t d : x.shape) input->add_shape(d);
  proto->add_raw_input_contents(reinterpret_cast<const char*>(x.data.data()),
                                x.data.size());
  return Status::Ok();
}

StatusOr<InferResult> ParseInferResponse(
    const inference::ModelInferResponse& response) {
  if (response.outputs_size() < 1)
    return Internal("the response has no output tensor");
  const auto& out = response.outputs(0);
  InferResult result;
  result.model_name = response.model_name();
  result.model_version = response.model_version();
  result.id = response.id();
  result.output_name = out.name();
  result.output_datatype = out.datatype();
  result.parameters.insert(response.parameters().begin(),
                           response.parameters().end());
  int64_t count = 1;
  for (int64_t d : out.shape()) {
    if (d < 0)
      return Internal("output " + out.name() + " has a negative dimension");
    result.shape.push_back(d);
    count *= d;
  }
  if (out.datatype() != "FP32") {
    return Unimplemented("output " + out.name() + " has datatype " +
                         out.datatype() + "; this client reads FP32 outputs");
  }
  if (response.raw_output_contents_size() > 0) {
    const std::string& raw = response.raw_output_contents(0);
    if (raw.size() != static_cast<size_t>(count) * sizeof(float)) {
      return Internal("output " + out.name() + ": raw_output_contents holds " +
                      std::to_string(raw.size()) + " bytes, shape needs " +
                      std::to_string(count * sizeof(float)));
    }
    result.data.resize(static_cast<size_t>(count));
    std::memcpy(result.data.data(), raw.data(), raw.size());
  } else {
    const auto& values = out.contents().fp32_contents();
    if (values.size() != count) {
      return Internal("output " + out.name() + ": fp32_contents holds " +
                      std::to_string(values.size()) + " values, shape needs " +
                      std::to_string(count));
    }
    result.data.assign(values.begin(), values.end());
  }
  return result;
}

StatusOr<InferResult> InferenceClient::Infer(const InferRequest& request) {
  ASSIGN_OR_RETURN(
      std::string input_name,
      InputName(request.model, request.version, request.input_name));
  inference::ModelInferRequest proto;
  RETURN_IF_ERROR(BuildInferRequest(request, input_name, &proto));
  grpc::ClientContext context;
  SetDeadline(&context);
  inference::ModelInferResponse response;
  RETURN_IF_ERROR(FromGrpc(stub_->ModelInfer(&context, proto, &response)));
  return ParseInferResponse(response);
}

StatusOr<StreamResult> InferenceClient::StreamSequence(
    const StreamRequest& request) {
  if (request.sequence_id == 0) {
    return InvalidArgument(
        "sequence_id must be non-zero (0 means no sequence)");
  }
  ASSIGN_OR_RETURN(NpyArray sequence, AsSingleSequence(request.sequence));
  ASSIGN_OR_RETURN(auto chunks,
                   SplitSteps(sequence.shape[1], request.chunk_steps));
  ASSIGN_OR_RETURN(
      std::string input_name,
      InputName(request.model, request.version, request.input_name));

  grpc::ClientContext context;
  SetDeadline(&context, static_cast<int64_t>(chunks.size()));
  auto stream = stub_->ModelStreamInfer(&context);
  StreamResult result;
  std::vector<float> data;
  std::vector<int64_t> shape;
  const size_t n = chunks.size();
  // Finishes the stream after a failure, preferring the stream's own status
  // (a deadline, a cancelled call) when it has one.
  // A live stream we abandon is cancelled first, or Finish would wait for
  // the server to end it.
  auto fail = [&](size_t k, Status why) -> Status {
    if (!why.ok()) context.TryCancel();
    grpc::Status final_status = stream->Finish();
    if (why.ok()) why = FromGrpc(final_status);
    if (why.ok())
      why = Status(StatusCode::kUnknown, "the server closed the stream");
    return why.Annotate("chunk " + std::to_string(k) + " of " +
                        std::to_string(n) + " (steps " +
                        std::to_string(chunks[k].begin) + ".." +
                        std::to_string(chunks[k].end) + ")");
  };
  for (size_t k = 0; k < n; ++k) {
    const InferRequest chunk = StreamChunkRequest(request, sequence, chunks[k], k, n);
    inference::ModelInferRequest proto;
    if (Status s = BuildInferRequest(chunk, input_name, &proto); !s.ok())
      return fail(k, s);
    const auto sent = Clock::now();
    if (!stream->Write(proto)) return fail(k, Status::Ok());
    inference::ModelStreamInferResponse response;
    if (!stream->Read(&response)) return fail(k, Status::Ok());
    result.chunk_latency_ms.push_back(
        std::chrono::duration<double, std::milli>(Clock::now() - sent).count());
    if (!response.error_message().empty()) {
      return fail(k, Status(StreamErrorCode(response), response.error_message()));
    }
    auto part = ParseInferResponse(response.infer_response());
    if (!part.ok()) return fail(k, part.status());
    result.chunk_batch_size.push_back(part->batch_size());
    if (k == 0) {
      result.output = *part;
      result.output.shape.clear();
      result.output.data.clear();
    }
    if (Status s = AppendSteps(part->shape, part->data, &shape, &data);
        !s.ok()) {
      return fail(k, s);
    }
  }
  stream->WritesDone();
  RETURN_IF_ERROR(FromGrpc(stream->Finish()).Annotate("closing the stream"));
  result.output.shape = std::move(shape);
  result.output.data = std::move(data);
  return result;
}

}  // namespace rnnserve::client
