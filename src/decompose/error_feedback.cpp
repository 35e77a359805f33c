#include "decompose/error_feedback.hpp"

#include <Eigen/Cholesky>
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "cpu/float_gemm.hpp"
#include "decompose/code_writer.hpp"
#include "decompose/group_fit.hpp"
#include "parallel.hpp"

// The math (docs/design.md, "Error feedback"). Row by row the output error of a code is
//
//     e(q) = (w - q)^T H (w - q),    H = X^T X + lambda I.
//
// GPTQ quantizes the columns of a row left to right and pushes every error forward: with U the
// upper Cholesky factor of H^-1 (H^-1 = U^T U),
//
//     q_c = nearest level of w~_c,   err_c = (w~_c - q_c) / U_cc,
//     w~_{c'} -= err_c U_{c c'}   for c' > c,
//
// starting from w~ = w. Write R = U^-1: it is upper triangular and H = R R^T, and summing the
// updates gives w - q = U^T err, i.e. err = R^T (w - q). Hence the walk is the same as
//
//     w~_c = w_c + sum_{c' < c} (w_{c'} - q_{c'}) R_{c' c} / R_cc,
//     e(q) = |R^T (w - q)|^2 = sum_c R_cc^2 (w~_c - q_c)^2,
//
// so taking the level nearest to w~_c minimizes the c-th term given the earlier choices (Babai's
// nearest plane). This form needs one Cholesky factorization (H = R R^T, R upper, computed from
// the bottom-right corner) and no inverse, so we use it: `scaled` = R diag(1/R_cc), and the
// feedback of column c into column c' is (w_c - q_c) * scaled(c, c').
//
// Lazy updates (GPTQ's trick): the columns are walked in blocks of 128; inside a block the
// feedback is applied at once, to the columns of the block only; at the end of the block the
// feedback of all its columns into every later column is one GEMM.
//
// The same equivalence holds only for w~_c at the moment the walk reaches c: before that, the
// running sums of the R form are not GPTQ's partially updated weights, which a group's level
// set is fitted to (see group_values below).

namespace qsl::detail {
namespace {

using stride = Eigen::OuterStride<>;
using float_map = Eigen::Map<row_matrix, 0, stride>;

constexpr std::int64_t tile = 128;           // block size of the factorization and of its tasks
constexpr std::int64_t walk_block = 128;     // columns per lazy-update block
constexpr std::int64_t rows_per_block = 32;  // rows walked together (one GEMM per column block)
constexpr int factor_attempts = 3;           // damping, 10x, 100x

// The lower triangle (with the diagonal) of X^T X into the row-major d x d array h, one block of
// columns per task. The blocks are fixed, so the sums do not depend on the thread count.
void gram_lower(const Eigen::MatrixXf& x, float* h, int threads) {
  const std::int64_t m = x.rows(), d = x.cols();
  const auto gemm = cpu::active_float_gemm_block();
  parallel_for((d + tile - 1) / tile, threads, [&](std::int64_t chunk, int) {
    const std::int64_t c0 = chunk * tile, c1 = std::min(d, c0 + tile);
    // Rows [c0, d) x columns [c0, c1). X is column-major, so its columns are the rows of a
    // row-major X^T. (The GEMM block computes a * b^T; Eigen packs the first operand cheaply,
    // so the large one goes there.)
    gemm(x.data() + c0 * m, d - c0, m, m, x.data() + c0 * m, c1 - c0, m, h + c0 * d + c0, d);
  });
}

// In place: the lower triangle of the row-major d x d symmetric matrix h becomes R^T, where R is
// upper triangular with H = R R^T; read column-major, the array is then R. Blocked from the
// bottom-right corner: with the last block split off, H = [H11 H21^T; H21 H22] and
// R = [R11 R12; 0 R22],
//
//     R22 R22^T = H22,   R12^T = R22^-1 H21,   R11 R11^T = H11 - R12 R12^T,
//
// so each step factors a small diagonal block (in double), solves the panel beside it and
// downdates the rest with one GEMM per block of columns. False if a pivot is not positive.
bool factor_lower(float* h, std::int64_t d, int threads) {
  const auto gemm = cpu::active_float_gemm_block();
  std::vector<std::vector<float>> scratch(static_cast<std::size_t>(worker_count(threads, d)));
  std::vector<float> panel;  // R12, row-major: the operand of the downdate
  for (std::int64_t k1 = d; k1 > 0;) {
    const std::int64_t k0 = std::max<std::int64_t>(0, k1 - tile), kb = k1 - k0;
    float_map block(h + k0 * d + k0, kb, kb, stride(d));
    const Eigen::MatrixXd lower = block.cast<double>();
    const Eigen::MatrixXd full = lower.selfadjointView<Eigen::Lower>();
    // R22 = J L J with L L^T = J H22 J (J reverses the order): J L J is upper triangular.
    const Eigen::LLT<Eigen::MatrixXd> llt(full.reverse());
    if (llt.info() != Eigen::Success) return false;
    const Eigen::MatrixXd r22 = Eigen::MatrixXd(llt.matrixL()).reverse();
    if (!r22.allFinite() || !(r22.diagonal().array() > 0).all()) return false;
    block = r22.transpose().cast<float>();
    if (k0 == 0) break;

    const Eigen::MatrixXf r22f = r22.cast<float>();
    const std::int64_t chunks = (k0 + tile - 1) / tile;
    panel.resize(static_cast<std::size_t>(k0 * kb));
    parallel_for(chunks, threads, [&](std::int64_t chunk, int) {
      const std::int64_t c0 = chunk * tile, c1 = std::min(k0, c0 + tile);
      float_map part(h + k0 * d + c0, kb, c1 - c0, stride(d));
      r22f.triangularView<Eigen::Upper>().solveInPlace(part);
      for (std::int64_t t = 0; t < kb; ++t)
        for (std::int64_t j = c0; j < c1; ++j) panel[j * kb + t] = h[(k0 + t) * d + j];
    });
    parallel_for(chunks, threads, [&](std::int64_t chunk, int worker) {
      const std::int64_t c0 = chunk * tile, c1 = std::min(k0, c0 + tile), n = c1 - c0;
      auto& t = scratch[static_cast<std::size_t>(worker)];
      t.resize(static_cast<std::size_t>((k0 - c0) * n));
      gemm(panel.data() + c0 * kb, k0 - c0, kb, kb, panel.data() + c0 * kb, n, kb, t.data(), n);
      for (std::int64_t i = c0; i < k0; ++i)
        for (std::int64_t j = c0; j < std::min(i + 1, c1); ++j)
          h[i * d + j] -= t[(i - c0) * n + (j - c0)];
    });
    k1 = k0;
  }
  return true;
}

// Per row of a block: the sorted levels of its current group and the midpoints between them.
struct level_table {
  int size = 0;
  std::vector<float> values, thresholds;  // [row][level], [row][level - 1]
  std::vector<std::int32_t> codes;        // [row][level]

  void build(std::int64_t row, const level_set& levels, const params& alpha,
             std::vector<std::pair<double, std::int32_t>>& sorted) {
    sorted.resize(static_cast<std::size_t>(size));
    for (int c = 0; c < size; ++c) sorted[c] = {levels.level(c, alpha), c};
    std::sort(sorted.begin(), sorted.end());
    for (int l = 0; l < size; ++l) {
      values[row * size + l] = static_cast<float>(sorted[l].first);
      codes[row * size + l] = sorted[l].second;
      if (l + 1 < size)
        thresholds[row * (size - 1) + l] =
            static_cast<float>(0.5 * (sorted[l].first + sorted[l + 1].first));
    }
  }
  // Position (in `values`) of the level nearest to v: the number of midpoints below v.
  int nearest(std::int64_t row, float v) const {
    const float* t = thresholds.data() + row * (size - 1);
    return static_cast<int>(std::lower_bound(t, t + size - 1, v) - t);
  }
};

}  // namespace

bool factor_feedback(const Eigen::MatrixXf& x, double damping, int threads, feedback_factor& out) {
  const std::int64_t d = x.cols();
  out.scaled.resize(d, d);
  // Worked on as a row-major array: its lower triangle (H, then R^T) is R column-major.
  float* h = out.scaled.data();
  bool ok = false;
  for (int attempt = 0; attempt < factor_attempts && !ok; ++attempt, damping *= 10) {
    gram_lower(x, h, threads);
    double mean = 0;
    for (std::int64_t i = 0; i < d; ++i) mean += h[i * d + i];
    mean /= static_cast<double>(d);
    const double lambda = damping * (mean > 0 ? mean : 1.0);
    for (std::int64_t i = 0; i < d; ++i) h[i * d + i] += static_cast<float>(lambda);
    ok = factor_lower(h, d, threads);
  }
  if (!ok) return false;
  // Column j of R (row j of the array) times 1/R_jj; zeros below R's diagonal.
  for (std::int64_t j = 0; j < d; ++j) {
    const float inverse = 1.0f / h[j * d + j];
    for (std::int64_t i = 0; i <= j; ++i) h[j * d + i] *= inverse;
    std::fill(h + j * d + j + 1, h + (j + 1) * d, 0.0f);
  }
  return true;
}

void error_feedback_codes(weight_code& code, const row_reader& rows, const feedback_factor& f,
                          const Eigen::VectorXf& importance, const decompose_options& o) {
  const std::int64_t d = code.cols, group_size = code.group_size, groups = code.groups();
  const float* scaled = f.scaled.data();
  const auto gemm = cpu::active_float_gemm_block();
  const std::int64_t blocks = (code.rows + rows_per_block - 1) / rows_per_block;

  struct worker_state {
    group_fitter fitter;
    row_matrix w;
    std::vector<float> current;  // [col][row]: w~, the weights plus the feedback so far
    std::vector<float> error;    // [row][col]: w - q
    std::vector<float> column_error, values, update;
    std::vector<float> group;         // [col][row]: a group's values for its fit
    std::vector<std::int32_t> codes;  // [row][col]: index into level_set::planes
    std::vector<params> alphas;       // [row][group]
    level_table table;
    std::vector<std::pair<double, std::int32_t>> sorted;
    group_result result;
    explicit worker_state(group_fitter f) : fitter(std::move(f)) {}
  };
  std::vector<std::unique_ptr<worker_state>> states(
      static_cast<std::size_t>(worker_count(o.threads, blocks)));
  std::mutex progress_mutex;
  std::int64_t rows_done = 0;

  // The values a group's level set is fitted to, when the walk reaches column c: GPTQ's updated
  // weights w~ (OBS: the best continuous values of the columns not yet quantized, given the
  // errors made so far). With A the columns done and F the rest, that is
  //     w_F + H_FF^-1 H_FA (w - q)_A = w_F + R_FF^-T R_AF^T (w - q)_A,
  // and `current` holds w_F + diag(1/R_FF) R_AF^T (w - q)_A, so for the group g = [c, c + len):
  //     values = w_g + S_gg^-T (current_g - w_g),   S = R diag(1/R_cc) (unit upper),
  // a triangular solve inside the group (S_gg^-T is lower triangular: later columns do not
  // matter). At column c itself both agree; the walk needs no more than `current`.
  auto group_values = [&](std::int64_t c, std::int64_t len, std::int64_t n, auto& s) {
    s.group.resize(static_cast<std::size_t>(len * n));
    for (std::int64_t t = 0; t < len; ++t)
      for (std::int64_t i = 0; i < n; ++i)
        s.group[t * n + i] = s.current[(c + t) * n + i] - s.w(i, c + t);
    float_map y(s.group.data(), len, n, stride(n));
    if (c > 0)
      f.scaled.block(c, c, len, len)
          .transpose()
          .template triangularView<Eigen::UnitLower>()
          .solveInPlace(y);
    for (std::int64_t t = 0; t < len; ++t)
      for (std::int64_t i = 0; i < n; ++i) s.group[t * n + i] += s.w(i, c + t);
  };

  parallel_for(blocks, o.threads, [&](std::int64_t block, int worker) {
    auto& s = states[static_cast<std::size_t>(worker)];
    if (!s) {
      s = std::make_unique<worker_state>(
          group_fitter(o.basis, o.bits, o.method, o.max_iterations, group_size));
      s->table.size = s->fitter.levels().size();
    }
    const std::int64_t first = block * rows_per_block;
    const std::int64_t n = std::min(rows_per_block, code.rows - first);
    const int levels = s->table.size;
    rows(first, n, s->w);
    s->current.resize(static_cast<std::size_t>(d * n));
    for (std::int64_t c = 0; c < d; ++c)
      for (std::int64_t i = 0; i < n; ++i) s->current[c * n + i] = s->w(i, c);
    s->error.assign(static_cast<std::size_t>(n * d), 0.0f);
    s->codes.resize(static_cast<std::size_t>(n * d));
    s->alphas.resize(static_cast<std::size_t>(n * groups));
    s->column_error.resize(static_cast<std::size_t>(n));
    s->table.values.resize(static_cast<std::size_t>(n * levels));
    s->table.codes.resize(static_cast<std::size_t>(n * levels));
    s->table.thresholds.resize(static_cast<std::size_t>(n * (levels - 1)));

    for (std::int64_t b0 = 0; b0 < d;) {
      // A group that starts inside a block ends inside it, so every group is fitted on values
      // that hold the feedback of all the columns before it.
      const std::int64_t b1 = group_size >= walk_block
                                  ? std::min(b0 + walk_block, code.group_end(b0 / group_size))
                                  : std::min(d, b0 + (walk_block / group_size) * group_size);
      for (std::int64_t c = b0; c < b1; ++c) {
        if (c % group_size == 0) {
          // A new group: fit its level set, with the configured method and the diag(H)
          // weights, to the current values of each row.
          const std::int64_t g = c / group_size, len = code.group_end(g) - c;
          group_values(c, len, n, *s);
          s->values.resize(static_cast<std::size_t>(len));
          for (std::int64_t i = 0; i < n; ++i) {
            for (std::int64_t t = 0; t < len; ++t) s->values[t] = s->group[t * n + i];
            s->fitter.fit(s->values.data(), importance.data() + c, len, s->result);
            s->alphas[i * groups + g] = s->result.alpha;
            s->table.build(i, s->fitter.levels(), s->result.alpha, s->sorted);
          }
        }
        // Nearest level of every row's current value; the error is measured from the weight.
        for (std::int64_t i = 0; i < n; ++i) {
          const int l = s->table.nearest(i, s->current[c * n + i]);
          s->codes[i * d + c] = s->table.codes[i * levels + l];
          const float e = s->w(i, c) - s->table.values[i * levels + l];
          s->column_error[i] = e;
          s->error[i * d + c] = e;
        }
        // Feedback into the rest of the block now.
        for (std::int64_t c2 = c + 1; c2 < b1; ++c2) {
          const float r = scaled[c + c2 * d];
          if (r == 0.0f) continue;
          float* target = s->current.data() + c2 * n;
          for (std::int64_t i = 0; i < n; ++i) target[i] += s->column_error[i] * r;
        }
      }
      // Feedback of the whole block into every later column: one GEMM.
      if (b1 < d) {
        // update = scaled[b0:b1, b1:]^T error[:, b0:b1]^T, [col][row] like `current`. (The GEMM
        // block computes a * b^T in row-major; Eigen packs its b cheaply only when b is small.)
        const std::int64_t rest = d - b1;
        s->update.resize(static_cast<std::size_t>(rest * n));
        gemm(scaled + b0 + b1 * d, rest, b1 - b0, d, s->error.data() + b0, n, d, s->update.data(),
             n);
        float* target = s->current.data() + b1 * n;
        for (std::int64_t t = 0; t < rest * n; ++t) target[t] += s->update[t];
      }
      b0 = b1;
    }

    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t g = 0; g < groups; ++g) {
        const std::int64_t begin = code.group_begin(g), end = code.group_end(g);
        s->result.alpha = s->alphas[i * groups + g];
        s->result.codes.assign(s->codes.begin() + i * d + begin, s->codes.begin() + i * d + end);
        write_group(code, first + i, g, s->result);
        normalize_group(code, first + i, g);
      }
    if (o.progress) {
      std::lock_guard<std::mutex> lock(progress_mutex);
      rows_done += n;
      o.progress(rows_done, code.rows);
    }
  });
}

}  // namespace qsl::detail
