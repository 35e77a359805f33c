// factorize_ternary: option checks, the two phases (greedy.cpp, refine.cpp) and the stored
// code. The math is in factorization.hpp and the comments of the phases.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "finite_check.hpp"
#include "qsl/error.hpp"
#include "qsl/twd.hpp"
#include "twd/factorization.hpp"

namespace qsl {
namespace {

constexpr int iterations_limit = 1000000;

std::string str(std::int64_t v) { return std::to_string(v); }
std::string num(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.6g", v);
  return buffer;
}

// Bytes one basis vector adds: its sign plane and mask, its coefficient and offset in the
// basis code, and its row of C.
double bytes_per_vector(std::int64_t rows, std::int64_t cols) {
  return static_cast<double>(2 * words_for(cols) * sizeof(word) + 2 * sizeof(float) +
                             static_cast<std::size_t>(rows) * sizeof(float));
}

// K from the options (explicit, or from the size target), checked.
int resolve_basis_vectors(const twd_options& o, std::int64_t rows, std::int64_t cols) {
  const std::string where = "factorize_ternary: ";
  const std::int64_t limit = std::min<std::int64_t>(rows * cols, max_twd_basis_vectors);
  if (o.basis_vectors == 0) {
    detail::require(o.bits_per_weight > 0,
                    where + "options.basis_vectors is 0 and options.bits_per_weight is " +
                        num(o.bits_per_weight) +
                        "; expected a number of basis vectors or a positive size target");
    return twd_basis_vectors_for(rows, cols, o.bits_per_weight);
  }
  detail::require(o.basis_vectors >= 1 && o.basis_vectors <= limit,
                  where + "options.basis_vectors is " + str(o.basis_vectors) + "; expected 1.." +
                      str(limit) + " (at most min(N * D, " + str(max_twd_basis_vectors) + ") for " +
                      str(rows) + " x " + str(cols) + ")");
  return o.basis_vectors;
}

void check_options(const twd_options& o, std::int64_t rows, std::int64_t cols) {
  const std::string where = "factorize_ternary: ";
  detail::require(rows >= 1 && cols >= 1,
                  where + "w is " + str(rows) + " x " + str(cols) + "; expected at least 1 x 1");
  // The same caps as weight codes: every index product stays far inside 64 bits.
  check_shape(rows, cols, 1, basis::ternary, 0, "factorize_ternary: w");
  detail::require(o.max_iterations >= 0 && o.max_iterations <= iterations_limit,
                  where + "options.max_iterations is " + str(o.max_iterations) + "; expected 0.." +
                      str(iterations_limit));
  detail::require(o.refine_iterations >= 0 && o.refine_iterations <= iterations_limit,
                  where + "options.refine_iterations is " + str(o.refine_iterations) +
                      "; expected 0.." + str(iterations_limit));
  detail::require(o.threads >= 0 && o.threads <= max_threads,
                  where + "options.threads is " + str(o.threads) + "; expected 0 (all) to " +
                      str(max_threads));
  const Eigen::MatrixXf& x = o.calibration;
  if (x.rows() == 0 && x.cols() == 0) return;
  detail::require(x.cols() == cols, where + "options.calibration has " + str(x.cols()) +
                                        " columns; expected " + str(cols) + " (the columns of w)");
  detail::require(x.rows() >= 1, where + "options.calibration has 0 rows and " + str(x.cols()) +
                                     " columns; expected at least 1 row (or a 0 x 0 matrix "
                                     "for none)");
}

twd_code make_code(std::int64_t rows, std::int64_t cols, const detail::twd::factors& f) {
  const Eigen::Index k_count = f.m.cols();
  twd_code code;
  code.rows = rows;
  code.cols = cols;
  code.basis = make_weight_code(k_count, cols, 1, basis::ternary, 0);
  for (Eigen::Index k = 0; k < k_count; ++k) {
    word* sign = code.basis.sign_plane(k, 0);
    word* mask = code.basis.mask_plane(k, 0);
    for (Eigen::Index d = 0; d < cols; ++d) {
      const double v = f.m(d, k);
      if (v == 0) continue;
      set_bit(mask, d);
      if (v > 0) set_bit(sign, d);
    }
  }
  for (float& alpha : code.basis.coefficients) alpha = 1.0f;
  compute_offsets(code.basis);  // M^T 1
  code.mixing.resize(static_cast<std::size_t>(k_count * rows));
  for (Eigen::Index k = 0; k < k_count; ++k)
    for (Eigen::Index n = 0; n < rows; ++n)
      code.mixing[static_cast<std::size_t>(k * rows + n)] = static_cast<float>(f.c(k, n));
  return code;
}

}  // namespace

int twd_basis_vectors_for(std::int64_t rows, std::int64_t cols, double bits_per_weight) {
  const std::string where = "twd_basis_vectors_for: ";
  detail::require(rows >= 1 && cols >= 1, where + "the matrix is " + str(rows) + " x " + str(cols) +
                                              "; expected at least 1 x 1");
  check_shape(rows, cols, 1, basis::ternary, 0, "twd_basis_vectors_for");
  detail::require(
      std::isfinite(bits_per_weight) && bits_per_weight > 0,
      where + "bits_per_weight is " + num(bits_per_weight) + "; expected a finite value > 0");
  const double budget = bits_per_weight * static_cast<double>(rows) * static_cast<double>(cols);
  const double per_vector = 8 * bytes_per_vector(rows, cols);  // bits
  detail::require(per_vector <= budget,
                  where + "bits_per_weight is " + num(bits_per_weight) +
                      "; one basis vector of a " + str(rows) + " x " + str(cols) +
                      " matrix already takes " +
                      num(per_vector / (static_cast<double>(rows) * static_cast<double>(cols))) +
                      " bits per weight");
  const double cap = static_cast<double>(std::min<std::int64_t>(cols, max_twd_basis_vectors));
  double k = std::min(cap, std::floor(budget / per_vector));
  // The same comparison as a caller checking bytes() (8 * K * per-vector bytes <= budget).
  while (k < cap && (k + 1) * per_vector <= budget) k += 1;
  while (k > 1 && k * per_vector > budget) k -= 1;
  return static_cast<int>(k);
}

twd_code factorize_ternary(const Eigen::Ref<const Eigen::MatrixXf>& w, const twd_options& options) {
  check_options(options, w.rows(), w.cols());
  const int k_count = resolve_basis_vectors(options, w.rows(), w.cols());
  detail::require_finite(w, "factorize_ternary: ", "w");
  if (options.calibration.size() > 0) detail::require_finite(options.calibration, "factorize_ternary: ", "options.calibration");

  const std::int64_t rounds = options.refine_iterations;
  const std::int64_t total = k_count + rounds;
  std::int64_t reported = -1;
  auto report = [&](std::int64_t done, std::int64_t of) {
    if (options.progress) options.progress(done, of);
    reported = done;
  };
  const Eigen::MatrixXd wt = w.transpose().cast<double>();
  detail::twd::factors f = detail::twd::greedy(wt, k_count, options.max_iterations, options.threads,
                                               [&](std::int64_t done) { report(done, k_count); });
  if (rounds > 0) {
    const detail::twd::objective obj =
        detail::twd::make_objective(wt, options.calibration, options.threads);
    detail::twd::refine(
        obj, options.refine_iterations, options.threads,
        [&](std::int64_t done) { report(k_count + done, total); }, f);
    if (reported != total) report(total, total);  // the refinement stopped early
  }
  detail::require(f.c.allFinite(),
                  "factorize_ternary: the least-squares fit of C is not "
                  "finite; w is too large for the factorization");
  return make_code(w.rows(), w.cols(), f);
}

}  // namespace qsl
