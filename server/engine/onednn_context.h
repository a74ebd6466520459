// Process-wide oneDNN CPU engine and the per-thread execution context that
// every oneDNN user in the engine shares (RnnModel, the int8 GRU layer).
//
// oneDNN primitives are immutable and may be executed by several threads at
// once; streams and scratchpads are not shared: each calling thread gets its
// own from ThreadContext().
#ifndef RNNSERVE_ENGINE_ONEDNN_CONTEXT_H_
#define RNNSERVE_ENGINE_ONEDNN_CONTEXT_H_

#include <omp.h>

#include <cstdint>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "server/common/status.h"

namespace rnnserve::engine {

dnnl::engine& CpuEngine();

struct OneDnnThreadContext {
  dnnl::stream stream{CpuEngine()};
  std::vector<uint8_t> scratchpad;  // grown on demand, never shrunk
};
// The calling thread's context (thread_local).
OneDnnThreadContext& ThreadContext();

// A oneDNN exception as a Status: UNIMPLEMENTED when oneDNN has no
// implementation, INTERNAL otherwise; `what` says what was being done.
Status FromDnnl(const dnnl::error& e, const std::string& what);

// Sets the calling thread's OpenMP thread count for a scope. oneDNN sizes
// some per-thread buffers when a primitive is created and indexes them by
// thread when it runs: creation and execution must see the same count
// (measured: a primitive created with 2 threads and run with 1 wrote past a
// buffer inside gemm_s8x8s32 and corrupted the heap).
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int n) : saved_(omp_get_max_threads()) {
    omp_set_num_threads(n);
  }
  ~ScopedOmpThreads() { omp_set_num_threads(saved_); }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  int saved_;
};

// Quantizes f32 -> u8 on a grid: round(clamp(scale * x + shift, 0, 255)),
// ties rounded up.
void QuantizeU8(const float* x, int64_t n, float scale, float shift,
                uint8_t* out);

}  // namespace rnnserve::engine

#endif  // RNNSERVE_ENGINE_ONEDNN_CONTEXT_H_
