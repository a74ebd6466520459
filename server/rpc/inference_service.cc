#include "server/rpc/inference_service.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>
#include <utility>

#include "server/common/log.h"
#include "server/common/tsan.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/tensor_codec.h"

namespace rnnserve::rpc {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;

// The gRPC deadline and the request's timeout, as an absolute time on the
// scheduler's clock.
int64_t DeadlineOnClock(const batching::Clock& clock,
                        std::chrono::system_clock::time_point deadline,
                        std::optional<int64_t> timeout_us) {
  const int64_t now = clock.NowMicros();
  int64_t result = batching::kNoDeadline;
  if (deadline != std::chrono::system_clock::time_point::max()) {
    const auto remaining = std::chrono::duration_cast<std::chrono::microseconds>(
                               deadline - std::chrono::system_clock::now())
                               .count();
    // Far-future deadlines (years) mean none, and must not overflow.
    if (remaining < (int64_t{1} << 50)) result = now + remaining;
  }
  if (timeout_us.has_value() && *timeout_us < (int64_t{1} << 50)) {
    result = std::min(result, now + *timeout_us);
  }
  return result;
}

void SetInt64Param(ModelInferResponse* response, const char* name,
                   int64_t value) {
  (*response->mutable_parameters())[name].set_int64_param(value);
}

// A V2 tensor description from a config tensor.
void FillTensorMetadata(
    const config::TensorConfig& tensor,
    inference::ModelMetadataResponse::TensorMetadata* out) {
  out->set_name(tensor.name);
  out->set_datatype(config::DataTypeName(tensor.dtype));
  for (int64_t d : tensor.dims) out->add_shape(d);
}

// One ModelStreamInfer call. Owns itself: deleted after OnDone once no
// inference callback can still reach it.
class StreamReactor final
    : public grpc::ServerBidiReactor<ModelInferRequest,
                                     ModelStreamInferResponse> {
 public:
  StreamReactor(InferenceService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    std::lock_guard<std::mutex> lock(mu_);
    reading_ = true;
    TsanHandOff(this);
    StartRead(&incoming_);
  }

  void OnReadDone(bool ok) override {
    TsanTakeBack(this);
    if (!ok) {  // client half-closed, cancelled, or the server is stopping
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    auto call = std::make_shared<Call>();
    call->request = std::move(incoming_);
    incoming_.Clear();
    {
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
      ++pending_;
    }
    service_->StartInfer(&call->request, context_->deadline(),
                         call->response.mutable_infer_response(),
                         [this, call](Status status) {
                           OnInferDone(call, std::move(status));
                         });
    std::lock_guard<std::mutex> lock(mu_);
    if (!reads_done_ && !reading_ && pending_ < kMaxInFlight) {
      reading_ = true;
      TsanHandOff(this);
      StartRead(&incoming_);
    }
  }

  void OnWriteDone(bool ok) override {
    TsanTakeBack(this);
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    writes_.pop_front();
    if (!ok) {  // the client is gone; drop what is left
      write_failed_ = true;
      writes_.clear();
    }
    StartNextWriteLocked();
    MaybeFinishLocked();
  }

  void OnDone() override {
    TsanTakeBack(this);
    bool destroy;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      destroy = pending_ == 0;
    }
    if (destroy) delete this;
  }

 private:
  struct Call {
    ModelInferRequest request;
    ModelStreamInferResponse response;
  };
  // Reads stop while this many requests of the stream are unanswered, so one
  // fast writer cannot queue without bound (the batcher's own bounds apply
  // across streams).
  static constexpr int kMaxInFlight = 256;

  void OnInferDone(const std::shared_ptr<Call>& call, Status status) {
    if (!status.ok()) {
      ModelInferResponse* r = call->response.mutable_infer_response();
      r->Clear();
      r->set_id(call->request.id());
      r->set_model_name(call->request.model_name());
      r->set_model_version(call->request.model_version());
      (*r->mutable_parameters())["status_code"].set_int64_param(
          static_cast<int64_t>(status.code()));
      call->response.set_error_message(status.message());
    }
    bool destroy = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      --pending_;
      if (done_) {
        destroy = pending_ == 0;
      } else {
        if (!write_failed_) writes_.push_back(call);
        StartNextWriteLocked();
        if (!reads_done_ && !reading_ && pending_ < kMaxInFlight) {
          reading_ = true;
          TsanHandOff(this);
          StartRead(&incoming_);
        }
        MaybeFinishLocked();
      }
    }
    if (destroy) delete this;
  }

  void StartNextWriteLocked() {
    if (writing_ || writes_.empty() || finished_) return;
    writing_ = true;
    TsanHandOff(this);
    StartWrite(&writes_.front()->response);
  }

  void MaybeFinishLocked() {
    if (finished_ || !reads_done_ || pending_ > 0 || writing_ ||
        !writes_.empty()) {
      return;
    }
    finished_ = true;
    TsanHandOff(this);
    Finish(context_->IsCancelled()
               ? grpc::Status(grpc::StatusCode::CANCELLED, "cancelled")
               : grpc::Status::OK);
  }

  InferenceService* const service_;
  grpc::CallbackServerContext* const context_;
  ModelInferRequest incoming_;  // target of the read in flight
  std::mutex mu_;
  // All guarded by mu_.
  bool reading_ = false;
  bool reads_done_ = false;
  bool writing_ = false;
  bool write_failed_ = false;
  bool finished_ = false;
  bool done_ = false;
  int pending_ = 0;  // requests queued or running
  std::deque<std::shared_ptr<Call>> writes_;  // front is being written
};

}  // namespace

InferenceService::InferenceService(const Options& options)
    : options_(options) {}

void InferenceService::StartInfer(
    const ModelInferRequest* request,
    std::chrono::system_clock::time_point deadline,
    ModelInferResponse* response, std::function<void(Status)> caller_done) {
  accepted_.fetch_add(1);
  const auto received = std::chrono::steady_clock::now();
  // Answers the request and counts it under `m` (the model's series, or
  // model="" when no served model was resolved).
  auto finish = [this, received, caller_done = std::move(caller_done)](
                    metrics::ModelMetrics* m, Status status) {
    if (status.ok()) answered_ok_.fetch_add(1);
    answered_.fetch_add(1);
    if (m != nullptr) {
      m->ObserveRequest(status.code(),
                        std::chrono::duration<double>(
                            std::chrono::steady_clock::now() - received)
                            .count());
    }
    caller_done(std::move(status));
  };
  metrics::ModelMetrics* unresolved =
      options_.metrics != nullptr ? &options_.metrics->Unresolved() : nullptr;
  // Draining does not refuse requests: gRPC stops accepting calls, and
  // every call it accepted (and every request of an open stream) is served.
  auto version = ParseModelVersion(request->model_version(), "model_version");
  if (!version.ok()) {
    finish(unresolved, version.status());
    return;
  }
  // A scheduler found stopped was replaced by a reload (or is being
  // unloaded): look again, so a reload never fails a request.
  for (int attempt = 0;; ++attempt) {
    auto scheduler = options_.manager->Get(request->model_name(), *version);
    if (!scheduler.ok()) {
      finish(unresolved, scheduler.status());
      return;
    }
    std::shared_ptr<serving::ModelScheduler> s = *scheduler;
    std::shared_ptr<const repository::LoadedModel> model = s->model_ptr();
    metrics::ModelMetrics* m = s->metrics();
    auto decoded = DecodeInferRequest(*request, model->config, *model->spec);
    if (!decoded.ok()) {
      finish(m, decoded.status());
      return;
    }
    serving::InferRequest infer;
    infer.batch = decoded->batch;
    infer.steps = decoded->steps;
    infer.features = std::move(decoded->features);
    infer.tokens = std::move(decoded->tokens);
    infer.sequence.id = decoded->sequence.id;
    infer.sequence.start = decoded->sequence.start;
    infer.sequence.end = decoded->sequence.end;
    infer.deadline_us = DeadlineOnClock(s->clock(), deadline,
                                        decoded->timeout_us);
    const bool raw = decoded->raw;
    const uint64_t sequence_id = decoded->sequence.id;
    auto on_done = [request, response, model, raw, sequence_id, m, finish](
                       Status status, serving::InferResult result) {
      if (status.ok()) {
        EncodeInferResponse(*request, model->config, model->version,
                            result.shape, result.output.data(), raw, response);
        SetInt64Param(response, "batch_size", result.batch_size);
        if (sequence_id != 0) {
          (*response->mutable_parameters())["sequence_id"].set_uint64_param(
              sequence_id);
        }
      }
      finish(m, std::move(status));
    };
    Status status = s->Submit(std::move(infer), on_done);
    if (status.ok()) return;
    if (status.code() == StatusCode::kUnavailable && s->stopped() &&
        attempt < 3 && !draining_.load()) {
      continue;
    }
    finish(m, status);
    return;
  }
}

grpc::ServerUnaryReactor* InferenceService::ServerLive(
    grpc::CallbackServerContext* context,
    const inference::ServerLiveRequest* /*request*/,
    inference::ServerLiveResponse* response) {
  response->set_live(true);
  auto* reactor = new UnaryReactor;
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ServerReady(
    grpc::CallbackServerContext* context,
    const inference::ServerReadyRequest* /*request*/,
    inference::ServerReadyResponse* response) {
  response->set_ready(ready());
  auto* reactor = new UnaryReactor;
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ModelReady(
    grpc::CallbackServerContext* context,
    const inference::ModelReadyRequest* request,
    inference::ModelReadyResponse* response) {
  auto* reactor = new UnaryReactor;
  auto version = ParseModelVersion(request->version(), "version");
  if (!version.ok()) {
    reactor->Finish(ToGrpcStatus(version.status()));
    return reactor;
  }
  // Unknown models are simply not ready: probes want a boolean.
  response->set_ready(!draining_.load() &&
                      options_.manager->Get(request->name(), *version).ok());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ServerMetadata(
    grpc::CallbackServerContext* context,
    const inference::ServerMetadataRequest* /*request*/,
    inference::ServerMetadataResponse* response) {
  response->set_name(kServerName);
  response->set_version(kServerVersion);
  response->add_extensions("model_repository");
  response->add_extensions("sequence");
  auto* reactor = new UnaryReactor;
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ModelMetadata(
    grpc::CallbackServerContext* context,
    const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  auto* reactor = new UnaryReactor;
  auto version = ParseModelVersion(request->version(), "version");
  if (!version.ok()) {
    reactor->Finish(ToGrpcStatus(version.status()));
    return reactor;
  }
  auto scheduler = options_.manager->Get(request->name(), *version);
  if (!scheduler.ok()) {
    reactor->Finish(ToGrpcStatus(scheduler.status()));
    return reactor;
  }
  const std::shared_ptr<const repository::LoadedModel> held =
      (*scheduler)->model_ptr();
  const repository::LoadedModel& model = *held;
  response->set_name(model.name);
  response->set_platform("rnnserve_onnx");
  auto state = options_.manager->ModelState(model.name);
  if (state.ok()) {
    for (const repository::VersionStatus& v : state->versions) {
      if (v.state == repository::ReadyState::kReady) {
        response->add_versions(std::to_string(v.version));
      }
    }
  }
  for (const config::TensorConfig& t : model.config.inputs) {
    FillTensorMetadata(t, response->add_inputs());
  }
  for (const config::TensorConfig& t : model.config.outputs) {
    FillTensorMetadata(t, response->add_outputs());
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ModelInfer(
    grpc::CallbackServerContext* context, const ModelInferRequest* request,
    ModelInferResponse* response) {
  auto* reactor = new UnaryReactor;
  StartInfer(request, context->deadline(), response, [reactor](Status status) {
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

grpc::ServerBidiReactor<ModelInferRequest, ModelStreamInferResponse>*
InferenceService::ModelStreamInfer(grpc::CallbackServerContext* context) {
  return new StreamReactor(this, context);
}

grpc::ServerUnaryReactor* InferenceService::RepositoryIndex(
    grpc::CallbackServerContext* context,
    const inference::RepositoryIndexRequest* request,
    inference::RepositoryIndexResponse* response) {
  for (const repository::ModelStatus& model :
       options_.manager->ModelStates()) {
    if (model.versions.empty()) {
      if (request->ready()) continue;
      auto* entry = response->add_models();
      entry->set_name(model.name);
      entry->set_state(repository::ReadyStateName(model.state));
      entry->set_reason(model.reason);
      continue;
    }
    for (const repository::VersionStatus& v : model.versions) {
      if (request->ready() && v.state != repository::ReadyState::kReady) {
        continue;
      }
      auto* entry = response->add_models();
      entry->set_name(model.name);
      entry->set_version(std::to_string(v.version));
      entry->set_state(repository::ReadyStateName(v.state));
      entry->set_reason(v.reason);
    }
  }
  auto* reactor = new UnaryReactor;
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

void InferenceService::StartRepositoryChange(UnaryReactor* reactor,
                                             const std::string& name,
                                             bool load) {
  const std::string rule = config::CheckModelName(name);
  if (!rule.empty()) {
    reactor->Finish(ToGrpcStatus(InvalidArgument("model_name: " + rule)));
    return;
  }
  if (options_.model_control == config::ModelControl::kNone) {
    reactor->Finish(ToGrpcStatus(FailedPrecondition(
        std::string("cannot ") + (load ? "load" : "unload") + " model '" +
        name +
        "': the server runs with model_control none (every model is loaded "
        "at start-up); start it with --model-control explicit to load and "
        "unload models at run time")));
    return;
  }
  if (draining_.load()) {
    reactor->Finish(ToGrpcStatus(
        Status(StatusCode::kUnavailable, "the server is shutting down")));
    return;
  }
  serving::ModelManager* manager = options_.manager;
  options_.run_in_background([reactor, manager, name, load] {
    const Status status =
        load ? manager->LoadModel(name) : manager->UnloadModel(name);
    reactor->Finish(ToGrpcStatus(status));
  });
}

grpc::ServerUnaryReactor* InferenceService::RepositoryModelLoad(
    grpc::CallbackServerContext* context,
    const inference::RepositoryModelLoadRequest* request,
    inference::RepositoryModelLoadResponse* /*response*/) {
  auto* reactor = new UnaryReactor;
  if (!request->parameters().empty()) {
    // Triton's "config" / "file:" overrides are not supported; refusing is
    // better than loading something else than the caller asked for.
    reactor->Finish(ToGrpcStatus(Unimplemented(
        "parameters." + request->parameters().begin()->first +
        ": load parameters are not supported; put the config and files in "
        "the repository")));
    return reactor;
  }
  StartRepositoryChange(reactor, request->model_name(), /*load=*/true);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::RepositoryModelUnload(
    grpc::CallbackServerContext* context,
    const inference::RepositoryModelUnloadRequest* request,
    inference::RepositoryModelUnloadResponse* /*response*/) {
  auto* reactor = new UnaryReactor;
  StartRepositoryChange(reactor, request->model_name(), /*load=*/false);
  return reactor;
}

}  // namespace rnnserve::rpc
