// Importing recurrent models from ONNX into a ModelSpec.
//
// Accepted graphs are those torch.onnx.export writes (opsets 13-17 are tested;
// 9-20 are read) for the pattern of SPEC §3:
//   [token ids -> Gather on a constant embedding table]  or  [float features]
//   -> one LSTM or GRU node per layer (1..n layers, forward or bidirectional,
//      all layers of one cell type, hidden size and direction count)
//   -> [last step: Gather(-1) or Slice(-1:) + Squeeze on the time axis, or the
//      last layer's final hidden state h_n[-1] of a unidirectional stack]
//   -> [Linear head: MatMul (+ Add bias), or Gemm]
//   -> [Softmax | LogSoftmax on the last axis]
// Graph inputs: the data input ([N,T,F] / [T,N,F] float, or [N,T] / [T,N]
// int64/int32 token ids) and optionally h0 / c0 ([layers*dirs,N,H], Slice'd
// per layer). Graph outputs: the main output and optionally h_n / c_n (the
// per-layer Y_h / Y_c, Concat'ed along axis 0).
//
// The importer interprets the graph abstractly rather than matching node
// lists: it walks the nodes needed by the graph outputs in order and tracks
// for every tensor what it is — the sequence (with a label per axis: time,
// batch, direction, features), a constant, a shape computed from the
// sequence, a zero initial state, a slice of an h0/c0 input, or a final
// state. Shape plumbing (Shape, Gather, Unsqueeze, Squeeze, Concat,
// ConstantOfShape, Transpose, Slice, Reshape, Constant, Identity, Cast) is
// followed as far as these patterns need.
//
// Gate orders are converted here, once: ONNX LSTM rows i,o,f,c become the
// canonical i,f,c~,o with bias Wb + Rb; ONNX GRU rows z,r,h (which must have
// linear_before_reset=1, as PyTorch exports) become u,r,o with the 4-row bias
// [Wb_z+Rb_z, Wb_r+Rb_r, Wb_h, Rb_h] (see model_spec.h).
//
// Everything else is rejected with a Status whose message names the node
// (its name), its op type and the reason: UNIMPLEMENTED for valid ONNX that
// rnnserve does not support (unknown ops on the data path such as Relu, Conv
// or RNN; GRU with linear_before_reset=0; LSTM peepholes; sequence_lens;
// non-default activations; clip; input_forget; layout=1), INVALID_ARGUMENT for
// bytes that are not an ONNX model and for inconsistent graphs (wrong weight
// shapes, undefined tensors, graphs without an LSTM/GRU). The importer never
// trusts sizes in the file: every index and size is checked.
//
// Thread-safe: no shared state.
#ifndef RNNSERVE_ENGINE_ONNX_IMPORT_H_
#define RNNSERVE_ENGINE_ONNX_IMPORT_H_

#include <string>

#include "server/common/status.h"
#include "server/engine/model_spec.h"

namespace rnnserve::engine {

// Imports a serialized ONNX ModelProto. `what` names the source in error
// messages (e.g. a path). The returned spec has passed ValidateModelSpec.
StatusOr<ModelSpec> ImportOnnxModel(const std::string& bytes,
                                    const std::string& what);

// Reads `path` (NOT_FOUND if it cannot be read) and imports it.
StatusOr<ModelSpec> ImportOnnxFile(const std::string& path);

}  // namespace rnnserve::engine

#endif  // RNNSERVE_ENGINE_ONNX_IMPORT_H_
