#include "server/rpc/control_service.h"

#include <memory>
#include <string>
#include <vector>

#include "server/common/log.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/tensor_codec.h"
#include "server/rpc/unary_reactor.h"

namespace rnnserve::rpc {

grpc::ServerUnaryReactor* ControlService::Recalibrate(
    grpc::CallbackServerContext* context,
    const rnnserve::RecalibrateRequest* request,
    rnnserve::RecalibrateResponse* response) {
  auto* reactor = new UnaryReactor;
  auto version = ParseModelVersion(request->model_version(), "model_version");
  if (!version.ok()) {
    reactor->Finish(ToGrpcStatus(version.status()));
    return reactor;
  }
  // The schedulers to recalibrate: one version, or every served one.
  std::vector<std::shared_ptr<serving::ModelScheduler>> targets;
  if (version->has_value()) {
    auto scheduler = options_.manager->Get(request->model_name(), *version);
    if (!scheduler.ok()) {
      reactor->Finish(ToGrpcStatus(scheduler.status()));
      return reactor;
    }
    targets.push_back(*scheduler);
  } else {
    for (const auto& s : options_.manager->Schedulers()) {
      if (s->model_ptr()->name == request->model_name()) targets.push_back(s);
    }
    if (targets.empty()) {
      auto scheduler = options_.manager->Get(request->model_name());
      reactor->Finish(ToGrpcStatus(
          scheduler.ok() ? Internal("model vanished") : scheduler.status()));
      return reactor;
    }
  }
  options_.run_in_background([reactor, response, targets] {
    uint64_t used = 0;
    for (const auto& scheduler : targets) {
      StatusOr<int64_t> n = scheduler->Recalibrate();
      if (!n.ok()) {
        reactor->Finish(ToGrpcStatus(n.status()));
        return;
      }
      used += static_cast<uint64_t>(*n);
      const auto model = scheduler->model_ptr();
      LogLine(LogSeverity::kInfo, "control",
              "model " + model->name + " v" + std::to_string(model->version) +
                  " recalibrated on " + std::to_string(*n) +
                  " live sequences (" +
                  engine::CalibrationMethodName(
                      model->config.calibration.method) +
                  ")");
    }
    response->set_samples_used(used);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace rnnserve::rpc
