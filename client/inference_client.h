// InferenceClient: a C++ client of rnnserve (or any KServe V2 / Open Inference
// Protocol server with Triton's streaming and repository extensions).
//
// One InferenceClient owns one gRPC channel to one server address. Every call
// is blocking and returns a Status (or StatusOr) whose code is the gRPC code
// of the failed call and whose message is the server's message, so a caller
// can tell NOT_FOUND (unknown model) from INVALID_ARGUMENT (bad tensor) from
// UNAVAILABLE (no server). Nothing here throws.
//
// Tensors travel as `raw_input_contents` (little-endian, no padding): FP32
// features [N, T, F], or INT64 / INT32 token ids [N, T]. The input is an
// NpyArray (server/common/npy.h) because that is what the data files hold.
// The answer's single output is returned as floats with its shape, whether
// the server sent it raw or in typed `fp32_contents`.
//
// Thread safety: all methods may be called concurrently from many threads;
// gRPC stubs are thread-safe and the only shared mutable state (the cache of
// model input names) is guarded by a mutex.
#ifndef RNNSERVE_CLIENT_INFERENCE_CLIENT_H_
#define RNNSERVE_CLIENT_INFERENCE_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "proto/grpc_service.grpc.pb.h"
#include "proto/grpc_service.pb.h"
#include "proto/health.grpc.pb.h"
#include "proto/rnnserve_service.grpc.pb.h"
#include "client/sequence_chunks.h"
#include "server/common/npy.h"
#include "server/common/status.h"

namespace rnnserve::client {

// Triton's sequence-batching parameters; id 0 means "not part of a sequence".
struct SequenceParams {
  uint64_t id = 0;
  bool start = false;
  bool end = false;
};

// One ModelInfer call.
struct InferRequest {
  std::string model;
  std::string version;  // empty: the server's choice (latest)
  // Name of the model's input tensor; empty: looked up once through
  // ModelMetadata and cached per (model, version).
  std::string input_name;
  // FP32 [N, T, F], or INT64 / INT32 [N, T]. Sent as raw_input_contents.
  NpyArray input;
  std::string id;  // optional request id, echoed by the server
  SequenceParams sequence;
};

// The answer to one ModelInfer call (or one stream chunk).
struct InferResult {
  std::string model_name;
  std::string model_version;
  std::string id;
  std::string output_name;
  std::string output_datatype;
  std::vector<int64_t> shape;
  std::vector<float> data;  // product(shape) floats, C order
  // Response parameters as sent by the server (rnnserve sends "batch_size",
  // the size of the batch the request was computed in).
  std::map<std::string, inference::InferParameter> parameters;

  // The "batch_size" response parameter when present and numeric.
  std::optional<int64_t> batch_size() const;
  NpyArray ToNpy() const { return NpyArray::FromFloat(shape, data); }
};

// A whole sequence streamed in chunks over one ModelStreamInfer stream.
struct StreamRequest {
  std::string model;
  std::string version;
  std::string input_name;  // as in InferRequest
  // One sequence: [1, T, F] / [1, T] or, without the batch dimension,
  // [T, F] / [T] (a leading 1 is added). Sent in chunks of `chunk_steps`.
  NpyArray sequence;
  int64_t chunk_steps = 16;
  // Must be non-zero: the server keeps the recurrent state under this id.
  uint64_t sequence_id = 1;
  std::string id_prefix;  // chunk k gets request id "<id_prefix>k" if set
};

// Chunk k of the `n` chunks of `request` (its steps `range` of `sequence`,
// the request's sequence with the batch dimension): sequence_start on the
// first, sequence_end on the last, request id "<id_prefix>k" if set.
InferRequest StreamChunkRequest(const StreamRequest& request,
                                const NpyArray& sequence, StepRange range,
                                size_t k, size_t n);

struct StreamResult {
  // The chunks' outputs concatenated along T (the output's axis 1).
  InferResult output;
  // Per chunk, in order: time from writing the chunk to reading its answer.
  std::vector<double> chunk_latency_ms;
  std::vector<std::optional<int64_t>> chunk_batch_size;
};

// grpc.health.v1 serving status.
enum class HealthStatus { kUnknown, kServing, kNotServing, kServiceUnknown };
const char* HealthStatusName(HealthStatus status);  // "SERVING", ...

// One row of RepositoryIndex.
struct ModelIndexEntry {
  std::string name;
  std::string version;
  std::string state;   // READY, UNAVAILABLE, LOADING, ...
  std::string reason;  // why not ready, when the server says
};

class InferenceClient {
 public:
  struct Options {
    // HOST:PORT (or any gRPC target such as unix:/path).
    std::string address = "127.0.0.1:8001";
    // TLS is used when any tls_* field is set. root_ca_file: PEM
    // bundle that signed the server (empty: the system roots). cert_file and
    // key_file (both or neither): the client's identity for mutual TLS.
    std::string tls_root_ca_file;
    std::string tls_cert_file;
    std::string tls_key_file;
    // Name checked against the server certificate instead of the host in
    // `address` (for test certificates issued to "localhost" etc.).
    std::string tls_server_name_override;
    // Largest message sent or received; a [64, 1024, 97] FP32 answer is
    // 25 MB, above gRPC's 4 MB default, hence the larger default.
    int max_message_bytes = 256 * 1024 * 1024;
    // Deadline of every unary call; a stream gets timeout x its chunk count.
    // Zero or negative: no deadline.
    std::chrono::milliseconds timeout{30000};
  };

  // Builds the channel; does not connect (gRPC connects on the first call),
  // so a server that is down shows up as UNAVAILABLE on the first call.
  // INVALID_ARGUMENT for an empty address, unreadable TLS files, or a client
  // certificate without its key.
  static StatusOr<std::unique_ptr<InferenceClient>> Create(
      const Options& options);

  StatusOr<bool> ServerLive();
  StatusOr<bool> ServerReady();
  StatusOr<bool> ModelReady(const std::string& name,
                            const std::string& version = "");
  // grpc.health.v1.Health/Check; "" asks about the whole server.
  StatusOr<HealthStatus> Health(const std::string& service = "");
  StatusOr<inference::ServerMetadataResponse> ServerMetadata();
  StatusOr<inference::ModelMetadataResponse> ModelMetadata(
      const std::string& name, const std::string& version = "");
  StatusOr<std::vector<ModelIndexEntry>> RepositoryIndex(
      bool ready_only = false);
  Status LoadModel(const std::string& name);
  Status UnloadModel(const std::string& name);

  // rnnserve.RnnserveControl/Recalibrate (an rnnserve extension): the server
  // recomputes the model's int8 quantization ranges from its reservoir of
  // recent live inputs, with the model's calibration method, and swaps the
  // recalibrated model in without dropping requests. An empty version means
  // every version the server serves. Returns how many reservoir sequences
  // the new ranges came from. NOT_FOUND for an unknown model;
  // FAILED_PRECONDITION when the model is not int8 or its reservoir is empty
  // (no requests since it was loaded or last recalibrated); UNIMPLEMENTED
  // from a server without the service.
  StatusOr<uint64_t> Recalibrate(const std::string& model,
                                 const std::string& version = "");

  StatusOr<InferResult> Infer(const InferRequest& request);

  // Sends `request.sequence` as consecutive chunks of chunk_steps steps over
  // one ModelStreamInfer stream, one chunk in flight at a time:
  // sequence_start on the first chunk, sequence_end on the last, all with
  // sequence_id. A chunk the server refuses (error_message set) ends the
  // stream and comes back as an error naming the chunk; its code is the one
  // named at the start of the server's message ("NOT_FOUND: ...") when
  // there is one, else UNKNOWN.
  StatusOr<StreamResult> StreamSequence(const StreamRequest& request);

  const Options& options() const { return options_; }

 private:
  InferenceClient(Options options, std::shared_ptr<grpc::Channel> channel);

  void SetDeadline(grpc::ClientContext* context, int64_t calls = 1) const;
  // Resolves an empty input name through ModelMetadata (cached).
  StatusOr<std::string> InputName(const std::string& model,
                                  const std::string& version,
                                  const std::string& given);

  const Options options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_stub_;
  std::unique_ptr<rnnserve::RnnserveControl::Stub> control_stub_;

  std::mutex mu_;
  // (model, version) -> input tensor name.
  std::map<std::pair<std::string, std::string>, std::string>
      input_names_;  // guarded by mu_
};

// Converts a gRPC status to a Status with the same code and message.
Status FromGrpc(const grpc::Status& status);

// Builds the ModelInferRequest for `request` with the given input name
// (exposed for tests and for the perf tool, which reuses requests).
Status BuildInferRequest(const InferRequest& request,
                         const std::string& input_name,
                         inference::ModelInferRequest* proto);

// Reads the single output of `response` (raw or typed FP32) into a result.
StatusOr<InferResult> ParseInferResponse(
    const inference::ModelInferResponse& response);

}  // namespace rnnserve::client

#endif  // RNNSERVE_CLIENT_INFERENCE_CLIENT_H_
