// Tensor codec: KServe V2 / Open Inference Protocol messages <-> engine
// arrays, with every check a request needs before it may join a batch.
//
// Decoding validates a ModelInferRequest completely against the model it
// names, so that a bad request is refused on its own (INVALID_ARGUMENT with a
// message naming the field, e.g. "inputs[0].shape[1]: 4096 steps exceed the
// model's max_sequence_length 2048") and can never fail, or change, the batch
// it would have joined: names, datatypes, shapes, byte lengths, NaN/Inf
// features and out-of-vocabulary token ids are all checked here, not in the
// engine.
//
// Accepted data (SPEC §3): FP32 features [N, T, F] for feature models; INT64
// or INT32 token ids [N, T] for token (embedding) models, whatever dtype the
// config advertises (INT32 is widened). Data comes either in the typed
// `contents` field matching the datatype (fp32_contents, int64_contents,
// int_contents) or in `raw_input_contents` (little-endian, no padding), not
// both. The model has exactly one data input and one output; the recurrent
// state is kept by the server (sequence batching), never sent.
//
// Request parameters understood (Triton's names):
//   sequence_id     int64_param / uint64_param / numeric string_param; 0 or
//                   absent means "not part of a sequence"
//   sequence_start  bool_param
//   sequence_end    bool_param
//   timeout         int64_param, microseconds; a deadline relative to arrival
//                   (the tighter of it and the gRPC deadline applies)
// Other parameters are ignored, as Triton does.
//
// Encoding answers in the form the request used: raw_output_contents when
// the request sent raw_input_contents (Triton's behaviour), typed
// fp32_contents otherwise, so clients of either style read it unchanged.
//
// Thread-safe: pure functions.
#ifndef RNNSERVE_RPC_TENSOR_CODEC_H_
#define RNNSERVE_RPC_TENSOR_CODEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proto/grpc_service.pb.h"
#include "server/common/status.h"
#include "server/config/model_config.h"
#include "server/engine/model_spec.h"

namespace rnnserve::rpc {

// Triton's sequence-batching parameters of one request.
struct SequenceParams {
  uint64_t id = 0;  // 0: the request is not part of a sequence
  bool start = false;
  bool end = false;
};

// A ModelInferRequest checked and converted to engine arrays (batch-major).
struct DecodedRequest {
  int batch = 0;  // N >= 1
  int steps = 0;  // T >= 1
  std::vector<float> features;  // [N][T][F] for feature models, else empty
  std::vector<int64_t> tokens;  // [N][T] for token models, else empty
  SequenceParams sequence;
  // From the `timeout` parameter; unset when absent (or 0).
  std::optional<int64_t> timeout_us;
  // True when the input came as raw_input_contents (answer raw too).
  bool raw = false;
};

// Decodes `request` for the model described by `config` (its inputs,
// outputs and max_sequence_length) and `spec` (feature size, vocabulary).
// The model name and version are not checked here (the caller resolved
// them). Errors are INVALID_ARGUMENT naming the field:
//   inputs                 not exactly one input
//   inputs[0].name         not the model's input name
//   inputs[0].datatype     not accepted for this model
//   inputs[0].shape        wrong rank, N < 1 or above INT_MAX, T < 1, T above
//                          max_sequence_length, T not the config's fixed T,
//                          F not the model's, or an element count overflow
//   inputs[0].contents     wrong element count, both contents and raw given,
//                          or contents in a field other than the datatype's
//   raw_input_contents     count differs from inputs, or byte length wrong
//   inputs[0] element k    NaN/Inf feature, token id outside [0, vocab)
//   outputs[i].name        a requested output the model does not have
//   parameters.<name>      wrong type or value of a parameter above
StatusOr<DecodedRequest> DecodeInferRequest(
    const inference::ModelInferRequest& request,
    const config::ModelConfig& config, const engine::ModelSpec& spec);

// Fills `response` with the result of `request` run on version `version`
// of the model `config` describes: model_name, model_version, the request's
// id, and the model's output tensor (name and FP32 datatype from config,
// `shape`, `data` holding the product of `shape` floats), raw when `raw`.
// `response` is cleared first. Parameters are the caller's to add.
void EncodeInferResponse(const inference::ModelInferRequest& request,
                         const config::ModelConfig& config, int64_t version,
                         const std::vector<int64_t>& shape, const float* data,
                         bool raw, inference::ModelInferResponse* response);

// A request's model version string: "" lets the version policy pick
// (nullopt); otherwise decimal digits. INVALID_ARGUMENT naming `field`.
StatusOr<std::optional<int64_t>> ParseModelVersion(const std::string& text,
                                                   const char* field);

}  // namespace rnnserve::rpc

#endif  // RNNSERVE_RPC_TENSOR_CODEC_H_
