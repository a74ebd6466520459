// rnnserve: the inference server. Flags -> config -> Server -> wait.
//
//   build/bin/rnnserve [--config server.yaml] [--model-repository DIR]
//                      [--grpc-address HOST:PORT] [...]; --help lists all.
//
// Exit status: 0 after a graceful shutdown (SIGTERM or SIGINT: stop
// accepting, finish what was accepted); 2 for a bad command line or
// configuration; 1 when the server cannot start (repository missing, port
// in use). A second SIGTERM/SIGINT during shutdown exits at once with 1.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "oneapi/dnnl/dnnl.hpp"
#include "server/common/log.h"
#include "server/config/server_config.h"
#include "server/engine/rnn_model.h"
#include "server/rpc/server.h"

namespace {

using rnnserve::LogLine;
using rnnserve::LogSeverity;

LogSeverity SeverityOf(rnnserve::config::LogLevel level) {
  switch (level) {
    case rnnserve::config::LogLevel::kDebug:
      return LogSeverity::kDebug;
    case rnnserve::config::LogLevel::kInfo:
      return LogSeverity::kInfo;
    case rnnserve::config::LogLevel::kWarning:
      return LogSeverity::kWarning;
    case rnnserve::config::LogLevel::kError:
      return LogSeverity::kError;
  }
  return LogSeverity::kInfo;
}

// Process-wide memory settings, measured by the soak test (tests/soak/): a
// server that sees many request shapes and reloads grew without bound with
// the defaults (random shapes, 150 s: 468 MiB and climbing ~78 MiB/min; with
// these: 157 MiB, flat).
//  * oneDNN's process-wide primitive cache (1,024 entries by default) only
//    duplicated the per-model shape caches of RnnModel and the int8 GRU,
//    which are bounded by max_cached_shapes: it is switched off.
//  * glibc makes up to 8 malloc arenas per core as threads come and go
//    (gRPC's executor, reload threads) and rarely returns their memory: two.
// An environment variable that sets either one wins.
std::string TuneMemory() {
  std::string said;
  if (std::getenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY") == nullptr &&
      std::getenv("DNNL_PRIMITIVE_CACHE_CAPACITY") == nullptr) {
    dnnl::set_primitive_cache_capacity(0);
  }
  said += "oneDNN primitive cache " +
          std::to_string(dnnl::get_primitive_cache_capacity());
  if (const char* arenas = std::getenv("MALLOC_ARENA_MAX")) {
    said += std::string(", malloc arenas ") + arenas + " (MALLOC_ARENA_MAX)";
  } else {
    mallopt(M_ARENA_MAX, 2);
    said += ", malloc arenas 2";
  }
  return said;
}

void Log(const std::string& message) {
  LogLine(LogSeverity::kInfo, "main", message);
}

}  // namespace

int main(int argc, char** argv) {
  namespace config = rnnserve::config;
  auto command_line = config::ParseCommandLine(argc, argv);
  if (!command_line.ok()) {
    std::cerr << "rnnserve: " << command_line.status().message()
              << "\nRun 'rnnserve --help' for the flags.\n";
    return 2;
  }
  if (command_line->help) {
    std::cout << config::ServerConfigHelp();
    return 0;
  }
  auto server_config = config::LoadServerConfig(*command_line);
  if (!server_config.ok()) {
    std::cerr << "rnnserve: " << server_config.status().message() << "\n";
    return 2;
  }
  rnnserve::SetLogSeverity(SeverityOf(server_config->log_level));
  const std::string memory_settings = TuneMemory();  // before any thread

  // Signals go to one thread that waits for them; every other thread
  // (gRPC's, the batchers', OpenMP's) inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Log(std::string("rnnserve ") + rnnserve::rpc::kServerVersion + " starting: " +
      "cpu " + rnnserve::engine::CpuIsaName() + ", int8 dot-product " +
      (rnnserve::engine::CpuHasInt8Vnni() ? "VNNI" : "none (7-bit weights)") +
      ", worker_threads " + std::to_string(server_config->worker_threads) +
      ", intra_op_threads " + std::to_string(server_config->intra_op_threads) +
      ", " + memory_settings +
      (command_line->config_file.empty()
           ? ", built-in config"
           : ", config " + command_line->config_file));

  rnnserve::rpc::Server::Options options;
  options.config = *server_config;
  auto server = rnnserve::rpc::Server::Create(options);
  if (!server.ok()) {
    LogLine(LogSeverity::kError, "main",
            "cannot start: " + server.status().ToString());
    return 1;
  }
  rnnserve::rpc::Server* raw = server->get();

  std::thread signal_thread([raw, signals] {
    int received = 0;
    sigwait(&signals, &received);
    Log(std::string("received ") + (received == SIGTERM ? "SIGTERM" : "SIGINT") +
        "; shutting down gracefully (again to exit at once)");
    std::thread([signals] {
      int again = 0;
      sigwait(&signals, &again);
      LogLine(LogSeverity::kError, "main", "second signal: exiting now");
      _exit(1);
    }).detach();
    raw->Shutdown();
  });

  raw->LoadModels();
  raw->Wait();
  // Wait returns once gRPC stopped; Shutdown (on the signal thread) then
  // drains the batchers. The destructor waits for it to finish.
  signal_thread.join();
  server->reset();
  Log("exit 0");
  return 0;
}
