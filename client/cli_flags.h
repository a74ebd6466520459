// Command-line flags of one rnnserve-client subcommand.
//
// Accepted forms: `--name value`, `--name=value`, and bare `--name` for
// switches. Unknown flags, missing values, repeated flags and positional
// arguments are INVALID_ARGUMENT errors (the CLI exits 2 on them).
// Not thread-safe; used once per process.
#ifndef RNNSERVE_CLIENT_CLI_FLAGS_H_
#define RNNSERVE_CLIENT_CLI_FLAGS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "server/common/status.h"

namespace rnnserve::client {

class FlagSet {
 public:
  // A flag that takes a value; `default_value` is used when it is absent
  // (empty and not `required`: absent means "not given").
  void Value(const std::string& name, const std::string& help,
             const std::string& default_value = "", bool required = false);
  // A boolean flag without a value.
  void Switch(const std::string& name, const std::string& help);

  Status Parse(const std::vector<std::string>& args);

  bool Given(const std::string& name) const;  // set on the command line
  bool On(const std::string& name) const;     // a switch that was given
  std::string Get(const std::string& name) const;
  // The value as an integer / number in [min, max]; INVALID_ARGUMENT naming
  // the flag otherwise.
  StatusOr<int64_t> GetInt(const std::string& name, int64_t min,
                           int64_t max) const;
  StatusOr<double> GetDouble(const std::string& name, double min,
                             double max) const;

  // "  --name VALUE   help (default: x)" lines in declaration order.
  std::string Help() const;

 private:
  struct Flag {
    std::string help;
    std::string default_value;
    bool takes_value = true;
    bool required = false;
  };
  std::vector<std::string> order_;
  std::map<std::string, Flag> flags_;
  std::map<std::string, std::string> given_;
};

}  // namespace rnnserve::client

#endif  // RNNSERVE_CLIENT_CLI_FLAGS_H_
