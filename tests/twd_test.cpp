// The shared-basis ternary weight decomposition (qsl/twd.hpp) and its layer (qsl/twd_dense.hpp):
// the code against plain loops (exact where the arithmetic is exact, derived tolerances
// elsewhere), the factorization's guarantees (greedy error never rises with K, refinement never
// raises its objective, thread count never changes a bit), the size rule, named errors, the
// byte format, and the layer's forward on every CPU target.
#include "qsl/twd.hpp"

#include <gtest/gtest.h>

#include <Eigen/Cholesky>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu_target_fixture.hpp"
#include "qsl/cpu.hpp"
#include "qsl/quantized_dense.hpp"
#include "qsl/twd_dense.hpp"
#include "test_util.hpp"

namespace {

using qsl::row_matrix_f;
using qsl::test::error_of;

double gamma_bound(double m) {
  const double u = std::numeric_limits<float>::epsilon() / 2;
  return m * u / (1 - m * u);
}

// ---------------------------------------------------------------------------------------------
// Plain-loop reference: reads the bits itself (not through weight_code::value) and sums in
// double.

int basis_value(const qsl::twd_code& code, std::int64_t k, std::int64_t d) {
  const std::int64_t words = (code.cols + 63) / 64;
  const auto bit = [&](const std::vector<qsl::word>& planes) {
    return (planes[static_cast<std::size_t>(k * words + d / 64)] >> (d % 64)) & 1U;
  };
  if (!bit(code.basis.masks)) return 0;
  return bit(code.basis.signs) ? 1 : -1;
}

// W_hat[n][d] = sum_k C[k][n] M[d][k].
Eigen::MatrixXd plain_reconstruct(const qsl::twd_code& code) {
  Eigen::MatrixXd w(code.rows, code.cols);
  for (std::int64_t n = 0; n < code.rows; ++n)
    for (std::int64_t d = 0; d < code.cols; ++d) {
      double sum = 0;
      for (std::int64_t k = 0; k < code.basis_vectors(); ++k)
        sum += double{code.mixing[static_cast<std::size_t>(k * code.rows + n)]} *
               basis_value(code, k, d);
      w(n, d) = sum;
    }
  return w;
}

// z[v][k] = sum_d M[d][k] x[v][d], and s[v][k] = sum_d |M[d][k]| |x[v][d]|.
void plain_basis_products(const qsl::twd_code& code, const Eigen::MatrixXd& x, Eigen::MatrixXd& z,
                          Eigen::MatrixXd& s) {
  const std::int64_t k_count = code.basis_vectors();
  z.setZero(x.rows(), k_count);
  s.setZero(x.rows(), k_count);
  for (Eigen::Index v = 0; v < x.rows(); ++v)
    for (std::int64_t k = 0; k < k_count; ++k)
      for (std::int64_t d = 0; d < code.cols; ++d) {
        const int m = basis_value(code, k, d);
        z(v, k) += m * x(v, d);
        s(v, k) += std::abs(m) * std::abs(x(v, d));
      }
}

// A random code: ternary basis (about a third zeros), coefficient 1, offsets M^T 1; mixing
// uniform in [-1, 1), or small integers.
qsl::twd_code random_twd_code(std::int64_t n, std::int64_t d, std::int64_t k, std::uint32_t seed,
                              bool integer_mixing = false) {
  std::mt19937 rng(seed);
  qsl::twd_code code;
  code.rows = n;
  code.cols = d;
  code.basis = qsl::make_weight_code(k, d, 1, qsl::basis::ternary, 0);
  for (std::int64_t r = 0; r < k; ++r)
    for (std::int64_t c = 0; c < d; ++c) {
      if (rng() % 3 == 0) continue;
      qsl::set_bit(code.basis.mask_plane(r, 0), c);
      if (rng() % 2) qsl::set_bit(code.basis.sign_plane(r, 0), c);
    }
  for (float& a : code.basis.coefficients) a = 1.0f;
  qsl::compute_offsets(code.basis);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  code.mixing.resize(static_cast<std::size_t>(k * n));
  for (float& c : code.mixing)
    c = integer_mixing ? static_cast<float>(static_cast<int>(rng() % 7) - 3) : uniform(rng);
  return code;
}

std::vector<float> random_bias(std::int64_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> b(static_cast<std::size_t>(n));
  for (float& v : b) v = uniform(rng);
  return b;
}

qsl::twd_dense make_layer(const qsl::twd_code& code, const std::vector<float>& bias,
                          qsl::activation_quantizer activations = {}) {
  return qsl::twd_dense(qsl::twd_dense_parameters{code, bias, activations});
}

// Calibration inputs with strongly correlated columns of different scales (as activations
// are): x[:, d] = 0.9 x[:, d - 1] + noise, then column d scaled by 0.2 + 2 u_d.
Eigen::MatrixXf correlated_inputs(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  Eigen::MatrixXf x = qsl::test::gaussian(rows, cols, seed);
  for (std::int64_t d = 1; d < cols; ++d) x.col(d) = 0.9f * x.col(d - 1) + 0.45f * x.col(d);
  std::mt19937 rng(seed + 1);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (std::int64_t d = 0; d < cols; ++d) x.col(d) *= 0.2f + 2.0f * uniform(rng);
  return x;
}

// The refinement's objective with calibration, computed independently of the library:
// tr(E^T (X^T X + 1e-2 mean(diag X^T X) I) E), E = W_hat^T - W^T.
double damped_output_error(const Eigen::MatrixXf& w, const qsl::twd_code& code,
                           const Eigen::MatrixXf& x) {
  const Eigen::MatrixXd xd = x.cast<double>();
  const Eigen::MatrixXd e = plain_reconstruct(code) - w.cast<double>();  // N x D
  const double damping = 1e-2 * xd.colwise().squaredNorm().mean();
  return (e * xd.transpose()).squaredNorm() + damping * e.squaredNorm();
}

// ---------------------------------------------------------------------------------------------
// twd_code

// With small-integer mixing every partial sum is an exact integer, so reconstruct must match the
// plain loop bit for bit whatever order it sums in; real mixing is rounded once to float.
TEST(TwdCode, ReconstructMatchesPlainLoop) {
  std::uint32_t seed = 1;
  for (std::int64_t d : {1, 63, 64, 65, 127, 200})
    for (std::int64_t n : {1, 7, 64})
      for (std::int64_t k : {1, 2, 13}) {
        const std::string what =
            std::to_string(n) + "x" + std::to_string(d) + " K=" + std::to_string(k);
        const auto exact = random_twd_code(n, d, k, ++seed, true);
        ASSERT_NO_THROW(qsl::validate(exact)) << what;
        const Eigen::MatrixXd expected = plain_reconstruct(exact);
        const Eigen::MatrixXf got = qsl::reconstruct(exact);
        ASSERT_EQ(got.rows(), n);
        ASSERT_EQ(got.cols(), d);
        for (std::int64_t i = 0; i < n; ++i)
          for (std::int64_t j = 0; j < d; ++j) ASSERT_EQ(double{got(i, j)}, expected(i, j)) << what;

        const auto real = random_twd_code(n, d, k, ++seed);
        const Eigen::MatrixXd reference = plain_reconstruct(real);
        const Eigen::MatrixXf approx = qsl::reconstruct(real);
        // Summed in double (error <= K u_double sum |c|), then rounded to float (u_float).
        const double u = std::numeric_limits<float>::epsilon() / 2;
        for (std::int64_t i = 0; i < n; ++i)
          for (std::int64_t j = 0; j < d; ++j)
            ASSERT_NEAR(approx(i, j), reference(i, j),
                        u * std::abs(reference(i, j)) + 1e-12 * static_cast<double>(k))
                << what;
      }
}

TEST(TwdCode, ValidateNamesWhatIsWrong) {
  const auto good = random_twd_code(5, 70, 3, 7);
  ASSERT_NO_THROW(qsl::validate(good));

  auto c = good;
  c.basis.coefficients[1] = 0.5f;
  qsl::compute_offsets(c.basis);
  EXPECT_NE(error_of([&] { qsl::validate(c, "fc"); }).find("fc: basis coefficient 1 is 0.5"),
            std::string::npos);
  c = good;
  c.mixing.pop_back();
  EXPECT_NE(error_of([&] { qsl::validate(c); }).find("mixing holds 14 values; expected 15"),
            std::string::npos);
  c = good;
  c.mixing[7] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error_of([&] { qsl::validate(c); }).find("mixing value 7 (k 1, n 2) is nan"),
            std::string::npos);
  c = good;
  c.basis.signs[1] |= qsl::word{1} << 63;  // column 127 of a 70-column row: padding
  EXPECT_NE(error_of([&] { qsl::validate(c); }).find("padding bits"), std::string::npos);
  c = good;
  c.basis.offsets[0] += 1;
  EXPECT_NE(error_of([&] { qsl::validate(c); }).find("offset of row 0"), std::string::npos);
  c = good;
  c.cols = 71;
  EXPECT_NE(error_of([&] { qsl::validate(c); }).find("have 70 values; expected 71"),
            std::string::npos);
  c = good;
  c.basis = qsl::make_weight_code(3, 70, 2, qsl::basis::ternary, 0);
  EXPECT_NE(error_of([&] { qsl::validate(c); }).find("2 planes"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// factorize_ternary

qsl::twd_options options_for(int k, int refine = 10) {
  qsl::twd_options o;
  o.basis_vectors = k;
  o.refine_iterations = refine;
  return o;
}

TEST(TwdFactorize, EdgeShapesGiveValidCodesThatReduceTheError) {
  std::uint32_t seed = 100;
  for (std::int64_t d : {1, 63, 64, 65, 127})
    for (std::int64_t n : {1, 7, 64})
      for (int k : {1, 2, 13}) {
        const std::string what =
            std::to_string(n) + "x" + std::to_string(d) + " K=" + std::to_string(k);
        const Eigen::MatrixXf w = qsl::test::gaussian(n, d, ++seed);
        if (k > n * d) {
          EXPECT_NE(error_of([&] { qsl::factorize_ternary(w, options_for(k)); })
                        .find("options.basis_vectors is " + std::to_string(k) + "; expected 1.." +
                              std::to_string(n * d)),
                    std::string::npos)
              << what;
          continue;
        }
        const qsl::twd_code code = qsl::factorize_ternary(w, options_for(k, 3));
        ASSERT_NO_THROW(qsl::validate(code)) << what;
        EXPECT_EQ(code.rows, n);
        EXPECT_EQ(code.cols, d);
        EXPECT_EQ(code.basis_vectors(), k);
        // The first vector alone already removes part of the energy (c = R^T m / m^T m != 0).
        EXPECT_LT(qsl::normalized_error(w, code), 1.0) << what;
      }
}

// Greedy (no refinement): the first K vectors of K + 1 are the K vectors, and C is the least-
// squares fit over all of them (checked), so the error can only fall as K grows.
TEST(TwdFactorize, GreedyErrorNeverRisesWithK) {
  for (std::uint32_t seed : {1U, 2U, 3U}) {
    const Eigen::MatrixXf w = qsl::test::gaussian(24, 80, seed);
    double previous = 1.0;
    qsl::twd_code previous_code;
    for (int k = 1; k <= 12; ++k) {
      const qsl::twd_code code = qsl::factorize_ternary(w, options_for(k, 0));
      const double e = qsl::normalized_error(w, code);
      // C is the least-squares fit over all k vectors: M^T (M C - W^T) = 0.
      Eigen::MatrixXd m(80, k), c(k, 24);
      for (int d = 0; d < 80; ++d)
        for (int j = 0; j < k; ++j) m(d, j) = basis_value(code, j, d);
      for (int j = 0; j < k; ++j)
        for (int n = 0; n < 24; ++n) c(j, n) = code.mix(j, n);
      const Eigen::MatrixXd wt = w.cast<double>().transpose();
      EXPECT_LT((m.transpose() * (m * c - wt)).norm(), 1e-5 * (m.transpose() * wt).norm())
          << "seed " << seed << " K " << k;
      EXPECT_LE(e, previous * (1 + 1e-9) + 1e-12) << "seed " << seed << " K " << k;
      for (std::int64_t r = 0; r < k - 1; ++r) {
        for (std::int64_t col = 0; col < 80; ++col) {
          ASSERT_EQ(code.basis.value(r, 0, col), previous_code.basis.value(r, 0, col))
              << "seed " << seed << " K " << k << " vector " << r;
        }
      }
      previous = e;
      previous_code = code;
    }
    // And the growth is real: 12 vectors remove far more than one.
    const double one = qsl::normalized_error(w, qsl::factorize_ternary(w, options_for(1, 0)));
    EXPECT_LT(previous, 0.8 * one) << "seed " << seed;
  }
}

// Without calibration the refinement minimizes the weight error itself, and never accepts a
// round that raises it.
TEST(TwdFactorize, RefinementNeverRaisesTheWeightError) {
  for (std::uint32_t seed : {11U, 12U, 13U, 14U})
    for (int k : {1, 4, 16}) {
      const Eigen::MatrixXf w = qsl::test::gaussian(40, 96, seed);
      const double greedy = qsl::normalized_error(w, qsl::factorize_ternary(w, options_for(k, 0)));
      const double refined = qsl::normalized_error(w, qsl::factorize_ternary(w, options_for(k)));
      EXPECT_LE(refined, greedy * (1 + 1e-9)) << "seed " << seed << " K " << k;
      EXPECT_LT(refined, 1.0);
    }
  // More vectors: far below one vector's error.
  const Eigen::MatrixXf w = qsl::test::gaussian(40, 96, 21);
  EXPECT_LT(qsl::normalized_error(w, qsl::factorize_ternary(w, options_for(32))),
            0.7 * qsl::normalized_error(w, qsl::factorize_ternary(w, options_for(1))));
}

// With calibration the refinement minimizes the damped output error (recomputed here without
// the library), so it can never end above the greedy start.
TEST(TwdFactorize, CalibratedRefinementNeverRaisesItsObjective) {
  for (std::uint32_t seed : {31U, 32U, 33U, 34U, 35U}) {
    const Eigen::MatrixXf w = qsl::test::gaussian(32, 96, seed);
    const Eigen::MatrixXf x = correlated_inputs(200, 96, seed + 50);
    qsl::twd_options greedy = options_for(8, 0), refined = options_for(8, 10);
    greedy.calibration = refined.calibration = x;
    const double before = damped_output_error(w, qsl::factorize_ternary(w, greedy), x);
    const double after = damped_output_error(w, qsl::factorize_ternary(w, refined), x);
    EXPECT_LE(after, before * (1 + 1e-9)) << "seed " << seed;
    // And it does real work here: about a third of the greedy objective is left (0.31-0.34
    // on these seeds).
    EXPECT_LT(after, 0.5 * before) << "seed " << seed;
  }
}

// The refinement stops when a round no longer lowers its objective, so it ends at a coordinate
// minimum: no single element of M can move to another ternary value and lower
// f = tr(E^T H E), E = W_hat^T - W^T, and C is the least-squares fit (the gradient
// 2 M^T H E vanishes). Checked by brute force with H built here (I, or the damped X^T X).
TEST(TwdFactorize, RefinementEndsAtACoordinateMinimum) {
  for (bool calibrated : {false, true}) {
    const Eigen::MatrixXf w = qsl::test::gaussian(10, 24, calibrated ? 61 : 62);
    const Eigen::MatrixXf x = correlated_inputs(50, 24, 63);
    qsl::twd_options o = options_for(4, 1000);
    Eigen::MatrixXd h = Eigen::MatrixXd::Identity(24, 24);
    if (calibrated) {
      o.calibration = x;
      h = x.cast<double>().transpose() * x.cast<double>();
      h.diagonal().array() += 1e-2 * h.diagonal().mean();
    }
    const qsl::twd_code code = qsl::factorize_ternary(w, o);
    Eigen::MatrixXd m(24, 4), c(4, 10);
    for (int d = 0; d < 24; ++d)
      for (int k = 0; k < 4; ++k) m(d, k) = basis_value(code, k, d);
    for (int k = 0; k < 4; ++k)
      for (int n = 0; n < 10; ++n) c(k, n) = code.mix(k, n);
    const Eigen::MatrixXd wt = w.cast<double>().transpose();
    auto f = [&](const Eigen::MatrixXd& mm) {
      const Eigen::MatrixXd e = mm * c - wt;
      return (e.transpose() * h * e).trace();
    };
    const double base = f(m);
    for (int d = 0; d < 24; ++d)
      for (int k = 0; k < 4; ++k)
        for (double value : {-1.0, 0.0, 1.0}) {
          Eigen::MatrixXd moved = m;
          moved(d, k) = value;
          EXPECT_GE(f(moved), base * (1 - 1e-6)) << (calibrated ? "calibrated" : "weight error")
                                                 << " M[" << d << ", " << k << "] = " << value;
        }
    const Eigen::MatrixXd gradient = 2 * m.transpose() * h * (m * c - wt);
    const double scale = 2 * (m.transpose() * h * wt).norm();
    EXPECT_LT(gradient.norm(), 1e-5 * scale) << (calibrated ? "calibrated" : "weight error");
  }
}

// One refinement round is one sweep of coordinate descent over M (column by column, rows in
// order, each element to its best ternary value given all the others) from the greedy factors,
// then C by least squares. The sweep is redone here by brute force (f recomputed for every
// candidate) and must pick the same M: this checks the incremental bookkeeping of the library's
// sweep, not only where it ends. (The greedy C is taken from the code, rounded to float; ties
// closer than that rounding do not occur on these inputs.)
TEST(TwdFactorize, OneRoundIsOnePlainCoordinateSweep) {
  int weight_error_moves = 0;
  for (std::uint32_t seed : {71U, 72U, 73U, 74U})
    for (bool calibrated : {false, true}) {
      const int n_count = 12, d_count = 30, k_count = 5;
      const Eigen::MatrixXf w = qsl::test::gaussian(n_count, d_count, seed);
      const Eigen::MatrixXf x = correlated_inputs(60, d_count, seed + 1);
      qsl::twd_options o = options_for(k_count, 0);
      Eigen::MatrixXd h = Eigen::MatrixXd::Identity(d_count, d_count);
      if (calibrated) {
        o.calibration = x;
        h = x.cast<double>().transpose() * x.cast<double>();
        h.diagonal().array() += 1e-2 * h.diagonal().mean();
      }
      const qsl::twd_code greedy = qsl::factorize_ternary(w, o);
      o.refine_iterations = 1;
      const qsl::twd_code refined = qsl::factorize_ternary(w, o);
      Eigen::MatrixXd m(d_count, k_count), c(k_count, n_count);
      for (int d = 0; d < d_count; ++d)
        for (int k = 0; k < k_count; ++k) m(d, k) = basis_value(greedy, k, d);
      for (int k = 0; k < k_count; ++k)
        for (int n = 0; n < n_count; ++n) c(k, n) = greedy.mix(k, n);
      const Eigen::MatrixXd wt = w.cast<double>().transpose();
      auto f = [&](const Eigen::MatrixXd& mm) {
        const Eigen::MatrixXd e = mm * c - wt;
        return (e.transpose() * h * e).trace();
      };
      int moves = 0;
      for (int k = 0; k < k_count; ++k)
        for (int d = 0; d < d_count; ++d) {
          double best = f(m), best_value = m(d, k);
          for (double value : {-1.0, 0.0, 1.0}) {
            if (value == m(d, k)) continue;
            Eigen::MatrixXd moved = m;
            moved(d, k) = value;
            const double candidate = f(moved);
            if (candidate < best) best = candidate, best_value = value;
          }
          moves += best_value != m(d, k);
          m(d, k) = best_value;
        }
      if (calibrated)
        EXPECT_GT(moves, 0) << "seed " << seed;  // the round has something to do
      else
        weight_error_moves += moves;
      for (int d = 0; d < d_count; ++d)
        for (int k = 0; k < k_count; ++k)
          EXPECT_EQ(basis_value(refined, k, d), m(d, k))
              << (calibrated ? "calibrated" : "weight error") << " seed " << seed << " M[" << d
              << ", " << k << "]";
    }
  EXPECT_GT(weight_error_moves, 0);  // greedy is often, not always, a coordinate minimum
}

// Fitting the output error instead of the weight error must pay off in output error. This is
// an empirical check (not a theorem: both refinements start from the same greedy factors but
// descend different objectives); on these inputs the calibrated error is far lower.
TEST(TwdFactorize, CalibrationLowersTheOutputError) {
  for (std::uint32_t seed : {41U, 42U, 43U, 44U, 45U}) {
    const Eigen::MatrixXf w = qsl::test::gaussian(32, 96, seed);
    const Eigen::MatrixXf x = correlated_inputs(200, 96, seed + 50);
    qsl::twd_options calibrated = options_for(8);
    calibrated.calibration = x;
    const double with = qsl::normalized_output_error(w, qsl::factorize_ternary(w, calibrated), x);
    const double without =
        qsl::normalized_output_error(w, qsl::factorize_ternary(w, options_for(8)), x);
    EXPECT_LE(with, without) << "seed " << seed;
  }
}

// X or any matrix with the same X^T X (here its Cholesky factor) gives the same H, so the same
// factorization up to the rounding of H.
TEST(TwdFactorize, CholeskyFactorOfCalibrationWorksLikeTheInputs) {
  const Eigen::MatrixXf w = qsl::test::gaussian(16, 40, 3);
  const Eigen::MatrixXf x = correlated_inputs(300, 40, 4);
  const Eigen::MatrixXd h = x.cast<double>().transpose() * x.cast<double>();
  const Eigen::MatrixXf u = Eigen::MatrixXd(h.llt().matrixU()).cast<float>();
  qsl::twd_options a = options_for(6), b = options_for(6);
  a.calibration = x;
  b.calibration = u;
  const double ea = qsl::normalized_output_error(w, qsl::factorize_ternary(w, a), x);
  const double eb = qsl::normalized_output_error(w, qsl::factorize_ternary(w, b), x);
  EXPECT_NEAR(ea, eb, 0.05 * ea);
}

TEST(TwdFactorize, ThreadCountDoesNotChangeABit) {
  // Shapes past every block boundary of the parallel products (64 columns, 256 rows, 128-column
  // Gram panels, 512-row GEMV blocks).
  const Eigen::MatrixXf w = qsl::test::gaussian(150, 600, 8);
  qsl::twd_options o = options_for(7, 3);
  o.calibration = correlated_inputs(1100, 600, 9);
  o.threads = 1;
  const qsl::twd_code one = qsl::factorize_ternary(w, o);
  o.threads = 3;
  const qsl::twd_code three = qsl::factorize_ternary(w, o);
  EXPECT_EQ(one.basis.signs, three.basis.signs);
  EXPECT_EQ(one.basis.masks, three.basis.masks);
  EXPECT_EQ(one.mixing, three.mixing);
}

TEST(TwdFactorize, ProgressCountsVectorsThenRounds) {
  const Eigen::MatrixXf w = qsl::test::gaussian(10, 30, 5);
  std::vector<std::pair<std::int64_t, std::int64_t>> calls;
  qsl::twd_options o = options_for(4, 5);
  o.progress = [&](std::int64_t done, std::int64_t total) { calls.emplace_back(done, total); };
  qsl::factorize_ternary(w, o);
  ASSERT_GE(calls.size(), 5U);
  for (std::int64_t k = 0; k < 4; ++k) EXPECT_EQ(calls[k], std::make_pair(k + 1, std::int64_t{4}));
  for (std::size_t i = 4; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].second, 9);
    EXPECT_GT(calls[i].first, calls[i - 1].first);
  }
  EXPECT_EQ(calls.back(), std::make_pair(std::int64_t{9}, std::int64_t{9}));

  o.progress = [](std::int64_t done, std::int64_t) {
    if (done == 2) throw qsl::error("stop at 2");
  };
  EXPECT_EQ(error_of([&] { qsl::factorize_ternary(w, o); }), "stop at 2");
}

TEST(TwdFactorize, BadInputsAreNamedErrors) {
  const Eigen::MatrixXf w = qsl::test::gaussian(4, 6, 1);
  auto message = [&](const Eigen::MatrixXf& weights, const qsl::twd_options& o) {
    return error_of([&] { qsl::factorize_ternary(weights, o); });
  };
  auto has = [](const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  };
  Eigen::MatrixXf bad = w;
  bad(2, 3) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(has(message(bad, options_for(2)), "factorize_ternary: w has nan at row 2, col 3"));
  bad(2, 3) = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(has(message(bad, options_for(2)), "w has inf at row 2, col 3"));

  qsl::twd_options o = options_for(2);
  o.calibration = qsl::test::gaussian(5, 6, 2);
  o.calibration(4, 1) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(has(message(w, o), "options.calibration has nan at row 4, col 1"));
  o.calibration = qsl::test::gaussian(5, 7, 2);
  EXPECT_TRUE(has(message(w, o), "options.calibration has 7 columns; expected 6"));
  o.calibration.resize(0, 5);
  EXPECT_TRUE(has(message(w, o), "options.calibration has 5 columns; expected 6"));
  o.calibration.resize(0, 6);
  EXPECT_TRUE(has(message(w, o), "options.calibration has 0 rows"));

  EXPECT_TRUE(has(message(w, options_for(0)),
                  "options.basis_vectors is 0 and options.bits_per_weight is 0"));
  EXPECT_TRUE(
      has(message(w, options_for(100000)), "options.basis_vectors is 100000; expected 1..24"));
  EXPECT_TRUE(has(message(w, options_for(25)), "options.basis_vectors is 25"));
  EXPECT_TRUE(has(message(w, options_for(-1)), "options.basis_vectors is -1"));
  o = options_for(2);
  o.max_iterations = -1;
  EXPECT_TRUE(has(message(w, o), "options.max_iterations is -1"));
  o = options_for(2);
  o.refine_iterations = -2;
  EXPECT_TRUE(has(message(w, o), "options.refine_iterations is -2"));
  o = options_for(2);
  o.threads = -1;
  EXPECT_TRUE(has(message(w, o), "options.threads is -1"));
  o.threads = qsl::max_threads + 1;
  EXPECT_TRUE(has(message(w, o), "options.threads is 1025; expected 0 (all) to 1024"));
  o = options_for(0);
  o.bits_per_weight = 0.001;
  EXPECT_TRUE(has(message(w, o), "bits_per_weight is 0.001"));
  EXPECT_TRUE(has(message(Eigen::MatrixXf(0, 5), options_for(1)), "w is 0 x 5"));
  EXPECT_TRUE(has(message(Eigen::MatrixXf(3, 0), options_for(1)), "w is 3 x 0"));
}

TEST(TwdFactorize, ZeroWeightsGiveAZeroApproximation) {
  const Eigen::MatrixXf w = Eigen::MatrixXf::Zero(5, 9);
  const qsl::twd_code code = qsl::factorize_ternary(w, options_for(3));
  ASSERT_NO_THROW(qsl::validate(code));
  EXPECT_EQ(qsl::reconstruct(code).squaredNorm(), 0.0f);
}

// A matrix that is exactly one ternary vector times a row is found exactly.
TEST(TwdFactorize, RankOneTernaryMatrixIsExact) {
  std::mt19937 rng(3);
  Eigen::VectorXf m(50), c(20);
  for (int d = 0; d < 50; ++d) m[d] = static_cast<float>(static_cast<int>(rng() % 3) - 1);
  m[0] = 1;
  for (int n = 0; n < 20; ++n) c[n] = static_cast<float>(rng() % 100) / 10 - 5;
  const Eigen::MatrixXf w = c * m.transpose();
  EXPECT_LT(qsl::normalized_error(w, qsl::factorize_ternary(w, options_for(1, 0))), 1e-12);
}

// ---------------------------------------------------------------------------------------------
// twd_basis_vectors_for

TEST(TwdBasisVectorsFor, LargestKWhoseBytesFit) {
  for (std::int64_t n : {1, 7, 64, 512, 4096})
    for (std::int64_t d : {1, 63, 64, 65, 3136, 4096})
      for (double bits : {0.5, 1.0, 1.5, 2.0, 4.0, 33.0}) {
        const double budget = bits * static_cast<double>(n) * static_cast<double>(d);
        auto code_bytes = [&](std::int64_t k) {
          qsl::twd_code code;  // bytes() depends only on the shapes
          code.rows = n;
          code.cols = d;
          code.basis = qsl::make_weight_code(k, d, 1, qsl::basis::ternary, 0);
          code.mixing.resize(static_cast<std::size_t>(k * n));
          return 8.0 * static_cast<double>(code.bytes());
        };
        const std::string what =
            std::to_string(n) + "x" + std::to_string(d) + " at " + std::to_string(bits);
        if (code_bytes(1) > budget) {
          EXPECT_NE(error_of([&] {
                      qsl::twd_basis_vectors_for(n, d, bits);
                    }).find("one basis vector of a"),
                    std::string::npos)
              << what;
          continue;
        }
        const int k = qsl::twd_basis_vectors_for(n, d, bits);
        EXPECT_GE(k, 1) << what;
        EXPECT_LE(code_bytes(k), budget) << what;
        if (k < std::min<std::int64_t>(d, qsl::max_twd_basis_vectors))
          EXPECT_GT(code_bytes(k + 1), budget) << what;
        else
          EXPECT_EQ(k, std::min<std::int64_t>(d, qsl::max_twd_basis_vectors)) << what;
      }
  EXPECT_NE(error_of([] { qsl::twd_basis_vectors_for(4, 4, 0); }).find("bits_per_weight is 0"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              qsl::twd_basis_vectors_for(4, 4, std::nan(""));
            }).find("bits_per_weight is nan"),
            std::string::npos);
  EXPECT_NE(error_of([] { qsl::twd_basis_vectors_for(0, 4, 1); }).find("0 x 4"), std::string::npos);
}

TEST(TwdBasisVectorsFor, FactorizeUsesTheSizeTarget) {
  const Eigen::MatrixXf w = qsl::test::gaussian(64, 256, 4);
  qsl::twd_options o;
  o.bits_per_weight = 2;
  o.refine_iterations = 1;
  const qsl::twd_code code = qsl::factorize_ternary(w, o);
  EXPECT_EQ(code.basis_vectors(), qsl::twd_basis_vectors_for(64, 256, 2));
  EXPECT_LE(8.0 * static_cast<double>(code.bytes()), 2.0 * 64 * 256);
}

// ---------------------------------------------------------------------------------------------
// twd_dense on every CPU target

class TwdDense : public qsl::test::on_each_cpu_target {};

// Float activations. The kernel computes z_k = M^T x within 3 gamma_m S_k of the exact value
// (S_k = sum_d |M_dk| |x_d|, m = D + 9: the bound tests/cpu_kernels_test.cpp derives for one
// ternary plane with coefficient 1, which covers both the table and the decoded-GEMM driver).
// The fp32 GEMM then sums K products and the bias: within gamma_(K+1) of
// sum_k |C_kn| |z~_k| + |b_n| (Higham's bound for a dot product; FMA only lowers it). So
//   |y~_n - y_n| <= 3 gamma_m sum_k |C_kn| S_k + gamma_(K+1) (sum_k |C_kn| S_k (1 + 3 gamma_m)
//                   + |b_n|).
void expect_float_forward_matches(const qsl::twd_code& code, const std::vector<float>& bias,
                                  const row_matrix_f& x, const std::string& what) {
  const qsl::twd_dense layer = make_layer(code, bias);
  const row_matrix_f y = layer.forward(x);
  Eigen::MatrixXd z, s;
  plain_basis_products(code, x.cast<double>(), z, s);
  const double gm = gamma_bound(static_cast<double>(code.cols + 9));
  const double gk = gamma_bound(static_cast<double>(code.basis_vectors() + 1));
  for (Eigen::Index v = 0; v < x.rows(); ++v)
    for (std::int64_t n = 0; n < code.rows; ++n) {
      double exact = bias.empty() ? 0 : bias[static_cast<std::size_t>(n)], size = 0;
      for (std::int64_t k = 0; k < code.basis_vectors(); ++k) {
        exact += double{code.mix(k, n)} * z(v, k);
        size += std::abs(double{code.mix(k, n)}) * s(v, k);
      }
      const double b = bias.empty() ? 0 : std::abs(bias[static_cast<std::size_t>(n)]);
      const double tol = 3 * gm * size + gk * (size * (1 + 3 * gm) + b);
      ASSERT_NEAR(y(v, n), exact, tol * 1.0001) << what << " vector " << v << " output " << n;
    }
}

// Encoded activations: the kernel's integer part I_k = M^T q is exact and z~_k =
// fl(fl(step I_k) + fl(minimum offset_k)) is within gamma_2 T_k of step I_k + minimum offset_k
// = M^T x_hat (x_hat = minimum + step q, the decoded inputs), T_k = |step I_k| +
// |minimum offset_k|. The GEMM adds gamma_(K+1) as above:
//   |y~_n - y_n| <= gamma_2 sum_k |C_kn| T_k + gamma_(K+1) (sum_k |C_kn| T_k (1 + gamma_2) +
//   |b_n|).
void expect_encoded_forward_matches(const qsl::twd_code& code, const std::vector<float>& bias,
                                    const row_matrix_f& x, const qsl::activation_quantizer& q,
                                    const std::string& what) {
  const qsl::twd_dense layer = make_layer(code, bias, q);
  const row_matrix_f y = layer.forward(x);
  const qsl::activation_code encoded = qsl::encode_activations(x, q);
  Eigen::MatrixXd levels(x.rows(), x.cols()), z, unused;
  for (Eigen::Index v = 0; v < x.rows(); ++v)
    for (Eigen::Index d = 0; d < x.cols(); ++d) levels(v, d) = encoded.level(v, d);
  plain_basis_products(code, levels, z, unused);  // I_k
  const double g2 = gamma_bound(2);
  const double gk = gamma_bound(static_cast<double>(code.basis_vectors() + 1));
  for (Eigen::Index v = 0; v < x.rows(); ++v) {
    const double step = encoded.step[v], minimum = encoded.minimum[v];
    for (std::int64_t n = 0; n < code.rows; ++n) {
      double exact = bias.empty() ? 0 : bias[static_cast<std::size_t>(n)], size = 0;
      for (std::int64_t k = 0; k < code.basis_vectors(); ++k) {
        const double offset = code.basis.offsets[static_cast<std::size_t>(k)];
        exact += double{code.mix(k, n)} * (step * z(v, k) + minimum * offset);
        size += std::abs(double{code.mix(k, n)}) *
                (std::abs(step * z(v, k)) + std::abs(minimum * offset));
      }
      const double b = bias.empty() ? 0 : std::abs(bias[static_cast<std::size_t>(n)]);
      const double tol = g2 * size + gk * (size * (1 + g2) + b);
      ASSERT_NEAR(y(v, n), exact, tol * 1.0001) << what << " vector " << v << " output " << n;
    }
  }
}

TEST_P(TwdDense, EdgeShapesMatchThePlainLoop) {
  std::uint32_t seed = 500;
  for (std::int64_t d : {1, 63, 64, 65, 127})
    for (std::int64_t n : {1, 7, 64})
      for (std::int64_t k : {1, 2, 13})
        for (std::int64_t batch : {1, 3}) {
          const std::string what = std::to_string(n) + "x" + std::to_string(d) +
                                   " K=" + std::to_string(k) + " batch " + std::to_string(batch);
          const auto code = random_twd_code(n, d, k, ++seed);
          const auto bias = random_bias(seed % 2 ? n : 0, seed);
          const row_matrix_f x = qsl::test::gaussian_rows(batch, d, seed);
          expect_float_forward_matches(code, bias, x, what);
          expect_encoded_forward_matches(code, bias, x, {4}, what + " kx 4");
          expect_encoded_forward_matches(code, bias, x, {2, true, 0.7f, -1.0f},
                                         what + " kx 2 calibrated");
          if (HasFatalFailure()) return;
        }
}

TEST_P(TwdDense, RandomShapesMatchThePlainLoop) {
  std::mt19937 rng(77);
  for (int trial = 0; trial < 60; ++trial) {
    const std::int64_t d = 1 + rng() % 300, n = 1 + rng() % 80, k = 1 + rng() % 40;
    // Batches of 130 and more take the decoded-GEMM driver for z (K <= 512 rows).
    const std::int64_t batch = trial % 10 == 0 ? 130 : 1 + rng() % 5;
    const int kx = 1 + static_cast<int>(rng() % 8);
    const std::string what = std::to_string(n) + "x" + std::to_string(d) +
                             " K=" + std::to_string(k) + " batch " + std::to_string(batch) +
                             " trial " + std::to_string(trial);
    const auto code = random_twd_code(n, d, k, rng());
    const auto bias = random_bias(n, rng());
    const row_matrix_f x = qsl::test::gaussian_rows(batch, d, rng());
    expect_float_forward_matches(code, bias, x, what);
    expect_encoded_forward_matches(code, bias, x, {kx}, what + " kx " + std::to_string(kx));
    if (HasFatalFailure()) return;
  }
}

// Integer inputs the encoder represents exactly (step 1: calibrated, or per vector with every
// row spanning exactly 2^kx - 1) make z = M^T x an exact integer in both paths; with C = I
// (N = K) and no bias the layer's output is z itself, bit for bit.
TEST_P(TwdDense, IntegerInputsGiveExactBasisProducts) {
  std::mt19937 rng(31);
  for (int trial = 0; trial < 40; ++trial) {
    const std::int64_t d = 1 + rng() % 200, k = 1 + rng() % 20;
    const std::int64_t batch = trial % 8 == 0 ? 140 : 1 + rng() % 4;
    auto code = random_twd_code(k, d, k, rng());
    std::fill(code.mixing.begin(), code.mixing.end(), 0.0f);
    for (std::int64_t i = 0; i < k; ++i) code.mixing[static_cast<std::size_t>(i * k + i)] = 1;
    const int kx = 1 + static_cast<int>(rng() % 6);
    const int top = (1 << kx) - 1;
    row_matrix_f x(batch, d);
    for (std::int64_t i = 0; i < x.size(); ++i)
      x.data()[i] = static_cast<float>(static_cast<int>(rng() % (top + 1)) - 3);
    const std::string what = "K=" + std::to_string(k) + " D=" + std::to_string(d) + " kx " +
                             std::to_string(kx) + " batch " + std::to_string(batch);
    Eigen::MatrixXd exact, unused;
    plain_basis_products(code, x.cast<double>(), exact, unused);
    const row_matrix_f y_float = make_layer(code, {}).forward(x);
    const row_matrix_f y_calibrated = make_layer(code, {}, {kx, true, 1.0f, -3.0f}).forward(x);
    row_matrix_f spanning = x;  // per vector: min -3 and max top - 3 give step 1
    spanning.col(0).setConstant(-3.0f);
    if (d > 1) spanning.col(d - 1).setConstant(static_cast<float>(top - 3));
    Eigen::MatrixXd exact_spanning;
    plain_basis_products(code, spanning.cast<double>(), exact_spanning, unused);
    const row_matrix_f y_per_vector = make_layer(code, {}, {kx}).forward(spanning);
    for (std::int64_t v = 0; v < batch; ++v)
      for (std::int64_t i = 0; i < k; ++i) {
        ASSERT_EQ(double{y_float(v, i)}, exact(v, i)) << what;
        ASSERT_EQ(double{y_calibrated(v, i)}, exact(v, i)) << what;
        if (d > 1) {
          ASSERT_EQ(double{y_per_vector(v, i)}, exact_spanning(v, i)) << what;
        }
      }
  }
}

// A factorized layer end to end: forward equals reconstruct(code) x + b within the float bound.
TEST_P(TwdDense, CompressedLayerMatchesItsCode) {
  const Eigen::MatrixXf w = qsl::test::gaussian(48, 130, 6);
  const Eigen::VectorXf b = Eigen::VectorXf::LinSpaced(48, -1, 1);
  qsl::twd_dense_options o;
  o.factorization = options_for(12, 3);
  const qsl::twd_dense layer = qsl::twd_dense::compress(w, b, o);
  EXPECT_EQ(layer.in_features(), 130);
  EXPECT_EQ(layer.out_features(), 48);
  EXPECT_EQ(layer.basis_vectors(), 12);
  EXPECT_EQ(layer.bytes(), layer.code().bytes() + 48 * sizeof(float));
  EXPECT_DOUBLE_EQ(layer.bits_per_weight(), 8.0 * static_cast<double>(layer.bytes()) / (48 * 130));
  const std::vector<float> bias(b.data(), b.data() + b.size());
  expect_float_forward_matches(layer.code(), bias, qsl::test::gaussian_rows(5, 130, 7),
                               "compressed");
}

INSTANTIATE_TEST_SUITE_P(EveryTarget, TwdDense, testing::ValuesIn(qsl::supported_cpu_targets()),
                         [](const testing::TestParamInfo<qsl::cpu_target>& info) {
                           return std::string(qsl::to_string(info.param));
                         });

// ---------------------------------------------------------------------------------------------
// twd_dense: compression options, shapes, bytes

TEST(TwdDenseLayer, ActivationScalingFollowsTheOptions) {
  const Eigen::MatrixXf w = qsl::test::gaussian(8, 40, 1);
  const Eigen::MatrixXf x = correlated_inputs(60, 40, 2);
  qsl::twd_dense_options o;
  o.factorization = options_for(3, 2);
  o.factorization.calibration = x;
  o.activation_bits = 4;
  const auto calibrated = qsl::twd_dense::compress(w, o);
  const auto expected = qsl::calibrate_activations(x, 4);
  EXPECT_TRUE(calibrated.activations().calibrated);
  EXPECT_EQ(calibrated.activations().step, expected.step);
  EXPECT_EQ(calibrated.activations().minimum, expected.minimum);
  EXPECT_EQ(calibrated.bytes(), calibrated.code().bytes() + 2 * sizeof(float));
  o.scaling = qsl::activation_scaling::per_vector;
  EXPECT_FALSE(qsl::twd_dense::compress(w, o).activations().calibrated);
  o.factorization.calibration.resize(0, 0);
  o.scaling = qsl::activation_scaling::calibrated;
  EXPECT_NE(error_of([&] { qsl::twd_dense::compress(w, o); }).find("calibrated activations need"),
            std::string::npos);
  o.scaling = qsl::activation_scaling::automatic;
  o.activation_bits = 9;
  EXPECT_NE(error_of([&] { qsl::twd_dense::compress(w, o); }).find("options.activation_bits is 9"),
            std::string::npos);
  o.activation_bits = 0;
  EXPECT_NE(error_of([&] {
              qsl::twd_dense::compress(w, Eigen::VectorXf::Zero(3), o);
            }).find("bias has 3 values; expected 0 or 8"),
            std::string::npos);
  Eigen::VectorXf nan_bias = Eigen::VectorXf::Zero(8);
  nan_bias[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error_of([&] { qsl::twd_dense::compress(w, nan_bias, o); }).find("bias has nan at 5"),
            std::string::npos);
}

// The example of docs/api.md, as written there (with its inputs made up here).
TEST(TwdDenseLayer, ApiExampleRuns) {
  const Eigen::MatrixXf w = qsl::test::gaussian(64, 256, 1);
  const Eigen::VectorXf b = Eigen::VectorXf::Constant(64, 0.5f);
  const Eigen::MatrixXf x_calib = correlated_inputs(300, 256, 2);
  const qsl::twd_dense::matrix x = qsl::test::gaussian_rows(8, 256, 3);
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("qsl_twd_example_" + std::to_string(std::random_device{}()) + ".qslt"))
                               .string();

  qsl::twd_dense_options options;
  options.factorization.bits_per_weight = 1;    // or options.factorization.basis_vectors = K
  options.factorization.calibration = x_calib;  // optional: fit the output error
  options.activation_bits = 4;                  // 0 keeps float activations
  auto layer = qsl::twd_dense::compress(w, b, options);  // w: N x D, b: empty or N values
  qsl::twd_dense::matrix y = layer.forward(x);           // x: B x D row-major -> B x N
  layer.save(path);                                      // read back with qsl::twd_dense::load

  EXPECT_EQ(layer.basis_vectors(), qsl::twd_basis_vectors_for(64, 256, 1));
  EXPECT_LE(8.0 * static_cast<double>(layer.code().bytes()), 64.0 * 256);
  EXPECT_TRUE(layer.activations().calibrated);
  EXPECT_EQ(qsl::twd_dense::load(path).forward(x), y);
  std::filesystem::remove(path);
}

TEST(TwdDenseLayer, ForwardShapesAreChecked) {
  const auto layer = make_layer(random_twd_code(6, 20, 3, 1), {});
  row_matrix_f x(2, 21), y(2, 6);
  EXPECT_NE(error_of([&] { layer.forward(x, y); }).find("x has 21 columns; expected 20"),
            std::string::npos);
  row_matrix_f x_ok = qsl::test::gaussian_rows(2, 20, 3), y_bad(2, 5);
  EXPECT_NE(error_of([&] { layer.forward(x_ok, y_bad); }).find("y is 2 x 5; expected 2 x 6"),
            std::string::npos);
  EXPECT_NE(error_of([&] { layer.forward(x_ok.data(), -1, y.data()); }).find("batch is -1"),
            std::string::npos);
  EXPECT_NE(error_of([] { qsl::twd_dense().forward(nullptr, 0, nullptr); }).find("empty"),
            std::string::npos);
  // Strided blocks give the same result as packed arrays.
  row_matrix_f wide = qsl::test::gaussian_rows(3, 30, 4), out(3, 10);
  out.setZero();
  layer.forward(wide.leftCols(20), out.leftCols(6));
  const row_matrix_f packed_x = wide.leftCols(20);
  const row_matrix_f expected = layer.forward(packed_x);
  EXPECT_EQ(row_matrix_f(out.leftCols(6)), expected);
  const auto bad_bias = std::vector<float>(5, 0.0f);
  EXPECT_NE(error_of([&] {
              make_layer(random_twd_code(6, 20, 3, 1), bad_bias);
            }).find("bias has 5 values; expected 0 or 6"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Serialization

qsl::twd_dense sample_layer(bool bias, qsl::activation_quantizer q) {
  const auto code = random_twd_code(9, 70, 5, 17);
  return make_layer(code, bias ? random_bias(9, 18) : std::vector<float>{}, q);
}

void expect_same_layer(const qsl::twd_dense& a, const qsl::twd_dense& b) {
  EXPECT_EQ(a.code().rows, b.code().rows);
  EXPECT_EQ(a.code().cols, b.code().cols);
  EXPECT_EQ(a.code().basis.signs, b.code().basis.signs);
  EXPECT_EQ(a.code().basis.masks, b.code().basis.masks);
  EXPECT_EQ(a.code().basis.coefficients, b.code().basis.coefficients);
  EXPECT_EQ(a.code().basis.offsets, b.code().basis.offsets);
  EXPECT_EQ(a.code().mixing, b.code().mixing);
  EXPECT_EQ(a.bias(), b.bias());
  EXPECT_EQ(a.activations().bits, b.activations().bits);
  EXPECT_EQ(a.activations().calibrated, b.activations().calibrated);
  EXPECT_EQ(a.activations().step, b.activations().step);
  EXPECT_EQ(a.activations().minimum, b.activations().minimum);
  const row_matrix_f x = qsl::test::gaussian_rows(4, a.in_features(), 5);
  const row_matrix_f ya = a.forward(x), yb = b.forward(x);
  EXPECT_EQ(0, std::memcmp(ya.data(), yb.data(), sizeof(float) * ya.size()));
}

TEST(TwdSerialize, RoundTripIsBitIdentical) {
  for (bool bias : {false, true})
    for (qsl::activation_quantizer q : {qsl::activation_quantizer{}, qsl::activation_quantizer{4},
                                        qsl::activation_quantizer{3, true, 0.25f, -1.5f}}) {
      const auto layer = sample_layer(bias, q);
      const auto bytes = layer.serialize();
      EXPECT_EQ(0, std::memcmp(bytes.data(), "QSLT", 4));
      expect_same_layer(layer, qsl::twd_dense::deserialize(bytes.data(), bytes.size()));
    }
}

TEST(TwdSerialize, SaveAndLoadAFile) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("qsl_twd_test_" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "layer.qslt").string();
  const auto layer = sample_layer(true, {4});
  layer.save(path);
  expect_same_layer(layer, qsl::twd_dense::load(path));
  EXPECT_NE(error_of([&] { qsl::twd_dense::load(path, 10); }).find(path), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(TwdSerialize, EveryTruncationAndAppendThrows) {
  const auto bytes = sample_layer(true, {3, true, 0.25f, -1.5f}).serialize();
  for (std::size_t size = 0; size < bytes.size(); ++size)
    EXPECT_THROW(qsl::deserialize_twd_dense(bytes.data(), size), qsl::error) << size;
  auto longer = bytes;
  longer.push_back(0);
  EXPECT_NE(error_of([&] {
              qsl::deserialize_twd_dense(longer.data(), longer.size());
            }).find("needs exactly"),
            std::string::npos);
  EXPECT_NE(error_of([] { qsl::deserialize_twd_dense(nullptr, 10); }).find("null"),
            std::string::npos);
}

TEST(TwdSerialize, EveryBitFlipThrows) {
  const auto bytes = sample_layer(true, {4}).serialize();
  for (std::size_t i = 0; i < bytes.size(); ++i)
    for (int bit = 0; bit < 8; bit += 3) {
      auto corrupt = bytes;
      corrupt[i] ^= static_cast<std::uint8_t>(1U << bit);
      EXPECT_THROW(qsl::deserialize_twd_dense(corrupt.data(), corrupt.size()), qsl::error)
          << "byte " << i << " bit " << bit;
    }
  auto corrupt = bytes;
  corrupt[100] ^= 0x10;  // inside the sign planes: only the checksum can tell
  EXPECT_NE(error_of([&] {
              qsl::deserialize_twd_dense(corrupt.data(), corrupt.size());
            }).find("checksum"),
            std::string::npos);
}

TEST(TwdSerialize, HeaderIsCheckedBeforeAllocation) {
  auto bytes = sample_layer(false, {}).serialize();
  // K = 2^40 in the header: refused by the limits, not by a failed allocation.
  auto huge = bytes;
  huge[4 + 4 + 16 + 5] = 1;
  EXPECT_NE(error_of([&] {
              qsl::deserialize_twd_dense(huge.data(), huge.size());
            }).find("basis vectors 1099511627781"),
            std::string::npos);
  auto rows = bytes;
  rows[4 + 4 + 7] = 0x7F;  // rows = 0x7F00000000000009
  EXPECT_NE(
      error_of([&] { qsl::deserialize_twd_dense(rows.data(), rows.size()); }).find("out of range"),
      std::string::npos);
  // A quantized_dense file is not a TWD layer.
  const auto qsld = qsl::quantized_dense::compress(qsl::test::gaussian(4, 16, 1)).serialize();
  EXPECT_NE(error_of([&] {
              qsl::deserialize_twd_dense(qsld.data(), qsld.size());
            }).find("not a qsl TWD layer"),
            std::string::npos);
}

}  // namespace
