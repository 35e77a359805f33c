#pragma once
// qsl::factorize_ternary: the shared-basis ternary weight decomposition (TWD) of the original
// method (Ambai et al., "Ternary Weight Decomposition and Binary Activation Encoding"):
//
//     W (N x D) ~ C^T M^T,   M in {-1, 0, +1}^(D x K) shared by all N outputs, C real K x N,
//     W[n, d] ~ sum_k C[k, n] * M[d, k].
//
// Online, y = C^T (M^T x): K ternary inner products (popcounts when x is encoded as bit planes,
// additions otherwise) and then one small dense K x N product. M is stored as a weight_code of
// K rows (ternary, one plane, one group per row, coefficient 1), so every quantized_dense kernel
// runs the first step, and the code's offline offsets are M^T 1. The layer is qsl::twd_dense
// (qsl/twd_dense.hpp); the algorithm is described in docs/design.md and src/twd/.

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "qsl/config.hpp"
#include "qsl/weight_code.hpp"

namespace qsl {

/// Most shared basis vectors a factorization may have (K).
inline constexpr int max_twd_basis_vectors = 65535;

struct twd_options {
  /// K: shared basis vectors, 1..min(N * D, max_twd_basis_vectors). 0: the largest K whose
  /// stored size stays within bits_per_weight (twd_basis_vectors_for).
  int basis_vectors = 0;
  /// Target stored bits per weight (M, C and M^T 1 included); used when basis_vectors is 0.
  double bits_per_weight = 0;
  /// Alternating rounds (c by least squares, then every ternary element of the new basis
  /// vector) when a basis vector is added against the residual; they stop early once the
  /// vector no longer changes. 0 keeps the starting vector.
  int max_iterations = 10;
  /// Rounds over the whole factorization after the last vector is added (every element of M
  /// given the others, then C by least squares) against the weight error, or the output error
  /// when calibration inputs are given. A round that does not lower the error ends the
  /// refinement and is not kept. 0: the greedy result.
  int refine_iterations = 10;
  /// Calibration inputs X (M x D). When not empty the refinement minimizes the output error
  /// ||(W - W_hat) X^T||_F (with a small damping, see docs/design.md) instead of
  /// ||W - W_hat||_F. X may also be any matrix with the same X^T X, e.g. its Cholesky factor.
  /// Empty (0 x 0) means none; a matrix with columns but no rows is an error.
  Eigen::MatrixXf calibration;
  /// Worker threads (0: all hardware threads; at most max_threads). Results do not depend on it.
  int threads = 0;
  /// Called on the calling thread with (basis vectors done, K), then
  /// (K + rounds done, K + refine_iterations); the last call is always (total, total). An
  /// exception it throws stops the work and reaches the caller.
  std::function<void(std::int64_t, std::int64_t)> progress;
};

/// A TWD-factorized weight matrix.
struct twd_code {
  std::int64_t rows = 0;  ///< N: outputs
  std::int64_t cols = 0;  ///< D: inputs
  /// M^T: K rows of D ternary values; one plane, one group per row, coefficient 1.
  weight_code basis;
  /// C: K x N, row-major: mixing[k * rows + n].
  std::vector<float> mixing;

  std::int64_t basis_vectors() const { return basis.rows; }
  float mix(std::int64_t k, std::int64_t n) const {
    return mixing[static_cast<std::size_t>(k * rows + n)];
  }
  /// Bytes of everything stored: sign planes, masks, the basis code's coefficients and
  /// offsets, and C.
  std::size_t bytes() const { return basis.bytes() + mixing.size() * sizeof(float); }
};

/// The K a size target allows for an N x D matrix: the largest K whose twd_code::bytes() is at
/// most bits_per_weight * N * D / 8, but never more than min(D, max_twd_basis_vectors) (K = D
/// already represents any W exactly, with M = I). Throws qsl::error for a bad shape, a target
/// that is not finite and positive, or one below the size of a single basis vector.
QSL_API int twd_basis_vectors_for(std::int64_t rows, std::int64_t cols, double bits_per_weight);

/// Factorizes w (N x D, outputs x inputs). Throws qsl::error for NaN/Inf, empty shapes, K out
/// of 1..min(N * D, max_twd_basis_vectors), negative iteration or thread counts, and
/// calibration inputs of the wrong width, with no rows, or with NaN/Inf.
QSL_API twd_code factorize_ternary(const Eigen::Ref<const Eigen::MatrixXf>& w,
                                   const twd_options& options = {});

/// Checks every invariant (shapes, basis code, coefficients 1, offsets M^T 1, finite C).
/// Throws qsl::error prefixed by `what`.
QSL_API void validate(const twd_code& code, const char* what = "twd code");

/// Writes the dense approximation W_hat = C^T M^T (N x D), summed in double and rounded once,
/// into `out`, which must be N x D.
QSL_API void reconstruct(const twd_code& code, Eigen::Ref<Eigen::MatrixXf> out);

/// The same, in a new matrix (inline: allocated and freed by the caller's Eigen).
inline Eigen::MatrixXf reconstruct(const twd_code& code) {
  Eigen::MatrixXf out(code.rows, code.cols);
  reconstruct(code, out);
  return out;
}

/// ||W - W_hat||_F^2 / ||W||_F^2 (the plain squared error when W = 0).
QSL_API double normalized_error(const Eigen::Ref<const Eigen::MatrixXf>& w, const twd_code& code);

/// ||(W - W_hat) X^T||_F^2 / ||W X^T||_F^2 on inputs x (M x D).
QSL_API double normalized_output_error(const Eigen::Ref<const Eigen::MatrixXf>& w,
                                       const twd_code& code,
                                       const Eigen::Ref<const Eigen::MatrixXf>& x);

}  // namespace qsl
