// Packed copies of one weight tensor, by oneDNN memory descriptor, owned by
// the cached primitives that use them.
//
// A primitive asks for its weights in the layout it chose (format_tag::any).
// Some implementations encode the GEMM's N in that layout: oneDNN 2.6's
// reference RNN (what AVX2 machines get) packs its weights per batch size
// and per batch x steps, so every new request shape needs another copy. The
// copies must therefore live exactly as long as some cached primitive holds
// them: the list keeps weak references, a primitive keeps the strong one,
// and a copy is freed when the last primitive using it leaves its shape
// cache. Without that a server seeing many shapes kept every copy it ever
// made (measured: ~450 KB per batch size for the demo model, unbounded).
#ifndef RNNSERVE_ENGINE_PACKED_WEIGHTS_H_
#define RNNSERVE_ENGINE_PACKED_WEIGHTS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "server/common/status.h"

namespace rnnserve::engine {

class PackedWeights {
 public:
  // Makes the copy for `md` (a reorder from the user-layout weights).
  using Pack = std::function<StatusOr<dnnl::memory>(const dnnl::memory::desc&)>;

  // The live copy for `md`, packing one when there is none. Thread-safe;
  // packing runs under the lock, so two callers never pack one layout twice.
  StatusOr<std::shared_ptr<const dnnl::memory>> Get(
      const dnnl::memory::desc& md, const Pack& pack);

  // Copies held by some primitive now, and their bytes.
  int live_copies() const;
  int64_t live_bytes() const;

 private:
  void PruneLocked();

  mutable std::mutex mu_;
  std::vector<std::pair<dnnl::memory::desc, std::weak_ptr<const dnnl::memory>>>
      copies_;  // guarded by mu_
};

}  // namespace rnnserve::engine

#endif  // RNNSERVE_ENGINE_PACKED_WEIGHTS_H_
