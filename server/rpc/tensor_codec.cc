#include "server/rpc/tensor_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

namespace rnnserve::rpc {
namespace {

// raw_input_contents / raw_output_contents are little-endian with no
// padding; on a little-endian host with IEEE floats that is exactly the
// in-memory layout, so memcpy is the whole conversion.
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tensor_codec.cc memcpys little-endian wire data: little-endian only"
#endif
static_assert(std::numeric_limits<float>::is_iec559 && sizeof(float) == 4,
              "FP32 on the wire is IEEE 754 binary32");

using engine::ElementType;
using inference::InferParameter;
using inference::InferTensorContents;
using inference::ModelInferRequest;

constexpr char kInput[] = "inputs[0]";

std::string Quoted(const std::string& s) { return "'" + s + "'"; }

std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape) {
  std::string out = "[";
  for (int i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

int64_t ElementSize(ElementType type) {
  return type == ElementType::kInt64 ? 8 : 4;  // FP32 and INT32: 4 bytes
}

// What the codec needs to know about the model's data input and output,
// from the config when it lists them, else from the graph.
struct ModelInterface {
  std::string model_name;
  bool tokens = false;
  std::string input_name;
  std::string output_name;
  int64_t fixed_steps = -1;  // -1: variable T
  int64_t features = 0;      // F (feature models)
  int64_t vocab_size = 0;    // token models
  int64_t max_steps = 0;
};

ModelInterface Describe(const config::ModelConfig& config,
                        const engine::ModelSpec& spec) {
  ModelInterface m;
  m.model_name = config.name;
  m.tokens = spec.input_kind == engine::InputKind::kTokenIds;
  m.input_name =
      config.inputs.empty() ? spec.input_name : config.inputs[0].name;
  m.output_name =
      config.outputs.empty() ? spec.output_name : config.outputs[0].name;
  if (!config.inputs.empty() && config.inputs[0].dims.size() >= 2) {
    m.fixed_steps = config.inputs[0].dims[1];
  }
  m.features = spec.feature_size;
  m.vocab_size = spec.embedding.vocab_size;
  m.max_steps = config.max_sequence_length;
  return m;
}

std::string ExpectedInputText(const ModelInterface& m) {
  const std::string t =
      m.fixed_steps > 0 ? std::to_string(m.fixed_steps) : std::string("T");
  if (m.tokens) return "INT64 or INT32 token ids [N, " + t + "]";
  return "FP32 features [N, " + t + ", " + std::to_string(m.features) + "]";
}

StatusOr<ElementType> CheckDatatype(const std::string& datatype,
                                    const ModelInterface& m) {
  const bool accepted = m.tokens ? (datatype == "INT64" || datatype == "INT32")
                                 : datatype == "FP32";
  if (!accepted) {
    return InvalidArgument(
        std::string(kInput) + ".datatype: model " + Quoted(m.model_name) +
        " takes " + ExpectedInputText(m) + " (got \"" + datatype + "\")");
  }
  if (datatype == "INT64") return ElementType::kInt64;
  if (datatype == "INT32") return ElementType::kInt32;
  return ElementType::kFloat32;
}

// Checks the shape and returns its element count, which is then known to
// fit, times the element size, in int64 (so later byte arithmetic cannot
// overflow). Nothing is allocated from the shape alone: the data must be
// present in the message, and its size is checked against this count first.
StatusOr<int64_t> CheckShape(
    const google::protobuf::RepeatedField<int64_t>& shape, ElementType type,
    const ModelInterface& m) {
  const std::string path = std::string(kInput) + ".shape";
  const int rank = m.tokens ? 2 : 3;
  if (shape.size() != rank) {
    return InvalidArgument(path + ": expected " + std::to_string(rank) +
                           " dimensions, " + ExpectedInputText(m) + " (got " +
                           ShapeText(shape) + ")");
  }
  const auto dim_error = [&](int i, const std::string& what) {
    return InvalidArgument(path + "[" + std::to_string(i) + "]: " + what);
  };
  const int64_t n = shape[0];
  const int64_t t = shape[1];
  if (n < 1) {
    return dim_error(0,
                     "batch size must be >= 1 (got " + std::to_string(n) + ")");
  }
  if (n > std::numeric_limits<int>::max()) {
    return dim_error(0, "batch size must be <= " +
                            std::to_string(std::numeric_limits<int>::max()) +
                            " (got " + std::to_string(n) + ")");
  }
  if (t < 1) {
    return dim_error(1, "steps must be >= 1 (got " + std::to_string(t) + ")");
  }
  if (t > m.max_steps) {
    return dim_error(1, std::to_string(t) +
                            " steps exceed the model's max_sequence_length " +
                            std::to_string(m.max_steps));
  }
  if (m.fixed_steps > 0 && t != m.fixed_steps) {
    return dim_error(1, "model " + Quoted(m.model_name) + " takes exactly " +
                            std::to_string(m.fixed_steps) + " steps (got " +
                            std::to_string(t) + ")");
  }
  if (!m.tokens && shape[2] != m.features) {
    return dim_error(2, "model " + Quoted(m.model_name) + " takes " +
                            std::to_string(m.features) +
                            " features per step (got " +
                            std::to_string(shape[2]) + ")");
  }
  int64_t count = 1;
  int64_t bytes = 0;
  bool overflow = false;
  for (int i = 0; i < rank; ++i) {
    overflow = overflow || __builtin_mul_overflow(count, shape[i], &count);
  }
  overflow =
      overflow || __builtin_mul_overflow(count, ElementSize(type), &bytes);
  if (overflow) {
    return InvalidArgument(path + ": " + ShapeText(shape) +
                           " has too many elements (the element count "
                           "overflows)");
  }
  return count;
}

// Names and sizes of the contents fields holding data, except `skip`.
std::string FilledFields(const InferTensorContents& c,
                         const char* skip = nullptr) {
  std::string out;
  const auto add = [&](const char* name, int size) {
    if (size == 0 || (skip != nullptr && std::strcmp(name, skip) == 0)) return;
    if (!out.empty()) out += ", ";
    out += std::to_string(size) + " elements in " + name;
  };
  add("bool_contents", c.bool_contents_size());
  add("int_contents", c.int_contents_size());
  add("int64_contents", c.int64_contents_size());
  add("uint_contents", c.uint_contents_size());
  add("uint64_contents", c.uint64_contents_size());
  add("fp32_contents", c.fp32_contents_size());
  add("fp64_contents", c.fp64_contents_size());
  add("bytes_contents", c.bytes_contents_size());
  return out;
}

const char* ContentsFieldName(ElementType type) {
  switch (type) {
    case ElementType::kFloat32:
      return "fp32_contents";
    case ElementType::kInt64:
      return "int64_contents";
    case ElementType::kInt32:
      return "int_contents";
  }
  return "?";
}

int ContentsSize(const InferTensorContents& c, ElementType type) {
  switch (type) {
    case ElementType::kFloat32:
      return c.fp32_contents_size();
    case ElementType::kInt64:
      return c.int64_contents_size();
    case ElementType::kInt32:
      return c.int_contents_size();
  }
  return 0;
}

// Checks that input 0's data is in exactly one place (raw_input_contents[0]
// or the datatype's contents field) and holds `count` elements; sets `raw`
// to where it is.
Status CheckDataLayout(const ModelInferRequest& request, ElementType type,
                       int64_t count, bool* raw) {
  const auto& input = request.inputs(0);
  const std::string what =
      std::string(config::DataTypeName(type)) + " " + ShapeText(input.shape());
  if (request.raw_input_contents_size() > 0) {
    if (request.raw_input_contents_size() != request.inputs_size()) {
      return InvalidArgument("raw_input_contents: " +
                             std::to_string(request.raw_input_contents_size()) +
                             " entries, expected " +
                             std::to_string(request.inputs_size()) +
                             " (one per input)");
    }
    const std::string filled = FilledFields(input.contents());
    if (!filled.empty()) {
      return InvalidArgument(std::string(kInput) +
                             ".contents: must be empty when "
                             "raw_input_contents is used (got " +
                             filled + ")");
    }
    const int64_t expected = count * ElementSize(type);  // CheckShape: fits
    const size_t got = request.raw_input_contents(0).size();
    if (got != static_cast<uint64_t>(expected)) {
      return InvalidArgument("raw_input_contents[0]: " + std::to_string(got) +
                             " bytes, expected " + std::to_string(expected) +
                             " for " + what);
    }
    *raw = true;
    return Status::Ok();
  }
  const char* field = ContentsFieldName(type);
  const std::string others = FilledFields(input.contents(), field);
  if (!others.empty()) {
    return InvalidArgument(std::string(kInput) + ".contents: data for " + what +
                           " must be in " + field + " (got " + others + ")");
  }
  const int size = ContentsSize(input.contents(), type);
  if (size != count) {
    return InvalidArgument(
        std::string(kInput) + ".contents: " + std::to_string(size) +
        " elements in " + field + ", expected " + std::to_string(count) +
        " for " + what + (size == 0 ? " (or send raw_input_contents)" : ""));
  }
  *raw = false;
  return Status::Ok();
}

// "element k (at [n, t, f])" for messages.
std::string ElementText(size_t k, int64_t steps, int64_t features) {
  std::string at;
  if (features > 0) {
    const int64_t per_row = steps * features;
    const int64_t i = static_cast<int64_t>(k);
    at = std::to_string(i / per_row) + ", " +
         std::to_string((i % per_row) / features) + ", " +
         std::to_string(i % features);
  } else {
    const int64_t i = static_cast<int64_t>(k);
    at = std::to_string(i / steps) + ", " + std::to_string(i % steps);
  }
  return std::string(kInput) + " element " + std::to_string(k) + " (at [" + at +
         "])";
}

Status DecodeFeatures(const ModelInferRequest& request, int64_t count, bool raw,
                      int64_t steps, int64_t features,
                      std::vector<float>* out) {
  out->resize(static_cast<size_t>(count));
  if (raw) {
    std::memcpy(out->data(), request.raw_input_contents(0).data(),
                out->size() * sizeof(float));
  } else {
    const auto& src = request.inputs(0).contents().fp32_contents();
    std::copy(src.begin(), src.end(), out->begin());
  }
  for (size_t k = 0; k < out->size(); ++k) {
    const float v = (*out)[k];
    if (std::isfinite(v)) continue;
    const char* kind = std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf");
    return InvalidArgument(ElementText(k, steps, features) + ": feature is " +
                           kind + "; features must be finite");
  }
  return Status::Ok();
}

Status DecodeTokens(const ModelInferRequest& request, ElementType type,
                    int64_t count, bool raw, int64_t steps, int64_t vocab,
                    std::vector<int64_t>* out) {
  out->resize(static_cast<size_t>(count));
  if (type == ElementType::kInt64) {
    if (raw) {
      std::memcpy(out->data(), request.raw_input_contents(0).data(),
                  out->size() * sizeof(int64_t));
    } else {
      const auto& src = request.inputs(0).contents().int64_contents();
      std::copy(src.begin(), src.end(), out->begin());
    }
  } else if (raw) {
    const char* bytes = request.raw_input_contents(0).data();
    for (size_t k = 0; k < out->size(); ++k) {
      int32_t v;
      std::memcpy(&v, bytes + k * sizeof(int32_t), sizeof(v));
      (*out)[k] = v;
    }
  } else {
    const auto& src = request.inputs(0).contents().int_contents();
    std::copy(src.begin(), src.end(), out->begin());
  }
  for (size_t k = 0; k < out->size(); ++k) {
    const int64_t id = (*out)[k];
    if (id >= 0 && id < vocab) continue;
    return InvalidArgument(ElementText(k, steps, 0) + ": token id " +
                           std::to_string(id) + " outside the vocabulary [0, " +
                           std::to_string(vocab) + ")");
  }
  return Status::Ok();
}

Status CheckRequestedOutputs(const ModelInferRequest& request,
                             const ModelInterface& m) {
  for (int i = 0; i < request.outputs_size(); ++i) {
    const std::string& name = request.outputs(i).name();
    if (name == m.output_name) continue;
    return InvalidArgument("outputs[" + std::to_string(i) + "].name: model " +
                           Quoted(m.model_name) + " has no output " +
                           Quoted(name) + " (its output is " +
                           Quoted(m.output_name) + ")");
  }
  return Status::Ok();
}

const char* ParameterTypeName(const InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case InferParameter::kBoolParam:
      return "bool_param";
    case InferParameter::kInt64Param:
      return "int64_param";
    case InferParameter::kStringParam:
      return "string_param";
    case InferParameter::kDoubleParam:
      return "double_param";
    case InferParameter::kUint64Param:
      return "uint64_param";
    case InferParameter::PARAMETER_CHOICE_NOT_SET:
      break;
  }
  return "no value";
}

// Strict decimal: digits only (no sign, spaces or prefix), fits uint64.
bool ParseDecimalUint64(const std::string& text, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    if (__builtin_mul_overflow(v, uint64_t{10}, &v) ||
        __builtin_add_overflow(v, static_cast<uint64_t>(c - '0'), &v)) {
      return false;
    }
  }
  *out = v;
  return true;
}

Status ParseSequenceId(const InferParameter& p, uint64_t* id) {
  const std::string path = "parameters.sequence_id: ";
  switch (p.parameter_choice_case()) {
    case InferParameter::kInt64Param:
      if (p.int64_param() < 0) {
        return InvalidArgument(path + "must be >= 0 (got " +
                               std::to_string(p.int64_param()) + ")");
      }
      *id = static_cast<uint64_t>(p.int64_param());
      return Status::Ok();
    case InferParameter::kUint64Param:
      *id = p.uint64_param();
      return Status::Ok();
    case InferParameter::kStringParam:
      if (!ParseDecimalUint64(p.string_param(), id)) {
        // Truncated: the value is the client's and may be huge.
        std::string shown = p.string_param().substr(0, 40);
        if (p.string_param().size() > 40) shown += "...";
        return InvalidArgument(path +
                               "a string_param must be a decimal uint64 "
                               "(got \"" +
                               shown + "\")");
      }
      return Status::Ok();
    default:
      return InvalidArgument(path +
                             "must be an int64_param, uint64_param or "
                             "decimal string_param (got " +
                             ParameterTypeName(p) + ")");
  }
}

Status ParseBool(const std::string& name, const InferParameter& p, bool* out) {
  if (p.parameter_choice_case() != InferParameter::kBoolParam) {
    return InvalidArgument("parameters." + name +
                           ": must be a bool_param (got " +
                           ParameterTypeName(p) + ")");
  }
  *out = p.bool_param();
  return Status::Ok();
}

Status ParseTimeout(const InferParameter& p, std::optional<int64_t>* out) {
  const std::string path = "parameters.timeout: ";
  if (p.parameter_choice_case() != InferParameter::kInt64Param) {
    return InvalidArgument(path +
                           "must be an int64_param in microseconds (got " +
                           ParameterTypeName(p) + ")");
  }
  if (p.int64_param() < 0) {
    return InvalidArgument(path + "must be >= 0 microseconds (got " +
                           std::to_string(p.int64_param()) + ")");
  }
  if (p.int64_param() > 0) *out = p.int64_param();
  return Status::Ok();
}

Status ParseParameters(const ModelInferRequest& request,
                       DecodedRequest* decoded) {
  const auto& params = request.parameters();
  if (auto it = params.find("sequence_id"); it != params.end()) {
    RETURN_IF_ERROR(ParseSequenceId(it->second, &decoded->sequence.id));
  }
  if (auto it = params.find("sequence_start"); it != params.end()) {
    RETURN_IF_ERROR(
        ParseBool("sequence_start", it->second, &decoded->sequence.start));
  }
  if (auto it = params.find("sequence_end"); it != params.end()) {
    RETURN_IF_ERROR(
        ParseBool("sequence_end", it->second, &decoded->sequence.end));
  }
  if (auto it = params.find("timeout"); it != params.end()) {
    RETURN_IF_ERROR(ParseTimeout(it->second, &decoded->timeout_us));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<DecodedRequest> DecodeInferRequest(const ModelInferRequest& request,
                                            const config::ModelConfig& config,
                                            const engine::ModelSpec& spec) {
  const ModelInterface m = Describe(config, spec);
  if (request.inputs_size() != 1) {
    return InvalidArgument("inputs: model " + Quoted(m.model_name) +
                           " takes exactly one input " + Quoted(m.input_name) +
                           " (got " + std::to_string(request.inputs_size()) +
                           ")");
  }
  const auto& input = request.inputs(0);
  if (input.name() != m.input_name) {
    return InvalidArgument(std::string(kInput) + ".name: model " +
                           Quoted(m.model_name) + " has no input " +
                           Quoted(input.name()) + " (its input is " +
                           Quoted(m.input_name) + ")");
  }
  ASSIGN_OR_RETURN(const ElementType type, CheckDatatype(input.datatype(), m));
  ASSIGN_OR_RETURN(const int64_t count, CheckShape(input.shape(), type, m));
  RETURN_IF_ERROR(CheckRequestedOutputs(request, m));

  DecodedRequest decoded;
  RETURN_IF_ERROR(ParseParameters(request, &decoded));
  RETURN_IF_ERROR(CheckDataLayout(request, type, count, &decoded.raw));
  decoded.batch = static_cast<int>(input.shape(0));
  decoded.steps = static_cast<int>(input.shape(1));
  if (m.tokens) {
    RETURN_IF_ERROR(DecodeTokens(request, type, count, decoded.raw,
                                 decoded.steps, m.vocab_size, &decoded.tokens));
  } else {
    RETURN_IF_ERROR(DecodeFeatures(request, count, decoded.raw, decoded.steps,
                                   m.features, &decoded.features));
  }
  return decoded;
}

void EncodeInferResponse(const ModelInferRequest& request,
                         const config::ModelConfig& config, int64_t version,
                         const std::vector<int64_t>& shape, const float* data,
                         bool raw, inference::ModelInferResponse* response) {
  response->Clear();
  response->set_model_name(config.name);
  response->set_model_version(std::to_string(version));
  response->set_id(request.id());
  auto* output = response->add_outputs();
  if (!config.outputs.empty()) output->set_name(config.outputs[0].name);
  output->set_datatype(config::DataTypeName(ElementType::kFloat32));
  size_t count = 1;  // the caller's shape, trusted
  for (int64_t d : shape) {
    output->add_shape(d);
    count *= static_cast<size_t>(d);
  }
  if (data == nullptr) count = 0;  // only valid for an empty tensor
  if (raw) {
    std::string* bytes = response->add_raw_output_contents();
    if (count > 0) {
      bytes->assign(reinterpret_cast<const char*>(data), count * sizeof(float));
    }
  } else {
    auto* out = output->mutable_contents()->mutable_fp32_contents();
    out->Resize(static_cast<int>(count), 0.0f);
    std::copy(data, data + count, out->begin());
  }
}

StatusOr<std::optional<int64_t>> ParseModelVersion(const std::string& text,
                                                   const char* field) {
  if (text.empty()) return std::optional<int64_t>();
  if (text.size() > 18 ||
      !std::all_of(text.begin(), text.end(),
                   [](char c) { return c >= '0' && c <= '9'; })) {
    return InvalidArgument(std::string(field) + ": '" + text +
                           "' is not a version number");
  }
  return std::optional<int64_t>(std::stoll(text));
}

}  // namespace rnnserve::rpc
