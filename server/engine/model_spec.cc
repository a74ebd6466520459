#include "server/engine/model_spec.h"

#include <cstdint>
#include <string>

namespace rnnserve::engine {

const char* CellTypeName(CellType cell) {
  switch (cell) {
    case CellType::kLstm:
      return "LSTM";
    case CellType::kGru:
      return "GRU";
  }
  return "unknown";
}

const char* OutputActivationName(OutputActivation a) {
  switch (a) {
    case OutputActivation::kNone:
      return "none";
    case OutputActivation::kSoftmax:
      return "softmax";
    case OutputActivation::kLogSoftmax:
      return "logsoftmax";
  }
  return "unknown";
}

const char* ElementTypeName(ElementType t) {
  switch (t) {
    case ElementType::kFloat32:
      return "float32";
    case ElementType::kInt64:
      return "int64";
    case ElementType::kInt32:
      return "int32";
  }
  return "unknown";
}

int64_t ModelSpec::ParameterCount() const {
  int64_t count = 0;
  if (has_embedding) count += static_cast<int64_t>(embedding.table.size());
  for (const RnnLayerSpec& layer : layers) {
    count += static_cast<int64_t>(layer.w_layer.size() + layer.w_iter.size() +
                                  layer.bias.size());
  }
  if (has_head) {
    count += static_cast<int64_t>(head.weight.size() + head.bias.size());
  }
  return count;
}

namespace {

// Checks that `actual` elements were stored for an array of `expected`
// elements; sizes are computed in int64 so no product overflows for the
// int-sized dimensions of a spec.
std::string CheckSize(const std::string& what, size_t actual,
                      int64_t expected) {
  if (static_cast<int64_t>(actual) == expected) return "";
  return what + " has " + std::to_string(actual) + " elements, expected " +
         std::to_string(expected);
}

std::string ValidateLayer(const RnnLayerSpec& layer, const std::string& what) {
  if (layer.cell != CellType::kLstm && layer.cell != CellType::kGru) {
    return what + ": unknown cell type";
  }
  if (layer.input_size <= 0) return what + ": input_size must be > 0";
  if (layer.hidden_size <= 0) return what + ": hidden_size must be > 0";
  if (layer.directions != 1 && layer.directions != 2) {
    return what + ": directions must be 1 or 2, got " +
           std::to_string(layer.directions);
  }
  const int64_t dirs = layer.directions;
  const int64_t in = layer.input_size;
  const int64_t hidden = layer.hidden_size;
  const int64_t gates = layer.gates();
  std::string problem = CheckSize(what + " w_layer", layer.w_layer.size(),
                                  dirs * in * gates * hidden);
  if (problem.empty()) {
    problem = CheckSize(what + " w_iter", layer.w_iter.size(),
                        dirs * hidden * gates * hidden);
  }
  if (problem.empty()) {
    problem = CheckSize(what + " bias", layer.bias.size(),
                        dirs * layer.bias_gates() * hidden);
  }
  return problem;
}

}  // namespace

std::string ValidateModelSpec(const ModelSpec& spec) {
  if (spec.input_name.empty()) return "input_name is empty";
  if (spec.output_name.empty()) return "output_name is empty";
  if (spec.layers.empty()) return "model has no recurrent layer";

  if (spec.input_kind == InputKind::kTokenIds) {
    if (!spec.has_embedding) return "token-id input requires an embedding";
    if (spec.input_type != ElementType::kInt64 &&
        spec.input_type != ElementType::kInt32) {
      return std::string("token-id input must be int64 or int32, not ") +
             ElementTypeName(spec.input_type);
    }
    const EmbeddingSpec& e = spec.embedding;
    if (e.vocab_size <= 0) return "embedding vocab_size must be > 0";
    if (e.dim <= 0) return "embedding dim must be > 0";
    if (e.vocab_size > (int64_t{1} << 40))
      return "embedding vocab_size is too large";
    std::string problem =
        CheckSize("embedding table", e.table.size(), e.vocab_size * e.dim);
    if (!problem.empty()) return problem;
    if (spec.feature_size != e.dim) {
      return "feature_size " + std::to_string(spec.feature_size) +
             " differs from the embedding dim " + std::to_string(e.dim);
    }
  } else {
    if (spec.has_embedding) return "feature input cannot have an embedding";
    if (spec.input_type != ElementType::kFloat32) {
      return std::string("feature input must be float32, not ") +
             ElementTypeName(spec.input_type);
    }
    if (spec.feature_size <= 0) return "feature_size must be > 0";
  }

  int expected_input = spec.feature_size;
  for (size_t k = 0; k < spec.layers.size(); ++k) {
    const RnnLayerSpec& layer = spec.layers[k];
    const std::string what = "layer " + std::to_string(k);
    std::string problem = ValidateLayer(layer, what);
    if (!problem.empty()) return problem;
    if (layer.input_size != expected_input) {
      return what + ": input_size " + std::to_string(layer.input_size) +
             " does not match the size " + std::to_string(expected_input) +
             " of its input";
    }
    expected_input = layer.output_size();
  }

  bool any_lstm = false;
  for (const RnnLayerSpec& layer : spec.layers)
    any_lstm |= layer.cell == CellType::kLstm;
  if (!any_lstm) {
    if (!spec.initial_c_name.empty())
      return "initial_c_name is set without an LSTM layer";
    if (!spec.final_c_name.empty())
      return "final_c_name is set without an LSTM layer";
  }

  if (spec.has_head) {
    const LinearSpec& h = spec.head;
    if (h.in_features != expected_input) {
      return "head in_features " + std::to_string(h.in_features) +
             " does not match the recurrent output size " +
             std::to_string(expected_input);
    }
    if (h.out_features <= 0) return "head out_features must be > 0";
    std::string problem =
        CheckSize("head weight", h.weight.size(),
                  static_cast<int64_t>(h.in_features) * h.out_features);
    if (problem.empty()) {
      problem = CheckSize("head bias", h.bias.size(), h.out_features);
    }
    if (!problem.empty()) return problem;
  }
  if (spec.activation != OutputActivation::kNone &&
      spec.activation != OutputActivation::kSoftmax &&
      spec.activation != OutputActivation::kLogSoftmax) {
    return "unknown output activation";
  }
  return "";
}

}  // namespace rnnserve::engine
