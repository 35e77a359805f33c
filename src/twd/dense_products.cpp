// The large dense products of the factorization (X^T X, H W^T, H M, M^T H W^T, ...), in double.
// The library is built for the baseline ISA and without OpenMP, so Eigen runs each product on
// one thread; we cut the output into blocks and hand them to detail::parallel_for. The blocks
// depend only on the shapes, never on the thread count, so every element is computed by the
// same Eigen call in the same order and the factorization is bit-identical for any `threads`.
#include <Eigen/Core>
#include <algorithm>

#include "parallel.hpp"
#include "twd/factorization.hpp"

namespace qsl::detail::twd {
namespace {

constexpr Eigen::Index column_block = 64;  // output columns per task (wide outputs)
constexpr Eigen::Index row_block = 256;    // output rows per task (narrow outputs)
constexpr Eigen::Index gram_block = 128;   // columns of X^T X per task
constexpr Eigen::Index gram_rows = 1024;   // rows of X cast to double at a time

Eigen::Index blocks(Eigen::Index extent, Eigen::Index block) {
  return (extent + block - 1) / block;
}

}  // namespace

void product(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, Eigen::MatrixXd& out,
             int threads) {
  out.resize(a.rows(), b.cols());
  if (a.rows() == 0 || b.cols() == 0) return;
  if (b.cols() >= 2 * column_block) {
    parallel_for(blocks(b.cols(), column_block), threads, [&](std::int64_t i, int) {
      const Eigen::Index j = i * column_block, len = std::min(column_block, b.cols() - j);
      out.middleCols(j, len).noalias() = a * b.middleCols(j, len);
    });
  } else {
    parallel_for(blocks(a.rows(), row_block), threads, [&](std::int64_t i, int) {
      const Eigen::Index r = i * row_block, len = std::min(row_block, a.rows() - r);
      out.middleRows(r, len).noalias() = a.middleRows(r, len) * b;
    });
  }
}

void product_tn(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, Eigen::MatrixXd& out,
                int threads) {
  out.resize(a.cols(), b.cols());
  if (a.cols() == 0 || b.cols() == 0) return;
  if (b.cols() >= 2 * column_block) {
    parallel_for(blocks(b.cols(), column_block), threads, [&](std::int64_t i, int) {
      const Eigen::Index j = i * column_block, len = std::min(column_block, b.cols() - j);
      out.middleCols(j, len).noalias() = a.transpose() * b.middleCols(j, len);
    });
  } else {
    parallel_for(blocks(a.cols(), row_block), threads, [&](std::int64_t i, int) {
      const Eigen::Index r = i * row_block, len = std::min(row_block, a.cols() - r);
      out.middleRows(r, len).noalias() = a.middleCols(r, len).transpose() * b;
    });
  }
}

Eigen::MatrixXd gram(const Eigen::MatrixXf& x, int threads) {
  const Eigen::Index d = x.cols();
  Eigen::MatrixXd h = Eigen::MatrixXd::Zero(d, d);
  Eigen::MatrixXd chunk;
  // Only the lower triangle (by column blocks, diagonal blocks included): half the work of a
  // full GEMM. Block j is the (D - j0) x width panel below and on the diagonal.
  for (Eigen::Index r = 0; r < x.rows(); r += gram_rows) {
    const Eigen::Index len = std::min(gram_rows, x.rows() - r);
    chunk = x.middleRows(r, len).cast<double>();
    parallel_for(blocks(d, gram_block), threads, [&](std::int64_t i, int) {
      const Eigen::Index j = i * gram_block, width = std::min(gram_block, d - j);
      h.block(j, j, d - j, width).noalias() +=
          chunk.rightCols(d - j).transpose() * chunk.middleCols(j, width);
    });
  }
  for (Eigen::Index j = 0; j < d; ++j)
    for (Eigen::Index i = 0; i < j; ++i) h(i, j) = h(j, i);
  return h;
}

}  // namespace qsl::detail::twd
