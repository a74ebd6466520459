#include "server/engine/sequence_io.h"

#include <cmath>

namespace rnnserve::engine {

StatusOr<SequenceSet> SequencesFromNpy(const ModelSpec& spec,
                                       const NpyArray& a,
                                       const std::string& what) {
  const bool tokens = spec.input_kind == InputKind::kTokenIds;
  const std::string layout = spec.batch_first ? "[N, T" : "[T, N";
  const std::string want =
      tokens ? layout + "] int64 or int32 token ids"
             : layout + ", " + std::to_string(spec.feature_size) + "] float32";
  auto mismatch = [&](const std::string& why) {
    return InvalidArgument(what + ": " + why + "; model input '" +
                           spec.input_name + "' expects " + want);
  };
  if (tokens) {
    if (a.dtype == NpyDtype::kFloat32) return mismatch("dtype is float32");
    if (a.shape.size() != 2) {
      return mismatch("shape " + a.ShapeString() + " has rank " +
                      std::to_string(a.shape.size()));
    }
  } else {
    if (a.dtype != NpyDtype::kFloat32) {
      return mismatch(std::string("dtype is ") + NpyDtypeName(a.dtype));
    }
    if (a.shape.size() != 3) {
      return mismatch("shape " + a.ShapeString() + " has rank " +
                      std::to_string(a.shape.size()));
    }
    if (a.shape[2] != spec.feature_size) {
      return mismatch("shape " + a.ShapeString() + " has " +
                      std::to_string(a.shape[2]) + " features");
    }
  }
  const int64_t N = spec.batch_first ? a.shape[0] : a.shape[1];
  const int64_t T = spec.batch_first ? a.shape[1] : a.shape[0];
  if (N < 1 || T < 1) return mismatch("shape " + a.ShapeString() + " is empty");
  if (T > (int64_t{1} << 30)) return mismatch("sequence too long");
  SequenceSet set;
  set.sequences = N;
  set.steps = static_cast<int>(T);
  const int64_t F = tokens ? 1 : spec.feature_size;
  auto src_index = [&](int64_t n, int64_t t) {
    return (spec.batch_first ? n * T + t : t * N + n) * F;
  };
  if (tokens) {
    const std::vector<int64_t> ids = a.ToInt64();
    set.tokens.resize(N * T);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t t = 0; t < T; ++t) set.tokens[n * T + t] = ids[src_index(n, t)];
    }
  } else {
    const float* x = a.f32();
    set.features.resize(N * T * F);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t t = 0; t < T; ++t) {
        const float* src = x + src_index(n, t);
        for (int64_t f = 0; f < F; ++f) {
          if (!std::isfinite(src[f])) {
            return InvalidArgument(what + ": non-finite value at sequence " +
                                   std::to_string(n) + ", step " +
                                   std::to_string(t) + ", feature " +
                                   std::to_string(f));
          }
          set.features[(n * T + t) * F + f] = src[f];
        }
      }
    }
  }
  return set;
}

RunInput SliceSequences(const ModelSpec& spec, const SequenceSet& set,
                        int64_t first, int count,
                        std::vector<LayerState>* states) {
  RunInput in;
  if (!set.initial_state.empty() && states) {
    states->assign(set.initial_state.size(), LayerState());
    for (size_t l = 0; l < set.initial_state.size() && l < spec.layers.size(); ++l) {
      const int D = spec.layers[l].directions, H = spec.layers[l].hidden_size;
      const LayerState& all = set.initial_state[l];
      auto rows = [&](const std::vector<float>& src, std::vector<float>* dst) {
        if (src.empty()) return;
        for (int d = 0; d < D; ++d) {
          const auto begin = src.begin() + (d * set.sequences + first) * H;
          dst->insert(dst->end(), begin, begin + static_cast<int64_t>(count) * H);
        }
      };
      rows(all.h, &(*states)[l].h);
      rows(all.c, &(*states)[l].c);
    }
    in.initial_state = states;
  }
  in.batch = count;
  in.steps = set.steps;
  if (spec.input_kind == InputKind::kTokenIds) {
    in.tokens = set.tokens.data() + first * set.steps;
  } else {
    in.features =
        set.features.data() + first * set.steps * spec.feature_size;
  }
  return in;
}

NpyArray OutputToNpy(const ModelSpec& spec, const std::vector<int64_t>& shape,
                     const std::vector<float>& y) {
  if (spec.batch_first || shape.size() != 3) {
    return NpyArray::FromFloat(shape, y);
  }
  const int64_t N = shape[0], T = shape[1], O = shape[2];
  std::vector<float> out(y.size());
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t o = 0; o < O; ++o) {
        out[(t * N + n) * O + o] = y[(n * T + t) * O + o];
      }
    }
  }
  return NpyArray::FromFloat({T, N, O}, out);
}

}  // namespace rnnserve::engine
