#include "server/engine/onnx_import.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <unordered_map>
#include <utility>
#include <vector>

namespace rnnserve::engine {
namespace {

// Slice ends at or above this mean "to the end" (torch writes INT64_MAX).
constexpr int64_t kSliceToEnd = int64_t{1} << 31;
// Upper bound for a size that becomes an int of the ModelSpec.
constexpr int64_t kMaxSize = int64_t{1} << 24;
// Upper bound on the elements of one tensor.
constexpr int64_t kMaxElements = int64_t{1} << 32;
// Upper bound on the length of a shape / index tensor.
constexpr size_t kMaxShapeElements = 4096;
// Opsets whose operator semantics this file follows.
constexpr int64_t kMinOpset = 9;
constexpr int64_t kMaxOpset = 20;

// ---------------------------------------------------------------------------
// Abstract values: what the importer knows about each tensor of the graph.

// Labels of the sequence tensor's axes. The data input's two leading axes are
// kIn0 and kIn1; which of them is time is learnt at the first LSTM/GRU node
// (its X must be [time, batch, features]).
enum class AxisKind { kIn0, kIn1, kDir, kFeat, kOne };
struct Axis {
  AxisKind kind;
  int64_t size;  // -1 when unknown (always for kIn0 / kIn1)
};

// One element of a small integer tensor: a shape or an index list.
struct Dim {
  enum class Kind { kKnown, kIn0, kIn1, kUnknown };
  Kind kind = Kind::kUnknown;
  int64_t value = 0;  // kKnown only
  static Dim Known(int64_t v) { return Dim{Kind::kKnown, v}; }
  static Dim Unknown() { return Dim{Kind::kUnknown, 0}; }
  bool known() const { return kind == Kind::kKnown; }
};

struct FloatTensor {
  std::vector<int64_t> dims;
  std::vector<float> values;
};

// Where one layer's initial h or c comes from.
struct StateSource {
  std::string input;  // graph input name; empty means zeros
  int64_t begin = 0;  // rows [begin, end) of [layers*dirs, N, H]
  int64_t end = -1;   // -1: to the end
};

// The model built along the data path so far. Shared immutably: a data op
// copies it (cheap, the weights sit behind shared_ptrs) and extends the copy,
// so two branches of the graph never see each other's changes.
struct Pipeline {
  std::string input_name;
  InputKind input_kind = InputKind::kFeatures;
  ElementType input_type = ElementType::kFloat32;
  std::shared_ptr<const EmbeddingSpec> embedding;
  std::vector<std::shared_ptr<const RnnLayerSpec>> layers;
  std::vector<StateSource> init_h, init_c;  // one per layer
  bool last_step = false;
  std::shared_ptr<const LinearSpec> head;
  bool head_bias = false;
  OutputActivation activation = OutputActivation::kNone;
};

enum class Kind {
  kFloatConst,  // a float constant (weights)
  kInts,        // a small integer tensor (rank 0 or 1), maybe symbolic
  kZeros,       // a float tensor of zeros (ConstantOfShape)
  kStateInput,  // rows of an h0/c0 graph input
  kSeq,         // the data path
  kFinalState,  // Y_h / Y_c of consecutive layers
  kOpaque,      // anything else; using it is an error
};

struct Value {
  Kind kind = Kind::kOpaque;
  std::string note;                           // kOpaque: what it is
  std::shared_ptr<const FloatTensor> tensor;  // kFloatConst
  std::vector<Dim> ints;                      // kInts: elements; kZeros: shape
  bool scalar = false;                        // kInts of rank 0
  bool shape_known = true;                    // kZeros
  StateSource state;                          // kStateInput
  std::vector<Axis> axes;                     // kSeq
  std::shared_ptr<const Pipeline>
      pipeline;          // kSeq; kFinalState: after its last layer
  bool is_cell = false;  // kFinalState: c rather than h
  int first_layer = 0;   // kFinalState
  std::vector<std::shared_ptr<const RnnLayerSpec>> state_layers;  // kFinalState

  static Value Opaque(std::string note) {
    Value v;
    v.note = std::move(note);
    return v;
  }
  static Value Ints(std::vector<Dim> ints, bool scalar) {
    Value v;
    v.kind = Kind::kInts;
    v.ints = std::move(ints);
    v.scalar = scalar;
    return v;
  }
  static Value Float(FloatTensor t) {
    Value v;
    v.kind = Kind::kFloatConst;
    v.tensor = std::make_shared<const FloatTensor>(std::move(t));
    return v;
  }
  static Value Zeros(std::vector<Dim> shape, bool known) {
    Value v;
    v.kind = Kind::kZeros;
    v.ints = std::move(shape);
    v.shape_known = known;
    return v;
  }
  static Value Seq(std::vector<Axis> axes, std::shared_ptr<const Pipeline> p) {
    Value v;
    v.kind = Kind::kSeq;
    v.axes = std::move(axes);
    v.pipeline = std::move(p);
    return v;
  }
};

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kFloatConst:
      return "a float constant";
    case Kind::kInts:
      return "an integer shape/index tensor";
    case Kind::kZeros:
      return "a zero tensor";
    case Kind::kStateInput:
      return "an initial-state input";
    case Kind::kSeq:
      return "the sequence data";
    case Kind::kFinalState:
      return "a final state";
    case Kind::kOpaque:
      return "an unsupported tensor";
  }
  return "?";
}

std::string JoinInts(const std::vector<int64_t>& v) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  s << "]";
  return s.str();
}

std::string AxesString(const std::vector<Axis>& axes, bool time_is_in1,
                       bool bound) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < axes.size(); ++i) {
    if (i) s << ", ";
    const Axis& a = axes[i];
    switch (a.kind) {
      case AxisKind::kIn0:
      case AxisKind::kIn1: {
        const bool is_in1 = a.kind == AxisKind::kIn1;
        s << (!bound ? (is_in1 ? "in1" : "in0")
                     : (is_in1 == time_is_in1 ? "T" : "N"));
        break;
      }
      case AxisKind::kDir:
        s << "dirs=" << a.size;
        break;
      case AxisKind::kFeat:
        s << "features=" << a.size;
        break;
      case AxisKind::kOne:
        s << "1";
        break;
    }
  }
  s << "]";
  return s.str();
}

// Element count of `dims`, or an error for negative or absurd dims.
StatusOr<int64_t> ElementCount(const std::vector<int64_t>& dims) {
  int64_t count = 1;
  for (int64_t d : dims) {
    if (d < 0)
      return InvalidArgument("negative dimension in " + JoinInts(dims));
    if (d != 0 && count > kMaxElements / d) {
      return InvalidArgument("dimensions " + JoinInts(dims) + " are too large");
    }
    count *= d;
  }
  return count;
}

// Copies `count` little-endian elements of type T out of raw_data.
template <typename T>
bool ReadRaw(const std::string& raw, int64_t count, std::vector<T>* out) {
  if (static_cast<int64_t>(raw.size()) !=
      count * static_cast<int64_t>(sizeof(T))) {
    return false;
  }
  out->resize(static_cast<size_t>(count));
  if (count > 0) std::memcpy(out->data(), raw.data(), raw.size());
  return true;
}

// Converts a TensorProto (initializer or Constant value) into a Value.
StatusOr<Value> TensorToValue(const onnx::TensorProto& t) {
  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    return Unimplemented(
        "tensor data stored in an external file is not supported");
  }
  std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
  ASSIGN_OR_RETURN(const int64_t count, ElementCount(dims));
  const bool raw = t.has_raw_data();
  auto size_error = [&](int64_t have) {
    return InvalidArgument("tensor holds " + std::to_string(have) +
                           " values but its dims " + JoinInts(dims) + " need " +
                           std::to_string(count));
  };
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT: {
      FloatTensor f;
      f.dims = dims;
      if (raw) {
        if (!ReadRaw(t.raw_data(), count, &f.values)) {
          return size_error(static_cast<int64_t>(t.raw_data().size() / 4));
        }
      } else {
        if (t.float_data_size() != count)
          return size_error(t.float_data_size());
        f.values.assign(t.float_data().begin(), t.float_data().end());
      }
      return Value::Float(std::move(f));
    }
    case onnx::TensorProto::DOUBLE: {
      std::vector<double> d;
      if (raw) {
        if (!ReadRaw(t.raw_data(), count, &d)) {
          return size_error(static_cast<int64_t>(t.raw_data().size() / 8));
        }
      } else {
        if (t.double_data_size() != count)
          return size_error(t.double_data_size());
        d.assign(t.double_data().begin(), t.double_data().end());
      }
      FloatTensor f;
      f.dims = dims;
      f.values.assign(d.begin(), d.end());
      return Value::Float(std::move(f));
    }
    case onnx::TensorProto::INT64:
    case onnx::TensorProto::INT32: {
      std::vector<int64_t> v;
      if (t.data_type() == onnx::TensorProto::INT64) {
        if (raw) {
          if (!ReadRaw(t.raw_data(), count, &v)) {
            return size_error(static_cast<int64_t>(t.raw_data().size() / 8));
          }
        } else {
          if (t.int64_data_size() != count)
            return size_error(t.int64_data_size());
          v.assign(t.int64_data().begin(), t.int64_data().end());
        }
      } else {
        std::vector<int32_t> v32;
        if (raw) {
          if (!ReadRaw(t.raw_data(), count, &v32)) {
            return size_error(static_cast<int64_t>(t.raw_data().size() / 4));
          }
        } else {
          if (t.int32_data_size() != count)
            return size_error(t.int32_data_size());
          v32.assign(t.int32_data().begin(), t.int32_data().end());
        }
        v.assign(v32.begin(), v32.end());
      }
      if (dims.size() > 1) {
        return Value::Opaque("an integer constant of rank " +
                             std::to_string(dims.size()));
      }
      std::vector<Dim> ints;
      for (int64_t x : v) ints.push_back(Dim::Known(x));
      return Value::Ints(std::move(ints), dims.empty());
    }
    default:
      return Unimplemented(
          "tensor element type " + std::to_string(t.data_type()) +
          " is not supported (float, double, int64, int32 are)");
  }
}

// Normalizes a possibly negative axis against `rank`; false if out of range.
bool NormalizeAxis(int64_t axis, int64_t rank, int64_t* out) {
  if (axis < -rank || axis >= rank) return false;
  *out = axis < 0 ? axis + rank : axis;
  return true;
}

// ONNX Slice on one axis of size n: the first index and the element count.
// `step` is non-zero.
void SliceRange(int64_t n, int64_t start, int64_t end, int64_t step,
                int64_t* first, int64_t* count) {
  if (start < 0) start = std::max<int64_t>(start, -n) + n;
  if (end < 0) end = std::max<int64_t>(end, -n - 1) + n;
  if (step > 0) {
    start = std::min(start, n);
    end = std::min(end, n);
    *count = end > start ? (end - start + step - 1) / step : 0;
  } else {
    start = std::min(start, n - 1);
    end = std::min(end, n - 1);
    *count = start > end ? (start - end + (-step) - 1) / (-step) : 0;
  }
  *first = start;
}

// Row-major strides of `dims`.
std::vector<int64_t> Strides(const std::vector<int64_t>& dims) {
  std::vector<int64_t> strides(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) strides[i - 1] = strides[i] * dims[i];
  return strides;
}

// Copies the elements of `t` at source offsets base + sum(index[a] * step[a])
// for every index of `out_dims`, in row-major order: the common core of
// Transpose and Slice on constants.
FloatTensor Gather(const FloatTensor& t, std::vector<int64_t> out_dims,
                   int64_t base, const std::vector<int64_t>& step) {
  FloatTensor out;
  out.dims = std::move(out_dims);
  int64_t count = 1;
  for (int64_t d : out.dims) count *= d;
  out.values.reserve(static_cast<size_t>(count));
  std::vector<int64_t> index(out.dims.size(), 0);
  for (int64_t k = 0; k < count; ++k) {
    int64_t offset = base;
    for (size_t a = 0; a < index.size(); ++a) offset += index[a] * step[a];
    out.values.push_back(t.values[offset]);
    for (size_t a = index.size(); a-- > 0;) {
      if (++index[a] < out.dims[a]) break;
      index[a] = 0;
    }
  }
  return out;
}

// The ONNX gate (row block) of each canonical gate: LSTM i,f,c~,o <- ONNX
// i,o,f,c; GRU u,r,o <- ONNX z,r,h.
constexpr int kLstmOnnxGate[4] = {0, 2, 3, 1};
constexpr int kGruOnnxGate[3] = {0, 1, 2};

// Fills the canonical weights of `layer` from ONNX W [D, G*H, I],
// R [D, G*H, H] and B [D, 2*G*H] (B may be null: zeros). Shapes are checked
// by the caller.
void ConvertRnnWeights(const FloatTensor& w, const FloatTensor& r,
                       const FloatTensor* b, RnnLayerSpec* layer) {
  const size_t dirs = layer->directions;
  const size_t in = layer->input_size;
  const size_t hidden = layer->hidden_size;
  const size_t gates = layer->gates();
  const bool lstm = layer->cell == CellType::kLstm;
  const size_t gh = gates * hidden;
  layer->w_layer.assign(dirs * in * gh, 0.0f);
  layer->w_iter.assign(dirs * hidden * gh, 0.0f);
  layer->bias.assign(dirs * 4 * hidden, 0.0f);
  for (size_t d = 0; d < dirs; ++d) {
    for (size_t g = 0; g < gates; ++g) {
      const size_t og = lstm ? kLstmOnnxGate[g] : kGruOnnxGate[g];
      for (size_t h = 0; h < hidden; ++h) {
        const size_t row = d * gh + og * hidden + h;
        for (size_t i = 0; i < in; ++i) {
          layer->w_layer[((d * in + i) * gates + g) * hidden + h] =
              w.values[row * in + i];
        }
        for (size_t j = 0; j < hidden; ++j) {
          layer->w_iter[((d * hidden + j) * gates + g) * hidden + h] =
              r.values[row * hidden + j];
        }
      }
    }
    if (b == nullptr) continue;
    const float* wb = b->values.data() + d * 2 * gh;
    const float* rb = wb + gh;
    float* bias = layer->bias.data() + d * 4 * hidden;
    if (lstm) {
      for (size_t g = 0; g < 4; ++g) {
        const size_t og = kLstmOnnxGate[g];
        for (size_t h = 0; h < hidden; ++h) {
          bias[g * hidden + h] = wb[og * hidden + h] + rb[og * hidden + h];
        }
      }
    } else {
      for (size_t h = 0; h < hidden; ++h) {
        bias[h] = wb[h] + rb[h];                             // z
        bias[hidden + h] = wb[hidden + h] + rb[hidden + h];  // r
        bias[2 * hidden + h] = wb[2 * hidden + h];           // h, input part
        bias[3 * hidden + h] = rb[2 * hidden + h];  // h, recurrent part
      }
    }
  }
}

// Pushes the inputs of `node`, including the outer-scope tensors its
// subgraphs (If branches) read.
void CollectInputs(const onnx::NodeProto& node,
                   std::vector<std::string>* names) {
  for (const std::string& in : node.input()) {
    if (!in.empty()) names->push_back(in);
  }
  for (const onnx::AttributeProto& a : node.attribute()) {
    if (!a.has_g()) continue;
    for (const onnx::NodeProto& inner : a.g().node())
      CollectInputs(inner, names);
  }
}

// ---------------------------------------------------------------------------

class Importer {
 public:
  Importer(const onnx::ModelProto& model, std::string what)
      : model_(model), graph_(model.graph()), what_(std::move(what)) {}

  StatusOr<ModelSpec> Import();

 private:
  using Inputs = std::vector<const Value*>;  // nullptr for absent inputs
  using Outputs = std::vector<Value>;

  // --- errors ---
  Status GraphError(StatusCode code, const std::string& why) const {
    return Status(code, what_ + ": " + why);
  }
  Status NodeError(StatusCode code, const std::string& why) const;
  Status Unsupported(const std::string& why) const {
    return NodeError(StatusCode::kUnimplemented, why);
  }
  Status Invalid(const std::string& why) const {
    return NodeError(StatusCode::kInvalidArgument, why);
  }

  // --- graph indexing ---
  Status IndexGraph();
  void FindStateInputs();
  StatusOr<const Value*> Lookup(const std::string& name);
  Value GraphInputValue(const onnx::ValueInfoProto& info) const;

  // --- attributes of the current node ---
  const onnx::AttributeProto* Attr(const std::string& name) const;
  StatusOr<int64_t> AttrInt(const std::string& name, int64_t fallback) const;
  StatusOr<float> AttrFloat(const std::string& name, float fallback) const;
  StatusOr<std::string> AttrString(const std::string& name,
                                   const std::string& fallback) const;
  StatusOr<std::vector<int64_t>> AttrInts(const std::string& name) const;
  StatusOr<std::vector<std::string>> AttrStrings(const std::string& name) const;

  // --- helpers on values ---
  StatusOr<std::vector<int64_t>> KnownInts(const Value* v,
                                           const std::string& what) const;
  StatusOr<std::vector<int64_t>> AxesOperand(const Inputs& in,
                                             size_t slot) const;
  bool IsTime(const Axis& a) const { return bound_ && a.kind == time_label_; }
  bool IsBatch(const Axis& a) const {
    return bound_ && (a.kind == AxisKind::kIn0 || a.kind == AxisKind::kIn1) &&
           a.kind != time_label_;
  }
  AxisKind BatchLabel() const {
    return time_label_ == AxisKind::kIn0 ? AxisKind::kIn1 : AxisKind::kIn0;
  }
  std::string Describe(const std::vector<Axis>& axes) const {
    return AxesString(axes, time_label_ == AxisKind::kIn1, bound_);
  }
  Status CheckHeadStage(const Pipeline& p, const std::string& op) const;

  // --- ops ---
  Status ProcessNode(const onnx::NodeProto& node);
  StatusOr<Outputs> RunOp(const Inputs& in);
  StatusOr<Value> OpEqual(const Value& a, const Value& b);
  StatusOr<Outputs> OpIf(const Value& condition);
  StatusOr<Value> OpConstant();
  StatusOr<Value> OpCast(const Value& v);
  StatusOr<Value> OpShape(const Value& v);
  StatusOr<Value> OpGather(const Value& data, const Value& index);
  StatusOr<Value> OpEmbedding(const Value& table, const Value& ids,
                              int64_t axis);
  StatusOr<Value> OpGatherSeq(const Value& data, const Value& index,
                              int64_t axis);
  StatusOr<Value> LastHiddenOfFinalState(const Value& state);
  StatusOr<Value> OpUnsqueeze(const Inputs& in);
  StatusOr<Value> OpSqueeze(const Inputs& in);
  StatusOr<Value> OpConcat(const Inputs& in);
  StatusOr<Value> OpConstantOfShape(const Value& shape);
  StatusOr<Value> OpExpand(const Value& v, const Value& shape);
  StatusOr<Value> OpTranspose(const Value& v);
  StatusOr<Value> OpSlice(const Inputs& in);
  StatusOr<Value> OpReshape(const Value& data, const Value& shape);
  StatusOr<std::vector<Axis>> ReshapeSeqAxes(const std::vector<Axis>& in,
                                             const std::vector<Dim>& target,
                                             bool allowzero) const;
  StatusOr<Outputs> OpRnn(const Inputs& in, bool lstm);
  Status CheckRnnAttributes(bool lstm, int* directions) const;
  StatusOr<StateSource> InitialState(const Value* v, const std::string& what,
                                     int directions, int hidden) const;
  StatusOr<Value> OpMatMul(const Value& a, const Value& b);
  StatusOr<Value> OpAdd(const Value& a, const Value& b);
  StatusOr<Value> OpGemm(const Inputs& in);
  StatusOr<Value> OpSoftmax(const Value& v, OutputActivation activation);

  // --- the result ---
  StatusOr<ModelSpec> BuildSpec();
  Status CheckStateSources(const Pipeline& p, bool cell,
                           std::string* name) const;

  const onnx::ModelProto& model_;
  const onnx::GraphProto& graph_;
  const std::string what_;
  int64_t opset_ = 0;

  std::unordered_map<std::string, const onnx::TensorProto*> initializers_;
  std::unordered_map<std::string, const onnx::ValueInfoProto*> graph_inputs_;
  std::unordered_map<std::string, int> producer_;  // tensor -> node index
  std::vector<bool> needed_;                       // per node
  std::set<std::string> state_inputs_;             // h0 / c0 graph inputs
  std::unordered_map<std::string, Value>
      values_;  // element addresses are stable

  // Bound on the elements of a constant built by folding: the floats the
  // file itself holds.
  int64_t max_folded_elements_ = 0;
  const onnx::NodeProto* node_ = nullptr;  // the node being processed
  int node_index_ = -1;
  bool bound_ = false;  // time_label_ is known
  AxisKind time_label_ = AxisKind::kIn0;
};

Status Importer::NodeError(StatusCode code, const std::string& why) const {
  if (node_ == nullptr) return GraphError(code, why);
  std::string name = node_->name();
  if (name.empty()) {
    name = "#" + std::to_string(node_index_);
    if (node_->output_size() > 0) name += " -> " + node_->output(0);
  }
  return Status(
      code, what_ + ": node '" + name + "' (" + node_->op_type() + "): " + why);
}

// --- graph indexing --------------------------------------------------------

Status Importer::IndexGraph() {
  for (const onnx::TensorProto& t : graph_.initializer()) {
    initializers_[t.name()] = &t;
  }
  for (const onnx::ValueInfoProto& info : graph_.input()) {
    // With keep_initializers_as_inputs, weights are listed as inputs too.
    if (initializers_.count(info.name()) == 0)
      graph_inputs_[info.name()] = &info;
  }
  for (int i = 0; i < graph_.node_size(); ++i) {
    for (const std::string& out : graph_.node(i).output()) {
      if (out.empty()) continue;
      if (producer_.count(out) || initializers_.count(out) ||
          graph_inputs_.count(out)) {
        return GraphError(StatusCode::kInvalidArgument,
                          "tensor '" + out + "' is defined more than once");
      }
      producer_[out] = i;
    }
  }
  // Only the nodes the graph outputs depend on are interpreted.
  needed_.assign(graph_.node_size(), false);
  std::vector<std::string> stack;
  for (const onnx::ValueInfoProto& out : graph_.output())
    stack.push_back(out.name());
  while (!stack.empty()) {
    const std::string name = stack.back();
    stack.pop_back();
    auto it = producer_.find(name);
    if (it == producer_.end() || needed_[it->second]) continue;
    needed_[it->second] = true;
    CollectInputs(graph_.node(it->second), &stack);
  }
  FindStateInputs();
  return Status::Ok();
}

// A graph input is an initial state when it reaches an LSTM/GRU initial_h or
// initial_c slot through per-layer slicing (and no-op reshaping).
void Importer::FindStateInputs() {
  static const std::set<std::string> kPassThrough = {
      "Slice", "Identity", "Cast", "Squeeze", "Unsqueeze", "Reshape"};
  for (const onnx::NodeProto& node : graph_.node()) {
    if (node.op_type() != "LSTM" && node.op_type() != "GRU") continue;
    for (int slot : {5, 6}) {
      if (slot >= node.input_size() || (slot == 6 && node.op_type() == "GRU"))
        continue;
      std::string name = node.input(slot);
      for (int hops = 0; hops < 64 && !name.empty(); ++hops) {
        if (graph_inputs_.count(name)) {
          state_inputs_.insert(name);
          break;
        }
        auto it = producer_.find(name);
        if (it == producer_.end()) break;
        const onnx::NodeProto& p = graph_.node(it->second);
        if (kPassThrough.count(p.op_type()) == 0 || p.input_size() == 0) break;
        name = p.input(0);
      }
    }
  }
}

Value Importer::GraphInputValue(const onnx::ValueInfoProto& info) const {
  const std::string& name = info.name();
  Value v;
  if (state_inputs_.count(name)) {
    v.kind = Kind::kStateInput;
    v.state.input = name;
    return v;
  }
  if (!info.type().has_tensor_type()) {
    return Value::Opaque("graph input '" + name + "' (not a tensor)");
  }
  const onnx::TypeProto::Tensor& tt = info.type().tensor_type();
  const int rank = tt.has_shape() ? tt.shape().dim_size() : -1;
  auto pipeline = std::make_shared<Pipeline>();
  pipeline->input_name = name;
  if (tt.elem_type() == onnx::TensorProto::FLOAT) {
    if (rank != 3 && rank != -1) {
      return Value::Opaque("float graph input '" + name + "' of rank " +
                           std::to_string(rank) + " (features must be rank 3)");
    }
    int64_t features = -1;
    if (rank == 3 && tt.shape().dim(2).has_dim_value() &&
        tt.shape().dim(2).dim_value() > 0) {
      features = tt.shape().dim(2).dim_value();
    }
    return Value::Seq({{AxisKind::kIn0, -1},
                       {AxisKind::kIn1, -1},
                       {AxisKind::kFeat, features}},
                      pipeline);
  }
  if (tt.elem_type() == onnx::TensorProto::INT64 ||
      tt.elem_type() == onnx::TensorProto::INT32) {
    if (rank != 2 && rank != -1) {
      return Value::Opaque("integer graph input '" + name + "' of rank " +
                           std::to_string(rank) +
                           " (token ids must be rank 2)");
    }
    pipeline->input_kind = InputKind::kTokenIds;
    pipeline->input_type = tt.elem_type() == onnx::TensorProto::INT64
                               ? ElementType::kInt64
                               : ElementType::kInt32;
    return Value::Seq({{AxisKind::kIn0, -1}, {AxisKind::kIn1, -1}}, pipeline);
  }
  return Value::Opaque("graph input '" + name + "' of element type " +
                       std::to_string(tt.elem_type()));
}

StatusOr<const Value*> Importer::Lookup(const std::string& name) {
  auto it = values_.find(name);
  if (it != values_.end()) return &it->second;
  auto init = initializers_.find(name);
  if (init != initializers_.end()) {
    StatusOr<Value> v = TensorToValue(*init->second);
    if (!v.ok()) {
      return NodeError(v.status().code(),
                       "initializer '" + name + "': " + v.status().message());
    }
    return &values_.emplace(name, std::move(v).value()).first->second;
  }
  auto input = graph_inputs_.find(name);
  if (input != graph_inputs_.end()) {
    return &values_.emplace(name, GraphInputValue(*input->second))
                .first->second;
  }
  return Invalid(
      "input '" + name +
      "' is not produced by an earlier node, an initializer or a graph input");
}

// --- attributes --------------------------------------------------------------

const onnx::AttributeProto* Importer::Attr(const std::string& name) const {
  for (const onnx::AttributeProto& a : node_->attribute()) {
    if (a.name() == name) return &a;
  }
  return nullptr;
}

StatusOr<int64_t> Importer::AttrInt(const std::string& name,
                                    int64_t fallback) const {
  const onnx::AttributeProto* a = Attr(name);
  if (a == nullptr) return fallback;
  if (a->type() != onnx::AttributeProto::INT) {
    return Invalid("attribute '" + name + "' must be an int");
  }
  return a->i();
}

StatusOr<float> Importer::AttrFloat(const std::string& name,
                                    float fallback) const {
  const onnx::AttributeProto* a = Attr(name);
  if (a == nullptr) return fallback;
  if (a->type() != onnx::AttributeProto::FLOAT) {
    return Invalid("attribute '" + name + "' must be a float");
  }
  return a->f();
}

StatusOr<std::string> Importer::AttrString(const std::string& name,
                                           const std::string& fallback) const {
  const onnx::AttributeProto* a = Attr(name);
  if (a == nullptr) return fallback;
  if (a->type() != onnx::AttributeProto::STRING) {
    return Invalid("attribute '" + name + "' must be a string");
  }
  return a->s();
}

StatusOr<std::vector<int64_t>> Importer::AttrInts(
    const std::string& name) const {
  const onnx::AttributeProto* a = Attr(name);
  if (a == nullptr) return std::vector<int64_t>{};
  if (a->type() != onnx::AttributeProto::INTS) {
    return Invalid("attribute '" + name + "' must be a list of ints");
  }
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

StatusOr<std::vector<std::string>> Importer::AttrStrings(
    const std::string& name) const {
  const onnx::AttributeProto* a = Attr(name);
  if (a == nullptr) return std::vector<std::string>{};
  if (a->type() != onnx::AttributeProto::STRINGS) {
    return Invalid("attribute '" + name + "' must be a list of strings");
  }
  return std::vector<std::string>(a->strings().begin(), a->strings().end());
}

// --- value helpers -----------------------------------------------------------

StatusOr<std::vector<int64_t>> Importer::KnownInts(
    const Value* v, const std::string& what) const {
  if (v == nullptr) return Invalid(what + " is missing");
  if (v->kind != Kind::kInts) {
    return Unsupported(what + " must be a constant integer tensor, not " +
                       std::string(KindName(v->kind)));
  }
  std::vector<int64_t> out;
  for (const Dim& d : v->ints) {
    if (!d.known()) return Unsupported(what + " depends on the input's shape");
    out.push_back(d.value);
  }
  return out;
}

// The axes of Squeeze/Unsqueeze: an attribute before opset 13, input 1 since.
StatusOr<std::vector<int64_t>> Importer::AxesOperand(const Inputs& in,
                                                     size_t slot) const {
  if (Attr("axes") != nullptr) return AttrInts("axes");
  if (in.size() > slot && in[slot] != nullptr)
    return KnownInts(in[slot], "axes");
  return std::vector<int64_t>{};
}

Status Importer::CheckHeadStage(const Pipeline& p,
                                const std::string& op) const {
  if (p.layers.empty()) {
    return Unsupported(op + " before the first LSTM/GRU is not supported");
  }
  if (p.head != nullptr)
    return Unsupported("a second " + op + " head is not supported");
  if (p.activation != OutputActivation::kNone) {
    return Unsupported(op + " after Softmax/LogSoftmax is not supported");
  }
  return Status::Ok();
}

// --- node dispatch
// -------------------------------------------------------------

Status Importer::ProcessNode(const onnx::NodeProto& node) {
  Inputs in;
  for (const std::string& name : node.input()) {
    if (name.empty()) {
      in.push_back(nullptr);
      continue;
    }
    ASSIGN_OR_RETURN(const Value* v, Lookup(name));
    // LSTM/GRU explain their unsupported inputs themselves (sequence_lens, P).
    const bool self_checking = node.op_type() == "Identity" ||
                               node.op_type() == "LSTM" ||
                               node.op_type() == "GRU";
    if (v->kind == Kind::kOpaque && !self_checking) {
      return Unsupported("input '" + name + "' is " + v->note +
                         ", which no supported pattern uses");
    }
    in.push_back(v);
  }
  ASSIGN_OR_RETURN(Outputs outs, RunOp(in));
  for (int i = 0; i < node.output_size(); ++i) {
    if (node.output(i).empty()) continue;
    if (static_cast<size_t>(i) >= outs.size()) {
      return Unsupported("output " + std::to_string(i) + " ('" +
                         node.output(i) + "') is not supported");
    }
    const std::string& name = node.output(i);
    if (values_.count(name) || initializers_.count(name) ||
        graph_inputs_.count(name)) {
      return Invalid("output '" + name + "' is defined more than once");
    }
    values_.emplace(name, std::move(outs[i]));
  }
  return Status::Ok();
}

StatusOr<Importer::Outputs> Importer::RunOp(const Inputs& in) {
  const std::string& op = node_->op_type();
  if (!node_->domain().empty() && node_->domain() != "ai.onnx") {
    return Unsupported("operators of domain '" + node_->domain() +
                       "' are not supported");
  }
  // Fixed arity check for everything but the variadic / optional-input ops.
  auto need = [&](size_t n) -> Status {
    if (in.size() < n) {
      return Invalid("expects " + std::to_string(n) + " inputs, has " +
                     std::to_string(in.size()));
    }
    for (size_t i = 0; i < n; ++i) {
      if (in[i] == nullptr)
        return Invalid("input " + std::to_string(i) + " is empty");
    }
    return Status::Ok();
  };
  auto one = [](StatusOr<Value> v) -> StatusOr<Outputs> {
    if (!v.ok()) return v.status();
    Outputs outs;
    outs.push_back(std::move(v).value());
    return outs;
  };

  if (op == "LSTM" || op == "GRU") {
    RETURN_IF_ERROR(need(3));
    return OpRnn(in, op == "LSTM");
  }
  if (op == "Constant") return one(OpConstant());
  if (op == "Concat") return one(OpConcat(in));
  if (op == "Unsqueeze") {
    RETURN_IF_ERROR(need(1));
    return one(OpUnsqueeze(in));
  }
  if (op == "Squeeze") {
    RETURN_IF_ERROR(need(1));
    return one(OpSqueeze(in));
  }
  if (op == "Slice") {
    RETURN_IF_ERROR(need(opset_ < 10 ? 1 : 3));
    return one(OpSlice(in));
  }
  if (op == "Gemm") {
    RETURN_IF_ERROR(need(2));
    return one(OpGemm(in));
  }
  if (op == "Identity") {
    RETURN_IF_ERROR(need(1));
    return one(*in[0]);
  }
  if (op == "Cast") {
    RETURN_IF_ERROR(need(1));
    return one(OpCast(*in[0]));
  }
  if (op == "Shape") {
    RETURN_IF_ERROR(need(1));
    return one(OpShape(*in[0]));
  }
  if (op == "Gather") {
    RETURN_IF_ERROR(need(2));
    return one(OpGather(*in[0], *in[1]));
  }
  if (op == "ConstantOfShape") {
    RETURN_IF_ERROR(need(1));
    return one(OpConstantOfShape(*in[0]));
  }
  if (op == "Equal") {
    RETURN_IF_ERROR(need(2));
    return one(OpEqual(*in[0], *in[1]));
  }
  if (op == "If") {
    RETURN_IF_ERROR(need(1));
    return OpIf(*in[0]);
  }
  if (op == "Expand") {
    RETURN_IF_ERROR(need(2));
    return one(OpExpand(*in[0], *in[1]));
  }
  if (op == "Transpose") {
    RETURN_IF_ERROR(need(1));
    return one(OpTranspose(*in[0]));
  }
  if (op == "Reshape") {
    RETURN_IF_ERROR(need(2));
    return one(OpReshape(*in[0], *in[1]));
  }
  if (op == "MatMul") {
    RETURN_IF_ERROR(need(2));
    return one(OpMatMul(*in[0], *in[1]));
  }
  if (op == "Add") {
    RETURN_IF_ERROR(need(2));
    return one(OpAdd(*in[0], *in[1]));
  }
  if (op == "Softmax" || op == "LogSoftmax") {
    RETURN_IF_ERROR(need(1));
    return one(OpSoftmax(*in[0], op == "Softmax"
                                     ? OutputActivation::kSoftmax
                                     : OutputActivation::kLogSoftmax));
  }
  bool on_data_path = false;
  for (const Value* v : in)
    on_data_path |= v != nullptr && v->kind == Kind::kSeq;
  return Unsupported(on_data_path ? "op type '" + op +
                                        "' is not supported on the data path"
                                  : "op type '" + op + "' is not supported");
}

// --- shape plumbing
// ------------------------------------------------------------

StatusOr<Value> Importer::OpConstant() {
  if (const onnx::AttributeProto* a = Attr("value")) {
    if (a->type() != onnx::AttributeProto::TENSOR) {
      return Invalid("attribute 'value' must be a tensor");
    }
    StatusOr<Value> v = TensorToValue(a->t());
    if (!v.ok()) return NodeError(v.status().code(), v.status().message());
    return v;
  }
  if (const onnx::AttributeProto* a = Attr("value_float")) {
    if (a->type() != onnx::AttributeProto::FLOAT)
      return Invalid("bad value_float");
    return Value::Float(FloatTensor{{}, {a->f()}});
  }
  if (const onnx::AttributeProto* a = Attr("value_floats")) {
    if (a->type() != onnx::AttributeProto::FLOATS)
      return Invalid("bad value_floats");
    FloatTensor t;
    t.values.assign(a->floats().begin(), a->floats().end());
    t.dims = {static_cast<int64_t>(t.values.size())};
    return Value::Float(std::move(t));
  }
  if (const onnx::AttributeProto* a = Attr("value_int")) {
    if (a->type() != onnx::AttributeProto::INT) return Invalid("bad value_int");
    return Value::Ints({Dim::Known(a->i())}, true);
  }
  if (const onnx::AttributeProto* a = Attr("value_ints")) {
    if (a->type() != onnx::AttributeProto::INTS)
      return Invalid("bad value_ints");
    std::vector<Dim> ints;
    for (int64_t x : a->ints()) ints.push_back(Dim::Known(x));
    return Value::Ints(std::move(ints), false);
  }
  return Unsupported(
      "only value, value_float(s) and value_int(s) constants are supported");
}

StatusOr<Value> Importer::OpCast(const Value& v) {
  ASSIGN_OR_RETURN(const int64_t to, AttrInt("to", -1));
  const bool to_float = to == onnx::TensorProto::FLOAT;
  const bool to_int =
      to == onnx::TensorProto::INT64 || to == onnx::TensorProto::INT32;
  switch (v.kind) {
    case Kind::kFloatConst:
    case Kind::kZeros:
    case Kind::kStateInput:
      if (to_float) return v;
      break;
    case Kind::kInts:
      if (to_int) return v;
      break;
    case Kind::kSeq: {
      const bool ids = v.pipeline->input_kind == InputKind::kTokenIds &&
                       v.pipeline->embedding == nullptr;
      if (ids ? to_int : to_float) return v;
      break;
    }
    default:
      break;
  }
  return Unsupported("Cast of " + std::string(KindName(v.kind)) + " to type " +
                     std::to_string(to) + " is not supported");
}

StatusOr<Value> Importer::OpShape(const Value& v) {
  std::vector<Dim> dims;
  switch (v.kind) {
    case Kind::kSeq:
      for (const Axis& a : v.axes) {
        if (a.kind == AxisKind::kIn0) {
          dims.push_back(Dim{Dim::Kind::kIn0, 0});
        } else if (a.kind == AxisKind::kIn1) {
          dims.push_back(Dim{Dim::Kind::kIn1, 0});
        } else {
          dims.push_back(a.size >= 0 ? Dim::Known(a.size) : Dim::Unknown());
        }
      }
      break;
    case Kind::kZeros:
      if (!v.shape_known)
        return Unsupported("Shape of a zero tensor of unknown shape");
      dims = v.ints;
      break;
    case Kind::kFloatConst:
      for (int64_t d : v.tensor->dims) dims.push_back(Dim::Known(d));
      break;
    case Kind::kInts:
      if (!v.scalar)
        dims.push_back(Dim::Known(static_cast<int64_t>(v.ints.size())));
      break;
    case Kind::kStateInput:
      dims.assign(3, Dim::Unknown());
      break;
    default:
      return Unsupported("Shape of " + std::string(KindName(v.kind)) +
                         " is not supported");
  }
  const int64_t rank = static_cast<int64_t>(dims.size());
  ASSIGN_OR_RETURN(int64_t start, AttrInt("start", 0));
  ASSIGN_OR_RETURN(int64_t end, AttrInt("end", rank));
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, start, rank);
  return Value::Ints(std::vector<Dim>(dims.begin() + start, dims.begin() + end),
                     false);
}

StatusOr<Value> Importer::OpGather(const Value& data, const Value& index) {
  ASSIGN_OR_RETURN(const int64_t axis, AttrInt("axis", 0));
  if (data.kind == Kind::kFloatConst && index.kind == Kind::kSeq) {
    return OpEmbedding(data, index, axis);
  }
  if (data.kind == Kind::kSeq) return OpGatherSeq(data, index, axis);
  if (data.kind == Kind::kFinalState) {
    ASSIGN_OR_RETURN(std::vector<int64_t> idx,
                     KnownInts(&index, "Gather indices"));
    const int64_t rows = static_cast<int64_t>(data.state_layers.size()) *
                         data.state_layers.front()->directions;
    if (axis != 0 || !index.scalar || idx.size() != 1 ||
        (idx[0] != -1 && idx[0] != rows - 1)) {
      return Unsupported(
          "Gather on a final state is only supported as h_n[-1]");
    }
    return LastHiddenOfFinalState(data);
  }
  if (data.kind == Kind::kInts) {
    if (data.scalar) return Invalid("Gather on a scalar");
    if (axis != 0 && axis != -1)
      return Invalid("Gather axis must be 0 for a 1-D tensor");
    ASSIGN_OR_RETURN(std::vector<int64_t> idx,
                     KnownInts(&index, "Gather indices"));
    const int64_t n = static_cast<int64_t>(data.ints.size());
    std::vector<Dim> out;
    for (int64_t i : idx) {
      int64_t k;
      if (!NormalizeAxis(i, n, &k)) {
        return Invalid("Gather index " + std::to_string(i) +
                       " out of range for " + std::to_string(n) + " elements");
      }
      out.push_back(data.ints[k]);
    }
    if (index.scalar && out.size() != 1)
      return Invalid("bad scalar Gather index");
    return Value::Ints(std::move(out), index.scalar);
  }
  return Unsupported("Gather on " + std::string(KindName(data.kind)) +
                     " with indices from " + KindName(index.kind) +
                     " is not supported");
}

StatusOr<Value> Importer::OpEmbedding(const Value& table, const Value& ids,
                                      int64_t axis) {
  const Pipeline& p = *ids.pipeline;
  if (p.input_kind != InputKind::kTokenIds || p.embedding != nullptr ||
      !p.layers.empty()) {
    return Unsupported(
        "Gather indexed by float data is not supported; "
        "an embedding must be indexed by the token-id input");
  }
  const std::vector<int64_t>& dims = table.tensor->dims;
  if (dims.size() != 2 || axis != 0) {
    return Unsupported(
        "an embedding must Gather rows (axis 0) of a 2-D table, got dims " +
        JoinInts(dims) + " axis " + std::to_string(axis));
  }
  if (dims[0] <= 0 || dims[1] <= 0 || dims[1] > kMaxSize) {
    return Invalid("embedding table dims " + JoinInts(dims) +
                   " are not usable");
  }
  auto embedding = std::make_shared<EmbeddingSpec>();
  embedding->vocab_size = dims[0];
  embedding->dim = static_cast<int>(dims[1]);
  embedding->table = table.tensor->values;
  auto next = std::make_shared<Pipeline>(p);
  next->embedding = std::move(embedding);
  std::vector<Axis> axes = ids.axes;
  axes.push_back({AxisKind::kFeat, dims[1]});
  return Value::Seq(std::move(axes), std::move(next));
}

StatusOr<Value> Importer::OpGatherSeq(const Value& data, const Value& index,
                                      int64_t axis) {
  ASSIGN_OR_RETURN(std::vector<int64_t> idx,
                   KnownInts(&index, "Gather indices"));
  int64_t k;
  if (!NormalizeAxis(axis, static_cast<int64_t>(data.axes.size()), &k)) {
    return Invalid("Gather axis " + std::to_string(axis) + " out of range");
  }
  if (!index.scalar || idx.size() != 1) {
    return Unsupported(
        "Gather on the sequence is only supported with a scalar index");
  }
  const Axis& a = data.axes[k];
  std::vector<Axis> axes = data.axes;
  axes.erase(axes.begin() + k);
  const bool size_one =
      a.kind == AxisKind::kOne || (a.kind == AxisKind::kDir && a.size == 1);
  if (size_one && (idx[0] == 0 || idx[0] == -1))
    return Value::Seq(axes, data.pipeline);
  if (IsTime(a) && idx[0] == -1 && !data.pipeline->layers.empty() &&
      !data.pipeline->last_step) {
    auto next = std::make_shared<Pipeline>(*data.pipeline);
    next->last_step = true;
    return Value::Seq(std::move(axes), std::move(next));
  }
  return Unsupported(
      "Gather on the sequence is only supported as the last-step "
      "selection out[:, -1] on the time axis after the LSTM/GRU "
      "(axis " +
      std::to_string(k) + " of " + Describe(data.axes) + ", index " +
      std::to_string(idx[0]) + ")");
}

// h_n[-1] of a unidirectional stack is the last layer's output at the last
// step: the same as out[:, -1].
StatusOr<Value> Importer::LastHiddenOfFinalState(const Value& state) {
  const RnnLayerSpec& last = *state.state_layers.back();
  if (state.is_cell) {
    return Unsupported("using a final cell state c_n as data is not supported");
  }
  if (last.directions != 1) {
    return Unsupported(
        "h_n[-1] of a bidirectional layer (the backward direction "
        "only) is not supported; use out[:, -1]");
  }
  auto next = std::make_shared<Pipeline>(*state.pipeline);
  next->last_step = true;
  return Value::Seq({{BatchLabel(), -1}, {AxisKind::kFeat, last.hidden_size}},
                    std::move(next));
}

StatusOr<Value> Importer::OpUnsqueeze(const Inputs& in) {
  const Value& v = *in[0];
  ASSIGN_OR_RETURN(std::vector<int64_t> axes, AxesOperand(in, 1));
  if (axes.empty()) return Invalid("Unsqueeze without axes");
  if (v.kind == Kind::kInts) {
    if (v.scalar && axes.size() == 1 && (axes[0] == 0 || axes[0] == -1)) {
      return Value::Ints(v.ints, false);
    }
    return Unsupported(
        "Unsqueeze of a shape tensor beyond rank 1 is not supported");
  }
  int64_t rank;
  if (v.kind == Kind::kSeq) {
    rank = static_cast<int64_t>(v.axes.size());
  } else if (v.kind == Kind::kFloatConst) {
    rank = static_cast<int64_t>(v.tensor->dims.size());
  } else if (v.kind == Kind::kZeros) {
    if (!v.shape_known) return v;
    rank = static_cast<int64_t>(v.ints.size());
  } else {
    return Unsupported("Unsqueeze of " + std::string(KindName(v.kind)) +
                       " is not supported");
  }
  const int64_t out_rank = rank + static_cast<int64_t>(axes.size());
  std::vector<int64_t> norm;
  for (int64_t a : axes) {
    int64_t k;
    if (!NormalizeAxis(a, out_rank, &k))
      return Invalid("Unsqueeze axis out of range");
    norm.push_back(k);
  }
  std::sort(norm.begin(), norm.end());
  if (std::adjacent_find(norm.begin(), norm.end()) != norm.end()) {
    return Invalid("Unsqueeze axes repeat");
  }
  if (v.kind == Kind::kSeq) {
    std::vector<Axis> out = v.axes;
    for (int64_t k : norm) out.insert(out.begin() + k, Axis{AxisKind::kOne, 1});
    return Value::Seq(std::move(out), v.pipeline);
  }
  if (v.kind == Kind::kZeros) {
    std::vector<Dim> out = v.ints;
    for (int64_t k : norm) out.insert(out.begin() + k, Dim::Known(1));
    return Value::Zeros(std::move(out), true);
  }
  FloatTensor t = *v.tensor;
  for (int64_t k : norm) t.dims.insert(t.dims.begin() + k, 1);
  return Value::Float(std::move(t));
}

StatusOr<Value> Importer::OpSqueeze(const Inputs& in) {
  const Value& v = *in[0];
  ASSIGN_OR_RETURN(std::vector<int64_t> axes, AxesOperand(in, 1));
  switch (v.kind) {
    case Kind::kInts:
      if (!v.scalar && v.ints.size() == 1 &&
          (axes.empty() ||
           (axes.size() == 1 && (axes[0] == 0 || axes[0] == -1)))) {
        return Value::Ints(v.ints, true);
      }
      return Unsupported("Squeeze of this shape tensor is not supported");
    case Kind::kFinalState: {
      const int64_t rows = static_cast<int64_t>(v.state_layers.size()) *
                           v.state_layers.front()->directions;
      if (rows == 1 && axes.size() == 1 && (axes[0] == 0 || axes[0] == -3)) {
        return LastHiddenOfFinalState(v);
      }
      return Unsupported(
          "Squeeze of a final state is only supported as h_n.squeeze(0) "
          "of a one-layer unidirectional model");
    }
    case Kind::kSeq: {
      if (axes.empty()) {
        return Unsupported(
            "Squeeze without axes on the sequence is not supported "
            "(it would drop a batch or time axis of size 1)");
      }
      std::vector<bool> drop(v.axes.size(), false);
      for (int64_t a : axes) {
        int64_t k;
        if (!NormalizeAxis(a, static_cast<int64_t>(v.axes.size()), &k)) {
          return Invalid("Squeeze axis out of range");
        }
        const Axis& axis = v.axes[k];
        if (axis.kind != AxisKind::kOne &&
            !(axis.kind == AxisKind::kDir && axis.size == 1)) {
          return Unsupported("Squeeze of axis " + std::to_string(k) + " of " +
                             Describe(v.axes) + ", which is not of size 1");
        }
        drop[k] = true;
      }
      std::vector<Axis> out;
      for (size_t k = 0; k < v.axes.size(); ++k) {
        if (!drop[k]) out.push_back(v.axes[k]);
      }
      return Value::Seq(std::move(out), v.pipeline);
    }
    case Kind::kZeros:
    case Kind::kFloatConst: {
      std::vector<int64_t> dims;
      std::vector<Dim> shape;
      if (v.kind == Kind::kZeros) {
        if (!v.shape_known) return v;
        shape = v.ints;
      } else {
        for (int64_t d : v.tensor->dims) shape.push_back(Dim::Known(d));
      }
      std::vector<bool> drop(shape.size(), false);
      for (int64_t a : axes) {
        int64_t k;
        if (!NormalizeAxis(a, static_cast<int64_t>(shape.size()), &k)) {
          return Invalid("Squeeze axis out of range");
        }
        if (shape[k].known() && shape[k].value != 1) {
          return Invalid("Squeeze of an axis of size " +
                         std::to_string(shape[k].value));
        }
        drop[k] = true;
      }
      std::vector<Dim> out;
      for (size_t k = 0; k < shape.size(); ++k) {
        const bool one = shape[k].known() && shape[k].value == 1;
        if (axes.empty() ? !one : !drop[k]) out.push_back(shape[k]);
      }
      if (v.kind == Kind::kZeros) return Value::Zeros(std::move(out), true);
      FloatTensor t = *v.tensor;
      t.dims.clear();
      for (const Dim& d : out) t.dims.push_back(d.value);
      return Value::Float(std::move(t));
    }
    default:
      return Unsupported("Squeeze of " + std::string(KindName(v.kind)) +
                         " is not supported");
  }
}

StatusOr<Value> Importer::OpConcat(const Inputs& in) {
  ASSIGN_OR_RETURN(const int64_t axis, AttrInt("axis", 0));
  if (in.empty()) return Invalid("Concat without inputs");
  for (const Value* v : in) {
    if (v == nullptr) return Invalid("Concat with an empty input");
  }
  const Kind kind = in[0]->kind;
  for (const Value* v : in) {
    if (v->kind != kind) {
      return Unsupported(std::string("Concat of ") + KindName(kind) + " and " +
                         KindName(v->kind) + " is not supported");
    }
  }
  if (kind == Kind::kInts) {
    if (axis != 0 && axis != -1)
      return Invalid("Concat of 1-D tensors needs axis 0");
    std::vector<Dim> out;
    for (const Value* v : in) {
      if (v->scalar) return Invalid("Concat of a scalar");
      out.insert(out.end(), v->ints.begin(), v->ints.end());
      if (out.size() > kMaxShapeElements) {
        return Unsupported("Concat builds a shape tensor that is too long");
      }
    }
    return Value::Ints(std::move(out), false);
  }
  if (kind == Kind::kFinalState) {
    if (axis != 0 && axis != -3) {
      return Unsupported("final states can only be concatenated along axis 0");
    }
    Value out = *in[0];
    for (size_t i = 1; i < in.size(); ++i) {
      const Value& next = *in[i];
      const int expected_first =
          out.first_layer + static_cast<int>(out.state_layers.size());
      const auto& chain = next.pipeline->layers;
      bool same_chain =
          next.is_cell == out.is_cell && next.first_layer == expected_first;
      for (size_t j = 0; same_chain && j < out.state_layers.size(); ++j) {
        const size_t layer = out.first_layer + j;
        same_chain =
            layer < chain.size() && chain[layer] == out.state_layers[j];
      }
      if (!same_chain) {
        return Unsupported(
            "Concat of final states is only supported for consecutive "
            "layers of one stack, in order");
      }
      out.state_layers.insert(out.state_layers.end(), next.state_layers.begin(),
                              next.state_layers.end());
      out.pipeline = next.pipeline;
    }
    return out;
  }
  if (kind == Kind::kFloatConst) {
    const std::vector<int64_t>& first = in[0]->tensor->dims;
    int64_t k;
    if (!NormalizeAxis(axis, static_cast<int64_t>(first.size()), &k)) {
      return Invalid("Concat axis out of range");
    }
    FloatTensor out;
    out.dims = first;
    out.dims[k] = 0;
    int64_t folded = 0;
    for (const Value* v : in) {
      const std::vector<int64_t>& dims = v->tensor->dims;
      bool same = dims.size() == first.size();
      for (size_t a = 0; same && a < dims.size(); ++a) {
        same = static_cast<int64_t>(a) == k || dims[a] == first[a];
      }
      if (!same)
        return Invalid("Concat of constants with dims " + JoinInts(first) +
                       " and " + JoinInts(dims));
      out.dims[k] += dims[k];
      folded += static_cast<int64_t>(v->tensor->values.size());
    }
    // A legitimate fold only rearranges weights stored in the file; this
    // stops a graph that doubles a constant again and again.
    if (folded > max_folded_elements_) {
      return Unsupported(
          "Concat of constants larger than the model's own data");
    }
    int64_t outer = 1;
    for (int64_t a = 0; a < k; ++a) outer *= first[a];
    for (int64_t o = 0; o < outer; ++o) {
      for (const Value* v : in) {
        const std::vector<float>& values = v->tensor->values;
        const int64_t chunk =
            outer == 0 ? 0 : static_cast<int64_t>(values.size()) / outer;
        out.values.insert(out.values.end(), values.begin() + o * chunk,
                          values.begin() + (o + 1) * chunk);
      }
    }
    return Value::Float(std::move(out));
  }
  return Unsupported(std::string("Concat of ") + KindName(kind) +
                     " is not supported");
}

// Equal on shape values, as torch's squeeze(dim) writes it (squeeze only if
// the dimension is 1); the answer must be known when importing.
StatusOr<Value> Importer::OpEqual(const Value& a, const Value& b) {
  if (a.kind != Kind::kInts || b.kind != Kind::kInts) {
    return Unsupported("Equal is only supported on shape values");
  }
  const size_t n = std::max(a.ints.size(), b.ints.size());
  if ((a.ints.size() != n && a.ints.size() != 1) ||
      (b.ints.size() != n && b.ints.size() != 1)) {
    return Invalid("Equal of shapes that do not broadcast");
  }
  std::vector<Dim> out;
  for (size_t i = 0; i < n; ++i) {
    const Dim& x = a.ints[a.ints.size() == 1 ? 0 : i];
    const Dim& y = b.ints[b.ints.size() == 1 ? 0 : i];
    if (x.known() && y.known()) {
      out.push_back(Dim::Known(x.value == y.value ? 1 : 0));
    } else if (x.kind == y.kind && x.kind != Dim::Kind::kUnknown) {
      out.push_back(Dim::Known(1));  // the same input dimension
    } else {
      return Unsupported(
          "Equal on a size known only at run time (batch or time) "
          "is not supported");
    }
  }
  return Value::Ints(std::move(out), a.scalar && b.scalar);
}

// If with a condition known at import time: the taken branch is interpreted
// in place, the other ignored.
StatusOr<Importer::Outputs> Importer::OpIf(const Value& condition) {
  ASSIGN_OR_RETURN(std::vector<int64_t> cond,
                   KnownInts(&condition, "the If condition"));
  if (cond.size() != 1) return Invalid("If condition must have one element");
  const char* branch_name = cond[0] != 0 ? "then_branch" : "else_branch";
  const onnx::AttributeProto* branch = Attr(branch_name);
  if (branch == nullptr || branch->type() != onnx::AttributeProto::GRAPH) {
    return Invalid(std::string("missing ") + branch_name);
  }
  const onnx::GraphProto& graph = branch->g();
  if (graph.output_size() != node_->output_size()) {
    return Invalid(std::string(branch_name) + " has " +
                   std::to_string(graph.output_size()) + " outputs, the node " +
                   std::to_string(node_->output_size()));
  }
  const onnx::NodeProto* outer = node_;
  const int outer_index = node_index_;
  for (int i = 0; i < graph.node_size(); ++i) {
    node_ = &graph.node(i);
    node_index_ = i;
    Status status = ProcessNode(*node_);
    if (!status.ok()) return status;
  }
  node_ = outer;
  node_index_ = outer_index;
  Outputs outs;
  for (const onnx::ValueInfoProto& out : graph.output()) {
    ASSIGN_OR_RETURN(const Value* v, Lookup(out.name()));
    outs.push_back(*v);
  }
  return outs;
}

// Expand of a zero tensor (static-shape exports build zero initial states so).
StatusOr<Value> Importer::OpExpand(const Value& v, const Value& shape) {
  bool zeros = v.kind == Kind::kZeros;
  if (v.kind == Kind::kFloatConst) {
    zeros = std::all_of(v.tensor->values.begin(), v.tensor->values.end(),
                        [](float x) { return x == 0.0f; });
  }
  if (!zeros || shape.kind != Kind::kInts || shape.scalar) {
    return Unsupported("Expand is only supported for zero initial states");
  }
  std::vector<Dim> input;
  if (v.kind == Kind::kFloatConst) {
    for (int64_t d : v.tensor->dims) input.push_back(Dim::Known(d));
  } else if (v.shape_known) {
    input = v.ints;
  } else {
    return Value::Zeros({}, false);
  }
  // Broadcast: align right; a known 1 takes the other side's size.
  std::vector<Dim> out = shape.ints;
  if (input.size() > out.size())
    out.insert(out.begin(), input.size() - out.size(), Dim::Known(1));
  const size_t offset = out.size() - input.size();
  for (size_t i = 0; i < input.size(); ++i) {
    Dim& o = out[offset + i];
    if (o.known() && o.value == 1) o = input[i];
  }
  return Value::Zeros(std::move(out), true);
}

StatusOr<Value> Importer::OpConstantOfShape(const Value& shape) {
  if (shape.kind != Kind::kInts || shape.scalar) {
    return Unsupported("ConstantOfShape needs a 1-D shape tensor");
  }
  if (const onnx::AttributeProto* a = Attr("value")) {
    if (a->type() != onnx::AttributeProto::TENSOR)
      return Invalid("bad 'value' attribute");
    StatusOr<Value> v = TensorToValue(a->t());
    if (!v.ok()) return NodeError(v.status().code(), v.status().message());
    bool zero = false;
    if (v->kind == Kind::kFloatConst) {
      zero = v->tensor->values.size() == 1 && v->tensor->values[0] == 0.0f;
    } else if (v->kind == Kind::kInts) {
      zero = v->ints.size() == 1 && v->ints[0].value == 0;
    }
    if (!zero) {
      return Unsupported(
          "ConstantOfShape is only supported for zero initial states");
    }
  }
  return Value::Zeros(shape.ints, true);
}

StatusOr<Value> Importer::OpTranspose(const Value& v) {
  ASSIGN_OR_RETURN(std::vector<int64_t> perm, AttrInts("perm"));
  int64_t rank;
  switch (v.kind) {
    case Kind::kSeq:
      rank = static_cast<int64_t>(v.axes.size());
      break;
    case Kind::kFloatConst:
      rank = static_cast<int64_t>(v.tensor->dims.size());
      break;
    case Kind::kZeros:
      if (!v.shape_known) return v;
      rank = static_cast<int64_t>(v.ints.size());
      break;
    default:
      return Unsupported("Transpose of " + std::string(KindName(v.kind)) +
                         " is not supported");
  }
  if (perm.empty()) {
    for (int64_t i = rank - 1; i >= 0; --i) perm.push_back(i);
  }
  std::vector<int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < static_cast<int64_t>(sorted.size()); ++i) {
    if (sorted[i] != i || static_cast<int64_t>(sorted.size()) != rank) {
      return Invalid("perm " + JoinInts(perm) +
                     " is not a permutation of rank " + std::to_string(rank));
    }
  }
  if (static_cast<int64_t>(sorted.size()) != rank) {
    return Invalid("perm " + JoinInts(perm) + " does not match rank " +
                   std::to_string(rank));
  }
  if (v.kind == Kind::kSeq) {
    std::vector<Axis> out;
    for (int64_t p : perm) out.push_back(v.axes[p]);
    return Value::Seq(std::move(out), v.pipeline);
  }
  if (v.kind == Kind::kZeros) {
    std::vector<Dim> out;
    for (int64_t p : perm) out.push_back(v.ints[p]);
    return Value::Zeros(std::move(out), true);
  }
  const FloatTensor& t = *v.tensor;
  const std::vector<int64_t> strides = Strides(t.dims);
  std::vector<int64_t> dims, step;
  for (int64_t p : perm) {
    dims.push_back(t.dims[p]);
    step.push_back(strides[p]);
  }
  return Value::Float(Gather(t, dims, 0, step));
}

StatusOr<Value> Importer::OpSlice(const Inputs& in) {
  const Value& v = *in[0];
  std::vector<int64_t> starts, ends, axes, steps;
  if (opset_ < 10) {
    ASSIGN_OR_RETURN(starts, AttrInts("starts"));
    ASSIGN_OR_RETURN(ends, AttrInts("ends"));
    ASSIGN_OR_RETURN(axes, AttrInts("axes"));
  } else {
    ASSIGN_OR_RETURN(starts, KnownInts(in[1], "Slice starts"));
    ASSIGN_OR_RETURN(ends, KnownInts(in[2], "Slice ends"));
    if (in.size() > 3 && in[3] != nullptr) {
      ASSIGN_OR_RETURN(axes, KnownInts(in[3], "Slice axes"));
    }
    if (in.size() > 4 && in[4] != nullptr) {
      ASSIGN_OR_RETURN(steps, KnownInts(in[4], "Slice steps"));
    }
  }
  if (axes.empty()) {
    for (size_t i = 0; i < starts.size(); ++i)
      axes.push_back(static_cast<int64_t>(i));
  }
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() ||
      steps.size() != starts.size()) {
    return Invalid("Slice starts/ends/axes/steps differ in length");
  }
  for (int64_t step : steps) {
    if (step == 0) return Invalid("Slice step 0");
  }

  if (v.kind == Kind::kInts) {
    if (v.scalar) return Invalid("Slice of a scalar");
    std::vector<Dim> cur = v.ints;
    for (size_t i = 0; i < starts.size(); ++i) {
      if (axes[i] != 0 && axes[i] != -1)
        return Invalid("Slice axis out of range");
      int64_t first, count;
      SliceRange(static_cast<int64_t>(cur.size()), starts[i], ends[i], steps[i],
                 &first, &count);
      std::vector<Dim> out;
      for (int64_t k = 0; k < count; ++k)
        out.push_back(cur[first + k * steps[i]]);
      cur = std::move(out);
    }
    return Value::Ints(std::move(cur), false);
  }

  if (v.kind == Kind::kFloatConst) {
    const FloatTensor& t = *v.tensor;
    const std::vector<int64_t> strides = Strides(t.dims);
    std::vector<int64_t> dims = t.dims, step = strides;
    int64_t base = 0;
    for (size_t i = 0; i < starts.size(); ++i) {
      int64_t k;
      if (!NormalizeAxis(axes[i], static_cast<int64_t>(dims.size()), &k)) {
        return Invalid("Slice axis out of range");
      }
      int64_t first, count;
      SliceRange(t.dims[k], starts[i], ends[i], steps[i], &first, &count);
      base += first * strides[k];
      dims[k] = count;
      step[k] = strides[k] * steps[i];
    }
    return Value::Float(Gather(t, dims, base, step));
  }

  if (v.kind == Kind::kSeq) {
    std::vector<Axis> out = v.axes;
    auto next = std::make_shared<Pipeline>(*v.pipeline);
    for (size_t i = 0; i < starts.size(); ++i) {
      int64_t k;
      if (!NormalizeAxis(axes[i], static_cast<int64_t>(out.size()), &k)) {
        return Invalid("Slice axis out of range");
      }
      const bool full = steps[i] == 1 && starts[i] == 0 &&
                        (ends[i] >= kSliceToEnd ||
                         (out[k].size >= 0 && ends[i] >= out[k].size));
      if (full) continue;
      if (IsTime(out[k]) && steps[i] == 1 && starts[i] == -1 &&
          ends[i] >= kSliceToEnd && !next->layers.empty() && !next->last_step) {
        out[k] = Axis{AxisKind::kOne, 1};
        next->last_step = true;
        continue;
      }
      return Unsupported(
          "Slice on the sequence is only supported as the last step "
          "out[:, -1:] on the time axis (axis " +
          std::to_string(k) + " of " + Describe(v.axes) + ", starts " +
          std::to_string(starts[i]) + ", ends " + std::to_string(ends[i]) +
          ")");
    }
    return Value::Seq(std::move(out), std::move(next));
  }

  if (v.kind == Kind::kZeros) {
    if (!v.shape_known) return v;
    std::vector<Dim> shape = v.ints;
    for (size_t i = 0; i < starts.size(); ++i) {
      int64_t k;
      if (!NormalizeAxis(axes[i], static_cast<int64_t>(shape.size()), &k)) {
        return Invalid("Slice axis out of range");
      }
      if (!shape[k].known()) {
        shape[k] = Dim::Unknown();
        continue;
      }
      int64_t first, count;
      SliceRange(shape[k].value, starts[i], ends[i], steps[i], &first, &count);
      shape[k] = Dim::Known(count);
    }
    return Value::Zeros(std::move(shape), true);
  }

  if (v.kind == Kind::kStateInput) {
    Value out = v;
    for (size_t i = 0; i < starts.size(); ++i) {
      int64_t k;
      if (!NormalizeAxis(axes[i], 3, &k))
        return Invalid("Slice axis out of range");
      const bool full =
          steps[i] == 1 && starts[i] == 0 && ends[i] >= kSliceToEnd;
      if (full) continue;
      if (k != 0 || steps[i] != 1 || starts[i] < 0 || starts[i] >= kMaxSize ||
          ends[i] < 0) {
        return Unsupported(
            "an initial state can only be sliced into layers along "
            "axis 0 with non-negative bounds");
      }
      StateSource& s = out.state;
      const int64_t begin = s.begin + starts[i];
      int64_t end = s.end;
      if (ends[i] < kSliceToEnd) {
        end = s.begin + ends[i];
        if (s.end >= 0) end = std::min(end, s.end);
      }
      if (end >= 0 && end <= begin)
        return Invalid("Slice of an initial state is empty");
      s.begin = begin;
      s.end = end;
    }
    return out;
  }
  return Unsupported("Slice of " + std::string(KindName(v.kind)) +
                     " is not supported");
}

StatusOr<Value> Importer::OpReshape(const Value& data, const Value& shape) {
  ASSIGN_OR_RETURN(const int64_t allowzero, AttrInt("allowzero", 0));
  if (shape.kind != Kind::kInts || shape.scalar) {
    return Unsupported("Reshape needs a 1-D shape tensor");
  }
  if (data.kind == Kind::kSeq) {
    ASSIGN_OR_RETURN(std::vector<Axis> axes,
                     ReshapeSeqAxes(data.axes, shape.ints, allowzero != 0));
    return Value::Seq(std::move(axes), data.pipeline);
  }
  if (data.kind == Kind::kZeros) {
    for (const Dim& d : shape.ints) {
      if (!d.known() || d.value <= 0) return Value::Zeros({}, false);
    }
    return Value::Zeros(shape.ints, true);
  }
  if (data.kind == Kind::kFloatConst) {
    ASSIGN_OR_RETURN(std::vector<int64_t> target,
                     KnownInts(&shape, "Reshape shape"));
    const FloatTensor& t = *data.tensor;
    int64_t known = 1;
    int infer = -1;
    for (size_t i = 0; i < target.size(); ++i) {
      if (target[i] == 0 && allowzero == 0) {
        if (i >= t.dims.size())
          return Invalid("Reshape copies a missing dimension");
        target[i] = t.dims[i];
      }
      if (target[i] == -1) {
        if (infer >= 0) return Invalid("Reshape with two -1 entries");
        infer = static_cast<int>(i);
        continue;
      }
      if (target[i] < 0) return Invalid("Reshape to a negative dimension");
      ASSIGN_OR_RETURN(known, ElementCount({known, target[i]}));
    }
    const int64_t count = static_cast<int64_t>(t.values.size());
    if (infer >= 0) {
      if (known == 0 || count % known != 0)
        return Invalid("Reshape cannot infer -1");
      target[infer] = count / known;
      known = count;
    }
    if (known != count)
      return Invalid("Reshape changes the number of elements");
    FloatTensor out = t;
    out.dims = target;
    return Value::Float(std::move(out));
  }
  return Unsupported("Reshape of " + std::string(KindName(data.kind)) +
                     " is not supported");
}

// Reshapes the sequence's axes. Supported: any reshape that keeps the time and
// batch axes in place (copied by 0 or by the symbolic dims of a Shape) and,
// between them, leaves feature blocks as they are, adds or drops axes of size
// 1, or merges a bidirectional [dirs=2, H] pair into features 2H
// (direction-major, which is the [forward, backward] concatenation).
StatusOr<std::vector<Axis>> Importer::ReshapeSeqAxes(
    const std::vector<Axis>& in, const std::vector<Dim>& target,
    bool allowzero) const {
  struct Entry {
    bool anchor = false;
    AxisKind label = AxisKind::kOne;
    int64_t size = 1;  // -1: inferred
  };
  const std::string context = "Reshape of " + Describe(in);
  std::vector<Entry> entries;
  int infer = -1;
  for (size_t j = 0; j < target.size(); ++j) {
    const Dim& d = target[j];
    Entry e;
    if (d.kind == Dim::Kind::kIn0 || d.kind == Dim::Kind::kIn1) {
      e.anchor = true;
      e.label = d.kind == Dim::Kind::kIn0 ? AxisKind::kIn0 : AxisKind::kIn1;
    } else if (!d.known()) {
      return Unsupported(context + " to a shape that depends on unknown sizes");
    } else if (d.value == 0 && !allowzero) {
      if (j >= in.size())
        return Invalid(context + " copies a missing dimension");
      if (in[j].kind == AxisKind::kIn0 || in[j].kind == AxisKind::kIn1) {
        e.anchor = true;
        e.label = in[j].kind;
      } else if (in[j].size < 0) {
        return Unsupported(context + " copies a dimension of unknown size");
      } else {
        e.size = in[j].size;
      }
    } else if (d.value == -1) {
      if (infer >= 0) return Invalid(context + " has two -1 entries");
      infer = static_cast<int>(entries.size());
      e.size = -1;
    } else if (d.value > 0) {
      e.size = d.value;
    } else {
      return Invalid(context + " to dimension " + std::to_string(d.value));
    }
    entries.push_back(e);
  }

  // Split both sides into the groups between the time/batch anchors.
  std::vector<AxisKind> in_anchors, out_anchors;
  std::vector<std::vector<Axis>> in_groups(1);
  std::vector<std::vector<Entry>> out_groups(1);
  int64_t in_product = 1, out_product = 1;
  for (const Axis& a : in) {
    if (a.kind == AxisKind::kIn0 || a.kind == AxisKind::kIn1) {
      in_anchors.push_back(a.kind);
      in_groups.emplace_back();
      continue;
    }
    if (a.size < 0) return Unsupported(context + ": a feature size is unknown");
    ASSIGN_OR_RETURN(in_product, ElementCount({in_product, a.size}));
    in_groups.back().push_back(a);
  }
  for (const Entry& e : entries) {
    if (e.anchor) {
      out_anchors.push_back(e.label);
      out_groups.emplace_back();
      continue;
    }
    if (e.size >= 0) {
      ASSIGN_OR_RETURN(out_product, ElementCount({out_product, e.size}));
    }
    out_groups.back().push_back(e);
  }
  if (in_anchors != out_anchors) {
    return Unsupported(context + " moves or merges the time/batch axes");
  }
  if (infer >= 0) {
    if (out_product == 0 || in_product % out_product != 0) {
      return Invalid(context + ": cannot infer the -1 dimension");
    }
    for (auto& group : out_groups) {
      for (Entry& e : group) {
        if (e.size == -1) e.size = in_product / out_product;
      }
    }
  }

  std::vector<Axis> out;
  for (size_t g = 0; g < in_groups.size(); ++g) {
    if (g > 0) out.push_back({in_anchors[g - 1], -1});
    const std::vector<Axis>& ig = in_groups[g];
    const std::vector<Entry>& og = out_groups[g];
    int64_t ip = 1, op = 1;
    for (const Axis& a : ig) ip *= a.size;
    for (const Entry& e : og) op *= e.size;
    if (ip != op)
      return Unsupported(context +
                         " moves features across the time/batch axes");
    // Unchanged sizes: keep the labels.
    bool same = ig.size() == og.size();
    for (size_t i = 0; same && i < ig.size(); ++i)
      same = ig[i].size == og[i].size;
    if (same) {
      out.insert(out.end(), ig.begin(), ig.end());
      continue;
    }
    // Otherwise only axes of size 1 may come and go, around one feature block.
    std::vector<Axis> core;
    for (const Axis& a : ig) {
      if (a.kind == AxisKind::kOne || (a.kind == AxisKind::kDir && a.size == 1))
        continue;
      core.push_back(a);
    }
    std::vector<size_t> big;  // entries of size > 1
    for (size_t i = 0; i < og.size(); ++i) {
      if (og[i].size != 1) big.push_back(i);
    }
    std::vector<Axis> group(og.size(), Axis{AxisKind::kOne, 1});
    bool ok = false;
    if (core.empty() && big.empty()) {
      ok = true;
    } else if (core.size() == 1 && core[0].kind == AxisKind::kFeat &&
               core[0].size > 1 && big.size() == 1) {
      group[big[0]] = core[0];
      ok = true;
    } else if (core.size() == 2 && core[0].kind == AxisKind::kDir &&
               core[1].kind == AxisKind::kFeat && core[1].size > 1) {
      if (big.size() == 1) {
        group[big[0]] = Axis{AxisKind::kFeat, og[big[0]].size};
        ok = true;
      } else if (big.size() == 2 && og[big[0]].size == core[0].size) {
        group[big[0]] = core[0];
        group[big[1]] = core[1];
        ok = true;
      }
    }
    if (!ok) {
      return Unsupported(context +
                         " regroups feature axes in a way that is not "
                         "supported (only [dirs, H] -> [dirs*H] merges are)");
    }
    out.insert(out.end(), group.begin(), group.end());
  }
  return out;
}

// --- LSTM / GRU
// ------------------------------------------------------------------

Status Importer::CheckRnnAttributes(bool lstm, int* directions) const {
  static const std::set<std::string> kKnown = {
      "hidden_size",      "direction",           "activations",
      "activation_alpha", "activation_beta",     "clip",
      "input_forget",     "linear_before_reset", "layout"};
  for (const onnx::AttributeProto& a : node_->attribute()) {
    if (kKnown.count(a.name()) == 0 || (!lstm && a.name() == "input_forget") ||
        (lstm && a.name() == "linear_before_reset")) {
      return Unsupported("attribute '" + a.name() + "' is not supported");
    }
  }
  ASSIGN_OR_RETURN(const std::string direction,
                   AttrString("direction", "forward"));
  if (direction == "forward") {
    *directions = 1;
  } else if (direction == "bidirectional") {
    *directions = 2;
  } else if (direction == "reverse") {
    return Unsupported("direction 'reverse' is not supported");
  } else {
    return Invalid("unknown direction '" + direction + "'");
  }
  ASSIGN_OR_RETURN(const int64_t layout, AttrInt("layout", 0));
  if (layout != 0) {
    return Unsupported("layout=" + std::to_string(layout) +
                       " (batch-major LSTM/GRU tensors) is not supported; "
                       "torch.onnx.export writes layout=0");
  }
  if (Attr("clip") != nullptr)
    return Unsupported("cell clipping (clip) is not supported");
  if (lstm) {
    ASSIGN_OR_RETURN(const int64_t input_forget, AttrInt("input_forget", 0));
    if (input_forget != 0) {
      return Unsupported(
          "input_forget=1 (coupled input and forget gates) is not supported");
    }
  } else {
    ASSIGN_OR_RETURN(const int64_t lbr, AttrInt("linear_before_reset", 0));
    if (lbr != 1) {
      return Unsupported(
          "linear_before_reset=0 is not supported: only PyTorch's "
          "GRU (linear_before_reset=1) is");
    }
  }
  ASSIGN_OR_RETURN(const std::vector<std::string> activations,
                   AttrStrings("activations"));
  if (!activations.empty()) {
    std::vector<std::string> expected;
    for (int d = 0; d < *directions; ++d) {
      expected.insert(expected.end(), {"Sigmoid", "Tanh"});
      if (lstm) expected.push_back("Tanh");
    }
    if (activations != expected) {
      std::string got;
      for (const std::string& a : activations)
        got += (got.empty() ? "" : ",") + a;
      return Unsupported(
          "activations [" + got + "] are not supported; only the defaults (" +
          (lstm ? "Sigmoid,Tanh,Tanh" : "Sigmoid,Tanh") + ") are");
    }
  }
  if (Attr("activation_alpha") != nullptr ||
      Attr("activation_beta") != nullptr) {
    return Unsupported("activation_alpha/activation_beta are not supported");
  }
  return Status::Ok();
}

StatusOr<StateSource> Importer::InitialState(const Value* v,
                                             const std::string& what,
                                             int directions, int hidden) const {
  if (v == nullptr) return StateSource{};
  switch (v->kind) {
    case Kind::kZeros:
      if (v->shape_known) {
        const std::vector<Dim>& s = v->ints;
        const bool bad = s.size() != 3 ||
                         (s[0].known() && s[0].value != directions) ||
                         (s[2].known() && s[2].value != hidden);
        if (bad) {
          return Invalid(what + " must be [" + std::to_string(directions) +
                         ", N, " + std::to_string(hidden) + "]");
        }
      }
      return StateSource{};
    case Kind::kFloatConst: {
      const FloatTensor& t = *v->tensor;
      if (t.dims.size() != 3 || t.dims[0] != directions ||
          t.dims[2] != hidden) {
        return Invalid(what + " has dims " + JoinInts(t.dims) + ", expected [" +
                       std::to_string(directions) + ", N, " +
                       std::to_string(hidden) + "]");
      }
      for (float x : t.values) {
        if (x != 0.0f)
          return Unsupported(
              what + ": a constant non-zero initial state is not supported");
      }
      return StateSource{};
    }
    case Kind::kStateInput:
      return v->state;
    default:
      return Unsupported(
          what + " is " +
          (v->kind == Kind::kOpaque ? v->note : KindName(v->kind)) +
          "; initial states must be zeros or rows of a graph input");
  }
}

StatusOr<Importer::Outputs> Importer::OpRnn(const Inputs& in, bool lstm) {
  const size_t max_inputs = lstm ? 8 : 6;
  if (in.size() > max_inputs) return Invalid("too many inputs");
  if (in.size() > 4 && in[4] != nullptr) {
    return Unsupported(
        "sequence_lens (input 4) is not supported: every sequence of "
        "a batch must have the same length");
  }
  if (lstm && in.size() > 7 && in[7] != nullptr) {
    return Unsupported("peephole weights (input P) are not supported");
  }
  int directions = 1;
  RETURN_IF_ERROR(CheckRnnAttributes(lstm, &directions));

  const Value& x = *in[0];
  if (x.kind != Kind::kSeq) {
    return Unsupported(
        "input X is " +
        (x.kind == Kind::kOpaque ? x.note : std::string(KindName(x.kind))) +
        ", not the sequence data");
  }
  for (int slot : {1, 2}) {
    if (in[slot]->kind != Kind::kFloatConst) {
      return Unsupported(std::string(slot == 1 ? "W" : "R") +
                         " must be a float constant (initializer or Constant)");
    }
  }
  const Value* b = in.size() > 3 ? in[3] : nullptr;
  if (b != nullptr && b->kind != Kind::kFloatConst) {
    return Unsupported("B must be a float constant (initializer or Constant)");
  }

  const int gates = lstm ? 4 : 3;
  const std::vector<int64_t>& wd = in[1]->tensor->dims;
  const std::vector<int64_t>& rd = in[2]->tensor->dims;
  if (rd.size() != 3 || rd[0] != directions || rd[2] <= 0 || rd[2] > kMaxSize ||
      rd[1] != gates * rd[2]) {
    return Invalid("R has dims " + JoinInts(rd) + ", expected [" +
                   std::to_string(directions) + ", " + std::to_string(gates) +
                   "*hidden, hidden]");
  }
  const int hidden = static_cast<int>(rd[2]);
  ASSIGN_OR_RETURN(const int64_t hidden_attr, AttrInt("hidden_size", hidden));
  if (hidden_attr != hidden) {
    return Invalid("hidden_size " + std::to_string(hidden_attr) +
                   " does not match R dims " + JoinInts(rd));
  }
  if (wd.size() != 3 || wd[0] != directions || wd[1] != gates * hidden ||
      wd[2] <= 0 || wd[2] > kMaxSize) {
    return Invalid("W has dims " + JoinInts(wd) + ", expected [" +
                   std::to_string(directions) + ", " +
                   std::to_string(gates * hidden) + ", input_size]");
  }
  const int input_size = static_cast<int>(wd[2]);
  if (b != nullptr) {
    const std::vector<int64_t>& bd = b->tensor->dims;
    if (bd.size() != 2 || bd[0] != directions || bd[1] != 2 * gates * hidden) {
      return Invalid("B has dims " + JoinInts(bd) + ", expected [" +
                     std::to_string(directions) + ", " +
                     std::to_string(2 * gates * hidden) + "]");
    }
  }

  // X must be [time, batch, features]; the first RNN node tells which input
  // axis is time.
  const Pipeline& p = *x.pipeline;
  const std::vector<Axis>& xa = x.axes;
  const bool shape_ok =
      xa.size() == 3 &&
      (xa[0].kind == AxisKind::kIn0 || xa[0].kind == AxisKind::kIn1) &&
      (xa[1].kind == AxisKind::kIn0 || xa[1].kind == AxisKind::kIn1) &&
      xa[0].kind != xa[1].kind && xa[2].kind == AxisKind::kFeat;
  if (!shape_ok || (bound_ && xa[0].kind != time_label_)) {
    return Unsupported("input X must be [time, batch, features], got " +
                       Describe(xa));
  }
  if (xa[2].size >= 0 && xa[2].size != input_size) {
    return Invalid("input X has " + std::to_string(xa[2].size) +
                   " features but W expects " + std::to_string(input_size));
  }
  if (p.input_kind == InputKind::kTokenIds && p.embedding == nullptr) {
    return Unsupported(
        "token ids must go through an embedding before the LSTM/GRU");
  }
  if (p.last_step || p.head != nullptr ||
      p.activation != OutputActivation::kNone) {
    return Unsupported(
        "an LSTM/GRU after the last-step selection, head or softmax "
        "is not supported");
  }
  if (!bound_) {
    bound_ = true;
    time_label_ = xa[0].kind;
  }

  auto layer = std::make_shared<RnnLayerSpec>();
  layer->cell = lstm ? CellType::kLstm : CellType::kGru;
  layer->input_size = input_size;
  layer->hidden_size = hidden;
  layer->directions = directions;
  ConvertRnnWeights(*in[1]->tensor, *in[2]->tensor,
                    b ? b->tensor.get() : nullptr, layer.get());

  auto next = std::make_shared<Pipeline>(p);
  const Value* h0 = in.size() > 5 ? in[5] : nullptr;
  const Value* c0 = lstm && in.size() > 6 ? in[6] : nullptr;
  ASSIGN_OR_RETURN(StateSource h_source,
                   InitialState(h0, "initial_h", directions, hidden));
  ASSIGN_OR_RETURN(StateSource c_source,
                   InitialState(c0, "initial_c", directions, hidden));
  next->init_h.push_back(h_source);
  next->init_c.push_back(c_source);
  next->layers.push_back(layer);
  const int layer_index = static_cast<int>(p.layers.size());

  Outputs outs;
  outs.push_back(Value::Seq({{xa[0].kind, -1},
                             {AxisKind::kDir, directions},
                             {xa[1].kind, -1},
                             {AxisKind::kFeat, hidden}},
                            next));
  for (bool cell : {false, true}) {
    if (cell && !lstm) break;
    Value state;
    state.kind = Kind::kFinalState;
    state.is_cell = cell;
    state.first_layer = layer_index;
    state.state_layers = {layer};
    state.pipeline = next;
    outs.push_back(std::move(state));
  }
  return outs;
}

// --- head
// ------------------------------------------------------------------------

StatusOr<Value> Importer::OpMatMul(const Value& a, const Value& b) {
  if (a.kind != Kind::kSeq || b.kind != Kind::kFloatConst) {
    return Unsupported(
        "MatMul is only supported as sequence x constant weight "
        "(the Linear head); got " +
        std::string(KindName(a.kind)) + " x " + KindName(b.kind));
  }
  RETURN_IF_ERROR(CheckHeadStage(*a.pipeline, "MatMul"));
  const std::vector<int64_t>& dims = b.tensor->dims;
  if (a.axes.empty() || a.axes.back().kind != AxisKind::kFeat) {
    return Unsupported("MatMul on " + Describe(a.axes) +
                       " does not act on features");
  }
  const int64_t in_features = a.axes.back().size;
  if (dims.size() != 2 || dims[0] != in_features || dims[1] <= 0 ||
      dims[1] > kMaxSize) {
    return Invalid("head weight has dims " + JoinInts(dims) + ", expected [" +
                   std::to_string(in_features) + ", out_features]");
  }
  auto head = std::make_shared<LinearSpec>();
  head->in_features = static_cast<int>(in_features);
  head->out_features = static_cast<int>(dims[1]);
  head->weight = b.tensor->values;
  head->bias.assign(head->out_features, 0.0f);
  auto next = std::make_shared<Pipeline>(*a.pipeline);
  next->head = std::move(head);
  next->head_bias = false;
  std::vector<Axis> axes = a.axes;
  axes.back().size = dims[1];
  return Value::Seq(std::move(axes), std::move(next));
}

StatusOr<Value> Importer::OpAdd(const Value& a, const Value& b) {
  const Value* seq = a.kind == Kind::kSeq ? &a : &b;
  const Value* bias = a.kind == Kind::kSeq ? &b : &a;
  if (seq->kind != Kind::kSeq || bias->kind != Kind::kFloatConst ||
      seq->pipeline->head == nullptr || seq->pipeline->head_bias ||
      seq->pipeline->activation != OutputActivation::kNone) {
    return Unsupported(
        "Add is only supported as the bias of the Linear head "
        "(right after its MatMul)");
  }
  const LinearSpec& head = *seq->pipeline->head;
  const FloatTensor& t = *bias->tensor;
  bool shape_ok = t.dims.size() <= seq->axes.size();
  for (size_t i = 0; shape_ok && i + 1 < t.dims.size(); ++i)
    shape_ok = t.dims[i] == 1;
  const int64_t count = static_cast<int64_t>(t.values.size());
  shape_ok = shape_ok &&
             (count == 1 || (count == head.out_features && !t.dims.empty() &&
                             t.dims.back() == head.out_features));
  if (!shape_ok) {
    return Invalid("head bias has dims " + JoinInts(t.dims) + ", expected [" +
                   std::to_string(head.out_features) + "]");
  }
  auto new_head = std::make_shared<LinearSpec>(head);
  for (int o = 0; o < head.out_features; ++o) {
    new_head->bias[o] += count == 1 ? t.values[0] : t.values[o];
  }
  auto next = std::make_shared<Pipeline>(*seq->pipeline);
  next->head = std::move(new_head);
  next->head_bias = true;
  return Value::Seq(seq->axes, std::move(next));
}

StatusOr<Value> Importer::OpGemm(const Inputs& in) {
  const Value& a = *in[0];
  const Value& b = *in[1];
  const Value* c = in.size() > 2 ? in[2] : nullptr;
  if (a.kind != Kind::kSeq || b.kind != Kind::kFloatConst ||
      (c != nullptr && c->kind != Kind::kFloatConst)) {
    return Unsupported(
        "Gemm is only supported as sequence x constant weight "
        "(+ constant bias), the Linear head");
  }
  RETURN_IF_ERROR(CheckHeadStage(*a.pipeline, "Gemm"));
  ASSIGN_OR_RETURN(const int64_t trans_a, AttrInt("transA", 0));
  ASSIGN_OR_RETURN(const int64_t trans_b, AttrInt("transB", 0));
  ASSIGN_OR_RETURN(const float alpha, AttrFloat("alpha", 1.0f));
  ASSIGN_OR_RETURN(const float beta, AttrFloat("beta", 1.0f));
  if (trans_a != 0) return Unsupported("transA=1 is not supported");
  if (a.axes.size() != 2 || a.axes.back().kind != AxisKind::kFeat) {
    return Unsupported("Gemm input must be [batch, features], got " +
                       Describe(a.axes));
  }
  const int64_t in_features = a.axes.back().size;
  const std::vector<int64_t>& dims = b.tensor->dims;
  if (dims.size() != 2)
    return Invalid("Gemm weight must be 2-D, got " + JoinInts(dims));
  const int64_t k_dim = trans_b ? dims[1] : dims[0];
  const int64_t out_features = trans_b ? dims[0] : dims[1];
  if (k_dim != in_features || out_features <= 0 || out_features > kMaxSize) {
    return Invalid("Gemm weight has dims " + JoinInts(dims) +
                   " (transB=" + std::to_string(trans_b) + "), input has " +
                   std::to_string(in_features) + " features");
  }
  auto head = std::make_shared<LinearSpec>();
  head->in_features = static_cast<int>(in_features);
  head->out_features = static_cast<int>(out_features);
  head->weight.resize(static_cast<size_t>(in_features * out_features));
  for (int64_t k = 0; k < in_features; ++k) {
    for (int64_t o = 0; o < out_features; ++o) {
      const float w = trans_b ? b.tensor->values[o * in_features + k]
                              : b.tensor->values[k * out_features + o];
      head->weight[k * out_features + o] = alpha * w;
    }
  }
  head->bias.assign(out_features, 0.0f);
  if (c != nullptr) {
    const FloatTensor& t = *c->tensor;
    const int64_t count = static_cast<int64_t>(t.values.size());
    const bool ok =
        count == 1 || (count == out_features && t.dims.size() <= 2 &&
                       t.dims.back() == out_features);
    if (!ok) {
      return Invalid("Gemm bias C has dims " + JoinInts(t.dims) +
                     ", expected [" + std::to_string(out_features) + "]");
    }
    for (int64_t o = 0; o < out_features; ++o) {
      head->bias[o] = beta * (count == 1 ? t.values[0] : t.values[o]);
    }
  }
  auto next = std::make_shared<Pipeline>(*a.pipeline);
  next->head = std::move(head);
  next->head_bias = c != nullptr;
  std::vector<Axis> axes = a.axes;
  axes.back().size = out_features;
  return Value::Seq(std::move(axes), std::move(next));
}

StatusOr<Value> Importer::OpSoftmax(const Value& v,
                                    OutputActivation activation) {
  if (v.kind != Kind::kSeq) {
    return Unsupported("Softmax/LogSoftmax of " +
                       std::string(KindName(v.kind)) + " is not supported");
  }
  const Pipeline& p = *v.pipeline;
  if (p.layers.empty() || p.activation != OutputActivation::kNone) {
    return Unsupported(
        "Softmax/LogSoftmax is only supported once, after the LSTM/GRU");
  }
  const int64_t rank = static_cast<int64_t>(v.axes.size());
  ASSIGN_OR_RETURN(const int64_t axis, AttrInt("axis", opset_ < 13 ? 1 : -1));
  int64_t k;
  if (!NormalizeAxis(axis, rank, &k)) return Invalid("axis out of range");
  if (k != rank - 1 || v.axes.back().kind != AxisKind::kFeat) {
    return Unsupported(
        "Softmax/LogSoftmax is only supported on the last (feature) axis, "
        "got axis " +
        std::to_string(axis) + " of " + Describe(v.axes));
  }
  auto next = std::make_shared<Pipeline>(p);
  next->activation = activation;
  return Value::Seq(v.axes, std::move(next));
}

// --- the result
// ------------------------------------------------------------------

// Checks that the layers' initial h (or c) are all zeros or all the
// consecutive row blocks of one graph input; sets `name` to that input.
Status Importer::CheckStateSources(const Pipeline& p, bool cell,
                                   std::string* name) const {
  const std::vector<StateSource>& sources = cell ? p.init_c : p.init_h;
  const char* what = cell ? "initial_c" : "initial_h";
  name->clear();
  const std::string& input = sources.front().input;
  const int64_t dirs = p.layers.front()->directions;
  const int64_t layers = static_cast<int64_t>(sources.size());
  for (int64_t k = 0; k < layers; ++k) {
    const StateSource& s = sources[k];
    const bool rows_ok =
        s.begin == k * dirs &&
        (s.end == (k + 1) * dirs || (s.end == -1 && k == layers - 1));
    if (s.input != input || (!input.empty() && !rows_ok)) {
      return GraphError(StatusCode::kUnimplemented,
                        std::string(what) + " of layer " + std::to_string(k) +
                            " is not rows [" + std::to_string(k * dirs) + ", " +
                            std::to_string((k + 1) * dirs) +
                            ") of one graph input "
                            "shared by all layers (or zeros for all layers)");
    }
  }
  if (!input.empty()) {
    const onnx::ValueInfoProto& info = *graph_inputs_.at(input);
    if (info.type().tensor_type().elem_type() != onnx::TensorProto::FLOAT) {
      return GraphError(StatusCode::kInvalidArgument,
                        "initial-state input '" + input + "' must be float");
    }
    if (info.type().tensor_type().has_shape()) {
      const onnx::TensorShapeProto& shape = info.type().tensor_type().shape();
      const int64_t hidden = p.layers.front()->hidden_size;
      const bool bad =
          shape.dim_size() != 3 ||
          (shape.dim(0).has_dim_value() &&
           shape.dim(0).dim_value() != layers * dirs) ||
          (shape.dim(2).has_dim_value() && shape.dim(2).dim_value() != hidden);
      if (bad) {
        return GraphError(StatusCode::kInvalidArgument,
                          "initial-state input '" + input + "' must be [" +
                              std::to_string(layers * dirs) + ", N, " +
                              std::to_string(hidden) + "]");
      }
    }
  }
  *name = input;
  return Status::Ok();
}

StatusOr<ModelSpec> Importer::BuildSpec() {
  node_ = nullptr;
  const Value* main = nullptr;
  std::string main_name;
  for (const onnx::ValueInfoProto& out : graph_.output()) {
    auto it = values_.find(out.name());
    if (it == values_.end()) {
      if (graph_inputs_.count(out.name()) || initializers_.count(out.name())) {
        return GraphError(
            StatusCode::kUnimplemented,
            "graph output '" + out.name() + "' is a graph input or constant");
      }
      return GraphError(
          StatusCode::kInvalidArgument,
          "graph output '" + out.name() + "' is not produced by any node");
    }
    if (it->second.kind == Kind::kSeq) {
      if (main != nullptr) {
        return GraphError(
            StatusCode::kUnimplemented,
            "graph outputs '" + main_name + "' and '" + out.name() +
                "' both carry sequence data; one main output is supported");
      }
      main = &it->second;
      main_name = out.name();
    }
  }
  if (main == nullptr) {
    return GraphError(StatusCode::kInvalidArgument,
                      "no graph output carries the result of an LSTM/GRU");
  }
  const Pipeline& p = *main->pipeline;
  if (p.layers.empty()) {
    return GraphError(
        StatusCode::kInvalidArgument,
        "graph has no LSTM or GRU node between input and output '" + main_name +
            "'");
  }
  const RnnLayerSpec& first = *p.layers.front();
  for (const auto& layer : p.layers) {
    if (layer->cell != first.cell || layer->hidden_size != first.hidden_size ||
        layer->directions != first.directions) {
      return GraphError(StatusCode::kUnimplemented,
                        "stacked layers must share cell type, hidden size and "
                        "directions (as nn.LSTM/nn.GRU layers do)");
    }
  }

  ModelSpec spec;
  spec.input_name = p.input_name;
  spec.input_kind = p.input_kind;
  spec.input_type = p.input_type;
  spec.batch_first = time_label_ == AxisKind::kIn1;
  spec.output_name = main_name;
  spec.last_step_only = p.last_step;
  spec.activation = p.activation;
  spec.has_embedding = p.embedding != nullptr;
  if (spec.has_embedding) spec.embedding = *p.embedding;
  for (const auto& layer : p.layers) spec.layers.push_back(*layer);
  spec.feature_size = first.input_size;
  spec.has_head = p.head != nullptr;
  if (spec.has_head) spec.head = *p.head;
  const int out_size = spec.output_size();

  // The main output must keep the input's layout: [N, O] after the last step,
  // else [N, T, O] / [T, N, O] as the input was.
  const std::vector<Axis>& axes = main->axes;
  const bool layout_ok = p.last_step ? axes.size() == 2 && IsBatch(axes[0]) &&
                                           axes[1].kind == AxisKind::kFeat
                                     : axes.size() == 3 &&
                                           axes[0].kind == AxisKind::kIn0 &&
                                           axes[1].kind == AxisKind::kIn1 &&
                                           axes[2].kind == AxisKind::kFeat;
  if (!layout_ok || axes.back().size != out_size) {
    return GraphError(StatusCode::kUnimplemented,
                      "graph output '" + main_name + "' is " + Describe(axes) +
                          "; expected " +
                          (p.last_step        ? "[N, "
                           : spec.batch_first ? "[N, T, "
                                              : "[T, N, ") +
                          std::to_string(out_size) + "] (the input's layout)");
  }

  RETURN_IF_ERROR(CheckStateSources(p, false, &spec.initial_h_name));
  if (first.cell == CellType::kLstm) {
    RETURN_IF_ERROR(CheckStateSources(p, true, &spec.initial_c_name));
  }

  for (const onnx::ValueInfoProto& out : graph_.output()) {
    const Value& v = values_.at(out.name());
    if (v.kind == Kind::kSeq) continue;
    if (v.kind != Kind::kFinalState) {
      return GraphError(
          StatusCode::kUnimplemented,
          "graph output '" + out.name() + "' is " + KindName(v.kind) +
              "; only the main output and final states h_n/c_n are supported");
    }
    bool covers =
        v.first_layer == 0 && v.state_layers.size() == p.layers.size();
    for (size_t k = 0; covers && k < p.layers.size(); ++k) {
      covers = v.state_layers[k] == p.layers[k];
    }
    if (!covers) {
      return GraphError(
          StatusCode::kUnimplemented,
          "graph output '" + out.name() +
              "' is not the final state of all layers of the model");
    }
    std::string& name = v.is_cell ? spec.final_c_name : spec.final_h_name;
    if (!name.empty()) {
      return GraphError(StatusCode::kUnimplemented,
                        "graph outputs '" + name + "' and '" + out.name() +
                            "' are the same final state");
    }
    name = out.name();
  }

  for (const auto& [name, info] : graph_inputs_) {
    if (name != spec.input_name && name != spec.initial_h_name &&
        name != spec.initial_c_name) {
      return GraphError(
          StatusCode::kUnimplemented,
          "graph input '" + name + "' is not used by the supported pattern");
    }
  }

  const std::string problem = ValidateModelSpec(spec);
  if (!problem.empty()) {
    return GraphError(StatusCode::kInvalidArgument,
                      "inconsistent model: " + problem);
  }
  return spec;
}

StatusOr<ModelSpec> Importer::Import() {
  bool found_opset = false;
  for (const onnx::OperatorSetIdProto& o : model_.opset_import()) {
    if (o.domain().empty() || o.domain() == "ai.onnx") {
      opset_ = o.version();
      found_opset = true;
    }
  }
  if (!found_opset) {
    return GraphError(StatusCode::kInvalidArgument,
                      "model imports no ai.onnx opset");
  }
  if (opset_ < kMinOpset || opset_ > kMaxOpset) {
    return GraphError(StatusCode::kUnimplemented,
                      "opset " + std::to_string(opset_) +
                          " is not supported (" + std::to_string(kMinOpset) +
                          "-" + std::to_string(kMaxOpset) + " are)");
  }
  max_folded_elements_ = static_cast<int64_t>(model_.ByteSizeLong() / 4) + 4096;
  RETURN_IF_ERROR(IndexGraph());
  for (int i = 0; i < graph_.node_size(); ++i) {
    if (!needed_[i]) continue;
    node_ = &graph_.node(i);
    node_index_ = i;
    RETURN_IF_ERROR(ProcessNode(*node_));
  }
  return BuildSpec();
}

}  // namespace

StatusOr<ModelSpec> ImportOnnxModel(const std::string& bytes,
                                    const std::string& what) {
  onnx::ModelProto model;
  if (bytes.empty() || !model.ParseFromString(bytes)) {
    return InvalidArgument(what +
                           ": not a valid ONNX model (protobuf parse failed)");
  }
  if (!model.has_graph() || model.graph().node_size() == 0) {
    return InvalidArgument(what + ": not a valid ONNX model (no graph)");
  }
  Importer importer(model, what);
  return importer.Import();
}

StatusOr<ModelSpec> ImportOnnxFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return NotFound(path + ": cannot open file");
  std::ostringstream contents;
  contents << file.rdbuf();
  if (file.bad()) return NotFound(path + ": cannot read file");
  return ImportOnnxModel(contents.str(), path);
}

}  // namespace rnnserve::engine
