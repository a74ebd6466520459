#include "server/config/yaml_tree.h"

#include <yaml-cpp/yaml.h>

#include <exception>
#include <set>
#include <utility>

namespace rnnserve::config {
namespace {

std::string Where(const std::string& source, const YAML::Mark& mark) {
  if (mark.is_null()) return source;
  return source + ":" + std::to_string(mark.line + 1) + ":" +
         std::to_string(mark.column + 1);
}

class Converter {
 public:
  Converter(const std::string& source, const YamlLimits& limits)
      : source_(source), limits_(limits) {}

  // May throw yaml-cpp exceptions; ParseYaml catches them.
  Status Convert(const YAML::Node& in, int depth, YamlNode* out) {
    const YAML::Mark mark = in.Mark();
    if (!mark.is_null()) {
      out->line = mark.line + 1;
      out->column = mark.column + 1;
    }
    if (depth > limits_.max_depth) {
      return InvalidArgument(Where(source_, mark) +
                             ": invalid YAML: nesting deeper than " +
                             std::to_string(limits_.max_depth) + " levels");
    }
    if (++nodes_ > limits_.max_nodes) {
      return InvalidArgument(Where(source_, mark) +
                             ": invalid YAML: more than " +
                             std::to_string(limits_.max_nodes) +
                             " nodes (after expanding aliases)");
    }
    switch (in.Type()) {
      case YAML::NodeType::Undefined:
      case YAML::NodeType::Null:
        out->kind = YamlNode::Kind::kNull;
        return Status::Ok();
      case YAML::NodeType::Scalar:
        out->kind = YamlNode::Kind::kScalar;
        out->scalar = in.Scalar();
        return Status::Ok();
      case YAML::NodeType::Sequence:
        out->kind = YamlNode::Kind::kSequence;
        for (const YAML::Node& item : in) {
          out->items.emplace_back();
          RETURN_IF_ERROR(Convert(item, depth + 1, &out->items.back()));
        }
        return Status::Ok();
      case YAML::NodeType::Map: {
        out->kind = YamlNode::Kind::kMap;
        std::set<std::string> seen;
        // Copy the key and value handles: the iterator's value is a
        // temporary proxy, so references into it would dangle.
        for (const auto& pair : in) {
          const YAML::Node key = pair.first;
          const YAML::Node value = pair.second;
          const YAML::Mark key_mark = key.Mark();
          if (!key.IsScalar()) {
            return InvalidArgument(Where(source_, key_mark) +
                                   ": invalid YAML: map keys must be plain "
                                   "strings");
          }
          YamlMapEntry entry;
          entry.key = key.Scalar();
          if (!key_mark.is_null()) {
            entry.line = key_mark.line + 1;
            entry.column = key_mark.column + 1;
          }
          if (!seen.insert(entry.key).second) {
            return InvalidArgument(Where(source_, key_mark) +
                                   ": invalid YAML: duplicate key '" +
                                   entry.key + "'");
          }
          RETURN_IF_ERROR(Convert(value, depth + 1, &entry.value));
          // A null value ("key:") has no mark of its own; point at the key.
          if (entry.value.line == 0) {
            entry.value.line = entry.line;
            entry.value.column = entry.column;
          }
          out->entries.push_back(std::move(entry));
        }
        return Status::Ok();
      }
    }
    return Internal("unknown yaml-cpp node type");
  }

 private:
  const std::string& source_;
  const YamlLimits& limits_;
  int nodes_ = 0;
};

}  // namespace

const char* YamlNode::KindName() const {
  switch (kind) {
    case Kind::kNull:
      return "null";
    case Kind::kScalar:
      return "scalar";
    case Kind::kSequence:
      return "list";
    case Kind::kMap:
      return "map";
  }
  return "?";
}

StatusOr<YamlNode> ParseYaml(const std::string& text, const std::string& source,
                             const YamlLimits& limits) {
  try {
    const std::vector<YAML::Node> docs = YAML::LoadAll(text);
    YamlNode root;
    if (docs.empty()) return root;  // empty or comments only
    if (docs.size() > 1) {
      return InvalidArgument(Where(source, docs[1].Mark()) +
                             ": invalid YAML: expected one document, found " +
                             std::to_string(docs.size()));
    }
    Converter converter(source, limits);
    RETURN_IF_ERROR(converter.Convert(docs[0], 0, &root));
    return root;
  } catch (const YAML::Exception& e) {
    return InvalidArgument(Where(source, e.mark) + ": invalid YAML: " + e.msg);
  } catch (const std::exception& e) {
    return InvalidArgument(source + ": invalid YAML: " + e.what());
  }
}

}  // namespace rnnserve::config
