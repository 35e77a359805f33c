#include "decompose/calibrated_refit.hpp"

#include <Eigen/Dense>
#include <memory>
#include <vector>

#include "decompose/code_writer.hpp"
#include "parallel.hpp"

namespace qsl::detail {
namespace {

constexpr std::int64_t rows_per_block = 16;
constexpr double ridge = 1e-6;  // relative to the mean diagonal: keeps unused planes solvable

// A matrix E with E^T E = X^T X and min(M, D) rows: X itself, or the Cholesky factor of X^T X
// when X has more rows than columns.
Eigen::MatrixXf effective_inputs(const Eigen::MatrixXf& x) {
  if (x.rows() <= x.cols()) return x;
  Eigen::MatrixXd h = x.cast<double>().transpose() * x.cast<double>();
  h.diagonal().array() += ridge * h.diagonal().mean() + 1e-30;
  Eigen::LLT<Eigen::MatrixXd> llt(h);
  return Eigen::MatrixXd(llt.matrixU()).cast<float>();
}

}  // namespace

Eigen::VectorXf column_importance(const Eigen::MatrixXf& x) {
  Eigen::VectorXf d = x.colwise().squaredNorm().transpose();
  const float mean = d.mean();
  // Columns no calibration input uses still get a little weight, so their codes stay sane.
  d.array() += static_cast<float>(1e-4) * (mean > 0 ? mean : 1.0f);
  return d;
}

void refit_coefficients(weight_code& code, const row_reader& rows, const Eigen::MatrixXf& x,
                        int threads) {
  const Eigen::MatrixXf e = effective_inputs(x);
  const std::int64_t k = code.bits, groups = code.groups();
  const std::int64_t p = groups * k;
  const std::int64_t blocks = (code.rows + rows_per_block - 1) / rows_per_block;

  struct scratch {
    row_matrix w;
    Eigen::MatrixXf values, projected, z;
  };
  std::vector<std::unique_ptr<scratch>> states(
      static_cast<std::size_t>(worker_count(threads, blocks)));

  parallel_for(blocks, threads, [&](std::int64_t block, int worker) {
    auto& s = states[static_cast<std::size_t>(worker)];
    if (!s) s = std::make_unique<scratch>();
    const std::int64_t first = block * rows_per_block;
    const std::int64_t count = std::min(rows_per_block, code.rows - first);
    rows(first, count, s->w);
    // z_n = [E[:, group g] * plane values (n, g, j)] for every (g, j): the inputs as the
    // coefficients see them. One GEMM per group covers the whole block of rows.
    std::vector<Eigen::MatrixXf> z(static_cast<std::size_t>(count),
                                   Eigen::MatrixXf(e.rows(), p));
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::int64_t b = code.group_begin(g), len = code.group_end(g) - b;
      s->values.setZero(len, count * k);
      for (std::int64_t i = 0; i < count; ++i)
        for (std::int64_t j = 0; j < k; ++j)
          for (std::int64_t c = 0; c < len; ++c)
            s->values(c, i * k + j) = static_cast<float>(code.value(first + i, int(j), b + c));
      s->projected.noalias() = e.middleCols(b, len) * s->values;
      for (std::int64_t i = 0; i < count; ++i)
        z[i].middleCols(g * k, k) = s->projected.middleCols(i * k, k);
    }
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t n = first + i;
      const Eigen::VectorXf target = e * s->w.row(i).transpose();
      Eigen::MatrixXd a = (z[i].transpose() * z[i]).cast<double>();
      const Eigen::VectorXd rhs = (z[i].transpose() * target).cast<double>();
      a.diagonal().array() += ridge * a.diagonal().mean() + 1e-30;
      const Eigen::VectorXd alpha = a.ldlt().solve(rhs);
      if (!alpha.allFinite()) continue;  // degenerate inputs: keep the weight-error fit
      for (std::int64_t g = 0; g < groups; ++g) {
        for (std::int64_t j = 0; j < k; ++j)
          code.coefficient(n, g, int(j)) = static_cast<float>(alpha[g * k + j]);
        normalize_group(code, n, g);
      }
    }
  });
}

}  // namespace qsl::detail
