#include "client/cli_flags.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <set>

namespace rnnserve::client {

void FlagSet::Value(const std::string& name, const std::string& help,
                    const std::string& default_value, bool required) {
  order_.push_back(name);
  flags_[name] = {help, default_value, true, required};
}

void FlagSet::Switch(const std::string& name, const std::string& help) {
  order_.push_back(name);
  flags_[name] = {help, "", false, false};
}

Status FlagSet::Parse(const std::vector<std::string>& args) {
  given_.clear();
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0) {
      return InvalidArgument("unexpected argument '" + arg +
                             "' (flags start with --)");
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_inline_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_inline_value = true;
    }
    auto it = flags_.find(name);
    if (it == flags_.end()) return InvalidArgument("unknown flag --" + name);
    if (given_.count(name))
      return InvalidArgument("--" + name + " given twice");
    if (!it->second.takes_value) {
      if (has_inline_value)
        return InvalidArgument("--" + name + " takes no value");
      given_[name] = "true";
      continue;
    }
    if (!has_inline_value) {
      if (i + 1 >= args.size())
        return InvalidArgument("--" + name + " needs a value");
      value = args[++i];
    }
    given_[name] = value;
  }
  for (const auto& name : order_) {
    if (flags_[name].required && !given_.count(name)) {
      return InvalidArgument("--" + name + " is required");
    }
  }
  return Status::Ok();
}

bool FlagSet::Given(const std::string& name) const {
  return given_.count(name) > 0;
}

bool FlagSet::On(const std::string& name) const {
  auto it = flags_.find(name);
  return it != flags_.end() && !it->second.takes_value && Given(name);
}

std::string FlagSet::Get(const std::string& name) const {
  if (auto it = given_.find(name); it != given_.end()) return it->second;
  auto it = flags_.find(name);
  return it == flags_.end() ? "" : it->second.default_value;
}

StatusOr<int64_t> FlagSet::GetInt(const std::string& name, int64_t min,
                                  int64_t max) const {
  const std::string text = Get(name);
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE || v < min || v > max) {
    return InvalidArgument("--" + name + " must be an integer in [" +
                           std::to_string(min) + ", " + std::to_string(max) +
                           "], got '" + text + "'");
  }
  return static_cast<int64_t>(v);
}

StatusOr<double> FlagSet::GetDouble(const std::string& name, double min,
                                    double max) const {
  const std::string text = Get(name);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(v) || v < min || v > max) {
    return InvalidArgument("--" + name + " must be a number in [" +
                           std::to_string(min) + ", " + std::to_string(max) +
                           "], got '" + text + "'");
  }
  return v;
}

std::string FlagSet::Help() const {
  std::string out;
  for (const auto& name : order_) {
    const Flag& f = flags_.at(name);
    std::string left = "  --" + name + (f.takes_value ? " VALUE" : "");
    if (left.size() < 26) left.resize(26, ' ');
    out += left + " " + f.help;
    if (f.required) out += " (required)";
    if (!f.default_value.empty()) out += " (default: " + f.default_value + ")";
    out += "\n";
  }
  return out;
}

}  // namespace rnnserve::client
