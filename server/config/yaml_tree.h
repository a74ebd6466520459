// YamlNode: the one adapter between rnnserve and yaml-cpp.
//
// ParseYaml() runs yaml-cpp inside a single try/catch and copies the document
// into a plain tree of YamlNode values, so no yaml-cpp type or exception ever
// reaches the rest of the configuration code. Every node remembers the line
// and column it came from, for error messages.
//
// The copy also enforces what yaml-cpp does not: one document per file, no
// duplicate keys in a map, scalar map keys only, and bounded nesting depth and
// node count (aliases are expanded, so a "billion laughs" document is
// rejected instead of exhausting memory).
//
// Thread-safe: no shared state.
#ifndef RNNSERVE_CONFIG_YAML_TREE_H_
#define RNNSERVE_CONFIG_YAML_TREE_H_

#include <string>
#include <vector>

#include "server/common/status.h"

namespace rnnserve::config {

struct YamlMapEntry;

struct YamlNode {
  enum class Kind { kNull, kScalar, kSequence, kMap };

  Kind kind = Kind::kNull;
  std::string scalar;                 // kScalar: the text, unquoted
  std::vector<YamlNode> items;        // kSequence
  std::vector<YamlMapEntry> entries;  // kMap, in file order, keys unique
  int line = 0;                       // 1-based; 0 when unknown
  int column = 0;                     // 1-based; 0 when unknown

  // "null", "scalar", "list" or "map", for messages ("got a list").
  const char* KindName() const;
};

struct YamlMapEntry {
  std::string key;
  int line = 0;  // of the key
  int column = 0;
  YamlNode value;
};

struct YamlLimits {
  int max_depth = 64;      // nested maps/lists
  int max_nodes = 100000;  // after alias expansion
};

// Parses `text` (one YAML document; an empty or comment-only text gives a
// kNull node). `source` names the text in messages. Malformed YAML gives
// INVALID_ARGUMENT "<source>:<line>:<column>: invalid YAML: <reason>".
StatusOr<YamlNode> ParseYaml(const std::string& text, const std::string& source,
                             const YamlLimits& limits = YamlLimits());

}  // namespace rnnserve::config

#endif  // RNNSERVE_CONFIG_YAML_TREE_H_
