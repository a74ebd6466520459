#include "server/config/server_config.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <thread>
#include <utility>

#include "server/config/config_reader.h"
#include "server/config/model_config_internal.h"
#include "server/config/yaml_tree.h"

namespace rnnserve::config {
namespace {

using internal::ModelSection;

const EnumNames<LogLevel>& LogLevelNames() {
  static const auto* names =
      new EnumNames<LogLevel>{{"debug", LogLevel::kDebug},
                              {"info", LogLevel::kInfo},
                              {"warning", LogLevel::kWarning},
                              {"error", LogLevel::kError}};
  return *names;
}

const EnumNames<ModelControl>& ModelControlNames() {
  static const auto* names = new EnumNames<ModelControl>{
      {"none", ModelControl::kNone}, {"explicit", ModelControl::kExplicit}};
  return *names;
}

// The keys under `server:`, in file order, with the comment written above
// each in the commented YAML (and so in --help).
struct ServerKey {
  const char* key;
  const char* comment;
};
const ServerKey kServerKeys[] = {
    {"model_repository",
     "Folder of <model>/config.yaml and <model>/<version>/model.onnx."},
    {"grpc_address",
     "gRPC (KServe V2) listen address HOST:PORT or unix:PATH; port 0 picks "
     "a free port."},
    {"metrics_address", "Prometheus /metrics HTTP address HOST:PORT."},
    {"worker_threads",
     "Threads running batches; default: the number of cores."},
    {"intra_op_threads",
     "OpenMP threads per batch; 1 is best under load, more lowers latency "
     "at low load."},
    {"max_message_bytes", "Largest gRPC message accepted or sent."},
    {"log_level", "debug | info | warning | error"},
    {"tls",
     "gRPC TLS (PEM files). Empty cert_file: plaintext. client_ca_file: "
     "mutual TLS."},
    {"model_control",
     "none: serve every model, refuse load/unload RPCs | explicit: load "
     "startup_models, allow load/unload RPCs."},
    {"startup_models",
     "With model_control explicit: models loaded at start-up (\"*\" = all)."},
};

std::vector<std::string> ServerKeyNames() {
  std::vector<std::string> names;
  for (const ServerKey& k : kServerKeys) names.push_back(k.key);
  return names;
}

const char* ServerKeyComment(const char* key) {
  for (const ServerKey& k : kServerKeys) {
    if (std::string(k.key) == key) return k.comment;
  }
  return "";
}

Status ReadServerSection(const YamlNode& node, ConfigContext* ctx,
                         ServerConfig* c) {
  ASSIGN_OR_RETURN(MapReader m, MapReader::Open(node, "server", ctx));
  RETURN_IF_ERROR(m.Read("model_repository", &c->model_repository));
  RETURN_IF_ERROR(m.Read("grpc_address", &c->grpc_address));
  RETURN_IF_ERROR(m.Read("metrics_address", &c->metrics_address));
  RETURN_IF_ERROR(m.Read("worker_threads", &c->worker_threads));
  RETURN_IF_ERROR(m.Read("intra_op_threads", &c->intra_op_threads));
  RETURN_IF_ERROR(m.Read("max_message_bytes", &c->max_message_bytes));
  RETURN_IF_ERROR(m.ReadEnum("log_level", LogLevelNames(), &c->log_level));
  if (const YamlNode* tls = m.Find("tls")) {
    ASSIGN_OR_RETURN(MapReader t, MapReader::Open(*tls, m.Child("tls"), ctx));
    RETURN_IF_ERROR(t.Read("cert_file", &c->tls.cert_file));
    RETURN_IF_ERROR(t.Read("key_file", &c->tls.key_file));
    RETURN_IF_ERROR(t.Read("client_ca_file", &c->tls.client_ca_file));
    RETURN_IF_ERROR(t.Finish());
  }
  RETURN_IF_ERROR(
      m.ReadEnum("model_control", ModelControlNames(), &c->model_control));
  RETURN_IF_ERROR(m.Read("startup_models", &c->startup_models));
  return m.Finish();
}

// HOST:PORT with PORT in [0, 65535] (0: any free port); "unix:PATH" too
// when `allow_unix`.
Status CheckAddress(const ConfigContext& ctx, const std::string& path,
                    const std::string& address, bool allow_unix) {
  if (allow_unix && address.rfind("unix:", 0) == 0) {
    if (address.size() > 5) return Status::Ok();
    return ctx.ValueError(
        path, "unix: needs a socket path (got " + Quoted(address) + ")");
  }
  const std::string rule =
      std::string("must be HOST:PORT") + (allow_unix ? " or unix:PATH" : "") +
      " with PORT in [0, 65535] (got " + Quoted(address) + ")";
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return ctx.ValueError(path, rule);
  }
  const std::string host = address.substr(0, colon);
  if (host.find(':') != std::string::npos &&
      (host.front() != '[' || host.back() != ']')) {
    return ctx.ValueError(path, rule +
                                    "; write IPv6 hosts in brackets, "
                                    "[::1]:8001");
  }
  int port = 0;
  if (!ParseIntText(address.substr(colon + 1), &port).empty() ||
      address[colon + 1] == '-' || address[colon + 1] == '+' || port < 0 ||
      port > 65535) {
    return ctx.ValueError(path, rule);
  }
  return Status::Ok();
}

bool HasPortZero(const std::string& address) {
  return address.size() >= 2 &&
         address.compare(address.size() - 2, 2, ":0") == 0;
}

Status ValidateServerFields(const ServerConfig& c, const ConfigContext& ctx) {
  if (c.model_repository.empty()) {
    return ctx.ValueError("server.model_repository", "must not be empty");
  }
  RETURN_IF_ERROR(
      CheckAddress(ctx, "server.grpc_address", c.grpc_address, true));
  RETURN_IF_ERROR(
      CheckAddress(ctx, "server.metrics_address", c.metrics_address, false));
  if (c.grpc_address == c.metrics_address && !HasPortZero(c.grpc_address)) {
    return ctx.ValueError("server.metrics_address",
                          "must differ from server.grpc_address (both " +
                              Quoted(c.grpc_address) + ")");
  }
  RETURN_IF_ERROR(
      CheckIntRange(ctx, "server.worker_threads", c.worker_threads, 1, 1024));
  RETURN_IF_ERROR(CheckIntRange(ctx, "server.intra_op_threads",
                                c.intra_op_threads, 1, 256));
  RETURN_IF_ERROR(CheckIntRange(ctx, "server.max_message_bytes",
                                c.max_message_bytes, 1024, INT32_MAX));
  const TlsConfig& tls = c.tls;
  if (!tls.key_file.empty() && tls.cert_file.empty()) {
    return ctx.Error("server.tls.cert_file",
                     "must be set (flag --tls-cert) when server.tls.key_file "
                     "is set");
  }
  if (!tls.cert_file.empty() && tls.key_file.empty()) {
    return ctx.Error("server.tls.key_file",
                     "must be set (flag --tls-key) when server.tls.cert_file "
                     "is set");
  }
  if (!tls.client_ca_file.empty() && tls.cert_file.empty()) {
    return ctx.Error("server.tls.cert_file",
                     "must be set (flag --tls-cert) when "
                     "server.tls.client_ca_file is set: mutual TLS needs a "
                     "server certificate");
  }
  if (!c.startup_models.empty() && c.model_control != ModelControl::kExplicit) {
    return ctx.Error("server.startup_models",
                     "needs server.model_control explicit (with none every "
                     "model is loaded)");
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < c.startup_models.size(); ++i) {
    const std::string path = IndexPath("server.startup_models", i);
    const std::string& name = c.startup_models[i];
    if (name != "*") {
      const std::string rule = CheckModelName(name);
      if (!rule.empty()) return ctx.ValueError(path, rule);
    }
    if (!seen.insert(name).second) {
      return ctx.ValueError(path, Quoted(name) + " is listed twice");
    }
  }
  return internal::ValidateModelFields(c.model_defaults, "model_defaults",
                                       ModelSection::kDefaults, ctx);
}

// ------------------------------------------------------------------- flags

struct FlagSpec {
  const char* flag;
  const char* path;  // the key it overrides
  const char* value_name;
  // Parses `value` into `c`; returns "" or the rule broken.
  std::string (*apply)(const std::string& value, ServerConfig* c);
  std::string (*current)(const ServerConfig& c);
};

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(start, comma - start);
    const size_t b = item.find_first_not_of(" \t");
    const size_t e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
    start = comma + 1;
  }
  return out;
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

const std::vector<FlagSpec>& Flags() {
  static const auto* flags = new std::vector<FlagSpec>{
      {"--model-repository", "server.model_repository", "DIR",
       [](const std::string& v, ServerConfig* c) {
         c->model_repository = v;
         return std::string();
       },
       [](const ServerConfig& c) { return c.model_repository; }},
      {"--grpc-address", "server.grpc_address", "HOST:PORT",
       [](const std::string& v, ServerConfig* c) {
         c->grpc_address = v;
         return std::string();
       },
       [](const ServerConfig& c) { return c.grpc_address; }},
      {"--metrics-address", "server.metrics_address", "HOST:PORT",
       [](const std::string& v, ServerConfig* c) {
         c->metrics_address = v;
         return std::string();
       },
       [](const ServerConfig& c) { return c.metrics_address; }},
      {"--worker-threads", "server.worker_threads", "N",
       [](const std::string& v, ServerConfig* c) {
         return ParseIntText(v, &c->worker_threads);
       },
       [](const ServerConfig& c) { return std::to_string(c.worker_threads); }},
      {"--intra-op-threads", "server.intra_op_threads", "N",
       [](const std::string& v, ServerConfig* c) {
         return ParseIntText(v, &c->intra_op_threads);
       },
       [](const ServerConfig& c) {
         return std::to_string(c.intra_op_threads);
       }},
      {"--max-message-bytes", "server.max_message_bytes", "BYTES",
       [](const std::string& v, ServerConfig* c) {
         return ParseIntText(v, &c->max_message_bytes);
       },
       [](const ServerConfig& c) {
         return std::to_string(c.max_message_bytes);
       }},
      {"--log-level", "server.log_level", "LEVEL",
       [](const std::string& v, ServerConfig* c) {
         return ParseEnumText(v, LogLevelNames(), &c->log_level);
       },
       [](const ServerConfig& c) {
         return std::string(LogLevelName(c.log_level));
       }},
      {"--tls-cert", "server.tls.cert_file", "FILE",
       [](const std::string& v, ServerConfig* c) {
         c->tls.cert_file = v;
         return std::string();
       },
       [](const ServerConfig& c) { return c.tls.cert_file; }},
      {"--tls-key", "server.tls.key_file", "FILE",
       [](const std::string& v, ServerConfig* c) {
         c->tls.key_file = v;
         return std::string();
       },
       [](const ServerConfig& c) { return c.tls.key_file; }},
      {"--tls-client-ca", "server.tls.client_ca_file", "FILE",
       [](const std::string& v, ServerConfig* c) {
         c->tls.client_ca_file = v;
         return std::string();
       },
       [](const ServerConfig& c) { return c.tls.client_ca_file; }},
      {"--drift-sample-rate", "model_defaults.drift.sample_rate", "RATE",
       [](const std::string& v, ServerConfig* c) {
         return ParseDoubleText(v, &c->model_defaults.drift.sample_rate);
       },
       [](const ServerConfig& c) {
         return FormatDouble(c.model_defaults.drift.sample_rate);
       }},
      {"--model-control", "server.model_control", "MODE",
       [](const std::string& v, ServerConfig* c) {
         return ParseEnumText(v, ModelControlNames(), &c->model_control);
       },
       [](const ServerConfig& c) {
         return std::string(ModelControlName(c.model_control));
       }},
      {"--startup-models", "server.startup_models", "M1,M2",
       [](const std::string& v, ServerConfig* c) {
         c->startup_models = SplitList(v);
         return std::string();
       },
       [](const ServerConfig& c) { return Join(c.startup_models); }},
  };
  return *flags;
}

std::string Pad(std::string s, size_t width) {
  if (s.size() < width) s.resize(width, ' ');
  return s;
}

}  // namespace

const char* LogLevelName(LogLevel level) {
  return EnumName(LogLevelNames(), level);
}
const char* ModelControlName(ModelControl mode) {
  return EnumName(ModelControlNames(), mode);
}

int DefaultWorkerThreads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

StatusOr<ServerConfig> ParseServerConfig(const std::string& yaml_text,
                                         const std::string& source) {
  ConfigContext ctx(source);
  ASSIGN_OR_RETURN(YamlNode root, ParseYaml(yaml_text, source));
  ctx.RecordFile("(top level)", root.line, root.column);
  ASSIGN_OR_RETURN(MapReader top, MapReader::Open(root, "", &ctx));
  ServerConfig config;
  if (const YamlNode* server = top.Find("server")) {
    RETURN_IF_ERROR(ReadServerSection(*server, &ctx, &config));
  }
  if (const YamlNode* defaults = top.Find("model_defaults")) {
    RETURN_IF_ERROR(internal::ReadModelFields(*defaults, "model_defaults",
                                              ModelSection::kDefaults, &ctx,
                                              &config.model_defaults));
  }
  // A server key written at the top level is a common slip: say where it goes.
  const std::vector<std::string> server_keys = ServerKeyNames();
  for (const YamlMapEntry& entry : root.entries) {
    if (std::find(server_keys.begin(), server_keys.end(), entry.key) !=
        server_keys.end()) {
      ctx.RecordFile(entry.key, entry.line, entry.column);
      return ctx.Error(entry.key,
                       "unknown top-level key (did you mean "
                       "server." +
                           entry.key + "?)");
    }
  }
  RETURN_IF_ERROR(top.Finish());
  internal::NormalizeModelFields(&config.model_defaults);
  RETURN_IF_ERROR(ValidateServerFields(config, ctx));
  return config;
}

StatusOr<ServerConfig> LoadServerConfigFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadConfigFile(path));
  return ParseServerConfig(text, path);
}

Status ValidateServerConfig(const ServerConfig& config) {
  ServerConfig normalized = config;
  internal::NormalizeModelFields(&normalized.model_defaults);
  return ValidateServerFields(normalized, ConfigContext());
}

Status ApplyFlagOverrides(const std::map<std::string, std::string>& flags,
                          ServerConfig* config) {
  ServerConfig updated = *config;
  ConfigContext ctx;
  std::vector<std::string> known;
  for (const FlagSpec& f : Flags()) known.push_back(f.flag);
  for (const auto& [raw_name, value] : flags) {
    const std::string name =
        raw_name.rfind("--", 0) == 0 ? raw_name : "--" + raw_name;
    const auto spec =
        std::find_if(Flags().begin(), Flags().end(),
                     [&](const FlagSpec& f) { return name == f.flag; });
    if (spec == Flags().end()) {
      const std::string guess = ClosestMatch(name, known);
      return InvalidArgument(name + ": unknown flag" +
                             (guess.empty()
                                  ? std::string(" (see --help)")
                                  : " (did you mean " + guess + "?)"));
    }
    const std::string rule = spec->apply(value, &updated);
    if (!rule.empty()) return InvalidArgument(name + ": " + rule);
    ctx.RecordFlag(spec->path, name);
    if (std::string(spec->path) == "server.startup_models") {
      for (size_t i = 0; i < updated.startup_models.size(); ++i) {
        ctx.RecordFlag(IndexPath(spec->path, i), name);
      }
    }
  }
  internal::NormalizeModelFields(&updated.model_defaults);
  RETURN_IF_ERROR(ValidateServerFields(updated, ctx));
  *config = std::move(updated);
  return Status::Ok();
}

StatusOr<CommandLine> ParseCommandLine(int argc, const char* const argv[]) {
  CommandLine cl;
  bool have_config = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      cl.help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
      return InvalidArgument("unexpected argument " + Quoted(arg) +
                             " (flags are --name VALUE or --name=VALUE; "
                             "see --help)");
    }
    std::string name = arg;
    std::string value;
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else {
      if (i + 1 >= argc || std::string(argv[i + 1]).rfind("--", 0) == 0) {
        return InvalidArgument(name + ": needs a value");
      }
      value = argv[++i];
    }
    if (name == "--config") {
      if (have_config) return InvalidArgument("--config: given twice");
      have_config = true;
      cl.config_file = value;
      continue;
    }
    if (!cl.flags.emplace(name, value).second) {
      return InvalidArgument(name + ": given twice");
    }
  }
  return cl;
}

StatusOr<ServerConfig> LoadServerConfig(const CommandLine& command_line) {
  ServerConfig config;
  if (!command_line.config_file.empty()) {
    ASSIGN_OR_RETURN(config, LoadServerConfigFile(command_line.config_file));
  }
  RETURN_IF_ERROR(ApplyFlagOverrides(command_line.flags, &config));
  return config;
}

std::string ServerConfigHelp() {
  const ServerConfig defaults;
  std::string out =
      "Usage: rnnserve [--config FILE] [--FLAG VALUE | --FLAG=VALUE]...\n"
      "\n"
      "rnnserve serves the LSTM/GRU models of a model repository over gRPC\n"
      "(KServe V2 / Open Inference Protocol), with Prometheus metrics.\n"
      "Settings come from the built-in defaults, then the --config file, then\n"
      "the flags (a flag wins over the file).\n"
      "\n"
      "Flags:\n";
  out += "  " + Pad("--config FILE", 32) +
         "YAML server configuration (keys below)\n";
  out += "  " + Pad("--help, -h", 32) + "print this help and exit\n";
  for (const FlagSpec& f : Flags()) {
    std::string current = f.current(defaults);
    if (current.empty()) current = "none";
    if (std::string(f.flag) == "--worker-threads") {
      current = "number of cores (" + current + " here)";
    }
    out += "  " + Pad(std::string(f.flag) + " " + f.value_name, 32) + "sets " +
           f.path + " (default: " + current + ")\n";
  }
  out +=
      "\nConfiguration file keys, shown with their defaults. model_defaults\n"
      "takes any key of a model's config.yaml except name, inputs and\n"
      "outputs, and applies to every model that does not set it.\n\n";
  out += FormatServerConfigYaml(defaults, /*comments=*/true);
  return out;
}

std::string FormatServerConfigYaml(const ServerConfig& c, bool comments) {
  YamlWriter out(comments);
  out.Section(0, "server", "");
  auto field = [&](const char* key, const std::string& value) {
    out.Field(2, key, value, ServerKeyComment(key));
  };
  field("model_repository", YamlString(c.model_repository));
  field("grpc_address", YamlString(c.grpc_address));
  field("metrics_address", YamlString(c.metrics_address));
  field("worker_threads", std::to_string(c.worker_threads));
  field("intra_op_threads", std::to_string(c.intra_op_threads));
  field("max_message_bytes", std::to_string(c.max_message_bytes));
  field("log_level", LogLevelName(c.log_level));
  out.Section(2, "tls", ServerKeyComment("tls"));
  out.Field(4, "cert_file", YamlString(c.tls.cert_file), "");
  out.Field(4, "key_file", YamlString(c.tls.key_file), "");
  out.Field(4, "client_ca_file", YamlString(c.tls.client_ca_file), "");
  field("model_control", ModelControlName(c.model_control));
  field("startup_models", YamlStringList(c.startup_models));
  out.Section(0, "model_defaults",
              "Defaults for every model (any config.yaml key except name, "
              "inputs, outputs).");
  internal::WriteModelFields(c.model_defaults, ModelSection::kDefaults, 2,
                             &out);
  return out.text();
}

}  // namespace rnnserve::config
