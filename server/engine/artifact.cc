#include "server/engine/artifact.h"

#include <openssl/evp.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "proto/rnnserve_model.pb.h"

namespace rnnserve::engine {
namespace {

constexpr char kMagic[] = "rnnserve.quantized-model";
constexpr uint32_t kFormatVersion = 1;

template <typename T>
std::string ToBytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()),
                     v.size() * sizeof(T));
}

// Copies raw bytes into `out`, checking that they hold exactly `count` Ts.
template <typename T>
Status FromBytes(const std::string& bytes, size_t count,
                 const std::string& field, std::vector<T>* out) {
  if (bytes.size() != count * sizeof(T)) {
    return InvalidArgument(field + ": " + std::to_string(bytes.size()) +
                           " bytes, expected " +
                           std::to_string(count * sizeof(T)));
  }
  out->resize(count);
  if (count) std::memcpy(out->data(), bytes.data(), bytes.size());
  return Status::Ok();
}

}  // namespace

std::string Sha256Hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

bool LooksLikeArtifact(const std::string& bytes) {
  // The magic is field 1, serialized first: tag byte, length byte, magic.
  const size_t pos = bytes.find(kMagic, 0, sizeof(kMagic) - 1);
  return pos != std::string::npos && pos < 8;
}

StatusOr<std::string> SerializeArtifact(const ModelSpec& spec,
                                        const QuantizationSpec& q,
                                        const std::string& source_sha256,
                                        const std::string& source_name) {
  RETURN_IF_ERROR(ValidateQuantization(spec, q));
  artifact::QuantizedModel m;
  m.set_magic(kMagic);
  m.set_format_version(kFormatVersion);
  m.set_source_sha256(source_sha256);
  m.set_source_name(source_name);
  m.set_input_name(spec.input_name);
  m.set_token_input(spec.input_kind == InputKind::kTokenIds);
  m.set_input_element_type(static_cast<int>(spec.input_type));
  m.set_feature_size(spec.feature_size);
  m.set_batch_first(spec.batch_first);
  m.set_initial_h_name(spec.initial_h_name);
  m.set_initial_c_name(spec.initial_c_name);
  m.set_output_name(spec.output_name);
  m.set_final_h_name(spec.final_h_name);
  m.set_final_c_name(spec.final_c_name);
  if (spec.has_embedding) {
    auto* e = m.mutable_embedding();
    e->set_vocab_size(spec.embedding.vocab_size);
    e->set_dim(spec.embedding.dim);
    e->set_table_f32(ToBytes(spec.embedding.table));
  }
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const RnnLayerSpec& l = spec.layers[i];
    const LayerQuantization& lq = q.layers[i];
    auto* pl = m.add_layers();
    pl->set_cell(l.cell == CellType::kLstm ? artifact::RnnLayer::LSTM
                                           : artifact::RnnLayer::GRU);
    pl->set_input_size(l.input_size);
    pl->set_hidden_size(l.hidden_size);
    pl->set_directions(l.directions);
    pl->set_bias_f32(ToBytes(l.bias));
    if (lq.quantized) {
      auto* pq = pl->mutable_quantization();
      pq->set_data_scale(lq.data_scale);
      pq->set_data_shift(lq.data_shift);
      pq->set_input_alpha(lq.input_alpha);
      pq->set_chained_u8_input(lq.chained_u8_input);
      for (float s : lq.weight_scales) pq->add_weight_scales(s);
      pq->set_w_layer_s8(ToBytes(lq.w_layer_s8));
      pq->set_w_iter_s8(ToBytes(lq.w_iter_s8));
      pq->set_observed_input_absmax(lq.observed_input_absmax);
      pq->set_observed_hidden_absmax(lq.observed_hidden_absmax);
      pq->set_input_clip(lq.input_clip);
      pq->set_grid(lq.grid);
    } else {
      pl->set_w_layer_f32(ToBytes(l.w_layer));
      pl->set_w_iter_f32(ToBytes(l.w_iter));
    }
  }
  m.set_last_step_only(spec.last_step_only);
  if (spec.has_head) {
    auto* h = m.mutable_head();
    h->set_in_features(spec.head.in_features);
    h->set_out_features(spec.head.out_features);
    h->set_weight_f32(ToBytes(spec.head.weight));
    h->set_bias_f32(ToBytes(spec.head.bias));
  }
  m.set_activation(static_cast<int>(spec.activation));
  m.set_calibration_method(CalibrationMethodName(q.method));
  m.set_calibration_percentile(q.percentile);
  m.set_per_channel(q.per_channel);
  m.set_calibration_sequences(q.calibration_sequences);
  m.set_created_by("rnnserve-model");
  std::string out;
  if (!m.SerializeToString(&out)) return Internal("artifact serialization");
  return out;
}

Status WriteArtifact(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return NotFound(path + ": cannot open for writing");
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) return Internal(path + ": write failed");
  return Status::Ok();
}

StatusOr<LoadedArtifact> ParseArtifact(const std::string& bytes,
                                       const std::string& what) {
  artifact::QuantizedModel m;
  if (!m.ParseFromString(bytes) || m.magic() != kMagic) {
    return InvalidArgument(what +
                           ": not an rnnserve quantized-model artifact "
                           "(corrupt, truncated or another file type)");
  }
  if (m.format_version() != kFormatVersion) {
    return InvalidArgument(what + ": artifact format version " +
                           std::to_string(m.format_version()) +
                           " is not supported (this build reads " +
                           std::to_string(kFormatVersion) + ")");
  }
  auto bad = [&](const Status& s) { return s.Annotate(what); };
  LoadedArtifact a;
  a.source_sha256 = m.source_sha256();
  a.source_name = m.source_name();
  ModelSpec& spec = a.spec;
  spec.input_name = m.input_name();
  spec.input_kind = m.token_input() ? InputKind::kTokenIds : InputKind::kFeatures;
  if (m.input_element_type() < 0 || m.input_element_type() > 2 ||
      m.activation() < 0 || m.activation() > 2) {
    return InvalidArgument(what + ": bad enum value");
  }
  spec.input_type = static_cast<ElementType>(m.input_element_type());
  spec.feature_size = m.feature_size();
  spec.batch_first = m.batch_first();
  spec.initial_h_name = m.initial_h_name();
  spec.initial_c_name = m.initial_c_name();
  spec.output_name = m.output_name();
  spec.final_h_name = m.final_h_name();
  spec.final_c_name = m.final_c_name();
  // Sizes are checked against each other before any allocation they drive.
  constexpr int64_t kMaxDim = 1 << 20;
  auto dim_ok = [&](int64_t d) { return d > 0 && d <= kMaxDim; };
  if (m.has_embedding()) {
    spec.has_embedding = true;
    spec.embedding.vocab_size = m.embedding().vocab_size();
    spec.embedding.dim = m.embedding().dim();
    if (!dim_ok(spec.embedding.vocab_size) || !dim_ok(spec.embedding.dim)) {
      return InvalidArgument(what + ": bad embedding size");
    }
    RETURN_IF_ERROR(bad(FromBytes(
        m.embedding().table_f32(),
        static_cast<size_t>(spec.embedding.vocab_size) * spec.embedding.dim,
        "embedding table", &spec.embedding.table)));
  }
  QuantizationSpec& q = a.quantization;
  StatusOr<CalibrationMethod> method =
      ParseCalibrationMethod(m.calibration_method());
  if (!method.ok()) return bad(method.status());
  q.method = *method;
  q.percentile = m.calibration_percentile();
  q.per_channel = m.per_channel();
  q.calibration_sequences = m.calibration_sequences();
  for (int i = 0; i < m.layers_size(); ++i) {
    const auto& pl = m.layers(i);
    const std::string where = "layer " + std::to_string(i);
    RnnLayerSpec l;
    if (pl.cell() == artifact::RnnLayer::LSTM) {
      l.cell = CellType::kLstm;
    } else if (pl.cell() == artifact::RnnLayer::GRU) {
      l.cell = CellType::kGru;
    } else {
      return InvalidArgument(what + ": " + where + ": unknown cell");
    }
    l.input_size = pl.input_size();
    l.hidden_size = pl.hidden_size();
    l.directions = pl.directions();
    if (!dim_ok(l.input_size) || !dim_ok(l.hidden_size) ||
        (l.directions != 1 && l.directions != 2)) {
      return InvalidArgument(what + ": " + where + ": bad sizes");
    }
    const size_t GH = static_cast<size_t>(l.gates()) * l.hidden_size;
    const size_t nl = l.directions * l.input_size * GH;
    const size_t ni = l.directions * l.hidden_size * GH;
    RETURN_IF_ERROR(bad(FromBytes(
        pl.bias_f32(),
        static_cast<size_t>(l.directions) * l.bias_gates() * l.hidden_size,
        where + " bias", &l.bias)));
    LayerQuantization lq;
    if (pl.has_quantization()) {
      const auto& pq = pl.quantization();
      lq.quantized = true;
      lq.data_scale = pq.data_scale();
      lq.data_shift = pq.data_shift();
      lq.input_alpha = pq.input_alpha();
      lq.chained_u8_input = pq.chained_u8_input();
      lq.weight_scales.assign(pq.weight_scales().begin(),
                              pq.weight_scales().end());
      RETURN_IF_ERROR(bad(FromBytes(pq.w_layer_s8(), nl, where + " w_layer_s8",
                                    &lq.w_layer_s8)));
      RETURN_IF_ERROR(bad(
          FromBytes(pq.w_iter_s8(), ni, where + " w_iter_s8", &lq.w_iter_s8)));
      lq.observed_input_absmax = pq.observed_input_absmax();
      lq.observed_hidden_absmax = pq.observed_hidden_absmax();
      lq.input_clip = pq.input_clip();
      lq.grid = pq.grid();
      if (lq.weight_scales.size() != GH && lq.weight_scales.size() != 1) {
        return InvalidArgument(what + ": " + where + ": bad weight scales");
      }
      for (float s : lq.weight_scales) {
        if (!(s > 0) || !std::isfinite(s)) {
          return InvalidArgument(what + ": " + where + ": bad weight scale");
        }
      }
      if (!(lq.input_alpha > 0) || !std::isfinite(lq.input_alpha)) {
        return InvalidArgument(what + ": " + where + ": bad input_alpha");
      }
      // The f32 view of an int8 layer: dequantized weights.
      auto dequant = [&](const std::vector<int8_t>& w8, float mult,
                         std::vector<float>* w) {
        w->resize(w8.size());
        for (size_t k = 0; k < w8.size(); ++k) {
          const float s = lq.weight_scales.size() == 1 ? lq.weight_scales[0]
                                                       : lq.weight_scales[k % GH];
          (*w)[k] = static_cast<float>(w8[k]) / s * mult;
        }
      };
      dequant(lq.w_layer_s8, lq.input_alpha, &l.w_layer);
      dequant(lq.w_iter_s8, 1.0f, &l.w_iter);
    } else {
      RETURN_IF_ERROR(bad(FromBytes(pl.w_layer_f32(), nl, where + " w_layer",
                                    &l.w_layer)));
      RETURN_IF_ERROR(
          bad(FromBytes(pl.w_iter_f32(), ni, where + " w_iter", &l.w_iter)));
    }
    spec.layers.push_back(std::move(l));
    q.layers.push_back(std::move(lq));
  }
  spec.last_step_only = m.last_step_only();
  if (m.has_head()) {
    spec.has_head = true;
    spec.head.in_features = m.head().in_features();
    spec.head.out_features = m.head().out_features();
    if (!dim_ok(spec.head.in_features) || !dim_ok(spec.head.out_features)) {
      return InvalidArgument(what + ": bad head size");
    }
    RETURN_IF_ERROR(bad(FromBytes(
        m.head().weight_f32(),
        static_cast<size_t>(spec.head.in_features) * spec.head.out_features,
        "head weight", &spec.head.weight)));
    RETURN_IF_ERROR(bad(FromBytes(m.head().bias_f32(), spec.head.out_features,
                                  "head bias", &spec.head.bias)));
  }
  spec.activation = static_cast<OutputActivation>(m.activation());
  if (spec.layers.empty()) return InvalidArgument(what + ": no layers");
  const std::string problem = ValidateModelSpec(spec);
  if (!problem.empty()) return InvalidArgument(what + ": " + problem);
  RETURN_IF_ERROR(bad(ValidateQuantization(spec, q)));
  return a;
}

StatusOr<LoadedArtifact> LoadArtifactFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return NotFound(path + ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ParseArtifact(ss.str(), path);
}

}  // namespace rnnserve::engine
