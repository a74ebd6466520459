// ModelSpec: rnnserve's in-memory description of a recurrent model, independent
// of the file it came from (ONNX today) and of how it is executed (oneDNN f32,
// oneDNN int8, or the plain C++ reference).
//
// The graph shape is fixed by design (SPEC §3):
//   [token ids -> Embedding]  or  [float features]
//   -> RNN layer 0 -> RNN layer 1 -> ...          (LSTM or GRU, uni/bidirectional)
//   -> [last step only] -> [Linear head] -> [Softmax | LogSoftmax]
//
// All weights are stored in oneDNN's canonical plain layout and gate order, so
// the ONNX importer does the gate reordering exactly once and every executor
// (oneDNN and the reference) reads the same arrays:
//   w_layer [dirs][input_size][gates][hidden]   ("ldigo" with l = 1)
//   w_iter  [dirs][hidden][gates][hidden]
//   bias    [dirs][bias_gates][hidden]          ("ldgo")
// LSTM gates are i, f, c~, o (4) and bias = b_ih + b_hh (4 rows).
// GRU is PyTorch's / ONNX's linear-before-reset GRU = oneDNN's lbr_gru: gates
// u (update, ONNX z), r (reset), o (candidate, ONNX h) and a 4-row bias
//   [b_iu + b_hu, b_ir + b_hr, b_io, b_ho].
// Direction 0 runs left-to-right, direction 1 (if any) right-to-left; a
// bidirectional layer's output concatenates [forward, backward] per step.
//
// A ModelSpec is a plain value: build it, then share it read-only
// (std::shared_ptr<const ModelSpec>) across threads.
#ifndef RNNSERVE_ENGINE_MODEL_SPEC_H_
#define RNNSERVE_ENGINE_MODEL_SPEC_H_

#include <cstdint>
#include <string>
#include <vector>

namespace rnnserve::engine {

enum class CellType { kLstm, kGru };
const char* CellTypeName(CellType cell);

struct RnnLayerSpec {
  CellType cell = CellType::kLstm;
  int input_size = 0;
  int hidden_size = 0;
  int directions = 1;  // 1 or 2
  std::vector<float> w_layer;  // [dirs][input_size][gates][hidden]
  std::vector<float> w_iter;   // [dirs][hidden][gates][hidden]
  std::vector<float> bias;     // [dirs][bias_gates][hidden]

  int gates() const { return cell == CellType::kLstm ? 4 : 3; }
  int bias_gates() const { return 4; }
  int output_size() const { return hidden_size * directions; }
};

// nn.Embedding as an ONNX Gather on a constant table.
struct EmbeddingSpec {
  int64_t vocab_size = 0;
  int dim = 0;
  std::vector<float> table;  // [vocab_size][dim]
};

// nn.Linear: y = x · weight + bias.
struct LinearSpec {
  int in_features = 0;
  int out_features = 0;
  std::vector<float> weight;  // [in_features][out_features] (already transposed)
  std::vector<float> bias;    // [out_features]; zeros when the graph has none
};

enum class OutputActivation { kNone, kSoftmax, kLogSoftmax };
const char* OutputActivationName(OutputActivation a);

enum class InputKind { kFeatures, kTokenIds };

enum class ElementType { kFloat32, kInt64, kInt32 };
const char* ElementTypeName(ElementType t);

struct ModelSpec {
  // Graph interface, as the source model names it.
  std::string input_name;
  InputKind input_kind = InputKind::kFeatures;
  ElementType input_type = ElementType::kFloat32;  // kInt64/kInt32 for tokens
  int feature_size = 0;  // F of [N,T,F]; the embedding dim for token models
  // True when the graph's input/output tensors are [N,T,...]; false when they
  // are sequence-major [T,N,...] (nn.LSTM's batch_first=False). The engine's
  // own API is always batch-major; see engine/tensor_layout.h to convert.
  bool batch_first = true;
  // Names of optional graph inputs holding initial states, shaped
  // [num_layers*dirs, N, H] as PyTorch's h0/c0; empty when the graph has none.
  std::string initial_h_name;
  std::string initial_c_name;

  std::string output_name;  // the main output
  // Optional graph outputs for the final states, [num_layers*dirs, N, H].
  std::string final_h_name;
  std::string final_c_name;

  bool has_embedding = false;
  EmbeddingSpec embedding;
  std::vector<RnnLayerSpec> layers;
  bool last_step_only = false;  // out[:, -1, :] before the head
  bool has_head = false;
  LinearSpec head;
  OutputActivation activation = OutputActivation::kNone;

  // Size of the last dimension of the main output.
  int output_size() const {
    return has_head ? head.out_features : layers.back().output_size();
  }
  // True for classifier-like outputs (softmax, log-softmax, or a head whose
  // outputs are logits), where top-1 agreement and KL are meaningful.
  bool is_classifier() const {
    return activation != OutputActivation::kNone;
  }
  // Number of floats stored in this spec (embedding table, weights, biases,
  // head). Biases are counted in their folded 4-row form, so an LSTM/GRU
  // layer counts fewer than PyTorch's parameters() (which keeps b_ih and b_hh).
  int64_t ParameterCount() const;
};

// Checks internal consistency (sizes of every array, chaining of layer sizes,
// input kind vs embedding and element type, head sizes). Importers call it
// before returning; returns "" when the spec is valid, else a message naming
// what is wrong.
std::string ValidateModelSpec(const ModelSpec& spec);

}  // namespace rnnserve::engine

#endif  // RNNSERVE_ENGINE_MODEL_SPEC_H_
