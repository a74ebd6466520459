#include "server/batching/options_from_config.h"

#include <gtest/gtest.h>

namespace rnnserve::batching {
namespace {

// The batchers' defaults must stay those of the config (one source of
// truth for operators reading config.yaml docs).
TEST(OptionsFromConfigTest, DefaultsAgreeWithConfigDefaults) {
  const config::BatchingConfig config;
  const DynamicBatcherOptions d;
  EXPECT_EQ(d.max_batch_size, config.max_batch_size);
  EXPECT_EQ(d.max_queue_delay_us, config.max_queue_delay_us);
  EXPECT_EQ(d.max_queue_size, config.max_queue_size);
  EXPECT_EQ(d.group_by_length, config.group_by_length);
  EXPECT_EQ(d.preferred_batch_sizes, config.preferred_batch_sizes);
  const SequenceBatcherOptions s;
  EXPECT_EQ(s.max_sequence_idle_us, config.max_sequence_idle_us);
  EXPECT_EQ(s.max_active_sequences, config.max_active_sequences);
}

TEST(OptionsFromConfigTest, CopiesEveryField) {
  config::BatchingConfig config;
  config.max_batch_size = 8;
  config.max_queue_delay_us = 250;
  config.max_queue_size = 99;
  config.group_by_length = false;
  config.preferred_batch_sizes = {2, 4};
  config.max_sequence_idle_us = 1234;
  config.max_active_sequences = 7;
  const DynamicBatcherOptions d = DynamicOptionsFromConfig(config);
  EXPECT_EQ(d.max_batch_size, 8);
  EXPECT_EQ(d.max_queue_delay_us, 250);
  EXPECT_EQ(d.max_queue_size, 99);
  EXPECT_FALSE(d.group_by_length);
  EXPECT_EQ(d.preferred_batch_sizes, (std::vector<int64_t>{2, 4}));
  EXPECT_TRUE(ValidateDynamicBatcherOptions(d).ok());
  const SequenceBatcherOptions s = SequenceOptionsFromConfig(config);
  EXPECT_EQ(s.max_batch_size, 8);
  EXPECT_EQ(s.max_queue_delay_us, 250);
  EXPECT_EQ(s.max_queue_size, 99);
  EXPECT_FALSE(s.group_by_length);
  EXPECT_EQ(s.max_sequence_idle_us, 1234);
  EXPECT_EQ(s.max_active_sequences, 7);
  EXPECT_TRUE(ValidateSequenceBatcherOptions(s).ok());
}

}  // namespace
}  // namespace rnnserve::batching
