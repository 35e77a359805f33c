#pragma once
// qsl::onnx::session: runs a feed-forward ONNX model (an original one, or one compressed by
// qsl-compress in the qsl format) on the CPU: compressed Gemm / MatMul / Conv run as qsl
// layers (quantized_dense, quantized_conv2d), uncompressed ones with Eigen, and the common
// glue operators with plain implementations: Add, Sub, Mul, Div, Relu, Sigmoid, Tanh, MaxPool,
// AveragePool, GlobalAveragePool, Flatten, Reshape, Transpose, Softmax, BatchNormalization,
// Identity, Dropout (inference), Constant, Concat. Any other operator is a model_error naming
// it when the session is built.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qsl/onnx.hpp"

namespace qsl::onnx {

/// A float tensor: shape and row-major data.
struct tensor {
  std::vector<std::int64_t> shape;
  std::vector<float> data;
  std::int64_t elements() const {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    return n;
  }
};

enum class backend : std::uint8_t { cpu = 0, cuda = 1 };

struct session_options {
  backend device = backend::cpu;
  /// Activation bits of the compressed layers: 0 keeps float activations, 1..8 encode them
  /// with a per-vector scale.
  int activation_bits = 0;
};

class session {
 public:
  /// Plans the model (checks every operator and attribute). Throws model_error.
  explicit session(const model& m, const session_options& options = {});
  session(session&&) noexcept;
  session& operator=(session&&) noexcept;
  ~session();

  const std::vector<std::string>& input_names() const;
  const std::vector<std::string>& output_names() const;
  /// Declared shape of input i; -1 for dynamic dimensions.
  const std::vector<std::int64_t>& input_shape(std::size_t i) const;
  /// Number of Gemm / MatMul / Conv nodes that run as qsl layers.
  std::size_t compressed_layers() const;

  /// Runs the graph. `inputs` in the order of input_names(); their shapes must match the
  /// declared ones (dynamic dimensions excepted). Throws qsl::error for wrong inputs.
  std::vector<tensor> run(const std::vector<tensor>& inputs) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace qsl::onnx
