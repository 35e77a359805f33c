// The per-lane math of the CUDA kernels (cuda/src/row_math.hpp), run on the host lane by lane
// with the kernels' loop structure, against the scalar reference. This runs everywhere, GPU
// or not; tests/cuda_test.cpp runs the kernels themselves when a GPU is present.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "pack.hpp"
#include "qsl/quantized_dense.hpp"
#include "row_math.hpp"
#include "test_util.hpp"

namespace {

using namespace qsl::cuda::detail;
using qsl::row_matrix_f;

double gamma_bound(double m) {
  const double u = std::numeric_limits<float>::epsilon() / 2;
  return m * u / (1 - m * u);
}

// The float-activation kernel on the host: tables for every nibble, each lane walks the groups
// of its row with lookup_nibbles (column tiles only change where the table lives), B = sum of
// T[s][15] over the group's nibbles.
template <int P, bool Ternary>
std::vector<float> lut_gemv(const layer_view& w, const float* x) {
  const std::int64_t nibbles = (w.cols + 3) / 4;
  std::vector<float> table(static_cast<std::size_t>(nibbles * 16));
  for (std::int64_t s = 0; s < nibbles; ++s)
    for (int b = 0; b < 16; ++b) {
      float sum = 0;
      for (int i = 0; i < 4; ++i)
        if (((b >> i) & 1) && 4 * s + i < w.cols) sum += x[4 * s + i];
      table[static_cast<std::size_t>(s * 16 + b)] = sum;
    }
  const auto lookup = [&](std::int64_t s, std::uint32_t v) { return table[s * 16 + v]; };
  std::vector<float> y(static_cast<std::size_t>(w.rows));
  for (std::int64_t tile = 0; tile < w.tiles; ++tile)
    for (int lane = 0; lane < 32 && tile * 32 + lane < w.rows; ++lane) {
      float out = 0;
      for (std::int64_t g = 0; g < w.groups; ++g) {
        float acc[P] = {};
        const std::int64_t a = w.group_begin(g) / 4, b = (w.group_end(g) + 3) / 4;
        lookup_nibbles<P>(w, tile, lane, a, b, lookup, acc);
        float group_sum = 0;
        for (std::int64_t n = a; n < b; ++n) group_sum += lookup(n, 15);
        out += finish_float_group<P, Ternary>(w, tile, g, lane, acc, group_sum);
      }
      y[tile * 32 + lane] = out + (w.bias ? w.bias[tile * 32 + lane] : 0.0f);
    }
  return y;
}

// The encoder and the popcount kernel on the host (the encoder's ballots are bit gathers).
template <int P, bool Ternary>
std::vector<float> popcount_gemv(const layer_view& w, const float* x, int bits) {
  const float top = static_cast<float>((1 << bits) - 1);
  const auto [lo, hi] = std::minmax_element(x, x + w.cols);
  const float minimum = *lo, step = (*hi - *lo) / top;
  const float inv_step = step == 0 ? 0.0f : 1.0f / step;
  std::vector<std::uint32_t> act(static_cast<std::size_t>(bits * w.chunks), 0);
  std::vector<std::int32_t> levels(static_cast<std::size_t>(w.groups), 0);
  for (std::int64_t c = 0; c < w.cols; ++c) {
    const std::uint32_t q = encode_level(x[c], minimum, inv_step, top);
    for (int i = 0; i < bits; ++i) act[i * w.chunks + c / 32] |= ((q >> i) & 1U) << (c % 32);
    levels[c / w.group_size] += static_cast<std::int32_t>(q);
  }
  std::vector<float> y(static_cast<std::size_t>(w.rows));
  for (std::int64_t tile = 0; tile < w.tiles; ++tile)
    for (int lane = 0; lane < 32 && tile * 32 + lane < w.rows; ++lane) {
      float z = 0;
      for (std::int64_t g = 0; g < w.groups; ++g) {
        std::int64_t acc[P] = {};
        count_group<P>(w, tile, lane, g, act.data(), bits, acc);
        z += finish_encoded_group<P, Ternary>(w, tile, g, lane, acc, levels[g]);
      }
      const std::int64_t row = tile * 32 + lane;
      y[row] = step * z + minimum * w.offsets[row] + (w.bias ? w.bias[row] : 0.0f);
    }
  return y;
}

template <class Case>
void for_planes(const qsl::weight_code& code, Case&& run) {
  const bool t = code.basis == qsl::basis::ternary;
  switch (code.bits) {
    case 1:
      return t ? run(std::integral_constant<int, 2>{}, std::true_type{})
               : run(std::integral_constant<int, 1>{}, std::false_type{});
    case 2:
      return t ? run(std::integral_constant<int, 4>{}, std::true_type{})
               : run(std::integral_constant<int, 2>{}, std::false_type{});
    default:
      return t ? run(std::integral_constant<int, 6>{}, std::true_type{})
               : run(std::integral_constant<int, 3>{}, std::false_type{});
  }
}

TEST(CudaRowMath, DecodeWeightIsReconstruct) {
  for (auto basis : {qsl::basis::binary, qsl::basis::ternary})
    for (std::int64_t cols : {1, 31, 32, 33, 100, 257}) {
      const auto code = qsl::test::random_code(45, cols, 3, basis, cols > 64 ? 64 : 0, 3);
      const auto packed = pack(code, {});
      const layer_view w = packed.view();
      const Eigen::MatrixXf expected = qsl::reconstruct(code);
      for (std::int64_t r = 0; r < code.rows; ++r)
        for (std::int64_t c = 0; c < cols; ++c)
          ASSERT_EQ(decode_weight(w, r, c), expected(r, c)) << r << ", " << c;
    }
}

// Float path: both sides sum D + groups*k + a few terms; 2A - B triples magnitudes (see
// tests/cpu_kernels_test.cpp): tolerance 6 gamma_m S.
TEST(CudaRowMath, LookUpKernelMatchesReference) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const std::int64_t rows = 1 + rng() % 70, cols = 1 + rng() % 300;
    const std::int64_t groups[] = {0, 8, 16, 24, 32, 64, 128};
    const int bits = 1 + static_cast<int>(rng() % 3);
    const auto basis = rng() % 3 == 0 ? qsl::basis::ternary : qsl::basis::binary;
    const auto code = qsl::test::random_code(rows, cols, bits, basis, groups[rng() % 7], rng());
    const std::vector<float> bias(static_cast<std::size_t>(rows), 0.5f);
    const auto packed = pack(code, bias);
    const row_matrix_f x = qsl::test::gaussian_rows(1, cols, rng());
    std::vector<float> expected(static_cast<std::size_t>(rows));
    qsl::reference::forward_float<float>(code, x.data(), 1, bias.data(), expected.data());
    std::vector<float> y;
    for_planes(code, [&](auto p, auto t) { y = lut_gemv<decltype(p)::value, decltype(t)::value>(packed.view(), x.data()); });
    const double m = static_cast<double>(cols + code.groups() * bits + 8);
    for (std::int64_t n = 0; n < rows; ++n) {
      double size = 0.5;
      for (std::int64_t c = 0; c < cols; ++c)
        for (int j = 0; j < bits; ++j)
          size += code.coefficient(n, c / code.group_size, j) * std::abs(double{x(0, c)});
      ASSERT_NEAR(y[n], expected[n], 6 * gamma_bound(m) * size) << "trial " << trial << " row " << n;
    }
  }
}

// Encoded path: with dyadic coefficients and integer inputs in [0, 2^kx) (step 1, minimum 0)
// every partial sum is exact, so the kernel math must give W_hat x exactly.
TEST(CudaRowMath, PopcountKernelIsExactOnIntegers) {
  std::mt19937 rng(12);
  for (int trial = 0; trial < 300; ++trial) {
    const std::int64_t rows = 1 + rng() % 70, cols = 2 + rng() % 300;
    const std::int64_t groups[] = {0, 8, 16, 24, 32, 64, 128};
    const int bits = 1 + static_cast<int>(rng() % 3), kx = 1 + static_cast<int>(rng() % 8);
    const auto basis = rng() % 3 == 0 ? qsl::basis::ternary : qsl::basis::binary;
    auto code = qsl::test::random_code(rows, cols, bits, basis, groups[rng() % 7], rng());
    const float dyadic[] = {0.5f, 1.0f, 2.0f, 4.0f};
    for (float& a : code.coefficients) a = dyadic[rng() % 4];
    qsl::compute_offsets(code);
    const auto packed = pack(code, {});
    row_matrix_f x(1, cols);
    for (std::int64_t c = 0; c < cols; ++c) x(0, c) = static_cast<float>(rng() % (1U << kx));
    x(0, 0) = 0;                                             // the minimum is 0 ...
    x(0, 1) = static_cast<float>((1 << kx) - 1);             // ... and the step 1
    std::vector<float> y;
    for_planes(code, [&](auto p, auto t) {
      y = popcount_gemv<decltype(p)::value, decltype(t)::value>(packed.view(), x.data(), kx);
    });
    const Eigen::VectorXd exact = qsl::reconstruct(code).cast<double>() * x.row(0).transpose().cast<double>();
    for (std::int64_t n = 0; n < rows; ++n)
      ASSERT_EQ(double{y[n]}, exact[n]) << "trial " << trial << " row " << n << " kx " << kx;
  }
}

TEST(CudaRowMath, EncoderRuleMatchesEncodeActivations) {
  const row_matrix_f x = qsl::test::gaussian_rows(1, 257, 13);
  for (int bits = 1; bits <= 8; ++bits) {
    const qsl::activation_quantizer q{bits, true, 0.21f, -0.7f};
    const auto expected = qsl::encode_activations(x, q);
    for (std::int64_t c = 0; c < 257; ++c)
      ASSERT_EQ(encode_level(x(0, c), q.minimum, 1.0f / q.step, static_cast<float>((1 << bits) - 1)),
                static_cast<std::uint32_t>(expected.level(0, c)));
  }
}

}  // namespace
