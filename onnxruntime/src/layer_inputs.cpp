#include "layer_inputs.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "qsl/error.hpp"

namespace qsl::ort {

namespace {

std::string str(std::int64_t v) { return std::to_string(v); }

}  // namespace

void check_format_version(const node_reader& node) {
  constexpr std::int64_t read = 1;  // the version of the operators' inputs and attributes
  const std::int64_t version = node.int_attribute("format_version", read);
  detail::require(version == read, "format_version is " + str(version) + "; this library reads " +
                                       str(read) + " (compress the model again with this qsl)");
}

code_inputs::code_inputs(const node_reader& node, std::int64_t rows, std::int64_t cols,
                         std::size_t first) {
  bits = node.int_attribute("bits");
  basis = node.int_attribute("basis");
  group = node.int_attribute("group_size");
  detail::require(bits >= 1 && bits <= max_bits,
                  "bits is " + str(bits) + "; expected 1.." + str(max_bits));
  detail::require(basis == 0 || basis == 1, "basis is " + str(basis) + "; expected 0 or 1");
  detail::require(group >= 0, "group_size is " + str(group) + "; expected >= 0 (0: one per row)");
  code = make_weight_code(rows, cols, static_cast<int>(bits), static_cast<qsl::basis>(basis),
                          group >= cols ? 0 : group);  // 0: per row
  const std::vector<std::int64_t> plane_dims = {rows, bits, (cols + 7) / 8};
  signs = static_cast<const std::uint8_t*>(
      node.constant(first, "signs", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, plane_dims));
  coefficients = node.constant(
      first + 1, "coefficients",
      {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16},
      {rows, code.groups(), 1, bits}, &coefficient_type);
  masks = static_cast<const std::uint8_t*>(
      node.constant(first + 2, "masks", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, plane_dims, true));
  const std::string input = "input " + std::to_string(first + 2);
  detail::require((masks != nullptr) == (code.basis == qsl::basis::ternary),
                  code.basis == qsl::basis::ternary ? "a ternary code needs " + input + " (masks)"
                                                    : "a binary code takes no masks (" + input +
                                                          ")");
}

void code_inputs::read() {
  read_plane_bytes(code, false, signs, "signs");
  if (masks != nullptr) read_plane_bytes(code, true, masks, "masks");
  if (coefficient_type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
    const auto* halves = static_cast<const std::uint16_t*>(coefficients);
    for (std::size_t i = 0; i < code.coefficients.size(); ++i)
      code.coefficients[i] = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(halves[i]));
  } else {
    const auto* floats = static_cast<const float*>(coefficients);
    code.coefficients.assign(floats, floats + code.coefficients.size());
  }
  for (std::size_t i = 0; i < code.coefficients.size(); ++i)
    if (!std::isfinite(code.coefficients[i]))  // the message only on failure: a loop per weight row
      throw qsl::error("coefficient " + str(static_cast<std::int64_t>(i)) + " is " +
                       std::to_string(code.coefficients[i]) + "; expected a finite value");
  compute_offsets(code);
  validate(code, "weight code");
}

twd_code read_twd_code(const node_reader& node, std::size_t first, std::int64_t rows,
                       std::int64_t cols) {
  const std::int64_t k = node.int_attribute("basis_vectors");
  detail::require(k >= 1 && k <= max_twd_basis_vectors,
                  "basis_vectors is " + str(k) + "; expected 1.." + str(max_twd_basis_vectors));
  twd_code code;
  code.rows = rows;
  code.cols = cols;
  code.basis = make_weight_code(k, cols, 1, qsl::basis::ternary, 0);
  const std::vector<std::int64_t> plane_dims = {k, 1, (cols + 7) / 8};
  read_plane_bytes(code.basis, false,
                   static_cast<const std::uint8_t*>(node.constant(
                       first, "signs", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, plane_dims)),
                   "signs");
  read_plane_bytes(code.basis, true,
                   static_cast<const std::uint8_t*>(node.constant(
                       first + 1, "masks", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, plane_dims)),
                   "masks");
  std::fill(code.basis.coefficients.begin(), code.basis.coefficients.end(), 1.0f);
  compute_offsets(code.basis);
  const auto* mixing = static_cast<const float*>(
      node.constant(first + 2, "mixing", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, {k, rows}));
  code.mixing.assign(mixing, mixing + k * rows);
  validate(code, "twd code");
  return code;
}

std::vector<float> read_bias(const node_reader& node, std::size_t index, std::int64_t count) {
  const auto* b = static_cast<const float*>(
      node.constant(index, "bias", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, {count}, true));
  std::vector<float> bias;
  if (b == nullptr) return bias;
  bias.assign(b, b + count);
  for (std::int64_t n = 0; n < count; ++n)
    if (!std::isfinite(bias[static_cast<std::size_t>(n)]))
      throw qsl::error("bias " + str(n) + " is " +
                       std::to_string(bias[static_cast<std::size_t>(n)]) + "; expected a finite value");
  return bias;
}

std::int64_t read_int8_min_rows(const node_reader& node, std::int64_t cols) {
  const std::int64_t rows = node.int_attribute("int8_min_rows", 0);
  detail::require(rows >= 0, "int8_min_rows is " + std::to_string(rows) + "; expected >= 0");
  detail::require(rows == 0 || node.int_attribute("activation_bits", 0) == 0,
                  "int8_min_rows is " + std::to_string(rows) +
                      " on a layer that encodes its activations; expected 0");
  detail::require(rows == 0 || cols <= cpu_int8_max_cols,
                  "int8_min_rows is " + std::to_string(rows) + " for " + std::to_string(cols) +
                      " inputs per product; int32 sums hold at most " +
                      std::to_string(cpu_int8_max_cols));
  return rows;
}

activation_quantizer read_activation_mode(const node_reader& node) {
  activation_quantizer activations;
  activations.bits = static_cast<int>(node.int_attribute("activation_bits", 0));
  detail::require(
      activations.bits >= 0 && activations.bits <= max_activation_bits,
      "activation_bits is " + str(activations.bits) + "; expected 0.." + str(max_activation_bits));
  const bool step = node.has_attribute("activation_step");
  const bool minimum = node.has_attribute("activation_minimum");
  detail::require(step == minimum,
                  "activation_step and activation_minimum come together (a calibrated quantizer)");
  // The quantizers qsl-compress fits with calibration: one per bit count 1..8.
  const std::vector<float> steps = node.floats_attribute("activation_steps");
  const std::vector<float> minimums = node.floats_attribute("activation_minimums");
  detail::require(
      steps.size() == minimums.size() &&
          (steps.empty() || steps.size() == static_cast<std::size_t>(max_activation_bits)),
      "activation_steps and activation_minimums must both hold " + str(max_activation_bits) +
          " values (or neither be given)");
  if (!step && !steps.empty() && activations.bits > 0) {
    activations.calibrated = true;
    activations.step = steps[static_cast<std::size_t>(activations.bits - 1)];
    activations.minimum = minimums[static_cast<std::size_t>(activations.bits - 1)];
    detail::require(std::isfinite(activations.step) && activations.step >= 0 &&
                        std::isfinite(activations.minimum),
                    "the calibrated quantizer for " + str(activations.bits) +
                        " bits is not finite (or has a negative step)");
  }
  if (step && activations.bits > 0) {
    activations.calibrated = true;
    activations.step = node.float_attribute("activation_step");
    activations.minimum = node.float_attribute("activation_minimum");
    detail::require(std::isfinite(activations.step) && activations.step >= 0 &&
                        std::isfinite(activations.minimum),
                    "activation_step " + std::to_string(activations.step) + " and minimum " +
                        std::to_string(activations.minimum) + " must be finite, step >= 0");
  }
  return activations;
}

}  // namespace qsl::ort
