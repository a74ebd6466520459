// Shared helpers for the configuration tests.
#ifndef RNNSERVE_TESTS_CONFIG_CONFIG_TEST_UTIL_H_
#define RNNSERVE_TESTS_CONFIG_CONFIG_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <string>

#include "server/common/status.h"

namespace rnnserve::config::testing {

// INVALID_ARGUMENT whose message contains every one of `parts`.
inline ::testing::AssertionResult IsInvalidArgumentWith(
    const Status& status, std::initializer_list<std::string> parts) {
  if (status.code() != StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure()
           << "expected INVALID_ARGUMENT, got " << status.ToString();
  }
  for (const std::string& part : parts) {
    if (status.message().find(part) == std::string::npos) {
      return ::testing::AssertionFailure() << "message \"" << status.message()
                                           << "\" lacks \"" << part << "\"";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace rnnserve::config::testing

#endif  // RNNSERVE_TESTS_CONFIG_CONFIG_TEST_UTIL_H_
