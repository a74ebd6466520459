// Fuzzes ModelInfer request decoding (server/rpc/tensor_codec.h): the input
// is a serialized inference::ModelInferRequest, as it arrives off the wire.
// Bytes that are not a valid message stop at ParseFromArray, as in gRPC;
// every message that parses is decoded against three models built in code
// (fuzz_models.h):
//   token     INT64/INT32 ids [N, T], vocabulary 10, max_sequence_length 64
//   feature   FP32 [N, T, 3], last step only, max_sequence_length 64
//   fixed_t   the feature model with T fixed to 4 by its config dims
//
// Invariants on every request the codec accepts: N >= 1, 1 <= T <=
// max_sequence_length (and == 4 for fixed_t), exactly N*T ids in
// [0, vocab) or N*T*F finite features, and the response encoded for it
// (raw or typed, as the request was) holds the advertised output count.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "proto/grpc_service.pb.h"
#include "server/config/model_config.h"
#include "server/rpc/tensor_codec.h"
#include "tests/fuzz/fuzz_models.h"

namespace {

namespace config = rnnserve::config;
namespace engine = rnnserve::engine;

constexpr int kMaxSteps = 64;

struct FuzzModel {
  const char* name;
  engine::ModelSpec spec;
  config::ModelConfig config;
};

[[noreturn]] void Fail(const char* model, const char* what) {
  std::fprintf(stderr, "model_infer_fuzz: invariant broken (%s model): %s\n",
               model, what);
  std::abort();
}

std::vector<FuzzModel> MakeModels() {
  config::ModelConfig defaults;
  defaults.max_sequence_length = kMaxSteps;
  std::vector<FuzzModel> models;
  for (const auto& [name, spec] :
       {std::pair{"token", rnnserve::fuzz::TokenSpec()},
        std::pair{"feature", rnnserve::fuzz::FeatureSpec()}}) {
    models.push_back(
        {name, spec, config::InferModelConfig(spec, name, false, defaults)});
  }
  FuzzModel fixed = models[1];
  fixed.name = "fixed_t";
  fixed.config.name = "fixed_t";
  fixed.config.inputs[0].dims = {-1, 4, rnnserve::fuzz::kFeatures};
  models.push_back(fixed);
  for (FuzzModel& m : models) {
    if (!config::CompleteModelConfig(m.spec, &m.config).ok()) {
      std::fprintf(stderr, "model_infer_fuzz: bad built-in model %s\n", m.name);
      std::abort();
    }
  }
  return models;
}

void CheckDecoded(const FuzzModel& m,
                  const inference::ModelInferRequest& request,
                  const rnnserve::rpc::DecodedRequest& decoded) {
  const bool tokens = m.spec.input_kind == engine::InputKind::kTokenIds;
  if (decoded.batch < 1 || decoded.steps < 1) Fail(m.name, "N or T below 1");
  if (decoded.steps > m.config.max_sequence_length) {
    Fail(m.name, "T above max_sequence_length");
  }
  if (m.config.inputs[0].dims[1] > 0 &&
      decoded.steps != m.config.inputs[0].dims[1]) {
    Fail(m.name, "T differs from the config's fixed T");
  }
  const int64_t rows = int64_t{decoded.batch} * decoded.steps;
  if (tokens) {
    if (static_cast<int64_t>(decoded.tokens.size()) != rows ||
        !decoded.features.empty()) {
      Fail(m.name, "token count != N*T");
    }
    for (int64_t id : decoded.tokens) {
      if (id < 0 || id >= m.spec.embedding.vocab_size) {
        Fail(m.name, "token id outside the vocabulary");
      }
    }
  } else {
    if (static_cast<int64_t>(decoded.features.size()) !=
            rows * m.spec.feature_size ||
        !decoded.tokens.empty()) {
      Fail(m.name, "feature count != N*T*F");
    }
    for (float f : decoded.features) {
      if (!std::isfinite(f)) Fail(m.name, "non-finite feature accepted");
    }
  }

  // The answer the server would send (zeros; the codec does not read them).
  std::vector<int64_t> shape = {decoded.batch};
  if (!m.spec.last_step_only) shape.push_back(decoded.steps);
  shape.push_back(m.spec.output_size());
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  const std::vector<float> output(static_cast<size_t>(count), 0.0f);
  inference::ModelInferResponse response;
  rnnserve::rpc::EncodeInferResponse(request, m.config, 1, shape, output.data(),
                                     decoded.raw, &response);
  if (response.outputs_size() != 1) Fail(m.name, "response without one output");
  const int64_t sent =
      decoded.raw
          ? static_cast<int64_t>(response.raw_output_contents(0).size()) / 4
          : response.outputs(0).contents().fp32_contents_size();
  if (sent != count) Fail(m.name, "response output count != shape product");
}

}  // namespace

// protobuf logs each proto3 string with invalid UTF-8 that it refuses to
// parse; the refusal is the behaviour under test, the log line only noise.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<FuzzModel>* const models =
      new std::vector<FuzzModel>(MakeModels());
  inference::ModelInferRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  (void)rnnserve::rpc::ParseModelVersion(request.model_version(),
                                         "model_version");
  for (const FuzzModel& m : *models) {
    rnnserve::StatusOr<rnnserve::rpc::DecodedRequest> decoded =
        rnnserve::rpc::DecodeInferRequest(request, m.config, m.spec);
    if (!decoded.ok()) {
      if (decoded.status().message().empty()) {
        Fail(m.name, "error without a message");
      }
      continue;
    }
    CheckDecoded(m, request, *decoded);
  }
  return 0;
}
