// InferenceService: inference.GRPCInferenceService (KServe V2 / Open
// Inference Protocol, plus Triton's ModelStreamInfer and repository RPCs) on
// gRPC's callback API.
//
// No handler blocks: ModelInfer decodes and checks the request on the gRPC
// thread (rpc/tensor_codec.h), queues it on the model's scheduler and
// returns; a batcher worker fills the response and finishes the call.
// ModelStreamInfer keeps reading while earlier requests of the stream are
// queued or running, and writes each response as it completes (one write
// in flight at a time; responses of one sequence_id keep their order, others
// may overtake); an error answers that one request with error_message and
// keeps the stream open, as Triton does. Repository load and unload run on
// a background thread the owner provides.
//
// Errors keep gRPC's codes: NOT_FOUND for an unknown model or version,
// INVALID_ARGUMENT naming the bad field, RESOURCE_EXHAUSTED for a full queue
// or too many streams, FAILED_PRECONDITION for a chunk of a stream that is
// not live, DEADLINE_EXCEEDED when the deadline passed in the queue,
// UNAVAILABLE when the model failed to load or the server is draining.
//
// Response parameters added to every successful ModelInferResponse:
//   batch_size   int64: sequences in the engine batch this request ran in
//                (> its own batch when the batcher combined requests)
//   sequence_id  uint64: echoed for stateful requests
// On a stream, a failed request's ModelStreamInferResponse also carries the
// request's id, model name and version, and the parameter `status_code`
// (int64, the gRPC code), so clients can tell errors apart.
//
// Threads: the service is shared by every gRPC thread; its own state is
// atomics. The manager and the background runner must outlive it.
#ifndef RNNSERVE_RPC_INFERENCE_SERVICE_H_
#define RNNSERVE_RPC_INFERENCE_SERVICE_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "proto/grpc_service.grpc.pb.h"
#include "server/config/server_config.h"
#include "server/metrics/server_metrics.h"
#include "server/rpc/unary_reactor.h"
#include "server/serving/model_manager.h"

namespace rnnserve::rpc {

// Version reported by ServerMetadata.
inline constexpr char kServerName[] = "rnnserve";
inline constexpr char kServerVersion[] = "0.1.0";

class InferenceService final
    : public inference::GRPCInferenceService::CallbackService {
 public:
  struct Options {
    serving::ModelManager* manager = nullptr;  // not owned
    // kNone refuses RepositoryModelLoad/Unload with FAILED_PRECONDITION.
    config::ModelControl model_control = config::ModelControl::kNone;
    // Runs a blocking job (a model load) off the gRPC threads.
    std::function<void(std::function<void()>)> run_in_background;
    // Request counters and latency; not owned; optional.
    metrics::ServerMetrics* metrics = nullptr;
  };

  explicit InferenceService(const Options& options);

  // ServerReady answers this (false until start-up loading is done, and
  // again while draining).
  void SetReady(bool ready) { ready_.store(ready); }
  bool ready() const { return ready_.load(); }
  // Shutdown has begun: not ready, repository changes refused. Inference
  // requests are still served (gRPC itself stops accepting new calls).
  void SetDraining() {
    draining_.store(true);
    ready_.store(false);
  }

  // Inference requests handed to StartInfer, and those answered (any
  // status). After a graceful shutdown the two are equal: nothing accepted
  // was dropped. (Calls gRPC refused while shutting down never get here.)
  int64_t requests_accepted() const { return accepted_.load(); }
  int64_t requests_answered() const { return answered_.load(); }
  int64_t requests_ok() const { return answered_ok_.load(); }

  // Decodes `request`, queues it and calls `done` exactly once, possibly
  // before returning (for errors found at once), else from a worker thread,
  // after `response` was filled. `request` and `response` must stay valid
  // until `done` runs. `deadline` is the call's gRPC deadline
  // (time_point::max() for none); the request's `timeout` parameter may
  // tighten it.
  void StartInfer(const inference::ModelInferRequest* request,
                  std::chrono::system_clock::time_point deadline,
                  inference::ModelInferResponse* response,
                  std::function<void(Status)> done);

  grpc::ServerUnaryReactor* ServerLive(
      grpc::CallbackServerContext* context,
      const inference::ServerLiveRequest* request,
      inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(
      grpc::CallbackServerContext* context,
      const inference::ServerReadyRequest* request,
      inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(
      grpc::CallbackServerContext* context,
      const inference::ModelReadyRequest* request,
      inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(
      grpc::CallbackServerContext* context,
      const inference::ServerMetadataRequest* request,
      inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(
      grpc::CallbackServerContext* context,
      const inference::ModelMetadataRequest* request,
      inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(
      grpc::CallbackServerContext* context,
      const inference::ModelInferRequest* request,
      inference::ModelInferResponse* response) override;
  grpc::ServerBidiReactor<inference::ModelInferRequest,
                          inference::ModelStreamInferResponse>*
  ModelStreamInfer(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* RepositoryIndex(
      grpc::CallbackServerContext* context,
      const inference::RepositoryIndexRequest* request,
      inference::RepositoryIndexResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelLoad(
      grpc::CallbackServerContext* context,
      const inference::RepositoryModelLoadRequest* request,
      inference::RepositoryModelLoadResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(
      grpc::CallbackServerContext* context,
      const inference::RepositoryModelUnloadRequest* request,
      inference::RepositoryModelUnloadResponse* response) override;

 private:
  // Starts a repository load (load = true) or unload of `name` in the
  // background and finishes `reactor` when it is done.
  void StartRepositoryChange(UnaryReactor* reactor,
                             const std::string& name, bool load);

  const Options options_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> accepted_{0};
  std::atomic<int64_t> answered_{0};
  std::atomic<int64_t> answered_ok_{0};
};

}  // namespace rnnserve::rpc

#endif  // RNNSERVE_RPC_INFERENCE_SERVICE_H_
