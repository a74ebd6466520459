// Shared by the engine fuzz targets: what must hold for every ModelSpec an
// importer or loader accepts.
#ifndef RNNSERVE_TESTS_FUZZ_ENGINE_FUZZ_UTIL_H_
#define RNNSERVE_TESTS_FUZZ_ENGINE_FUZZ_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "server/engine/model_spec.h"
#include "server/engine/reference.h"
#include "server/engine/run_types.h"

namespace rnnserve::fuzz {

[[noreturn]] inline void Fail(const char* target, const char* what) {
  std::fprintf(stderr, "%s: invariant broken: %s\n", target, what);
  std::abort();
}

// An accepted spec is valid and runs: the plain C++ reference executes one
// sequence of two steps (zero features or token 0) without error and gives
// an output of the advertised size. Specs above `max_parameters` are only
// validated, to keep one run within milliseconds.
inline void CheckAcceptedSpec(const char* target, const engine::ModelSpec& spec,
                              int64_t max_parameters = 1 << 20) {
  if (!engine::ValidateModelSpec(spec).empty()) {
    Fail(target, "an accepted spec fails ValidateModelSpec");
  }
  if (spec.ParameterCount() > max_parameters) return;
  constexpr int kSteps = 2;
  std::vector<float> features;
  std::vector<int64_t> tokens;
  engine::RunInput in;
  in.batch = 1;
  in.steps = kSteps;
  if (spec.input_kind == engine::InputKind::kTokenIds) {
    tokens.assign(kSteps, 0);
    in.tokens = tokens.data();
  } else {
    features.assign(static_cast<size_t>(kSteps) * spec.feature_size, 0.0f);
    in.features = features.data();
  }
  engine::RunOutput out;
  if (!engine::ReferenceRun(spec, in, &out).ok()) {
    Fail(target, "ReferenceRun rejects an accepted spec");
  }
  const int64_t rows = spec.last_step_only ? 1 : kSteps;
  if (static_cast<int64_t>(out.output.size()) != rows * spec.output_size()) {
    Fail(target, "ReferenceRun output size != steps x output_size()");
  }
}

}  // namespace rnnserve::fuzz

#endif  // RNNSERVE_TESTS_FUZZ_ENGINE_FUZZ_UTIL_H_
