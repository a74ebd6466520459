// ServerConfig: the settings of one rnnserve process, from a YAML file
// (`--config FILE`) with command-line flags that override it.
//
// Like model configs (model_config.h), a server config is parsed, normalized
// (every key the file leaves out keeps its default) and validated before
// anything is built; errors are INVALID_ARGUMENT values naming the field's
// path and the rule:
//   server.yaml:4:19: server.worker_threads: must be >= 1 (got 0)
//   --worker-threads: must be >= 1 (got 0)
// An unknown key is an error (with a "did you mean" when it looks like a
// typo), never silently ignored.
//
// File layout (every key optional; `rnnserve --help` prints them all with
// their defaults, and deploy/config/server.yaml is a documented example):
//   server:
//     model_repository: /models
//     grpc_address: 0.0.0.0:8001
//     metrics_address: 0.0.0.0:8002
//     worker_threads: 8
//     intra_op_threads: 1
//     max_message_bytes: 67108864
//     log_level: info
//     tls: {cert_file: ..., key_file: ..., client_ca_file: ...}
//     model_control: none
//     startup_models: []
//   model_defaults:       # any model config.yaml key except
//   name/inputs/outputs
//     precision: auto
//     batching: {max_batch_size: 64, max_queue_delay_us: 0}
//     drift: {sample_rate: 0.0}
//
// All functions are thread-safe (no shared state); configs are plain values.
#ifndef RNNSERVE_CONFIG_SERVER_CONFIG_H_
#define RNNSERVE_CONFIG_SERVER_CONFIG_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "server/common/status.h"
#include "server/config/model_config.h"

namespace rnnserve::config {

enum class LogLevel { kDebug, kInfo, kWarning, kError };
const char* LogLevelName(LogLevel level);  // "debug", "info", ...

// Whether the set of served models may change at run time.
enum class ModelControl {
  // Every model in the repository is loaded at start-up; the repository
  // load/unload RPCs are refused. The set is fixed: simplest to operate.
  kNone,
  // Only `startup_models` are loaded at start-up ("*" = all); the repository
  // RPCs load and unload models at run time (as Triton's explicit mode).
  kExplicit,
};
const char* ModelControlName(ModelControl mode);  // "none", "explicit"

// TLS for the gRPC port (the metrics port stays plain HTTP). Files are PEM,
// read at start-up. Without cert_file the gRPC port is plaintext, which is
// fine behind a mesh or on loopback.
struct TlsConfig {
  std::string cert_file;  // server certificate chain; set with key_file
  std::string key_file;   // its private key
  // Mutual TLS: when set, clients must present a certificate signed by one
  // of these CAs (stronger client identity; every client needs a cert).
  std::string client_ca_file;

  bool enabled() const { return !cert_file.empty(); }
};

// Number of CPUs this process may run on (its affinity mask; the hardware
// count when unavailable; at least 1). Container CPU quotas are not seen.
int DefaultWorkerThreads();

struct ServerConfig {
  // Folder holding <model>/config.yaml and <model>/<version>/model.onnx.
  // The default is the Docker image's mount point.
  std::string model_repository = "/models";
  // gRPC listen address HOST:PORT (or unix:PATH). 0.0.0.0 accepts remote
  // clients; 127.0.0.1 keeps the server local; port 0 picks a free port.
  std::string grpc_address = "0.0.0.0:8001";
  // Prometheus /metrics HTTP address HOST:PORT, separate so scraping never
  // competes with inference traffic and can be firewalled apart.
  std::string metrics_address = "0.0.0.0:8002";
  // Threads running batches. One per core keeps every core busy; more only
  // adds contention (each batch already saturates its core), fewer leaves
  // CPU for other processes.
  int worker_threads = DefaultWorkerThreads();
  // OpenMP threads per batch. 1 is the measured best for a server (many
  // concurrent batches beat one wide one); raise for latency at low load.
  int intra_op_threads = 1;
  // Largest gRPC message accepted or sent. Larger allows bigger batches in
  // one request; smaller bounds the memory one request can claim.
  int64_t max_message_bytes = int64_t{64} << 20;
  // debug logs per batch; info logs start-up, model loads and errors only.
  LogLevel log_level = LogLevel::kInfo;
  TlsConfig tls;
  ModelControl model_control = ModelControl::kNone;
  // Models to load at start-up under model_control explicit ("*" = all).
  std::vector<std::string> startup_models;
  // Defaults for every model's config.yaml (and for models served without
  // one): any model key except name, inputs and outputs. `--drift-sample-
  // rate` sets model_defaults.drift.sample_rate.
  ModelConfig model_defaults;
};

// Parses a server configuration file's text: `source` names it in messages.
// An empty (or comment-only) text gives the defaults. Malformed YAML gives
// "<source>:<line>:<column>: invalid YAML: ...".
StatusOr<ServerConfig> ParseServerConfig(const std::string& yaml_text,
                                         const std::string& source);

// Reads `path` (NOT_FOUND if it cannot be read) and parses it.
StatusOr<ServerConfig> LoadServerConfigFile(const std::string& path);

// Validates a config built or changed in code.
Status ValidateServerConfig(const ServerConfig& config);

// Applies command-line overrides, keyed by flag name with or without the
// leading "--": --model-repository, --grpc-address, --metrics-address,
// --worker-threads, --intra-op-threads, --max-message-bytes, --log-level,
// --tls-cert, --tls-key, --tls-client-ca, --drift-sample-rate,
// --model-control, --startup-models (comma-separated). Each value is parsed
// and validated with the file's rules, errors naming the flag
// ("--worker-threads: must be >= 1 (got 0)"); an unknown flag is an error.
// On error `config` is left unchanged.
Status ApplyFlagOverrides(const std::map<std::string, std::string>& flags,
                          ServerConfig* config);

// A parsed command line: `--name value` or `--name=value`.
struct CommandLine {
  std::string config_file;  // --config FILE; empty: the built-in defaults
  bool help = false;        // --help or -h
  std::map<std::string, std::string> flags;  // the rest, keyed "--name"
};
StatusOr<CommandLine> ParseCommandLine(int argc, const char* const argv[]);

// The effective configuration: `command_line.config_file` (if any) with the
// flags applied on top.
StatusOr<ServerConfig> LoadServerConfig(const CommandLine& command_line);

// The --help text: usage, every flag with the key it overrides and its
// default, and every file key (as a commented YAML file of the defaults).
std::string ServerConfigHelp();

// The config as YAML that ParseServerConfig reads back to the same values;
// with `comments`, each key is preceded by a line saying what it does.
std::string FormatServerConfigYaml(const ServerConfig& config,
                                   bool comments = false);

}  // namespace rnnserve::config

#endif  // RNNSERVE_CONFIG_SERVER_CONFIG_H_
