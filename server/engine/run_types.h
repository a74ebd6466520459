// The engine's batch API: what one Run call takes and returns.
//
// Everything is batch-major ([N][T][...]); a model whose ONNX graph is
// sequence-major is converted at the boundary (see tensor_layout.h). Buffers
// passed in are borrowed for the duration of the call only.
#ifndef RNNSERVE_ENGINE_RUN_TYPES_H_
#define RNNSERVE_ENGINE_RUN_TYPES_H_

#include <cstdint>
#include <vector>

namespace rnnserve::engine {

// Recurrent state of one layer for a batch: h and (LSTM only) c, each laid
// out [dirs][N][H] like that layer's slice of PyTorch's h_n / c_n.
struct LayerState {
  std::vector<float> h;
  std::vector<float> c;  // empty for GRU
};

struct RunInput {
  int batch = 0;  // N >= 1
  int steps = 0;  // T >= 1; every sequence of the batch has this length
  const float* features = nullptr;  // [N][T][F] when the model takes features
  const int64_t* tokens = nullptr;  // [N][T] when the model takes token ids
  // Optional: one LayerState per layer to start from; nullptr = zero state.
  // Feeding a previous RunOutput::final_state here continues the sequences.
  const std::vector<LayerState>* initial_state = nullptr;
};

struct RunOutput {
  std::vector<int64_t> shape;   // [N][T][O], or [N][O] for last-step models
  std::vector<float> output;    // row-major, `shape`
  std::vector<LayerState> final_state;  // one per layer, after step T-1
};

}  // namespace rnnserve::engine

#endif  // RNNSERVE_ENGINE_RUN_TYPES_H_
