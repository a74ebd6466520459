// Server: one rnnserve process's gRPC side — the model manager, the
// KServe V2 service, grpc.health.v1 and reflection on one port.
//
// Life cycle (what `rnnserve` main does):
//   auto server = Server::Create(config);  // binds and serves; not ready
//   server->LoadModels();                  // start-up models; then ready
//   ... SIGTERM ... server->Shutdown();    // from any thread
//   server->Wait();                        // returns after Shutdown
// Between Create and the end of LoadModels the server is live but not
// ready (ServerReady false, health "" NOT_SERVING), so orchestrators can
// tell "starting" from "dead".
//
// Health (grpc.health.v1.Health): service "" is SERVING while the server is
// ready; each model has a service named after it, SERVING while the model
// has a ready version; "inference.GRPCInferenceService" follows "".
//
// Shutdown: ServerReady turns false and health NOT_SERVING, new requests
// get UNAVAILABLE, gRPC stops accepting calls and waits (up to the grace
// period) for the calls it accepted; every queued request is computed and
// answered; then the batchers stop. Streams still open at the end of the
// grace period are cancelled.
//
// Threads: Shutdown and the accessors are thread-safe; Create, LoadModels
// and Wait are meant for the main thread.
#ifndef RNNSERVE_RPC_SERVER_H_
#define RNNSERVE_RPC_SERVER_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/server.h>

#include "server/common/status.h"
#include "server/config/server_config.h"
#include "server/metrics/server_metrics.h"
#include "server/rpc/control_service.h"
#include "server/rpc/inference_service.h"
#include "server/serving/model_manager.h"

namespace rnnserve::rpc {

class Server {
 public:
  struct Options {
    config::ServerConfig config;
    // How long Shutdown waits for accepted calls before cancelling them.
    std::chrono::milliseconds shutdown_grace{30'000};
    // Time source of the schedulers; not owned; nullptr = RealClock.
    batching::Clock* clock = nullptr;
  };

  // Builds the manager (NOT_FOUND when the repository root is missing),
  // reads the TLS files (INVALID_ARGUMENT naming server.tls.* when
  // unreadable), binds grpc_address (UNAVAILABLE when it cannot) and starts
  // serving. Loads no model.
  static StatusOr<std::unique_ptr<Server>> Create(const Options& options);
  ~Server();  // Shutdown() and Wait()

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Loads the start-up models (model_control none: every model folder;
  // explicit: startup_models), then marks the server ready. A model that
  // fails to load is logged and left UNAVAILABLE; the others serve.
  void LoadModels();

  void Shutdown();
  void Wait();

  // The port bound (the real one when grpc_address asked for port 0).
  int port() const { return port_; }
  // "HOST:PORT" with the bound port.
  std::string address() const;
  serving::ModelManager& manager() { return *manager_; }
  // The bound /metrics port, and "HOST:PORT" with it.
  int metrics_port() const { return metrics_->port(); }
  std::string metrics_address() const;
  metrics::ServerMetrics& metrics() { return *metrics_; }

 private:
  explicit Server(const Options& options);
  void UpdateHealth();
  // Runs `job` on a thread of its own (repository loads); joined at
  // Shutdown.
  void RunInBackground(std::function<void()> job);

  const Options options_;
  // Declared first: destroyed last, after everything that holds its series.
  std::unique_ptr<metrics::ServerMetrics> metrics_;
  std::unique_ptr<serving::ModelManager> manager_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<ControlService> control_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int port_ = 0;
  std::atomic<bool> shutting_down_{false};
  std::mutex shutdown_mutex_;  // one Shutdown at a time; others wait for it
  bool shutdown_done_ = false;  // guarded by shutdown_mutex_

  struct BackgroundJob {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex background_mutex_;
  std::vector<BackgroundJob> background_;  // guarded by background_mutex_
};

}  // namespace rnnserve::rpc

#endif  // RNNSERVE_RPC_SERVER_H_
