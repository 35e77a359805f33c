#pragma once
// The two phases of factorize_ternary, in double precision, on W^T (D x N):
//
//     W^T ~ M C,   M: D x K with values in {-1, 0, +1} (held as doubles), C: K x N.
//
// greedy.cpp adds one basis vector at a time against the residual; refine.cpp improves the
// whole factorization against tr(E^T H E), E = M C - W^T. dense_products.cpp holds the large
// products, split over threads in fixed blocks so that results do not depend on the thread
// count.

#include <Eigen/Core>
#include <cstdint>
#include <functional>

namespace qsl::detail::twd {

/// Called with the number of steps done (a basis vector, or a refinement round).
using step_callback = std::function<void(std::int64_t done)>;

struct factors {
  Eigen::MatrixXd m;  ///< D x K, ternary values
  Eigen::MatrixXd c;  ///< K x N
};

/// C = (A + ridge I)^-1 B by LDLT: A = M^T H M (K x K, symmetric), B = M^T H W^T (K x N). The
/// ridge is 1e-9 of A's mean diagonal (1 when that is 0): A is singular when two basis vectors
/// coincide or one is all zero.
Eigen::MatrixXd solve_mixing(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b);

/// Phase 1: K greedy basis vectors of wt (D x N), C refitted by least squares after each.
factors greedy(const Eigen::MatrixXd& wt, int basis_vectors, int max_iterations, int threads,
               const step_callback& step_done);

/// The quadratic form f(M, C) = tr(E^T H E), E = M C - W^T, of the refinement.
struct objective {
  bool identity = true;  ///< H = I (no calibration): h is empty
  Eigen::MatrixXd h;     ///< D x D, symmetric positive definite (damped X^T X)
  Eigen::MatrixXd p;     ///< H W^T (D x N)
  double constant = 0;   ///< tr(W H W^T) = sum of W^T .* P
};

/// H = X^T X + 1e-2 mean(diag) I from calibration inputs x (M x D; H = I when x is empty),
/// P and the constant.
objective make_objective(const Eigen::MatrixXd& wt, const Eigen::MatrixXf& x, int threads);

/// f(M, C) = tr(C^T A C) - 2 tr(C^T B) + tr(W H W^T), A = M^T H M, B = M^T H W^T.
double evaluate(const objective& obj, const Eigen::MatrixXd& a, const Eigen::MatrixXd& b,
                const Eigen::MatrixXd& c);

/// Phase 2: up to `rounds` rounds of exact coordinate descent over M and least squares for C;
/// never returns factors with a larger f than it was given. Returns the rounds kept (a round
/// that does not lower f is undone and ends the refinement).
int refine(const objective& obj, int rounds, int threads, const step_callback& round_done,
           factors& f);

// Products over threads. Output columns are cut into fixed blocks (not per thread), so every
// element is computed the same way whatever the thread count.

/// out = a * b.
void product(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, Eigen::MatrixXd& out, int threads);
/// out = a^T b.
void product_tn(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b, Eigen::MatrixXd& out,
                int threads);
/// X^T X (D x D) for float inputs x (M x D), accumulated in double by blocks of rows.
Eigen::MatrixXd gram(const Eigen::MatrixXf& x, int threads);

}  // namespace qsl::detail::twd
