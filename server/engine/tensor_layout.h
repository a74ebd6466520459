// Layout conversions at the boundary between a model's graph interface and
// the engine's batch-major API (run_types.h).
//
// Sequence tensors: nn.LSTM/nn.GRU with batch_first=False (and their ONNX
// exports) use sequence-major [T][N][X]; the engine always uses batch-major
// [N][T][X]. Token ids are the same with X = 1.
//
// State tensors: PyTorch's h0/c0/h_n/c_n are [layers*dirs][N][H], row
// layer*dirs + dir. The engine keeps one LayerState per layer holding
// [dirs][N][H], which is exactly that layer's contiguous slice, so splitting
// and merging are copies of consecutive blocks.
//
// All functions are pure and thread-compatible.
#ifndef RNNSERVE_ENGINE_TENSOR_LAYOUT_H_
#define RNNSERVE_ENGINE_TENSOR_LAYOUT_H_

#include <cstdint>
#include <vector>

#include "server/common/status.h"
#include "server/engine/model_spec.h"
#include "server/engine/run_types.h"

namespace rnnserve::engine {

// [T][N][X] -> [N][T][X]. `src` holds steps*batch*width elements.
std::vector<float> SequenceToBatchMajor(const float* src, int steps, int batch,
                                        int width);
std::vector<int64_t> SequenceToBatchMajor(const int64_t* src, int steps,
                                          int batch, int width);

// [N][T][X] -> [T][N][X]. `src` holds batch*steps*width elements.
std::vector<float> BatchToSequenceMajor(const float* src, int batch, int steps,
                                        int width);
std::vector<int64_t> BatchToSequenceMajor(const int64_t* src, int batch,
                                          int steps, int width);

// Splits PyTorch-style state tensors h [layers*dirs][N][H] and (LSTM only)
// c [layers*dirs][N][H] into one LayerState per layer of `spec`. `h` must not
// be null; a null `c` means zero cell states; `c` is ignored for GRU models.
// The caller guarantees each array holds layers*dirs*N*H floats. (For a
// hand-built stack mixing cells or sizes, h holds every layer's [dirs][N][H]
// block in order and c only the LSTM layers' blocks.)
StatusOr<std::vector<LayerState>> SplitStates(const ModelSpec& spec, int batch,
                                              const float* h, const float* c);

// Concatenates the layers' h (or c) into [layers*dirs][N][H], the inverse of
// SplitStates. Layers without a c (GRU) contribute nothing to the c tensor.
enum class StateKind { kHidden, kCell };
std::vector<float> MergeStates(const std::vector<LayerState>& states,
                               StateKind kind);

}  // namespace rnnserve::engine

#endif  // RNNSERVE_ENGINE_TENSOR_LAYOUT_H_
