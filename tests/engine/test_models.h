// Random models and inputs for engine tests, built directly as ModelSpecs
// (PyTorch-like initialisation: uniform(-1/sqrt(H), 1/sqrt(H))).
#ifndef RNNSERVE_TESTS_ENGINE_TEST_MODELS_H_
#define RNNSERVE_TESTS_ENGINE_TEST_MODELS_H_

#include <cmath>
#include <random>
#include <vector>

#include "server/engine/model_spec.h"
#include "server/engine/quantization.h"

namespace rnnserve::engine::testing {

struct RandomModelOptions {
  CellType cell = CellType::kLstm;
  int input_size = 16;
  int hidden_size = 32;
  int layers = 1;
  int directions = 1;
  bool tokens = false;
  int vocab = 50;
  int head_out = 0;  // 0 = no head
  bool last_step_only = false;
  OutputActivation activation = OutputActivation::kNone;
  float forget_bias = 0.0f;  // added to the LSTM forget-gate bias
  unsigned seed = 1;
};

inline std::vector<float> Uniform(size_t n, float bound, std::mt19937* rng) {
  std::uniform_real_distribution<float> d(-bound, bound);
  std::vector<float> v(n);
  for (auto& x : v) x = d(*rng);
  return v;
}

inline ModelSpec RandomModel(const RandomModelOptions& o) {
  std::mt19937 rng(o.seed);
  ModelSpec s;
  s.input_name = "x";
  s.output_name = "y";
  s.batch_first = true;
  int in = o.input_size;
  if (o.tokens) {
    s.input_kind = InputKind::kTokenIds;
    s.input_type = ElementType::kInt64;
    s.has_embedding = true;
    s.embedding.vocab_size = o.vocab;
    s.embedding.dim = o.input_size;
    s.embedding.table = Uniform(static_cast<size_t>(o.vocab) * in, 1.0f, &rng);
  }
  s.feature_size = in;
  const float bound = 1.0f / std::sqrt(static_cast<float>(o.hidden_size));
  for (int l = 0; l < o.layers; ++l) {
    RnnLayerSpec layer;
    layer.cell = o.cell;
    layer.input_size = in;
    layer.hidden_size = o.hidden_size;
    layer.directions = o.directions;
    const size_t G = layer.gates(), H = o.hidden_size, D = o.directions;
    layer.w_layer = Uniform(D * in * G * H, bound, &rng);
    layer.w_iter = Uniform(D * H * G * H, bound, &rng);
    layer.bias = Uniform(D * 4 * H, bound, &rng);
    if (o.cell == CellType::kLstm) {
      for (size_t d = 0; d < D; ++d) {
        for (size_t h = 0; h < H; ++h) layer.bias[(d * 4 + 1) * H + h] += o.forget_bias;
      }
    }
    s.layers.push_back(std::move(layer));
    in = o.hidden_size * o.directions;
  }
  s.last_step_only = o.last_step_only;
  if (o.head_out > 0) {
    s.has_head = true;
    s.head.in_features = in;
    s.head.out_features = o.head_out;
    s.head.weight = Uniform(static_cast<size_t>(in) * o.head_out,
                            1.0f / std::sqrt(static_cast<float>(in)), &rng);
    s.head.bias = Uniform(o.head_out, 0.1f, &rng);
  }
  s.activation = o.activation;
  return s;
}

// Batch-major inputs for `spec`: N sequences of T steps.
inline SequenceSet RandomSequences(const ModelSpec& spec, int n, int t,
                                   unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  SequenceSet set;
  set.sequences = n;
  set.steps = t;
  if (spec.input_kind == InputKind::kTokenIds) {
    std::uniform_int_distribution<int64_t> d(0, spec.embedding.vocab_size - 1);
    set.tokens.resize(static_cast<size_t>(n) * t);
    for (auto& id : set.tokens) id = d(rng);
  } else {
    std::normal_distribution<float> d(0.0f, scale);
    set.features.resize(static_cast<size_t>(n) * t * spec.feature_size);
    for (auto& x : set.features) x = d(rng);
  }
  return set;
}

inline double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return a.size() == b.size() ? m : INFINITY;
}

inline double MeanAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || a.empty()) return INFINITY;
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += std::fabs(static_cast<double>(a[i]) - b[i]);
  return s / a.size();
}

}  // namespace rnnserve::engine::testing

#endif  // RNNSERVE_TESTS_ENGINE_TEST_MODELS_H_
