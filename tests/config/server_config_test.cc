// Server configuration: defaults, a full file, every rule's error, flag
// overrides, the command line and --help.
#include "server/config/server_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "tests/config/config_test_util.h"

namespace rnnserve::config {
namespace {

using engine::Precision;
using testing::IsInvalidArgumentWith;

TEST(ServerConfigTest, BuiltInDefaults) {
  const ServerConfig c;
  EXPECT_EQ(c.model_repository, "/models");
  EXPECT_EQ(c.grpc_address, "0.0.0.0:8001");
  EXPECT_EQ(c.metrics_address, "0.0.0.0:8002");
  EXPECT_EQ(c.worker_threads, DefaultWorkerThreads());
  EXPECT_GE(c.worker_threads, 1);
  EXPECT_LE(c.worker_threads, static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));
  EXPECT_EQ(c.intra_op_threads, 1);
  EXPECT_EQ(c.max_message_bytes, 64 * 1024 * 1024);
  EXPECT_EQ(c.log_level, LogLevel::kInfo);
  EXPECT_EQ(c.tls.cert_file, "");
  EXPECT_EQ(c.tls.key_file, "");
  EXPECT_EQ(c.tls.client_ca_file, "");
  EXPECT_FALSE(c.tls.enabled());
  EXPECT_EQ(c.model_control, ModelControl::kNone);
  EXPECT_TRUE(c.startup_models.empty());
  EXPECT_DOUBLE_EQ(c.model_defaults.drift.sample_rate, 0.0);
  EXPECT_FALSE(c.model_defaults.precision.has_value());
  EXPECT_TRUE(ValidateServerConfig(c).ok());
}

TEST(ServerConfigTest, EmptyFileGivesDefaults) {
  for (const char* text : {"", "\n", "# nothing here\n", "server:\n",
                           "server: {}\nmodel_defaults: {}\n"}) {
    auto c = ParseServerConfig(text, "server.yaml");
    ASSERT_TRUE(c.ok()) << text << ": " << c.status().ToString();
    EXPECT_EQ(FormatServerConfigYaml(*c),
              FormatServerConfigYaml(ServerConfig()))
        << text;
  }
}

constexpr char kFullServerYaml[] = R"(
server:
  model_repository: /srv/models
  grpc_address: 127.0.0.1:9001
  metrics_address: "[::1]:9002"
  worker_threads: 6
  intra_op_threads: 2
  max_message_bytes: 1048576
  log_level: debug
  tls:
    cert_file: /etc/tls/server.crt
    key_file: /etc/tls/server.key
    client_ca_file: /etc/tls/ca.crt
  model_control: explicit
  startup_models: [charlm, kws]
model_defaults:
  precision: int8
  max_sequence_length: 512
  calibration: {method: mse}
  batching:
    max_batch_size: 32
    max_queue_delay_us: 100
    preferred_batch_sizes: [32, 8]
    max_active_sequences: 50
  drift:
    sample_rate: 0.01
    thresholds: {relative_l2: 0.05}
    action: fallback_f32
)";

TEST(ServerConfigTest, FullFileRoundsToTheExpectedStruct) {
  auto c = ParseServerConfig(kFullServerYaml, "server.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->model_repository, "/srv/models");
  EXPECT_EQ(c->grpc_address, "127.0.0.1:9001");
  EXPECT_EQ(c->metrics_address, "[::1]:9002");
  EXPECT_EQ(c->worker_threads, 6);
  EXPECT_EQ(c->intra_op_threads, 2);
  EXPECT_EQ(c->max_message_bytes, 1048576);
  EXPECT_EQ(c->log_level, LogLevel::kDebug);
  EXPECT_EQ(c->tls.cert_file, "/etc/tls/server.crt");
  EXPECT_EQ(c->tls.key_file, "/etc/tls/server.key");
  EXPECT_EQ(c->tls.client_ca_file, "/etc/tls/ca.crt");
  EXPECT_TRUE(c->tls.enabled());
  EXPECT_EQ(c->model_control, ModelControl::kExplicit);
  EXPECT_EQ(c->startup_models, (std::vector<std::string>{"charlm", "kws"}));
  const ModelConfig& d = c->model_defaults;
  EXPECT_EQ(d.precision, Precision::kInt8);
  EXPECT_EQ(d.max_sequence_length, 512);
  EXPECT_EQ(d.calibration.method, engine::CalibrationMethod::kMse);
  EXPECT_EQ(d.batching.max_batch_size, 32);
  EXPECT_EQ(d.batching.max_queue_delay_us, 100);
  EXPECT_EQ(d.batching.preferred_batch_sizes, (std::vector<int64_t>{8, 32}));
  EXPECT_EQ(d.batching.max_active_sequences, 50);  // both kinds allowed here
  EXPECT_DOUBLE_EQ(d.drift.sample_rate, 0.01);
  EXPECT_EQ(d.drift.thresholds.relative_l2, 0.05);
  EXPECT_EQ(d.drift.action, DriftAction::kFallbackF32);
  EXPECT_EQ(d.batching.max_queue_size, 1024);  // untouched default

  // The model defaults reach a model's config.yaml.
  auto m = ParseModelConfig(
      "batching: {max_batch_size: 8, preferred_batch_sizes: [8]}\n",
      "charlm/config.yaml", "charlm", d);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->precision, Precision::kInt8);
  EXPECT_EQ(m->batching.max_queue_delay_us, 100);
  EXPECT_EQ(m->drift.action, DriftAction::kFallbackF32);

  // Written back out (with comments), it parses to the same configuration.
  const std::string text = FormatServerConfigYaml(*c, /*comments=*/true);
  auto again = ParseServerConfig(text, "formatted.yaml");
  ASSERT_TRUE(again.ok()) << again.status().ToString() << "\n" << text;
  EXPECT_EQ(FormatServerConfigYaml(*again), FormatServerConfigYaml(*c));
}

struct BadCase {
  const char* name;
  const char* yaml;
  const char* expected;  // "<path>: <rule>" as it must appear
};

class BadServerConfigTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadServerConfigTest, NamesThePathAndTheRule) {
  const BadCase& t = GetParam();
  auto c = ParseServerConfig(t.yaml, "server.yaml");
  EXPECT_TRUE(IsInvalidArgumentWith(c.status(), {"server.yaml", t.expected}))
      << t.yaml;
}

const BadCase kBadServerCases[] = {
    {"ZeroWorkers", "server:\n  worker_threads: 0\n",
     "server.yaml:2:19: server.worker_threads: must be >= 1 (got 0)"},
    {"TextWorkers", "server: {worker_threads: four}\n",
     "server.worker_threads: must be an integer (got 'four')"},
    {"TooManyIntraOp", "server: {intra_op_threads: 1000}\n",
     "server.intra_op_threads: must be <= 256 (got 1000)"},
    {"NegativeMessageSize", "server: {max_message_bytes: -1}\n",
     "server.max_message_bytes: must be >= 1024 (got -1)"},
    {"TypoKey", "server:\n  grpc_adress: 0.0.0.0:1\n",
     "server.yaml:2:3: server.grpc_adress: unknown key (did you mean "
     "'grpc_address'?)"},
    {"UnknownKeyListsKnownOnes", "server: {colour: blue}\n",
     "server.colour: unknown key (expected one of: model_repository,"},
    {"ServerKeyAtTopLevel", "grpc_address: 0.0.0.0:1\n",
     "grpc_address: unknown top-level key (did you mean server.grpc_address?)"},
    {"UnknownTopLevelKey", "models: {}\n",
     "server.yaml:1:1: models: unknown key (expected one of: server, "
     "model_defaults)"},
    {"BadLogLevel", "server: {log_level: verbose}\n",
     "server.log_level: must be one of debug, info, warning, error (got "
     "'verbose')"},
    {"AddressWithoutPort", "server: {grpc_address: localhost}\n",
     "server.grpc_address: must be HOST:PORT or unix:PATH with PORT in [0, "
     "65535] (got 'localhost')"},
    {"PortOutOfRange", "server: {metrics_address: '0.0.0.0:70000'}\n",
     "server.metrics_address: must be HOST:PORT with PORT in [0, 65535] (got "
     "'0.0.0.0:70000')"},
    {"BareIpv6", "server: {metrics_address: '::1:9000'}\n",
     "server.metrics_address: must be HOST:PORT"},
    {"SameAddresses",
     "server: {grpc_address: '0.0.0.0:9000', metrics_address: "
     "'0.0.0.0:9000'}\n",
     "server.metrics_address: must differ from server.grpc_address (both "
     "'0.0.0.0:9000')"},
    {"TlsKeyWithoutCert", "server: {tls: {key_file: k.pem}}\n",
     "server.tls.cert_file: must be set (flag --tls-cert) when "
     "server.tls.key_file is set"},
    {"TlsCertWithoutKey", "server: {tls: {cert_file: c.pem}}\n",
     "server.tls.key_file: must be set (flag --tls-key) when "
     "server.tls.cert_file is set"},
    {"ClientCaWithoutCert", "server: {tls: {client_ca_file: ca.pem}}\n",
     "server.tls.cert_file: must be set (flag --tls-cert) when "
     "server.tls.client_ca_file is set"},
    {"TlsNotAMap", "server: {tls: true}\n",
     "server.tls: must be a map of key: value (got a scalar)"},
    {"BadModelControl", "server: {model_control: poll}\n",
     "server.model_control: must be one of none, explicit (got 'poll')"},
    {"StartupModelsNeedExplicit", "server: {startup_models: [charlm]}\n",
     "server.startup_models: needs server.model_control explicit"},
    {"BadStartupModel",
     "server: {model_control: explicit, startup_models: [ok, 'a/b']}\n",
     "server.startup_models[1]: must use only letters, digits"},
    {"StartupModelTwice",
     "server: {model_control: explicit, startup_models: [m, m]}\n",
     "server.startup_models[1]: 'm' is listed twice"},
    {"StartupModelsNotAList", "server: {startup_models: charlm}\n",
     "server.startup_models: must be a list of strings (got a scalar)"},
    {"DefaultsSampleRate", "model_defaults:\n  drift: {sample_rate: 2}\n",
     "model_defaults.drift.sample_rate: must be in [0, 1] (got 2)"},
    {"DefaultsNegativeDelay",
     "model_defaults:\n  batching:\n    max_queue_delay_us: -5\n",
     "server.yaml:3:25: model_defaults.batching.max_queue_delay_us: must be >= "
     "0 (got -5)"},
    {"DefaultsHaveNoName", "model_defaults: {name: x}\n",
     "model_defaults.name: unknown key"},
    {"DefaultsHaveNoInputs", "model_defaults: {inputs: []}\n",
     "model_defaults.inputs: unknown key"},
    {"ServerIsAList", "server:\n  - grpc_address: x\n",
     "server: must be a map of key: value (got a list)"},
    {"TopLevelList", "- server\n- model_defaults\n",
     "(top level): must be a map of key: value (got a list)"},
    {"TopLevelScalar", "hello\n",
     "(top level): must be a map of key: value (got a scalar)"},
    {"MalformedYaml",
     "server:\n  grpc_address: 0.0.0.0:1\n   log_level: info\n",
     "server.yaml:3:"},
    {"UnclosedFlow", "server: {grpc_address: x\n", "invalid YAML"},
    {"TwoDocuments", "server: {}\n---\nserver: {}\n",
     "server.yaml:3:1: invalid YAML: expected one document, found 2"},
    {"DuplicateKey", "server:\n  log_level: info\n  log_level: debug\n",
     "server.yaml:3:3: invalid YAML: duplicate key 'log_level'"},
    {"AliasBomb",
     "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, "
     "*a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, "
     "*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, "
     "*d, *d]\n",
     "invalid YAML: more than 100000 nodes"},
    // Found by tests/fuzz/config_fuzz: yaml-cpp 0.7 yields empty documents
    // without end for a text starting with ','; collecting them all (LoadAll)
    // never returned and exhausted memory.
    {"EndlessEmptyDocuments", ",drift:\n  sample_rate: 0.001\n",
     "server.yaml:1:1: invalid YAML: expected one document, found more than "
     "1000"},
};

INSTANTIATE_TEST_SUITE_P(Cases, BadServerConfigTest,
                         ::testing::ValuesIn(kBadServerCases),
                         [](const auto& info) { return info.param.name; });

TEST(ServerConfigTest, UnixSocketAndPortZeroAreAccepted) {
  auto c = ParseServerConfig(
      "server: {grpc_address: 'unix:/tmp/rnnserve.sock', metrics_address: "
      "'127.0.0.1:0'}\n",
      "server.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto both_zero = ParseServerConfig(
      "server: {grpc_address: '127.0.0.1:0', metrics_address: '127.0.0.1:0'}\n",
      "server.yaml");
  EXPECT_TRUE(both_zero.ok()) << both_zero.status().ToString();
}

TEST(ServerConfigTest, LoadMissingFileIsNotFound) {
  auto c = LoadServerConfigFile("/nonexistent/server.yaml");
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
  EXPECT_NE(c.status().message().find("/nonexistent/server.yaml"),
            std::string::npos);
}

// ---------------------------------------------------------------- flags

TEST(FlagOverridesTest, EveryFlagSetsItsField) {
  ServerConfig c;
  ASSERT_TRUE(ApplyFlagOverrides({{"--model-repository", "/m"},
                                  {"--grpc-address", "127.0.0.1:1"},
                                  {"--metrics-address", "127.0.0.1:2"},
                                  {"--worker-threads", "3"},
                                  {"--intra-op-threads", "4"},
                                  {"--max-message-bytes", "2048"},
                                  {"--log-level", "warning"},
                                  {"--tls-cert", "c.pem"},
                                  {"--tls-key", "k.pem"},
                                  {"--tls-client-ca", "ca.pem"},
                                  {"--drift-sample-rate", "0.25"},
                                  {"--model-control", "explicit"},
                                  {"--startup-models", "a, b,,c"}},
                                 &c)
                  .ok());
  EXPECT_EQ(c.model_repository, "/m");
  EXPECT_EQ(c.grpc_address, "127.0.0.1:1");
  EXPECT_EQ(c.metrics_address, "127.0.0.1:2");
  EXPECT_EQ(c.worker_threads, 3);
  EXPECT_EQ(c.intra_op_threads, 4);
  EXPECT_EQ(c.max_message_bytes, 2048);
  EXPECT_EQ(c.log_level, LogLevel::kWarning);
  EXPECT_EQ(c.tls.cert_file, "c.pem");
  EXPECT_EQ(c.tls.key_file, "k.pem");
  EXPECT_EQ(c.tls.client_ca_file, "ca.pem");
  EXPECT_DOUBLE_EQ(c.model_defaults.drift.sample_rate, 0.25);
  EXPECT_EQ(c.model_control, ModelControl::kExplicit);
  EXPECT_EQ(c.startup_models, (std::vector<std::string>{"a", "b", "c"}));
}

TEST(FlagOverridesTest, FlagsWinOverTheFile) {
  auto c = ParseServerConfig(kFullServerYaml, "server.yaml");
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(ApplyFlagOverrides({{"worker-threads", "9"},  // dashes optional
                                  {"--grpc-address", "0.0.0.0:7001"},
                                  {"--drift-sample-rate", "0.5"}},
                                 &*c)
                  .ok());
  EXPECT_EQ(c->worker_threads, 9);
  EXPECT_EQ(c->grpc_address, "0.0.0.0:7001");
  EXPECT_DOUBLE_EQ(c->model_defaults.drift.sample_rate, 0.5);
  EXPECT_EQ(c->intra_op_threads, 2);  // the file's, not overridden
  EXPECT_EQ(c->model_defaults.batching.max_batch_size, 32);
}

struct BadFlagCase {
  const char* name;
  std::map<std::string, std::string> flags;
  const char* expected;
};

class BadFlagTest : public ::testing::TestWithParam<BadFlagCase> {};

TEST_P(BadFlagTest, NamesTheFlagAndLeavesTheConfigUnchanged) {
  ServerConfig c;
  c.worker_threads = 5;
  const std::string before = FormatServerConfigYaml(c);
  EXPECT_TRUE(IsInvalidArgumentWith(ApplyFlagOverrides(GetParam().flags, &c),
                                    {GetParam().expected}));
  EXPECT_EQ(FormatServerConfigYaml(c), before);
}

const BadFlagCase kBadFlagCases[] = {
    {"ZeroWorkers",
     {{"--worker-threads", "0"}},
     "--worker-threads: must be >= 1 (got 0)"},
    {"TextWorkers",
     {{"--worker-threads", "many"}},
     "--worker-threads: must be an integer (got 'many')"},
    {"RateAboveOne",
     {{"--drift-sample-rate", "1.5"}},
     "--drift-sample-rate: must be in [0, 1] (got 1.5)"},
    {"RateText",
     {{"--drift-sample-rate", "1%"}},
     "--drift-sample-rate: must be a number (got '1%')"},
    {"BadLogLevel",
     {{"--log-level", "loud"}},
     "--log-level: must be one of debug, info, warning, error (got 'loud')"},
    {"BadAddress",
     {{"--grpc-address", "nowhere"}},
     "--grpc-address: must be HOST:PORT or unix:PATH"},
    {"SmallMessages",
     {{"--max-message-bytes", "10"}},
     "--max-message-bytes: must be >= 1024 (got 10)"},
    {"EmptyRepository",
     {{"--model-repository", ""}},
     "--model-repository: must not be empty"},
    {"KeyWithoutCert",
     {{"--tls-key", "k.pem"}},
     "server.tls.cert_file: must be set (flag --tls-cert)"},
    {"StartupWithoutExplicit",
     {{"--startup-models", "a"}},
     "--startup-models: needs server.model_control explicit"},
    {"BadStartupModel",
     {{"--model-control", "explicit"}, {"--startup-models", "ok,bad name"}},
     "--startup-models: must use only letters, digits"},
    {"UnknownFlag",
     {{"--grpc-adress", "x:1"}},
     "--grpc-adress: unknown flag (did you mean --grpc-address?)"},
    {"UnknownFlagNoGuess",
     {{"--frobnicate", "1"}},
     "--frobnicate: unknown flag (see --help)"},
};

INSTANTIATE_TEST_SUITE_P(Cases, BadFlagTest, ::testing::ValuesIn(kBadFlagCases),
                         [](const auto& info) { return info.param.name; });

// ---------------------------------------------------------- command line

StatusOr<CommandLine> ParseArgs(std::vector<const char*> args) {
  args.insert(args.begin(), "rnnserve");
  return ParseCommandLine(static_cast<int>(args.size()), args.data());
}

TEST(CommandLineTest, FormsOfFlags) {
  auto cl = ParseArgs({"--config", "s.yaml", "--grpc-address=127.0.0.1:5",
                       "--worker-threads", "2", "--drift-sample-rate", "-1"});
  ASSERT_TRUE(cl.ok()) << cl.status().ToString();
  EXPECT_EQ(cl->config_file, "s.yaml");
  EXPECT_FALSE(cl->help);
  EXPECT_EQ(cl->flags.at("--grpc-address"), "127.0.0.1:5");
  EXPECT_EQ(cl->flags.at("--worker-threads"), "2");
  EXPECT_EQ(cl->flags.at("--drift-sample-rate"), "-1");  // a value, not a flag
  EXPECT_EQ(cl->flags.size(), 3u);

  auto help = ParseArgs({"-h"});
  ASSERT_TRUE(help.ok());
  EXPECT_TRUE(help->help);
}

TEST(CommandLineTest, Errors) {
  EXPECT_TRUE(IsInvalidArgumentWith(ParseArgs({"--worker-threads"}).status(),
                                    {"--worker-threads: needs a value"}));
  EXPECT_TRUE(IsInvalidArgumentWith(
      ParseArgs({"--grpc-address", "--log-level", "info"}).status(),
      {"--grpc-address: needs a value"}));
  EXPECT_TRUE(IsInvalidArgumentWith(
      ParseArgs({"--log-level=info", "--log-level", "debug"}).status(),
      {"--log-level: given twice"}));
  EXPECT_TRUE(IsInvalidArgumentWith(ParseArgs({"models/"}).status(),
                                    {"unexpected argument 'models/'"}));
}

TEST(CommandLineTest, FileThenFlags) {
  char path[] = "/tmp/rnnserve_config_test_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream out(path);
    out << "server:\n  worker_threads: 3\n  log_level: error\n";
  }
  auto cl = ParseArgs({"--config", path, "--log-level", "debug"});
  ASSERT_TRUE(cl.ok());
  auto c = LoadServerConfig(*cl);
  std::remove(path);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->worker_threads, 3);            // from the file
  EXPECT_EQ(c->log_level, LogLevel::kDebug);  // the flag wins

  auto bad = ParseArgs({"--worker-threads", "0"});
  ASSERT_TRUE(bad.ok());
  EXPECT_TRUE(
      IsInvalidArgumentWith(LoadServerConfig(*bad).status(),
                            {"--worker-threads: must be >= 1 (got 0)"}));
}

TEST(ServerConfigHelpTest, ListsEveryFlagAndKeyWithItsDefault) {
  const std::string help = ServerConfigHelp();
  for (const char* flag :
       {"--config FILE", "--help", "--model-repository DIR",
        "--grpc-address HOST:PORT", "--metrics-address HOST:PORT",
        "--worker-threads N", "--intra-op-threads N",
        "--max-message-bytes BYTES", "--log-level LEVEL", "--tls-cert FILE",
        "--tls-key FILE", "--tls-client-ca FILE", "--drift-sample-rate RATE",
        "--model-control MODE", "--startup-models"}) {
    EXPECT_NE(help.find(flag), std::string::npos) << flag;
  }
  for (const char* text :
       {"(default: 0.0.0.0:8001)", "(default: 0.0.0.0:8002)",
        "(default: /models)", "(default: 67108864)", "(default: info)",
        "(default: 1)", "(default: none)", "number of cores",
        "model_repository: \"/models\"", "max_queue_delay_us: 0",
        "max_batch_size: 64", "sample_rate: 0", "action: alert",
        "client_ca_file:", "percentile: 99.99", "reservoir_size: 256"}) {
    EXPECT_NE(help.find(text), std::string::npos) << text;
  }
}

}  // namespace
}  // namespace rnnserve::config
