// Helpers shared by server_config.cc and model_config.cc (internal to
// server/config/): typed, path-tracking reads from a YamlNode tree, the
// formatting of error messages, and a small YAML writer.
//
// Every error names the full field path ("server.worker_threads",
// "models.charlm.batching.preferred_batch_sizes[1]") and the rule broken,
// prefixed by where the value came from:
//   "<file>:<line>:<column>: <path>: <rule>"   a value read from a file
//   "<flag>: <rule>"                           a command-line override
//   "<path>: <rule>"                           a value built in code
#ifndef RNNSERVE_CONFIG_CONFIG_READER_H_
#define RNNSERVE_CONFIG_CONFIG_READER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "server/common/status.h"
#include "server/config/yaml_tree.h"

namespace rnnserve::config {

// Remembers where each field's value came from and formats errors.
// Not thread-safe; one per parse.
class ConfigContext {
 public:
  ConfigContext() = default;
  explicit ConfigContext(std::string source) : source_(std::move(source)) {}

  const std::string& source() const { return source_; }
  // Appended to value errors on fields that were not in the file (so their
  // value came from defaults), e.g. "value inherited from model_defaults".
  void set_inherited_note(std::string note) {
    inherited_note_ = std::move(note);
  }

  void RecordFile(const std::string& path, int line, int column);
  void RecordFlag(const std::string& path, const std::string& flag);
  bool InFile(const std::string& path) const;

  // An error about `path`: see the file comment for the format.
  Status Error(const std::string& path, const std::string& rule) const;
  // Like Error(), and says when the value was inherited rather than written.
  Status ValueError(const std::string& path, const std::string& rule) const;

 private:
  std::string source_;
  std::string inherited_note_;
  std::map<std::string, std::string> file_location_;  // path -> "file:l:c"
  std::map<std::string, std::string> flag_;           // path -> "--flag"
};

// "a.b" + "c" -> "a.b.c"; "" + "c" -> "c"; "a" + "[2]" -> "a[2]".
std::string JoinPath(const std::string& parent, const std::string& child);
std::string IndexPath(const std::string& parent, size_t index);

// Shortest decimal text that reads back as `v` ("0.01", "99.99", "1e-06").
std::string FormatDouble(double v);
// 'text' in single quotes, for "(got 'four')".
std::string Quoted(const std::string& text);
// The closest of `options` to `word` when it is a plausible typo, else "".
std::string ClosestMatch(const std::string& word,
                         const std::vector<std::string>& options);

// Text conversions shared by YAML scalars and command-line flags. Each
// returns "" on success, else the rule broken ("must be an integer (got
// 'four')"). Integers are decimal with an optional sign; doubles are what
// strtod accepts, whole text only; booleans are true/false (any case).
std::string ParseIntText(const std::string& text, int64_t* out);
std::string ParseIntText(const std::string& text, int* out);
std::string ParseDoubleText(const std::string& text, double* out);
std::string ParseBoolText(const std::string& text, bool* out);

// An enum's spelling table, in the order listed in messages and help.
template <typename E>
using EnumNames = std::vector<std::pair<const char*, E>>;

template <typename E>
std::string ParseEnumText(const std::string& text, const EnumNames<E>& names,
                          E* out) {
  std::string expected;
  for (const auto& [name, value] : names) {
    if (text == name) {
      *out = value;
      return "";
    }
    expected += expected.empty() ? name : std::string(", ") + name;
  }
  return "must be one of " + expected + " (got " + Quoted(text) + ")";
}

template <typename E>
const char* EnumName(const EnumNames<E>& names, E value) {
  for (const auto& [name, v] : names) {
    if (v == value) return name;
  }
  return "?";
}

// Reads the fields of one YAML map. Every key asked for is remembered, so
// Finish() can reject the keys nobody asked for (typos must not be ignored).
// A field that is absent leaves the output untouched, which is how defaults
// survive. A null scalar ("key:" with no value) is an error for scalar
// fields; for lists and maps it means empty.
class MapReader {
 public:
  // `node` (which must outlive the reader) must be a map or null.
  static StatusOr<MapReader> Open(const YamlNode& node, std::string path,
                                  ConfigContext* context);

  const std::string& path() const { return path_; }
  std::string Child(const std::string& key) const {
    return JoinPath(path_, key);
  }
  ConfigContext* context() const { return context_; }

  // The value of `key`, or null when absent; records the key as known and
  // its location in the context.
  const YamlNode* Find(const std::string& key);

  Status Read(const std::string& key, int* out);
  Status Read(const std::string& key, int64_t* out);
  Status Read(const std::string& key, double* out);
  Status Read(const std::string& key, bool* out);
  Status Read(const std::string& key, std::string* out);
  Status Read(const std::string& key, std::vector<int64_t>* out);
  Status Read(const std::string& key, std::vector<std::string>* out);

  template <typename T>
  Status Read(const std::string& key, std::optional<T>* out) {
    if (Find(key) == nullptr) return Status::Ok();
    T value{};
    RETURN_IF_ERROR(Read(key, &value));
    *out = value;
    return Status::Ok();
  }

  template <typename E>
  Status ReadEnum(const std::string& key, const EnumNames<E>& names, E* out) {
    std::string text;
    RETURN_IF_ERROR(Read(key, &text));
    if (Find(key) == nullptr) return Status::Ok();
    const std::string rule = ParseEnumText(text, names, out);
    if (!rule.empty()) return context_->Error(Child(key), rule);
    return Status::Ok();
  }

  // Error on the first key present in the map that no Find() asked for.
  Status Finish() const;

 private:
  MapReader(const YamlNode* node, std::string path, ConfigContext* context)
      : node_(node), path_(std::move(path)), context_(context) {}

  const YamlNode* node_;
  std::string path_;
  ConfigContext* context_;
  std::vector<std::string> known_;
};

// Range rules with the standard wording: "must be >= 1 (got 0)",
// "must be <= 1024 (got 5000)".
Status CheckIntRange(const ConfigContext& context, const std::string& path,
                     int64_t value, int64_t lo, int64_t hi);

// Scalar conversions of a node at `path` (the node's location must already
// be recorded in `context`, as MapReader::Find does).
Status ReadScalar(const YamlNode& node, const std::string& path,
                  const ConfigContext& context, std::string* out);
Status ReadInt(const YamlNode& node, const std::string& path,
               const ConfigContext& context, int64_t* out);

// Reads a configuration file: NOT_FOUND when it cannot be opened,
// INVALID_ARGUMENT when it is larger than `max_bytes`.
StatusOr<std::string> ReadConfigFile(const std::string& path,
                                     size_t max_bytes = 1 << 20);

// Writes indented YAML with comments; values are pre-formatted text.
class YamlWriter {
 public:
  explicit YamlWriter(bool comments) : comments_(comments) {}
  void Comment(int indent, const std::string& text);
  void Section(int indent, const std::string& key, const std::string& comment);
  void Field(int indent, const std::string& key, const std::string& value,
             const std::string& comment);
  // A list item "- value".
  void Item(int indent, const std::string& value);
  const std::string& text() const { return text_; }

 private:
  bool comments_;
  std::string text_;
};

// A double-quoted YAML string with escapes.
std::string YamlString(const std::string& s);
std::string YamlIntList(const std::vector<int64_t>& v);
std::string YamlStringList(const std::vector<std::string>& v);
inline const char* YamlBool(bool b) { return b ? "true" : "false"; }

}  // namespace rnnserve::config

#endif  // RNNSERVE_CONFIG_CONFIG_READER_H_
