// ControlService: rnnserve.RnnserveControl (proto/rnnserve_service.proto),
// rnnserve's own RPCs beside the KServe V2 service: live recalibration.
//
// Recalibrate recomputes a model's int8 ranges from its reservoir of recent
// live inputs (serving/drift_monitor.h) with the model's calibration method
// and swaps the new model in without dropping requests
// (ModelScheduler::Recalibrate). It runs on a background thread, never on
// the gRPC callback thread. With an empty model_version every served
// version is recalibrated.
//
// Threads: shared by every gRPC thread; no state of its own.
#ifndef RNNSERVE_RPC_CONTROL_SERVICE_H_
#define RNNSERVE_RPC_CONTROL_SERVICE_H_

#include <functional>

#include "proto/rnnserve_service.grpc.pb.h"
#include "server/serving/model_manager.h"

namespace rnnserve::rpc {

class ControlService final : public rnnserve::RnnserveControl::CallbackService {
 public:
  struct Options {
    serving::ModelManager* manager = nullptr;  // not owned
    // Runs a blocking job off the gRPC threads.
    std::function<void(std::function<void()>)> run_in_background;
  };

  explicit ControlService(const Options& options) : options_(options) {}

  grpc::ServerUnaryReactor* Recalibrate(
      grpc::CallbackServerContext* context,
      const rnnserve::RecalibrateRequest* request,
      rnnserve::RecalibrateResponse* response) override;

 private:
  const Options options_;
};

}  // namespace rnnserve::rpc

#endif  // RNNSERVE_RPC_CONTROL_SERVICE_H_
