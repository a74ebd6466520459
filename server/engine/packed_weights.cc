#include "server/engine/packed_weights.h"

#include <algorithm>

namespace rnnserve::engine {

void PackedWeights::PruneLocked() {
  copies_.erase(std::remove_if(copies_.begin(), copies_.end(),
                               [](const auto& c) { return c.second.expired(); }),
                copies_.end());
}

StatusOr<std::shared_ptr<const dnnl::memory>> PackedWeights::Get(
    const dnnl::memory::desc& md, const Pack& pack) {
  std::lock_guard<std::mutex> lock(mu_);
  PruneLocked();
  for (const auto& [desc, weak] : copies_) {
    if (desc != md) continue;
    if (auto live = weak.lock()) return live;
  }
  ASSIGN_OR_RETURN(dnnl::memory mem, pack(md));
  auto shared = std::make_shared<const dnnl::memory>(std::move(mem));
  copies_.emplace_back(md, shared);
  return shared;
}

int PackedWeights::live_copies() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(std::count_if(
      copies_.begin(), copies_.end(),
      [](const auto& c) { return !c.second.expired(); }));
}

int64_t PackedWeights::live_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t bytes = 0;
  for (const auto& [desc, weak] : copies_) {
    if (!weak.expired()) bytes += static_cast<int64_t>(desc.get_size());
  }
  return bytes;
}

}  // namespace rnnserve::engine
