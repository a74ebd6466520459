// Small models built in code for the config and request fuzz targets (the
// codec and config checks read only a spec's interface, so weights are
// zeros), as tests/rpc/tensor_codec_test.cc builds them.
#ifndef RNNSERVE_TESTS_FUZZ_FUZZ_MODELS_H_
#define RNNSERVE_TESTS_FUZZ_FUZZ_MODELS_H_

#include <cstdint>

#include "server/engine/model_spec.h"

namespace rnnserve::fuzz {

inline constexpr int64_t kVocab = 10;
inline constexpr int kFeatures = 3;

inline engine::RnnLayerSpec ZeroLayer(int input_size, int hidden, int dirs) {
  engine::RnnLayerSpec layer;
  layer.input_size = input_size;
  layer.hidden_size = hidden;
  layer.directions = dirs;
  layer.w_layer.assign(static_cast<size_t>(dirs) * input_size * 4 * hidden, 0);
  layer.w_iter.assign(static_cast<size_t>(dirs) * hidden * 4 * hidden, 0);
  layer.bias.assign(static_cast<size_t>(dirs) * 4 * hidden, 0);
  return layer;
}

// Token ids in [0, 10) as INT64 [N, T] -> FP32 logits [N, T, 10].
inline engine::ModelSpec TokenSpec() {
  engine::ModelSpec spec;
  spec.input_name = "tokens";
  spec.input_kind = engine::InputKind::kTokenIds;
  spec.input_type = engine::ElementType::kInt64;
  spec.feature_size = 4;
  spec.output_name = "logits";
  spec.has_embedding = true;
  spec.embedding.vocab_size = kVocab;
  spec.embedding.dim = 4;
  spec.embedding.table.assign(kVocab * 4, 0);
  spec.layers.push_back(ZeroLayer(4, 8, 1));
  spec.has_head = true;
  spec.head.in_features = 8;
  spec.head.out_features = static_cast<int>(kVocab);
  spec.head.weight.assign(8 * kVocab, 0);
  spec.head.bias.assign(kVocab, 0);
  return spec;
}

// FP32 features [N, T, 3] -> FP32 [N, 2] (last step), one bidirectional
// layer.
inline engine::ModelSpec FeatureSpec() {
  engine::ModelSpec spec;
  spec.input_name = "x";
  spec.input_kind = engine::InputKind::kFeatures;
  spec.input_type = engine::ElementType::kFloat32;
  spec.feature_size = kFeatures;
  spec.output_name = "y";
  spec.layers.push_back(ZeroLayer(kFeatures, 4, 2));
  spec.last_step_only = true;
  spec.has_head = true;
  spec.head.in_features = 8;
  spec.head.out_features = 2;
  spec.head.weight.assign(8 * 2, 0);
  spec.head.bias.assign(2, 0);
  return spec;
}

}  // namespace rnnserve::fuzz

#endif  // RNNSERVE_TESTS_FUZZ_FUZZ_MODELS_H_
