// RnnModel: a ModelSpec compiled for oneDNN, ready to run batches.
//
// Create() checks the spec, decides each layer's precision, and reorders the
// weights once into the layouts oneDNN's kernels want (format_tag::any); the
// packed weights are shared read-only by every call. Run() is thread-safe and
// may be called from any number of threads at once: oneDNN primitives are
// created on first use per (batch, steps) shape and cached (bounded LRU);
// each calling thread uses its own oneDNN stream and scratchpad.
//
// Precision: kF32 runs every layer with oneDNN's f32 kernels. kInt8 runs LSTM
// layers on oneDNN's int8 RNN primitive with the given QuantizationSpec and
// GRU layers on rnnserve's int8 GRU (oneDNN 2.6 has no int8 linear-before-
// reset GRU; gru_int8.h builds one from int8 matmuls); a layer the
// QuantizationSpec leaves unquantized runs in f32, as layer_precisions()
// reports. kBf16 runs every layer with bf16 data and
// weights (f32 bias and cell state) where the CPU supports it, and is
// UNIMPLEMENTED elsewhere. The embedding lookup and the Linear head run in
// f32 in every mode.
#ifndef RNNSERVE_ENGINE_RNN_MODEL_H_
#define RNNSERVE_ENGINE_RNN_MODEL_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "server/common/status.h"
#include "server/engine/model_spec.h"
#include "server/engine/quantization.h"
#include "server/engine/run_types.h"

namespace rnnserve::engine {

enum class Precision { kF32, kInt8, kBf16 };

// True when the CPU has int8 dot-product instructions (AVX-512 VNNI or
// AVX-VNNI). Without them oneDNN's int8 GEMMs use vpmaddubsw, whose s16
// pair sums saturate for |s8| near 127 with large u8 values; RnnModel then
// runs s8 weights on a 7-bit range (|s8| <= 63) so that no sum can saturate
// (255 * 63 * 2 < 32767), at the cost of one bit of weight resolution.
bool CpuHasInt8Vnni();
// True when oneDNN 2.6 can run bf16 RNN primitives here (AVX-512 and newer;
// natively with AVX512_BF16, emulated on plain AVX-512).
bool CpuSupportsBf16();
// oneDNN's name for the ISA it dispatches to ("avx2", "avx512_core_vnni"...).
std::string CpuIsaName();
const char* PrecisionName(Precision p);
StatusOr<Precision> ParsePrecision(const std::string& name);

struct RnnModelOptions {
  // The precision asked for; layers that cannot run in it fall back to f32
  // (see RnnModel::layer_precisions()).
  Precision precision = Precision::kF32;
  // Required for kInt8: the calibrated parameters (Calibrate() or an artifact).
  std::shared_ptr<const QuantizationSpec> quantization;
  // OpenMP threads each Run() call may use. 1 is the measured best for a
  // server: several callers with 1 thread each beat one caller with many, and
  // multi-threaded OpenMP collapses when another process holds a core.
  int intra_op_threads = 1;
  // Cached primitive sets (one per (batch, steps) shape); least recently used
  // shapes are dropped beyond this.
  int max_cached_shapes = 64;
  // Longest sequence and largest batch Run() accepts (bad input must get an
  // error, not an allocation of any size).
  int max_steps = 100000;
  int max_batch = 4096;
};

// Observes each layer's f32 input and output during RunObserved; used by
// calibration. Arrays are batch-major [N][T][C].
using LayerObserver = std::function<void(int layer, const float* input,
                                         int input_channels,
                                         const float* output,
                                         int output_channels, int steps,
                                         int batch)>;

class RnnModel {
 public:
  static StatusOr<std::unique_ptr<RnnModel>> Create(
      std::shared_ptr<const ModelSpec> spec, const RnnModelOptions& options);
  ~RnnModel();

  RnnModel(const RnnModel&) = delete;
  RnnModel& operator=(const RnnModel&) = delete;

  // Runs a batch. Input checks: batch and steps in range, token ids inside
  // the vocabulary, features finite, initial states of the right sizes; each
  // failure is INVALID_ARGUMENT naming what is wrong.
  Status Run(const RunInput& input, RunOutput* output) const;

  // f32-only: like Run, calling `observer` after every layer.
  Status RunObserved(const RunInput& input, RunOutput* output,
                     const LayerObserver& observer) const;

  const ModelSpec& spec() const { return *spec_; }
  Precision precision() const { return options_.precision; }
  // The precision each layer actually runs in.
  std::vector<Precision> layer_precisions() const;
  // Bytes of packed weights held (all layers and the head).
  int64_t weights_bytes() const;
  // Packed weight copies held now, all layers. A copy lives while a cached
  // shape's primitives use it (packed_weights.h), so this is bounded by
  // max_cached_shapes whatever shapes the model has seen.
  int packed_weight_copies() const;
  // Human-readable oneDNN implementation of each layer for `batch`x`steps`
  // (e.g. "brgemm:avx512_core_amx"), creating the primitives if needed.
  StatusOr<std::vector<std::string>> ImplementationInfo(int batch,
                                                        int steps) const;

 private:
  struct Impl;
  RnnModel(std::shared_ptr<const ModelSpec> spec, RnnModelOptions options,
           std::unique_ptr<Impl> impl);

  std::shared_ptr<const ModelSpec> spec_;
  RnnModelOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rnnserve::engine

#endif  // RNNSERVE_ENGINE_RNN_MODEL_H_
