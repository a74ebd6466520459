// ReferenceRun: a plain C++ executor for a ModelSpec, used as the oracle that
// the oneDNN paths are tested against (and in tests, itself checked against
// PyTorch goldens).
//
// It is deliberately simple: nested loops over the canonical layout of
// model_spec.h, double-precision accumulation, no oneDNN, no threads. It
// implements the formulas of the ONNX / PyTorch documentation:
//   LSTM  i = σ(Wi x + Ri h + bi), f = σ(..), c~ = tanh(..), o = σ(..),
//         c' = f ⊙ c + i ⊙ c~,  h' = o ⊙ tanh(c')
//   GRU (linear_before_reset)
//         u = σ(Wu x + Ru h + bu), r = σ(Wr x + Rr h + br),
//         n = tanh(Wo x + bWo + r ⊙ (Ro h + bRo)),  h' = (1 - u) ⊙ n + u ⊙ h
// with embedding lookup, bidirectional and stacked layers, last-step
// selection, the Linear head and Softmax / LogSoftmax on the last axis.
//
// Thread-safe: no shared state.
#ifndef RNNSERVE_ENGINE_REFERENCE_H_
#define RNNSERVE_ENGINE_REFERENCE_H_

#include "server/common/status.h"
#include "server/engine/model_spec.h"
#include "server/engine/run_types.h"

namespace rnnserve::engine {

// Runs `spec` on the batch-major input `in` and fills `out` (shape, output and
// one final LayerState per layer). Returns INVALID_ARGUMENT for an invalid
// spec, a missing or mis-sized input or initial state, or a token id outside
// [0, vocab_size). `out` is left unspecified on error.
Status ReferenceRun(const ModelSpec& spec, const RunInput& in, RunOutput* out);

}  // namespace rnnserve::engine

#endif  // RNNSERVE_ENGINE_REFERENCE_H_
