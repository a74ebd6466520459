#include "server/rpc/server.h"

#include <climits>
#include <fstream>
#include <sstream>
#include <utility>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "server/common/log.h"
#include "server/engine/rnn_model.h"

namespace rnnserve::rpc {
namespace {

void Log(LogSeverity severity, const std::string& message) {
  LogLine(severity, "server", message);
}

StatusOr<std::string> ReadPem(const std::string& path, const char* field) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in || text.str().empty()) {
    return InvalidArgument(std::string(field) + ": cannot read '" + path +
                           "'");
  }
  return text.str();
}

StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(
    const config::TlsConfig& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain,
                   ReadPem(tls.cert_file, "server.tls.cert_file"));
  ASSIGN_OR_RETURN(pair.private_key,
                   ReadPem(tls.key_file, "server.tls.key_file"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs,
                     ReadPem(tls.client_ca_file, "server.tls.client_ca_file"));
    ssl.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

// A configured HOST:PORT with the port actually bound (port 0 picks one);
// unix: addresses have no port.
std::string WithPort(const std::string& configured, int port) {
  if (configured.rfind("unix:", 0) == 0) return configured;
  return configured.substr(0, configured.rfind(':')) + ":" +
         std::to_string(port);
}

// Scrape-time values of every served version, and of versions that failed
// to load (ready 0).
std::vector<metrics::ModelSnapshot> Snapshots(serving::ModelManager& manager) {
  std::vector<metrics::ModelSnapshot> out;
  for (const auto& scheduler : manager.Schedulers()) {
    const std::shared_ptr<const repository::LoadedModel> held =
        scheduler->model_ptr();
    const repository::LoadedModel& model = *held;
    const config::BatchingConfig& batching = model.config.batching;
    const batching::BatcherStats stats = scheduler->GetStats();
    metrics::ModelSnapshot s;
    s.model = model.name;
    s.version = std::to_string(model.version);
    s.ready = !scheduler->stopped();
    s.queue_depth = stats.queued;
    s.queue_capacity = batching.max_queue_size;
    s.live_sequences = stats.active_sequences;
    s.live_sequences_capacity =
        scheduler->is_sequence() ? batching.max_active_sequences : 0;
    s.load_seconds = model.load_seconds;
    s.weights_bytes = model.weights_bytes;
    s.quantized = model.precision == engine::Precision::kInt8;
    s.int8_active = s.quantized && !scheduler->serving_f32_fallback();
    if (auto drift = scheduler->drift_monitor()) {
      s.reservoir_sequences = drift->reservoir_size();
    }
    out.push_back(std::move(s));
  }
  for (const repository::ModelStatus& m : manager.ModelStates()) {
    for (const repository::VersionStatus& v : m.versions) {
      if (v.state == repository::ReadyState::kReady) continue;
      metrics::ModelSnapshot s;
      s.model = m.name;
      s.version = std::to_string(v.version);
      out.push_back(std::move(s));
    }
  }
  return out;
}

}  // namespace

Server::Server(const Options& options) : options_(options) {}

Server::~Server() {
  Shutdown();
  // Members go in reverse order, so the /metrics listener outlives the
  // model manager a scrape reads; detach the scrape first (waits for one in
  // flight). Found by the TSan run of the Prometheus scrape test.
  if (metrics_ != nullptr) metrics_->SetSnapshotSource(nullptr);
}

StatusOr<std::unique_ptr<Server>> Server::Create(const Options& options) {
  const config::ServerConfig& config = options.config;
  std::unique_ptr<Server> server(new Server(options));
  Server* self = server.get();

  // Metrics first: a busy metrics port is a start-up error like a busy gRPC
  // port, and every model version's series exist before it serves.
  metrics::ServerMetrics::Options metrics_options;
  metrics_options.address = config.metrics_address;
  metrics_options.version = kServerVersion;
  metrics_options.isa = engine::CpuIsaName();
  ASSIGN_OR_RETURN(server->metrics_,
                   metrics::ServerMetrics::Create(metrics_options));

  serving::ModelManager::Options mo;
  mo.repository.root = config.model_repository;
  mo.repository.model_defaults = config.model_defaults;
  mo.repository.intra_op_threads = config.intra_op_threads;
  mo.repository.log = [](const std::string& line) {
    LogLine(LogSeverity::kInfo, "repository", line);
  };
  mo.worker_threads = config.worker_threads;
  mo.clock = options.clock;
  mo.on_change = [self] { self->UpdateHealth(); };
  mo.metrics = server->metrics_.get();
  auto manager = serving::ModelManager::Create(mo);
  if (!manager.ok()) {
    return manager.status().Annotate("server.model_repository");
  }
  server->manager_ = std::move(manager).value();

  InferenceService::Options so;
  so.manager = server->manager_.get();
  so.model_control = config.model_control;
  so.run_in_background = [self](std::function<void()> job) {
    self->RunInBackground(std::move(job));
  };
  so.metrics = server->metrics_.get();
  server->service_ = std::make_unique<InferenceService>(so);
  ControlService::Options co;
  co.manager = server->manager_.get();
  co.run_in_background = so.run_in_background;
  server->control_ = std::make_unique<ControlService>(co);

  ASSIGN_OR_RETURN(auto credentials, Credentials(config.tls));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default: a second server on a busy port would
  // then start "successfully" and silently take half the connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(config.grpc_address, credentials, &server->port_);
  builder.RegisterService(server->service_.get());
  builder.RegisterService(server->control_.get());
  const int max_bytes = static_cast<int>(
      std::min<int64_t>(config.max_message_bytes, INT_MAX));
  builder.SetMaxReceiveMessageSize(max_bytes);
  builder.SetMaxSendMessageSize(max_bytes);
  server->grpc_server_ = builder.BuildAndStart();
  if (server->grpc_server_ == nullptr ||
      (server->port_ == 0 && config.grpc_address.rfind("unix:", 0) != 0)) {
    server->grpc_server_.reset();
    return Status(StatusCode::kUnavailable,
                  "server.grpc_address: cannot listen on '" +
                      config.grpc_address +
                      "' (address in use, or not an address of this host)");
  }
  server->UpdateHealth();
  serving::ModelManager* manager_ptr = server->manager_.get();
  server->metrics_->SetSnapshotSource(
      [manager_ptr] { return Snapshots(*manager_ptr); });
  Log(LogSeverity::kInfo,
      config.metrics_address.empty()
          ? std::string("metrics: no /metrics listener (metrics_address empty)")
          : "metrics on http://" + server->metrics_address() + "/metrics");
  Log(LogSeverity::kInfo,
      "listening on gRPC " + server->address() +
          (config.tls.enabled()
               ? (config.tls.client_ca_file.empty() ? " (TLS)"
                                                    : " (mutual TLS)")
               : " (plaintext)") +
          ", max message " + std::to_string(config.max_message_bytes) +
          " bytes");
  return server;
}

std::string Server::metrics_address() const {
  return WithPort(options_.config.metrics_address, metrics_port());
}

std::string Server::address() const {
  return WithPort(options_.config.grpc_address, port_);
}

void Server::LoadModels() {
  const config::ServerConfig& config = options_.config;
  std::vector<std::string> names = {"*"};
  if (config.model_control == config::ModelControl::kExplicit) {
    names = config.startup_models;
  }
  Log(LogSeverity::kInfo, "loading models from " + config.model_repository +
                              " (model_control " +
                              config::ModelControlName(config.model_control) +
                              ")");
  const Status status = manager_->LoadModels(names);
  if (!status.ok()) Log(LogSeverity::kError, status.ToString());
  int ready = 0, total = 0;
  for (const repository::ModelStatus& m : manager_->ModelStates()) {
    ++total;
    if (m.state == repository::ReadyState::kReady) ++ready;
  }
  if (!shutting_down_.load()) service_->SetReady(true);
  UpdateHealth();
  Log(ready == total ? LogSeverity::kInfo : LogSeverity::kWarning,
      "ready: " + std::to_string(ready) + " of " + std::to_string(total) +
          " models ready");
}

void Server::UpdateHealth() {
  if (grpc_server_ == nullptr) return;
  grpc::HealthCheckServiceInterface* health =
      grpc_server_->GetHealthCheckService();
  if (health == nullptr || shutting_down_.load()) return;
  const bool ready = service_->ready();
  health->SetServingStatus("", ready);
  health->SetServingStatus("inference.GRPCInferenceService", ready);
  for (const repository::ModelStatus& m : manager_->ModelStates()) {
    health->SetServingStatus(m.name, manager_->Get(m.name).ok());
  }
}

void Server::RunInBackground(std::function<void()> job) {
  std::lock_guard<std::mutex> lock(background_mutex_);
  if (shutting_down_.load()) {
    job();  // rare: a load that raced shutdown; it only refuses or finishes
    return;
  }
  // Reap jobs that are done, so threads do not pile up over a long run.
  for (auto it = background_.begin(); it != background_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = background_.erase(it);
    } else {
      ++it;
    }
  }
  auto done = std::make_shared<std::atomic<bool>>(false);
  background_.push_back(
      BackgroundJob{std::thread([job = std::move(job), done] {
                      job();
                      done->store(true);
                    }),
                    done});
}

void Server::Shutdown() {
  std::lock_guard<std::mutex> lock(shutdown_mutex_);
  if (shutdown_done_) return;
  shutting_down_.store(true);
  if (grpc_server_ != nullptr) {
    Log(LogSeverity::kInfo, "shutting down: finishing accepted requests");
    service_->SetDraining();
    if (auto* health = grpc_server_->GetHealthCheckService()) {
      health->Shutdown();  // every service NOT_SERVING from now on
    }
    grpc_server_->Shutdown(std::chrono::system_clock::now() +
                           options_.shutdown_grace);
  }
  // Repository jobs may still be finishing their calls; let them.
  std::vector<BackgroundJob> background;
  {
    std::lock_guard<std::mutex> bg_lock(background_mutex_);
    background.swap(background_);
  }
  for (BackgroundJob& job : background) job.thread.join();
  if (manager_ != nullptr) manager_->Stop();
  if (grpc_server_ != nullptr) {
    grpc_server_->Wait();
    Log(LogSeverity::kInfo,
        "shutdown complete: " + std::to_string(service_->requests_accepted()) +
            " inference requests accepted, " +
            std::to_string(service_->requests_answered()) + " answered (" +
            std::to_string(service_->requests_ok()) + " OK)");
  }
  shutdown_done_ = true;
}

void Server::Wait() {
  if (grpc_server_ != nullptr) grpc_server_->Wait();
}

}  // namespace rnnserve::rpc
