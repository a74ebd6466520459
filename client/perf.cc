#include "client/perf.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <sstream>
#include <thread>

#include "client/sequence_chunks.h"

namespace rnnserve::client {
namespace {

using Clock = std::chrono::steady_clock;

// Distinct random inputs each worker cycles through; generating per request
// would put the generator's cost inside the measured loop.
constexpr int kInputPoolSize = 8;

std::string Number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.4f", v);
  return buf;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

void CountError(const Status& status, PerfCounts* counts) {
  ++counts->errors_by_code[StatusCodeName(status.code())];
  if (counts->first_error.empty()) counts->first_error = status.ToString();
}

// Per-worker state: its own inputs and counters; nothing shared but the
// client and the clock window.
struct Worker {
  int index = 0;
  std::vector<NpyArray> pool;
  int64_t next_row = 0;
  PerfCounts counts;
};

}  // namespace

void PerfCounts::Merge(const PerfCounts& other) {
  latencies_ms.insert(latencies_ms.end(), other.latencies_ms.begin(),
                      other.latencies_ms.end());
  sequences += other.sequences;
  for (const auto& [code, n] : other.errors_by_code) errors_by_code[code] += n;
  if (first_error.empty()) first_error = other.first_error;
  batch_size_sum += other.batch_size_sum;
  batch_size_count += other.batch_size_count;
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  const size_t index =
      static_cast<size_t>(std::clamp(rank, 1.0, double(sorted.size()))) - 1;
  return sorted[index];
}

PerfReport MakePerfReport(PerfCounts counts, int concurrency, double duration_s,
                          const std::string& mode) {
  PerfReport r;
  r.mode = mode;
  r.concurrency = concurrency;
  r.duration_s = duration_s;
  std::sort(counts.latencies_ms.begin(), counts.latencies_ms.end());
  const auto ok = static_cast<int64_t>(counts.latencies_ms.size());
  for (const auto& [code, n] : counts.errors_by_code) r.errors += n;
  r.requests = ok + r.errors;
  r.errors_by_code = counts.errors_by_code;
  r.first_error = counts.first_error;
  if (duration_s > 0) {
    r.throughput_infer_per_s = static_cast<double>(ok) / duration_s;
    r.throughput_seq_per_s = static_cast<double>(counts.sequences) / duration_s;
  }
  r.p50_ms = Percentile(counts.latencies_ms, 50);
  r.p90_ms = Percentile(counts.latencies_ms, 90);
  r.p99_ms = Percentile(counts.latencies_ms, 99);
  r.max_ms = counts.latencies_ms.empty() ? 0 : counts.latencies_ms.back();
  if (counts.batch_size_count > 0) {
    r.mean_batch_size = static_cast<double>(counts.batch_size_sum) /
                        static_cast<double>(counts.batch_size_count);
  }
  return r;
}

std::string FormatPerfJson(const PerfReport& r) {
  std::ostringstream s;
  s << "{\"throughput_infer_per_s\": " << Number(r.throughput_infer_per_s)
    << ", \"throughput_seq_per_s\": " << Number(r.throughput_seq_per_s)
    << ", \"p50_ms\": " << Number(r.p50_ms)
    << ", \"p90_ms\": " << Number(r.p90_ms)
    << ", \"p99_ms\": " << Number(r.p99_ms)
    << ", \"max_ms\": " << Number(r.max_ms) << ", \"requests\": " << r.requests
    << ", \"errors\": " << r.errors << ", \"errors_by_code\": {";
  bool first = true;
  for (const auto& [code, n] : r.errors_by_code) {
    s << (first ? "" : ", ") << JsonString(code) << ": " << n;
    first = false;
  }
  s << "}, \"mean_batch_size\": "
    << (r.mean_batch_size ? Number(*r.mean_batch_size) : std::string("null"))
    << ", \"concurrency\": " << r.concurrency
    << ", \"duration_s\": " << Number(r.duration_s) << "}";
  return s.str();
}

std::string FormatPerfText(const PerfReport& r) {
  char buf[512];
  std::string out;
  std::snprintf(buf, sizeof(buf), "mode %s, concurrency %d, measured %.1f s\n",
                r.mode.c_str(), r.concurrency, r.duration_s);
  out += buf;
  std::snprintf(buf, sizeof(buf), "requests %lld, errors %lld\n",
                static_cast<long long>(r.requests),
                static_cast<long long>(r.errors));
  out += buf;
  std::snprintf(buf, sizeof(buf), "throughput %.1f infer/s, %.1f seq/s\n",
                r.throughput_infer_per_s, r.throughput_seq_per_s);
  out += buf;
  std::snprintf(buf, sizeof(buf),
                "latency ms: p50 %.3f, p90 %.3f, p99 %.3f, max %.3f\n",
                r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms);
  out += buf;
  if (r.mean_batch_size) {
    std::snprintf(buf, sizeof(buf), "mean server batch size %.2f\n",
                  *r.mean_batch_size);
  } else {
    std::snprintf(buf, sizeof(buf),
                  "mean server batch size n/a (no batch_size parameter)\n");
  }
  out += buf;
  if (!r.errors_by_code.empty()) {
    out += "errors by code:";
    for (const auto& [code, n] : r.errors_by_code)
      out += " " + code + " " + std::to_string(n);
    out += "\nfirst error: " + r.first_error + "\n";
  }
  return out;
}

StatusOr<InputPlan> PlanInputs(const inference::ModelMetadataResponse& metadata,
                               const PerfOptions& options, int64_t rows) {
  if (metadata.inputs_size() != 1) {
    return InvalidArgument(
        "model " + metadata.name() + " has " +
        std::to_string(metadata.inputs_size()) +
        " inputs; the load generator drives single-input models");
  }
  const auto& in = metadata.inputs(0);
  InputPlan plan;
  plan.input_name = in.name();
  size_t rank;
  if (in.datatype() == "FP32") {
    plan.dtype = NpyDtype::kFloat32;
    rank = 3;
  } else if (in.datatype() == "INT64" || in.datatype() == "INT32") {
    plan.dtype = in.datatype() == "INT64" ? NpyDtype::kInt64 : NpyDtype::kInt32;
    rank = 2;
  } else {
    return InvalidArgument("input " + in.name() + " has datatype " +
                           in.datatype() + "; expected FP32, INT64 or INT32");
  }
  if (in.shape_size() != static_cast<int>(rank)) {
    return InvalidArgument("input " + in.name() + " (" + in.datatype() +
                           ") has rank " + std::to_string(in.shape_size()) +
                           ", expected " + std::to_string(rank));
  }
  const int64_t fixed_n = in.shape(0);
  const int64_t fixed_t = in.shape(1);
  if (fixed_n > 0 && fixed_n != rows) {
    return InvalidArgument("input " + in.name() + " has a fixed batch of " +
                           std::to_string(fixed_n) + "; pass --batch " +
                           std::to_string(fixed_n));
  }
  plan.shape = {rows, fixed_t > 0 ? fixed_t : options.steps};
  if (plan.shape[1] < 1) return InvalidArgument("--seq must be >= 1");
  if (rank == 3) {
    if (in.shape(2) < 1) {
      return InvalidArgument(
          "input " + in.name() +
          " has a variable feature size; pass --input X.npy");
    }
    plan.shape.push_back(in.shape(2));
  }
  return plan;
}

NpyArray RandomInput(const InputPlan& plan, int64_t vocab,
                     std::mt19937_64* rng) {
  int64_t count = 1;
  for (int64_t d : plan.shape) count *= d;
  if (plan.dtype == NpyDtype::kFloat32) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> v(static_cast<size_t>(count));
    for (float& x : v) x = u(*rng);
    return NpyArray::FromFloat(plan.shape, v);
  }
  std::uniform_int_distribution<int64_t> u(0, std::max<int64_t>(vocab, 1) - 1);
  std::vector<int64_t> v(static_cast<size_t>(count));
  for (int64_t& x : v) x = u(*rng);
  NpyArray a = NpyArray::FromInt64(plan.shape, v);
  if (plan.dtype == NpyDtype::kInt32) {
    NpyArray narrow;
    narrow.dtype = NpyDtype::kInt32;
    narrow.shape = plan.shape;
    narrow.data.resize(v.size() * sizeof(int32_t));
    auto* dst = reinterpret_cast<int32_t*>(narrow.data.data());
    for (size_t i = 0; i < v.size(); ++i) dst[i] = static_cast<int32_t>(v[i]);
    return narrow;
  }
  return a;
}

StatusOr<PerfReport> RunPerf(InferenceClient* client,
                             const PerfOptions& options) {
  if (options.concurrency < 1)
    return InvalidArgument("--concurrency must be >= 1");
  if (!(options.duration_s > 0))
    return InvalidArgument("--duration must be > 0");
  if (options.warmup_s < 0) return InvalidArgument("--warmup must be >= 0");
  if (options.batch < 1) return InvalidArgument("--batch must be >= 1");
  if (options.streams && options.chunk_steps < 1)
    return InvalidArgument("--chunk must be >= 1");
  if (options.vocab < 1) return InvalidArgument("--vocab must be >= 1");

  ASSIGN_OR_RETURN(auto metadata,
                   client->ModelMetadata(options.model, options.version));
  const int64_t rows = options.streams ? 1 : options.batch;
  std::string input_name;
  std::vector<Worker> workers(static_cast<size_t>(options.concurrency));
  if (options.input) {
    if (metadata.inputs_size() != 1) {
      return InvalidArgument("model " + options.model +
                             " does not have exactly one input");
    }
    input_name = metadata.inputs(0).name();
    const NpyArray& x = *options.input;
    const size_t want_rank = x.dtype == NpyDtype::kFloat32 ? 3 : 2;
    if (x.shape.size() != want_rank || x.shape[0] < 1 || x.shape[1] < 1) {
      return InvalidArgument("--input of " +
                             std::string(NpyDtypeName(x.dtype)) + " must be " +
                             (want_rank == 3 ? "[N, T, F]" : "[N, T]") +
                             ", got " + x.ShapeString());
    }
    for (size_t w = 0; w < workers.size(); ++w) {
      // Workers start at different rows so that they do not send the same data.
      workers[w].next_row = static_cast<int64_t>(w) * rows;
    }
  } else {
    ASSIGN_OR_RETURN(InputPlan plan, PlanInputs(metadata, options, rows));
    input_name = plan.input_name;
    for (size_t w = 0; w < workers.size(); ++w) {
      std::mt19937_64 rng(options.seed * 1000003 + w);
      for (int i = 0; i < kInputPoolSize; ++i) {
        workers[w].pool.push_back(RandomInput(plan, options.vocab, &rng));
      }
    }
  }

  const auto start = Clock::now();
  const auto window_begin =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(options.warmup_s));
  const auto window_end =
      window_begin + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(options.duration_s));
  // Sequence ids: unique per process run, worker and sequence.
  const uint64_t id_base =
      (std::random_device{}() & 0xFFFFFu) * 1'000'000'000ull + 1;

  auto next_input = [&](Worker& w) -> NpyArray {
    if (options.input) {
      NpyArray rows_of_input = SliceRows(*options.input, w.next_row, rows);
      w.next_row = (w.next_row + rows) % options.input->shape[0];
      return rows_of_input;
    }
    return w.pool[static_cast<size_t>(w.next_row++ % kInputPoolSize)];
  };

  auto run_worker = [&](Worker& w) {
    uint64_t sequence = 0;
    while (true) {
      const auto sent = Clock::now();
      if (sent >= window_end) break;
      const bool measured = sent >= window_begin;
      Status error;
      if (!options.streams) {
        InferRequest request;
        request.model = options.model;
        request.version = options.version;
        request.input_name = input_name;
        request.input = next_input(w);
        auto result = client->Infer(request);
        const auto done = Clock::now();
        if (result.ok() && measured && done <= window_end) {
          w.counts.latencies_ms.push_back(
              std::chrono::duration<double, std::milli>(done - sent).count());
          w.counts.sequences += rows;
          if (auto b = result->batch_size()) {
            w.counts.batch_size_sum += *b;
            ++w.counts.batch_size_count;
          }
        }
        if (!result.ok()) error = result.status();
        if (!result.ok() && measured && done <= window_end)
          CountError(error, &w.counts);
      } else {
        StreamRequest request;
        request.model = options.model;
        request.version = options.version;
        request.input_name = input_name;
        request.sequence = next_input(w);
        request.chunk_steps = options.chunk_steps;
        request.sequence_id = id_base +
                              static_cast<uint64_t>(w.index) * 10'000'000ull +
                              ++sequence;
        auto result = client->StreamSequence(request);
        const auto done = Clock::now();
        if (result.ok() && measured && done <= window_end) {
          for (double ms : result->chunk_latency_ms)
            w.counts.latencies_ms.push_back(ms);
          for (const auto& b : result->chunk_batch_size) {
            if (!b) continue;
            w.counts.batch_size_sum += *b;
            ++w.counts.batch_size_count;
          }
          ++w.counts.sequences;
        }
        if (!result.ok()) error = result.status();
        if (!result.ok() && measured && done <= window_end)
          CountError(error, &w.counts);
      }
      // A server that is down answers at once; do not spin on it.
      if (error.code() == StatusCode::kUnavailable) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  };

  std::vector<std::thread> threads;
  for (size_t i = 0; i < workers.size(); ++i) {
    workers[i].index = static_cast<int>(i);
    threads.emplace_back(run_worker, std::ref(workers[i]));
  }
  for (auto& t : threads) t.join();

  PerfCounts all;
  for (const Worker& w : workers) all.Merge(w.counts);
  return MakePerfReport(std::move(all), options.concurrency, options.duration_s,
                        options.streams ? "streams" : "unary");
}

}  // namespace rnnserve::client
