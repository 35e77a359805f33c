#include "onnx/layer_weights.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "onnx/proto.hpp"

namespace qsl::onnx::detail {

bool glob(const std::string& pattern, const std::string& text) {
  return fnmatch(pattern.c_str(), text.c_str(), 0) == 0;
}

const layer_override* override_for(const compress_options& o, const candidate& c) {
  for (const auto& override : o.overrides)
    if (glob(override.pattern, c.node_name) || glob(override.pattern, c.weight)) return &override;
  return nullptr;
}

const decompose_options& options_for(const compress_options& o, const candidate& c) {
  const layer_override* override = override_for(o, c);
  return override != nullptr ? override->options : o.weights;
}

std::string what_of(const candidate& c) {
  return "weight '" + c.weight + "' of node '" + c.node_name + "'";
}

std::string first_non_finite(const candidate& c, const std::vector<float>& values) {
  for (std::int64_t r = 0; r < c.rows; ++r)
    for (std::int64_t col = 0; col < c.cols; ++col) {
      const float v = c.layout == detail::weight_layout::transposed
                          ? values[static_cast<std::size_t>(col * c.rows + r)]
                          : values[static_cast<std::size_t>(r * c.cols + col)];
      if (!std::isfinite(v))
        return "has " + std::to_string(v) + " at row " + std::to_string(r) + ", col " +
               std::to_string(col) + " (of W, outputs x inputs)";
    }
  return {};
}

Eigen::MatrixXf read_w(const candidate& c, const pb::TensorProto& t, const std::string& what) {
  const std::vector<float> values = read_floats(t, what);
  const std::string non_finite = first_non_finite(c, values);
  if (!non_finite.empty()) throw model_error(what + ": " + non_finite);
  Eigen::MatrixXf w(c.rows, c.cols);
  for (std::int64_t r = 0; r < c.rows; ++r)
    for (std::int64_t col = 0; col < c.cols; ++col)
      w(r, col) = c.layout == detail::weight_layout::transposed
                      ? values[static_cast<std::size_t>(col * c.rows + r)]
                      : values[static_cast<std::size_t>(r * c.cols + col)];
  return w;
}

std::uint64_t stored_bytes(const weight_code& code, coefficient_storage storage) {
  const auto planes = static_cast<std::uint64_t>(code.rows) *
                      static_cast<std::uint64_t>(code.bits) *
                      static_cast<std::uint64_t>((code.cols + 7) / 8);
  return planes * (code.basis == qsl::basis::ternary ? 2 : 1) +
         code.coefficients.size() * (storage == coefficient_storage::float16 ? 2 : sizeof(float));
}

void store_coefficients(weight_code& code, coefficient_storage storage) {
  if (storage != coefficient_storage::float16) return;
  constexpr float half_max = 65504.0f;
  for (std::size_t i = 0; i < code.coefficients.size(); ++i) {
    float& alpha = code.coefficients[i];
    if (!(std::abs(alpha) <= half_max))
      throw qsl::error("coefficient " + std::to_string(i) + " is " + std::to_string(alpha) +
                       ", beyond float16's range (65504): store this layer's coefficients as "
                       "float32");
    alpha = static_cast<float>(Eigen::half(alpha));
  }
  compute_offsets(code);
}

const layer_calibration* statistics_of(const compress_options& o, const candidate& c) {
  return o.calibration != nullptr ? statistics_in(*o.calibration, c) : nullptr;
}

const layer_calibration* statistics_in(const calibration_data& data, const candidate& c) {
  if (c.table() || c.transposed_conv()) return nullptr;  // fitted to the weight
  const auto it = data.find(c.weight);
  return it != data.end() && it->second.width == c.cols && it->second.vectors > 0 ? &it->second
                                                                                 : nullptr;
}

decompose_options layer_options_of(const decompose_options& base, const layer_calibration* stats) {
  decompose_options layer_options = base;
  if (stats == nullptr) layer_options.error_feedback = false;
  if (stats != nullptr) layer_options.calibration = stats->factor();
  return layer_options;
}

std::vector<float> as_tensor(const candidate& c, const Eigen::MatrixXf& w) {
  std::vector<float> values(static_cast<std::size_t>(w.size()));
  if (c.layout == weight_layout::transposed)
    Eigen::Map<Eigen::MatrixXf>(values.data(), w.rows(), w.cols()) = w;  // W^T row-major
  else
    Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
        values.data(), w.rows(), w.cols()) = w;
  return values;
}

namespace {

// The model's output change with layer l alone at the reference code (sensitivity_bits in the
// options' group, else the nearest measured), and the layer's errors scaled to it.
void measure_sensitivity(const compress_options& o, const candidate& c, std::int64_t group,
                         budget_measurements& out, std::size_t l) {
  std::size_t reference = 0;
  int distance = 1 << 20;
  for (std::size_t i = 0; i < out.codes[l].size(); ++i) {
    const weight_code& code = out.codes[l][i];
    const bool same_group = code.group_size == (group > 0 && group < c.cols ? group : c.cols);
    const int d = 2 * std::abs(code.bits - o.sensitivity_bits) + (same_group ? 0 : 1);
    if (d < distance) {
      distance = d;
      reference = i;
    }
  }
  double change = 0;
  try {
    change = o.sensitivity(c.weight, as_tensor(c, reconstruct(out.codes[l][reference])));
  } catch (const qsl::error& e) {
    throw qsl::error(what_of(c) + ": measuring its sensitivity: " + e.what());
  }
  qsl::detail::require(std::isfinite(change) && change >= 0,
                       what_of(c) + ": its measured sensitivity is " + std::to_string(change) +
                           "; expected a finite value >= 0");
  out.sensitivity[l] = change;
  out.reference[l] = reference;
  const double base = out.choices[l][reference].error;
  // A layer whose reference code is exact moves nothing: its errors keep their scale.
  const double scale = base > 0 ? change / base : 1.0;
  for (budget_choice& choice : out.choices[l]) choice.error *= scale;
}

}  // namespace

budget_measurements measure_budget(const compress_options& o, const std::vector<candidate>& layers,
                                   const std::vector<decompose_options>& options,
                                   const std::map<std::string, constant_ref>& constants,
                                   std::uint64_t model_bytes) {
  budget_measurements out;
  out.codes.resize(layers.size());
  out.choices.resize(layers.size());
  out.relative_errors.resize(layers.size());
  out.sensitivity.assign(layers.size(), 0.0);
  out.reference.assign(layers.size(), 0);
  out.code_limit = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t weights = 0, weight_bytes = 0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const candidate& c = layers[l];
    if (o.progress) o.progress(l, layers.size(), c.node_name + " (measuring bit counts)");
    const constant_ref ref = constants.at(c.weight);
    const Eigen::MatrixXf w = read_w(c, *ref.tensor, what_of(c));
    const layer_calibration* stats = statistics_of(o, c);
    decompose_options layer_options = layer_options_of(options[l], stats);
    // A layer an override matches keeps its bits and group; the others are measured at each.
    const layer_override* pinned = override_for(o, c);
    std::vector<int> bits = o.budget_choices;
    if (pinned != nullptr) bits = {pinned->options.bits};
    std::sort(bits.begin(), bits.end());
    bits.erase(std::unique(bits.begin(), bits.end()), bits.end());
    // Per-row coefficients too where the layer's groups are narrower than its rows (at 32 bits
    // per coefficient, groups of 128 add 0.25 bits per weight and plane), and groups of half
    // the size (a step between k and k + 1 planes: k = 2 in groups of 64 with float16
    // coefficients stores 2.5 bits, between 2.25 and 3.375 in groups of 128).
    std::vector<std::int64_t> groups = {layer_options.group_size};
    const std::int64_t half = layer_options.group_size / 2;
    if (pinned == nullptr && layer_options.group_size > 0 && layer_options.group_size < c.cols) {
      groups.push_back(0);
      if (half >= 16 && half % 8 == 0) groups.push_back(half);
    }
    for (int b : bits)
      for (std::int64_t group : groups) {
        if (b > 4 && c.rows * c.cols > o.budget_high_bits_max_weights && bits.size() > 1) continue;
        layer_options.bits = b;
        layer_options.group_size = group;
        try {
          out.codes[l].push_back(decompose(w, layer_options));
          store_coefficients(out.codes[l].back(), o.coefficients);
        } catch (const qsl::error& e) {
          throw qsl::error(what_of(c) + ": " + e.what());
        }
        const weight_code& code = out.codes[l].back();
        const double error = stats != nullptr
                                 ? normalized_output_error(w, code, layer_options.calibration)
                                 : normalized_error(w, code);
        out.choices[l].push_back({stored_bytes(code, o.coefficients), error});
        out.relative_errors[l].push_back(error);
      }
    if (o.sensitivity) measure_sensitivity(o, c, options[l].group_size, out, l);
    weights += static_cast<std::uint64_t>(c.rows * c.cols);
    weight_bytes +=
        static_cast<std::uint64_t>(c.rows * c.cols) * element_size(ref.tensor->data_type());
  }
  if (o.budget_bits > 0)
    out.code_limit = static_cast<std::uint64_t>(o.budget_bits * static_cast<double>(weights) / 8.0);
  if (o.max_model_bytes > 0) {
    // The file less the weights it replaces, and a first guess of what each layer's nodes,
    // names and attributes add; compress corrects it from the file it writes.
    const std::uint64_t rest = model_bytes - std::min(weight_bytes, model_bytes);
    const std::uint64_t overhead = 512 * layers.size();
    if (o.max_model_bytes < rest + overhead)
      throw qsl::error("compress: max_model_bytes is " + std::to_string(o.max_model_bytes) +
                       "; the model without the weights it compresses already takes " +
                       std::to_string(rest) + " bytes, and the layers' nodes about " +
                       std::to_string(overhead));
    out.code_limit = std::min(out.code_limit, o.max_model_bytes - rest - overhead);
  }
  return out;
}

}  // namespace qsl::onnx::detail
