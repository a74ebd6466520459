#include "server/config/config_reader.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace rnnserve::config {

void ConfigContext::RecordFile(const std::string& path, int line, int column) {
  std::string where = source_;
  if (line > 0) {
    where += ":" + std::to_string(line) + ":" + std::to_string(column);
  }
  file_location_[path] = where;
  flag_.erase(path);
}

void ConfigContext::RecordFlag(const std::string& path,
                               const std::string& flag) {
  flag_[path] = flag;
}

bool ConfigContext::InFile(const std::string& path) const {
  return file_location_.count(path) > 0;
}

Status ConfigContext::Error(const std::string& path,
                            const std::string& rule) const {
  if (auto f = flag_.find(path); f != flag_.end()) {
    return InvalidArgument(f->second + ": " + rule);
  }
  if (auto f = file_location_.find(path); f != file_location_.end()) {
    return InvalidArgument(f->second + ": " + path + ": " + rule);
  }
  if (!source_.empty())
    return InvalidArgument(source_ + ": " + path + ": " + rule);
  return InvalidArgument(path + ": " + rule);
}

Status ConfigContext::ValueError(const std::string& path,
                                 const std::string& rule) const {
  if (!inherited_note_.empty() && !InFile(path) && flag_.count(path) == 0) {
    return Error(path, rule + " (" + inherited_note_ + ")");
  }
  return Error(path, rule);
}

std::string JoinPath(const std::string& parent, const std::string& child) {
  if (parent.empty()) return child;
  if (!child.empty() && child[0] == '[') return parent + child;
  return parent + "." + child;
}

std::string IndexPath(const std::string& parent, size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

std::string FormatDouble(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::string Quoted(const std::string& text) {
  constexpr size_t kMax = 80;
  if (text.size() > kMax) return "'" + text.substr(0, kMax) + "...'";
  return "'" + text + "'";
}

namespace {

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1,
                         diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace

std::string ClosestMatch(const std::string& word,
                         const std::vector<std::string>& options) {
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const std::string& option : options) {
    const size_t d = EditDistance(word, option);
    if (d < best_distance) {
      best_distance = d;
      best = option;
    }
  }
  // A prefix/suffix slip ("max_queue_delay" for "max_queue_delay_us") or a
  // few typed letters off.
  const bool affix = !best.empty() && word.size() >= 4 &&
                     (best.find(word) != std::string::npos ||
                      word.find(best) != std::string::npos);
  const size_t limit = std::max<size_t>(2, word.size() / 3);
  return (best_distance <= limit || affix) ? best : "";
}

std::string ParseIntText(const std::string& text, int64_t* out) {
  const std::string rule = "must be an integer (got " + Quoted(text) + ")";
  if (text.empty() || IsSpace(text.front()) || IsSpace(text.back()))
    return rule;
  size_t i = (text[0] == '-' || text[0] == '+') ? 1 : 0;
  if (i == text.size()) return rule;
  for (size_t k = i; k < text.size(); ++k) {
    if (text[k] < '0' || text[k] > '9') return rule;
  }
  errno = 0;
  const long long v = std::strtoll(text.c_str(), nullptr, 10);
  if (errno == ERANGE) {
    return "must be an integer in [" + std::to_string(INT64_MIN) + ", " +
           std::to_string(INT64_MAX) + "] (got " + text + ")";
  }
  *out = v;
  return "";
}

std::string ParseIntText(const std::string& text, int* out) {
  int64_t v = 0;
  std::string rule = ParseIntText(text, &v);
  if (!rule.empty()) return rule;
  if (v < INT_MIN || v > INT_MAX) {
    return "must be an integer in [" + std::to_string(INT_MIN) + ", " +
           std::to_string(INT_MAX) + "] (got " + text + ")";
  }
  *out = static_cast<int>(v);
  return "";
}

std::string ParseDoubleText(const std::string& text, double* out) {
  const std::string rule = "must be a number (got " + Quoted(text) + ")";
  if (text.empty() || IsSpace(text.front()) || IsSpace(text.back()))
    return rule;
  // YAML spells infinity and NaN .inf / .nan; keep them numbers so that the
  // range check can say "must be a finite number".
  std::string lower;
  for (char c : text) lower += static_cast<char>(std::tolower(c));
  if (lower == ".inf" || lower == "+.inf") {
    *out = HUGE_VAL;
    return "";
  }
  if (lower == "-.inf") {
    *out = -HUGE_VAL;
    return "";
  }
  if (lower == ".nan") {
    *out = std::nan("");
    return "";
  }
  // strtod also reads hex floats; a config has no business with them.
  if (lower.find("0x") != std::string::npos) return rule;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return rule;
  *out = v;
  return "";
}

std::string ParseBoolText(const std::string& text, bool* out) {
  if (text == "true" || text == "True" || text == "TRUE") {
    *out = true;
    return "";
  }
  if (text == "false" || text == "False" || text == "FALSE") {
    *out = false;
    return "";
  }
  return "must be true or false (got " + Quoted(text) + ")";
}

Status CheckIntRange(const ConfigContext& context, const std::string& path,
                     int64_t value, int64_t lo, int64_t hi) {
  if (value < lo) {
    return context.ValueError(path, "must be >= " + std::to_string(lo) +
                                        " (got " + std::to_string(value) + ")");
  }
  if (value > hi) {
    return context.ValueError(path, "must be <= " + std::to_string(hi) +
                                        " (got " + std::to_string(value) + ")");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------- MapReader

StatusOr<MapReader> MapReader::Open(const YamlNode& node, std::string path,
                                    ConfigContext* context) {
  if (node.kind != YamlNode::Kind::kMap && node.kind != YamlNode::Kind::kNull) {
    return context->Error(path.empty() ? "(top level)" : path,
                          std::string("must be a map of key: value (got a ") +
                              node.KindName() + ")");
  }
  return MapReader(&node, std::move(path), context);
}

const YamlNode* MapReader::Find(const std::string& key) {
  if (std::find(known_.begin(), known_.end(), key) == known_.end()) {
    known_.push_back(key);
  }
  for (const YamlMapEntry& entry : node_->entries) {
    if (entry.key == key) {
      context_->RecordFile(Child(key), entry.value.line, entry.value.column);
      return &entry.value;
    }
  }
  return nullptr;
}

Status ReadScalar(const YamlNode& node, const std::string& path,
                  const ConfigContext& context, std::string* out) {
  if (node.kind != YamlNode::Kind::kScalar) {
    return context.Error(path, std::string("must be a single value (got a ") +
                                   node.KindName() + ")");
  }
  *out = node.scalar;
  return Status::Ok();
}

namespace {

// Reads a scalar node with `parse`; a non-scalar is "must be <expected>".
template <typename T>
Status ReadScalarAs(const YamlNode& node, const std::string& path,
                    const ConfigContext& context, const char* expected,
                    std::string (*parse)(const std::string&, T*), T* out) {
  if (node.kind != YamlNode::Kind::kScalar) {
    return context.Error(path, std::string("must be ") + expected +
                                   " (got a " + node.KindName() + ")");
  }
  const std::string rule = parse(node.scalar, out);
  if (!rule.empty()) return context.Error(path, rule);
  return Status::Ok();
}

}  // namespace

Status ReadInt(const YamlNode& node, const std::string& path,
               const ConfigContext& context, int64_t* out) {
  return ReadScalarAs<int64_t>(node, path, context, "an integer", ParseIntText,
                               out);
}

Status MapReader::Read(const std::string& key, int64_t* out) {
  const YamlNode* node = Find(key);
  if (node == nullptr) return Status::Ok();
  return ReadInt(*node, Child(key), *context_, out);
}

Status MapReader::Read(const std::string& key, int* out) {
  const YamlNode* node = Find(key);
  if (node == nullptr) return Status::Ok();
  return ReadScalarAs<int>(*node, Child(key), *context_, "an integer",
                          ParseIntText, out);
}

Status MapReader::Read(const std::string& key, double* out) {
  const YamlNode* node = Find(key);
  if (node == nullptr) return Status::Ok();
  return ReadScalarAs<double>(*node, Child(key), *context_, "a number",
                          ParseDoubleText, out);
}

Status MapReader::Read(const std::string& key, bool* out) {
  const YamlNode* node = Find(key);
  if (node == nullptr) return Status::Ok();
  return ReadScalarAs<bool>(*node, Child(key), *context_, "true or false",
                          ParseBoolText, out);
}

Status MapReader::Read(const std::string& key, std::string* out) {
  const YamlNode* node = Find(key);
  if (node == nullptr) return Status::Ok();
  return ReadScalar(*node, Child(key), *context_, out);
}

Status MapReader::Read(const std::string& key, std::vector<int64_t>* out) {
  const YamlNode* node = Find(key);
  if (node == nullptr) return Status::Ok();
  const std::string path = Child(key);
  if (node->kind == YamlNode::Kind::kNull) {
    out->clear();
    return Status::Ok();
  }
  if (node->kind != YamlNode::Kind::kSequence) {
    return context_->Error(path,
                           std::string("must be a list of integers (got a ") +
                               node->KindName() + ")");
  }
  std::vector<int64_t> values;
  for (size_t i = 0; i < node->items.size(); ++i) {
    const YamlNode& item = node->items[i];
    const std::string item_path = IndexPath(path, i);
    context_->RecordFile(item_path, item.line, item.column);
    int64_t v = 0;
    RETURN_IF_ERROR(ReadInt(item, item_path, *context_, &v));
    values.push_back(v);
  }
  *out = std::move(values);
  return Status::Ok();
}

Status MapReader::Read(const std::string& key, std::vector<std::string>* out) {
  const YamlNode* node = Find(key);
  if (node == nullptr) return Status::Ok();
  const std::string path = Child(key);
  if (node->kind == YamlNode::Kind::kNull) {
    out->clear();
    return Status::Ok();
  }
  if (node->kind != YamlNode::Kind::kSequence) {
    return context_->Error(path,
                           std::string("must be a list of strings (got a ") +
                               node->KindName() + ")");
  }
  std::vector<std::string> values;
  for (size_t i = 0; i < node->items.size(); ++i) {
    const YamlNode& item = node->items[i];
    const std::string item_path = IndexPath(path, i);
    context_->RecordFile(item_path, item.line, item.column);
    std::string v;
    RETURN_IF_ERROR(ReadScalar(item, item_path, *context_, &v));
    values.push_back(std::move(v));
  }
  *out = std::move(values);
  return Status::Ok();
}

Status MapReader::Finish() const {
  for (const YamlMapEntry& entry : node_->entries) {
    if (std::find(known_.begin(), known_.end(), entry.key) != known_.end()) {
      continue;
    }
    const std::string path = Child(entry.key);
    context_->RecordFile(path, entry.line, entry.column);
    std::string rule = "unknown key";
    const std::string guess = ClosestMatch(entry.key, known_);
    if (!guess.empty()) {
      rule += " (did you mean '" + guess + "'?)";
    } else {
      std::string all;
      for (const std::string& k : known_) all += (all.empty() ? "" : ", ") + k;
      rule += " (expected one of: " + all + ")";
    }
    return context_->Error(path, rule);
  }
  return Status::Ok();
}

StatusOr<std::string> ReadConfigFile(const std::string& path,
                                     size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return NotFound("cannot read configuration file '" + path +
                    "': " + std::strerror(errno));
  }
  std::string text;
  char buf[8192];
  while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > max_bytes) {
      return InvalidArgument(path + ": configuration file larger than " +
                             std::to_string(max_bytes) + " bytes");
    }
  }
  if (in.bad()) {
    return InvalidArgument(path + ": read error: " + std::strerror(errno));
  }
  return text;
}

// --------------------------------------------------------------- YamlWriter

void YamlWriter::Comment(int indent, const std::string& text) {
  if (!comments_ || text.empty()) return;
  text_ += std::string(indent, ' ') + "# " + text + "\n";
}

void YamlWriter::Section(int indent, const std::string& key,
                         const std::string& comment) {
  Comment(indent, comment);
  text_ += std::string(indent, ' ') + key + ":\n";
}

void YamlWriter::Field(int indent, const std::string& key,
                       const std::string& value, const std::string& comment) {
  Comment(indent, comment);
  text_ += std::string(indent, ' ') + key + ": " + value + "\n";
}

void YamlWriter::Item(int indent, const std::string& value) {
  text_ += std::string(indent, ' ') + "- " + value + "\n";
}

std::string YamlString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string YamlIntList(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(v[i]);
  }
  return out + "]";
}

std::string YamlStringList(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    out += (i ? ", " : "") + YamlString(v[i]);
  }
  return out + "]";
}

}  // namespace rnnserve::config
