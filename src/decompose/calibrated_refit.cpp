#include "decompose/calibrated_refit.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <memory>
#include <vector>

#include "cpu/float_gemm.hpp"
#include "decompose/code_writer.hpp"
#include "parallel.hpp"

namespace qsl::detail {
namespace {

constexpr std::int64_t rows_per_block = 32;  // rows per GEMM: E is packed once per block
constexpr double ridge = 1e-6;  // relative to the mean diagonal: keeps unused planes solvable

// A row-major matrix E with E^T E = X^T X and min(M, D) rows: X itself, or the Cholesky factor
// of X^T X when X has more rows than columns.
row_matrix effective_inputs(const Eigen::MatrixXf& x) {
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
                        int threads, std::vector<double>* row_errors) {
  // E row-major, so that every product below is one call of the CPU's best fp32 GEMM block
  // (c = a * b^T, both row-major): the library itself is built for the baseline ISA.
  const row_matrix e = effective_inputs(x);
  const auto gemm = cpu::active_float_gemm_block();
  const std::int64_t m = e.rows(), d = code.cols, k = code.bits, groups = code.groups();
  const std::int64_t p = groups * k;
  const std::int64_t blocks = (code.rows + rows_per_block - 1) / rows_per_block;
  if (row_errors != nullptr) row_errors->assign(static_cast<std::size_t>(code.rows), 0.0);

  struct scratch {
    row_matrix w;
    std::vector<float> targets, values, projected, z, gram;
    Eigen::VectorXf target;
  };
  std::vector<std::unique_ptr<scratch>> states(
      static_cast<std::size_t>(worker_count(threads, blocks)));

  parallel_for(blocks, threads, [&](std::int64_t block, int worker) {
    auto& s = states[static_cast<std::size_t>(worker)];
    if (!s) s = std::make_unique<scratch>();
    const std::int64_t first = block * rows_per_block;
    const std::int64_t count = std::min(rows_per_block, code.rows - first);
    rows(first, count, s->w);
    // targets = E W_block^T (M x count): column i holds the outputs row i must reproduce. (The
    // GEMM block computes a * b^T; the large operand goes first, Eigen packs b transposed.)
    s->targets.resize(static_cast<std::size_t>(m * count));
    gemm(e.data(), m, d, d, s->w.data(), count, d, s->targets.data(), count);
    // z_i = [E[:, group g] * plane values (i, g, j)] for every (g, j): the inputs as the
    // coefficients see them, stored z[i][g * k + j][0..M). One GEMM per group covers the block.
    s->z.resize(static_cast<std::size_t>(count * p * m));
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::int64_t b = code.group_begin(g), len = code.group_end(g) - b;
      s->values.resize(static_cast<std::size_t>(count * k * len));
      for (std::int64_t i = 0; i < count; ++i)
        for (std::int64_t j = 0; j < k; ++j)
          for (std::int64_t c = 0; c < len; ++c)
            s->values[(i * k + j) * len + c] =
                static_cast<float>(code.value(first + i, int(j), b + c));
      s->projected.resize(static_cast<std::size_t>(m * count * k));  // [m][i * k + j]
      gemm(e.data() + b, m, len, d, s->values.data(), count * k, len, s->projected.data(),
           count * k);
      for (std::int64_t r = 0; r < m; ++r)  // rows of `projected` in order: count * k streams out
        for (std::int64_t i = 0; i < count; ++i)
          for (std::int64_t j = 0; j < k; ++j)
            s->z[(i * p + g * k + j) * m + r] = s->projected[(r * count + i) * k + j];
    }
    s->gram.resize(static_cast<std::size_t>(p * p));
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t n = first + i;
      const float* zi = s->z.data() + i * p * m;
      gemm(zi, p, m, m, zi, p, m, s->gram.data(), p);
      const Eigen::Map<const Eigen::MatrixXf> z(zi, m, p);
      s->target = Eigen::Map<const Eigen::VectorXf, 0, Eigen::InnerStride<>>(
          s->targets.data() + i, m, Eigen::InnerStride<>(count));
      const Eigen::VectorXf& target = s->target;
      Eigen::MatrixXd a = Eigen::Map<const Eigen::MatrixXf>(s->gram.data(), p, p).cast<double>();
      const Eigen::VectorXd rhs = (z.transpose() * target).cast<double>();
      a.diagonal().array() += ridge * a.diagonal().mean() + 1e-30;
      const Eigen::VectorXd alpha = a.ldlt().solve(rhs);
      // Degenerate inputs (a non-finite solution) keep the weight-error fit.
      const bool keep = !alpha.allFinite();
      Eigen::VectorXf used(p);
      for (std::int64_t g = 0; g < groups; ++g)
        for (std::int64_t j = 0; j < k; ++j) {
          float& coefficient = code.coefficient(n, g, int(j));
          if (!keep) coefficient = static_cast<float>(alpha[g * k + j]);
          used[g * k + j] = coefficient;
        }
      if (row_errors != nullptr)
        (*row_errors)[static_cast<std::size_t>(n)] =
            (target - z * used).cast<double>().squaredNorm();
      if (!keep)
        for (std::int64_t g = 0; g < groups; ++g) normalize_group(code, n, g);
    }
  });
}

}  // namespace qsl::detail
