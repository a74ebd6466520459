#include "tools/quant_report.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <utility>

#include "server/common/npy.h"
#include "server/engine/artifact.h"
#include "server/engine/sequence_io.h"

extern char** environ;

namespace rnnserve::tool {

using engine::CalibrationMethod;
using engine::ModelSpec;
using engine::Precision;
using engine::QuantizationSpec;
using engine::RnnModel;
using engine::RnnModelOptions;
using engine::RunOutput;
using engine::SequenceSet;

// ---- output comparison ------------------------------------------------------

std::vector<double> Probabilities(const ModelSpec& s, const float* y, int O) {
  std::vector<double> p(O);
  if (s.activation == engine::OutputActivation::kSoftmax) {
    for (int o = 0; o < O; ++o) p[o] = y[o];
  } else if (s.activation == engine::OutputActivation::kLogSoftmax) {
    for (int o = 0; o < O; ++o) p[o] = std::exp(static_cast<double>(y[o]));
  } else {
    const double m = *std::max_element(y, y + O);
    double sum = 0;
    for (int o = 0; o < O; ++o) sum += p[o] = std::exp(y[o] - m);
    for (auto& v : p) v /= sum;
  }
  return p;
}

Comparison Compare(const ModelSpec& s, const std::vector<int64_t>& shape,
                   const std::vector<float>& ref,
                   const std::vector<float>& got) {
  Comparison c;
  const int64_t N = shape[0];
  const int64_t T = shape.size() == 3 ? shape[1] : 1;
  const int O = static_cast<int>(shape.back());
  c.step_mean_abs.assign(T, 0.0);
  c.step_max_abs.assign(T, 0.0);
  double se = 0, ref2 = 0, sum_abs = 0;
  c.classifier =
      s.activation != engine::OutputActivation::kNone || (s.has_head && O >= 2);
  int64_t agree = 0;
  double kl = 0;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t t = 0; t < T; ++t) {
      const size_t base = static_cast<size_t>((n * T + t) * O);
      for (int o = 0; o < O; ++o) {
        const double d =
            std::fabs(static_cast<double>(got[base + o]) - ref[base + o]);
        c.step_mean_abs[t] += d;
        c.step_max_abs[t] = std::max(c.step_max_abs[t], d);
        sum_abs += d;
        se += d * d;
        ref2 += static_cast<double>(ref[base + o]) * ref[base + o];
      }
      if (c.classifier) {
        const float* r = &ref[base];
        const float* g = &got[base];
        agree += (std::max_element(r, r + O) - r) ==
                 (std::max_element(g, g + O) - g);
        const auto p = Probabilities(s, r, O), q = Probabilities(s, g, O);
        for (int o = 0; o < O; ++o) {
          if (p[o] > 0)
            kl += p[o] * (std::log(p[o]) - std::log(std::max(q[o], 1e-30)));
        }
      }
    }
  }
  for (int64_t t = 0; t < T; ++t)
    c.step_mean_abs[t] /= static_cast<double>(N) * O;
  c.mean_abs = sum_abs / (static_cast<double>(N) * T * O);
  for (double m : c.step_max_abs) c.max_abs = std::max(c.max_abs, m);
  c.rel_l2 = ref2 > 0 ? std::sqrt(se / ref2) : 0;
  if (c.classifier) {
    c.top1_agreement = static_cast<double>(agree) / (N * T);
    c.mean_kl = kl / (N * T);
  }
  return c;
}

void TimeModels(const RnnModel& a, const RnnModel& b, const SequenceSet& set,
                int batch, double* ms_a, double* ms_b) {
  const int n = static_cast<int>(std::min<int64_t>(batch, set.sequences));
  std::vector<engine::LayerState> states;
  const engine::RunInput in =
      engine::SliceSequences(a.spec(), set, 0, n, &states);
  RunOutput out;
  std::vector<double> ta, tb;
  (void)a.Run(in, &out);  // warm-up: creates the primitives for this shape
  (void)b.Run(in, &out);
  for (int rep = 0; rep < 15; ++rep) {
    for (int which = 0; which < 2; ++which) {
      const RnnModel& m = which ? b : a;
      const auto t0 = std::chrono::steady_clock::now();
      (void)m.Run(in, &out);
      (which ? tb : ta)
          .push_back(std::chrono::duration<double, std::milli>(
                         std::chrono::steady_clock::now() - t0)
                         .count());
    }
  }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  *ms_a = ta[ta.size() / 2];
  *ms_b = tb[tb.size() / 2];
}

std::string JsonArray(const std::vector<double>& v) {
  std::ostringstream s;
  s.precision(6);
  s << "[";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  s << "]";
  return s.str();
}

std::string JsonString(const std::string& v) {
  std::string out = "\"";
  for (char ch : v) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) continue;
    out += ch;
  }
  return out + "\"";
}

// ---- log2 weights -----------------------------------------------------------

float Log2Round(float w, float scale) {
  if (!(scale > 0.0f) || w == 0.0f) return 0.0f;
  const float a = std::fabs(w) / scale;
  // Below half the smallest level 2^-(K-1), zero is the nearer value.
  if (a < std::ldexp(1.0f, -kLog2Levels)) return 0.0f;
  const long k =
      std::clamp<long>(std::lround(-std::log2(a)), 0, kLog2Levels - 1);
  return std::copysign(std::ldexp(scale, static_cast<int>(-k)), w);
}

namespace {

// Rounds w [dirs][rows][channels] per (direction, channel) column.
void Log2Matrix(std::vector<float>* w, int dirs, int rows, int channels,
                Log2Summary* summary) {
  for (int d = 0; d < dirs; ++d) {
    float* m = w->data() + static_cast<size_t>(d) * rows * channels;
    std::vector<float> scale(channels, 0.0f);
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < channels; ++c) {
        scale[c] = std::max(
            scale[c], std::fabs(m[static_cast<size_t>(r) * channels + c]));
      }
    }
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < channels; ++c) {
        float& v = m[static_cast<size_t>(r) * channels + c];
        v = Log2Round(v, scale[c]);
        summary->zeros += v == 0.0f;
      }
    }
    summary->weights += static_cast<int64_t>(rows) * channels;
    summary->channels += channels;
  }
}

}  // namespace

ModelSpec Log2ApproximateWeights(const ModelSpec& spec, Log2Summary* summary) {
  ModelSpec out = spec;
  *summary = Log2Summary();
  for (auto& l : out.layers) {
    const int channels = l.gates() * l.hidden_size;
    Log2Matrix(&l.w_layer, l.directions, l.input_size, channels, summary);
    Log2Matrix(&l.w_iter, l.directions, l.hidden_size, channels, summary);
  }
  return out;
}

int64_t Log2SizeEstimateBytes(const ModelSpec& spec) {
  int64_t rnn_weights = 0, channels = 0;
  for (const auto& l : spec.layers) {
    rnn_weights += static_cast<int64_t>(l.w_layer.size() + l.w_iter.size());
    channels += 2LL * l.directions * l.gates() * l.hidden_size;
  }
  const int64_t others = spec.ParameterCount() - rnn_weights;
  return (rnn_weights * kLog2BitsPerWeight + 7) / 8 + 4 * channels + 4 * others;
}

// ---- the report -------------------------------------------------------------

namespace {

// One compared model.
struct Variant {
  std::string name;
  std::string weights;                                    // "int8" or "log2"
  CalibrationMethod method = CalibrationMethod::kMinMax;  // int8 only
  double percentile = 0;
  bool per_channel = true;
  bool chosen = false;  // the configuration of the written artifact
  std::shared_ptr<const QuantizationSpec> quantization;  // int8 only
  std::vector<Precision> layer_precisions;
  Comparison comparison;
  double accuracy = -1;  // < 0: no labels
  int64_t size_bytes = 0;
  bool timed = false;
  double f32_ms = 0, int8_ms = 0;
  Log2Summary log2;
};

StatusOr<SequenceSet> LoadSet(const ModelSpec& spec, const std::string& path) {
  ASSIGN_OR_RETURN(NpyArray a, ReadNpy(path));
  return engine::SequencesFromNpy(spec, a, path);
}

// Runs every sequence of `set` (with its initial states) in batches; returns
// the batch-major concatenated output and its shape.
Status RunSet(const RnnModel& model, const SequenceSet& set, int batch,
              std::vector<int64_t>* shape, std::vector<float>* out) {
  out->clear();
  RunOutput r;
  for (int64_t first = 0; first < set.sequences; first += batch) {
    const int n =
        static_cast<int>(std::min<int64_t>(batch, set.sequences - first));
    std::vector<engine::LayerState> states;
    RETURN_IF_ERROR(model.Run(
        engine::SliceSequences(model.spec(), set, first, n, &states), &r));
    out->insert(out->end(), r.output.begin(), r.output.end());
  }
  *shape = r.shape;
  (*shape)[0] = set.sequences;
  return Status::Ok();
}

// Class ids for every output row, batch-major ([N*T] or [N]); -1 = ignored.
StatusOr<std::vector<int64_t>> LoadLabels(
    const ModelSpec& spec, const std::string& path,
    const std::vector<int64_t>& out_shape) {
  ASSIGN_OR_RETURN(NpyArray a, ReadNpy(path));
  if (a.dtype == NpyDtype::kFloat32) {
    return InvalidArgument(path +
                           ": labels must be int64 class ids, got float32");
  }
  const int64_t N = out_shape[0];
  const bool per_step = out_shape.size() == 3;
  const int64_t T = per_step ? out_shape[1] : 1;
  const int64_t O = out_shape.back();
  std::vector<int64_t> want = {N};
  if (per_step)
    want = spec.batch_first ? std::vector<int64_t>{N, T}
                            : std::vector<int64_t>{T, N};
  if (a.shape != want) {
    NpyArray w;
    w.shape = want;
    return InvalidArgument(path + ": labels shaped " + a.ShapeString() +
                           ", expected " + w.ShapeString() +
                           " (the output's shape without its last axis)");
  }
  const std::vector<int64_t> raw = a.ToInt64();
  std::vector<int64_t> labels(static_cast<size_t>(N * T));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t v =
          raw[spec.batch_first || !per_step ? n * T + t : t * N + n];
      if (v >= O) {
        return InvalidArgument(path + ": class id " + std::to_string(v) +
                               " at sequence " + std::to_string(n) +
                               " is outside the output's " + std::to_string(O) +
                               " classes");
      }
      labels[n * T + t] = v < 0 ? -1 : v;
    }
  }
  return labels;
}

// Fraction of labelled rows whose argmax equals the label.
double Accuracy(const std::vector<float>& y, int O,
                const std::vector<int64_t>& labels) {
  int64_t correct = 0, counted = 0;
  for (size_t r = 0; r < labels.size(); ++r) {
    if (labels[r] < 0) continue;
    const float* row = &y[r * O];
    correct += (std::max_element(row, row + O) - row) == labels[r];
    ++counted;
  }
  return counted ? static_cast<double>(correct) / counted : 0.0;
}

std::string Num(double v) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream s;
  s.precision(8);
  s << v;
  return s.str();
}

std::string Basename(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The last three components of a path (enough to name a repository model).
std::string ShortPath(const std::string& path) {
  size_t pos = path.size();
  for (int i = 0; i < 3 && pos != std::string::npos && pos > 0; ++i) {
    pos = path.find_last_of('/', pos - 1);
  }
  return pos == std::string::npos || pos == 0 ? path : path.substr(pos + 1);
}

// A gnuplot single-quoted string ('' is a quote inside).
std::string GnuplotString(const std::string& s) {
  std::string out = "'";
  for (char ch : s) {
    if (ch == '\'') out += '\'';
    if (static_cast<unsigned char>(ch) >= 0x20) out += ch;
  }
  return out + "'";
}

struct PlotResult {
  bool written = false;
  std::string note;  // why not, when not written
};

// Line colours that stay apart on white (gnuplot's default 4th is a pale
// yellow).
constexpr std::array<const char*, 7> kColors = {"#1f77b4", "#2ca02c", "#9467bd",
                                                "#ff7f0e", "#d62728", "#000000",
                                                "#8c564b"};

// Draws mean |d| per time step of every variant with gnuplot: a data file and
// a script in a fresh temporary directory, then `gnuplot script`.
PlotResult Plot(const std::vector<Variant>& variants, const std::string& title,
                const std::string& png) {
  PlotResult result;
  const char* tmp = std::getenv("TMPDIR");
  std::string dir_template =
      std::string(tmp && *tmp ? tmp : "/tmp") + "/rnnserve-plot-XXXXXX";
  if (!mkdtemp(dir_template.data())) {
    result.note = "cannot create a temporary directory in " + dir_template;
    return result;
  }
  const std::string dir = dir_template;
  const std::string data = dir + "/error_per_step.dat";
  const std::string script = dir + "/error_per_step.gp";
  const std::string log = dir + "/gnuplot.log";
  auto cleanup = [&] {
    for (const auto& f : {data, script, log}) std::remove(f.c_str());
    rmdir(dir.c_str());
  };

  const size_t T =
      variants.empty() ? 0 : variants[0].comparison.step_mean_abs.size();
  bool all_positive = true;
  {
    std::ofstream d(data);
    d.precision(8);
    d << "# t";
    for (const auto& v : variants) d << " " << v.name;
    d << "\n";
    for (size_t t = 0; t < T; ++t) {
      d << t;
      for (const auto& v : variants) {
        const double e = v.comparison.step_mean_abs[t];
        all_positive = all_positive && e > 0;
        d << " " << e;
      }
      d << "\n";
    }
    if (!d) {
      result.note = "cannot write " + data;
      cleanup();
      return result;
    }
  }
  {
    std::ofstream s(script);
    s << "set encoding utf8\n"
         "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
         "  set terminal pngcairo size 1100,700 noenhanced font 'sans,11'\n"
         "} else {\n"
         "  set terminal png size 1100,700 noenhanced\n"
         "}\n"
      << "set output " << GnuplotString(png) << "\n"
      << "set title " << GnuplotString(title) << "\n"
      << "set xlabel 'time step t'\n"
      << "set ylabel "
      << GnuplotString(std::string("mean |output - f32 output|") +
                       (all_positive ? " (log scale)" : ""))
      << "\n"
      << (all_positive ? "set logscale y\nset format y '%g'\n" : "")
      << "set grid\nset key outside right top vertical box spacing 1.3\n"
      << "set xrange [0:" << (T > 1 ? T - 1 : 1) << "]\n"
      << "plot ";
    for (size_t i = 0; i < variants.size(); ++i) {
      s << (i ? ", \\\n     " : "") << GnuplotString(data)
        << " using 1:" << i + 2 << " with linespoints lw 2 lc rgb '"
        << kColors[i % kColors.size()] << "' pt " << 5 + 2 * (i % 4)
        << " ps 0.7 title " << GnuplotString(variants[i].name);
    }
    s << "\nset output\n";
    if (!s) {
      result.note = "cannot write " + script;
      cleanup();
      return result;
    }
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::string argv0 = "gnuplot", argv1 = script;
  char* argv[] = {argv0.data(), argv1.data(), nullptr};
  pid_t pid = 0;
  const int err =
      posix_spawnp(&pid, "gnuplot", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) {
    result.note =
        err == ENOENT
            ? "gnuplot not found (apt-get install gnuplot-nox)"
            : std::string("cannot run gnuplot: ") + std::strerror(err);
    cleanup();
    return result;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::ifstream l(log);
    std::stringstream ss;
    ss << l.rdbuf();
    // gnuplot's message on one line, without its caret-pointer padding.
    result.note = "gnuplot failed:";
    std::string word;
    while (ss >> word && result.note.size() < 500) result.note += " " + word;
    cleanup();
    return result;
  }
  std::ifstream check(png, std::ios::binary);
  result.written = check.good() && check.peek() != EOF;
  if (!result.written) result.note = "gnuplot wrote no " + png;
  cleanup();
  return result;
}

std::string LayerList(const std::vector<Precision>& p, Precision which) {
  std::string s;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] != which) continue;
    s += (s.empty() ? "" : ",") + std::to_string(i);
  }
  return s.empty() ? "none" : s;
}

std::string VariantName(CalibrationMethod m, bool per_channel) {
  return std::string("int8-") + engine::CalibrationMethodName(m) +
         (per_channel ? "-per-channel" : "-per-tensor");
}

// A table row without the padding after its last column.
void PrintTrimmed(std::string line) {
  while (!line.empty() && (line.back() == ' ' || line.back() == '\n')) {
    line.pop_back();
  }
  std::cout << line << "\n";
}

void PrintTable(const std::vector<Variant>& variants, const Comparison& any,
                double f32_accuracy, int64_t source_bytes) {
  const bool cls = any.classifier;
  const bool acc = f32_accuracy >= 0;
  char line[512];
  std::snprintf(
      line, sizeof line,
      "%-29s %-7s %-10s %-10s %-10s %-9s %-10s %-9s %-18s %-8s %-8s\n",
      "variant", "int8", "mean|d|", "max|d|", "rel L2", cls ? "top-1 agr" : "",
      cls ? "mean KL" : "", acc ? "accuracy" : "", "size bytes", "f32 ms",
      "int8 ms");
  PrintTrimmed(line);
  auto acc_text = [&](double a) {
    char b[32];
    std::snprintf(b, sizeof b, "%.4f", a);
    return acc && a >= 0 ? std::string(b) : std::string("");
  };
  std::snprintf(
      line, sizeof line,
      "%-29s %-7s %-10s %-10s %-10s %-9s %-10s %-9s %-18lld %-8s %-8s\n",
      "f32 (reference)", "-", "0", "0", "0", cls ? "1" : "", cls ? "0" : "",
      acc_text(f32_accuracy).c_str(), static_cast<long long>(source_bytes), "",
      "");
  PrintTrimmed(line);
  for (const auto& v : variants) {
    const Comparison& c = v.comparison;
    char agr[32] = "", kl[32] = "", size[48], f32ms[32] = "n/a",
         i8ms[32] = "n/a";
    if (cls) {
      std::snprintf(agr, sizeof agr, "%.4f", c.top1_agreement);
      std::snprintf(kl, sizeof kl, "%.3e", c.mean_kl);
    }
    std::snprintf(size, sizeof size, "%lld%s (%.2fx)",
                  static_cast<long long>(v.size_bytes),
                  v.weights == "log2" ? "~" : "",
                  static_cast<double>(source_bytes) / v.size_bytes);
    if (v.timed) {
      std::snprintf(f32ms, sizeof f32ms, "%.3f", v.f32_ms);
      std::snprintf(i8ms, sizeof i8ms, "%.3f", v.int8_ms);
    }
    const std::string name = v.name + (v.chosen ? " *" : "");
    std::snprintf(
        line, sizeof line,
        "%-29s %-7s %-10.3e %-10.3e %-10.3e %-9s %-10s %-9s %-18s %-8s %-8s\n",
        name.c_str(), LayerList(v.layer_precisions, Precision::kInt8).c_str(),
        c.mean_abs, c.max_abs, c.rel_l2, agr, kl, acc_text(v.accuracy).c_str(),
        size, f32ms, i8ms);
    PrintTrimmed(line);
  }
}

}  // namespace

Status WriteQuantizationReport(const QuantizationReportOptions& o) {
  const ModelSpec& spec = *o.spec;
  const std::string eval_path =
      o.holdout_path.empty() ? o.calibration_path : o.holdout_path;
  ASSIGN_OR_RETURN(SequenceSet eval, LoadSet(spec, eval_path));
  const int batch = std::max(1, o.batch);

  RnnModelOptions f32_options;
  f32_options.intra_op_threads = o.threads;
  ASSIGN_OR_RETURN(std::unique_ptr<RnnModel> f32,
                   RnnModel::Create(o.spec, f32_options));
  std::vector<int64_t> shape;
  std::vector<float> y32;
  RETURN_IF_ERROR(
      RunSet(*f32, eval, batch, &shape, &y32).Annotate("f32 model"));
  const int O = static_cast<int>(shape.back());

  std::vector<int64_t> labels;
  double f32_accuracy = -1;
  int64_t labelled = 0;
  if (!o.labels_path.empty()) {
    ASSIGN_OR_RETURN(labels, LoadLabels(spec, o.labels_path, shape));
    f32_accuracy = Accuracy(y32, O, labels);
    labelled = std::count_if(labels.begin(), labels.end(),
                             [](int64_t v) { return v >= 0; });
  }

  // The variants: the standard int8 set, the artifact's own configuration
  // when it is not one of them, then log2.
  std::vector<Variant> variants;
  const double pct = o.calibration.percentile;
  for (auto [m, pc] : {std::pair{CalibrationMethod::kMinMax, true},
                       std::pair{CalibrationMethod::kPercentile, true},
                       std::pair{CalibrationMethod::kMse, true},
                       std::pair{CalibrationMethod::kMinMax, false}}) {
    Variant v;
    v.name = VariantName(m, pc);
    v.weights = "int8";
    v.method = m;
    v.percentile = pct;
    v.per_channel = pc;
    variants.push_back(v);
  }
  const QuantizationSpec& chosen = *o.chosen;
  bool chosen_listed = false;
  for (auto& v : variants) {
    if (v.method == chosen.method && v.per_channel == chosen.per_channel &&
        (v.method != CalibrationMethod::kPercentile ||
         v.percentile == chosen.percentile)) {
      v.chosen = chosen_listed = true;
      v.quantization = o.chosen;
    }
  }
  if (!chosen_listed) {
    Variant v;
    v.name = VariantName(chosen.method, chosen.per_channel);
    v.weights = "int8";
    v.method = chosen.method;
    v.percentile = chosen.percentile;
    v.per_channel = chosen.per_channel;
    v.chosen = true;
    v.quantization = o.chosen;
    variants.push_back(v);
  }

  // int8 variants: calibrate (unless it is the artifact's), run, time.
  std::unique_ptr<SequenceSet> cal;
  for (auto& v : variants) {
    if (!v.quantization) {
      if (!cal) {
        ASSIGN_OR_RETURN(SequenceSet c, LoadSet(spec, o.calibration_path));
        cal = std::make_unique<SequenceSet>(std::move(c));
      }
      engine::CalibrationOptions co = o.calibration;
      co.method = v.method;
      co.percentile = v.percentile;
      co.per_channel = v.per_channel;
      const std::string label = "calibrating " + v.name;
      if (o.progress) {
        co.progress = [&](int64_t d, int64_t t) {
          o.progress(label.c_str(), d, t);
        };
      }
      ASSIGN_OR_RETURN(QuantizationSpec q, engine::Calibrate(spec, *cal, co));
      v.quantization = std::make_shared<const QuantizationSpec>(std::move(q));
    }
    RnnModelOptions mo;
    mo.precision = Precision::kInt8;
    mo.quantization = v.quantization;
    mo.intra_op_threads = o.threads;
    ASSIGN_OR_RETURN(std::unique_ptr<RnnModel> m, RnnModel::Create(o.spec, mo));
    std::vector<int64_t> s;
    std::vector<float> y;
    RETURN_IF_ERROR(RunSet(*m, eval, batch, &s, &y).Annotate(v.name));
    v.comparison = Compare(spec, shape, y32, y);
    if (!labels.empty()) v.accuracy = Accuracy(y, O, labels);
    v.layer_precisions = m->layer_precisions();
    if (v.chosen) {
      v.size_bytes = o.artifact_bytes;
    } else {
      ASSIGN_OR_RETURN(std::string bytes, engine::SerializeArtifact(
                                              spec, *v.quantization,
                                              o.source_sha256, o.model_path));
      v.size_bytes = static_cast<int64_t>(bytes.size());
    }
    TimeModels(*f32, *m, eval, batch, &v.f32_ms, &v.int8_ms);
    v.timed = true;
  }

  {
    Variant v;
    v.name = "log2-4bit-per-channel";
    v.weights = "log2";
    v.per_channel = true;
    auto log2_spec = std::make_shared<const ModelSpec>(
        Log2ApproximateWeights(spec, &v.log2));
    ASSIGN_OR_RETURN(std::unique_ptr<RnnModel> m,
                     RnnModel::Create(log2_spec, f32_options));
    std::vector<int64_t> s;
    std::vector<float> y;
    RETURN_IF_ERROR(RunSet(*m, eval, batch, &s, &y).Annotate(v.name));
    v.comparison = Compare(spec, shape, y32, y);
    if (!labels.empty()) v.accuracy = Accuracy(y, O, labels);
    v.layer_precisions = m->layer_precisions();
    v.size_bytes = Log2SizeEstimateBytes(spec);
    variants.push_back(std::move(v));
  }
  const Variant* chosen_variant = nullptr;
  for (const auto& v : variants) {
    if (v.chosen) chosen_variant = &v;
  }

  // stdout: the table and notes.
  std::cout << "report on " << eval_path << " (" << eval.sequences
            << " sequences x " << eval.steps << " steps), vs the f32 model";
  if (!labels.empty()) {
    std::cout << "; accuracy vs " << o.labels_path << " (" << labelled
              << " labels)";
  }
  std::cout << ":\n";
  PrintTable(variants, chosen_variant->comparison, f32_accuracy,
             o.source_bytes);
  std::cout << "  * = the artifact written (" << o.artifact_path
            << "); int8 = layers run in int8; times: median ms per batch of "
            << std::min<int64_t>(batch, eval.sequences) << ", f32 and int8 "
            << "alternating; ~ = estimated size; percentile = " << pct << "\n";
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    if (chosen_variant->layer_precisions[i] != Precision::kInt8) {
      std::cout << "  note: layer " << i << " ("
                << engine::CellTypeName(spec.layers[i].cell)
                << ") runs f32 in the int8 variants (not quantized)\n";
    }
  }
  const Variant& lg = variants.back();
  std::cout << "  log2: simulated with the f32 engine (no speed); 4-bit codes "
               "sign + 3-bit exponent, s_c * 2^-k for k = 0.."
            << kLog2Levels - 1 << " and a zero code, s_c = max|w| per channel; "
            << lg.log2.zeros << " of " << lg.log2.weights
            << " RNN weights are zero\n";

  // The plot.
  std::string png = o.plot_path;
  if (png.empty()) {
    png = o.report_path;
    const std::string ext = ".json";
    if (png.size() >= ext.size() &&
        png.compare(png.size() - ext.size(), ext.size(), ext) == 0) {
      png.resize(png.size() - ext.size());
    }
    png += ".png";
  }
  const PlotResult plot =
      Plot(variants,
           "Quantization error per time step: " + ShortPath(o.model_path) +
               " on " + Basename(eval_path) + " (" +
               std::to_string(eval.sequences) + " sequences)",
           png);

  // The JSON report. The keys before "variants" keep their earlier meaning:
  // they describe the artifact written (the chosen variant).
  const Comparison& c = chosen_variant->comparison;
  std::ostringstream j;
  j.precision(8);
  j << "{\n  \"model\": " << JsonString(o.model_path)
    << ",\n  \"artifact\": " << JsonString(o.artifact_path)
    << ",\n  \"calibration\": {\"method\": \""
    << engine::CalibrationMethodName(chosen.method)
    << "\", \"percentile\": " << Num(chosen.percentile)
    << ", \"per_channel\": " << (chosen.per_channel ? "true" : "false")
    << ", \"sequences\": " << chosen.calibration_sequences
    << ", \"data\": " << JsonString(o.calibration_path)
    << "},\n  \"layers\": [";
  for (size_t i = 0; i < chosen.layers.size(); ++i) {
    const auto& l = chosen.layers[i];
    j << (i ? ", " : "") << "{\"cell\": \""
      << engine::CellTypeName(spec.layers[i].cell) << "\", \"precision\": \""
      << (l.quantized ? "int8" : "f32") << "\", \"grid\": " << Num(l.grid)
      << ", \"input_clip\": " << Num(l.input_clip)
      << ", \"input_alpha\": " << Num(l.input_alpha)
      << ", \"observed_input_absmax\": " << Num(l.observed_input_absmax)
      << ", \"observed_hidden_absmax\": " << Num(l.observed_hidden_absmax)
      << "}";
  }
  j << "],\n  \"evaluation\": {\"data\": " << JsonString(eval_path)
    << ", \"sequences\": " << eval.sequences << ", \"steps\": " << eval.steps
    << ", \"mean_abs_error\": " << Num(c.mean_abs)
    << ", \"max_abs_error\": " << Num(c.max_abs)
    << ", \"relative_l2_error\": " << Num(c.rel_l2);
  if (c.classifier) {
    j << ", \"top1_agreement\": " << Num(c.top1_agreement)
      << ", \"mean_kl\": " << Num(c.mean_kl);
  }
  if (!labels.empty()) {
    j << ", \"labels\": " << JsonString(o.labels_path)
      << ", \"labelled_positions\": " << labelled
      << ", \"f32_task_accuracy\": " << Num(f32_accuracy)
      << ", \"task_accuracy\": " << Num(chosen_variant->accuracy);
  }
  j << ",\n    \"per_step_mean_abs_error\": " << JsonArray(c.step_mean_abs)
    << ",\n    \"per_step_max_abs_error\": " << JsonArray(c.step_max_abs)
    << "},\n  \"size\": {\"source_bytes\": " << o.source_bytes
    << ", \"artifact_bytes\": " << o.artifact_bytes << ", \"ratio\": "
    << Num(static_cast<double>(o.source_bytes) / o.artifact_bytes)
    << "},\n  \"speed\": {\"batch\": "
    << std::min<int64_t>(batch, eval.sequences) << ", \"steps\": " << eval.steps
    << ", \"threads\": " << o.threads
    << ", \"f32_ms\": " << Num(chosen_variant->f32_ms)
    << ", \"int8_ms\": " << Num(chosen_variant->int8_ms) << ", \"speedup\": "
    << Num(chosen_variant->f32_ms / chosen_variant->int8_ms)
    << "},\n  \"reference\": {\"precision\": \"f32\", \"size_bytes\": "
    << o.source_bytes;
  if (!labels.empty()) j << ", \"task_accuracy\": " << Num(f32_accuracy);
  j << "},\n  \"variants\": [";
  for (size_t i = 0; i < variants.size(); ++i) {
    const Variant& v = variants[i];
    const Comparison& vc = v.comparison;
    const bool int8 = v.weights == "int8";
    j << (i ? "," : "") << "\n    {\"name\": " << JsonString(v.name)
      << ", \"weights\": \"" << v.weights << "\", \"method\": ";
    if (int8) {
      j << "\"" << engine::CalibrationMethodName(v.method) << "\"";
      if (v.method == CalibrationMethod::kPercentile) {
        j << ", \"percentile\": " << Num(v.percentile);
      }
    } else {
      j << "null, \"scheme\": "
        << JsonString(
               "w ~ sign(w) * s_c * 2^-k, s_c = max|w| of the (gate, "
               "unit) channel of each RNN weight matrix, k = "
               "round(log2(s_c/|w|)) clamped to [0, " +
               std::to_string(kLog2Levels - 1) +
               "], zero when |w| < s_c * 2^-" + std::to_string(kLog2Levels) +
               "; 4-bit codes (sign + 3-bit exponent field, "
               "field 7 = zero); simulated with the f32 engine")
        << ", \"zero_weights\": " << v.log2.zeros
        << ", \"rnn_weights\": " << v.log2.weights;
    }
    j << ", \"per_channel\": " << (v.per_channel ? "true" : "false")
      << ", \"chosen\": " << (v.chosen ? "true" : "false")
      << ", \"layer_precisions\": [";
    for (size_t l = 0; l < v.layer_precisions.size(); ++l) {
      j << (l ? ", " : "") << "\""
        << engine::PrecisionName(v.layer_precisions[l]) << "\"";
    }
    j << "], \"mean_abs_error\": " << Num(vc.mean_abs)
      << ", \"max_abs_error\": " << Num(vc.max_abs)
      << ", \"relative_l2_error\": " << Num(vc.rel_l2);
    if (vc.classifier) {
      j << ", \"top1_agreement\": " << Num(vc.top1_agreement)
        << ", \"mean_kl\": " << Num(vc.mean_kl);
    }
    if (v.accuracy >= 0) j << ", \"task_accuracy\": " << Num(v.accuracy);
    j << ", \"size_bytes\": " << v.size_bytes
      << ", \"size_estimated\": " << (int8 ? "false" : "true")
      << ", \"size_ratio\": "
      << Num(static_cast<double>(o.source_bytes) / v.size_bytes);
    if (v.timed) {
      j << ", \"f32_ms\": " << Num(v.f32_ms)
        << ", \"int8_ms\": " << Num(v.int8_ms)
        << ", \"speedup\": " << Num(v.f32_ms / v.int8_ms);
    } else {
      j << ", \"speed\": \"n/a: simulation\"";
    }
    j << ",\n     \"per_step_mean_abs_error\": " << JsonArray(vc.step_mean_abs)
      << ",\n     \"per_step_max_abs_error\": " << JsonArray(vc.step_max_abs)
      << "}";
  }
  j << "\n  ],\n  \"plot\": {\"path\": " << JsonString(png)
    << ", \"written\": " << (plot.written ? "true" : "false");
  if (!plot.written) j << ", \"skipped\": " << JsonString(plot.note);
  j << "}\n}\n";

  std::ofstream rep(o.report_path);
  rep << j.str();
  rep.close();
  if (!rep) return Internal("cannot write " + o.report_path);
  std::cout << "wrote report " << o.report_path << "\n";
  if (plot.written) {
    std::cout << "wrote plot " << png << "\n";
  } else {
    std::cout << "plot skipped: " << plot.note << "\n";
  }
  return Status::Ok();
}

}  // namespace rnnserve::tool
