// DriftPolicy: min_samples gating, windowed averages, trigger and recovery
// with hysteresis, unset thresholds, and the reasons' text. Expected
// averages are worked out by hand in the comments.
#include "server/metrics/drift_policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <optional>

namespace rnnserve::metrics {
namespace {

using Event = DriftPolicy::Event;
using ::testing::HasSubstr;
using ::testing::StartsWith;

DivergenceStats Stats(double relative_l2, double max_abs = 0.0,
                      double mean_abs = 0.0,
                      std::optional<double> agreement = std::nullopt,
                      std::optional<double> kl = std::nullopt) {
  DivergenceStats s;
  s.rows = 1;
  s.relative_l2 = relative_l2;
  s.max_abs_error = max_abs;
  s.mean_abs_error = mean_abs;
  s.top1_agreement = agreement;
  s.kl = kl;
  return s;
}

config::DriftConfig Config(int min_samples, double hysteresis) {
  config::DriftConfig c;
  c.min_samples = min_samples;
  c.hysteresis = hysteresis;
  return c;
}

DriftPolicy::Options Window(int window) {
  DriftPolicy::Options o;
  o.window = window;
  return o;
}

TEST(DriftPolicyTest, NothingTriggersBeforeMinSamples) {
  config::DriftConfig c = Config(5, 0.2);
  c.thresholds.relative_l2 = 0.05;
  DriftPolicy policy(c, Window(10));
  for (int i = 0; i < 4; ++i) {
    const DriftPolicy::Update u = policy.Observe(Stats(0.1), std::nullopt);
    EXPECT_EQ(u.event, Event::kNone) << i;
    EXPECT_EQ(u.reason, "");
    EXPECT_FALSE(policy.triggered());
  }
  const DriftPolicy::Update u = policy.Observe(Stats(0.1), std::nullopt);
  EXPECT_EQ(u.event, Event::kTriggered);
  EXPECT_EQ(u.reason, "relative_l2 0.1 > 0.05");
  EXPECT_TRUE(policy.triggered());
  EXPECT_EQ(policy.samples(), 5);
  // Reported once, on the transition.
  EXPECT_EQ(policy.Observe(Stats(0.1), std::nullopt).event, Event::kNone);
  EXPECT_TRUE(policy.triggered());
}

TEST(DriftPolicyTest, DefaultWindowIsAHundred) {
  config::DriftConfig c = Config(1, 0.0);
  c.thresholds.relative_l2 = 0.05;
  DriftPolicy policy(c);
  EXPECT_EQ(policy.Observe(Stats(10.0), std::nullopt).event, Event::kTriggered);
  // 10 + 99 x 0 over 100 samples = 0.1 > 0.05; one more pushes 10 out.
  for (int i = 0; i < 99; ++i) policy.Observe(Stats(0.0), std::nullopt);
  EXPECT_EQ(policy.averages().window_samples, 100);
  EXPECT_DOUBLE_EQ(*policy.averages().relative_l2, 0.1);
  EXPECT_TRUE(policy.triggered());
  EXPECT_EQ(policy.Observe(Stats(0.0), std::nullopt).event, Event::kRecovered);
}

TEST(DriftPolicyTest, AveragesCoverTheLastWindowSamples) {
  DriftPolicy policy(Config(1, 0.2), Window(3));
  EXPECT_EQ(policy.averages().window_samples, 0);
  EXPECT_FALSE(policy.averages().relative_l2.has_value());
  policy.Observe(Stats(0.1, 1.0, 0.5, 0.75), 0.5);
  policy.Observe(Stats(0.2, 2.0, 0.5, 0.5), std::nullopt);
  policy.Observe(Stats(0.3, 3.0, 0.5), std::nullopt);
  policy.Observe(Stats(0.4, 4.0, 0.5, std::nullopt, 0.2), std::nullopt);
  const DriftPolicy::Averages a = policy.averages();
  EXPECT_EQ(policy.samples(), 4);
  EXPECT_EQ(a.window_samples, 3);
  EXPECT_DOUBLE_EQ(*a.relative_l2, (0.2 + 0.3 + 0.4) / 3);
  EXPECT_DOUBLE_EQ(*a.max_abs_error, 3.0);
  EXPECT_DOUBLE_EQ(*a.mean_abs_error, 0.5);
  // Only the second sample in the window carries top-1: 1 - 0.5.
  EXPECT_DOUBLE_EQ(*a.top1_disagreement, 0.5);
  EXPECT_DOUBLE_EQ(*a.kl, 0.2);
  // The only clip fraction left the window.
  EXPECT_FALSE(a.clip_fraction.has_value());
}

TEST(DriftPolicyTest, RecoversOnlyBelowTheHysteresisBandAndDoesNotFlap) {
  // Threshold 0.05, hysteresis 0.2 -> recovery bound 0.04; window 4.
  config::DriftConfig c = Config(1, 0.2);
  c.thresholds.relative_l2 = 0.05;
  DriftPolicy policy(c, Window(4));
  EXPECT_EQ(policy.Observe(Stats(0.1), std::nullopt).event, Event::kTriggered);
  // Inside the band [0.04, 0.05]: stays triggered however long.
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(policy.Observe(Stats(0.045), std::nullopt).event, Event::kNone);
  }
  EXPECT_TRUE(policy.triggered());
  // [.045 .045 .045 .03] -> 0.04125: still in the band.
  EXPECT_EQ(policy.Observe(Stats(0.03), std::nullopt).event, Event::kNone);
  // [.045 .045 .03 .03] -> 0.0375 < 0.04: recovered.
  const DriftPolicy::Update u = policy.Observe(Stats(0.03), std::nullopt);
  EXPECT_EQ(u.event, Event::kRecovered);
  EXPECT_EQ(u.reason, "relative_l2 0.0375 < 0.04");
  EXPECT_FALSE(policy.triggered());
  // Oscillating samples whose average stays inside the band (at most
  // 0.045): no event in either direction.
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(
        policy.Observe(Stats(i % 2 == 0 ? 0.049 : 0.041), std::nullopt).event,
        Event::kNone)
        << i;
  }
  // [.041 .049 .041 .1] -> 0.05775 > 0.05.
  const DriftPolicy::Update t = policy.Observe(Stats(0.1), std::nullopt);
  EXPECT_EQ(t.event, Event::kTriggered);
  EXPECT_THAT(t.reason, StartsWith("relative_l2 0.05"));
  EXPECT_THAT(t.reason, HasSubstr(" > 0.05"));
}

TEST(DriftPolicyTest, AverageEqualToTheThresholdDoesNotTrigger) {
  config::DriftConfig c = Config(1, 0.2);
  c.thresholds.max_abs_error = 0.5;
  DriftPolicy policy(c, Window(2));
  EXPECT_EQ(policy.Observe(Stats(0.0, 0.5), std::nullopt).event, Event::kNone);
  EXPECT_EQ(policy.Observe(Stats(0.0, 0.5), std::nullopt).event, Event::kNone);
}

TEST(DriftPolicyTest, EverySetThresholdMustBeBelowItsBandToRecover) {
  // Bounds with hysteresis 0.5: relative_l2 0.025, kl 0.05. Window 1.
  config::DriftConfig c = Config(1, 0.5);
  c.thresholds.relative_l2 = 0.05;
  c.thresholds.kl = 0.1;
  DriftPolicy policy(c, Window(1));
  const DriftPolicy::Update t =
      policy.Observe(Stats(0.1, 0, 0, 1.0, 0.0), std::nullopt);
  EXPECT_EQ(t.event, Event::kTriggered);
  EXPECT_EQ(t.reason, "relative_l2 0.1 > 0.05");
  // relative_l2 recovered, kl under its threshold but in its band.
  EXPECT_EQ(policy.Observe(Stats(0.01, 0, 0, 1.0, 0.07), std::nullopt).event,
            Event::kNone);
  EXPECT_TRUE(policy.triggered());
  const DriftPolicy::Update r =
      policy.Observe(Stats(0.01, 0, 0, 1.0, 0.04), std::nullopt);
  EXPECT_EQ(r.event, Event::kRecovered);
  EXPECT_EQ(r.reason, "relative_l2 0.01 < 0.025, kl 0.04 < 0.05");
}

TEST(DriftPolicyTest, ReasonNamesEveryExceededMetric) {
  config::DriftConfig c = Config(1, 0.2);
  c.thresholds.max_abs_error = 1.0;
  c.thresholds.relative_l2 = 0.05;
  c.thresholds.kl = 0.1;
  DriftPolicy policy(c, Window(5));
  const DriftPolicy::Update u =
      policy.Observe(Stats(0.2, 0.5, 0.1, 0.9, 0.3), std::nullopt);
  EXPECT_EQ(u.event, Event::kTriggered);
  EXPECT_EQ(u.reason, "relative_l2 0.2 > 0.05, kl 0.3 > 0.1");
}

TEST(DriftPolicyTest, ReasonShowsEnoughDigitsToDifferFromTheThreshold) {
  config::DriftConfig c = Config(1, 0.2);
  c.thresholds.relative_l2 = 0.05;
  DriftPolicy policy(c, Window(1));
  EXPECT_EQ(policy.Observe(Stats(0.0500001), std::nullopt).reason,
            "relative_l2 0.0500001 > 0.05");
}

TEST(DriftPolicyTest, UnsetThresholdsAreNeverChecked) {
  config::DriftConfig c = Config(1, 0.2);
  c.thresholds.top1_disagreement = 0.1;
  DriftPolicy policy(c, Window(1));
  // Huge errors, but only top-1 is checked; regression samples carry none.
  EXPECT_EQ(policy.Observe(Stats(1e6, 1e6, 1e6), std::nullopt).event,
            Event::kNone);
  EXPECT_EQ(policy.Observe(Stats(1e6, 1e6, 1e6, 1.0), 1.0).event, Event::kNone);
  const DriftPolicy::Update u =
      policy.Observe(Stats(0.0, 0, 0, 0.5), std::nullopt);
  EXPECT_EQ(u.event, Event::kTriggered);
  EXPECT_EQ(u.reason, "top1_disagreement 0.5 > 0.1");
}

TEST(DriftPolicyTest, NoThresholdsNeverTriggers) {
  DriftPolicy policy(Config(1, 0.2), Window(3));
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(policy.Observe(Stats(1e9, 1e9, 1e9, 0.0, 1e9), 1.0).event,
              Event::kNone);
  }
  EXPECT_FALSE(policy.triggered());
}

TEST(DriftPolicyTest, ClipFractionAveragesOnlySamplesThatCarryIt) {
  config::DriftConfig c = Config(1, 0.2);
  c.thresholds.clip_fraction = 0.01;
  DriftPolicy policy(c, Window(3));
  EXPECT_EQ(policy.Observe(Stats(0.0), std::nullopt).event, Event::kNone);
  EXPECT_EQ(policy.Observe(Stats(0.0), 0.0).event, Event::kNone);
  // (0 + 0.04) / 2 = 0.02 (the sample without a fraction does not dilute).
  const DriftPolicy::Update u = policy.Observe(Stats(0.0), 0.04);
  EXPECT_EQ(u.event, Event::kTriggered);
  EXPECT_EQ(u.reason, "clip_fraction 0.02 > 0.01");
}

TEST(DriftPolicyTest, InfiniteErrorTriggersUntilItLeavesTheWindow) {
  config::DriftConfig c = Config(1, 0.0);
  c.thresholds.relative_l2 = 0.05;
  DriftPolicy policy(c, Window(2));
  const double inf = std::numeric_limits<double>::infinity();
  const DriftPolicy::Update t = policy.Observe(Stats(inf), std::nullopt);
  EXPECT_EQ(t.event, Event::kTriggered);
  EXPECT_EQ(t.reason, "relative_l2 inf > 0.05");
  EXPECT_EQ(policy.Observe(Stats(0.01), std::nullopt).event, Event::kNone);
  EXPECT_EQ(policy.Observe(Stats(0.01), std::nullopt).event, Event::kRecovered);
}

TEST(DriftPolicyTest, NaNClipFractionCountsAsExceeding) {
  config::DriftConfig c = Config(1, 0.2);
  c.thresholds.clip_fraction = 0.5;
  DriftPolicy policy(c, Window(1));
  EXPECT_EQ(policy.Observe(Stats(0.0), std::numeric_limits<double>::quiet_NaN())
                .event,
            Event::kTriggered);
  EXPECT_EQ(policy.Observe(Stats(0.0), std::numeric_limits<double>::quiet_NaN())
                .event,
            Event::kNone);
  EXPECT_EQ(policy.Observe(Stats(0.0), 0.0).event, Event::kRecovered);
}

TEST(DriftPolicyTest, EventNames) {
  EXPECT_STREQ(DriftEventName(Event::kTriggered), "triggered");
  EXPECT_STREQ(DriftEventName(Event::kRecovered), "recovered");
  EXPECT_STREQ(DriftEventName(Event::kNone), "none");
}

}  // namespace
}  // namespace rnnserve::metrics
