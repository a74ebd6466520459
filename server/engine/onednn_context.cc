#include "server/engine/onednn_context.h"

#include <algorithm>
#include <cmath>

namespace rnnserve::engine {

dnnl::engine& CpuEngine() {
  // Leaked on purpose: threads may still use it during static destruction.
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

OneDnnThreadContext& ThreadContext() {
  thread_local OneDnnThreadContext context;
  return context;
}

Status FromDnnl(const dnnl::error& e, const std::string& what) {
  if (e.status == dnnl_unimplemented) {
    return Unimplemented(what + ": oneDNN has no implementation (" +
                         e.what() + ")");
  }
  return Internal(what + ": oneDNN error: " + e.what());
}

void QuantizeU8(const float* x, int64_t n, float scale, float shift,
                uint8_t* out) {
  // Clamp first, then round half up: the values are non-negative, so this
  // is a plain truncation the compiler vectorizes (nearbyint does not).
  for (int64_t i = 0; i < n; ++i) {
    float v = scale * x[i] + shift;
    v = std::min(255.0f, std::max(0.0f, v));
    out[i] = static_cast<uint8_t>(static_cast<int>(v + 0.5f));
  }
}

}  // namespace rnnserve::engine
