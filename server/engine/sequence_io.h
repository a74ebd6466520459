// Converting .npy arrays to and from a model's inputs and outputs.
//
// Arrays are in the model's own layout: [N,T,F] / [N,T] for batch-first
// graphs, [T,N,F] / [T,N] for sequence-major ones. Inputs are checked against
// the model (dtype, rank, feature size, finiteness for features) and become a
// batch-major SequenceSet; outputs go back to the model's layout.
#ifndef RNNSERVE_ENGINE_SEQUENCE_IO_H_
#define RNNSERVE_ENGINE_SEQUENCE_IO_H_

#include <string>
#include <vector>

#include "server/common/npy.h"
#include "server/common/status.h"
#include "server/engine/model_spec.h"
#include "server/engine/quantization.h"
#include "server/engine/run_types.h"

namespace rnnserve::engine {

// `what` names the array in errors ("--input x.npy", "calibration.npy").
StatusOr<SequenceSet> SequencesFromNpy(const ModelSpec& spec,
                                       const NpyArray& array,
                                       const std::string& what);

// A RunInput over sequences [first, first + count) of `set`. When the set
// has initial states, their rows for those sequences are copied into
// `*states` (which the RunInput then points to); `states` may be null for
// sets without initial states.
RunInput SliceSequences(const ModelSpec& spec, const SequenceSet& set,
                        int64_t first, int count,
                        std::vector<LayerState>* states = nullptr);

// Output of several batches, concatenated on the batch axis, batch-major
// ([N,T,O] or [N,O]) -> the model's layout as a float32 array.
NpyArray OutputToNpy(const ModelSpec& spec, const std::vector<int64_t>& shape,
                     const std::vector<float>& batch_major);

}  // namespace rnnserve::engine

#endif  // RNNSERVE_ENGINE_SEQUENCE_IO_H_
