#pragma once
// qsl::quantized_dense: a dense layer y = W x + b whose weights are stored as a weight code,
// with float or bit-plane-encoded activations. The one header users include.
//
//   auto layer = qsl::quantized_dense::compress(w, b, {.weights = {.bits = 2}});
//   layer.forward(x, y);   // x: B x in_features, y: B x out_features, row-major

#include <Eigen/Core>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "qsl/activation_code.hpp"
#include "qsl/config.hpp"
#include "qsl/cpu.hpp"
#include "qsl/decompose.hpp"
#include "qsl/error.hpp"
#include "qsl/reference.hpp"
#include "qsl/serialize.hpp"
#include "qsl/version.hpp"
#include "qsl/weight_code.hpp"

namespace qsl {

/// Where the activation step and minimum come from when activation_bits > 0.
enum class activation_scaling : std::uint8_t {
  automatic = 0,   ///< calibrated when options.weights.calibration is given, else per vector
  per_vector = 1,  ///< min/max of every input vector, online
  calibrated = 2,  ///< fixed offline from options.weights.calibration (required)
};

struct quantized_dense_options {
  decompose_options weights;  ///< bits, basis, group size, method, calibration inputs, ...
  int activation_bits = 0;    ///< kx: 0 keeps float activations, 1..8 encodes them
  activation_scaling scaling = activation_scaling::automatic;
};

/// The non-template half of compress(): decomposes w (out x in) and fixes the activation
/// quantizer. `bias` may be null. Throws qsl::error on bad input.
QSL_API dense_parameters compress_dense(const Eigen::Ref<const Eigen::MatrixXf>& w,
                                        const float* bias, const quantized_dense_options& options);

/// Scalar is the type of the activations and outputs (float or double); the code itself
/// always stores fp32 coefficients. With Scalar = float, forward runs the SIMD CPU kernels
/// (qsl/cpu.hpp) on a packed copy of the code made at construction; with double it runs the
/// scalar reference in double.
template <class Scalar>
class basic_quantized_dense {
  static_assert(std::is_floating_point_v<Scalar>, "Scalar must be float or double");

 public:
  using matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  basic_quantized_dense() = default;
  /// From stored parts; validates them.
  explicit basic_quantized_dense(dense_parameters parameters) : p_(std::move(parameters)) {
    validate(p_, "quantized_dense");
    if constexpr (std::is_same_v<Scalar, float>) {
      packed_ = pack_for_cpu(p_.code);
      // Encoded activations with many bits run faster on byte tables (their own layout).
      if (p_.activations.bits >= cpu_byte_tables_min_bits()) add_encoded_layout(packed_);
    }
    int8_ = std::make_shared<cpu_int8_grids>();
  }

  /// Compresses w (out_features x in_features) and bias (empty or out_features values).
  static basic_quantized_dense compress(const Eigen::Ref<const Eigen::MatrixXf>& w,
                                        const Eigen::Ref<const Eigen::VectorXf>& bias,
                                        const quantized_dense_options& options = {}) {
    detail::require(bias.size() == 0 || bias.size() == w.rows(),
                    "quantized_dense::compress: bias has " + std::to_string(bias.size()) +
                        " values; expected 0 or " + std::to_string(w.rows()) +
                        " (the rows of w)");
    return basic_quantized_dense(
        compress_dense(w, bias.size() > 0 ? bias.data() : nullptr, options));
  }
  /// Without a bias.
  static basic_quantized_dense compress(const Eigen::Ref<const Eigen::MatrixXf>& w,
                                        const quantized_dense_options& options = {}) {
    return basic_quantized_dense(compress_dense(w, nullptr, options));
  }
  /// From a row-major out_features x in_features array; `bias` may be null.
  static basic_quantized_dense compress(const float* w, std::int64_t out_features,
                                        std::int64_t in_features, const float* bias,
                                        const quantized_dense_options& options = {}) {
    detail::require(w != nullptr, "quantized_dense::compress: w is null");
    detail::require(out_features >= 1 && in_features >= 1,
                    "quantized_dense::compress: w is " + std::to_string(out_features) + " x " +
                        std::to_string(in_features) + "; expected at least 1 x 1");
    using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const Eigen::MatrixXf dense = Eigen::Map<const row_major>(w, out_features, in_features);
    return basic_quantized_dense(compress_dense(dense, bias, options));
  }

  std::int64_t in_features() const { return p_.code.cols; }
  std::int64_t out_features() const { return p_.code.rows; }
  /// Exact bytes of the layer's parameters (see dense_parameters::bytes): what it is stored and
  /// serialized as.
  std::size_t bytes() const { return p_.bytes(); }
  /// Bytes of the packed copy the CPU kernels read (0 for Scalar = double).
  std::size_t packed_bytes() const { return packed_.bytes(); }
  /// Stored bits per weight, everything included.
  double bits_per_weight() const {
    return 8.0 * static_cast<double>(bytes()) /
           static_cast<double>(in_features() * out_features());
  }
  const weight_code& code() const { return p_.code; }
  const std::vector<float>& bias() const { return p_.bias; }
  const activation_quantizer& activations() const { return p_.activations; }
  const dense_parameters& parameters() const { return p_; }

  /// y = layer(x) for a batch: x is batch x in_features, y batch x out_features (row-major).
  void forward(const Eigen::Ref<const matrix>& x, Eigen::Ref<matrix> y) const {
    require_shape(x.cols(), y.rows(), y.cols(), x.rows());
    matrix x_copy, y_copy;
    const Scalar* xp = x.data();
    if (x.rows() > 1 && x.outerStride() != x.cols()) xp = (x_copy = x).data();
    const bool y_packed = y.rows() <= 1 || y.outerStride() == y.cols();
    if (!y_packed) y_copy.resize(y.rows(), y.cols());
    run(xp, x.rows(), y_packed ? y.data() : y_copy.data());
    if (!y_packed) y = y_copy;
  }
  matrix forward(const Eigen::Ref<const matrix>& x) const {
    matrix y(x.rows(), out_features());
    forward(x, y);
    return y;
  }
  /// Raw pointers: x holds batch x in_features values, y receives batch x out_features.
  void forward(const Scalar* x, std::int64_t batch, Scalar* y) const {
    detail::require(batch >= 0, "quantized_dense::forward: batch is " + std::to_string(batch) +
                                    "; expected >= 0");
    detail::require(batch == 0 || (x != nullptr && y != nullptr),
                    "quantized_dense::forward: x or y is null");
    require_shape(in_features(), batch, out_features(), batch);
    run(x, batch, y);
  }

  /// y = W_hat x + b with 8-bit activations (qsl/cpu.hpp, cpu_forward_int8): every vector and
  /// every row of W_hat on a symmetric int8 grid of its own, exact integer sums. For float
  /// layers and layers that encode each vector on a grid of its own (the int8 grids replace
  /// those); not for calibrated quantizers, which fix the layer's activation grid. ONNX
  /// Runtime's qsl operators take this path from a node's `int8_min_rows` on, and qsl-run
  /// follows them. The rows' grids are computed on the first call (one decode of W_hat).
  /// Throws qsl::error for NaN/Inf in x, for calibrated activation quantizers and for more
  /// than cpu_int8_max_cols inputs.
  void forward_int8(const float* x, std::int64_t batch, float* y) const {
    static_assert(std::is_same_v<Scalar, float>, "forward_int8 is for float layers");
    detail::require(batch >= 0 && (batch == 0 || (x != nullptr && y != nullptr)),
                    "quantized_dense::forward_int8: batch is " + std::to_string(batch) +
                        " (expected >= 0) or x or y is null");
    require_shape(in_features(), batch, out_features(), batch);
    detail::require(p_.activations.bits == 0 || !p_.activations.calibrated,
                    "quantized_dense::forward_int8: the layer encodes its activations with a "
                    "calibrated " +
                        std::to_string(p_.activations.bits) +
                        "-bit quantizer; 8-bit products are for float activations or per-vector "
                        "grids");
    cpu_forward_int8(packed_, int8_->scales(packed_).data(), x, batch,
                     p_.bias.empty() ? nullptr : p_.bias.data(), y);
  }

  std::vector<std::uint8_t> serialize() const { return qsl::serialize(p_); }
  static basic_quantized_dense deserialize(const std::uint8_t* data, std::size_t size) {
    return basic_quantized_dense(deserialize_dense(data, size));
  }
  /// Writes the serialized layer atomically (temporary file + rename).
  void save(const std::string& path) const {
    const std::vector<std::uint8_t> bytes = serialize();
    write_file_atomically(path, bytes.data(), bytes.size());
  }
  /// Reads a layer written by save(); files over max_bytes are refused before reading.
  static basic_quantized_dense load(const std::string& path,
                                    std::size_t max_bytes = std::size_t{1} << 34) {
    const std::vector<std::uint8_t> bytes = read_file(path, max_bytes);
    return deserialize(bytes.data(), bytes.size());
  }

 private:
  void require_shape(std::int64_t x_cols, std::int64_t y_rows, std::int64_t y_cols,
                     std::int64_t batch) const {
    detail::require(in_features() > 0, "quantized_dense::forward: the layer is empty");
    detail::require(x_cols == in_features(),
                    "quantized_dense::forward: x has " + std::to_string(x_cols) +
                        " columns; expected " + std::to_string(in_features()) +
                        " (in_features)");
    detail::require(y_rows == batch && y_cols == out_features(),
                    "quantized_dense::forward: y is " + std::to_string(y_rows) + " x " +
                        std::to_string(y_cols) + "; expected " + std::to_string(batch) + " x " +
                        std::to_string(out_features()));
  }

  void run(const Scalar* x, std::int64_t batch, Scalar* y) const {
    if (batch == 0) return;
    const float* bias = p_.bias.empty() ? nullptr : p_.bias.data();
    if constexpr (std::is_same_v<Scalar, float>) {
      if (p_.activations.bits == 0)
        cpu_forward_float(packed_, x, batch, bias, y);
      else
        cpu_forward_encoded(packed_, x, batch, p_.activations, bias, y);
      return;
    }
    if (p_.activations.bits == 0) {
      reference::forward_float<Scalar>(p_.code, x, batch, bias, y);
      return;
    }
    activation_code encoded;
    if constexpr (std::is_same_v<Scalar, float>) {
      encoded = encode_activations(x, batch, in_features(), p_.activations);
    } else {
      const std::vector<float> xf(x, x + batch * in_features());
      encoded = encode_activations(xf.data(), batch, in_features(), p_.activations);
    }
    reference::forward_encoded<Scalar>(p_.code, encoded, bias, y);
  }

  dense_parameters p_;
  cpu_weights packed_;  // derived from p_.code; empty for Scalar = double
  std::shared_ptr<cpu_int8_grids> int8_;  // made on forward_int8's first call; copies share it
};

using quantized_dense = basic_quantized_dense<float>;

}  // namespace qsl
