// qsl::quantized_dense: forward against reconstruct and against the formula of DESIGN.md, exact
// integer parts, sizes, shapes and errors. Typed over the activation scalar.
#include "qsl/quantized_dense.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "test_util.hpp"

namespace {

using qsl::test::error_of;
using testing::HasSubstr;

// gamma_m = m u / (1 - m u): the classic bound on the relative error of m rounded operations.
template <class Scalar>
double gamma_bound(double m) {
  const double u = std::numeric_limits<Scalar>::epsilon() / 2;
  return m * u / (1 - m * u);
}

qsl::quantized_dense_options layer_options(int bits, qsl::basis basis, std::int64_t group,
                                           int activation_bits) {
  qsl::quantized_dense_options o;
  o.weights.bits = bits;
  o.weights.basis = basis;
  o.weights.group_size = group;
  o.activation_bits = activation_bits;
  return o;
}

template <class Scalar>
class QuantizedDense : public testing::Test {};
using Scalars = testing::Types<float, double>;
TYPED_TEST_SUITE(QuantizedDense, Scalars);

// kx = 0: forward == reconstruct(code) x + b up to summation order. With m = D + groups*k +
// k + 8 and S = sum_c sum_j |alpha| |x_c| + |b|: the forward forms 2A - B per group and plane
// (A: sums of x over +1 bits, table entries of up to 4 values; B: the group's sum or its mask
// sum), within 4 gamma_m of its part of S, then sums the groups*k products (3 gamma_m);
// W_hat x sums D + 1 terms (gamma_m) after reconstruct() rounded each weight in float
// (gamma_k in float). Total: 8 gamma_m(Scalar) S + gamma_k(float) S.
TYPED_TEST(QuantizedDense, FloatActivationsMatchReconstruct) {
  using Scalar = TypeParam;
  using matrix = typename qsl::basic_quantized_dense<Scalar>::matrix;
  for (std::int64_t cols : qsl::test::edge_dims())
    for (auto basis : {qsl::basis::binary, qsl::basis::ternary})
      for (std::int64_t group : {0, 8, 64}) {
        const std::int64_t rows = cols % 2 ? 1 : 5;  // N = 1 too
        const Eigen::MatrixXf w = qsl::test::gaussian(rows, cols, 100 + cols);
        const Eigen::VectorXf b = qsl::test::gaussian(rows, 1, 200 + cols);
        const auto layer = qsl::basic_quantized_dense<Scalar>::compress(
            w, b, layer_options(2, basis, group, 0));
        const qsl::weight_code& code = layer.code();
        const Eigen::MatrixXd w_hat = qsl::reconstruct(code).cast<double>();
        for (std::int64_t batch : {1, 3, 64}) {
          const matrix x = qsl::test::gaussian_rows(batch, cols, 300 + batch).cast<Scalar>();
          const matrix y = layer.forward(x);
          ASSERT_EQ(y.rows(), batch);
          ASSERT_EQ(y.cols(), rows);
          const double m = static_cast<double>(cols + code.groups() * code.bits + code.bits + 8);
          for (std::int64_t v = 0; v < batch; ++v)
            for (std::int64_t n = 0; n < rows; ++n) {
              double expected = b[n], size = std::abs(b[n]);
              for (std::int64_t c = 0; c < cols; ++c) {
                expected += w_hat(n, c) * static_cast<double>(x(v, c));
                double alphas = 0;
                for (int j = 0; j < code.bits; ++j)
                  alphas += code.coefficient(n, c / code.group_size, j);
                size += alphas * std::abs(static_cast<double>(x(v, c)));
              }
              const double tol = (8 * gamma_bound<Scalar>(m) + gamma_bound<float>(code.bits)) *
                                 size;
              ASSERT_NEAR(static_cast<double>(y(v, n)), expected, tol)
                  << "cols " << cols << " group " << group << " batch " << batch;
            }
        }
      }
}

// Plain-loop integer part: sum over the group of (basis value) * (2 q_i - 1) bits.
std::int64_t plain_weighted_dot(const qsl::weight_code& w, std::int64_t n, std::int64_t g, int j,
                                const qsl::activation_code& x, std::int64_t v) {
  std::int64_t sum = 0;
  for (std::int64_t c = w.group_begin(g); c < w.group_end(g); ++c)
    for (int i = 0; i < x.bits; ++i) {
      const int u = ((x.level(v, c) >> i) & 1) ? 1 : -1;
      sum += static_cast<std::int64_t>(w.value(n, j, c)) * u * (std::int64_t{1} << i);
    }
  return sum;
}

TEST(QuantizedDenseReference, IntegerPartsAreExact) {
  for (auto basis : {qsl::basis::binary, qsl::basis::ternary})
    for (std::int64_t cols : {1, 63, 64, 65, 131, 257})
      for (std::int64_t group : {0, 8, 64}) {
        auto o = qsl::decompose_options{};
        o.bits = 3;
        o.basis = basis;
        o.group_size = group;
        const auto code = qsl::decompose(qsl::test::gaussian(4, cols, 7), o);
        for (int kx : {1, 2, 4, 8}) {
          const auto x = qsl::encode_activations(qsl::test::gaussian_rows(2, cols, 8), {kx});
          for (std::int64_t v = 0; v < 2; ++v)
            for (std::int64_t n = 0; n < code.rows; ++n)
              for (std::int64_t g = 0; g < code.groups(); ++g)
                for (int j = 0; j < code.bits; ++j)
                  ASSERT_EQ(qsl::reference::weighted_plane_dot(code, n, g, j, x, v),
                            plain_weighted_dot(code, n, g, j, x, v))
                      << "cols " << cols << " group " << group << " kx " << kx;
        }
      }
}

// kx > 0: forward == W_hat x_hat + b with x_hat = minimum + step * q (evaluated in double).
// The reference sums groups*k products alpha * I (I exact), then scales by step/2 and adds
// gamma * offset + b; the CPU kernels sum alpha * (m . q) (exact integers, |m . q| <=
// (|I| + (2^kx - 1) |G|) / 2) and add step * z + minimum * offset + b. Either is within
// gamma_(groups*k + 4) * T, T = the magnitudes of those terms. On top come the float roundings
// of the stored values: gamma (two operations on |minimum| + step (2^kx - 1) / 2) times
// |offset|, and the offset itself (u * sum |alpha| |G|) times |gamma| or |minimum|.
TYPED_TEST(QuantizedDense, EncodedActivationsMatchTheFormula) {
  using Scalar = TypeParam;
  using matrix = typename qsl::basic_quantized_dense<Scalar>::matrix;
  const double u_float = std::numeric_limits<float>::epsilon() / 2;
  for (std::int64_t cols : {1, 63, 64, 65, 131, 257})
    for (auto basis : {qsl::basis::binary, qsl::basis::ternary})
      for (int kx : {1, 4, 8}) {
        const Eigen::MatrixXf w = qsl::test::gaussian(6, cols, 400 + cols);
        const Eigen::VectorXf b = qsl::test::gaussian(6, 1, 500);
        const auto layer = qsl::basic_quantized_dense<Scalar>::compress(
            w, b, layer_options(2, basis, 64, kx));
        const qsl::weight_code& code = layer.code();
        const matrix x = qsl::test::gaussian_rows(3, cols, 600).cast<Scalar>();
        const matrix y = layer.forward(x);
        const qsl::row_matrix_f xf = x.template cast<float>();
        const auto encoded = qsl::encode_activations(xf, {kx});
        const Eigen::MatrixXd w_hat = qsl::reconstruct(code).cast<double>();
        for (std::int64_t v = 0; v < 3; ++v) {
          Eigen::VectorXd x_hat(cols);
          for (std::int64_t c = 0; c < cols; ++c)
            x_hat[c] = double{encoded.minimum[v]} + double{encoded.step[v]} * encoded.level(v, c);
          for (std::int64_t n = 0; n < code.rows; ++n) {
            const double expected = w_hat.row(n).dot(x_hat) + b[n];
            double terms = 0, offset_size = 0;
            for (std::int64_t g = 0; g < code.groups(); ++g)
              for (int j = 0; j < code.bits; ++j) {
                terms += code.coefficient(n, g, j) *
                         std::abs(static_cast<double>(
                             qsl::reference::weighted_plane_dot(code, n, g, j, encoded, v)));
                offset_size += code.coefficient(n, g, j) *
                               static_cast<double>(code.group_end(g) - code.group_begin(g));
              }
            const double gamma = std::abs(double{encoded.gamma(v)});
            const double gamma_size =
                std::abs(encoded.minimum[v]) + encoded.step[v] * ((1 << kx) - 1) / 2.0;
            const double t = encoded.step[v] / 2.0 * terms +
                             encoded.step[v] * ((1 << kx) - 1) * offset_size +
                             (gamma + std::abs(encoded.minimum[v])) * std::abs(code.offsets[n]) +
                             std::abs(b[n]);
            const double m = static_cast<double>(code.groups() * code.bits + 4);
            const double tol = 2 * gamma_bound<Scalar>(m) * t +
                               2 * u_float * gamma_size * std::abs(code.offsets[n]) +
                               u_float * (gamma + std::abs(encoded.minimum[v])) * offset_size;
            ASSERT_NEAR(static_cast<double>(y(v, n)), expected, tol)
                << "cols " << cols << " kx " << kx;
          }
        }
      }
}

TEST(QuantizedDenseLayer, BytesCountEverythingStored) {
  // 10 x 100, k = 2, one group per row: planes 10 rows * 2 planes * 2 words * 8 bytes = 320,
  // coefficients 10 * 1 * 2 * 4 = 80, offsets 10 * 4 = 40, bias 10 * 4 = 40.
  const Eigen::MatrixXf w = qsl::test::gaussian(10, 100, 1);
  const Eigen::VectorXf b = Eigen::VectorXf::Ones(10);
  auto layer = qsl::quantized_dense::compress(w, b, layer_options(2, qsl::basis::binary, 0, 0));
  EXPECT_EQ(layer.bytes(), 320u + 80u + 40u + 40u);
  EXPECT_EQ(layer.in_features(), 100);
  EXPECT_EQ(layer.out_features(), 10);
  EXPECT_NEAR(layer.bits_per_weight(), 480.0 * 8 / 1000, 1e-12);
  // Ternary doubles the planes; a calibrated quantizer adds its step and minimum.
  auto o = layer_options(2, qsl::basis::ternary, 0, 4);
  o.weights.calibration = qsl::test::gaussian(16, 100, 2);
  layer = qsl::quantized_dense::compress(w, o);
  EXPECT_EQ(layer.bytes(), 640u + 80u + 40u + 8u);
}

TEST(QuantizedDenseLayer, ActivationScalingFollowsOptions) {
  const Eigen::MatrixXf w = qsl::test::gaussian(4, 32, 1);
  auto o = layer_options(2, qsl::basis::binary, 0, 4);
  EXPECT_FALSE(qsl::quantized_dense::compress(w, o).activations().calibrated);
  o.weights.calibration = qsl::test::gaussian(16, 32, 2);
  const auto automatic = qsl::quantized_dense::compress(w, o).activations();
  EXPECT_TRUE(automatic.calibrated);
  EXPECT_GT(automatic.step, 0.0f);
  o.scaling = qsl::activation_scaling::per_vector;
  EXPECT_FALSE(qsl::quantized_dense::compress(w, o).activations().calibrated);
  o.activation_bits = 0;
  o.scaling = qsl::activation_scaling::automatic;
  EXPECT_EQ(qsl::quantized_dense::compress(w, o).activations().bits, 0);
}

TEST(QuantizedDenseLayer, CalibratedLayerUsesTheFixedScale) {
  const Eigen::MatrixXf w = qsl::test::gaussian(8, 64, 3);
  auto o = layer_options(2, qsl::basis::binary, 0, 2);
  o.weights.calibration = qsl::test::gaussian(64, 64, 4);
  const auto layer = qsl::quantized_dense::compress(w, o);
  const qsl::row_matrix_f x = qsl::test::gaussian_rows(2, 64, 5);
  const qsl::cpu_weights packed = qsl::pack_for_cpu(layer.code());
  qsl::row_matrix_f expected(2, 8), per_vector(2, 8);
  qsl::cpu_forward_encoded(packed, x.data(), 2, layer.activations(), nullptr, expected.data());
  qsl::cpu_forward_encoded(packed, x.data(), 2, {2}, nullptr, per_vector.data());
  EXPECT_EQ(layer.forward(x), expected);
  EXPECT_NE(layer.forward(x), per_vector);
}

TEST(QuantizedDenseLayer, StridedAndPointerForwardsAgree) {
  const Eigen::MatrixXf w = qsl::test::gaussian(7, 50, 6);
  const auto layer = qsl::quantized_dense::compress(w, layer_options(2, qsl::basis::binary, 0, 0));
  const qsl::row_matrix_f big = qsl::test::gaussian_rows(6, 80, 7);
  const qsl::row_matrix_f x = big.block(1, 10, 4, 50);
  const qsl::row_matrix_f expected = layer.forward(x);
  qsl::row_matrix_f y_big = qsl::row_matrix_f::Zero(6, 20);
  layer.forward(big.block(1, 10, 4, 50), y_big.block(2, 5, 4, 7));
  EXPECT_EQ(qsl::row_matrix_f(y_big.block(2, 5, 4, 7)), expected);
  EXPECT_TRUE(y_big.block(0, 0, 2, 20).isZero());
  qsl::row_matrix_f y(4, 7);
  layer.forward(x.data(), 4, y.data());
  EXPECT_EQ(y, expected);
  layer.forward(nullptr, 0, nullptr);  // an empty batch is not an error
}

TEST(QuantizedDenseLayer, RawPointerCompressMatchesEigen) {
  const Eigen::MatrixXf w = qsl::test::gaussian(5, 40, 8);
  const qsl::row_matrix_f rows = w;
  const Eigen::VectorXf b = qsl::test::gaussian(5, 1, 9);
  const auto o = layer_options(2, qsl::basis::binary, 8, 0);
  const auto a = qsl::quantized_dense::compress(w, b, o);
  const auto c = qsl::quantized_dense::compress(rows.data(), 5, 40, b.data(), o);
  EXPECT_EQ(a.code().signs, c.code().signs);
  EXPECT_EQ(a.code().coefficients, c.code().coefficients);
  EXPECT_EQ(a.bias(), c.bias());
}

TEST(QuantizedDenseLayer, BadInputsAreNamedErrors) {
  const Eigen::MatrixXf w = qsl::test::gaussian(4, 16, 1);
  auto compress_with = [&](auto&& change) {
    qsl::quantized_dense_options o;
    change(o);
    return error_of([&] { qsl::quantized_dense::compress(w, o); });
  };
  EXPECT_THAT(compress_with([](auto& o) { o.activation_bits = 9; }),
              HasSubstr("activation_bits is 9"));
  EXPECT_THAT(compress_with([](auto& o) { o.activation_bits = -1; }),
              HasSubstr("activation_bits is -1"));
  EXPECT_THAT(compress_with([](auto& o) {
                o.activation_bits = 2;
                o.scaling = qsl::activation_scaling::calibrated;
              }),
              HasSubstr("calibrated activations need calibration inputs"));
  EXPECT_THAT(error_of([&] { qsl::quantized_dense::compress(w, Eigen::VectorXf::Ones(3)); }),
              HasSubstr("bias has 3 values; expected 0 or 4"));
  Eigen::VectorXf nan_bias = Eigen::VectorXf::Ones(4);
  nan_bias[2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(error_of([&] { qsl::quantized_dense::compress(w, nan_bias); }),
              HasSubstr("bias has nan at 2"));
  EXPECT_THAT(error_of([&] { qsl::quantized_dense::compress(nullptr, 2, 2, nullptr); }),
              HasSubstr("w is null"));

  const auto layer = qsl::quantized_dense::compress(w);
  qsl::row_matrix_f y(2, 4);
  EXPECT_THAT(error_of([&] { layer.forward(qsl::row_matrix_f::Ones(2, 15), y); }),
              HasSubstr("x has 15 columns; expected 16 (in_features)"));
  EXPECT_THAT(error_of([&] {
                qsl::row_matrix_f wrong(2, 5);
                layer.forward(qsl::row_matrix_f::Ones(2, 16), wrong);
              }),
              HasSubstr("y is 2 x 5; expected 2 x 4"));
  EXPECT_THAT(error_of([&] { layer.forward(nullptr, 2, y.data()); }), HasSubstr("null"));
  EXPECT_THAT(error_of([&] { layer.forward(y.data(), -1, y.data()); }), HasSubstr("batch is -1"));
  EXPECT_THAT(error_of([&] { qsl::quantized_dense().forward(qsl::row_matrix_f::Ones(1, 1)); }),
              HasSubstr("the layer is empty"));

  auto encoded = qsl::quantized_dense::compress(w, layer_options(2, qsl::basis::binary, 0, 4));
  qsl::row_matrix_f x = qsl::row_matrix_f::Ones(2, 16);
  x(1, 3) = std::numeric_limits<float>::infinity();
  EXPECT_THAT(error_of([&] { encoded.forward(x); }), HasSubstr("x has inf at row 1, col 3"));
}

}  // namespace
