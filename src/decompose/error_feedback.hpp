#pragma once
// Data-aware codes chosen under the full H = X^T X: GPTQ's error feedback, for the per-row /
// per-group binary or ternary level sets of qsl (see docs/design.md, "Error feedback").

#include <Eigen/Core>
#include <cstdint>

#include "decompose/calibrated_refit.hpp"
#include "qsl/decompose.hpp"
#include "qsl/weight_code.hpp"

namespace qsl::detail {

/// The factor the column walk needs. With H = X^T X + lambda I written as H = R R^T, R upper
/// triangular with a positive diagonal, `scaled` holds R diag(1/R_cc) (column-major, unit
/// diagonal, zeros below it); lambda = damping * mean(diag(X^T X)).
struct feedback_factor {
  Eigen::MatrixXf scaled;
};

/// Computes the factor; false when H is not numerically positive definite (then `out` is
/// unspecified). The result does not depend on `threads`.
bool factor_feedback(const Eigen::MatrixXf& x, double damping, int threads, feedback_factor& out);

/// Writes codes and coefficients of every row of `code` (a zeroed code of W's shape) by the
/// column walk, in canonical form. The coefficients are those of the group fits; refitting
/// them under H is the caller's job. `importance`: the per-column weights of the group fits.
void error_feedback_codes(weight_code& code, const row_reader& rows, const feedback_factor& f,
                          const Eigen::VectorXf& importance, const decompose_options& o);

}  // namespace qsl::detail
