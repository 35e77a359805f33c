#pragma once
// qsl::onnx::collect_calibration: statistics of the inputs of every Gemm / MatMul / Conv layer,
// gathered by running a model (qsl::onnx::session) on sample inputs. qsl::onnx::compress uses
// them to decompose each layer against its output error on those inputs, and to fit each
// layer's activation quantizers offline (so that online only the nearest level is chosen).

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qsl/activation_code.hpp"
#include "qsl/config.hpp"
#include "qsl/onnx.hpp"

namespace qsl::onnx {

/// What one layer saw (calibration_data, declared in qsl/onnx.hpp, maps the name of each
/// layer's weight tensor to one of these).
/// It owns no Eigen storage (docs/design.md, "An ABI that does not depend on the user's flags"):
/// the values live in std::vectors, and gram() and samples() are views of them.
struct QSL_API layer_calibration {
  std::int64_t width = 0;            ///< D: values per input vector
  std::int64_t vectors = 0;          ///< how many input vectors were seen
  std::int64_t sample_count = 0;     ///< how many of them samples() keeps
  std::vector<double> gram_values;   ///< D x D (symmetric): see gram()
  std::vector<float> sample_values;  ///< sample_count x D, row-major: see samples()

  /// The sum of x x^T over every vector (D x D).
  Eigen::Map<const Eigen::MatrixXd> gram() const { return {gram_values.data(), width, width}; }
  /// A uniform random subset of the vectors (reservoir sampling), one per row.
  Eigen::Map<const row_matrix_f> samples() const {
    return {sample_values.data(), sample_count, width};
  }

  /// A D x D matrix E with E^T E = gram / vectors plus a ridge (at least 1e-4 of the mean
  /// diagonal: see calibration.cpp):
  /// a stand-in for the inputs with the same second moments, as decompose_options::calibration
  /// takes them. Throws qsl::error without statistics or unless `out` is D x D.
  void factor(Eigen::Ref<Eigen::MatrixXf> out) const;
  /// The same, in a new matrix (made here, in the caller's code).
  Eigen::MatrixXf factor() const {
    Eigen::MatrixXf e(width, width);
    factor(e);
    return e;
  }
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

/// Accumulates calibration statistics from the values of the tensors the layers read, as any
/// runtime computes them: run the model with tensors() as extra outputs (qsl-compress does so
/// in ONNX Runtime), hand every batch's values to add(), then take finish(). Each Gemm /
/// MatMul / Conv layer with a constant weight turns its input into vectors as it multiplies
/// them: X's last axis (MatMul X W, Gemm), X's columns (MatMul W X, Gemm with transA), or the
/// im2col patches of a 1-D or 2-D convolution (a grouped one's groups pooled: they share one
/// code's row width). Statistics are per weight: the users of a shared weight add to one.
class QSL_API calibration_collector {
 public:
  explicit calibration_collector(const model& m, const calibration_options& options = {});
  ~calibration_collector();
  calibration_collector(calibration_collector&&) noexcept;
  calibration_collector& operator=(calibration_collector&&) noexcept;

  /// The names of the tensors the layers read, each once, in graph order.
  const std::vector<std::string>& tensors() const;
  /// One batch of `tensor` (one of tensors()): row-major floats of `shape`. Throws qsl::error
  /// for an unknown tensor, and model_error naming the layer for a shape it cannot multiply or
  /// for NaN / Inf values.
  void add(const std::string& tensor, const std::vector<std::int64_t>& shape,
           const float* values);
  /// The statistics of every layer that saw at least one vector (layers wider than
  /// options.max_width get none). The collector is empty afterwards.
  calibration_data finish();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// The serialized model with `tensors` (values its main graph computes) added as float graph
/// outputs, for a runtime to hand them to calibration_collector::add. Names that are already
/// graph outputs or graph inputs are not added (a runtime returns those as they are). Throws
/// qsl::error for a name no node of the main graph produces and no input provides.
QSL_API std::vector<std::uint8_t> serialize_with_outputs(const model& m,
                                                         const std::vector<std::string>& tensors);

/// The serialized model with the floating-point constant `name` (an initializer, or a Constant
/// node's value, of the main graph) holding `values` instead (as many as it has, row-major in
/// its own shape, stored in its own type: FLOAT, DOUBLE, FLOAT16 or BFLOAT16): the model a
/// runtime runs to measure how one replaced weight moves the outputs (a size budget's per-layer
/// sensitivity). Throws qsl::error for no such constant or a count that does not match.
QSL_API std::vector<std::uint8_t> serialize_with_constant(const model& m, const std::string& name,
                                                          const std::vector<float>& values);

/// Runs `m` (a model with one input) on `count` inputs, each of the input's shape without the
/// batch dimension, row-major in `inputs`, and returns the statistics of every Gemm / MatMul /
/// Conv layer. Throws qsl::error for no inputs, NaN/Inf inputs or options out of range, and
/// model_error for a model the executor cannot run, or layer inputs that become non-finite.
QSL_API calibration_data collect_calibration(const model& m, const float* inputs,
                                             std::int64_t count,
                                             const calibration_options& options = {});

}  // namespace qsl::onnx
