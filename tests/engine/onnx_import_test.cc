#include "server/engine/onnx_import.h"

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/engine/golden_cases.h"

namespace rnnserve::engine {
namespace {

using ::rnnserve::testing::GoldenCase;
using ::rnnserve::testing::Json;
using ::rnnserve::testing::LoadGoldenCases;
using ::rnnserve::testing::ReadFileOrEmpty;

std::string BadDir() { return std::string(RNNSERVE_TESTDATA) + "/bad_onnx"; }

std::vector<GoldenCase> CasesOrSkip() {
  std::string error;
  std::vector<GoldenCase> cases = LoadGoldenCases(&error);
  EXPECT_TRUE(error.empty()) << error;
  return cases;
}

// The golden model `name` parsed into a ModelProto, for in-memory edits.
onnx::ModelProto LoadGoldenModel(const std::string& name) {
  onnx::ModelProto model;
  const std::string bytes = ReadFileOrEmpty(::rnnserve::testing::GoldenRoot() +
                                            "/" + name + "/model.onnx");
  EXPECT_FALSE(bytes.empty()) << name;
  EXPECT_TRUE(model.ParseFromString(bytes)) << name;
  return model;
}

onnx::NodeProto* FindNode(onnx::ModelProto* model, const std::string& op,
                          int nth = 0) {
  for (onnx::NodeProto& node : *model->mutable_graph()->mutable_node()) {
    if (node.op_type() == op && nth-- == 0) return &node;
  }
  return nullptr;
}

onnx::TensorProto* FindInitializer(onnx::ModelProto* model,
                                   const std::string& name) {
  for (onnx::TensorProto& t : *model->mutable_graph()->mutable_initializer()) {
    if (t.name() == name) return &t;
  }
  return nullptr;
}

onnx::AttributeProto* SetIntAttr(onnx::NodeProto* node, const std::string& name,
                                 int64_t value) {
  for (onnx::AttributeProto& a : *node->mutable_attribute()) {
    if (a.name() == name) {
      a.set_i(value);
      return &a;
    }
  }
  onnx::AttributeProto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
  return a;
}

// Adds a Constant node producing the int64 vector `values` as `name`.
void AddIntConstant(onnx::GraphProto* graph, const std::string& name,
                    const std::vector<int64_t>& values) {
  onnx::NodeProto* node = graph->add_node();
  node->set_op_type("Constant");
  node->set_name(name + "_node");
  node->add_output(name);
  onnx::AttributeProto* a = node->add_attribute();
  a->set_name("value");
  a->set_type(onnx::AttributeProto::TENSOR);
  onnx::TensorProto* t = a->mutable_t();
  t->set_data_type(onnx::TensorProto::INT64);
  t->add_dims(static_cast<int64_t>(values.size()));
  for (int64_t v : values) t->add_int64_data(v);
}

// Moves the last node of `graph` to position `index` (keeping topological
// order when new nodes must precede existing consumers).
void MoveLastNodeTo(onnx::GraphProto* graph, int index) {
  for (int i = graph->node_size() - 1; i > index; --i) {
    graph->mutable_node()->SwapElements(i, i - 1);
  }
}

std::string Serialize(const onnx::ModelProto& model) {
  std::string bytes;
  EXPECT_TRUE(model.SerializeToString(&bytes));
  return bytes;
}

// --- golden cases ------------------------------------------------------------

TEST(OnnxImportTest, ImportsEveryGoldenCaseWithManifestFields) {
  const std::vector<GoldenCase> cases = CasesOrSkip();
  ASSERT_FALSE(cases.empty());
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE(c.name());
    StatusOr<ModelSpec> spec = ImportOnnxFile(c.Model());
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    const auto& j = c.json;
    const int dirs = j.Bool("bidirectional") ? 2 : 1;
    const CellType cell =
        j.Str("cell") == "lstm" ? CellType::kLstm : CellType::kGru;
    ASSERT_EQ(spec->layers.size(), static_cast<size_t>(j.Int("num_layers")));
    for (size_t k = 0; k < spec->layers.size(); ++k) {
      const RnnLayerSpec& layer = spec->layers[k];
      EXPECT_EQ(layer.cell, cell);
      EXPECT_EQ(layer.directions, dirs);
      EXPECT_EQ(layer.hidden_size, j.Int("hidden_size"));
      EXPECT_EQ(layer.input_size,
                k == 0 ? j.Int("input_size") : j.Int("hidden_size") * dirs);
    }
    EXPECT_EQ(spec->batch_first, j.Bool("batch_first"));
    EXPECT_EQ(spec->feature_size, j.Int("input_size"));
    const bool tokens = j.Str("input_kind") == "tokens";
    EXPECT_EQ(spec->input_kind,
              tokens ? InputKind::kTokenIds : InputKind::kFeatures);
    EXPECT_EQ(spec->has_embedding, tokens);
    if (tokens) {
      EXPECT_EQ(spec->input_type, ElementType::kInt64);
      EXPECT_EQ(spec->embedding.vocab_size, j.Int("vocab_size"));
      EXPECT_EQ(spec->embedding.dim, j.Int("input_size"));
    } else {
      EXPECT_EQ(spec->input_type, ElementType::kFloat32);
    }
    const std::string head = j.Str("head");
    EXPECT_EQ(spec->has_head, head != "none");
    EXPECT_EQ(spec->last_step_only, head == "last_step");
    if (head != "none") {
      EXPECT_EQ(spec->head.out_features, j.Int("head_out"));
      EXPECT_EQ(spec->head.in_features, j.Int("hidden_size") * dirs);
    }
    EXPECT_STREQ(OutputActivationName(spec->activation),
                 j.Str("activation").c_str());

    const Json* inputs = j.Find("input_names");
    const Json* outputs = j.Find("output_names");
    ASSERT_TRUE(inputs && outputs);
    ASSERT_FALSE(inputs->array.empty());
    ASSERT_FALSE(outputs->array.empty());
    EXPECT_EQ(spec->input_name, inputs->array[0].string);
    EXPECT_EQ(spec->output_name, outputs->array[0].string);
    const bool states_in = j.Bool("initial_state_inputs");
    EXPECT_EQ(spec->initial_h_name, states_in ? "h0" : "");
    EXPECT_EQ(spec->initial_c_name,
              states_in && cell == CellType::kLstm ? "c0" : "");
    const bool states_out = j.Bool("state_outputs");
    EXPECT_EQ(spec->final_h_name, states_out ? "hn" : "");
    EXPECT_EQ(spec->final_c_name,
              states_out && cell == CellType::kLstm ? "cn" : "");
    EXPECT_EQ(ValidateModelSpec(*spec), "");
    EXPECT_GT(spec->ParameterCount(), 0);
  }
}

// The last step written as Slice(-1:) + Squeeze instead of Gather(-1) gives
// the same spec.
TEST(OnnxImportTest, SliceSqueezeLastStepEqualsGather) {
  onnx::ModelProto model = LoadGoldenModel("lstm_2l_head_last_softmax");
  StatusOr<ModelSpec> expected = ImportOnnxModel(Serialize(model), "gather");
  ASSERT_TRUE(expected.ok()) << expected.status().ToString();
  ASSERT_TRUE(expected->last_step_only);

  onnx::GraphProto* graph = model.mutable_graph();
  int gather_index = -1;
  for (int i = 0; i < graph->node_size(); ++i) {
    const onnx::NodeProto& n = graph->node(i);
    if (n.op_type() == "Gather" && n.name().find("rnn") == std::string::npos) {
      gather_index = i;
    }
  }
  ASSERT_GE(gather_index, 0);
  const onnx::NodeProto gather = graph->node(gather_index);
  int64_t axis = 0;
  for (const auto& a : gather.attribute()) {
    if (a.name() == "axis") axis = a.i();
  }
  graph->mutable_node()->DeleteSubrange(gather_index, 1);
  AddIntConstant(graph, "ls_starts", {-1});
  MoveLastNodeTo(graph, gather_index);
  AddIntConstant(graph, "ls_ends", {std::numeric_limits<int64_t>::max()});
  MoveLastNodeTo(graph, gather_index + 1);
  AddIntConstant(graph, "ls_axes", {axis});
  MoveLastNodeTo(graph, gather_index + 2);
  onnx::NodeProto* slice = graph->add_node();
  slice->set_op_type("Slice");
  slice->set_name("/LastSlice");
  slice->add_input(gather.input(0));
  slice->add_input("ls_starts");
  slice->add_input("ls_ends");
  slice->add_input("ls_axes");
  slice->add_output("ls_sliced");
  MoveLastNodeTo(graph, gather_index + 3);
  onnx::NodeProto* squeeze = graph->add_node();
  squeeze->set_op_type("Squeeze");
  squeeze->set_name("/LastSqueeze");
  squeeze->add_input("ls_sliced");
  squeeze->add_input("ls_axes");
  squeeze->add_output(gather.output(0));
  MoveLastNodeTo(graph, gather_index + 4);

  StatusOr<ModelSpec> spec = ImportOnnxModel(Serialize(model), "slice");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_TRUE(spec->last_step_only);
  EXPECT_EQ(spec->head.weight, expected->head.weight);
  EXPECT_EQ(spec->layers[1].w_iter, expected->layers[1].w_iter);
  EXPECT_EQ(spec->activation, OutputActivation::kSoftmax);
}

// fc(h_n[-1]) of a unidirectional stack is the last step of the last layer.
TEST(OnnxImportTest, LastLayerFinalHiddenIsLastStep) {
  onnx::ModelProto model = LoadGoldenModel("lstm_2l_head_last_softmax");
  onnx::NodeProto* last_lstm = FindNode(&model, "LSTM", 1);
  ASSERT_NE(last_lstm, nullptr);
  ASSERT_GE(last_lstm->output_size(), 2);
  std::string y_h = last_lstm->output(1);
  if (y_h.empty()) {
    y_h = "last_y_h";
    last_lstm->set_output(1, y_h);
  }
  onnx::NodeProto* gather = nullptr;
  for (onnx::NodeProto& n : *model.mutable_graph()->mutable_node()) {
    if (n.op_type() == "Gather" && n.name().find("rnn") == std::string::npos)
      gather = &n;
  }
  ASSERT_NE(gather, nullptr);
  gather->set_input(0, y_h);
  SetIntAttr(gather, "axis", 0);
  StatusOr<ModelSpec> spec = ImportOnnxModel(Serialize(model), "h_n[-1]");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_TRUE(spec->last_step_only);
  EXPECT_EQ(spec->layers.size(), 2u);
}

// keep_initializers_as_inputs=True lists every weight as a graph input too;
// the initializer wins and the spec is unchanged.
TEST(OnnxImportTest, InitializersListedAsInputsAreConstants) {
  onnx::ModelProto model = LoadGoldenModel("lstm_bidir_2l_head_last_seqmajor");
  StatusOr<ModelSpec> expected = ImportOnnxModel(Serialize(model), "plain");
  ASSERT_TRUE(expected.ok()) << expected.status().ToString();
  for (const onnx::TensorProto& t : model.graph().initializer()) {
    onnx::ValueInfoProto* in = model.mutable_graph()->add_input();
    in->set_name(t.name());
    in->mutable_type()->mutable_tensor_type()->set_elem_type(t.data_type());
  }
  StatusOr<ModelSpec> spec = ImportOnnxModel(Serialize(model), "inputs");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->input_name, expected->input_name);
  EXPECT_EQ(spec->layers[1].w_layer, expected->layers[1].w_layer);
  EXPECT_EQ(spec->head.bias, expected->head.bias);
}

// --- rejections
// ------------------------------------------------------------------

struct BadCase {
  const char* file;
  const char* node;  // "" for parse failures
  const char* op;
  StatusCode code;
  const char* reason;  // a word the message must contain
};

const BadCase kBadCases[] = {
    {"unsupported_op.onnx", "/mid/Relu", "Relu", StatusCode::kUnimplemented,
     "Relu"},
    {"unsupported_tanh.onnx", "/mid/Tanh", "Tanh", StatusCode::kUnimplemented,
     "Tanh"},
    {"unsupported_conv.onnx", "/conv/Conv", "Conv", StatusCode::kUnimplemented,
     "Conv"},
    {"rnn_op.onnx", "/rnn/RNN", "RNN", StatusCode::kUnimplemented, "RNN"},
    {"lstm_peephole.onnx", "/rnn/LSTM", "LSTM", StatusCode::kUnimplemented,
     "peephole"},
    {"lstm_seq_lens.onnx", "/rnn/LSTM", "LSTM", StatusCode::kUnimplemented,
     "sequence_lens"},
    {"lstm_activations.onnx", "/rnn/LSTM", "LSTM", StatusCode::kUnimplemented,
     "activations"},
    {"lstm_clip.onnx", "/rnn/LSTM", "LSTM", StatusCode::kUnimplemented, "clip"},
    {"lstm_input_forget.onnx", "/rnn/LSTM", "LSTM", StatusCode::kUnimplemented,
     "input_forget"},
    {"truncated.onnx", "", "", StatusCode::kInvalidArgument,
     "not a valid ONNX model"},
    {"garbage.onnx", "", "", StatusCode::kInvalidArgument,
     "not a valid ONNX model"},
};

TEST(OnnxImportTest, RejectsBadFilesNamingNodeAndOp) {
  for (const BadCase& bad : kBadCases) {
    SCOPED_TRACE(bad.file);
    const std::string path = BadDir() + "/" + bad.file;
    ASSERT_TRUE(std::filesystem::exists(path)) << path;
    StatusOr<ModelSpec> spec = ImportOnnxFile(path);
    ASSERT_FALSE(spec.ok());
    EXPECT_EQ(spec.status().code(), bad.code) << spec.status().ToString();
    const std::string& message = spec.status().message();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find(bad.reason), std::string::npos) << message;
    if (*bad.node != '\0') {
      EXPECT_NE(message.find(std::string("node '") + bad.node + "'"),
                std::string::npos)
          << message;
      EXPECT_NE(message.find(std::string("(") + bad.op + ")"),
                std::string::npos)
          << message;
    }
  }
}

// Every file in bad_onnx/ (including any added later) is rejected.
TEST(OnnxImportTest, RejectsEveryFileInBadDir) {
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(BadDir())) {
    if (entry.path().extension() != ".onnx") continue;
    ++files;
    StatusOr<ModelSpec> spec = ImportOnnxFile(entry.path().string());
    EXPECT_FALSE(spec.ok()) << entry.path();
    if (!spec.ok()) {
      EXPECT_FALSE(spec.status().message().empty());
    }
  }
  EXPECT_GE(files, 11);
}

TEST(OnnxImportTest, MissingFileIsNotFound) {
  StatusOr<ModelSpec> spec = ImportOnnxFile("/nonexistent/model.onnx");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), StatusCode::kNotFound);
}

TEST(OnnxImportTest, RejectsEmptyBytes) {
  StatusOr<ModelSpec> spec = ImportOnnxModel("", "empty");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find("empty: not a valid ONNX model"),
            std::string::npos);
}

TEST(OnnxImportTest, RejectsEveryTruncation) {
  const std::string bytes =
      Serialize(LoadGoldenModel("lstm_tokens_head_every"));
  ASSERT_TRUE(ImportOnnxModel(bytes, "whole").ok());
  const size_t stride = std::max<size_t>(1, bytes.size() / 400);
  for (size_t cut = 0; cut < bytes.size(); cut += stride) {
    StatusOr<ModelSpec> spec = ImportOnnxModel(bytes.substr(0, cut), "cut");
    ASSERT_FALSE(spec.ok()) << "cut at " << cut;
    EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument)
        << spec.status().ToString();
  }
}

// Random byte corruption must never crash; whatever is accepted is valid.
TEST(OnnxImportTest, SurvivesRandomCorruption) {
  for (const char* name :
       {"lstm_bidir_2l_head_last_seqmajor", "gru_tokens_state_io"}) {
    const std::string bytes = Serialize(LoadGoldenModel(name));
    std::mt19937 rng(42);
    for (int trial = 0; trial < 300; ++trial) {
      std::string corrupt = bytes;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; ++f) {
        corrupt[rng() % corrupt.size()] = static_cast<char>(rng() & 0xFF);
      }
      StatusOr<ModelSpec> spec = ImportOnnxModel(corrupt, "corrupt");
      if (spec.ok()) {
        EXPECT_EQ(ValidateModelSpec(*spec), "");
      } else {
        EXPECT_FALSE(spec.status().message().empty());
      }
    }
  }
}

TEST(OnnxImportTest, RejectsWeightInitializerOfWrongSize) {
  onnx::ModelProto model = LoadGoldenModel("lstm_1l");
  onnx::NodeProto* lstm = FindNode(&model, "LSTM");
  ASSERT_NE(lstm, nullptr);
  const std::string w_name = lstm->input(1);
  onnx::TensorProto* w = FindInitializer(&model, w_name);
  ASSERT_NE(w, nullptr);
  ASSERT_TRUE(w->has_raw_data());
  w->set_raw_data(w->raw_data().substr(0, w->raw_data().size() - 4));
  StatusOr<ModelSpec> spec = ImportOnnxModel(Serialize(model), "m");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  const std::string& message = spec.status().message();
  EXPECT_NE(message.find("node '" + lstm->name() + "' (LSTM)"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find(w_name), std::string::npos) << message;
}

TEST(OnnxImportTest, RejectsWeightOfWrongShape) {
  onnx::ModelProto model = LoadGoldenModel("gru_1l");
  onnx::NodeProto* gru = FindNode(&model, "GRU");
  ASSERT_NE(gru, nullptr);
  onnx::TensorProto* r = FindInitializer(&model, gru->input(2));
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->dims_size(), 3);
  // Same element count, transposed dims: [1, H, 3H] instead of [1, 3H, H].
  const int64_t d1 = r->dims(1), d2 = r->dims(2);
  r->set_dims(1, d2);
  r->set_dims(2, d1);
  StatusOr<ModelSpec> spec = ImportOnnxModel(Serialize(model), "m");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find("(GRU): R has dims"),
            std::string::npos)
      << spec.status().message();
}

TEST(OnnxImportTest, RejectsGruWithoutLinearBeforeReset) {
  onnx::ModelProto model = LoadGoldenModel("gru_1l");
  onnx::NodeProto* gru = FindNode(&model, "GRU");
  ASSERT_NE(gru, nullptr);
  SetIntAttr(gru, "linear_before_reset", 0);
  StatusOr<ModelSpec> spec = ImportOnnxModel(Serialize(model), "m");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(spec.status().message().find("linear_before_reset=0"),
            std::string::npos);
  EXPECT_NE(spec.status().message().find("(GRU)"), std::string::npos);
}

TEST(OnnxImportTest, RejectsBatchMajorLayoutAttribute) {
  onnx::ModelProto model = LoadGoldenModel("lstm_1l");
  SetIntAttr(FindNode(&model, "LSTM"), "layout", 1);
  StatusOr<ModelSpec> spec = ImportOnnxModel(Serialize(model), "m");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(spec.status().message().find("layout=1"), std::string::npos);
}

TEST(OnnxImportTest, RejectsReverseDirection) {
  onnx::ModelProto model = LoadGoldenModel("lstm_1l");
  onnx::AttributeProto* a = FindNode(&model, "LSTM")->add_attribute();
  a->set_name("direction");
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s("reverse");
  StatusOr<ModelSpec> spec = ImportOnnxModel(Serialize(model), "m");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(spec.status().message().find("reverse"), std::string::npos);
}

TEST(OnnxImportTest, RejectsGraphWithoutRecurrentNode) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(14);
  onnx::GraphProto* graph = model.mutable_graph();
  onnx::ValueInfoProto* in = graph->add_input();
  in->set_name("x");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  for (int i = 0; i < 3; ++i) tt->mutable_shape()->add_dim()->set_dim_value(4);
  onnx::NodeProto* node = graph->add_node();
  node->set_op_type("Identity");
  node->set_name("/Identity");
  node->add_input("x");
  node->add_output("y");
  graph->add_output()->set_name("y");
  StatusOr<ModelSpec> spec = ImportOnnxModel(Serialize(model), "m");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find("no LSTM or GRU"), std::string::npos)
      << spec.status().message();
}

TEST(OnnxImportTest, RejectsUndefinedTensor) {
  onnx::ModelProto model = LoadGoldenModel("lstm_1l");
  FindNode(&model, "LSTM")->set_input(1, "no_such_weight");
  StatusOr<ModelSpec> spec = ImportOnnxModel(Serialize(model), "m");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find("no_such_weight"), std::string::npos);
}

}  // namespace
}  // namespace rnnserve::engine
