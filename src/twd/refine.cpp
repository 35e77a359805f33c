// Phase 2 of the factorization: refinement of M and C together against
//
//     f(M, C) = tr(E^T H E),   E = M C - W^T (D x N),
//
// with H = X^T X + 1e-2 mean(diag(X^T X)) I for calibration inputs X (the output error
// ||E^T X^T||_F^2 plus a GPTQ-style damping that keeps H well conditioned and the weights
// close where the inputs say little), or H = I (the weight error) without.
//
// A round is (a) one sweep of exact coordinate descent over every element of M, then (b) C by
// least squares. Neither step can raise f, and a round that does not lower f is undone and
// ends the refinement, so the result is never worse than the greedy start.
//
// (a) Changing M[d, k] by delta changes E by delta e_d c_k^T and f by
//         delta_f = 2 delta g_d + delta^2 H_dd ||c_k||^2,   g = H E c_k (D values),
//     so each element takes the best of its three values given all the others. We keep
//     G = H E C^T (D x K; column k is g for basis vector k), computed once per sweep as
//     (H M) (C C^T) - (H W^T) C^T from HM = H M and P = H W^T. While column k is swept, a
//     change at row d adds delta H[:, d] to hd (D values) and so ||c_k||^2 delta H[:, d] to g:
//     the current g_d is G[d, k] + ||c_k||^2 hd[d], O(D) per change. After column k,
//     E C^T has changed by (sum of delta e_d) c_k^T C^T, so G += hd (C C^T)[k, :] and
//     HM[:, k] += hd. A sweep costs O(K D^2) for the changes at worst plus O(D K (K + N)) for
//     G, instead of the O(K D (D + N)) of recomputing g per column (H = I: O(1) per change).
// (b) C = (M^T H M)^-1 M^T H W^T = (M^T HM)^-1 M^T P, a K x K system (solve_mixing's ridge).
//
// f is evaluated without forming E: f = tr(C^T A C) - 2 tr(C^T B) + tr(W H W^T), with
// A = M^T HM, B = M^T P, and the constant sum(W^T .* P) computed once.
#include <Eigen/Dense>
#include <cmath>

#include "twd/factorization.hpp"

namespace qsl::detail::twd {
namespace {

constexpr double damping = 1e-2;  // relative to the mean diagonal of X^T X

// (a): one coordinate-descent sweep over M. Returns the number of elements changed.
std::int64_t sweep(const objective& obj, const Eigen::MatrixXd& c, Eigen::MatrixXd& m,
                   Eigen::MatrixXd& hm, int threads) {
  const Eigen::Index d_count = m.rows(), k_count = m.cols();
  const Eigen::MatrixXd s = c * c.transpose();  // C C^T (K x K)
  Eigen::MatrixXd g, pc;
  product(hm, s, g, threads);
  const Eigen::MatrixXd ct = c.transpose();
  product(obj.p, ct, pc, threads);
  g -= pc;  // G = H E C^T
  Eigen::VectorXd hd(d_count);
  std::int64_t changes = 0;
  for (Eigen::Index k = 0; k < k_count; ++k) {
    const double ckk = s(k, k);
    if (ckk <= 0) continue;  // a zero row of C: M[:, k] does not change f
    hd.setZero();
    bool changed = false;
    for (Eigen::Index d = 0; d < d_count; ++d) {
      const double gd = g(d, k) + ckk * hd[d];
      const double curvature = (obj.identity ? 1.0 : obj.h(d, d)) * ckk;
      const double current = m(d, k);
      double best_delta = 0, best_change = 0;
      for (double value = -1; value <= 1; value += 1) {
        const double delta = value - current;
        if (delta == 0) continue;
        const double change = 2 * delta * gd + delta * delta * curvature;
        if (change < best_change) best_change = change, best_delta = delta;
      }
      if (best_delta == 0) continue;
      m(d, k) = current + best_delta;
      if (obj.identity)
        hd[d] += best_delta;
      else
        hd.noalias() += best_delta * obj.h.col(d);
      changed = true;
      ++changes;
    }
    if (!changed) continue;
    g.noalias() += hd * s.row(k);
    hm.col(k) += hd;
  }
  return changes;
}

}  // namespace

objective make_objective(const Eigen::MatrixXd& wt, const Eigen::MatrixXf& x, int threads) {
  objective obj;
  if (x.size() == 0) {
    obj.p = wt;
    obj.constant = wt.squaredNorm();
    return obj;
  }
  obj.identity = false;
  obj.h = gram(x, threads);
  const double mean = obj.h.diagonal().mean();
  obj.h.diagonal().array() += mean > 0 ? damping * mean : 1.0;  // X = 0: the weight error
  product(obj.h, wt, obj.p, threads);
  obj.constant = wt.cwiseProduct(obj.p).sum();
  return obj;
}

double evaluate(const objective& obj, const Eigen::MatrixXd& a, const Eigen::MatrixXd& b,
                const Eigen::MatrixXd& c) {
  return (a * c).cwiseProduct(c).sum() - 2 * b.cwiseProduct(c).sum() + obj.constant;
}

int refine(const objective& obj, int rounds, int threads, const step_callback& round_done,
           factors& f) {
  Eigen::MatrixXd hm;
  if (obj.identity)
    hm = f.m;
  else
    product(obj.h, f.m, hm, threads);
  Eigen::MatrixXd a, b;
  product_tn(f.m, hm, a, threads);
  product_tn(f.m, obj.p, b, threads);
  double best = evaluate(obj, a, b, f.c);
  factors kept = f;
  int done = 0;
  while (done < rounds) {
    sweep(obj, f.c, f.m, hm, threads);
    product_tn(f.m, hm, a, threads);
    product_tn(f.m, obj.p, b, threads);
    f.c = solve_mixing(a, b);
    const double value = evaluate(obj, a, b, f.c);
    if (!(value < best) || !f.c.allFinite()) {  // no better: undo the round and stop
      f = kept;
      break;
    }
    ++done;
    best = value;
    kept = f;
    if (round_done) round_done(done);
  }
  return done;
}

}  // namespace qsl::detail::twd
