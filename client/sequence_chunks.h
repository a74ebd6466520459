// Cutting sequences into time chunks and gluing chunk outputs back together,
// for streaming a sequence through ModelStreamInfer.
//
// Arrays are C-ordered with time on axis 1: inputs [N, T] or [N, T, F],
// outputs [N, T, ...]. Pure functions; thread-safe.
#ifndef RNNSERVE_CLIENT_SEQUENCE_CHUNKS_H_
#define RNNSERVE_CLIENT_SEQUENCE_CHUNKS_H_

#include <cstdint>
#include <vector>

#include "server/common/npy.h"
#include "server/common/status.h"

namespace rnnserve::client {

// Steps [begin, end) of a sequence.
struct StepRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const StepRange& o) const {
    return begin == o.begin && end == o.end;
  }
};

// Consecutive ranges of `chunk` steps covering [0, steps); the last one is
// shorter when chunk does not divide steps. INVALID_ARGUMENT when steps < 1
// or chunk < 1.
StatusOr<std::vector<StepRange>> SplitSteps(int64_t steps, int64_t chunk);

// A single sequence as [1, T] / [1, T, F]: [T] and [T, F] get a leading 1;
// rank-2/3 arrays must have N == 1. INVALID_ARGUMENT otherwise.
StatusOr<NpyArray> AsSingleSequence(const NpyArray& array);

// Steps [range.begin, range.end) of every row of an [N, T, ...] array.
NpyArray SliceSteps(const NpyArray& array, StepRange range);

// Rows [first, first + count) of an [N, ...] array, wrapping around N.
NpyArray SliceRows(const NpyArray& array, int64_t first, int64_t count);

// Appends `chunk` ([N, t, ...] floats) to `whole` along axis 1; `whole` may
// be empty (shape unset) on the first call. INVALID_ARGUMENT when the other
// dimensions disagree.
Status AppendSteps(const std::vector<int64_t>& chunk_shape,
                   const std::vector<float>& chunk,
                   std::vector<int64_t>* whole_shape,
                   std::vector<float>* whole);

}  // namespace rnnserve::client

#endif  // RNNSERVE_CLIENT_SEQUENCE_CHUNKS_H_
