#pragma once
// qsl::decompose: W (N x D) -> weight_code, offline.

#include <Eigen/Core>
#include <cstdint>
#include <functional>

#include "qsl/config.hpp"
#include "qsl/weight_code.hpp"

namespace qsl {

/// How the coefficients and codes of each (row, group) are chosen.
enum class method : std::uint8_t {
  /// Residual greedy: m_j = sign(r), alpha_j = mean|r| (ternary: the best threshold), r -= ...
  greedy = 0,
  /// Greedy start, then alternate least squares for alpha and the nearest level for every
  /// weight until the error stops falling (Xu et al. 2018, Ambai et al. 2017).
  alternating = 1,
  /// Alternating from many starts: a grid over the shape of the level set (the ratios
  /// alpha_j / alpha_1), each scaled to the data, the best few refined by alternating.
  /// Closest to the Lloyd-Max floor; see docs/design.md.
  multi_start = 2,
};

struct decompose_options {
  int bits = 2;                            ///< k: planes per weight, 1..8
  qsl::basis basis = qsl::basis::binary;   ///< binary {-1,+1} or ternary {-1,0,+1}
  std::int64_t group_size = 0;             ///< 0: one group per row; else a multiple of 8
  qsl::method method = qsl::method::multi_start;  ///< default: the best method qsl has
  int max_iterations = 100;                ///< cap on alternating rounds per start
  /// Calibration inputs X (M x D). When not empty the decomposition minimizes the output error
  /// ||(W - W_hat) X^T|| instead of the weight error: the level sets are fitted with the
  /// per-column weights diag(X^T X) and the coefficients of every row are then refitted by
  /// least squares under the full X^T X.
  Eigen::MatrixXf calibration;
  /// With calibration: choose the codes under the full H = X^T X instead of diag(H) (GPTQ-style
  /// error feedback). Every row walks its columns left to right; each weight takes the level
  /// nearest to its value plus the feedback of the errors made on the columns before it, so
  /// later columns compensate the output error of earlier ones. Each group's level set is
  /// fitted when the walk reaches it; the coefficients are refitted under H at the end. Per
  /// row, the result with the lower output error of this and the plain calibrated fit is kept,
  /// so it is never worse on X (on other inputs it can be, with fewer calibration rows than
  /// inputs: hence off by default). Costs a D x D factorization and O(N D^2) more arithmetic,
  /// about 3x the plain calibrated fit (docs/design.md). qsl::error without calibration.
  bool error_feedback = false;
  /// Ridge added to H for the error feedback, relative to mean(diag(H)) (GPTQ's percdamp):
  /// larger values make the feedback weaker and fit X less closely. Finite and > 0.
  float damping = 0.01f;
  int threads = 0;  ///< worker threads; 0: all hardware threads; at most max_threads
  /// Called with (rows done, rows total) as the work proceeds; may run on any worker thread,
  /// never on two at once.
  std::function<void(std::int64_t, std::int64_t)> progress;
};

/// Decomposes w (N x D, outputs x inputs). Throws qsl::error for NaN/Inf, empty shapes and
/// options out of range.
QSL_API weight_code decompose(const Eigen::Ref<const Eigen::MatrixXf>& w,
                              const decompose_options& options = {});

/// The same for a row-major N x D array.
QSL_API weight_code decompose(const float* w, std::int64_t rows, std::int64_t cols,
                              const decompose_options& options = {});

/// Normalized error ||W - W_hat||_F^2 / ||W||_F^2 of a code against the matrix it came from.
QSL_API double normalized_error(const Eigen::Ref<const Eigen::MatrixXf>& w,
                                const weight_code& code);

/// Normalized output error ||(W - W_hat) X^T||_F^2 / ||W X^T||_F^2 on inputs x (M x D).
QSL_API double normalized_output_error(const Eigen::Ref<const Eigen::MatrixXf>& w,
                                       const weight_code& code,
                                       const Eigen::Ref<const Eigen::MatrixXf>& x);

}  // namespace qsl
