#pragma once
// qsl::twd_dense: a dense layer y = W x + b whose weights are factorized by the shared-basis
// ternary weight decomposition (qsl/twd.hpp), W ~ C^T M^T:
//
//     z = M^T x       (K ternary inner products: the quantized_dense CPU kernels on M^T)
//     y = C^T z + b   (a K x N fp32 product)
//
// with float activations, or activations encoded as bit planes (AND + popcount).
//
//   qsl::twd_dense_options options;
//   options.factorization.bits_per_weight = 1;   // or .basis_vectors = K
//   options.activation_bits = 4;                 // 0 keeps float activations
//   auto layer = qsl::twd_dense::compress(w, b, options);
//   layer.forward(x, y);   // x: B x in_features, y: B x out_features, row-major

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "qsl/activation_code.hpp"
#include "qsl/aligned_allocator.hpp"
#include "qsl/config.hpp"
#include "qsl/cpu.hpp"
#include "qsl/quantized_dense.hpp"  // activation_scaling
#include "qsl/twd.hpp"

namespace qsl {

struct twd_dense_options {
  /// K (or the size target), iterations, calibration inputs, threads, progress.
  twd_options factorization;
  int activation_bits = 0;  ///< kx: 0 keeps float activations, 1..8 encodes them
  /// automatic: calibrated when factorization.calibration is given, else per vector.
  activation_scaling scaling = activation_scaling::automatic;
};

/// Everything a TWD layer stores.
struct twd_dense_parameters {
  twd_code code;
  std::vector<float> bias;  ///< empty, or one per output
  activation_quantizer activations;

  /// Bytes of the payload: the code (planes, masks, basis coefficients and offsets, C), the
  /// bias and a calibrated step and minimum.
  std::size_t bytes() const {
    return code.bytes() + bias.size() * sizeof(float) +
           (activations.calibrated ? 2 * sizeof(float) : 0);
  }
};

/// Throws qsl::error unless every part is consistent (code invariants, bias length, finite
/// values, activation settings in range).
QSL_API void validate(const twd_dense_parameters& p, const char* what = "twd dense layer");

/// The byte format (little-endian, version 1; the QSLD format's rules, docs/design.md):
///   "QSLT" magic, u32 version, u64 rows N, u64 cols D, u64 basis vectors K,
///   u8 activation bits, u8 activation mode (0 per vector, 1 calibrated),
///   f32 activation step, f32 activation minimum, u8 has bias,
///   u64[] sign planes [K][word], u64[] masks [K][word], f32[] C [K][N], f32[] bias (N),
///   u32 CRC-32 (zlib's) of every byte before it.
/// The basis coefficients (1) and offsets (M^T 1) are derived, not stored. Loading checks the
/// length against the header before allocating, then the checksum, then every invariant.
QSL_API std::vector<std::uint8_t> serialize(const twd_dense_parameters& p);
QSL_API twd_dense_parameters deserialize_twd_dense(const std::uint8_t* data, std::size_t size);

/// The non-template half of twd_dense::compress: factorizes w (out x in) and fixes the
/// activation quantizer. `bias` may be null. Throws qsl::error on bad input.
QSL_API twd_dense_parameters compress_twd_dense(const Eigen::Ref<const Eigen::MatrixXf>& w,
                                                const float* bias,
                                                const twd_dense_options& options);

class QSL_API twd_dense {
 public:
  using matrix = row_matrix_f;

  twd_dense() = default;
  /// From stored parts; validates them and packs M^T for the CPU kernels.
  explicit twd_dense(twd_dense_parameters parameters);

  /// Compresses w (out_features x in_features) and bias (empty or out_features values).
  static twd_dense compress(const Eigen::Ref<const Eigen::MatrixXf>& w,
                            const Eigen::Ref<const Eigen::VectorXf>& bias,
                            const twd_dense_options& options = {});
  /// Without a bias.
  static twd_dense compress(const Eigen::Ref<const Eigen::MatrixXf>& w,
                            const twd_dense_options& options = {});

  std::int64_t in_features() const { return p_.code.cols; }
  std::int64_t out_features() const { return p_.code.rows; }
  std::int64_t basis_vectors() const { return p_.code.basis_vectors(); }
  /// Exact bytes of the layer's parameters (twd_dense_parameters::bytes).
  std::size_t bytes() const { return p_.bytes(); }
  /// Bytes of the runtime copies: M^T packed for the kernels and C^T for the GEMM.
  std::size_t packed_bytes() const { return basis_.bytes() + mixing_t_.size() * sizeof(float); }
  /// Stored bits per weight, everything included.
  double bits_per_weight() const {
    return 8.0 * static_cast<double>(bytes()) / static_cast<double>(in_features() * out_features());
  }
  const twd_code& code() const { return p_.code; }
  const std::vector<float>& bias() const { return p_.bias; }
  const activation_quantizer& activations() const { return p_.activations; }
  const twd_dense_parameters& parameters() const { return p_; }

  /// y = layer(x) for a batch: x is batch x in_features, y batch x out_features (row-major;
  /// blocks with strides are accepted).
  void forward(const Eigen::Ref<const matrix>& x, Eigen::Ref<matrix> y) const;
  /// The same, into a new matrix (inline: allocated and freed by the caller's Eigen).
  matrix forward(const Eigen::Ref<const matrix>& x) const {
    matrix y(x.rows(), out_features());
    forward(x, y);
    return y;
  }
  /// Raw pointers: x holds batch x in_features values, y receives batch x out_features.
  void forward(const float* x, std::int64_t batch, float* y) const;

  std::vector<std::uint8_t> serialize() const { return qsl::serialize(p_); }
  static twd_dense deserialize(const std::uint8_t* data, std::size_t size) {
    return twd_dense(deserialize_twd_dense(data, size));
  }
  /// Writes the serialized layer atomically (temporary file + rename).
  void save(const std::string& path) const;
  /// Reads a layer written by save(); files over max_bytes are refused before reading.
  static twd_dense load(const std::string& path, std::size_t max_bytes = std::size_t{1} << 34);

 private:
  void require_shape(std::int64_t x_cols, std::int64_t y_rows, std::int64_t y_cols,
                     std::int64_t batch) const;
  void run(const float* x, std::int64_t batch, float* y) const;

  twd_dense_parameters p_;
  cpu_weights basis_;  // M^T packed for the CPU kernels (derived from p_.code.basis)
  std::vector<float, aligned_allocator<float>> mixing_t_;  // C^T: N x K row-major
};

}  // namespace qsl
