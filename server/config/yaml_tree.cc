#include "server/config/yaml_tree.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <exception>
#include <set>
#include <sstream>
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

// Counts documents with yaml-cpp's event parser, keeping the position of
// the second one's root node for the "expected one document" message.
class DocumentCounter : public YAML::EventHandler {
 public:
  int documents() const { return documents_; }
  const YAML::Mark& second_root() const { return second_root_; }

  void OnDocumentStart(const YAML::Mark&) override { ++documents_; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { Node(mark); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { Node(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                const std::string&) override {
    Node(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&,
                       YAML::anchor_t, YAML::EmitterStyle::value) override {
    Node(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    Node(mark);
  }
  void OnMapEnd() override {}

 private:
  void Node(const YAML::Mark& mark) {
    if (documents_ == 2 && !seen_second_root_) {
      second_root_ = mark;
      seen_second_root_ = true;
    }
  }

  int documents_ = 0;
  bool seen_second_root_ = false;
  YAML::Mark second_root_ = YAML::Mark::null_mark();
};

// Stop counting here: a real config has one document.
constexpr int kMaxDocumentsCounted = 1000;

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
    // Not YAML::LoadAll: yaml-cpp 0.7 returns endless empty documents for
    // some texts (one starting with ',', found by tests/fuzz/config_fuzz),
    // and LoadAll collects them until memory runs out. The event parser
    // yields them one at a time, so counting can stop.
    std::istringstream stream(text);
    YAML::Parser parser(stream);
    DocumentCounter counter;
    while (counter.documents() <= kMaxDocumentsCounted &&
           parser.HandleNextDocument(counter)) {
    }
    YamlNode root;
    if (counter.documents() == 0) return root;  // empty or comments only
    if (counter.documents() > 1) {
      const std::string found =
          counter.documents() > kMaxDocumentsCounted
              ? "more than " + std::to_string(kMaxDocumentsCounted)
              : std::to_string(counter.documents());
      return InvalidArgument(Where(source, counter.second_root()) +
                             ": invalid YAML: expected one document, found " +
                             found);
    }
    Converter converter(source, limits);
    RETURN_IF_ERROR(converter.Convert(YAML::Load(text), 0, &root));
    return root;
  } catch (const YAML::Exception& e) {
    return InvalidArgument(Where(source, e.mark) + ": invalid YAML: " + e.msg);
  } catch (const std::exception& e) {
    return InvalidArgument(source + ": invalid YAML: " + e.what());
  }
}

}  // namespace rnnserve::config
