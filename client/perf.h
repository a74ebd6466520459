// A closed-loop load generator in the manner of Triton's perf_analyzer.
//
// `concurrency` worker threads share one InferenceClient (one channel); each
// sends a request, waits for its answer, and sends the next, for a warm-up
// period and then for `duration_s` seconds of measurement. Only requests that
// start and finish inside the measurement window are counted, so the last
// request of each worker (which ends after the window) is not.
//
// Inputs, when no --input file is given, are random valid data built from
// ModelMetadata: the input's datatype says token ids (INT64 / INT32, shape
// [N, T]) or features (FP32, [N, T, F]). Token ids are drawn uniformly from
// [0, vocab): the vocabulary size is not part of KServe V2 metadata, so it is
// an option (default 2, valid for every token model). Features are drawn
// uniformly from [-1, 1). N is `batch`, T is `steps` unless the metadata fixes
// them. With an input file, requests take `batch` consecutive rows of it in
// turn (wrapping around); T and F are the file's.
//
// Unary mode: each request is one ModelInfer of [batch, T, ...]; one
// inference is one request, and it carries `batch` sequences.
// Stream mode: each worker runs whole sequences [1, T, ...] through
// ModelStreamInfer in chunks of `chunk_steps` steps, a fresh stream and a
// sequence_id unique to the worker and sequence each time; one inference is
// one chunk (latency is per chunk), and a sequence counts when its last chunk
// is answered. A sequence that fails counts one error and no chunks.
//
// Latency percentiles are nearest-rank over successful requests.
#ifndef RNNSERVE_CLIENT_PERF_H_
#define RNNSERVE_CLIENT_PERF_H_

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "client/inference_client.h"
#include "server/common/npy.h"
#include "server/common/status.h"

namespace rnnserve::client {

struct PerfOptions {
  std::string model;
  std::string version;
  int concurrency = 1;
  // Measured seconds; longer runs give steadier tail percentiles.
  double duration_s = 10;
  // Unmeasured seconds first, for connection set-up and primitive caches.
  double warmup_s = 1;
  int64_t batch = 1;   // N per request (unary mode)
  int64_t steps = 32;  // T of generated inputs
  int64_t vocab = 2;   // token ids are drawn from [0, vocab)
  // Rows [N, T] / [N, T, F] to send instead of random data.
  std::optional<NpyArray> input;
  bool streams = false;
  int64_t chunk_steps = 8;
  uint64_t seed = 1;
};

// What one worker (or all of them, merged) observed in the window.
struct PerfCounts {
  std::vector<double> latencies_ms;  // successful requests / chunks
  int64_t sequences = 0;             // completed sequences
  std::map<std::string, int64_t> errors_by_code;
  std::string first_error;     // one server message, for the report
  int64_t batch_size_sum = 0;  // of "batch_size" response parameters
  int64_t batch_size_count = 0;

  void Merge(const PerfCounts& other);
};

struct PerfReport {
  std::string mode;  // "unary" or "streams"
  int concurrency = 0;
  double duration_s = 0;
  double throughput_infer_per_s = 0;
  double throughput_seq_per_s = 0;
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0;
  int64_t requests = 0;  // successful + failed
  int64_t errors = 0;
  std::map<std::string, int64_t> errors_by_code;
  std::string first_error;
  std::optional<double> mean_batch_size;  // absent when the server sent none
};

// Nearest-rank percentile (0 < p <= 100) of ascending `sorted`; 0 if empty.
double Percentile(const std::vector<double>& sorted, double p);

PerfReport MakePerfReport(PerfCounts counts, int concurrency, double duration_s,
                          const std::string& mode);

// One JSON object on one line with exactly the keys throughput_infer_per_s,
// throughput_seq_per_s, p50_ms, p90_ms, p99_ms, max_ms, requests, errors,
// errors_by_code, mean_batch_size (null when absent), concurrency, duration_s.
std::string FormatPerfJson(const PerfReport& report);
// Human-readable lines (see rnnserve_client_main.cc's help for the layout).
std::string FormatPerfText(const PerfReport& report);

// The shape and dtype of generated requests.
struct InputPlan {
  std::string input_name;
  NpyDtype dtype = NpyDtype::kInt64;
  std::vector<int64_t> shape;  // [N, T] or [N, T, F]
};

// Plans generated inputs of `rows` sequences from model metadata.
// INVALID_ARGUMENT when the metadata leaves a size open that the options do
// not give (an unknown F), or the datatype is not FP32/INT64/INT32.
StatusOr<InputPlan> PlanInputs(const inference::ModelMetadataResponse& metadata,
                               const PerfOptions& options, int64_t rows);

// Random data following `plan` (see the file comment for the distributions).
NpyArray RandomInput(const InputPlan& plan, int64_t vocab,
                     std::mt19937_64* rng);

// Runs the load and reports. Fails up front (no load sent) when the model's
// metadata cannot be read or the options do not fit it.
StatusOr<PerfReport> RunPerf(InferenceClient* client,
                             const PerfOptions& options);

}  // namespace rnnserve::client

#endif  // RNNSERVE_CLIENT_PERF_H_
