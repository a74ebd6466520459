#include "server/engine/rnn_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <list>
#include <map>
#include <unordered_map>
#include <mutex>
#include <utility>

#include "oneapi/dnnl/dnnl.hpp"
#include "server/engine/gru_int8.h"
#include "server/engine/onednn_context.h"
#include "server/engine/packed_weights.h"

namespace rnnserve::engine {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// bf16 = the upper half of an f32, rounded to nearest even (NaN kept NaN).
void F32ToBf16(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &x[i], 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
      out[i] = static_cast<uint16_t>((bits >> 16) | 0x40);
      continue;
    }
    bits += 0x7fffu + ((bits >> 16) & 1u);
    out[i] = static_cast<uint16_t>(bits >> 16);
  }
}

void Bf16ToF32(const uint16_t* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = static_cast<uint32_t>(x[i]) << 16;
    std::memcpy(&out[i], &bits, 4);
  }
}

// A layer's input or output activations in one of the engine's data types.
struct Activations {
  dt type = dt::f32;
  std::vector<float> f32;    // when type is f32
  std::vector<uint8_t> raw;  // u8 values, or bf16 as 2-byte pairs
  const float* external = nullptr;  // borrowed f32 input (layer 0 features)

  const float* f32_data() const { return external ? external : f32.data(); }
  void Resize(dt t, int64_t n) {
    external = nullptr;
    type = t;
    if (t == dt::f32) {
      f32.resize(n);
    } else {
      raw.resize(n * (t == dt::bf16 ? 2 : 1));
    }
  }
  const void* data() const {
    return type == dt::f32 ? static_cast<const void*>(f32_data()) : raw.data();
  }
  void* data() {
    return type == dt::f32 ? static_cast<void*>(f32.data()) : raw.data();
  }
};

// [A][B][C] -> [B][A][C].
void Transpose(const float* in, int a, int b, int c, float* out) {
  for (int i = 0; i < a; ++i) {
    for (int j = 0; j < b; ++j) {
      std::memcpy(out + (static_cast<size_t>(j) * a + i) * c,
                  in + (static_cast<size_t>(i) * b + j) * c, c * sizeof(float));
    }
  }
}

// f32 -> `type` (u8 on the grid scale/shift, or bf16) into `out`.
void ConvertFromF32(const float* x, int64_t n, dt type, float scale,
                    float shift, Activations* out) {
  out->Resize(type, n);
  if (type == dt::u8) {
    QuantizeU8(x, n, scale, shift, out->raw.data());
  } else if (type == dt::bf16) {
    F32ToBf16(x, n, reinterpret_cast<uint16_t*>(out->raw.data()));
  } else {
    std::memcpy(out->f32.data(), x, n * sizeof(float));
  }
}

}  // namespace

bool CpuHasInt8Vnni() {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_vnni ||
         isa == dnnl::cpu_isa::avx512_core_bf16 ||
         isa == dnnl::cpu_isa::avx512_core_amx ||
         isa == dnnl::cpu_isa::avx2_vnni;
}

bool CpuSupportsBf16() {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core ||
         isa == dnnl::cpu_isa::avx512_core_vnni ||
         isa == dnnl::cpu_isa::avx512_core_bf16 ||
         isa == dnnl::cpu_isa::avx512_core_amx;
}

std::string CpuIsaName() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

const char* PrecisionName(Precision p) {
  switch (p) {
    case Precision::kF32: return "f32";
    case Precision::kInt8: return "int8";
    case Precision::kBf16: return "bf16";
  }
  return "?";
}

StatusOr<Precision> ParsePrecision(const std::string& name) {
  if (name == "f32" || name == "fp32" || name == "float32") return Precision::kF32;
  if (name == "int8") return Precision::kInt8;
  if (name == "bf16") return Precision::kBf16;
  return InvalidArgument("unknown precision '" + name +
                         "' (expected f32, int8 or bf16)");
}

// One RNN layer as compiled: its precision and data types, its attributes,
// the user-layout weights and the packed copies made from them.
struct LayerPlan {
  const RnnLayerSpec* spec = nullptr;
  bool int8 = false;
  bool bf16 = false;
  dt src_type = dt::f32;   // u8 (int8), bf16 (bf16) or f32
  dt dst_type = dt::f32;   // the next layer's src_type when it can take ours
  dt iter_type = dt::f32;  // h: u8 for int8 (kernel choice), bf16 for bf16
  dt weights_type = dt::f32;
  float data_scale = 1.0f;
  float data_shift = 0.0f;
  float input_scale = 1.0f;  // data_scale * input_alpha, for quantizing input
  // int8 GRU layers run on rnnserve's own kernel instead of an RNN
  // primitive (oneDNN 2.6 has no int8 linear-before-reset GRU).
  std::unique_ptr<GruInt8Layer> gru_int8;
  dnnl::primitive_attr attr;          // for the RNN primitive
  dnnl::primitive_attr reorder_attr;  // for the weight reorders
  std::vector<float> w_layer_user;    // ldigo f32 (int8: dequantized s8)
  std::vector<float> w_iter_user;
  std::vector<float> bias;            // ldgo f32

  // Packed weights by memory descriptor, owned by the cached primitives
  // (one copy per layout; see packed_weights.h for why layouts vary).
  PackedWeights packed_layer;
  PackedWeights packed_iter;

  dnnl::memory::dims WeightsLayerDims() const {
    return {1, spec->directions, spec->input_size, spec->gates(),
            spec->hidden_size};
  }
  dnnl::memory::dims WeightsIterDims() const {
    return {1, spec->directions, spec->hidden_size, spec->gates(),
            spec->hidden_size};
  }
  dnnl::memory::dims BiasDims() const {
    return {1, spec->directions, spec->bias_gates(), spec->hidden_size};
  }
};

struct LayerPrimitive {
  dnnl::primitive primitive;
  std::shared_ptr<const dnnl::memory> weights_layer;  // packed, shared
  std::shared_ptr<const dnnl::memory> weights_iter;
  dnnl::memory::desc src_layer_md, src_iter_md, dst_layer_md, dst_iter_md;
  dnnl::memory::desc iter_c_md;  // cell state, always f32
  dnnl::memory::desc bias_md;
  size_t scratchpad_bytes = 0;
  std::string impl;
};

struct ShapePrimitives {
  std::vector<LayerPrimitive> layers;
};

struct RnnModel::Impl {
  std::vector<std::unique_ptr<LayerPlan>> plans;

  std::mutex cache_mu;
  using Key = std::pair<int, int>;  // (batch, steps)
  std::list<Key> lru;               // front = most recent; guarded by cache_mu
  std::map<Key, std::pair<std::shared_ptr<const ShapePrimitives>,
                          std::list<Key>::iterator>>
      cache;  // guarded by cache_mu
  int max_cached = 64;

  StatusOr<std::shared_ptr<const dnnl::memory>> Packed(
      LayerPlan& plan, bool iter, const dnnl::memory::desc& md);
  StatusOr<LayerPrimitive> BuildLayer(LayerPlan& plan, int batch, int steps);
  StatusOr<std::shared_ptr<const ShapePrimitives>> Get(int batch, int steps);
};

StatusOr<std::shared_ptr<const dnnl::memory>> RnnModel::Impl::Packed(
    LayerPlan& plan, bool iter, const dnnl::memory::desc& md) {
  auto pack = [&](const dnnl::memory::desc& md) -> StatusOr<dnnl::memory> {
    try {
      auto user_md = dnnl::memory::desc(
          iter ? plan.WeightsIterDims() : plan.WeightsLayerDims(), dt::f32,
          tag::ldigo);
      auto& user = iter ? plan.w_iter_user : plan.w_layer_user;
      dnnl::memory user_mem(user_md, CpuEngine(), user.data());
      dnnl::memory mem(md, CpuEngine());
      dnnl::reorder::primitive_desc rpd(CpuEngine(), user_md, CpuEngine(), md,
                                        plan.reorder_attr);
      dnnl::stream& s = ThreadContext().stream;
      dnnl::reorder(rpd).execute(s, user_mem, mem);
      s.wait();
      return mem;
    } catch (const dnnl::error& e) {
      return FromDnnl(e, "packing weights");
    }
  };
  return (iter ? plan.packed_iter : plan.packed_layer).Get(md, pack);
}

StatusOr<LayerPrimitive> RnnModel::Impl::BuildLayer(LayerPlan& plan,
                                                    int batch, int steps) {
  const RnnLayerSpec& l = *plan.spec;
  const dnnl::memory::dim T = steps, N = batch, D = l.directions,
                          H = l.hidden_size, C = l.input_size;
  LayerPrimitive out;
  try {
    // Batch-major activations (ntc): the API's own layout, so requests need
    // no transposes on the way in or out.
    out.src_layer_md = dnnl::memory::desc({T, N, C}, plan.src_type, tag::ntc);
    out.dst_layer_md =
        dnnl::memory::desc({T, N, D * H}, plan.dst_type, tag::ntc);
    // int8 layers keep h on the u8 grid (oneDNN 2.6 picks its brgemm int8
    // kernel only for u8 src_iter/dst_iter; with f32 ones it runs the
    // reference kernel); c is f32 in both modes.
    out.src_iter_md = dnnl::memory::desc({1, D, N, H}, plan.iter_type, tag::ldnc);
    out.dst_iter_md = out.src_iter_md;
    out.iter_c_md = dnnl::memory::desc({1, D, N, H}, dt::f32, tag::ldnc);
    out.bias_md = dnnl::memory::desc(plan.BiasDims(), dt::f32, tag::ldgo);
    const dt wtype = plan.weights_type;
    auto wl_md = dnnl::memory::desc(plan.WeightsLayerDims(), wtype, tag::any);
    auto wi_md = dnnl::memory::desc(plan.WeightsIterDims(), wtype, tag::any);
    const auto dir = D == 2 ? dnnl::rnn_direction::bidirectional_concat
                            : dnnl::rnn_direction::unidirectional_left2right;
    dnnl::memory::desc wl_packed, wi_packed, scratch_md;
    if (l.cell == CellType::kLstm) {
      dnnl::lstm_forward::desc d(dnnl::prop_kind::forward_inference, dir,
                                 out.src_layer_md, out.src_iter_md,
                                 out.iter_c_md, wl_md, wi_md, out.bias_md,
                                 out.dst_layer_md, out.dst_iter_md,
                                 out.iter_c_md);
      dnnl::lstm_forward::primitive_desc pd(d, plan.attr, CpuEngine());
      wl_packed = pd.weights_layer_desc();
      wi_packed = pd.weights_iter_desc();
      scratch_md = pd.scratchpad_desc();
      out.impl = pd.impl_info_str();
      out.primitive = dnnl::lstm_forward(pd);
    } else {
      dnnl::lbr_gru_forward::desc d(dnnl::prop_kind::forward_inference, dir,
                                    out.src_layer_md, out.src_iter_md, wl_md,
                                    wi_md, out.bias_md, out.dst_layer_md,
                                    out.dst_iter_md);
      dnnl::lbr_gru_forward::primitive_desc pd(d, plan.attr, CpuEngine());
      wl_packed = pd.weights_layer_desc();
      wi_packed = pd.weights_iter_desc();
      scratch_md = pd.scratchpad_desc();
      out.impl = pd.impl_info_str();
      out.primitive = dnnl::lbr_gru_forward(pd);
    }
    out.scratchpad_bytes = scratch_md.get_size();
    ASSIGN_OR_RETURN(out.weights_layer, Packed(plan, false, wl_packed));
    ASSIGN_OR_RETURN(out.weights_iter, Packed(plan, true, wi_packed));
  } catch (const dnnl::error& e) {
    return FromDnnl(e, std::string(CellTypeName(l.cell)) + " layer (" +
                           (plan.int8 ? "int8" : "f32") + ")");
  }
  return out;
}

StatusOr<std::shared_ptr<const ShapePrimitives>> RnnModel::Impl::Get(
    int batch, int steps) {
  const Key key(batch, steps);
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = cache.find(key);
    if (it != cache.end()) {
      lru.splice(lru.begin(), lru, it->second.second);
      return it->second.first;
    }
  }
  // Build outside the lock: creation takes ~1 ms per layer and must not stall
  // calls for shapes already cached. Two threads may race to build the same
  // shape; the loser's copy is dropped.
  auto prims = std::make_shared<ShapePrimitives>();
  for (auto& plan : plans) {
    if (plan->gru_int8) {
      prims->layers.emplace_back();  // the GRU layer caches its own
      continue;
    }
    ASSIGN_OR_RETURN(LayerPrimitive lp, BuildLayer(*plan, batch, steps));
    prims->layers.push_back(std::move(lp));
  }
  std::lock_guard<std::mutex> lock(cache_mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.first;
  lru.push_front(key);
  cache.emplace(key, std::make_pair(prims, lru.begin()));
  while (static_cast<int>(cache.size()) > max_cached) {
    cache.erase(lru.back());
    lru.pop_back();
  }
  return std::shared_ptr<const ShapePrimitives>(prims);
}

RnnModel::RnnModel(std::shared_ptr<const ModelSpec> spec,
                   RnnModelOptions options, std::unique_ptr<Impl> impl)
    : spec_(std::move(spec)),
      options_(std::move(options)),
      impl_(std::move(impl)) {}

RnnModel::~RnnModel() = default;

StatusOr<std::unique_ptr<RnnModel>> RnnModel::Create(
    std::shared_ptr<const ModelSpec> spec, const RnnModelOptions& options) {
  if (!spec) return InvalidArgument("RnnModel::Create: no model spec");
  const std::string problem = ValidateModelSpec(*spec);
  if (!problem.empty()) return InvalidArgument("invalid model: " + problem);
  if (options.precision == Precision::kBf16 && !CpuSupportsBf16()) {
    return Unimplemented(
        "bf16 execution needs a CPU with AVX-512 (oneDNN 2.6 runs bf16 RNNs "
        "on avx512_core and newer); this CPU dispatches to " + CpuIsaName());
  }
  if (options.intra_op_threads < 1) {
    return InvalidArgument("intra_op_threads must be >= 1");
  }
  const bool int8 = options.precision == Precision::kInt8;
  if (int8) {
    if (!options.quantization) {
      return FailedPrecondition(
          "int8 precision needs calibrated quantization parameters "
          "(calibrate with a calibration set, or load a quantized artifact)");
    }
    RETURN_IF_ERROR(ValidateQuantization(*spec, *options.quantization));
  }

  // Everything oneDNN creates below must see the thread count Run uses.
  ScopedOmpThreads threads(options.intra_op_threads);
  auto impl = std::make_unique<Impl>();
  impl->max_cached = std::max(1, options.max_cached_shapes);
  const size_t L = spec->layers.size();
  const bool vnni = CpuHasInt8Vnni();
  for (size_t i = 0; i < L; ++i) {
    auto plan = std::make_unique<LayerPlan>();
    const RnnLayerSpec& l = spec->layers[i];
    plan->spec = &l;
    plan->bias = l.bias;
    const LayerQuantization* q =
        int8 ? &options.quantization->layers[i] : nullptr;
    if (q && q->quantized && l.cell == CellType::kGru) {
      plan->int8 = true;
      ASSIGN_OR_RETURN(plan->gru_int8, GruInt8Layer::Create(l, *q));
      impl->plans.push_back(std::move(plan));
      continue;
    }
    plan->int8 = q && q->quantized && l.cell == CellType::kLstm;
    if (plan->int8) {
      plan->src_type = dt::u8;
      plan->iter_type = dt::u8;
      plan->weights_type = dt::s8;
      plan->data_scale = q->data_scale;
      plan->data_shift = q->data_shift;
      plan->input_scale = q->data_scale * q->input_alpha;
      const int G = l.gates(), H = l.hidden_size;
      const bool per_channel = q->weight_scales.size() > 1;
      // Dequantize the s8 weights so that the reorder (which quantizes with
      // the same multipliers) reproduces them exactly and packs them with the
      // u8 compensation the kernel needs.
      auto dequant = [&](const std::vector<int8_t>& w8, std::vector<float>* w) {
        w->resize(w8.size());
        for (size_t k = 0; k < w8.size(); ++k) {
          const size_t go = k % static_cast<size_t>(G * H);
          const float s = per_channel ? q->weight_scales[go]
                                      : q->weight_scales[0];
          (*w)[k] = static_cast<float>(w8[k]) / s;
        }
      };
      dequant(q->w_layer_s8, &plan->w_layer_user);
      dequant(q->w_iter_s8, &plan->w_iter_user);
      // Without VNNI, shrink the multipliers so the reorder maps the same
      // weights onto [-63, 63] (see CpuHasInt8Vnni).
      std::vector<float> scales = q->weight_scales;
      if (!vnni) {
        for (float& s : scales) s *= 63.0f / 127.0f;
      }
      try {
        for (dnnl::primitive_attr* a : {&plan->attr, &plan->reorder_attr}) {
          a->set_rnn_data_qparams(q->data_scale, q->data_shift);
          a->set_rnn_weights_qparams(per_channel ? (1 << 3) + (1 << 4) : 0,
                                     scales);
        }
      } catch (const dnnl::error& e) {
        return FromDnnl(e, "int8 attributes");
      }
    } else {
      plan->bf16 = options.precision == Precision::kBf16;
      if (plan->bf16) {
        plan->src_type = plan->iter_type = plan->weights_type = dt::bf16;
      }
      plan->w_layer_user = l.w_layer;
      plan->w_iter_user = l.w_iter;
    }
    plan->attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    impl->plans.push_back(std::move(plan));
  }
  // Wire data types between layers: an int8 layer passes u8 straight to an
  // int8 successor calibrated on the same grid, bf16 layers pass bf16;
  // otherwise activations cross the boundary in f32 and a layer converts
  // its input itself (int8: quantizes it on its own grid).
  for (size_t i = 0; i + 1 < L; ++i) {
    LayerPlan& p = *impl->plans[i];
    const LayerPlan& next = *impl->plans[i + 1];
    if (p.int8 && next.int8 && options.quantization->layers[i + 1].chained_u8_input) {
      p.dst_type = dt::u8;
    } else if (p.bf16 && next.bf16) {
      p.dst_type = dt::bf16;
    }
  }
  if (impl->plans.back()->bf16) impl->plans.back()->dst_type = dt::bf16;
  for (size_t i = 0; i < L; ++i) {
    const LayerPlan& p = *impl->plans[i];
    const dt incoming = i == 0 ? dt::f32 : impl->plans[i - 1]->dst_type;
    // Run converts an f32 input itself; any other type must match exactly.
    if (incoming != p.src_type && incoming != dt::f32) {
      return Internal("layer " + std::to_string(i) + ": input type mismatch");
    }
  }
  auto model = std::unique_ptr<RnnModel>(
      new RnnModel(std::move(spec), options, std::move(impl)));
  // Pack the weights now (load time) with a representative shape, so the
  // first request does not pay for it and errors surface at load.
  auto warm = model->impl_->Get(1, 1);
  if (!warm.ok()) return warm.status();
  return model;
}

std::vector<Precision> RnnModel::layer_precisions() const {
  std::vector<Precision> out;
  for (const auto& p : impl_->plans) {
    out.push_back(p->int8   ? Precision::kInt8
                  : p->bf16 ? Precision::kBf16
                            : Precision::kF32);
  }
  return out;
}

int RnnModel::packed_weight_copies() const {
  int copies = 0;
  for (const auto& p : impl_->plans) {
    if (p->gru_int8) copies += p->gru_int8->packed_weight_copies();
    copies += p->packed_layer.live_copies() + p->packed_iter.live_copies();
  }
  return copies;
}

int64_t RnnModel::weights_bytes() const {
  int64_t bytes = 0;
  for (const auto& p : impl_->plans) {
    if (p->gru_int8) bytes += p->gru_int8->weights_bytes();
    bytes += p->packed_layer.live_bytes() + p->packed_iter.live_bytes();
    bytes += static_cast<int64_t>(p->bias.size() * sizeof(float));
  }
  if (spec_->has_head) {
    bytes += static_cast<int64_t>(
        (spec_->head.weight.size() + spec_->head.bias.size()) * sizeof(float));
  }
  if (spec_->has_embedding) {
    bytes += static_cast<int64_t>(spec_->embedding.table.size() * sizeof(float));
  }
  return bytes;
}

StatusOr<std::vector<std::string>> RnnModel::ImplementationInfo(
    int batch, int steps) const {
  ScopedOmpThreads threads(options_.intra_op_threads);
  ASSIGN_OR_RETURN(auto prims, impl_->Get(batch, steps));
  std::vector<std::string> out;
  for (size_t i = 0; i < prims->layers.size(); ++i) {
    const auto& gru = impl_->plans[i]->gru_int8;
    out.push_back(gru ? gru->ImplementationInfo() : prims->layers[i].impl);
  }
  return out;
}

Status RnnModel::Run(const RunInput& input, RunOutput* output) const {
  return RunObserved(input, output, nullptr);
}

Status RnnModel::RunObserved(const RunInput& in, RunOutput* out,
                             const LayerObserver& observer) const {
  const ModelSpec& spec = *spec_;
  if (in.batch < 1 || in.batch > options_.max_batch) {
    return InvalidArgument("batch size " + std::to_string(in.batch) +
                           " outside [1, " +
                           std::to_string(options_.max_batch) + "]");
  }
  if (in.steps < 1 || in.steps > options_.max_steps) {
    return InvalidArgument("sequence length " + std::to_string(in.steps) +
                           " outside [1, " +
                           std::to_string(options_.max_steps) + "]");
  }
  if (observer && options_.precision != Precision::kF32) {
    return FailedPrecondition("layer observation needs an f32 model");
  }
  const int N = in.batch, T = in.steps;
  const int64_t NT = static_cast<int64_t>(N) * T;
  const size_t L = spec.layers.size();
  if (in.initial_state && in.initial_state->size() != L) {
    return InvalidArgument("initial state has " +
                           std::to_string(in.initial_state->size()) +
                           " layers, the model has " + std::to_string(L));
  }

  // Layer-0 input, batch-major [N][T][C] f32: the caller's features as they
  // are, or the embedding rows of the token ids.
  const int C0 = spec.layers[0].input_size;
  std::vector<float> x;
  const float* x_ptr = nullptr;
  if (spec.input_kind == InputKind::kTokenIds) {
    if (!in.tokens) return InvalidArgument("input: token ids expected");
    const int E = spec.embedding.dim;
    x.resize(static_cast<size_t>(NT) * E);
    for (int64_t k = 0; k < NT; ++k) {
      const int64_t id = in.tokens[k];
      if (id < 0 || id >= spec.embedding.vocab_size) {
        return InvalidArgument(
            "input: token id " + std::to_string(id) + " at [" +
            std::to_string(k / T) + ", " + std::to_string(k % T) +
            "] outside the vocabulary [0, " +
            std::to_string(spec.embedding.vocab_size) + ")");
      }
      std::memcpy(&x[static_cast<size_t>(k) * E],
                  &spec.embedding.table[static_cast<size_t>(id) * E],
                  E * sizeof(float));
    }
    x_ptr = x.data();
  } else {
    if (!in.features) return InvalidArgument("input: features expected");
    const int64_t count = NT * C0;
    // One branch-free pass; the slow path runs only to name the bad value.
    bool finite = true;
    for (int64_t k = 0; k < count; ++k) finite &= std::isfinite(in.features[k]);
    if (!finite) {
      for (int64_t k = 0; k < count; ++k) {
        if (!std::isfinite(in.features[k])) {
          return InvalidArgument(
              "input: non-finite value (" + std::to_string(in.features[k]) +
              ") at [" + std::to_string(k / (static_cast<int64_t>(T) * C0)) +
              ", " + std::to_string((k / C0) % T) + ", " +
              std::to_string(k % C0) + "]");
        }
      }
    }
    x_ptr = in.features;
  }
  for (size_t i = 0; in.initial_state && i < L; ++i) {
    const auto& l = spec.layers[i];
    const size_t want = static_cast<size_t>(l.directions) * N * l.hidden_size;
    const auto& s = (*in.initial_state)[i];
    if (s.h.size() != want ||
        (l.cell == CellType::kLstm ? s.c.size() != want : !s.c.empty())) {
      return InvalidArgument("initial state of layer " + std::to_string(i) +
                             ": expected h" +
                             (l.cell == CellType::kLstm ? " and c" : "") +
                             " of " + std::to_string(want) + " values ([" +
                             std::to_string(l.directions) + ", " +
                             std::to_string(N) + ", " +
                             std::to_string(l.hidden_size) + "])");
    }
    for (const auto* v : {&s.h, &s.c}) {
      for (float f : *v) {
        if (!std::isfinite(f)) {
          return InvalidArgument("initial state of layer " +
                                 std::to_string(i) + ": non-finite value");
        }
      }
    }
  }

  ScopedOmpThreads threads(options_.intra_op_threads);
  ASSIGN_OR_RETURN(auto prims, impl_->Get(N, T));
  OneDnnThreadContext& ctx = ThreadContext();
  out->final_state.assign(L, LayerState());

  // Activations between layers, batch-major [N][T][C], in the type the
  // producing layer wrote (f32, u8 on a grid, or bf16).
  Activations cur;
  cur.type = dt::f32;
  cur.external = x_ptr;
  Activations next, converted;
  std::vector<float> zeros;
  std::vector<uint8_t> h0_raw, hn_raw;
  std::vector<float> gru_in, gru_out;
  try {
    for (size_t i = 0; i < L; ++i) {
      const LayerPlan& plan = *impl_->plans[i];
      const LayerPrimitive& lp = prims->layers[i];
      const RnnLayerSpec& l = spec.layers[i];
      const int64_t out_ch = l.output_size();
      const size_t state_size =
          static_cast<size_t>(l.directions) * N * l.hidden_size;

      const Activations* src = &cur;
      if (cur.type != plan.src_type) {
        // Only f32 arrives in a foreign type (see the wiring in Create).
        ConvertFromF32(cur.f32_data(), NT * l.input_size, plan.src_type,
                       plan.input_scale, plan.data_shift, &converted);
        src = &converted;
      }
      next.Resize(plan.dst_type, NT * out_ch);

      LayerState& fin = out->final_state[i];
      fin.h.assign(state_size, 0.0f);
      const bool lstm = l.cell == CellType::kLstm;
      if (lstm) fin.c.assign(state_size, 0.0f);
      const float* h0;
      const float* c0;
      if (in.initial_state) {
        h0 = (*in.initial_state)[i].h.data();
        c0 = lstm ? (*in.initial_state)[i].c.data() : nullptr;
      } else {
        zeros.assign(state_size, 0.0f);
        h0 = zeros.data();
        c0 = zeros.data();
      }
      if (plan.gru_int8) {
        // The GRU kernel works sequence-major on f32 activations.
        gru_in.resize(static_cast<size_t>(NT) * l.input_size);
        Transpose(src->f32_data(), N, T, l.input_size, gru_in.data());
        gru_out.resize(static_cast<size_t>(NT) * out_ch);
        RETURN_IF_ERROR(plan.gru_int8->Run(gru_in.data(), T, N, h0,
                                           gru_out.data(), fin.h.data()));
        Transpose(gru_out.data(), T, N, static_cast<int>(out_ch),
                  next.f32.data());
        std::swap(cur, next);
        continue;
      }
      // h crosses the call boundary in f32; inside it lives in iter_type
      // (int8: on the u8 grid, so a state from a previous call round-trips
      // exactly).
      void* h0_ptr = const_cast<float*>(h0);
      void* hn_ptr = fin.h.data();
      if (plan.iter_type != dt::f32) {
        const size_t esize = plan.iter_type == dt::u8 ? 1 : 2;
        h0_raw.resize(state_size * esize);
        hn_raw.resize(state_size * esize);
        if (plan.iter_type == dt::u8) {
          QuantizeU8(h0, static_cast<int64_t>(state_size), plan.data_scale,
                     plan.data_shift, h0_raw.data());
        } else {
          F32ToBf16(h0, static_cast<int64_t>(state_size),
                    reinterpret_cast<uint16_t*>(h0_raw.data()));
        }
        h0_ptr = h0_raw.data();
        hn_ptr = hn_raw.data();
      }
      if (ctx.scratchpad.size() < lp.scratchpad_bytes) {
        ctx.scratchpad.resize(lp.scratchpad_bytes);
      }
      dnnl::engine& eng = CpuEngine();
      auto bias_mem = dnnl::memory(lp.bias_md, eng,
                                   const_cast<float*>(plan.bias.data()));
      std::unordered_map<int, dnnl::memory> args = {
          {DNNL_ARG_SRC_LAYER,
           dnnl::memory(lp.src_layer_md, eng, const_cast<void*>(src->data()))},
          {DNNL_ARG_SRC_ITER, dnnl::memory(lp.src_iter_md, eng, h0_ptr)},
          {DNNL_ARG_WEIGHTS_LAYER, *lp.weights_layer},
          {DNNL_ARG_WEIGHTS_ITER, *lp.weights_iter},
          {DNNL_ARG_BIAS, bias_mem},
          {DNNL_ARG_DST_LAYER, dnnl::memory(lp.dst_layer_md, eng, next.data())},
          {DNNL_ARG_DST_ITER, dnnl::memory(lp.dst_iter_md, eng, hn_ptr)},
          {DNNL_ARG_SCRATCHPAD,
           dnnl::memory(dnnl::memory::desc({static_cast<dnnl::memory::dim>(
                                                lp.scratchpad_bytes)},
                                           dt::u8, tag::x),
                        eng, ctx.scratchpad.data())},
      };
      if (lstm) {
        args.emplace(DNNL_ARG_SRC_ITER_C,
                     dnnl::memory(lp.iter_c_md, eng, const_cast<float*>(c0)));
        args.emplace(DNNL_ARG_DST_ITER_C,
                     dnnl::memory(lp.iter_c_md, eng, fin.c.data()));
      }
      lp.primitive.execute(ctx.stream, args);
      ctx.stream.wait();
      if (plan.iter_type == dt::u8) {
        const float inv = 1.0f / plan.data_scale;
        for (size_t k = 0; k < state_size; ++k) {
          fin.h[k] = (static_cast<float>(hn_raw[k]) - plan.data_shift) * inv;
        }
      } else if (plan.iter_type == dt::bf16) {
        Bf16ToF32(reinterpret_cast<const uint16_t*>(hn_raw.data()),
                  static_cast<int64_t>(state_size), fin.h.data());
      }

      if (observer) {
        observer(static_cast<int>(i), cur.f32_data(), l.input_size,
                 next.f32_data(), static_cast<int>(out_ch), T, N);
      }
      std::swap(cur, next);
    }
  } catch (const dnnl::error& e) {
    return FromDnnl(e, "running the model");
  }
  if (cur.type == dt::bf16) {
    cur.f32.resize(cur.raw.size() / 2);
    Bf16ToF32(reinterpret_cast<const uint16_t*>(cur.raw.data()),
              static_cast<int64_t>(cur.f32.size()), cur.f32.data());
    cur.type = dt::f32;
  }

  // `cur` holds the last layer's output, batch-major [N][T][C] f32.
  const int C = spec.layers.back().output_size();
  std::vector<float> feats;
  int64_t rows;
  if (spec.last_step_only) {
    rows = N;
    feats.resize(static_cast<size_t>(N) * C);
    for (int n = 0; n < N; ++n) {
      std::memcpy(&feats[static_cast<size_t>(n) * C],
                  cur.f32_data() + (static_cast<int64_t>(n) * T + T - 1) * C,
                  C * sizeof(float));
    }
    out->shape = {N};
  } else {
    rows = NT;
    feats = std::move(cur.f32);
    out->shape = {N, T};
  }
  if (spec.has_head) {
    const LinearSpec& h = spec.head;
    out->output.assign(static_cast<size_t>(rows) * h.out_features, 0.0f);
    const dnnl::status st =
        dnnl::sgemm('N', 'N', rows, h.out_features, h.in_features, 1.0f,
                    feats.data(), h.in_features, h.weight.data(),
                    h.out_features, 0.0f, out->output.data(), h.out_features);
    if (st != dnnl::status::success) return Internal("head: sgemm failed");
    for (int64_t r = 0; r < rows; ++r) {
      float* y = &out->output[static_cast<size_t>(r) * h.out_features];
      for (int o = 0; o < h.out_features; ++o) y[o] += h.bias[o];
    }
  } else {
    out->output = std::move(feats);
  }
  const int O = spec.output_size();
  out->shape.push_back(O);
  if (spec.activation != OutputActivation::kNone) {
    for (int64_t r = 0; r < rows; ++r) {
      float* y = &out->output[static_cast<size_t>(r) * O];
      const float m = *std::max_element(y, y + O);
      double sum = 0;
      for (int o = 0; o < O; ++o) sum += std::exp(static_cast<double>(y[o] - m));
      if (spec.activation == OutputActivation::kSoftmax) {
        for (int o = 0; o < O; ++o) {
          y[o] = static_cast<float>(std::exp(static_cast<double>(y[o] - m)) / sum);
        }
      } else {
        const float lse = m + static_cast<float>(std::log(sum));
        for (int o = 0; o < O; ++o) y[o] -= lse;
      }
    }
  }
  return Status::Ok();
}

}  // namespace rnnserve::engine
