#pragma once
// qsl::onnx::session: runs a feed-forward ONNX model (an original one, or one compressed by
// qsl-compress in the qsl format): compressed Gemm / MatMul / Conv run as qsl layers
// (quantized_dense, quantized_conv2d; on the CPU, or on an accelerator the caller plugs in),
// uncompressed ones as fp32 GEMMs on the CPU, and the common
// glue operators with plain implementations: Add, Sub, Mul, Div, Relu, Sigmoid, Tanh, MaxPool,
// AveragePool, GlobalAveragePool, Flatten, Reshape, Transpose, Softmax, BatchNormalization,
// Identity, Dropout (inference), Constant, Concat. Any other operator is a model_error naming
// it when the session is built.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "qsl/config.hpp"
#include "qsl/onnx.hpp"
#include "qsl/quantized_dense.hpp"
#include "qsl/twd_dense.hpp"

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

/// Runs one compressed layer on host arrays: y (batch x out_features) from x (batch x
/// in_features), row-major.
using layer_runner = std::function<void(const float* x, std::int64_t batch, float* y)>;
/// Builds the runner of a compressed layer on an accelerator. qsl::onnx does not link any GPU
/// library; the caller that does supplies this (qsl-run does, from qsl::cuda, when built with it).
using accelerator_factory = std::function<layer_runner(const quantized_dense& layer)>;
/// The same for a whole TWD layer (basis and mixing steps).
using twd_accelerator_factory = std::function<layer_runner(const twd_dense& layer)>;

/// Sees the input of a Gemm / MatMul / Conv node as its product sees it: `rows` vectors of
/// `cols` values, row-major (Conv: im2col patches, one per output position and image; a large
/// batch may arrive in several calls). `weight` names the layer's weight tensor. Called on the
/// thread that runs the session, before the product.
using layer_observer = std::function<void(const std::string& weight, const float* x,
                                          std::int64_t rows, std::int64_t cols)>;

struct session_options {
  /// cpu: everything on the CPU. cuda: the compressed layers (convolutions as im2col on the CPU
  /// + the layer on the GPU) through `accelerator`, which must then be set; glue and
  /// uncompressed layers stay on the CPU.
  backend device = backend::cpu;
  /// Activation bits of the compressed layers: 0 keeps float activations, 1..8 encode them
  /// with a per-vector scale.
  int activation_bits = 0;
  accelerator_factory accelerator;
  /// Optional, for backend::cuda: TWD layers run whole through it. Without it their basis step
  /// (a quantized_dense of K ternary rows) goes through `accelerator` and the K-deep mixing
  /// product stays on the CPU.
  twd_accelerator_factory twd_accelerator;
  /// Use a compressed layer's calibrated activation quantizer (stored by qsl-compress --calib)
  /// for `activation_bits` when it has one; false: always a per-vector scale.
  bool calibrated_activations = true;
  /// Called with every Gemm / MatMul / Conv input (calibration collects statistics this way).
  layer_observer observer;
};

class QSL_API session {
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
