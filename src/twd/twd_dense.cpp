// qsl::twd_dense: compression, construction and the online path.
//
// Online, y = C^T (M^T x) + b in two steps on the existing CPU machinery:
//  1. z = M^T x (batch x K): M^T is a weight code of K rows (one ternary plane, coefficient 1),
//     packed once by pack_for_cpu, so this is cpu_forward_float (look-up tables, or decoded
//     GEMM for large batches) or cpu_forward_encoded (AND + popcount). For encoded inputs the
//     ternary inner product of the original method is
//         m . u = popcount(z) - 2 popcount(z AND (s XOR u))
//     (z: nonzero mask, s: sign bits, u: the activation bit plane as +-1); qsl's kernels use
//     the equivalent AND form on 0/1 planes, m . t = 2 popcount(s AND t) - popcount(z AND t),
//     summed over the planes with weights 2^i and finished as step * I + minimum * (M^T 1)
//     (docs/design.md, "Encoded activations"). z is exact up to that last float step.
//  2. y = z C + b (batch x N): qsl's fp32 GEMM (per-ISA Eigen builds over the CPU thread
//     pool, src/cpu/float_gemm.hpp) on C^T stored N x K row-major at construction.
#include "qsl/twd_dense.hpp"

#include <cmath>
#include <utility>

#include "cpu/float_gemm.hpp"
#include "layer_checks.hpp"
#include "qsl/error.hpp"
#include "qsl/serialize.hpp"
#include "scratch.hpp"

namespace qsl {
namespace {

std::string str(std::int64_t v) { return std::to_string(v); }

// Multiply-adds below which y = z C + b runs on the calling thread (about 10 us on one core
// of the 2.1 GHz Xeon; the pool's wake-up and join cost about 3 us, measured at K = 70,
// N = 512, batch 1).
constexpr std::int64_t small_product = std::int64_t{1} << 18;

}  // namespace

void validate(const twd_dense_parameters& p, const char* what) {
  validate(p.code, what);
  detail::validate_bias_and_activations(p.bias, p.code.rows, p.activations,
                                        std::string(what) + ": ");
}

twd_dense_parameters compress_twd_dense(const Eigen::Ref<const Eigen::MatrixXf>& w,
                                        const float* bias, const twd_dense_options& options) {
  const std::string where = "twd_dense::compress: ";
  detail::require(options.activation_bits >= 0 && options.activation_bits <= max_activation_bits,
                  where + "options.activation_bits is " + std::to_string(options.activation_bits) +
                      "; expected 0.." + std::to_string(max_activation_bits));
  const activation_scaling scaling = options.scaling;
  detail::require(scaling == activation_scaling::automatic ||
                      scaling == activation_scaling::per_vector ||
                      scaling == activation_scaling::calibrated,
                  where + "options.scaling is " + std::to_string(static_cast<int>(scaling)) +
                      "; expected automatic, per_vector or calibrated");
  const Eigen::MatrixXf& calibration = options.factorization.calibration;
  const bool have_calibration = calibration.size() > 0;
  detail::require(scaling != activation_scaling::calibrated || have_calibration,
                  where +
                      "calibrated activations need calibration inputs in "
                      "options.factorization.calibration; none were given");
  twd_dense_parameters p;
  if (bias != nullptr) {  // checked before the (long) factorization
    p.bias.assign(bias, bias + w.rows());
    for (std::int64_t n = 0; n < w.rows(); ++n)
      detail::require(std::isfinite(p.bias[static_cast<std::size_t>(n)]),
                      where + "bias has " + std::to_string(p.bias[static_cast<std::size_t>(n)]) +
                          " at " + str(n) + "; expected finite values");
  }
  p.code = factorize_ternary(w, options.factorization);
  p.activations.bits = options.activation_bits;
  if (options.activation_bits > 0 && have_calibration && scaling != activation_scaling::per_vector)
    p.activations = calibrate_activations(calibration, options.activation_bits);
  return p;
}

twd_dense::twd_dense(twd_dense_parameters parameters) : p_(std::move(parameters)) {
  validate(p_, "twd_dense");
  basis_ = pack_for_cpu(p_.code.basis);
  if (p_.activations.bits >= cpu_byte_tables_min_bits()) add_encoded_layout(basis_);
  const std::int64_t k_count = p_.code.basis_vectors(), n_count = p_.code.rows;
  mixing_t_.resize(static_cast<std::size_t>(k_count * n_count));
  for (std::int64_t k = 0; k < k_count; ++k)
    for (std::int64_t n = 0; n < n_count; ++n)
      mixing_t_[static_cast<std::size_t>(n * k_count + k)] = p_.code.mix(k, n);
}

twd_dense twd_dense::compress(const Eigen::Ref<const Eigen::MatrixXf>& w,
                              const Eigen::Ref<const Eigen::VectorXf>& bias,
                              const twd_dense_options& options) {
  detail::require(bias.size() == 0 || bias.size() == w.rows(),
                  "twd_dense::compress: bias has " + str(bias.size()) + " values; expected 0 or " +
                      str(w.rows()) + " (the rows of w)");
  return twd_dense(compress_twd_dense(w, bias.size() > 0 ? bias.data() : nullptr, options));
}

twd_dense twd_dense::compress(const Eigen::Ref<const Eigen::MatrixXf>& w,
                              const twd_dense_options& options) {
  return twd_dense(compress_twd_dense(w, nullptr, options));
}

void twd_dense::require_shape(std::int64_t x_cols, std::int64_t y_rows, std::int64_t y_cols,
                              std::int64_t batch) const {
  detail::require(in_features() > 0, "twd_dense::forward: the layer is empty");
  detail::require(x_cols == in_features(), "twd_dense::forward: x has " + str(x_cols) +
                                               " columns; expected " + str(in_features()) +
                                               " (in_features)");
  detail::require(y_rows == batch && y_cols == out_features(),
                  "twd_dense::forward: y is " + str(y_rows) + " x " + str(y_cols) + "; expected " +
                      str(batch) + " x " + str(out_features()));
}

void twd_dense::forward(const Eigen::Ref<const matrix>& x, Eigen::Ref<matrix> y) const {
  require_shape(x.cols(), y.rows(), y.cols(), x.rows());
  matrix x_copy, y_copy;
  const float* xp = x.data();
  if (x.rows() > 1 && x.outerStride() != x.cols()) xp = (x_copy = x).data();
  const bool y_packed = y.rows() <= 1 || y.outerStride() == y.cols();
  if (!y_packed) y_copy.resize(y.rows(), y.cols());
  run(xp, x.rows(), y_packed ? y.data() : y_copy.data());
  if (!y_packed) y = y_copy;
}

void twd_dense::forward(const float* x, std::int64_t batch, float* y) const {
  detail::require(batch >= 0, "twd_dense::forward: batch is " + str(batch) + "; expected >= 0");
  detail::require(batch == 0 || (x != nullptr && y != nullptr),
                  "twd_dense::forward: x or y is null");
  require_shape(in_features(), batch, out_features(), batch);
  run(x, batch, y);
}

void twd_dense::run(const float* x, std::int64_t batch, float* y) const {
  if (batch == 0) return;
  const std::int64_t k_count = basis_vectors();
  detail::scratch<float> z(static_cast<std::size_t>(batch * k_count));  // every element written
  if (p_.activations.bits == 0)
    cpu_forward_float(basis_, x, batch, nullptr, z.data());
  else
    cpu_forward_encoded(basis_, x, batch, p_.activations, nullptr, z.data());
  const std::int64_t n_count = out_features();
  const float* bias = p_.bias.empty() ? nullptr : p_.bias.data();
  if (batch * k_count * n_count >= small_product) {
    detail::cpu::float_gemm_bt(z.data(), batch, k_count, mixing_t_.data(), n_count, bias, y);
    return;
  }
  // A few microseconds of work: waking the pool would cost as much as the product.
  detail::cpu::active_float_gemm_block()(z.data(), batch, k_count, k_count, mixing_t_.data(),
                                         n_count, k_count, y, n_count);
  if (bias != nullptr)
    for (std::int64_t v = 0; v < batch; ++v)
      for (std::int64_t n = 0; n < n_count; ++n) y[v * n_count + n] += bias[n];
}

void twd_dense::save(const std::string& path) const {
  const std::vector<std::uint8_t> bytes = serialize();
  write_file_atomically(path, bytes.data(), bytes.size());
}

twd_dense twd_dense::load(const std::string& path, std::size_t max_bytes) {
  const std::vector<std::uint8_t> bytes = read_file(path, max_bytes);
  return deserialize(bytes.data(), bytes.size());
}

}  // namespace qsl
