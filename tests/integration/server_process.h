// ServerProcess: the real rnnserve binary as a child process of a test, and
// RunCommand: run any other binary (a CLI, a Python client) to completion.
//
// ServerProcess::Start forks and execs the server with its stdout and stderr
// going to a temporary log file, waits for the log line the server prints
// once bound ("listening on gRPC 127.0.0.1:<port>"), then polls ServerReady
// until it answers true. If the server exits, or the timeout passes, before
// that, Start kills and reaps it and fails with the tail of its log in the
// message, so a broken server never hangs a test.
//
// Ownership: a ServerProcess owns the child (and the child's process group)
// and the log file. It is move-only; the destructor sends SIGTERM, waits a
// few seconds, then SIGKILLs and reaps, so no child outlives the object and
// none is left a zombie. The child also gets PR_SET_PDEATHSIG(SIGKILL), so a
// test binary that crashes does not leave a server behind (Linux kills it
// when the forking thread exits: start servers from the test's main thread
// or from a thread that outlives them).
//
// Binaries: RNNSERVE_BIN_DIR/rnnserve (a compile definition of the test
// targets), or $RNNSERVE_SERVER_BIN when set; likewise
// RNNSERVE_BIN_DIR/rnnserve-client or $RNNSERVE_CLIENT_BIN.
//
// Thread safety: one thread uses a ServerProcess at a time. fork() is
// followed only by async-signal-safe calls and exec, so starting a server
// from a process that already runs gRPC threads is safe.
#ifndef RNNSERVE_TESTS_INTEGRATION_SERVER_PROCESS_H_
#define RNNSERVE_TESTS_INTEGRATION_SERVER_PROCESS_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto/grpc_service.grpc.pb.h"
#include "server/common/status.h"

namespace rnnserve::testing {

namespace process_internal {

inline std::string EnvOr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

inline std::string TempDir() { return EnvOr("TMPDIR", "/tmp"); }

// A file `prefix-XXXXXX` in the temporary directory; returns its fd and path.
inline StatusOr<std::pair<int, std::string>> MakeTempFile(
    const std::string& prefix) {
  std::string pattern = TempDir() + "/" + prefix + "-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  const int fd = mkstemp(buf.data());
  if (fd < 0) {
    return Internal("mkstemp " + pattern + ": " + std::strerror(errno));
  }
  return std::make_pair(fd, std::string(buf.data()));
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::string Tail(const std::string& text, size_t max_lines) {
  size_t pos = text.size();
  size_t lines = 0;
  while (pos > 0) {
    const size_t nl = text.rfind('\n', pos - 1);
    if (nl == std::string::npos) return text;
    if (nl + 1 < text.size() && ++lines > max_lines) return text.substr(nl + 1);
    pos = nl;
  }
  return text;
}

// waitpid status -> exit code, or 128 + signal number.
inline int ExitCode(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

// Forks and execs argv[0] with stdin from /dev/null and stdout / stderr to
// the given fds, in its own process group. Everything the child needs is
// prepared before fork(). Returns the child's pid.
inline StatusOr<pid_t> Spawn(const std::vector<std::string>& argv,
                             int stdout_fd, int stderr_fd) {
  if (argv.empty()) return InvalidArgument("no command");
  if (access(argv[0].c_str(), X_OK) != 0) {
    return NotFound(argv[0] + " is not an executable file (build it first)");
  }
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0)
    return Internal(std::string("open /dev/null: ") + std::strerror(errno));
  const std::string exec_failed = "exec " + argv[0] + " failed\n";
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(null_fd);
    return Internal(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent died before prctl
    dup2(null_fd, 0);
    dup2(stdout_fd, 1);
    dup2(stderr_fd, 2);
    execv(args[0], args.data());
    ssize_t ignored = write(2, exec_failed.data(), exec_failed.size());
    (void)ignored;
    _exit(127);
  }
  setpgid(pid,
          pid);  // also here, so that a kill right after fork reaches the group
  close(null_fd);
  return pid;
}

}  // namespace process_internal

inline std::string ServerBinary() {
  return process_internal::EnvOr("RNNSERVE_SERVER_BIN",
                                 std::string(RNNSERVE_BIN_DIR) + "/rnnserve");
}

inline std::string ClientBinary() {
  return process_internal::EnvOr(
      "RNNSERVE_CLIENT_BIN",
      std::string(RNNSERVE_BIN_DIR) + "/rnnserve-client");
}

struct ServerProcessOptions {
  std::string binary = ServerBinary();
  // From fork to ServerReady == true (loading and calibrating models
  // happens in between, slowly under sanitizers).
  std::chrono::milliseconds ready_timeout{std::chrono::seconds(120)};
  // Skip the ServerReady poll (e.g. to test a server that never gets ready);
  // Start then returns once the port is known.
  bool wait_ready = true;
  // Keep the log file after destruction (its path is log_path()).
  bool keep_log = false;
  // Credentials of the ServerReady poll; null: plaintext. A server started
  // with TLS needs grpc::SslCredentials here (with a client certificate for
  // mutual TLS).
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};

class ServerProcess {
 public:
  using Options = ServerProcessOptions;

  // Runs `options.binary args...`; see the file comment.
  static StatusOr<ServerProcess> Start(const std::vector<std::string>& args,
                                       const Options& options = Options()) {
    ASSIGN_OR_RETURN(auto log,
                     process_internal::MakeTempFile("rnnserve-server"));
    ServerProcess server;
    server.log_path_ = log.second;
    server.keep_log_ = options.keep_log;
    std::vector<std::string> argv = {options.binary};
    argv.insert(argv.end(), args.begin(), args.end());
    auto pid = process_internal::Spawn(argv, log.first, log.first);
    close(log.first);
    if (!pid.ok()) return pid.status();
    server.pid_ = *pid;
    if (Status s = server.AwaitStartup(options); !s.ok()) {
      server.Kill();
      return Status(s.code(), s.message() + "\n--- server log (tail) ---\n" +
                                  server.LogTail(40));
    }
    return server;
  }

  // `--model-repository repository --grpc-address 127.0.0.1:0
  //  --metrics-address 127.0.0.1:0 extra...`
  static StatusOr<ServerProcess> StartWithRepository(
      const std::string& repository, const std::vector<std::string>& extra = {},
      const Options& options = Options()) {
    std::vector<std::string> args = {"--model-repository", repository,
                                     "--grpc-address",     "127.0.0.1:0",
                                     "--metrics-address",  "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    return Start(args, options);
  }

  ServerProcess(ServerProcess&& other) noexcept { *this = std::move(other); }
  ServerProcess& operator=(ServerProcess&& other) noexcept {
    if (this != &other) {
      Kill();
      pid_ = std::exchange(other.pid_, -1);
      port_ = other.port_;
      host_ = std::move(other.host_);
      exit_code_ = other.exit_code_;
      log_path_ = std::exchange(other.log_path_, "");
      keep_log_ = other.keep_log_;
    }
    return *this;
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  ~ServerProcess() {
    Kill();
    if (!keep_log_ && !log_path_.empty()) unlink(log_path_.c_str());
  }

  int port() const { return port_; }
  // "127.0.0.1:<port>", for clients.
  std::string address() const { return host_ + ":" + std::to_string(port_); }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  std::string Log() const { return process_internal::ReadFile(log_path_); }
  std::string LogTail(size_t lines = 30) const {
    return process_internal::Tail(Log(), lines);
  }

  // The first capture group of `pattern` in the log so far, if it matched
  // (e.g. R"(metrics on (\S+))" for another address the server logs).
  std::optional<std::string> FindInLog(const std::string& pattern) const {
    std::smatch m;
    const std::string log = Log();
    if (std::regex_search(log, m, std::regex(pattern)) && m.size() > 1)
      return m[1].str();
    return std::nullopt;
  }

  // True while the child has not exited (reaps it if it has).
  bool Running() {
    if (pid_ <= 0) return false;
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      exit_code_ = r == pid_ ? process_internal::ExitCode(status) : -1;
      pid_ = -1;
      return false;
    }
    return true;
  }

  // SIGTERM (graceful shutdown), then SIGKILL after `grace`. Returns the exit
  // code (128 + signal when killed by one); FAILED_PRECONDITION if the
  // server was never started. Calling it again returns the same code.
  StatusOr<int> Stop(
      std::chrono::milliseconds grace = std::chrono::seconds(30)) {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      if (!WaitForExit(grace)) {
        kill(-pid_, SIGKILL);
        kill(pid_, SIGKILL);
        WaitForExit(std::chrono::hours(1));
      }
    }
    if (!exit_code_) return FailedPrecondition("the server was not running");
    return *exit_code_;
  }

 private:
  ServerProcess() = default;

  // Waits for the exit of the child; true if it exited within `timeout`.
  bool WaitForExit(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (Running()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }

  // Best-effort teardown for destructors and failed starts.
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    if (!WaitForExit(std::chrono::seconds(10))) {
      kill(-pid_, SIGKILL);
      kill(pid_, SIGKILL);
      WaitForExit(std::chrono::hours(1));
    }
  }

  Status Died(const char* while_doing) const {
    return Internal(std::string("the server exited with code ") +
                    std::to_string(exit_code_.value_or(-1)) + " while " +
                    while_doing);
  }

  Status AwaitStartup(const Options& options) {
    const auto deadline =
        std::chrono::steady_clock::now() + options.ready_timeout;
    const std::regex listening(R"(listening on gRPC (\S+):(\d+))");
    while (true) {
      if (!Running()) return Died("starting");
      std::smatch m;
      const std::string log = Log();
      if (std::regex_search(log, m, listening)) {
        host_ = m[1].str();
        if (host_ == "0.0.0.0" || host_ == "[::]") host_ = "127.0.0.1";
        port_ = std::stoi(m[2].str());
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        return Status(
            StatusCode::kDeadlineExceeded,
            "no 'listening on gRPC HOST:PORT' line in the server log after " +
                std::to_string(options.ready_timeout.count()) + " ms");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!options.wait_ready) return Status::Ok();
    auto channel = grpc::CreateChannel(
        address(), options.credentials ? options.credentials
                                       : grpc::InsecureChannelCredentials());
    auto stub = inference::GRPCInferenceService::NewStub(channel);
    std::string last = "no answer yet";
    while (true) {
      if (!Running()) return Died("getting ready");
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(1));
      inference::ServerReadyResponse response;
      const grpc::Status s = stub->ServerReady(&context, {}, &response);
      if (s.ok() && response.ready()) return Status::Ok();
      last =
          s.ok() ? "ServerReady: false" : "ServerReady: " + s.error_message();
      if (std::chrono::steady_clock::now() >= deadline) {
        return Status(StatusCode::kDeadlineExceeded,
                      "server on " + address() + " not ready after " +
                          std::to_string(options.ready_timeout.count()) +
                          " ms (" + last + ")");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  pid_t pid_ = -1;
  int port_ = 0;
  std::string host_ = "127.0.0.1";
  std::optional<int> exit_code_;
  std::string log_path_;
  bool keep_log_ = false;
};

// What a finished command printed and returned.
struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed by one
  std::string out;
  std::string err;
};

// Runs argv (argv[0] a path) to completion with stdin from /dev/null;
// kills it (SIGKILL to its process group) after `timeout` and then fails
// with DEADLINE_EXCEEDED and what it printed.
inline StatusOr<CommandResult> RunCommand(
    const std::vector<std::string>& argv,
    std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  using process_internal::MakeTempFile;
  ASSIGN_OR_RETURN(auto out, MakeTempFile("rnnserve-cmd-out"));
  auto err = MakeTempFile("rnnserve-cmd-err");
  if (!err.ok()) {
    close(out.first);
    unlink(out.second.c_str());
    return err.status();
  }
  auto pid = process_internal::Spawn(argv, out.first, err->first);
  close(out.first);
  close(err->first);
  CommandResult result;
  Status status;
  if (pid.ok()) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int wait_status = 0;
    while (true) {
      const pid_t r = waitpid(*pid, &wait_status, WNOHANG);
      if (r == *pid) {
        result.exit_code = process_internal::ExitCode(wait_status);
        break;
      }
      if (r < 0) {
        status = Internal(std::string("waitpid: ") + std::strerror(errno));
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        kill(-*pid, SIGKILL);
        kill(*pid, SIGKILL);
        waitpid(*pid, &wait_status, 0);
        status = Status(StatusCode::kDeadlineExceeded,
                        argv[0] + " did not finish within " +
                            std::to_string(timeout.count()) + " ms");
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } else {
    status = pid.status();
  }
  result.out = process_internal::ReadFile(out.second);
  result.err = process_internal::ReadFile(err->second);
  unlink(out.second.c_str());
  unlink(err->second.c_str());
  if (!status.ok()) {
    return Status(status.code(), status.message() + "\nstdout:\n" + result.out +
                                     "\nstderr:\n" + result.err);
  }
  return result;
}

}  // namespace rnnserve::testing

#endif  // RNNSERVE_TESTS_INTEGRATION_SERVER_PROCESS_H_
