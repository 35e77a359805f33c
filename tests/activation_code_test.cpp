// qsl::encode_activations and qsl::calibrate_activations.
#include "qsl/activation_code.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "qsl/error.hpp"
#include "test_util.hpp"

namespace {

using qsl::test::error_of;
using testing::HasSubstr;

double nmse(const qsl::row_matrix_f& x, const qsl::row_matrix_f& y) {
  return (x - y).cast<double>().squaredNorm() / x.cast<double>().squaredNorm();
}

TEST(ActivationCode, PerVectorErrorIsAtMostHalfAStep) {
  for (std::int64_t length : qsl::test::edge_dims())
    for (int bits = 1; bits <= 8; ++bits) {
      const auto x = qsl::test::gaussian_rows(3, length, static_cast<std::uint32_t>(length));
      const auto code = qsl::encode_activations(x, {bits});
      const auto decoded = qsl::decode_activations(code);
      for (std::int64_t r = 0; r < x.rows(); ++r) {
        EXPECT_EQ(code.minimum[r], x.row(r).minCoeff());
        // Half a step plus float rounding of min + step * q.
        const float bound = code.step[r] * 0.5f * (1 + 1e-5f) + 1e-6f;
        for (std::int64_t c = 0; c < length; ++c)
          ASSERT_LE(std::abs(decoded(r, c) - x(r, c)), bound) << length << " bits " << bits;
        // Padding rule: no bit past the last column.
        const std::int64_t last = code.words_per_plane() - 1;
        for (int i = 0; i < bits; ++i)
          ASSERT_EQ(code.plane(r, i)[last] & ~qsl::range_mask(last, 0, length), 0u);
      }
    }
}

TEST(ActivationCode, BinaryFormEqualsLevels) {
  // x_min + step * q == sum_i beta_i u_i + gamma with beta_i = step 2^(i-1), u_i = 2 t_i - 1.
  const auto x = qsl::test::gaussian_rows(2, 100, 5);
  const auto code = qsl::encode_activations(x, {4});
  for (std::int64_t r = 0; r < 2; ++r)
    for (std::int64_t c = 0; c < 100; ++c) {
      double sum = code.gamma(r);
      for (int i = 0; i < 4; ++i) {
        const int u = qsl::get_bit(code.plane(r, i), c) ? 1 : -1;
        sum += code.step[r] * std::ldexp(1.0, i - 1) * u;
      }
      const double level = code.minimum[r] + double{code.step[r]} * code.level(r, c);
      ASSERT_NEAR(sum, level, 1e-5);
    }
}

TEST(ActivationCode, EncodingFollowsTheDocumentedRule) {
  const auto x = qsl::test::gaussian_rows(4, 257, 6);
  const qsl::activation_quantizer q{3, true, 0.4f, -1.2f};
  const auto code = qsl::encode_activations(x, q);
  const float inv_step = 1.0f / q.step;
  for (std::int64_t r = 0; r < 4; ++r)
    for (std::int64_t c = 0; c < 257; ++c) {
      const float scaled = std::floor((x(r, c) - q.minimum) * inv_step + 0.5f);
      const int expected = static_cast<int>(std::min(7.0f, std::max(0.0f, scaled)));
      ASSERT_EQ(code.level(r, c), expected);
    }
}

TEST(ActivationCode, CalibratedScaleBeatsPerVectorOnGaussians) {
  // The numbers: at kx = 2 per-vector min/max scaling has about 4x the error of a
  // calibrated scale (normalized MSE about 0.50 vs 0.12).
  const auto calibration = qsl::test::gaussian_rows(256, 4096, 7);
  const auto x = qsl::test::gaussian_rows(64, 4096, 8);
  const auto q = qsl::calibrate_activations(calibration, 2);
  EXPECT_TRUE(q.calibrated);
  EXPECT_EQ(q.bits, 2);
  const double dynamic = nmse(x, qsl::decode_activations(qsl::encode_activations(x, {2})));
  const double fixed = nmse(x, qsl::decode_activations(qsl::encode_activations(x, q)));
  EXPECT_NEAR(dynamic, 0.50, 0.08);
  EXPECT_NEAR(fixed, 0.1188, 0.006);  // the optimal uniform 4-level quantizer of N(0, 1)
  EXPECT_LT(fixed * 3, dynamic);
}

TEST(ActivationCode, CalibrationIsNearTheBestUniformQuantizer) {
  // Brute force over (minimum, step) on a coarse-to-fine grid of a skewed sample.
  qsl::row_matrix_f x = qsl::test::gaussian_rows(4, 300, 9);
  x = x.array().exp();  // log-normal: asymmetric, heavy right tail
  for (int bits : {1, 2, 3}) {
    const auto q = qsl::calibrate_activations(x, bits);
    const double ours = nmse(x, qsl::decode_activations(qsl::encode_activations(x, q)));
    double best = std::numeric_limits<double>::infinity();
    const float hi = x.maxCoeff();
    for (float lo = 0; lo < 2.0f; lo += 0.03f)
      for (float step = 0.02f; step < hi; step *= 1.03f) {
        const qsl::activation_quantizer trial{bits, true, step, lo};
        best = std::min(best, nmse(x, qsl::decode_activations(qsl::encode_activations(x, trial))));
      }
    EXPECT_LE(ours, best * 1.01) << "bits " << bits;
  }
}

TEST(ActivationCode, ConstantInputHasZeroStep) {
  const qsl::row_matrix_f x = qsl::row_matrix_f::Constant(2, 70, 3.25f);
  const auto code = qsl::encode_activations(x, {4});
  EXPECT_EQ(code.step[0], 0.0f);
  EXPECT_TRUE(qsl::decode_activations(code).isApprox(x));
  const auto q = qsl::calibrate_activations(x, 4);
  EXPECT_EQ(q.step, 0.0f);
  EXPECT_EQ(q.minimum, 3.25f);
  EXPECT_TRUE(qsl::decode_activations(qsl::encode_activations(x, q)).isApprox(x));
}

TEST(ActivationCode, BadInputsAreNamedErrors) {
  auto x = qsl::test::gaussian_rows(3, 10, 1);
  EXPECT_THAT(error_of([&] { qsl::encode_activations(x, {0}); }), HasSubstr("bits is 0"));
  EXPECT_THAT(error_of([&] { qsl::encode_activations(x, {9}); }), HasSubstr("bits is 9"));
  EXPECT_THAT(error_of([&] { qsl::encode_activations(nullptr, 1, 1, {2}); }),
              HasSubstr("x is null"));
  EXPECT_THAT(error_of([&] { qsl::encode_activations(x, {2, true, -1.0f, 0.0f}); }),
              HasSubstr("calibrated step"));
  EXPECT_THAT(error_of([&] {
                qsl::encode_activations(x, {2, true, std::numeric_limits<float>::quiet_NaN(), 0});
              }),
              HasSubstr("calibrated step"));
  x(2, 5) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(error_of([&] { qsl::encode_activations(x, {2}); }),
              HasSubstr("x has nan at row 2, col 5"));
  EXPECT_THAT(error_of([&] { qsl::calibrate_activations(x, 2); }),
              HasSubstr("x has nan at row 2, col 5"));
  EXPECT_THAT(error_of([&] { qsl::calibrate_activations(qsl::row_matrix_f(0, 4), 2); }),
              HasSubstr("0 x 4"));
  qsl::row_matrix_f huge(1, 2);
  huge << -3e38f, 3e38f;
  EXPECT_THAT(error_of([&] { qsl::encode_activations(huge, {2}); }),
              HasSubstr("spans more than the float range"));
}

}  // namespace
