#include "server/engine/gru_int8.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "server/engine/onednn_context.h"
#include "server/engine/packed_weights.h"
#include "server/engine/rnn_model.h"

namespace rnnserve::engine {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// Largest |s8| weight when the GEMM saturates s16 pair sums (no VNNI):
// 255 * 63 * 2 < 32767 (see CpuHasInt8Vnni).
constexpr float kSevenBitMax = 63.0f;

// The two GEMMs of the layer: K = C (input projection) or K = H (recurrent).
enum class GemmKind { kInput = 0, kIter = 1 };

// Everything the gate kernel reads and writes for one direction and one step.
// Rows are batch entries n; columns are gate * H + unit.
struct GateArgs {
  int hidden = 0;
  const int32_t* gx = nullptr;  // row n: gx + n * 3H, x_u8 · W_ih_s8 of step t
  const int32_t* gh = nullptr;  // row n: gh + n * 3H, h_u8 · W_hh_s8
  const float* dq = nullptr;    // [3H] 1 / (scale * data_scale)
  // Zero-point compensation in s32: zp * (column sums of the s8 weights).
  const int32_t* comp_ur = nullptr;  // [2H] zp * (Σ W_ih + Σ W_hh), u and r
  const int32_t* comp_xo = nullptr;  // [H]  zp * Σ W_ih, candidate
  const int32_t* comp_ho = nullptr;  // [H]  zp * Σ W_hh, candidate
  const float* bias = nullptr;       // [4H] b_u, b_r, b_io, b_ho
  float data_scale = 1.0f;
  float shift = 0.0f;
  int32_t zp = 0;
  float* h = nullptr;       // [N][H] f32 state: h_{t-1} in, h_t out
  uint8_t* h_u8 = nullptr;  // [N][H] out: h_t on the grid, the next GEMM's src
  float* y = nullptr;       // row n: y + n * y_stride; may be null
  int64_t y_stride = 0;
  uint8_t* y_u8 = nullptr;  // row n: y_u8 + n * y_stride; may be null
};

inline float SigmoidScalar(float v) { return 1.0f / (1.0f + std::exp(-v)); }

// Quantization must round exactly like QuantizeU8 (a product, then a sum,
// each rounded), or a state or input quantized there and here could differ
// by one step. GCC contracts a * b + c into an FMA in C++ whenever the target
// has one (the AVX2 kernel, and scalar code inlined into it); passing the
// product through an empty asm hides it from the contraction.
inline float ProductNoContract(float a, float b) {
  float p = a * b;
  asm("" : "+x"(p));
  return p;
}

inline uint8_t QuantizeOne(float v, float scale, float shift) {
  float q = std::nearbyint(ProductNoContract(scale, v) + shift);
  q = std::min(255.0f, std::max(0.0f, q));
  return static_cast<uint8_t>(q);
}

// Gate math for row n, units [j_begin, H). The reference formulation; also
// the tail of the AVX2 kernel when H is not a multiple of 8.
void GateRowScalar(const GateArgs& a, int n, int j_begin) {
  const int H = a.hidden;
  const int32_t* gx = a.gx + static_cast<int64_t>(n) * 3 * H;
  const int32_t* gh = a.gh + static_cast<int64_t>(n) * 3 * H;
  float* h = a.h + static_cast<int64_t>(n) * H;
  uint8_t* h_u8 = a.h_u8 + static_cast<int64_t>(n) * H;
  for (int j = j_begin; j < H; ++j) {
    const float u = SigmoidScalar(
        a.dq[j] * static_cast<float>(gx[j] + gh[j] - a.comp_ur[j]) + a.bias[j]);
    const float r =
        SigmoidScalar(a.dq[H + j] * static_cast<float>(gx[H + j] + gh[H + j] -
                                                       a.comp_ur[H + j]) +
                      a.bias[H + j]);
    const float xo =
        a.dq[2 * H + j] * static_cast<float>(gx[2 * H + j] - a.comp_xo[j]) +
        a.bias[2 * H + j];
    const float ho =
        a.dq[2 * H + j] * static_cast<float>(gh[2 * H + j] - a.comp_ho[j]) +
        a.bias[3 * H + j];
    const float cand = std::tanh(xo + r * ho);
    const float next = cand + u * (h[j] - cand);  // (1 - u) n + u h
    h[j] = next;
    const uint8_t q = QuantizeOne(next, a.data_scale, a.shift);
    h_u8[j] = q;
    if (a.y) a.y[n * a.y_stride + j] = next;
    if (a.y_u8) a.y_u8[n * a.y_stride + j] = q;
  }
}

void GateRowGeneric(const GateArgs& a, int n) { GateRowScalar(a, n, 0); }

// exp on 8 floats: Cody-Waite range reduction and Cephes' degree-6
// polynomial (relative error ~1e-7); inputs clamped to [-87, 87] so that
// 2^n stays a normal float.
__attribute__((target("avx2,fma"))) inline __m256 Exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)),
                    _mm256_set1_ps(87.0f));
  const __m256 n =
      _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r),
                      _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) inline __m256 Sigmoid8(__m256 v) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(
      one, _mm256_add_ps(one, Exp8(_mm256_sub_ps(_mm256_setzero_ps(), v))));
}

// tanh(v) = 1 - 2 / (exp(2v) + 1): absolute error ~1e-7, saturates cleanly.
__attribute__((target("avx2,fma"))) inline __m256 Tanh8(__m256 v) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 e = Exp8(_mm256_add_ps(v, v));
  return _mm256_sub_ps(
      one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
}

__attribute__((target("avx2,fma"))) inline __m256i Load8(const int32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// 8 int32 in [0, 255] -> 8 bytes at p.
__attribute__((target("avx2,fma"))) inline void StoreU8x8(__m256i v,
                                                          uint8_t* p) {
  const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(v),
                                       _mm256_extracti128_si256(v, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(w16, w16));
}

// clamp(round(scale * v + shift), 0, 255) as int32, rounded like QuantizeU8.
__attribute__((target("avx2,fma"))) inline __m256i Quantize8(__m256 v,
                                                             __m256 scale,
                                                             __m256 shift) {
  __m256 p = _mm256_mul_ps(scale, v);
  asm("" : "+x"(p));  // no FMA contraction, see ProductNoContract
  __m256 q = _mm256_add_ps(p, shift);
  // max first: a NaN becomes 0, as in QuantizeU8.
  q = _mm256_min_ps(_mm256_max_ps(q, _mm256_setzero_ps()),
                    _mm256_set1_ps(255.0f));
  return _mm256_cvtps_epi32(q);  // round half to even, like nearbyint
}

__attribute__((target("avx2,fma"))) void GateRowAvx2(const GateArgs& a, int n) {
  const int H = a.hidden;
  const int32_t* gx = a.gx + static_cast<int64_t>(n) * 3 * H;
  const int32_t* gh = a.gh + static_cast<int64_t>(n) * 3 * H;
  float* h = a.h + static_cast<int64_t>(n) * H;
  uint8_t* h_u8 = a.h_u8 + static_cast<int64_t>(n) * H;
  float* y = a.y ? a.y + n * a.y_stride : nullptr;
  uint8_t* y_u8 = a.y_u8 ? a.y_u8 + n * a.y_stride : nullptr;
  const __m256 data_scale = _mm256_set1_ps(a.data_scale);
  const __m256 shift = _mm256_set1_ps(a.shift);
  int j = 0;
  for (; j + 8 <= H; j += 8) {
    const __m256i su = _mm256_sub_epi32(
        _mm256_add_epi32(Load8(gx + j), Load8(gh + j)), Load8(a.comp_ur + j));
    const __m256 u = Sigmoid8(_mm256_fmadd_ps(_mm256_loadu_ps(a.dq + j),
                                              _mm256_cvtepi32_ps(su),
                                              _mm256_loadu_ps(a.bias + j)));
    const __m256i sr =
        _mm256_sub_epi32(_mm256_add_epi32(Load8(gx + H + j), Load8(gh + H + j)),
                         Load8(a.comp_ur + H + j));
    const __m256 r = Sigmoid8(_mm256_fmadd_ps(_mm256_loadu_ps(a.dq + H + j),
                                              _mm256_cvtepi32_ps(sr),
                                              _mm256_loadu_ps(a.bias + H + j)));
    const __m256 dq_o = _mm256_loadu_ps(a.dq + 2 * H + j);
    const __m256 xo =
        _mm256_fmadd_ps(dq_o,
                        _mm256_cvtepi32_ps(_mm256_sub_epi32(
                            Load8(gx + 2 * H + j), Load8(a.comp_xo + j))),
                        _mm256_loadu_ps(a.bias + 2 * H + j));
    const __m256 ho =
        _mm256_fmadd_ps(dq_o,
                        _mm256_cvtepi32_ps(_mm256_sub_epi32(
                            Load8(gh + 2 * H + j), Load8(a.comp_ho + j))),
                        _mm256_loadu_ps(a.bias + 3 * H + j));
    const __m256 cand = Tanh8(_mm256_fmadd_ps(r, ho, xo));
    const __m256 next = _mm256_fmadd_ps(
        u, _mm256_sub_ps(_mm256_loadu_ps(h + j), cand), cand);  // (1-u)n + u h
    _mm256_storeu_ps(h + j, next);
    const __m256i qi = Quantize8(next, data_scale, shift);
    StoreU8x8(qi, h_u8 + j);
    if (y) _mm256_storeu_ps(y + j, next);
    if (y_u8) StoreU8x8(qi, y_u8 + j);
  }
  if (j < H) GateRowScalar(a, n, j);
}

// QuantizeU8 (onednn_context.h) on 8 floats at a time, bit-identical to it.
__attribute__((target("avx2,fma"))) void QuantizeU8Avx2(const float* x,
                                                        int64_t n, float scale,
                                                        float shift,
                                                        uint8_t* out) {
  const __m256 s = _mm256_set1_ps(scale);
  const __m256 sh = _mm256_set1_ps(shift);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    StoreU8x8(Quantize8(_mm256_loadu_ps(x + i), s, sh), out + i);
  }
  for (; i < n; ++i) out[i] = QuantizeOne(x[i], scale, shift);
}

bool CpuHasAvx2Fma() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// Per-thread buffers of Run, grown on demand and reused across calls (the
// s32 block buffer is megabytes; allocating it per call costs page faults).
struct Workspace {
  std::vector<uint8_t> x;     // one block of quantized input
  std::vector<int32_t> gx;    // one block of the input projection
  std::vector<int32_t> gh;    // the recurrent projection of one step
  std::vector<float> h;       // the state of one direction
  std::vector<uint8_t> h_u8;  // and its u8 image
};

Workspace& ThreadWorkspace() {
  thread_local Workspace workspace;
  return workspace;
}

// One matmul primitive for one GEMM shape, with the packed weights of every
// direction in the layout it wants.
struct Matmul {
  dnnl::matmul primitive;
  dnnl::memory::desc src_md, dst_md, scratchpad_md;
  // One per direction; owned by the cached matmuls (packed_weights.h).
  std::vector<std::shared_ptr<const dnnl::memory>> weights;
  std::string impl;
};

}  // namespace

struct GruInt8Layer::Impl {
  int input_size = 0;
  int hidden = 0;
  int directions = 1;
  GruInt8Options options;
  float data_scale = 1.0f;
  float shift = 0.0f;
  int32_t zp = 0;
  float input_scale = 1.0f;  // data_scale * input_alpha
  bool seven_bit = false;    // weights re-quantized to |s8| <= 63
  bool avx2 = false;
  void (*gate_row)(const GateArgs&, int) = nullptr;
  void (*quantize)(const float*, int64_t, float, float, uint8_t*) = nullptr;

  // GEMM-layout s8 weights [dirs][K][3H] (row-major K x 3H per direction),
  // the user side of the reorders into each primitive's layout.
  std::vector<int8_t> w_input;
  std::vector<int8_t> w_iter;
  std::vector<float> dq;         // [3H], shared by directions
  std::vector<int32_t> comp_ur;  // [dirs][2H]
  std::vector<int32_t> comp_xo;  // [dirs][H]
  std::vector<int32_t> comp_ho;  // [dirs][H]
  std::vector<float> bias;       // [dirs][4H]
  dnnl::primitive_attr attr;     // user scratchpad

  // Packed weights by memory descriptor, per GEMM kind and direction.
  PackedWeights packed[2][2];

  std::mutex cache_mu;
  using Key = std::pair<int, int64_t>;  // (GemmKind, rows)
  std::list<Key> lru;                   // front = most recent; cache_mu
  std::map<Key, std::pair<std::shared_ptr<const Matmul>,
                          std::list<Key>::iterator>>
      cache;                    // guarded by cache_mu
  std::set<std::string> impls;  // every implementation built; cache_mu

  int64_t gates_width() const { return 3 * static_cast<int64_t>(hidden); }
  StatusOr<std::shared_ptr<const dnnl::memory>> Packed(
      GemmKind kind, int dir, const dnnl::memory::desc& md);
  StatusOr<std::shared_ptr<const Matmul>> Get(GemmKind kind, int64_t rows);
};

StatusOr<std::shared_ptr<const dnnl::memory>> GruInt8Layer::Impl::Packed(
    GemmKind kind, int dir, const dnnl::memory::desc& md) {
  auto pack = [&](const dnnl::memory::desc& md) -> StatusOr<dnnl::memory> {
    try {
      const int64_t K = kind == GemmKind::kInput ? input_size : hidden;
      const std::vector<int8_t>& w = kind == GemmKind::kInput ? w_input : w_iter;
      const dnnl::memory::desc user_md({K, gates_width()}, dt::s8, tag::ab);
      dnnl::memory user(user_md, CpuEngine(),
                        const_cast<int8_t*>(w.data()) + dir * K * gates_width());
      dnnl::memory mem(md, CpuEngine());
      dnnl::stream& s = ThreadContext().stream;
      dnnl::reorder(user, mem).execute(s, user, mem);
      s.wait();
      return mem;
    } catch (const dnnl::error& e) {
      return FromDnnl(e, "int8 GRU: packing weights");
    }
  };
  return packed[static_cast<int>(kind)][dir].Get(md, pack);
}

StatusOr<std::shared_ptr<const Matmul>> GruInt8Layer::Impl::Get(GemmKind kind,
                                                                int64_t rows) {
  const Key key(static_cast<int>(kind), rows);
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = cache.find(key);
    if (it != cache.end()) {
      lru.splice(lru.begin(), lru, it->second.second);
      return it->second.first;
    }
  }
  // Built outside the lock so that calls of cached shapes never wait for a
  // creation; two threads may race to build one shape, the loser's is dropped.
  auto m = std::make_shared<Matmul>();
  try {
    const int64_t K = kind == GemmKind::kInput ? input_size : hidden;
    m->src_md = dnnl::memory::desc({rows, K}, dt::u8, tag::ab);
    m->dst_md = dnnl::memory::desc({rows, gates_width()}, dt::s32, tag::ab);
    const dnnl::memory::desc weights_md({K, gates_width()}, dt::s8, tag::any);
    dnnl::matmul::primitive_desc pd(
        dnnl::matmul::desc(m->src_md, weights_md, m->dst_md), attr,
        CpuEngine());
    m->scratchpad_md = pd.scratchpad_desc();
    m->impl = pd.impl_info_str();
    m->primitive = dnnl::matmul(pd);
    for (int d = 0; d < directions; ++d) {
      ASSIGN_OR_RETURN(auto w, Packed(kind, d, pd.weights_desc()));
      m->weights.push_back(std::move(w));
    }
  } catch (const dnnl::error& e) {
    return FromDnnl(e, std::string("int8 GRU: ") +
                           (kind == GemmKind::kInput ? "input" : "recurrent") +
                           " matmul with " + std::to_string(rows) + " rows");
  }
  std::lock_guard<std::mutex> lock(cache_mu);
  impls.insert(m->impl);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.first;
  lru.push_front(key);
  cache.emplace(key, std::make_pair(m, lru.begin()));
  while (static_cast<int>(cache.size()) >
         std::max(2, options.max_cached_shapes)) {
    cache.erase(lru.back());
    lru.pop_back();
  }
  return std::shared_ptr<const Matmul>(m);
}

GruInt8Layer::GruInt8Layer(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

GruInt8Layer::~GruInt8Layer() = default;

int GruInt8Layer::packed_weight_copies() const {
  int copies = 0;
  for (const auto& kind : impl_->packed) {
    for (const auto& dir : kind) copies += dir.live_copies();
  }
  return copies;
}

int64_t GruInt8Layer::weights_bytes() const {
  const Impl& m = *impl_;
  int64_t bytes = 0;
  for (const auto& kind : m.packed) {
    for (const auto& dir : kind) bytes += dir.live_bytes();
  }
  bytes += static_cast<int64_t>(
      (m.dq.size() + m.bias.size()) * sizeof(float) +
      (m.comp_ur.size() + m.comp_xo.size() + m.comp_ho.size()) *
          sizeof(int32_t));
  return bytes;
}

int GruInt8Layer::input_size() const { return impl_->input_size; }
int GruInt8Layer::hidden_size() const { return impl_->hidden; }
int GruInt8Layer::directions() const { return impl_->directions; }

StatusOr<std::unique_ptr<GruInt8Layer>> GruInt8Layer::Create(
    const RnnLayerSpec& layer, const LayerQuantization& q,
    const GruInt8Options& options) {
  if (layer.cell != CellType::kGru) {
    return InvalidArgument(std::string("int8 GRU layer: cell is ") +
                           CellTypeName(layer.cell));
  }
  if (!q.quantized) {
    return InvalidArgument("int8 GRU layer: quantization says f32");
  }
  const int C = layer.input_size, H = layer.hidden_size, D = layer.directions;
  if (C < 1 || H < 1 || (D != 1 && D != 2)) {
    return InvalidArgument("int8 GRU layer: bad sizes (input " +
                           std::to_string(C) + ", hidden " + std::to_string(H) +
                           ", directions " + std::to_string(D) + ")");
  }
  const size_t G = 3 * static_cast<size_t>(H);
  auto size_error = [](const char* what, size_t got, size_t want) {
    return InvalidArgument("int8 GRU layer: " + std::string(what) + " has " +
                           std::to_string(got) + " values, expected " +
                           std::to_string(want));
  };
  if (layer.bias.size() != static_cast<size_t>(D) * 4 * H) {
    return size_error("bias", layer.bias.size(),
                      static_cast<size_t>(D) * 4 * H);
  }
  if (q.w_layer_s8.size() != D * C * G) {
    return size_error("w_layer_s8", q.w_layer_s8.size(), D * C * G);
  }
  if (q.w_iter_s8.size() != D * H * G) {
    return size_error("w_iter_s8", q.w_iter_s8.size(), D * H * G);
  }
  if (q.weight_scales.size() != 1 && q.weight_scales.size() != G) {
    return size_error("weight_scales", q.weight_scales.size(), G);
  }
  for (float s : q.weight_scales) {
    if (!std::isfinite(s) || s <= 0) {
      return InvalidArgument("int8 GRU layer: weight scale " +
                             std::to_string(s) + " is not finite and positive");
    }
  }
  if (!std::isfinite(q.data_scale) || q.data_scale <= 0 ||
      !std::isfinite(q.input_alpha) || q.input_alpha <= 0) {
    return InvalidArgument(
        "int8 GRU layer: data_scale and input_alpha must be "
        "finite and positive");
  }
  // The zero point is removed exactly in s32, so it must be an integer.
  if (!(q.data_shift >= 0 && q.data_shift <= 255) ||
      q.data_shift != std::nearbyint(q.data_shift)) {
    return InvalidArgument("int8 GRU layer: data_shift " +
                           std::to_string(q.data_shift) +
                           " is not an integer in [0, 255]");
  }

  auto impl = std::make_unique<Impl>();
  Impl& m = *impl;
  m.input_size = C;
  m.hidden = H;
  m.directions = D;
  m.options = options;
  m.options.block_rows = std::max<int64_t>(1, options.block_rows);
  m.data_scale = q.data_scale;
  m.shift = q.data_shift;
  m.zp = static_cast<int32_t>(q.data_shift);
  m.input_scale = q.data_scale * q.input_alpha;
  m.seven_bit = !CpuHasInt8Vnni();
  m.avx2 = options.allow_avx2 && CpuHasAvx2Fma();
  m.gate_row = m.avx2 ? GateRowAvx2 : GateRowGeneric;
  m.quantize = m.avx2 ? QuantizeU8Avx2 : QuantizeU8;

  // Effective weights and multipliers. Without VNNI the artifact's s8
  // values are mapped onto [-63, 63] and the multipliers shrink to match,
  // as RnnModel does for int8 LSTM.
  const float shrink = m.seven_bit ? kSevenBitMax / 127.0f : 1.0f;
  auto effective = [&](const std::vector<int8_t>& w) {
    std::vector<int8_t> out(w.size());
    for (size_t k = 0; k < w.size(); ++k) {
      out[k] = m.seven_bit ? static_cast<int8_t>(std::nearbyint(
                                 static_cast<float>(w[k]) * shrink))
                           : w[k];
    }
    return out;
  };
  m.w_input = effective(q.w_layer_s8);
  m.w_iter = effective(q.w_iter_s8);
  m.dq.resize(G);
  for (size_t k = 0; k < G; ++k) {
    const double scale =
        q.weight_scales.size() == 1 ? q.weight_scales[0] : q.weight_scales[k];
    m.dq[k] = static_cast<float>(
        1.0 / (scale * static_cast<double>(shrink) * q.data_scale));
  }
  m.comp_ur.resize(static_cast<size_t>(D) * 2 * H);
  m.comp_xo.resize(static_cast<size_t>(D) * H);
  m.comp_ho.resize(static_cast<size_t>(D) * H);
  for (int d = 0; d < D; ++d) {
    std::vector<int32_t> sum_x(G, 0), sum_h(G, 0);
    for (size_t c = 0; c < static_cast<size_t>(C); ++c) {
      const int8_t* row = &m.w_input[(d * C + c) * G];
      for (size_t k = 0; k < G; ++k) sum_x[k] += row[k];
    }
    for (size_t c = 0; c < static_cast<size_t>(H); ++c) {
      const int8_t* row = &m.w_iter[(d * H + c) * G];
      for (size_t k = 0; k < G; ++k) sum_h[k] += row[k];
    }
    for (int k = 0; k < 2 * H; ++k) {
      m.comp_ur[d * 2 * H + k] = m.zp * (sum_x[k] + sum_h[k]);
    }
    for (int j = 0; j < H; ++j) {
      m.comp_xo[d * H + j] = m.zp * sum_x[2 * H + j];
      m.comp_ho[d * H + j] = m.zp * sum_h[2 * H + j];
    }
  }
  m.bias = layer.bias;
  try {
    m.attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  } catch (const dnnl::error& e) {
    return FromDnnl(e, "int8 GRU: attributes");
  }
  // Pack the weights and build a first shape now, so that load fails rather
  // than the first request.
  for (GemmKind kind : {GemmKind::kInput, GemmKind::kIter}) {
    auto warm = m.Get(kind, 1);
    if (!warm.ok()) return warm.status();
  }
  return std::unique_ptr<GruInt8Layer>(new GruInt8Layer(std::move(impl)));
}

std::string GruInt8Layer::ImplementationInfo() const {
  std::string gemm;
  {
    std::lock_guard<std::mutex> lock(impl_->cache_mu);
    for (const auto& s : impl_->impls) gemm += (gemm.empty() ? "" : "/") + s;
  }
  return "matmul " + gemm + " (u8 x s8 -> s32), gates " +
         (impl_->avx2 ? "avx2" : "scalar") + ", weights " +
         (impl_->seven_bit ? "|s8| <= 63 (no VNNI)" : "|s8| <= 127");
}

Status GruInt8Layer::Run(const float* x, int steps, int batch, const float* h0,
                         float* y, float* h_n) const {
  if (!x) return InvalidArgument("int8 GRU layer: no input");
  if (!y) return InvalidArgument("int8 GRU layer: no output buffer");
  return RunImpl(x, nullptr, steps, batch, h0, y, nullptr, h_n);
}

Status GruInt8Layer::RunU8(const uint8_t* x_u8, int steps, int batch,
                           const float* h0, float* y, uint8_t* y_u8,
                           float* h_n) const {
  if (!x_u8) return InvalidArgument("int8 GRU layer: no input");
  if (!y && !y_u8) return InvalidArgument("int8 GRU layer: no output buffer");
  return RunImpl(nullptr, x_u8, steps, batch, h0, y, y_u8, h_n);
}

Status GruInt8Layer::RunImpl(const float* x, const uint8_t* x_u8, int steps,
                             int batch, const float* h0, float* y,
                             uint8_t* y_u8, float* h_n) const {
  Impl& m = *impl_;
  if (steps < 1 || batch < 1) {
    return InvalidArgument("int8 GRU layer: steps " + std::to_string(steps) +
                           " and batch " + std::to_string(batch) +
                           " must be positive");
  }
  const int T = steps, N = batch, H = m.hidden, C = m.input_size,
            D = m.directions;
  const int64_t G = m.gates_width();
  // Steps per input-projection block: equal blocks of at most block_rows
  // rows (at least one step).
  const int64_t rows = static_cast<int64_t>(T) * N;
  const int64_t blocks =
      (rows + m.options.block_rows - 1) / m.options.block_rows;
  const int block_steps = static_cast<int>((T + blocks - 1) / blocks);
  const int num_blocks = (T + block_steps - 1) / block_steps;
  const int last_steps = T - (num_blocks - 1) * block_steps;

  ASSIGN_OR_RETURN(auto rec, m.Get(GemmKind::kIter, N));
  ASSIGN_OR_RETURN(auto full, m.Get(GemmKind::kInput,
                                    static_cast<int64_t>(block_steps) * N));
  std::shared_ptr<const Matmul> last = full;
  if (last_steps != block_steps) {
    ASSIGN_OR_RETURN(
        last, m.Get(GemmKind::kInput, static_cast<int64_t>(last_steps) * N));
  }

  OneDnnThreadContext& ctx = ThreadContext();
  Workspace& ws = ThreadWorkspace();
  const int64_t block_rows = static_cast<int64_t>(block_steps) * N;
  if (!x_u8) ws.x.resize(std::max<size_t>(ws.x.size(), block_rows * C));
  ws.gx.resize(std::max<size_t>(ws.gx.size(), block_rows * G));
  ws.gh.resize(std::max<size_t>(ws.gh.size(), static_cast<size_t>(N) * G));
  ws.h.resize(std::max<size_t>(ws.h.size(), static_cast<size_t>(N) * H));
  ws.h_u8.resize(std::max<size_t>(ws.h_u8.size(), static_cast<size_t>(N) * H));
  size_t scratch_bytes = 0;
  for (const Matmul* p : {rec.get(), full.get(), last.get()}) {
    scratch_bytes = std::max(scratch_bytes, p->scratchpad_md.get_size());
  }
  if (ctx.scratchpad.size() < scratch_bytes)
    ctx.scratchpad.resize(scratch_bytes);
  const bool parallel_gates = omp_get_max_threads() > 1 && N > 1;

  try {
    dnnl::engine& eng = CpuEngine();
    auto args = [&](const Matmul& p, void* src, int d, void* dst) {
      std::unordered_map<int, dnnl::memory> a = {
          {DNNL_ARG_SRC, dnnl::memory(p.src_md, eng, src)},
          {DNNL_ARG_WEIGHTS, *p.weights[d]},
          {DNNL_ARG_DST, dnnl::memory(p.dst_md, eng, dst)},
      };
      if (p.scratchpad_md.get_size() > 0) {
        a.emplace(DNNL_ARG_SCRATCHPAD,
                  dnnl::memory(p.scratchpad_md, eng, ctx.scratchpad.data()));
      }
      return a;
    };
    for (int d = 0; d < D; ++d) {
      const size_t state = static_cast<size_t>(N) * H;
      if (h0) {
        std::copy(h0 + d * state, h0 + (d + 1) * state, ws.h.begin());
        m.quantize(h0 + d * state, static_cast<int64_t>(state), m.data_scale,
                   m.shift, ws.h_u8.data());
      } else {
        std::fill(ws.h.begin(), ws.h.begin() + state, 0.0f);
        std::fill(ws.h_u8.begin(), ws.h_u8.begin() + state,
                  static_cast<uint8_t>(m.zp));
      }
      // Memory objects are made once per direction, not per step.
      const auto rec_args = args(*rec, ws.h_u8.data(), d, ws.gh.data());
      GateArgs ga;
      ga.hidden = H;
      ga.gh = ws.gh.data();
      ga.dq = m.dq.data();
      ga.comp_ur = &m.comp_ur[static_cast<size_t>(d) * 2 * H];
      ga.comp_xo = &m.comp_xo[static_cast<size_t>(d) * H];
      ga.comp_ho = &m.comp_ho[static_cast<size_t>(d) * H];
      ga.bias = &m.bias[static_cast<size_t>(d) * 4 * H];
      ga.data_scale = m.data_scale;
      ga.shift = m.shift;
      ga.zp = m.zp;
      ga.h = ws.h.data();
      ga.h_u8 = ws.h_u8.data();
      ga.y_stride = static_cast<int64_t>(D) * H;
      // The backward direction walks the blocks, and the steps inside each
      // block, from the end.
      for (int bi = 0; bi < num_blocks; ++bi) {
        const int b = d == 0 ? bi : num_blocks - 1 - bi;
        const int t0 = b * block_steps;
        const int len = b == num_blocks - 1 ? last_steps : block_steps;
        const Matmul& in = len == block_steps ? *full : *last;
        const int64_t first = static_cast<int64_t>(t0) * N * C;
        const uint8_t* src = x_u8 ? x_u8 + first : ws.x.data();
        if (!x_u8) {
          m.quantize(x + first, static_cast<int64_t>(len) * N * C,
                     m.input_scale, m.shift, ws.x.data());
        }
        in.primitive.execute(
            ctx.stream, args(in, const_cast<uint8_t*>(src), d, ws.gx.data()));
        for (int k = 0; k < len; ++k) {
          const int t = d == 0 ? t0 + k : t0 + len - 1 - k;
          rec->primitive.execute(ctx.stream, rec_args);
          ctx.stream.wait();
          ga.gx = ws.gx.data() + static_cast<int64_t>(t - t0) * N * G;
          const int64_t out =
              static_cast<int64_t>(t) * N * D * H + static_cast<int64_t>(d) * H;
          ga.y = y ? y + out : nullptr;
          ga.y_u8 = y_u8 ? y_u8 + out : nullptr;
          if (parallel_gates) {
#pragma omp parallel for schedule(static)
            for (int n = 0; n < N; ++n) m.gate_row(ga, n);
          } else {
            for (int n = 0; n < N; ++n) m.gate_row(ga, n);
          }
        }
      }
      if (h_n) std::copy(ws.h.begin(), ws.h.begin() + state, h_n + d * state);
    }
  } catch (const dnnl::error& e) {
    return FromDnnl(e, "int8 GRU: running");
  }
  return Status::Ok();
}

}  // namespace rnnserve::engine
