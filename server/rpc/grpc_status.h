// The one place internal Status values become grpc::Status (STYLE habit 3).
// Our codes are gRPC's numbers (server/common/status.h), so the mapping is
// one to one and the message travels unchanged.
#ifndef RNNSERVE_RPC_GRPC_STATUS_H_
#define RNNSERVE_RPC_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "server/common/status.h"

namespace rnnserve::rpc {

inline grpc::Status ToGrpcStatus(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      status.message());
}

}  // namespace rnnserve::rpc

#endif  // RNNSERVE_RPC_GRPC_STATUS_H_
