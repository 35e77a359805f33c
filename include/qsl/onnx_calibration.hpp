#pragma once
// qsl::onnx::collect_calibration: statistics of the inputs of every Gemm / MatMul / Conv layer,
// gathered by running a model (qsl::onnx::session) on sample inputs. qsl::onnx::compress uses
// them to decompose each layer against its output error on those inputs, and to fit each
// layer's activation quantizers offline (so that online only the nearest level is chosen).

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "qsl/activation_code.hpp"
#include "qsl/onnx.hpp"

namespace qsl::onnx {

/// What one layer saw (calibration_data, declared in qsl/onnx.hpp, maps the name of each
/// layer's weight tensor to one of these).
struct layer_calibration {
  std::int64_t width = 0;      ///< D: values per input vector
  std::int64_t vectors = 0;    ///< how many input vectors were seen
  Eigen::MatrixXd gram;        ///< sum of x x^T over every vector (D x D)
  row_matrix_f samples;        ///< a uniform random subset of the vectors (reservoir sampling)

  /// A D x D matrix E with E^T E = gram / vectors plus a ridge (at least 1e-4 of the mean
  /// diagonal: see calibration.cpp):
  /// a stand-in for the inputs with the same second moments, as decompose_options::calibration
  /// takes them.
  Eigen::MatrixXf factor() const;
};

struct calibration_options {
  std::int64_t batch = 64;          ///< inputs per run of the model
  std::int64_t max_samples = 4096;  ///< input vectors kept per layer for activation quantizers
  /// Layers with wider inputs get no statistics (their D x D Gram matrix would not fit): they
  /// are then decomposed without calibration.
  std::int64_t max_width = 16384;
  /// Called with (inputs done, inputs total) after every batch.
  std::function<void(std::int64_t, std::int64_t)> progress;
};

/// Runs `m` (a model with one input) on `count` inputs, each of the input's shape without the
/// batch dimension, row-major in `inputs`, and returns the statistics of every Gemm / MatMul /
/// Conv layer. Throws qsl::error for no inputs, NaN/Inf inputs or options out of range, and
/// model_error for a model the executor cannot run, or layer inputs that become non-finite.
calibration_data collect_calibration(const model& m, const float* inputs, std::int64_t count,
                                     const calibration_options& options = {});

}  // namespace qsl::onnx
