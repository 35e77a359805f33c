// Phase 1 of the factorization: greedy basis vectors against the residual.
//
// With k vectors done, the residual is R = W^T - M C (D x N). We never form it: every product
// the search needs goes through W^T, M and C,
//     R^T v = W v - C^T (M^T v)      (N values, O(D N + K (D + N)))
//     R u   = W^T u - M (C u)        (D values, the same cost),
// so a vector costs O(iterations * D N) instead of the O(K D N) of rebuilding R.
//
// One new vector m (D ternary values) and its row c (N reals) minimize ||R - m c^T||_F^2:
//  1. Start: the residual column of largest norm, sharpened by a few power iterations
//     u <- R R^T u towards R's leading left singular vector; m is the best ternary vector
//     along u: sign(u) on the j largest |u_d|, j maximizing (sum of those |u_d|)^2 / j (for a
//     fixed support that is the error reduction (m . u)^2 / (m . m)).
//  2. Alternate (max_iterations rounds, until m stops changing):
//       c   = R^T m / (m^T m)                              (least squares for fixed m)
//       m_d = argmin over {-1, 0, +1} of ||R_d - m_d c||^2, R_d the d-th row of R
//           = sign(p_d) if |p_d| > ||c||^2 / 2 else 0,    p = R c
//     (||R_d - t c||^2 = ||R_d||^2 - 2 t p_d + t^2 ||c||^2 for t in {-1, 0, 1}). Both steps
//     can only lower the error, so the pair converges. m cannot become all zero while c != 0:
//     sum_d m_d p_d = m^T R c = ||c||^2 (m^T m) for the m that gave c, so some |p_d| on the
//     support is at least ||c||^2 > ||c||^2 / 2.
//  3. Guard: if R^T m = 0 for the start (m orthogonal to every residual column), restart from
//     the largest residual column alone; if that is zero too the residual is zero and the
//     vector stays all zero (C then gives it coefficient 0).
// After each vector, all of C is refitted: C = (M^T M)^-1 M^T W^T, with M^T M and M^T W^T
// grown by one row per vector (O(D K + D N)) and an LDLT of the K x K Gram matrix (ridge: two
// vectors can coincide). The refit is the least-squares optimum over the first k + 1 vectors,
// and those include the first k, so the error never rises with k.
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "parallel.hpp"
#include "twd/factorization.hpp"

namespace qsl::detail::twd {
namespace {

constexpr int power_iterations = 2;
constexpr Eigen::Index gemv_block = 512;  // rows or columns of W^T per task

Eigen::Index blocks(Eigen::Index extent) { return (extent + gemv_block - 1) / gemv_block; }

// The best ternary vector along u: sign(u) on the support that maximizes (sum |u|)^2 / size.
Eigen::VectorXd ternary_along(const Eigen::VectorXd& u) {
  const Eigen::Index d = u.size();
  std::vector<Eigen::Index> order(static_cast<std::size_t>(d));
  std::iota(order.begin(), order.end(), Eigen::Index{0});
  std::sort(order.begin(), order.end(), [&u](Eigen::Index a, Eigen::Index b) {
    const double ua = std::abs(u[a]), ub = std::abs(u[b]);
    return ua != ub ? ua > ub : a < b;  // a total order: the result does not depend on sort
  });
  double sum = 0, best = 0;
  Eigen::Index support = 0;
  for (Eigen::Index j = 0; j < d; ++j) {
    sum += std::abs(u[order[static_cast<std::size_t>(j)]]);
    const double gain = sum * sum / static_cast<double>(j + 1);
    if (gain > best) best = gain, support = j + 1;
  }
  Eigen::VectorXd m = Eigen::VectorXd::Zero(d);
  for (Eigen::Index j = 0; j < support; ++j) {
    const Eigen::Index i = order[static_cast<std::size_t>(j)];
    m[i] = u[i] > 0 ? 1.0 : -1.0;
  }
  return m;
}

// The residual R = W^T - M C of the first k vectors, as an operator.
class residual {
 public:
  residual(const Eigen::MatrixXd& wt, const factors& f, Eigen::Index k, int threads)
      : wt_(wt), m_(f.m.leftCols(k)), c_(f.c.topRows(k)), threads_(threads) {}

  // R^T v (N values).
  Eigen::VectorXd transpose_times(const Eigen::VectorXd& v) const {
    Eigen::VectorXd out(wt_.cols());
    parallel_for(blocks(wt_.cols()), threads_, [&](std::int64_t i, int) {
      const Eigen::Index j = i * gemv_block, len = std::min(gemv_block, wt_.cols() - j);
      out.segment(j, len).noalias() = wt_.middleCols(j, len).transpose() * v;
    });
    if (m_.cols() > 0) out.noalias() -= c_.transpose() * (m_.transpose() * v);
    return out;
  }
  // R u (D values).
  Eigen::VectorXd times(const Eigen::VectorXd& u) const {
    Eigen::VectorXd out(wt_.rows());
    parallel_for(blocks(wt_.rows()), threads_, [&](std::int64_t i, int) {
      const Eigen::Index r = i * gemv_block, len = std::min(gemv_block, wt_.rows() - r);
      out.segment(r, len).noalias() = wt_.middleRows(r, len) * u;
    });
    if (m_.cols() > 0) out.noalias() -= m_ * (c_ * u);
    return out;
  }
  // Column n of R.
  Eigen::VectorXd column(Eigen::Index n) const {
    Eigen::VectorXd out = wt_.col(n);
    if (m_.cols() > 0) out.noalias() -= m_ * c_.col(n);
    return out;
  }

 private:
  const Eigen::MatrixXd& wt_;
  Eigen::Ref<const Eigen::MatrixXd> m_;
  Eigen::Ref<const Eigen::MatrixXd> c_;
  int threads_;
};

// Alternates c and m from the start m (step 2 above). Returns false when R^T m = 0.
bool alternate(const residual& r, int max_iterations, Eigen::VectorXd& m) {
  if (m.squaredNorm() == 0) return false;
  Eigen::VectorXd t = r.transpose_times(m);
  if (t.squaredNorm() == 0) return false;
  for (int it = 0; it < max_iterations; ++it) {
    if (it > 0) t = r.transpose_times(m);
    const Eigen::VectorXd c = t / m.squaredNorm();
    const double cc = c.squaredNorm();
    if (cc == 0) break;
    const Eigen::VectorXd p = r.times(c);
    Eigen::VectorXd next(m.size());
    for (Eigen::Index d = 0; d < m.size(); ++d)
      next[d] = std::abs(p[d]) > cc / 2 ? (p[d] > 0 ? 1.0 : -1.0) : 0.0;
    if (next == m || next.squaredNorm() == 0) break;  // converged (the latter: rounding only)
    m = next;
  }
  return true;
}

}  // namespace

Eigen::MatrixXd solve_mixing(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  const double mean = a.rows() > 0 ? a.diagonal().mean() : 0;
  Eigen::MatrixXd regular = a;
  regular.diagonal().array() += mean > 0 ? 1e-9 * mean : 1.0;
  return regular.ldlt().solve(b);
}

factors greedy(const Eigen::MatrixXd& wt, int basis_vectors, int max_iterations, int threads,
               const step_callback& step_done) {
  const Eigen::Index d = wt.rows(), n = wt.cols(), k_total = basis_vectors;
  factors f{Eigen::MatrixXd::Zero(d, k_total), Eigen::MatrixXd::Zero(k_total, n)};
  Eigen::MatrixXd gram = Eigen::MatrixXd::Zero(k_total, k_total);  // M^T M
  Eigen::MatrixXd mtw = Eigen::MatrixXd::Zero(k_total, n);         // M^T W^T
  const Eigen::VectorXd column_norms = wt.colwise().squaredNorm().transpose();

  for (Eigen::Index k = 0; k < k_total; ++k) {
    const residual r(wt, f, k, threads);
    // ||R_n||^2 = ||w_n||^2 - 2 c_n . (M^T w_n) + c_n^T (M^T M) c_n: the largest column
    // without forming R.
    Eigen::VectorXd norms = column_norms;
    if (k > 0) {
      const auto c = f.c.topRows(k);
      const Eigen::MatrixXd gc = gram.topLeftCorner(k, k) * c;
      norms -=
          (2 * c.cwiseProduct(mtw.topRows(k)) - c.cwiseProduct(gc)).colwise().sum().transpose();
    }
    Eigen::Index largest = 0;
    norms.maxCoeff(&largest);
    const Eigen::VectorXd start = r.column(largest);

    Eigen::VectorXd u = start;
    for (int i = 0; i < power_iterations && u.squaredNorm() > 0; ++i) {
      u = r.times(r.transpose_times(u));
      const double norm = u.norm();
      if (norm > 0) u /= norm;
    }
    Eigen::VectorXd m = ternary_along(u);
    if (!alternate(r, max_iterations, m)) {  // the guard of step 3
      m = ternary_along(start);
      if (!alternate(r, max_iterations, m)) m.setZero();
    }

    f.m.col(k) = m;
    gram.block(k, 0, 1, k + 1) = (f.m.leftCols(k + 1).transpose() * m).transpose();
    gram.block(0, k, k + 1, 1) = gram.block(k, 0, 1, k + 1).transpose();
    Eigen::VectorXd row(n);
    parallel_for(blocks(n), threads, [&](std::int64_t i, int) {
      const Eigen::Index j = i * gemv_block, len = std::min(gemv_block, n - j);
      row.segment(j, len).noalias() = wt.middleCols(j, len).transpose() * m;
    });
    mtw.row(k) = row.transpose();
    f.c.topRows(k + 1) = solve_mixing(gram.topLeftCorner(k + 1, k + 1), mtw.topRows(k + 1));
    if (step_done) step_done(k + 1);
  }
  return f;
}

}  // namespace qsl::detail::twd
