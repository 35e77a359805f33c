#pragma once
// Internal: what compress needs per layer before it rewrites anything: the layer's options
// (overrides), its weight as W with the non-finite check, its calibration statistics, the
// bytes a code stores, and, under a size budget, every code the budget may choose measured
// (the allocation itself is budget.hpp's).

#include <Eigen/Core>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "onnx/budget.hpp"
#include "onnx/layers.hpp"
#include "qsl/onnx.hpp"
#include "qsl/onnx_calibration.hpp"

namespace qsl::onnx::detail {

/// fnmatch(3) of `text` against `pattern` (the --skip / --override / --twd globs).
bool glob(const std::string& pattern, const std::string& text);

/// The first override whose pattern matches the layer's node or weight name, or nullptr.
const layer_override* override_for(const compress_options& o, const candidate& c);
/// That override's options, or the defaults.
const decompose_options& options_for(const compress_options& o, const candidate& c);

/// "weight 'w' of node 'n'", the prefix of a layer's errors.
std::string what_of(const candidate& c);

/// "has nan at row 5, col 7 (of W, outputs x inputs)" for the first non-finite value of the
/// candidate's weight, empty when every value is finite.
std::string first_non_finite(const candidate& c, const std::vector<float>& values);

/// W (outputs x inputs) of candidate `c` from its tensor; non-finite values are a model_error.
Eigen::MatrixXf read_w(const candidate& c, const pb::TensorProto& t, const std::string& what);

/// The bytes a code adds to the file as the writers store it (graph_writer::add_code_tensors):
/// sign planes and ternary masks of ceil(cols / 8) bytes per row and plane, coefficients of 4
/// or 2 bytes (`storage`).
std::uint64_t stored_bytes(const weight_code& code, coefficient_storage storage);

/// Makes `code` the code the file will hold: under float16 storage, every coefficient rounded
/// to the nearest half (the offsets recomputed from them), so that the errors measured, the
/// report and a sequential calibration's later layers see what the runtimes read. Throws
/// qsl::error naming the first coefficient above half's range.
void store_coefficients(weight_code& code, coefficient_storage storage);

/// The layer's calibration statistics, or nullptr: none given, none for this weight, or a
/// table (decomposed data-free: its rows are read as they are, so the weight error is the
/// output error; a tied table's product statistics are not used).
const layer_calibration* statistics_of(const compress_options& o, const candidate& c);
/// The same from `data`.
const layer_calibration* statistics_in(const calibration_data& data, const candidate& c);

/// W_hat (outputs x inputs) laid out as the candidate's tensor (W, or W^T), row-major.
std::vector<float> as_tensor(const candidate& c, const Eigen::MatrixXf& w_hat);

/// `base` with the statistics' factor as calibration, or without error feedback when there
/// are none (a table, an R whose node has no Y output).
decompose_options layer_options_of(const decompose_options& base, const layer_calibration* stats);

/// Under a size budget: per layer, every code it may take (compress_options::budget_choices,
/// the options' group and one per row), measured: the codes, their (bytes, squared relative
/// error) for allocate_budget, and the limit on their bytes from budget_bits and
/// max_model_bytes (the latter with a first guess of each layer's node overhead).
/// With compress_options::sensitivity, each layer's choices' errors are scaled by its
/// measured output change over its reference code's error; `relative_errors` keeps them as
/// measured (squared), for the report.
struct budget_measurements {
  std::vector<std::vector<weight_code>> codes;
  std::vector<budget_layer> choices;
  std::vector<std::vector<double>> relative_errors;
  std::vector<double> sensitivity;  ///< per layer, 0 when not measured
  std::vector<std::size_t> reference;  ///< per layer with a sensitivity: the code it measured
  std::uint64_t code_limit = 0;
};
budget_measurements measure_budget(const compress_options& o, const std::vector<candidate>& layers,
                                   const std::vector<decompose_options>& options,
                                   const std::map<std::string, constant_ref>& constants,
                                   std::uint64_t model_bytes);

}  // namespace qsl::onnx::detail
