// The reactor of every unary call rnnserve serves. It behaves like gRPC's
// DefaultReactor and adds the ordering ThreadSanitizer cannot see inside
// Debian's uninstrumented gRPC: everything done before Finish (often on a
// batcher thread) happens before OnDone and gRPC's cleanup of the call's
// messages (on a gRPC thread). See server/common/tsan.h; without TSan the
// annotations compile to nothing. Owns itself: deleted in OnDone.

#ifndef RNNSERVE_RPC_UNARY_REACTOR_H_
#define RNNSERVE_RPC_UNARY_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <utility>

#include "server/common/tsan.h"

namespace rnnserve::rpc {

class UnaryReactor final : public grpc::ServerUnaryReactor {
 public:
  void Finish(grpc::Status status) {
    TsanHandOff(this);
    grpc::ServerUnaryReactor::Finish(std::move(status));
  }

  void OnDone() override {
    TsanTakeBack(this);
    delete this;
  }
};

}  // namespace rnnserve::rpc

#endif  // RNNSERVE_RPC_UNARY_REACTOR_H_
