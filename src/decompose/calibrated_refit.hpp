#pragma once
// Data-aware coefficients: for fixed codes, the coefficients of row n that minimize the output
// error ||(w_n - B_n alpha) X^T||^2 are alpha = (B^T H B)^-1 B^T H w_n with H = X^T X.

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <vector>

#include "qsl/weight_code.hpp"

namespace qsl::detail {

using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Copies rows [first, first + count) of W into `out` (count x D, row-major).
using row_reader = std::function<void(std::int64_t first, std::int64_t count, row_matrix& out)>;

/// Per-column weights diag(X^T X) plus a small ridge, for fitting the codes.
Eigen::VectorXf column_importance(const Eigen::MatrixXf& x);

/// Replaces every coefficient of `code` by the least-squares fit under H = X^T X and restores
/// the canonical group form. Costs O(N * min(M, D) * D * k) for X of M rows. When `row_errors`
/// is given it receives the output error (w_n - w_hat_n)^T H (w_n - w_hat_n) of every row after
/// the refit (H with the ridge of the Cholesky factor when M > D), at no extra cost.
void refit_coefficients(weight_code& code, const row_reader& rows, const Eigen::MatrixXf& x,
                        int threads, std::vector<double>* row_errors = nullptr);

}  // namespace qsl::detail
