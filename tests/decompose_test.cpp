// qsl::decompose: quality against the Lloyd-Max floor, invariants, edge shapes, errors.
#include "qsl/decompose.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "qsl/error.hpp"
#include "test_util.hpp"

namespace {

using qsl::test::error_of;
using testing::HasSubstr;

// Normalized MSE of the Lloyd-Max quantizer of N(0, 1) with 2^k levels (k = 1..4).
constexpr double lloyd_max[] = {0.3634, 0.1175, 0.03455, 0.00950};

qsl::decompose_options options(int bits, qsl::method m, std::int64_t group = 0) {
  qsl::decompose_options o;
  o.bits = bits;
  o.method = m;
  o.group_size = group;
  return o;
}

// The targets, asserted at the "must" level on the matrix: i.i.d. N(0, 1),
// 1024 x 4096, one group per row. docs/benchmarks.md has the measured ratios.
TEST(Decompose, MultiStartMeetsLloydMaxTargets) {
  const Eigen::MatrixXf w = qsl::test::gaussian(1024, 4096, 42);
  const double must[] = {1.0, 1.01, 1.06, 1.10};
  for (int k = 2; k <= 4; ++k) {
    const auto code = qsl::decompose(w, options(k, qsl::method::multi_start));
    const double ratio = qsl::normalized_error(w, code) / lloyd_max[k - 1];
    EXPECT_LE(ratio, must[k - 1]) << "k = " << k;
    EXPECT_GT(ratio, 0.95) << "k = " << k << ": below the floor means the metric is broken";
  }
}

TEST(Decompose, DefaultMethodIsMultiStart) {
  EXPECT_EQ(qsl::decompose_options{}.method, qsl::method::multi_start);
}

// multi_start includes the alternating run as one of its starts, and alternating starts from
// greedy and never increases the error, so the order holds row by row.
TEST(Decompose, MethodsAreOrderedByError) {
  const Eigen::MatrixXf w = qsl::test::gaussian(64, 1000, 5);
  for (auto basis : {qsl::basis::binary, qsl::basis::ternary})
    for (int k = 1; k <= 4; ++k)
      for (std::int64_t group : {0, 64}) {
        auto o = options(k, qsl::method::greedy, group);
        o.basis = basis;
        const double greedy = qsl::normalized_error(w, qsl::decompose(w, o));
        o.method = qsl::method::alternating;
        const double alternating = qsl::normalized_error(w, qsl::decompose(w, o));
        o.method = qsl::method::multi_start;
        const double multi = qsl::normalized_error(w, qsl::decompose(w, o));
        const double slack = 1e-6;  // float reconstruction
        EXPECT_LE(alternating, greedy * (1 + slack)) << "k " << k << " group " << group;
        EXPECT_LE(multi, alternating * (1 + slack)) << "k " << k << " group " << group;
      }
}

TEST(Decompose, OneBinaryPlaneIsSignTimesMeanAbs) {
  const Eigen::MatrixXf w = qsl::test::gaussian(8, 77, 3);
  for (auto m : {qsl::method::greedy, qsl::method::alternating, qsl::method::multi_start}) {
    const auto code = qsl::decompose(w, options(1, m));
    for (std::int64_t n = 0; n < w.rows(); ++n) {
      EXPECT_NEAR(code.coefficient(n, 0, 0), w.row(n).cwiseAbs().mean(), 1e-5);
      for (std::int64_t c = 0; c < w.cols(); ++c)
        ASSERT_EQ(code.value(n, 0, c), w(n, c) >= 0 ? 1 : -1);
    }
  }
}

TEST(Decompose, OneTernaryPlaneReachesThreeLevelFloor) {
  // The best 3-level symmetric quantizer {-a, 0, a} of N(0, 1) has normalized MSE 0.1902.
  const Eigen::MatrixXf w = qsl::test::gaussian(256, 4096, 8);
  auto o = options(1, qsl::method::multi_start);
  o.basis = qsl::basis::ternary;
  EXPECT_LE(qsl::normalized_error(w, qsl::decompose(w, o)), 0.1902 * 1.01);
}

TEST(Decompose, CodesAreCanonicalOnEdgeShapes) {
  for (std::int64_t cols : qsl::test::edge_dims())
    for (auto basis : {qsl::basis::binary, qsl::basis::ternary})
      for (int k : {1, 2, 3, 5, 8}) {
        if (basis == qsl::basis::ternary && k > 5) continue;  // 3^8 levels: covered below
        const Eigen::MatrixXf w = qsl::test::gaussian(3, cols, static_cast<std::uint32_t>(cols));
        for (std::int64_t group : {0, 8, 64}) {
          auto o = options(k, qsl::method::multi_start, group);
          o.basis = basis;
          const auto code = qsl::decompose(w, o);
          ASSERT_NO_THROW(qsl::validate(code)) << cols << " k " << k << " group " << group;
          for (std::int64_t n = 0; n < code.rows; ++n)
            for (std::int64_t g = 0; g < code.groups(); ++g)
              for (int j = 0; j < k; ++j) {
                ASSERT_GE(code.coefficient(n, g, j), 0.0f);
                if (j > 0) {
                  ASSERT_LE(code.coefficient(n, g, j), code.coefficient(n, g, j - 1));
                }
              }
          // More planes than values: the fit can be exact.
          const auto levels = basis == qsl::basis::binary ? (1 << k) : 3;
          if (cols <= 2 && levels >= 4) {
            EXPECT_LT(qsl::normalized_error(w, code), 1e-8) << cols << " k " << k;
          }
        }
      }
}

TEST(Decompose, EightTernaryPlanes) {
  const Eigen::MatrixXf w = qsl::test::gaussian(2, 300, 4);
  auto o = options(8, qsl::method::multi_start);
  o.basis = qsl::basis::ternary;
  const auto code = qsl::decompose(w, o);
  EXPECT_NO_THROW(qsl::validate(code));
  EXPECT_LT(qsl::normalized_error(w, code), 1e-3);
}

TEST(Decompose, ZeroAndConstantRows) {
  Eigen::MatrixXf w = Eigen::MatrixXf::Zero(3, 70);
  w.row(1).setConstant(2.5f);
  const auto code = qsl::decompose(w, options(2, qsl::method::multi_start));
  const Eigen::MatrixXf r = qsl::reconstruct(code);
  EXPECT_TRUE(r.row(0).isZero());
  EXPECT_TRUE(r.row(1).isApproxToConstant(2.5f, 1e-6f));
  EXPECT_TRUE(r.row(2).isZero());
}

TEST(Decompose, ResultDoesNotDependOnThreadCount) {
  const Eigen::MatrixXf w = qsl::test::gaussian(67, 300, 11);
  auto o = options(3, qsl::method::multi_start, 64);
  o.threads = 1;
  const auto one = qsl::decompose(w, o);
  for (int threads : {2, 3}) {
    o.threads = threads;
    const auto many = qsl::decompose(w, o);
    EXPECT_EQ(many.signs, one.signs);
    EXPECT_EQ(many.coefficients, one.coefficients);
    EXPECT_EQ(many.offsets, one.offsets);
  }
}

TEST(Decompose, RowMajorPointerMatchesEigen) {
  const Eigen::MatrixXf w = qsl::test::gaussian(9, 130, 12);
  const qsl::row_matrix_f rows = w;
  const auto a = qsl::decompose(w, options(2, qsl::method::multi_start, 64));
  const auto b = qsl::decompose(rows.data(), rows.rows(), rows.cols(),
                                options(2, qsl::method::multi_start, 64));
  EXPECT_EQ(a.signs, b.signs);
  EXPECT_EQ(a.coefficients, b.coefficients);
}

TEST(Decompose, ReportsProgressUpToTheLastRow) {
  const Eigen::MatrixXf w = qsl::test::gaussian(50, 64, 13);
  auto o = options(2, qsl::method::alternating);
  std::int64_t last = 0, calls = 0;
  o.progress = [&](std::int64_t done, std::int64_t total) {
    EXPECT_EQ(total, 50);
    EXPECT_GT(done, last);
    last = done;
    ++calls;
  };
  qsl::decompose(w, o);
  EXPECT_EQ(last, 50);
  EXPECT_GE(calls, 1);
}

// Inputs whose columns differ in scale: the output error weighs the large columns more.
Eigen::MatrixXf anisotropic_inputs(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  Eigen::MatrixXf x = qsl::test::gaussian(rows, cols, seed);
  for (std::int64_t c = 0; c < cols; ++c) x.col(c) *= (c % 7 == 0) ? 5.0f : 0.3f;
  return x;
}

TEST(Decompose, CalibrationLowersOutputError) {
  const Eigen::MatrixXf w = qsl::test::gaussian(128, 512, 21);
  for (int k : {1, 2, 3})
    for (std::int64_t group : {0, 64}) {
      const Eigen::MatrixXf x = anisotropic_inputs(256, 512, 22);
      auto o = options(k, qsl::method::multi_start, group);
      const double plain = qsl::normalized_output_error(w, qsl::decompose(w, o), x);
      o.calibration = x;
      const double aware = qsl::normalized_output_error(w, qsl::decompose(w, o), x);
      EXPECT_LT(aware, plain) << "k " << k << " group " << group;
    }
}

// With more calibration rows than columns the refit goes through the Cholesky factor of X^T X;
// the result must be the same least-squares problem.
TEST(Decompose, CalibrationWithMoreRowsThanColumns) {
  const Eigen::MatrixXf w = qsl::test::gaussian(32, 48, 23);
  const Eigen::MatrixXf x = anisotropic_inputs(200, 48, 24);
  auto o = options(2, qsl::method::multi_start, 16);
  const double plain = qsl::normalized_output_error(w, qsl::decompose(w, o), x);
  o.calibration = x;
  const auto code = qsl::decompose(w, o);
  EXPECT_NO_THROW(qsl::validate(code));
  EXPECT_LT(qsl::normalized_output_error(w, code, x), plain);
}

TEST(Decompose, BadInputsAreNamedErrors) {
  Eigen::MatrixXf w = qsl::test::gaussian(4, 16, 1);
  auto nan = w;
  nan(2, 7) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(error_of([&] { qsl::decompose(nan); }), HasSubstr("w has nan at row 2, col 7"));
  auto inf = w;
  inf(3, 0) = std::numeric_limits<float>::infinity();
  EXPECT_THAT(error_of([&] { qsl::decompose(inf); }), HasSubstr("w has inf at row 3, col 0"));
  EXPECT_THAT(error_of([&] { qsl::decompose(Eigen::MatrixXf(0, 5)); }), HasSubstr("0 x 5"));
  EXPECT_THAT(error_of([&] { qsl::decompose(nullptr, 2, 2); }), HasSubstr("w is null"));
  auto bad = [&](auto&& change) {
    qsl::decompose_options o;
    change(o);
    return error_of([&] { qsl::decompose(w, o); });
  };
  EXPECT_THAT(bad([](auto& o) { o.bits = 0; }), HasSubstr("options.bits is 0"));
  EXPECT_THAT(bad([](auto& o) { o.bits = 9; }), HasSubstr("options.bits is 9"));
  EXPECT_THAT(bad([](auto& o) { o.group_size = 12; }), HasSubstr("options.group_size is 12"));
  EXPECT_THAT(bad([](auto& o) { o.max_iterations = 0; }), HasSubstr("max_iterations is 0"));
  EXPECT_THAT(bad([](auto& o) { o.threads = -1; }), HasSubstr("threads is -1"));
  EXPECT_THAT(bad([](auto& o) { o.method = static_cast<qsl::method>(9); }),
              HasSubstr("options.method is 9"));
  EXPECT_THAT(bad([](auto& o) { o.basis = static_cast<qsl::basis>(4); }),
              HasSubstr("options.basis is 4"));
  EXPECT_THAT(bad([](auto& o) { o.calibration = Eigen::MatrixXf::Ones(3, 15); }),
              HasSubstr("calibration has 15 columns; expected 16"));
  EXPECT_THAT(bad([](auto& o) {
                o.calibration = Eigen::MatrixXf::Ones(3, 16);
                o.calibration(1, 4) = std::numeric_limits<float>::quiet_NaN();
              }),
              HasSubstr("calibration has nan at row 1, col 4"));
}

TEST(Decompose, ProgressExceptionsPropagate) {
  const Eigen::MatrixXf w = qsl::test::gaussian(40, 16, 2);
  qsl::decompose_options o;
  o.progress = [](std::int64_t, std::int64_t) { throw qsl::error("cancelled by the user"); };
  EXPECT_THAT(error_of([&] { qsl::decompose(w, o); }), HasSubstr("cancelled"));
}

}  // namespace
