#include "server/engine/reference.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace rnnserve::engine {

namespace {

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Builds the first layer's input [N][T][X] from features or token ids.
Status BuildLayerInput(const ModelSpec& spec, const RunInput& in,
                       std::vector<float>* x) {
  const size_t rows = static_cast<size_t>(in.batch) * in.steps;
  if (spec.input_kind == InputKind::kTokenIds) {
    if (in.tokens == nullptr) {
      return InvalidArgument(
          "reference: the model takes token ids, none given");
    }
    const EmbeddingSpec& e = spec.embedding;
    x->resize(rows * e.dim);
    for (size_t r = 0; r < rows; ++r) {
      const int64_t id = in.tokens[r];
      if (id < 0 || id >= e.vocab_size) {
        return InvalidArgument("reference: token id " + std::to_string(id) +
                               " outside [0, " + std::to_string(e.vocab_size) +
                               ")");
      }
      const float* row = e.table.data() + static_cast<size_t>(id) * e.dim;
      std::copy(row, row + e.dim, x->data() + r * e.dim);
    }
    return Status::Ok();
  }
  if (in.features == nullptr) {
    return InvalidArgument("reference: the model takes features, none given");
  }
  x->assign(in.features, in.features + rows * spec.feature_size);
  return Status::Ok();
}

// Runs one layer over x [N][T][input_size]; returns y [N][T][dirs*H] and
// updates `state` (h and c, [dirs][N][H]) to the final state.
std::vector<float> RunLayer(const RnnLayerSpec& layer,
                            const std::vector<float>& x, int batch, int steps,
                            LayerState* state) {
  const int in_size = layer.input_size;
  const int hidden = layer.hidden_size;
  const int gates = layer.gates();
  const int width = layer.output_size();
  const bool lstm = layer.cell == CellType::kLstm;
  const size_t gh = static_cast<size_t>(gates) * hidden;
  std::vector<float> y(static_cast<size_t>(batch) * steps * width);
  std::vector<double> xg(gh), hg(gh);

  for (int d = 0; d < layer.directions; ++d) {
    const float* w_layer = layer.w_layer.data() + d * in_size * gh;
    const float* w_iter = layer.w_iter.data() + d * hidden * gh;
    const float* bias = layer.bias.data() + static_cast<size_t>(d) * 4 * hidden;
    for (int n = 0; n < batch; ++n) {
      float* h =
          state->h.data() + (static_cast<size_t>(d) * batch + n) * hidden;
      float* c =
          lstm ? state->c.data() + (static_cast<size_t>(d) * batch + n) * hidden
               : nullptr;
      for (int s = 0; s < steps; ++s) {
        const int t = d == 0 ? s : steps - 1 - s;
        const float* xt =
            x.data() + (static_cast<size_t>(n) * steps + t) * in_size;
        std::fill(xg.begin(), xg.end(), 0.0);
        std::fill(hg.begin(), hg.end(), 0.0);
        for (int i = 0; i < in_size; ++i) {
          const double xi = xt[i];
          const float* w = w_layer + i * gh;
          for (size_t k = 0; k < gh; ++k) xg[k] += xi * w[k];
        }
        for (int j = 0; j < hidden; ++j) {
          const double hj = h[j];
          const float* w = w_iter + j * gh;
          for (size_t k = 0; k < gh; ++k) hg[k] += hj * w[k];
        }
        float* yt = y.data() + (static_cast<size_t>(n) * steps + t) * width +
                    static_cast<size_t>(d) * hidden;
        for (int u = 0; u < hidden; ++u) {
          double h_new;
          if (lstm) {
            auto gate = [&](int g) {
              return xg[g * hidden + u] + hg[g * hidden + u] +
                     bias[g * hidden + u];
            };
            const double i_gate = Sigmoid(gate(0));
            const double f_gate = Sigmoid(gate(1));
            const double c_tilde = std::tanh(gate(2));
            const double o_gate = Sigmoid(gate(3));
            const double c_new = f_gate * c[u] + i_gate * c_tilde;
            c[u] = static_cast<float>(c_new);
            h_new = o_gate * std::tanh(c_new);
          } else {
            const double update = Sigmoid(xg[u] + hg[u] + bias[u]);
            const double reset =
                Sigmoid(xg[hidden + u] + hg[hidden + u] + bias[hidden + u]);
            const double candidate =
                std::tanh(xg[2 * hidden + u] + bias[2 * hidden + u] +
                          reset * (hg[2 * hidden + u] + bias[3 * hidden + u]));
            h_new = (1.0 - update) * candidate + update * h[u];
          }
          yt[u] = static_cast<float>(h_new);
        }
        // h is read for every unit above, so update it only after the step.
        std::copy(yt, yt + hidden, h);
      }
    }
  }
  return y;
}

void ApplyActivation(OutputActivation activation, float* row, int size) {
  if (activation == OutputActivation::kNone || size <= 0) return;
  double max_value = row[0];
  for (int k = 1; k < size; ++k)
    max_value = std::max(max_value, double{row[k]});
  double sum = 0.0;
  for (int k = 0; k < size; ++k) sum += std::exp(row[k] - max_value);
  const double log_sum = std::log(sum) + max_value;
  for (int k = 0; k < size; ++k) {
    const double log_p = row[k] - log_sum;
    row[k] = static_cast<float>(
        activation == OutputActivation::kLogSoftmax ? log_p : std::exp(log_p));
  }
}

}  // namespace

Status ReferenceRun(const ModelSpec& spec, const RunInput& in, RunOutput* out) {
  const std::string problem = ValidateModelSpec(spec);
  if (!problem.empty())
    return InvalidArgument("reference: invalid model: " + problem);
  if (out == nullptr) return InvalidArgument("reference: output is null");
  if (in.batch < 1 || in.steps < 1) {
    return InvalidArgument("reference: batch and steps must be >= 1, got N=" +
                           std::to_string(in.batch) +
                           " T=" + std::to_string(in.steps));
  }
  const int batch = in.batch;
  const int steps = in.steps;

  std::vector<LayerState> states(spec.layers.size());
  for (size_t k = 0; k < spec.layers.size(); ++k) {
    const RnnLayerSpec& layer = spec.layers[k];
    const size_t n =
        static_cast<size_t>(layer.directions) * batch * layer.hidden_size;
    const bool lstm = layer.cell == CellType::kLstm;
    if (in.initial_state == nullptr) {
      states[k].h.assign(n, 0.0f);
      if (lstm) states[k].c.assign(n, 0.0f);
      continue;
    }
    if (in.initial_state->size() != spec.layers.size()) {
      return InvalidArgument("reference: initial state has " +
                             std::to_string(in.initial_state->size()) +
                             " layers, the model " +
                             std::to_string(spec.layers.size()));
    }
    const LayerState& given = (*in.initial_state)[k];
    if (given.h.size() != n || (lstm && given.c.size() != n)) {
      return InvalidArgument("reference: initial state of layer " +
                             std::to_string(k) + " must hold " +
                             std::to_string(n) + " values per tensor");
    }
    states[k].h = given.h;
    if (lstm) states[k].c = given.c;
  }

  std::vector<float> x;
  RETURN_IF_ERROR(BuildLayerInput(spec, in, &x));
  for (size_t k = 0; k < spec.layers.size(); ++k) {
    x = RunLayer(spec.layers[k], x, batch, steps, &states[k]);
  }
  int width = spec.layers.back().output_size();

  // Rows of the (optional) head's input: every step, or the last one.
  const int rows_per_seq = spec.last_step_only ? 1 : steps;
  if (spec.last_step_only) {
    std::vector<float> last(static_cast<size_t>(batch) * width);
    for (int n = 0; n < batch; ++n) {
      const float* row =
          x.data() + (static_cast<size_t>(n) * steps + steps - 1) * width;
      std::copy(row, row + width, last.data() + static_cast<size_t>(n) * width);
    }
    x = std::move(last);
  }
  const size_t rows = static_cast<size_t>(batch) * rows_per_seq;
  if (spec.has_head) {
    const LinearSpec& head = spec.head;
    std::vector<float> y(rows * head.out_features);
    std::vector<double> acc(head.out_features);
    for (size_t r = 0; r < rows; ++r) {
      for (int o = 0; o < head.out_features; ++o) acc[o] = head.bias[o];
      for (int i = 0; i < head.in_features; ++i) {
        const double xi = x[r * width + i];
        const float* w =
            head.weight.data() + static_cast<size_t>(i) * head.out_features;
        for (int o = 0; o < head.out_features; ++o) acc[o] += xi * w[o];
      }
      for (int o = 0; o < head.out_features; ++o) {
        y[r * head.out_features + o] = static_cast<float>(acc[o]);
      }
    }
    x = std::move(y);
    width = head.out_features;
  }
  for (size_t r = 0; r < rows; ++r) {
    ApplyActivation(spec.activation, x.data() + r * width, width);
  }

  out->shape = spec.last_step_only ? std::vector<int64_t>{batch, width}
                                   : std::vector<int64_t>{batch, steps, width};
  out->output = std::move(x);
  out->final_state = std::move(states);
  return Status::Ok();
}

}  // namespace rnnserve::engine
