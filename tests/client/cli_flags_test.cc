#include "client/cli_flags.h"

#include <gtest/gtest.h>

namespace rnnserve::client {
namespace {

FlagSet Flags() {
  FlagSet f;
  f.Value("model", "model", "", true);
  f.Value("chunk", "chunk", "8");
  f.Value("duration", "seconds", "10");
  f.Switch("json", "json");
  return f;
}

TEST(FlagSetTest, ParsesBothValueFormsAndSwitches) {
  FlagSet f = Flags();
  ASSERT_TRUE(f.Parse({"--model", "charlm", "--chunk=16", "--json"}).ok());
  EXPECT_EQ(f.Get("model"), "charlm");
  EXPECT_EQ(*f.GetInt("chunk", 1, 100), 16);
  EXPECT_TRUE(f.On("json"));
  EXPECT_FALSE(f.Given("duration"));
  EXPECT_DOUBLE_EQ(*f.GetDouble("duration", 0, 100), 10.0);
}

TEST(FlagSetTest, ValuesMayLookLikeNegativeNumbersOrBeEmpty) {
  FlagSet f = Flags();
  ASSERT_TRUE(f.Parse({"--model=", "--chunk", "-3"}).ok());
  EXPECT_EQ(f.Get("model"), "");
  EXPECT_EQ(f.GetInt("chunk", 1, 100).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(FlagSetTest, RejectsBadUsage) {
  EXPECT_FALSE(Flags().Parse({}).ok());  // --model required
  EXPECT_FALSE(Flags().Parse({"--model", "m", "--nope", "1"}).ok());  // unknown
  EXPECT_FALSE(Flags().Parse({"--model"}).ok());                // no value
  EXPECT_FALSE(Flags().Parse({"--model", "m", "extra"}).ok());  // positional
  EXPECT_FALSE(Flags().Parse({"--model", "m", "--model", "n"}).ok());  // twice
  EXPECT_FALSE(
      Flags().Parse({"--model", "m", "--json=yes"}).ok());  // switch value
}

TEST(FlagSetTest, NumbersAreCheckedWhole) {
  FlagSet f = Flags();
  ASSERT_TRUE(
      f.Parse({"--model", "m", "--chunk", "12x", "--duration", "nan"}).ok());
  EXPECT_FALSE(f.GetInt("chunk", 1, 100).ok());
  EXPECT_FALSE(f.GetDouble("duration", 0, 100).ok());
  const Status s = f.GetInt("chunk", 1, 100).status();
  EXPECT_NE(s.message().find("--chunk"), std::string::npos) << s.message();
}

TEST(FlagSetTest, HelpListsEveryFlag) {
  const std::string help = Flags().Help();
  for (const char* name :
       {"--model VALUE", "--chunk VALUE", "--duration", "--json"}) {
    EXPECT_NE(help.find(name), std::string::npos) << help;
  }
  EXPECT_NE(help.find("(default: 8)"), std::string::npos) << help;
}

}  // namespace
}  // namespace rnnserve::client
