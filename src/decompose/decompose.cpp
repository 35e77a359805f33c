#include "qsl/decompose.hpp"

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "decompose/calibrated_refit.hpp"
#include "decompose/code_writer.hpp"
#include "decompose/error_feedback.hpp"
#include "decompose/group_fit.hpp"
#include "finite_check.hpp"
#include "error_metrics.hpp"
#include "parallel.hpp"
#include "qsl/error.hpp"

namespace qsl {
namespace {

using detail::row_matrix;
constexpr std::int64_t rows_per_block = 16;
constexpr int max_iterations_limit = 1000000;

std::string str(std::int64_t v) { return std::to_string(v); }

void check_options(const decompose_options& o, std::int64_t rows, std::int64_t cols) {
  const std::string where = "decompose: ";
  detail::require(rows >= 1 && cols >= 1, where + "w is " + str(rows) + " x " + str(cols) +
                                              "; expected at least 1 x 1");
  detail::require(o.bits >= 1 && o.bits <= max_bits, where + "options.bits is " + str(o.bits) +
                                                          "; expected 1.." + str(max_bits));
  detail::require(o.basis == basis::binary || o.basis == basis::ternary,
                  where + "options.basis is " + str(static_cast<int>(o.basis)) +
                      "; expected binary or ternary");
  detail::require(o.group_size == 0 || (o.group_size >= 8 && o.group_size % 8 == 0),
                  where + "options.group_size is " + str(o.group_size) +
                      "; expected 0 (one group per row) or a positive multiple of 8");
  detail::require(o.method == method::greedy || o.method == method::alternating ||
                      o.method == method::multi_start,
                  where + "options.method is " + str(static_cast<int>(o.method)) +
                      "; expected greedy, alternating or multi_start");
  detail::require(o.max_iterations >= 1 && o.max_iterations <= max_iterations_limit,
                  where + "options.max_iterations is " + str(o.max_iterations) + "; expected 1.." +
                      str(max_iterations_limit));
  detail::require(o.threads >= 0 && o.threads <= max_threads,
                  where + "options.threads is " + str(o.threads) + "; expected 0 (all) to " +
                      str(max_threads));
  std::ostringstream damping;
  damping << o.damping;
  detail::require(std::isfinite(o.damping) && o.damping > 0,
                  where + "options.damping is " + damping.str() + "; expected a finite value > 0");
  if (o.calibration.size() == 0) {
    detail::require(!o.error_feedback,
                    where + "options.error_feedback is set but options.calibration is empty; "
                            "expected calibration inputs (the feedback needs H = X^T X)");
    return;
  }
  detail::require(o.calibration.cols() == cols,
                  where + "options.calibration has " + str(o.calibration.cols()) +
                      " columns; expected " + str(cols) + " (the columns of w)");
}

// Error feedback (docs/design.md): codes chosen under the full H, refitted, then row by row the
// better of them and the plain calibrated code. Both errors are measured the same way (the
// refit's residual under E^T E = H), so no row can get worse than the plain fit.
void keep_better_feedback(weight_code& code, const detail::row_reader& rows,
                          const Eigen::VectorXf& importance, const decompose_options& o,
                          const std::vector<double>& plain_errors) {
  detail::feedback_factor factor;
  // H not positive definite even with 100x the damping (only with absurd inputs): the plain
  // calibrated fit stands.
  if (!detail::factor_feedback(o.calibration, o.damping, o.threads, factor)) return;
  weight_code fed = make_weight_code(code.rows, code.cols, o.bits, o.basis, o.group_size);
  detail::error_feedback_codes(fed, rows, factor, importance, o);
  factor = {};  // D x D floats: free them before the refit
  std::vector<double> fed_errors;
  detail::refit_coefficients(fed, rows, o.calibration, o.threads, &fed_errors);
  const std::int64_t words = code.words_per_plane() * code.bits;
  const std::int64_t coefficients = code.groups() * code.bits;
  for (std::int64_t n = 0; n < code.rows; ++n) {
    if (!(fed_errors[n] < plain_errors[n])) continue;
    std::copy_n(fed.signs.begin() + n * words, words, code.signs.begin() + n * words);
    if (!code.masks.empty())
      std::copy_n(fed.masks.begin() + n * words, words, code.masks.begin() + n * words);
    std::copy_n(fed.coefficients.begin() + n * coefficients, coefficients,
                code.coefficients.begin() + n * coefficients);
  }
}

template <class Matrix>
weight_code decompose_matrix(const Matrix& w, const decompose_options& o) {
  check_options(o, w.rows(), w.cols());
  detail::require_finite(w, "decompose: ", "w");
  if (o.calibration.size() > 0)
    detail::require_finite(o.calibration, "decompose: ", "options.calibration");

  weight_code code = make_weight_code(w.rows(), w.cols(), o.bits, o.basis, o.group_size);
  const detail::row_reader rows = [&w](std::int64_t first, std::int64_t count, row_matrix& out) {
    out = w.middleRows(first, count);
  };
  Eigen::VectorXf importance;
  if (o.calibration.size() > 0) importance = detail::column_importance(o.calibration);

  struct worker_state {
    detail::group_fitter fitter;
    row_matrix rows;
    detail::group_result result;
  };
  const std::int64_t blocks = (code.rows + rows_per_block - 1) / rows_per_block;
  std::vector<std::unique_ptr<worker_state>> states(
      static_cast<std::size_t>(detail::worker_count(o.threads, blocks)));
  std::mutex progress_mutex;
  std::int64_t rows_done = 0;

  // With error feedback, progress counts the rows of the feedback walk (the larger part).
  const bool feedback = o.error_feedback && o.calibration.size() > 0;
  detail::parallel_for(blocks, o.threads, [&](std::int64_t block, int worker) {
    auto& s = states[static_cast<std::size_t>(worker)];
    if (!s)
      s.reset(new worker_state{
          detail::group_fitter(o.basis, o.bits, o.method, o.max_iterations, code.group_size),
          {}, {}});
    const std::int64_t first = block * rows_per_block;
    const std::int64_t count = std::min(rows_per_block, code.rows - first);
    rows(first, count, s->rows);
    for (std::int64_t i = 0; i < count; ++i)
      for (std::int64_t g = 0; g < code.groups(); ++g) {
        const std::int64_t b = code.group_begin(g);
        s->fitter.fit(s->rows.row(i).data() + b,
                      importance.size() > 0 ? importance.data() + b : nullptr,
                      code.group_end(g) - b, s->result);
        detail::write_group(code, first + i, g, s->result);
        detail::normalize_group(code, first + i, g);
      }
    if (o.progress && !feedback) {
      std::lock_guard<std::mutex> lock(progress_mutex);
      rows_done += count;
      o.progress(rows_done, code.rows);
    }
  });
  if (o.calibration.size() > 0) {
    std::vector<double> plain_errors;
    detail::refit_coefficients(code, rows, o.calibration, o.threads,
                               feedback ? &plain_errors : nullptr);
    if (feedback) keep_better_feedback(code, rows, importance, o, plain_errors);
  }
  compute_offsets(code);
  return code;
}

}  // namespace

weight_code decompose(const Eigen::Ref<const Eigen::MatrixXf>& w,
                      const decompose_options& options) {
  return decompose_matrix(w, options);
}

weight_code decompose(const float* w, std::int64_t rows, std::int64_t cols,
                      const decompose_options& options) {
  detail::require(w != nullptr, "decompose: w is null; expected a rows x cols array");
  detail::require(rows >= 1 && cols >= 1, "decompose: w is " + str(rows) + " x " + str(cols) +
                                              "; expected at least 1 x 1");
  return decompose_matrix(Eigen::Map<const row_matrix>(w, rows, cols), options);
}

double normalized_error(const Eigen::Ref<const Eigen::MatrixXf>& w, const weight_code& code) {
  detail::require(w.rows() == code.rows && w.cols() == code.cols,
                  "normalized_error: w is " + str(w.rows()) + " x " + str(w.cols()) +
                      "; expected the code's " + str(code.rows) + " x " + str(code.cols));
  const Eigen::MatrixXd diff = (w - reconstruct(code)).cast<double>();
  const double norm = w.cast<double>().squaredNorm();
  return norm > 0 ? diff.squaredNorm() / norm : diff.squaredNorm();
}

double normalized_output_error(const Eigen::Ref<const Eigen::MatrixXf>& w,
                               const weight_code& code,
                               const Eigen::Ref<const Eigen::MatrixXf>& x) {
  detail::require(w.rows() == code.rows && w.cols() == code.cols,
                  "normalized_output_error: w is " + str(w.rows()) + " x " + str(w.cols()) +
                      "; expected the code's " + str(code.rows) + " x " + str(code.cols));
  return detail::normalized_output_error(w, x, [&] { return reconstruct(code); });
}

}  // namespace qsl
