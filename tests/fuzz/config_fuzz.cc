// Fuzzes the YAML configuration path (server/config/): yaml_tree's adapter
// over yaml-cpp, then parse -> defaults -> validate of both file kinds.
//
// One target, not one per file kind: every input goes through
// ParseServerConfig AND ParseModelConfig. Both sit on the same YAML adapter
// and readers, seeds stay plain .yaml files (no selector byte), and a
// snippet that is a model config is also what a server file's
// model_defaults holds. The model folder is "charlm" so that the deploy
// config.yaml seed parses. When the server parse succeeds, the model parse runs
// again with that server's model_defaults, as the repository does.
//
// Invariants: every error has a message; a parsed config passes its
// Validate function; Format*Yaml of a parsed config parses back to a config
// that formats identically (the headers promise "reads back to the same
// values"); CompleteModelConfig against a token and a feature model returns
// a Status, never crashes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "server/config/model_config.h"
#include "server/config/server_config.h"
#include "tests/fuzz/fuzz_models.h"

namespace {

namespace config = rnnserve::config;

[[noreturn]] void Fail(const char* what, const std::string& detail = "") {
  std::fprintf(stderr, "config_fuzz: invariant broken: %s\n%s\n", what,
               detail.c_str());
  std::abort();
}

void CheckModelConfig(const std::string& text,
                      const config::ModelConfig& defaults) {
  rnnserve::StatusOr<config::ModelConfig> parsed =
      config::ParseModelConfig(text, "charlm/config.yaml", "charlm", defaults);
  if (!parsed.ok()) {
    if (parsed.status().message().empty()) {
      Fail("model: error without a message");
    }
    return;
  }
  if (!config::ValidateModelConfig(*parsed).ok()) {
    Fail("model: a parsed config fails ValidateModelConfig");
  }
  const std::string yaml = config::FormatModelConfigYaml(*parsed);
  rnnserve::StatusOr<config::ModelConfig> again =
      config::ParseModelConfig(yaml, "round trip", parsed->name);
  if (!again.ok()) {
    Fail("model: formatted config does not parse",
         yaml + "\n" + again.status().ToString());
  }
  if (config::FormatModelConfigYaml(*again) != yaml) {
    Fail("model: round trip changed the config", yaml);
  }
  for (const rnnserve::engine::ModelSpec& spec :
       {rnnserve::fuzz::TokenSpec(), rnnserve::fuzz::FeatureSpec()}) {
    config::ModelConfig completed = *parsed;
    (void)config::CompleteModelConfig(spec, &completed);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);

  CheckModelConfig(text, config::ModelConfig());

  rnnserve::StatusOr<config::ServerConfig> server =
      config::ParseServerConfig(text, "fuzz/server.yaml");
  if (!server.ok()) {
    if (server.status().message().empty()) {
      Fail("server: error without a message");
    }
    return 0;
  }
  if (!config::ValidateServerConfig(*server).ok()) {
    Fail("server: a parsed config fails ValidateServerConfig");
  }
  const std::string yaml = config::FormatServerConfigYaml(*server);
  rnnserve::StatusOr<config::ServerConfig> again =
      config::ParseServerConfig(yaml, "round trip");
  if (!again.ok()) {
    Fail("server: formatted config does not parse",
         yaml + "\n" + again.status().ToString());
  }
  if (config::FormatServerConfigYaml(*again) != yaml) {
    Fail("server: round trip changed the config", yaml);
  }
  // The same text as a model's config.yaml under this server's defaults.
  CheckModelConfig(text, server->model_defaults);
  return 0;
}
