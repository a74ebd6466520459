// rnnserve-model: the offline model tool.
//
//   rnnserve-model inspect MODEL
//   rnnserve-model quantize MODEL.onnx --calibration CAL.npy -o OUT
//                  [--method minmax|percentile|mse] [--percentile P]
//                  [--per-tensor] [--report REPORT.json] [--holdout X.npy]
//                  [--labels Y.npy] [--plot PLOT.png]
//   rnnserve-model run MODEL --input X.npy --output Y.npy
//                  [--precision f32|int8] [--calibration CAL.npy]
//                  [--method M] [--percentile P] [--per-tensor]
//                  [--batch N] [--threads K]
//   rnnserve-model bench MODEL --batch N --seq T [--precision f32|int8]
//                  [--threads K] [--workers W] [--calibration CAL.npy]
//                  [--duration S] [--min-iterations I] [--json]
//
// MODEL is an ONNX file or a quantized artifact (.rnnq). Exit status: 0 on
// success, 1 when the work failed, 2 for a usage error.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "server/common/npy.h"
#include "server/common/status.h"
#include "server/engine/artifact.h"
#include "server/engine/model_spec.h"
#include "server/engine/onnx_import.h"
#include "server/engine/quantization.h"
#include "server/engine/rnn_model.h"
#include "server/engine/sequence_io.h"
#include "tools/quant_report.h"

namespace rnnserve::tool {
namespace {

using engine::LoadedArtifact;
using engine::ModelSpec;
using engine::Precision;
using engine::QuantizationSpec;
using engine::RnnModel;
using engine::RnnModelOptions;
using engine::RunOutput;
using engine::SequenceSet;

constexpr char kUsage[] =
    "usage:\n"
    "  rnnserve-model inspect MODEL\n"
    "  rnnserve-model quantize MODEL.onnx --calibration CAL.npy -o OUT\n"
    "                 [--method minmax|percentile|mse] [--percentile P]\n"
    "                 [--per-tensor] [--report REPORT.json] [--holdout X.npy]\n"
    "                 [--labels Y.npy] [--plot PLOT.png] [--batch N] [--threads K]\n"
    "  rnnserve-model run MODEL --input X.npy --output Y.npy\n"
    "                 [--precision f32|int8] [--calibration CAL.npy]\n"
    "                 [--method M] [--percentile P] [--per-tensor]\n"
    "                 [--batch N] [--threads K]\n"
    "  rnnserve-model bench MODEL --batch N --seq T [--precision f32|int8]\n"
    "                 [--threads K] [--workers W] [--calibration CAL.npy]\n"
    "                 [--duration S] [--min-iterations I] [--json]\n"
    "MODEL is an ONNX model or a quantized artifact (*.rnnq) written by\n"
    "`quantize`. Arrays are .npy in the model's layout ([N,T,F] features or\n"
    "[N,T] token ids; [T,N,...] for sequence-major models).\n"
    "quantize --report compares int8 calibration methods, per-channel and\n"
    "per-tensor weights, and simulated 4-bit log2 weights against f32 on\n"
    "--holdout (default: the calibration set); --labels (int64 class ids,\n"
    "the output's shape without its last axis) adds the task accuracy; the\n"
    "plot (--plot, default REPORT.png) needs gnuplot.\n";

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;
  std::set<std::string> switches;
};

// Parses `--flag value` pairs and bare switches; unknown names are errors.
StatusOr<Args> ParseArgs(int argc, char** argv, int first,
                         const std::set<std::string>& with_value,
                         const std::set<std::string>& bare) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string s = argv[i];
    if (s.size() > 1 && s[0] == '-') {
      std::string value;
      const size_t eq = s.find('=');
      if (eq != std::string::npos) {
        value = s.substr(eq + 1);
        s = s.substr(0, eq);
      }
      if (bare.count(s)) {
        a.switches.insert(s);
      } else if (with_value.count(s)) {
        if (eq == std::string::npos) {
          if (i + 1 >= argc) return InvalidArgument(s + " needs a value");
          value = argv[++i];
        }
        a.flags[s] = value;
      } else {
        return InvalidArgument("unknown option " + s);
      }
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

StatusOr<int> IntFlag(const Args& a, const std::string& name, int def, int lo,
                      int hi) {
  auto it = a.flags.find(name);
  if (it == a.flags.end()) return def;
  char* end = nullptr;
  const long v = std::strtol(it->second.c_str(), &end, 10);
  if (it->second.empty() || *end || v < lo || v > hi) {
    return InvalidArgument(name + ": expected an integer in [" +
                           std::to_string(lo) + ", " + std::to_string(hi) +
                           "], got '" + it->second + "'");
  }
  return static_cast<int>(v);
}

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return NotFound(path + ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct LoadedModel {
  std::shared_ptr<const ModelSpec> spec;
  std::shared_ptr<const QuantizationSpec> quantization;  // artifacts only
  bool is_artifact = false;
  int64_t file_bytes = 0;
  std::string sha256;
  std::string source_sha256;  // artifacts: the ONNX they came from
};

StatusOr<LoadedModel> LoadModel(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  LoadedModel m;
  m.file_bytes = static_cast<int64_t>(bytes.size());
  m.sha256 = engine::Sha256Hex(bytes);
  if (engine::LooksLikeArtifact(bytes)) {
    ASSIGN_OR_RETURN(LoadedArtifact a, engine::ParseArtifact(bytes, path));
    m.is_artifact = true;
    m.source_sha256 = a.source_sha256;
    m.spec = std::make_shared<const ModelSpec>(std::move(a.spec));
    m.quantization =
        std::make_shared<const QuantizationSpec>(std::move(a.quantization));
  } else {
    ASSIGN_OR_RETURN(ModelSpec spec, engine::ImportOnnxModel(bytes, path));
    m.spec = std::make_shared<const ModelSpec>(std::move(spec));
  }
  return m;
}

StatusOr<SequenceSet> LoadSequences(const ModelSpec& spec,
                                    const std::string& path) {
  ASSIGN_OR_RETURN(NpyArray a, ReadNpy(path));
  return engine::SequencesFromNpy(spec, a, path);
}

// A progress bar on stderr, redrawn in place when stderr is a terminal.
void Progress(const char* label, int64_t done, int64_t total) {
  constexpr int kWidth = 30;
  const int filled = total ? static_cast<int>(kWidth * done / total) : kWidth;
  std::fprintf(stderr, "\r%s [%s%s] %lld/%lld", label,
               std::string(filled, '#').c_str(),
               std::string(kWidth - filled, '.').c_str(),
               static_cast<long long>(done), static_cast<long long>(total));
  if (done >= total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

StatusOr<engine::CalibrationOptions> CalibrationFlags(const Args& a) {
  engine::CalibrationOptions o;
  if (a.flags.count("--method")) {
    ASSIGN_OR_RETURN(o.method,
                     engine::ParseCalibrationMethod(a.flags.at("--method")));
  }
  if (a.flags.count("--percentile")) {
    const std::string& s = a.flags.at("--percentile");
    char* end = nullptr;
    o.percentile = std::strtod(s.c_str(), &end);
    if (s.empty() || *end || !(o.percentile > 50 && o.percentile <= 100)) {
      return InvalidArgument("--percentile: expected a number in (50, 100], got '" +
                             s + "'");
    }
    if (!a.flags.count("--method")) o.method = engine::CalibrationMethod::kPercentile;
  }
  o.per_channel = !a.switches.count("--per-tensor");
  return o;
}

// Runs `set` through `model` in batches; returns the concatenated output.
Status RunAll(const RnnModel& model, const SequenceSet& set, int batch,
              std::vector<int64_t>* shape, std::vector<float>* out) {
  out->clear();
  RunOutput r;
  for (int64_t first = 0; first < set.sequences; first += batch) {
    const int n = static_cast<int>(std::min<int64_t>(batch, set.sequences - first));
    RETURN_IF_ERROR(model.Run(
        engine::SliceSequences(model.spec(), set, first, n), &r));
    out->insert(out->end(), r.output.begin(), r.output.end());
  }
  *shape = r.shape;
  (*shape)[0] = set.sequences;
  return Status::Ok();
}

std::string LayerLine(const engine::RnnLayerSpec& l) {
  std::ostringstream s;
  s << engine::CellTypeName(l.cell) << " input " << l.input_size << " hidden "
    << l.hidden_size << (l.directions == 2 ? " bidirectional" : "");
  return s.str();
}

int Inspect(const Args& a) {
  if (a.positional.size() != 1) {
    std::cerr << kUsage;
    return 2;
  }
  auto loaded = LoadModel(a.positional[0]);
  if (!loaded.ok()) {
    std::cerr << "error: " << loaded.status().ToString() << "\n";
    return 1;
  }
  const ModelSpec& s = *loaded->spec;
  const bool tokens = s.input_kind == engine::InputKind::kTokenIds;
  std::cout << "model: " << a.positional[0] << " ("
            << (loaded->is_artifact ? "quantized artifact" : "ONNX") << ", "
            << loaded->file_bytes << " bytes, sha256 " << loaded->sha256
            << ")\n";
  const std::string nt = s.batch_first ? "N, T" : "T, N";
  std::cout << "input:  " << s.input_name << " "
            << engine::ElementTypeName(s.input_type) << " [" << nt
            << (tokens ? "]" : ", " + std::to_string(s.feature_size) + "]")
            << "\n";
  std::cout << "output: " << s.output_name << " float32 ["
            << (s.last_step_only ? "N" : nt) << ", " << s.output_size()
            << "]\n";
  if (!s.initial_h_name.empty() || !s.initial_c_name.empty()) {
    std::cout << "initial state inputs: " << s.initial_h_name << " "
              << s.initial_c_name << "\n";
  }
  if (!s.final_h_name.empty() || !s.final_c_name.empty()) {
    std::cout << "final state outputs: " << s.final_h_name << " "
              << s.final_c_name << "\n";
  }
  if (s.has_embedding) {
    std::cout << "embedding: vocabulary " << s.embedding.vocab_size
              << ", dim " << s.embedding.dim << " (f32)\n";
  }
  std::cout << "layers:\n";
  for (size_t i = 0; i < s.layers.size(); ++i) {
    const auto& l = s.layers[i];
    std::string int8;
    if (loaded->is_artifact) {
      int8 = loaded->quantization->layers[i].quantized ? "int8 (quantized)"
                                                       : "f32 (not quantized)";
    } else {
      int8 = l.cell == engine::CellType::kLstm
                 ? "yes (oneDNN int8 LSTM)"
                 : "yes (rnnserve int8 GRU on oneDNN int8 matmuls; oneDNN 2.6 "
                   "has no int8 linear-before-reset GRU)";
    }
    std::cout << "  " << i << ": " << LayerLine(l) << "; int8: " << int8
              << "\n";
  }
  if (s.has_head) {
    std::cout << "head: Linear " << s.head.in_features << " -> "
              << s.head.out_features
              << (s.last_step_only ? " on the last step" : " on every step")
              << " (f32)\n";
  } else if (s.last_step_only) {
    std::cout << "output: last step only\n";
  }
  std::cout << "activation: " << engine::OutputActivationName(s.activation)
            << "\n";
  std::cout << "parameters: " << s.ParameterCount() << "\n";
  if (loaded->is_artifact) {
    const auto& q = *loaded->quantization;
    std::cout << "calibration: " << engine::CalibrationMethodName(q.method);
    if (q.method == engine::CalibrationMethod::kPercentile) {
      std::cout << " " << q.percentile;
    }
    std::cout << ", " << (q.per_channel ? "per-channel" : "per-tensor")
              << " weights, " << q.calibration_sequences << " sequences\n"
              << "source model sha256: " << loaded->source_sha256 << "\n";
  }
  // What oneDNN would run, for one sequence of one step.
  RnnModelOptions o;
  o.precision = loaded->is_artifact ? Precision::kInt8 : Precision::kF32;
  o.quantization = loaded->quantization;
  auto model = RnnModel::Create(loaded->spec, o);
  if (!model.ok()) {
    std::cerr << "error: " << model.status().ToString() << "\n";
    return 1;
  }
  auto impls = (*model)->ImplementationInfo(1, 1);
  if (impls.ok()) {
    const auto precisions = (*model)->layer_precisions();
    std::cout << "oneDNN kernels (" << PrecisionName(o.precision) << "):\n";
    for (size_t i = 0; i < impls->size(); ++i) {
      std::cout << "  " << i << ": " << engine::PrecisionName(precisions[i])
                << " " << (*impls)[i] << "\n";
    }
  }
  return 0;
}

// Prepares an RnnModel from a loaded model and the precision/calibration
// flags shared by run and quantize.
StatusOr<std::unique_ptr<RnnModel>> BuildModel(const LoadedModel& m,
                                               Precision precision,
                                               const Args& a, int threads,
                                               QuantizationSpec* calibrated) {
  RnnModelOptions o;
  o.precision = precision;
  o.intra_op_threads = threads;
  if (precision == Precision::kInt8) {
    if (m.is_artifact) {
      o.quantization = m.quantization;
    } else {
      if (!a.flags.count("--calibration")) {
        return InvalidArgument(
            "int8 from an ONNX model needs --calibration CAL.npy (or run a "
            "quantized artifact)");
      }
      ASSIGN_OR_RETURN(SequenceSet cal,
                       LoadSequences(*m.spec, a.flags.at("--calibration")));
      ASSIGN_OR_RETURN(engine::CalibrationOptions co, CalibrationFlags(a));
      co.progress = [](int64_t d, int64_t t) { Progress("calibrating", d, t); };
      ASSIGN_OR_RETURN(QuantizationSpec q, engine::Calibrate(*m.spec, cal, co));
      if (calibrated) *calibrated = q;
      o.quantization = std::make_shared<const QuantizationSpec>(std::move(q));
    }
  } else if (m.is_artifact) {
    std::cerr << "warning: f32 on a quantized artifact runs its dequantized "
                 "weights; use the source ONNX for the exact f32 model\n";
  }
  return RnnModel::Create(m.spec, o);
}

int Run(const Args& a) {
  if (a.positional.size() != 1 || !a.flags.count("--input") ||
      !a.flags.count("--output")) {
    std::cerr << kUsage;
    return 2;
  }
  auto fail = [](const Status& s) {
    std::cerr << "error: " << s.ToString() << "\n";
    return 1;
  };
  auto loaded = LoadModel(a.positional[0]);
  if (!loaded.ok()) return fail(loaded.status());
  Precision precision = loaded->is_artifact ? Precision::kInt8 : Precision::kF32;
  if (a.flags.count("--precision")) {
    auto p = engine::ParsePrecision(a.flags.at("--precision"));
    if (!p.ok()) return fail(p.status());
    precision = *p;
  }
  auto batch = IntFlag(a, "--batch", 64, 1, 4096);
  if (!batch.ok()) return fail(batch.status());
  auto threads = IntFlag(a, "--threads", 1, 1, 256);
  if (!threads.ok()) return fail(threads.status());
  auto input = LoadSequences(*loaded->spec, a.flags.at("--input"));
  if (!input.ok()) return fail(input.status());
  auto model = BuildModel(*loaded, precision, a, *threads, nullptr);
  if (!model.ok()) return fail(model.status());
  const auto layer_p = (*model)->layer_precisions();
  for (size_t i = 0; i < layer_p.size(); ++i) {
    if (precision == Precision::kInt8 && layer_p[i] != Precision::kInt8) {
      std::cerr << "warning: layer " << i << " ("
                << engine::CellTypeName(loaded->spec->layers[i].cell)
                << ") runs in f32: the quantization leaves it unquantized "
                   "(an artifact from before int8 GRU?)\n";
    }
  }
  std::vector<int64_t> shape;
  std::vector<float> y;
  const auto t0 = std::chrono::steady_clock::now();
  Status st = RunAll(**model, *input, *batch, &shape, &y);
  if (!st.ok()) return fail(st);
  const double ms = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - t0)
                        .count();
  st = WriteNpy(a.flags.at("--output"),
                engine::OutputToNpy(*loaded->spec, shape, y));
  if (!st.ok()) return fail(st);
  std::cerr << "ran " << input->sequences << " sequences x " << input->steps
            << " steps in " << PrecisionName(precision) << " in " << ms
            << " ms; wrote " << a.flags.at("--output") << "\n";
  return 0;
}

// ---- quantize + report ----------------------------------------------------

int Quantize(const Args& a) {
  if (a.positional.size() != 1 || !a.flags.count("--calibration") ||
      !a.flags.count("-o")) {
    std::cerr << kUsage;
    return 2;
  }
  auto fail = [](const Status& s) {
    std::cerr << "error: " << s.ToString() << "\n";
    return 1;
  };
  const std::string src = a.positional[0];
  auto loaded = LoadModel(src);
  if (!loaded.ok()) return fail(loaded.status());
  if (loaded->is_artifact) {
    return fail(InvalidArgument(src + ": already a quantized artifact; "
                                "quantize the source ONNX model"));
  }
  auto batch = IntFlag(a, "--batch", 32, 1, 4096);
  if (!batch.ok()) return fail(batch.status());
  auto threads = IntFlag(a, "--threads", 1, 1, 256);
  if (!threads.ok()) return fail(threads.status());
  QuantizationSpec q;
  auto int8 = BuildModel(*loaded, Precision::kInt8, a, *threads, &q);
  if (!int8.ok()) return fail(int8.status());
  auto bytes = engine::SerializeArtifact(*loaded->spec, q, loaded->sha256, src);
  if (!bytes.ok()) return fail(bytes.status());
  Status st = engine::WriteArtifact(a.flags.at("-o"), *bytes);
  if (!st.ok()) return fail(st);
  const double ratio =
      static_cast<double>(loaded->file_bytes) / static_cast<double>(bytes->size());
  std::cout << "wrote " << a.flags.at("-o") << ": " << bytes->size()
            << " bytes (source " << loaded->file_bytes << " bytes, "
            << ratio << "x smaller)\n";
  for (size_t i = 0; i < q.layers.size(); ++i) {
    const auto& l = q.layers[i];
    std::cout << "  layer " << i << ": "
              << (l.quantized ? "int8" : "f32 (not quantized)") << ", grid +-"
              << l.grid << ", input clip +-" << l.input_clip << " (observed input "
              << l.observed_input_absmax << ", h " << l.observed_hidden_absmax
              << "), alpha " << l.input_alpha << "\n";
  }
  if (!a.flags.count("--report")) return 0;

  // Report: the variants against f32 on the hold-out set (quant_report.h).
  QuantizationReportOptions r;
  r.model_path = src;
  r.spec = loaded->spec;
  r.source_bytes = loaded->file_bytes;
  r.source_sha256 = loaded->sha256;
  r.artifact_path = a.flags.at("-o");
  r.chosen = std::make_shared<const QuantizationSpec>(std::move(q));
  r.artifact_bytes = static_cast<int64_t>(bytes->size());
  r.calibration_path = a.flags.at("--calibration");
  auto calibration = CalibrationFlags(a);
  if (!calibration.ok()) return fail(calibration.status());
  r.calibration = *calibration;
  if (a.flags.count("--holdout")) r.holdout_path = a.flags.at("--holdout");
  if (a.flags.count("--labels")) r.labels_path = a.flags.at("--labels");
  if (a.flags.count("--plot")) r.plot_path = a.flags.at("--plot");
  r.report_path = a.flags.at("--report");
  r.batch = *batch;
  r.threads = *threads;
  r.progress = [](const char* label, int64_t d, int64_t t) {
    Progress(label, d, t);
  };
  st = WriteQuantizationReport(r);
  if (!st.ok()) return fail(st);
  return 0;
}


// ---- bench -------------------------------------------------------------------

// Random inputs of the model's kind: N(0,1) features or uniform token ids.
SequenceSet RandomSet(const ModelSpec& spec, int n, int t, unsigned seed) {
  std::mt19937 rng(seed);
  SequenceSet set;
  set.sequences = n;
  set.steps = t;
  if (spec.input_kind == engine::InputKind::kTokenIds) {
    std::uniform_int_distribution<int64_t> d(0, spec.embedding.vocab_size - 1);
    set.tokens.resize(static_cast<size_t>(n) * t);
    for (auto& v : set.tokens) v = d(rng);
  } else {
    std::normal_distribution<float> d(0.0f, 1.0f);
    set.features.resize(static_cast<size_t>(n) * t * spec.feature_size);
    for (auto& v : set.features) v = d(rng);
  }
  return set;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * v.size()));
  return v[k];
}

int Bench(const Args& a) {
  auto fail = [](const Status& s) {
    std::cerr << "error: " << s.ToString() << "\n";
    return 1;
  };
  if (a.positional.size() != 1) {
    std::cerr << kUsage;
    return 2;
  }
  auto loaded = LoadModel(a.positional[0]);
  if (!loaded.ok()) return fail(loaded.status());
  Precision precision = loaded->is_artifact ? Precision::kInt8 : Precision::kF32;
  if (a.flags.count("--precision")) {
    auto p = engine::ParsePrecision(a.flags.at("--precision"));
    if (!p.ok()) return fail(p.status());
    precision = *p;
  }
  auto batch = IntFlag(a, "--batch", 1, 1, 4096);
  auto seq = IntFlag(a, "--seq", 50, 1, 100000);
  auto threads = IntFlag(a, "--threads", 1, 1, 256);
  auto workers = IntFlag(a, "--workers", 1, 1, 256);
  auto min_iter = IntFlag(a, "--min-iterations", 10, 1, 1000000);
  for (const auto* f : {&batch, &seq, &threads, &workers, &min_iter}) {
    if (!f->ok()) return fail(f->status());
  }
  double duration = 2.0;
  if (a.flags.count("--duration")) {
    char* end = nullptr;
    duration = std::strtod(a.flags.at("--duration").c_str(), &end);
    if (*end || !(duration > 0 && duration <= 3600)) {
      return fail(InvalidArgument("--duration: expected seconds in (0, 3600]"));
    }
  }
  // int8 from ONNX without calibration data: calibrate on random inputs of
  // the benchmark's shape (speed does not depend on the ranges chosen).
  Args build_args = a;
  std::string random_cal;
  if (precision == Precision::kInt8 && !loaded->is_artifact &&
      !a.flags.count("--calibration")) {
    const SequenceSet cal = RandomSet(*loaded->spec, 16, *seq, 1);
    const bool tokens = loaded->spec->input_kind == engine::InputKind::kTokenIds;
    std::vector<int64_t> shape = {16, *seq};
    if (!tokens) shape.push_back(loaded->spec->feature_size);
    if (!loaded->spec->batch_first) std::swap(shape[0], shape[1]);
    // SequenceSet is batch-major; for a sequence-major model write it as such.
    SequenceSet laid = cal;
    if (!loaded->spec->batch_first) {
      const int64_t F = tokens ? 1 : loaded->spec->feature_size;
      for (int64_t n = 0; n < 16; ++n) {
        for (int64_t t = 0; t < *seq; ++t) {
          for (int64_t f = 0; f < F; ++f) {
            const int64_t src = (n * *seq + t) * F + f, dst = (t * 16 + n) * F + f;
            if (tokens) laid.tokens[dst] = cal.tokens[src];
            else laid.features[dst] = cal.features[src];
          }
        }
      }
    }
    random_cal = "/tmp/rnnserve-bench-cal-" + std::to_string(getpid()) + ".npy";
    Status st = WriteNpy(random_cal, tokens ? NpyArray::FromInt64(shape, laid.tokens)
                                            : NpyArray::FromFloat(shape, laid.features));
    if (!st.ok()) return fail(st);
    build_args.flags["--calibration"] = random_cal;
  }
  auto model = BuildModel(*loaded, precision, build_args, *threads, nullptr);
  if (!random_cal.empty()) std::remove(random_cal.c_str());
  if (!model.ok()) return fail(model.status());

  const int W = *workers;
  std::vector<SequenceSet> inputs;
  for (int w = 0; w < W; ++w) inputs.push_back(RandomSet(*loaded->spec, *batch, *seq, 100 + w));
  // Warm-up: creates the primitives for this shape in every worker.
  RunOutput warm;
  for (int w = 0; w < W; ++w) {
    Status st = (*model)->Run(engine::SliceSequences(*loaded->spec, inputs[w], 0, *batch), &warm);
    if (!st.ok()) return fail(st);
  }
  std::vector<std::vector<double>> lat(W);
  std::vector<Status> errors(W);
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration<double>(duration);
  std::vector<std::thread> pool;
  for (int w = 0; w < W; ++w) {
    pool.emplace_back([&, w] {
      const engine::RunInput in =
          engine::SliceSequences(*loaded->spec, inputs[w], 0, *batch);
      RunOutput out;
      while (static_cast<int>(lat[w].size()) < *min_iter ||
             std::chrono::steady_clock::now() < deadline) {
        const auto t0 = std::chrono::steady_clock::now();
        Status st = (*model)->Run(in, &out);
        if (!st.ok()) {
          errors[w] = st;
          return;
        }
        lat[w].push_back(std::chrono::duration<double, std::milli>(
                             std::chrono::steady_clock::now() - t0).count());
      }
    });
  }
  for (auto& t : pool) t.join();
  const double wall = std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - start).count();
  for (const Status& st : errors) {
    if (!st.ok()) return fail(st);
  }
  std::vector<double> all;
  for (const auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  const double seqs_per_s = static_cast<double>(all.size()) * *batch / wall;
  const double p50 = Percentile(all, 50), p90 = Percentile(all, 90),
               p99 = Percentile(all, 99);
  std::vector<std::string> layers;
  for (Precision p : (*model)->layer_precisions()) layers.push_back(PrecisionName(p));
  if (a.switches.count("--json")) {
    std::ostringstream j;
    j.precision(6);
    j << "{\"model\": " << JsonString(a.positional[0]) << ", \"precision\": \""
      << PrecisionName(precision) << "\", \"layer_precisions\": [";
    for (size_t i = 0; i < layers.size(); ++i) j << (i ? ", " : "") << "\"" << layers[i] << "\"";
    j << "], \"batch\": " << *batch << ", \"seq\": " << *seq
      << ", \"threads\": " << *threads << ", \"workers\": " << W
      << ", \"iterations\": " << all.size() << ", \"seconds\": " << wall
      << ", \"sequences_per_s\": " << seqs_per_s << ", \"p50_ms\": " << p50
      << ", \"p90_ms\": " << p90 << ", \"p99_ms\": " << p99
      << ", \"isa\": \"" << engine::CpuIsaName() << "\"}";
    std::cout << j.str() << "\n";
  } else {
    std::cout << a.positional[0] << " " << PrecisionName(precision) << " batch "
              << *batch << " seq " << *seq << " threads " << *threads
              << " workers " << W << " (" << engine::CpuIsaName() << ")\n"
              << "  " << all.size() << " runs in " << wall << " s: "
              << seqs_per_s << " sequences/s\n"
              << "  latency ms: p50 " << p50 << ", p90 " << p90 << ", p99 " << p99
              << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace rnnserve::tool

int main(int argc, char** argv) {
  using rnnserve::tool::ParseArgs;
  if (argc < 2 || std::string(argv[1]) == "--help" ||
      std::string(argv[1]) == "-h") {
    std::cout << rnnserve::tool::kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  const std::set<std::string> calib = {"--calibration", "--method",
                                       "--percentile", "--batch", "--threads"};
  std::set<std::string> with_value, bare;
  if (cmd == "inspect") {
  } else if (cmd == "run") {
    with_value = calib;
    with_value.insert({"--input", "--output", "--precision"});
    bare = {"--per-tensor"};
  } else if (cmd == "bench") {
    with_value = calib;
    with_value.insert({"--precision", "--seq", "--workers", "--duration",
                       "--min-iterations"});
    bare = {"--per-tensor", "--json"};
  } else if (cmd == "quantize") {
    with_value = calib;
    with_value.insert(
        {"-o", "--output", "--report", "--holdout", "--labels", "--plot"});
    bare = {"--per-tensor"};
  } else {
    std::cerr << "unknown command '" << cmd << "'\n" << rnnserve::tool::kUsage;
    return 2;
  }
  auto args = ParseArgs(argc, argv, 2, with_value, bare);
  if (!args.ok()) {
    std::cerr << "error: " << args.status().message() << "\n"
              << rnnserve::tool::kUsage;
    return 2;
  }
  if (cmd == "quantize" && args->flags.count("--output") && !args->flags.count("-o")) {
    args->flags["-o"] = args->flags["--output"];
  }
  if (cmd == "inspect") return rnnserve::tool::Inspect(*args);
  if (cmd == "run") return rnnserve::tool::Run(*args);
  if (cmd == "bench") return rnnserve::tool::Bench(*args);
  return rnnserve::tool::Quantize(*args);
}
