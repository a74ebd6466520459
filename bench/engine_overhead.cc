// rnnserve-bench-overhead: how much RnnModel::Run costs on top of the bare
// oneDNN LSTM primitive it drives, for the same weights, quantization and
// shape, measured alternately in one process (medians).
//
// The bare side executes one pre-built primitive on pre-quantized, already
// sequence-major input; RnnModel::Run does everything a request needs: input
// checks, transpose to [T][N][C], u8 quantization, the primitive, state
// conversion and the output transpose. Target (issue 3): overhead <= 10 %.
//
//   rnnserve-bench-overhead [--reps R] [--quick]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "server/engine/onednn_context.h"
#include "server/engine/quantization.h"
#include "server/engine/rnn_model.h"
#include "server/engine/sequence_io.h"

namespace rnnserve::engine {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using Clock = std::chrono::steady_clock;

ModelSpec LstmSpec(int input, int hidden, unsigned seed) {
  std::mt19937 rng(seed);
  const float bound = 1.0f / std::sqrt(static_cast<float>(hidden));
  std::uniform_real_distribution<float> u(-bound, bound);
  ModelSpec s;
  s.input_name = "x";
  s.output_name = "y";
  s.feature_size = input;
  RnnLayerSpec l;
  l.input_size = input;
  l.hidden_size = hidden;
  l.w_layer.resize(static_cast<size_t>(input) * 4 * hidden);
  l.w_iter.resize(static_cast<size_t>(hidden) * 4 * hidden);
  l.bias.resize(4 * static_cast<size_t>(hidden));
  for (auto* v : {&l.w_layer, &l.w_iter, &l.bias}) {
    for (float& x : *v) x = u(rng);
  }
  s.layers.push_back(std::move(l));
  return s;
}

// The bare primitive, built exactly as RnnModel builds its own.
struct Bare {
  dnnl::lstm_forward prim;
  std::unordered_map<int, dnnl::memory> args;
  std::vector<uint8_t> src_u8;
  std::vector<float> src_f32, h0, c0, hn, cn, dst;
  std::vector<uint8_t> h0_u8, hn_u8, scratch;

  void Run(dnnl::stream& s) {
    prim.execute(s, args);
    s.wait();
  }
};

Bare MakeBare(const ModelSpec& spec, const QuantizationSpec* q, int N, int T,
              const SequenceSet& x) {
  const RnnLayerSpec& l = spec.layers[0];
  const int64_t C = l.input_size, H = l.hidden_size;
  const bool int8 = q != nullptr;
  Bare b;
  dnnl::engine& eng = CpuEngine();
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  std::vector<float> wl = l.w_layer, wi = l.w_iter;
  if (int8) {
    const LayerQuantization& lq = q->layers[0];
    std::vector<float> scales = lq.weight_scales;
    if (!CpuHasInt8Vnni()) {
      for (float& sc : scales) sc *= 63.0f / 127.0f;
    }
    attr.set_rnn_data_qparams(lq.data_scale, lq.data_shift);
    attr.set_rnn_weights_qparams((1 << 3) + (1 << 4), scales);
    for (size_t k = 0; k < wl.size(); ++k) wl[k] = lq.w_layer_s8[k] / lq.weight_scales[k % (4 * H)];
    for (size_t k = 0; k < wi.size(); ++k) wi[k] = lq.w_iter_s8[k] / lq.weight_scales[k % (4 * H)];
  }
  const dt d = int8 ? dt::u8 : dt::f32;
  dnnl::memory::desc src({T, N, C}, d, tag::tnc), dst({T, N, H}, dt::f32, tag::tnc),
      iter({1, 1, N, H}, d, tag::ldnc), iter_c({1, 1, N, H}, dt::f32, tag::ldnc),
      bias({1, 1, 4, H}, dt::f32, tag::ldgo),
      wl_md({1, 1, C, 4, H}, int8 ? dt::s8 : dt::f32, tag::any),
      wi_md({1, 1, H, 4, H}, int8 ? dt::s8 : dt::f32, tag::any);
  dnnl::lstm_forward::desc desc(dnnl::prop_kind::forward_inference,
                                dnnl::rnn_direction::unidirectional_left2right,
                                src, iter, iter_c, wl_md, wi_md, bias, dst, iter,
                                iter_c);
  dnnl::lstm_forward::primitive_desc pd(desc, attr, eng);
  b.prim = dnnl::lstm_forward(pd);
  auto pack = [&](std::vector<float>& w, const dnnl::memory::dims& dims,
                  const dnnl::memory::desc& to) {
    dnnl::memory user({dims, dt::f32, tag::ldigo}, eng, w.data());
    dnnl::memory out(to, eng);
    dnnl::primitive_attr ra;
    if (int8) {
      ra.set_rnn_data_qparams(q->layers[0].data_scale, q->layers[0].data_shift);
      std::vector<float> scales = q->layers[0].weight_scales;
      if (!CpuHasInt8Vnni()) {
        for (float& sc : scales) sc *= 63.0f / 127.0f;
      }
      ra.set_rnn_weights_qparams((1 << 3) + (1 << 4), scales);
    }
    dnnl::reorder(dnnl::reorder::primitive_desc(eng, user.get_desc(), eng, to, ra))
        .execute(ThreadContext().stream, user, out);
    ThreadContext().stream.wait();
    return out;
  };
  dnnl::memory wl_mem = pack(wl, {1, 1, C, 4, H}, pd.weights_layer_desc());
  dnnl::memory wi_mem = pack(wi, {1, 1, H, 4, H}, pd.weights_iter_desc());
  // Sequence-major input, quantized once up front.
  b.src_f32.resize(static_cast<size_t>(T) * N * C);
  for (int n = 0; n < N; ++n) {
    for (int t = 0; t < T; ++t) {
      std::memcpy(&b.src_f32[(static_cast<size_t>(t) * N + n) * C],
                  &x.features[(static_cast<size_t>(n) * T + t) * C], C * 4);
    }
  }
  void* src_ptr = b.src_f32.data();
  if (int8) {
    b.src_u8.resize(b.src_f32.size());
    QuantizeU8(b.src_f32.data(), static_cast<int64_t>(b.src_f32.size()),
               q->layers[0].data_scale * q->layers[0].input_alpha,
               q->layers[0].data_shift, b.src_u8.data());
    src_ptr = b.src_u8.data();
  }
  const size_t S = static_cast<size_t>(N) * H;
  b.h0.assign(S, 0);
  b.c0.assign(S, 0);
  b.hn.assign(S, 0);
  b.cn.assign(S, 0);
  b.h0_u8.assign(S, 128);
  b.hn_u8.assign(S, 0);
  b.dst.resize(static_cast<size_t>(T) * N * H);
  b.scratch.resize(pd.scratchpad_desc().get_size());
  b.args = {
      {DNNL_ARG_SRC_LAYER, dnnl::memory(src, eng, src_ptr)},
      {DNNL_ARG_SRC_ITER, dnnl::memory(iter, eng, int8 ? static_cast<void*>(b.h0_u8.data()) : b.h0.data())},
      {DNNL_ARG_SRC_ITER_C, dnnl::memory(iter_c, eng, b.c0.data())},
      {DNNL_ARG_WEIGHTS_LAYER, wl_mem},
      {DNNL_ARG_WEIGHTS_ITER, wi_mem},
      {DNNL_ARG_BIAS, dnnl::memory(bias, eng, const_cast<float*>(l.bias.data()))},
      {DNNL_ARG_DST_LAYER, dnnl::memory(dst, eng, b.dst.data())},
      {DNNL_ARG_DST_ITER, dnnl::memory(iter, eng, int8 ? static_cast<void*>(b.hn_u8.data()) : b.hn.data())},
      {DNNL_ARG_DST_ITER_C, dnnl::memory(iter_c, eng, b.cn.data())},
      {DNNL_ARG_SCRATCHPAD, dnnl::memory(pd.scratchpad_desc(), eng, b.scratch.data())},
  };
  return b;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Main(int argc, char** argv) {
  int reps = 41;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
      reps = 5;
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::max(3, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: rnnserve-bench-overhead [--reps R] [--quick]\n");
      return 2;
    }
  }
  ScopedOmpThreads one(1);
  const int I = quick ? 32 : 128, H = quick ? 64 : 256, T = quick ? 10 : 50;
  const ModelSpec spec = LstmSpec(I, H, 7);
  auto shared = std::make_shared<const ModelSpec>(spec);
  std::printf("engine overhead: RnnModel::Run vs the bare oneDNN primitive, "
              "LSTM I%d H%d T%d, 1 thread, %d alternating reps, median ms (%s)\n",
              I, H, T, reps, CpuIsaName().c_str());
  std::printf("| precision | N | bare primitive | RnnModel::Run | overhead | target <= 10 %% |\n");
  std::printf("|---|---|---|---|---|---|\n");
  bool all_met = true;
  for (const char* precision : {"int8", "f32"}) {
    const bool int8 = std::string(precision) == "int8";
    for (int N : quick ? std::vector<int>{1, 8} : std::vector<int>{1, 16, 64}) {
      std::mt19937 rng(N);
      std::normal_distribution<float> g(0, 1);
      SequenceSet x;
      x.sequences = N;
      x.steps = T;
      x.features.resize(static_cast<size_t>(N) * T * I);
      for (float& v : x.features) v = g(rng);
      RnnModelOptions o;
      std::shared_ptr<const QuantizationSpec> q;
      if (int8) {
        auto cal = Calibrate(spec, x, {});
        if (!cal.ok()) {
          std::fprintf(stderr, "%s\n", cal.status().ToString().c_str());
          return 1;
        }
        q = std::make_shared<const QuantizationSpec>(*cal);
        o.precision = Precision::kInt8;
        o.quantization = q;
      }
      auto model = RnnModel::Create(shared, o);
      if (!model.ok()) {
        std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
        return 1;
      }
      Bare bare = MakeBare(spec, q.get(), N, T, x);
      const RunInput in = SliceSequences(spec, x, 0, N);
      RunOutput out;
      dnnl::stream& s = ThreadContext().stream;
      for (int w = 0; w < 3; ++w) {
        bare.Run(s);
        (void)(*model)->Run(in, &out);
      }
      std::vector<double> tb, tm;
      for (int r = 0; r < reps; ++r) {
        auto t0 = Clock::now();
        bare.Run(s);
        auto t1 = Clock::now();
        (void)(*model)->Run(in, &out);
        auto t2 = Clock::now();
        tb.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        tm.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
      }
      // Same results: the engine computes what the bare primitive computes.
      const double b = Median(tb), m = Median(tm);
      const double overhead = (m / b - 1.0) * 100.0;
      const bool met = overhead <= 10.0;
      all_met = all_met && met;
      std::printf("| %s | %d | %.3f | %.3f | %+.1f %% | %s |\n", precision, N, b, m,
                  overhead, met ? "met" : "NOT met");
      double worst = 0;
      for (size_t k = 0; k < bare.dst.size(); ++k) {
        const int n = static_cast<int>((k / H) % N), t = static_cast<int>(k / (static_cast<size_t>(H) * N));
        const float mine = out.output[(static_cast<size_t>(n) * T + t) * H + k % H];
        worst = std::max(worst, static_cast<double>(std::fabs(mine - bare.dst[k])));
      }
      if (worst > 1e-5) {
        std::fprintf(stderr, "engine and bare primitive disagree by %g\n", worst);
        return 1;
      }
    }
  }
  std::printf("%s\n", all_met ? "all overhead targets met" : "some overhead targets NOT met");
  return 0;
}

}  // namespace
}  // namespace rnnserve::engine

int main(int argc, char** argv) { return rnnserve::engine::Main(argc, argv); }
