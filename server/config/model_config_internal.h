// Internal to server/config/: the pieces of model_config.cc that
// server_config.cc reuses for the server file's `model_defaults` section.
#ifndef RNNSERVE_CONFIG_MODEL_CONFIG_INTERNAL_H_
#define RNNSERVE_CONFIG_MODEL_CONFIG_INTERNAL_H_

#include <string>

#include "server/common/status.h"
#include "server/config/config_reader.h"
#include "server/config/model_config.h"
#include "server/config/yaml_tree.h"

namespace rnnserve::config::internal {

// How much of a ModelConfig a YAML map may set.
enum class ModelSection {
  kModel,     // a model's config.yaml: every key
  kDefaults,  // model_defaults: no name/inputs/outputs; both batching kinds
};

// Reads the keys of `node` (a map or null) at `path` onto `config`: fields
// the map does not mention keep their value.
Status ReadModelFields(const YamlNode& node, const std::string& path,
                       ModelSection section, ConfigContext* context,
                       ModelConfig* config);

// Sorts preferred batch sizes and versions.
void NormalizeModelFields(ModelConfig* config);

// Every single-field and cross-field rule; `path` prefixes each error.
Status ValidateModelFields(const ModelConfig& config, const std::string& path,
                           ModelSection section, const ConfigContext& context);

// Writes `config` as YAML at `indent` (the keys of `section` only).
void WriteModelFields(const ModelConfig& config, ModelSection section,
                      int indent, YamlWriter* out);

}  // namespace rnnserve::config::internal

#endif  // RNNSERVE_CONFIG_MODEL_CONFIG_INTERNAL_H_
