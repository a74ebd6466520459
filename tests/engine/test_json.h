// A tiny JSON reader for tests (manifest.json of the goldens): objects,
// arrays, strings with the standard escapes, numbers, true/false/null.
// Test-only: rnnserve itself has no JSON dependency.
#ifndef RNNSERVE_TESTS_ENGINE_TEST_JSON_H_
#define RNNSERVE_TESTS_ENGINE_TEST_JSON_H_

#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

namespace rnnserve::testing {

struct Json {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;  // in file order

  bool is_null() const { return type == Type::kNull; }
  // The member `key` of an object, or nullptr.
  const Json* Find(const std::string& key) const {
    for (const auto& [k, v] : object) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  // Typed accessors for members; `fallback` when missing or of another type.
  std::string Str(const std::string& key,
                  const std::string& fallback = "") const {
    const Json* v = Find(key);
    return v && v->type == Type::kString ? v->string : fallback;
  }
  int64_t Int(const std::string& key, int64_t fallback = -1) const {
    const Json* v = Find(key);
    return v && v->type == Type::kNumber ? static_cast<int64_t>(v->number)
                                         : fallback;
  }
  bool Bool(const std::string& key, bool fallback = false) const {
    const Json* v = Find(key);
    return v && v->type == Type::kBool ? v->boolean : fallback;
  }

  // Parses `text`; on failure returns false and sets `error`.
  static bool Parse(const std::string& text, Json* out, std::string* error) {
    Parser p{text, 0, ""};
    p.SkipSpace();
    if (!p.Value(out, 0)) {
      *error = p.error + " at offset " + std::to_string(p.pos);
      return false;
    }
    p.SkipSpace();
    if (p.pos != text.size()) {
      *error = "trailing characters at offset " + std::to_string(p.pos);
      return false;
    }
    return true;
  }

 private:
  struct Parser {
    const std::string& s;
    size_t pos;
    std::string error;

    void SkipSpace() {
      while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\n' ||
                                s[pos] == '\r' || s[pos] == '\t')) {
        ++pos;
      }
    }
    bool Fail(const std::string& why) {
      error = why;
      return false;
    }
    bool Literal(const char* word) {
      const std::string w(word);
      if (s.compare(pos, w.size(), w) != 0) return Fail("bad literal");
      pos += w.size();
      return true;
    }
    static void AppendUtf8(uint32_t cp, std::string* out) {
      if (cp < 0x80) {
        out->push_back(static_cast<char>(cp));
      } else if (cp < 0x800) {
        out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      } else if (cp < 0x10000) {
        out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      } else {
        out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
    }
    bool Hex4(uint32_t* cp) {
      if (pos + 4 > s.size()) return Fail("short \\u escape");
      *cp = 0;
      for (int i = 0; i < 4; ++i) {
        const char c = s[pos++];
        *cp <<= 4;
        if (c >= '0' && c <= '9')
          *cp |= c - '0';
        else if (c >= 'a' && c <= 'f')
          *cp |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
          *cp |= c - 'A' + 10;
        else
          return Fail("bad \\u escape");
      }
      return true;
    }
    bool String(std::string* out) {
      if (pos >= s.size() || s[pos] != '"') return Fail("expected a string");
      ++pos;
      while (pos < s.size() && s[pos] != '"') {
        char c = s[pos++];
        if (c != '\\') {
          out->push_back(c);
          continue;
        }
        if (pos >= s.size()) return Fail("unterminated escape");
        c = s[pos++];
        switch (c) {
          case '"':
          case '\\':
          case '/':
            out->push_back(c);
            break;
          case 'b':
            out->push_back('\b');
            break;
          case 'f':
            out->push_back('\f');
            break;
          case 'n':
            out->push_back('\n');
            break;
          case 'r':
            out->push_back('\r');
            break;
          case 't':
            out->push_back('\t');
            break;
          case 'u': {
            uint32_t cp;
            if (!Hex4(&cp)) return false;
            if (cp >= 0xD800 && cp < 0xDC00 && s.compare(pos, 2, "\\u") == 0) {
              pos += 2;
              uint32_t low;
              if (!Hex4(&low)) return false;
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            AppendUtf8(cp, out);
            break;
          }
          default:
            return Fail("bad escape");
        }
      }
      if (pos >= s.size()) return Fail("unterminated string");
      ++pos;
      return true;
    }
    bool Value(Json* out, int depth) {
      if (depth > 64) return Fail("nesting too deep");
      if (pos >= s.size()) return Fail("unexpected end");
      const char c = s[pos];
      if (c == '{') {
        out->type = Type::kObject;
        ++pos;
        SkipSpace();
        if (pos < s.size() && s[pos] == '}') return ++pos, true;
        while (true) {
          SkipSpace();
          std::string key;
          if (!String(&key)) return false;
          SkipSpace();
          if (pos >= s.size() || s[pos] != ':') return Fail("expected ':'");
          ++pos;
          SkipSpace();
          Json value;
          if (!Value(&value, depth + 1)) return false;
          out->object.emplace_back(std::move(key), std::move(value));
          SkipSpace();
          if (pos < s.size() && s[pos] == ',') {
            ++pos;
            continue;
          }
          if (pos < s.size() && s[pos] == '}') return ++pos, true;
          return Fail("expected ',' or '}'");
        }
      }
      if (c == '[') {
        out->type = Type::kArray;
        ++pos;
        SkipSpace();
        if (pos < s.size() && s[pos] == ']') return ++pos, true;
        while (true) {
          SkipSpace();
          Json value;
          if (!Value(&value, depth + 1)) return false;
          out->array.push_back(std::move(value));
          SkipSpace();
          if (pos < s.size() && s[pos] == ',') {
            ++pos;
            continue;
          }
          if (pos < s.size() && s[pos] == ']') return ++pos, true;
          return Fail("expected ',' or ']'");
        }
      }
      if (c == '"') {
        out->type = Type::kString;
        return String(&out->string);
      }
      if (c == 't') {
        out->type = Type::kBool;
        out->boolean = true;
        return Literal("true");
      }
      if (c == 'f') {
        out->type = Type::kBool;
        out->boolean = false;
        return Literal("false");
      }
      if (c == 'n') {
        out->type = Type::kNull;
        return Literal("null");
      }
      if (c == '-' || (c >= '0' && c <= '9')) {
        const char* begin = s.c_str() + pos;
        char* end = nullptr;
        out->type = Type::kNumber;
        out->number = std::strtod(begin, &end);
        if (end == begin) return Fail("bad number");
        pos += static_cast<size_t>(end - begin);
        return true;
      }
      return Fail(std::string("unexpected character '") + c + "'");
    }
  };
};

}  // namespace rnnserve::testing

#endif  // RNNSERVE_TESTS_ENGINE_TEST_JSON_H_
