// twd_code: invariants, the dense approximation, error metrics.
#include <Eigen/Core>
#include <cmath>
#include <string>

#include "error_metrics.hpp"
#include "qsl/error.hpp"
#include "qsl/twd.hpp"

namespace qsl {
namespace {

std::string str(std::int64_t v) { return std::to_string(v); }

// M (D x K) from the basis code, in double.
Eigen::MatrixXd basis_matrix(const twd_code& code) {
  const weight_code& b = code.basis;
  Eigen::MatrixXd m = Eigen::MatrixXd::Zero(code.cols, b.rows);
  for (std::int64_t k = 0; k < b.rows; ++k) {
    const word* sign = b.sign_plane(k, 0);
    const word* mask = b.mask_plane(k, 0);
    for (std::int64_t d = 0; d < code.cols; ++d)
      if (get_bit(mask, d)) m(d, k) = get_bit(sign, d) ? 1.0 : -1.0;
  }
  return m;
}

// C (K x N) in double.
Eigen::MatrixXd mixing_matrix(const twd_code& code) {
  using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  return Eigen::Map<const row_major>(code.mixing.data(), code.basis.rows, code.rows).cast<double>();
}

void check_w(const char* what, const Eigen::Ref<const Eigen::MatrixXf>& w, const twd_code& code) {
  detail::require(w.rows() == code.rows && w.cols() == code.cols,
                  std::string(what) + ": w is " + str(w.rows()) + " x " + str(w.cols()) +
                      "; expected the code's " + str(code.rows) + " x " + str(code.cols));
}

}  // namespace

void validate(const twd_code& code, const char* what) {
  const std::string where = std::string(what) + ": ";
  detail::require(code.rows >= 1 && code.cols >= 1, where + "the code is " + str(code.rows) +
                                                        " x " + str(code.cols) +
                                                        "; expected at least 1 x 1");
  const weight_code& b = code.basis;
  detail::require(b.rows >= 1 && b.rows <= max_twd_basis_vectors,
                  where + "the basis has " + str(b.rows) + " vectors; expected 1.." +
                      str(max_twd_basis_vectors));
  detail::require(b.cols == code.cols, where + "the basis vectors have " + str(b.cols) +
                                           " values; expected " + str(code.cols) + " (cols)");
  detail::require(b.bits == 1 && b.basis == basis::ternary && b.group_size == b.cols,
                  where + "the basis code has " + str(b.bits) + " planes, basis " +
                      str(static_cast<int>(b.basis)) + ", group size " + str(b.group_size) +
                      "; expected 1 ternary plane and one group per row");
  validate(b, (where + "basis").c_str());  // shape, padding, canonical signs, offsets
  for (std::size_t i = 0; i < b.coefficients.size(); ++i)
    detail::require(b.coefficients[i] == 1.0f,
                    where + "basis coefficient " + str(static_cast<std::int64_t>(i)) + " is " +
                        std::to_string(b.coefficients[i]) + "; expected 1");
  const auto expected = static_cast<std::size_t>(b.rows * code.rows);
  detail::require(code.mixing.size() == expected,
                  where + "mixing holds " + str(static_cast<std::int64_t>(code.mixing.size())) +
                      " values; expected " + str(static_cast<std::int64_t>(expected)) + " (K x N)");
  for (std::size_t i = 0; i < code.mixing.size(); ++i)
    detail::require(std::isfinite(code.mixing[i]),
                    where + "mixing value " + str(static_cast<std::int64_t>(i)) + " (k " +
                        str(static_cast<std::int64_t>(i) / code.rows) + ", n " +
                        str(static_cast<std::int64_t>(i) % code.rows) + ") is " +
                        std::to_string(code.mixing[i]) + "; expected a finite value");
}

void reconstruct(const twd_code& code, Eigen::Ref<Eigen::MatrixXf> out) {
  validate(code, "reconstruct");
  detail::require_output_shape("reconstruct", out.rows(), out.cols(), code.rows, code.cols);
  const Eigen::MatrixXd w_hat = mixing_matrix(code).transpose() * basis_matrix(code).transpose();
  out = w_hat.cast<float>();
}

double normalized_error(const Eigen::Ref<const Eigen::MatrixXf>& w, const twd_code& code) {
  check_w("normalized_error", w, code);
  const Eigen::MatrixXd diff = w.cast<double>() - reconstruct(code).cast<double>();
  const double norm = w.cast<double>().squaredNorm();
  return norm > 0 ? diff.squaredNorm() / norm : diff.squaredNorm();
}

double normalized_output_error(const Eigen::Ref<const Eigen::MatrixXf>& w, const twd_code& code,
                               const Eigen::Ref<const Eigen::MatrixXf>& x) {
  check_w("normalized_output_error", w, code);
  return detail::normalized_output_error(w, x, [&] { return reconstruct(code); });
}

}  // namespace qsl
