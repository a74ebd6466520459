#include "server/engine/tensor_layout.h"

#include <algorithm>
#include <string>

namespace rnnserve::engine {

namespace {

// Swaps the two outer axes of a [d0][d1][width] array.
template <typename T>
std::vector<T> SwapOuterAxes(const T* src, int d0, int d1, int width) {
  const size_t row = static_cast<size_t>(std::max(width, 0));
  std::vector<T> dst(static_cast<size_t>(std::max(d0, 0)) *
                     static_cast<size_t>(std::max(d1, 0)) * row);
  for (int a = 0; a < d0; ++a) {
    for (int b = 0; b < d1; ++b) {
      const T* from = src + (static_cast<size_t>(a) * d1 + b) * row;
      T* to = dst.data() + (static_cast<size_t>(b) * d0 + a) * row;
      std::copy(from, from + row, to);
    }
  }
  return dst;
}

}  // namespace

std::vector<float> SequenceToBatchMajor(const float* src, int steps, int batch,
                                        int width) {
  return SwapOuterAxes(src, steps, batch, width);
}
std::vector<int64_t> SequenceToBatchMajor(const int64_t* src, int steps,
                                          int batch, int width) {
  return SwapOuterAxes(src, steps, batch, width);
}
std::vector<float> BatchToSequenceMajor(const float* src, int batch, int steps,
                                        int width) {
  return SwapOuterAxes(src, batch, steps, width);
}
std::vector<int64_t> BatchToSequenceMajor(const int64_t* src, int batch,
                                          int steps, int width) {
  return SwapOuterAxes(src, batch, steps, width);
}

StatusOr<std::vector<LayerState>> SplitStates(const ModelSpec& spec, int batch,
                                              const float* h, const float* c) {
  if (h == nullptr) return InvalidArgument("SplitStates: h is null");
  if (batch <= 0) {
    return InvalidArgument("SplitStates: batch must be > 0, got " +
                           std::to_string(batch));
  }
  std::vector<LayerState> states;
  states.reserve(spec.layers.size());
  size_t h_offset = 0;
  size_t c_offset = 0;  // only LSTM layers have rows in c
  for (const RnnLayerSpec& layer : spec.layers) {
    const size_t n = static_cast<size_t>(layer.directions) * batch *
                     static_cast<size_t>(layer.hidden_size);
    LayerState state;
    state.h.assign(h + h_offset, h + h_offset + n);
    h_offset += n;
    if (layer.cell == CellType::kLstm) {
      if (c != nullptr) {
        state.c.assign(c + c_offset, c + c_offset + n);
      } else {
        state.c.assign(n, 0.0f);
      }
      c_offset += n;
    }
    states.push_back(std::move(state));
  }
  return states;
}

std::vector<float> MergeStates(const std::vector<LayerState>& states,
                               StateKind kind) {
  std::vector<float> merged;
  for (const LayerState& state : states) {
    const std::vector<float>& part =
        kind == StateKind::kHidden ? state.h : state.c;
    merged.insert(merged.end(), part.begin(), part.end());
  }
  return merged;
}

}  // namespace rnnserve::engine
