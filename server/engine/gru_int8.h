// GruInt8Layer: one int8 linear-before-reset GRU layer (PyTorch nn.GRU, ONNX
// GRU with linear_before_reset=1, oneDNN lbr_gru), built from oneDNN int8
// matmul primitives because oneDNN 2.6 has no int8 lbr_gru RNN primitive.
//
// Quantization is LayerQuantization's scheme (quantization.h) unchanged, so
// QuantizeLayer, Calibrate and the artifact format serve this layer as is:
//   layer input  u8 = clamp(round(data_scale * input_alpha * x + data_shift))
//   h            u8 = clamp(round(data_scale * h + data_shift))
//   w_layer      s8 = round((w_layer / input_alpha) * scale)
//   w_iter       s8 = round(w_iter * scale)
// with one multiplier per gate*H + unit (or one per layer), the same vector
// for both weight matrices and both directions. Hence, for every column k of
// the gate pre-activations,
//   W_ih x = sum_c w_layer_s8[c][k] (x_u8[c] - shift) / (scale[k] * data_scale)
// and likewise W_hh h with h_u8: one dequantization factor per column serves
// both products.
//
// Execution, per direction (forward, then backward on a bidirectional layer):
//   gx = x_u8 · W_ih_s8   one u8 x s8 -> s32 GEMM over a block of steps
//                         (all T steps unless T*N > options.block_rows)
//   per step t:
//     gh = h_u8 · W_hh_s8 one u8 x s8 -> s32 GEMM, [N,H] x [H,3H]
//     u  = σ(dq (gx_u + gh_u - zp Σw) + b_u),  r likewise,
//     n  = tanh(dq (gx_o - zp Σw_ih) + b_io
//               + r ⊙ (dq (gh_o - zp Σw_hh) + b_ho))
//     h' = (1 - u) ⊙ n + u ⊙ h   in f32; its u8 image feeds the next GEMM.
// The u8 zero point (data_shift) is removed exactly in s32 with precomputed
// weight column sums; gate math is f32.
//
// State: h is carried in f32 from step to step (the u ⊙ h term, y and h_n
// use it); only its u8 image, quantized like the layer data, feeds the
// recurrent GEMM. Rounding the carried state onto the grid instead (what
// oneDNN's int8 LSTM does with h; its c stays f32) was measured worse on a
// random 128 -> 256 GRU: mean |Δh| 0.0035 vs 0.0031 (AVX2, 7-bit weights;
// simulated with 8-bit weights 0.0027 vs 0.0021); and with long memory
// (update gate near 1) a rounded state stalls, as an increment under half a
// grid step rounds away at every step (simulated, b_u + 4, T = 200: max
// |Δh| 0.084 vs 0.011 on a 0.16 grid). The GEMMs are exact integer arithmetic
// and h0 enters as given, so y[T-1] == h_n, feeding h_n back as h0 continues a
// sequence bit for bit, and results do not depend on how T is split into
// calls or blocks.
//
// CPUs without int8 dot-product instructions (see CpuHasInt8Vnni): the s8
// weights are re-quantized to |s8| <= 63 with the multipliers scaled by
// 63/127 (as RnnModel's int8 LSTM does), because oneDNN's vpmaddubsw-based
// GEMM saturates its s16 pair sums with full-range weights.
//
// Ownership and threads: Create copies everything it needs from `layer` and
// `q`. Run is const and thread-safe: any number of threads may call it at
// once. Packed weights are shared read-only; oneDNN matmul primitives are
// created on first use per GEMM shape and cached (LRU, bounded); each call
// uses the calling thread's stream and scratchpad (ThreadContext()) and a
// per-thread work buffer. Neither Create nor Run changes the OpenMP thread
// count: the caller pins it (ScopedOmpThreads) around both, with the same
// count, because oneDNN sizes per-thread buffers at creation.
#ifndef RNNSERVE_ENGINE_GRU_INT8_H_
#define RNNSERVE_ENGINE_GRU_INT8_H_

#include <cstdint>
#include <memory>
#include <string>

#include "server/common/status.h"
#include "server/engine/model_spec.h"
#include "server/engine/quantization.h"

namespace rnnserve::engine {

struct GruInt8Options {
  // Cached matmul primitives (one per GEMM shape); the least recently used
  // are dropped beyond this. A call uses at most three shapes.
  int max_cached_shapes = 32;
  // Rows (steps * batch) of one input-projection GEMM. Longer inputs are
  // projected in equal blocks of whole steps, which bounds the s32 buffer to
  // block_rows * 3H values per calling thread and keeps it in cache until the
  // steps read it (measured, I128 H256 T50 N64: 512 rows 5-10 % faster than
  // one 3200-row GEMM). Results do not depend on it.
  int64_t block_rows = 512;
  // Use the AVX2 gate kernel when the CPU has AVX2 and FMA. false selects
  // the portable scalar kernel (for tests and for comparisons).
  bool allow_avx2 = true;
};

class GruInt8Layer {
 public:
  // `layer.cell` must be kGru and `q.quantized` true, with q's arrays sized
  // for `layer`; otherwise INVALID_ARGUMENT. Packs the weights and builds
  // the primitives of a one-step, one-sequence call, so oneDNN errors
  // surface here (as a Status, never an exception).
  static StatusOr<std::unique_ptr<GruInt8Layer>> Create(
      const RnnLayerSpec& layer, const LayerQuantization& q,
      const GruInt8Options& options = {});
  ~GruInt8Layer();

  GruInt8Layer(const GruInt8Layer&) = delete;
  GruInt8Layer& operator=(const GruInt8Layer&) = delete;

  // x:   [T][N][C] f32 layer input (sequence-major, not rescaled).
  // h0:  [D][N][H] f32 initial state, or nullptr for zeros.
  // y:   [T][N][D*H] f32 output, [forward, backward] per step.
  // h_n: [D][N][H] f32 final state (forward after step T-1, backward after
  //      step 0); may be nullptr.
  // Buffers are borrowed for the call and must not overlap, except that h0
  // and h_n may be the same array (continuing a sequence in place). x must
  // be finite (non-finite values quantize to an end of the grid).
  Status Run(const float* x, int steps, int batch, const float* h0, float* y,
             float* h_n) const;

  // Like Run for a u8 input already on this layer's input grid, i.e.
  // clamp(round(data_scale * input_alpha * x + data_shift)), such as the u8
  // output of a previous int8 layer when q.chained_u8_input. Writes y (f32)
  // and/or y_u8 ([T][N][D*H] u8, y quantized on this layer's grid exactly
  // as QuantizeU8(y, data_scale, data_shift)); either may be nullptr, not
  // both.
  Status RunU8(const uint8_t* x_u8, int steps, int batch, const float* h0,
               float* y, uint8_t* y_u8, float* h_n) const;

  // oneDNN's implementation of the GEMMs, the ISA of the gate kernel and the
  // weight range, e.g. "matmul gemm:jit (u8 x s8 -> s32), gates avx2,
  // weights |s8| <= 63 (no VNNI)".
  std::string ImplementationInfo() const;

  // Bytes of packed weights and per-column constants held (for
  // RnnModel::weights_bytes).
  int64_t weights_bytes() const;
  // Packed weight copies held now (see RnnModel::packed_weight_copies).
  int packed_weight_copies() const;

  int input_size() const;
  int hidden_size() const;
  int directions() const;

 private:
  struct Impl;
  explicit GruInt8Layer(std::unique_ptr<Impl> impl);
  Status RunImpl(const float* x, const uint8_t* x_u8, int steps, int batch,
                 const float* h0, float* y, uint8_t* y_u8, float* h_n) const;

  std::unique_ptr<Impl> impl_;
};

}  // namespace rnnserve::engine

#endif  // RNNSERVE_ENGINE_GRU_INT8_H_
