// The executor's fp32 GEMM (Eigen built per vector width, split over the thread pool) against a
// double-precision product, on every CPU target this machine runs and several thread counts.
#include "cpu/float_gemm.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "cpu_target_fixture.hpp"
#include "qsl/cpu.hpp"

namespace {

class FloatGemm : public qsl::test::on_each_cpu_target {};

std::vector<float> uniform(std::int64_t count, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(count));
  for (float& e : v) e = d(rng);
  return v;
}

// c = a b^T + bias in float, checked against the double product. Any order of a k-term float
// sum plus one bias add is within gamma_(k+1) (|bias| + sum |a_i b_i|), gamma_n = n u / (1 - n u)
// (Higham, Accuracy and Stability of Numerical Algorithms, 3.1); FMA only tightens it.
void check(std::int64_t m, std::int64_t k, std::int64_t n, bool with_bias, std::mt19937& rng) {
  const auto a = uniform(m * k, rng), b = uniform(n * k, rng), bias = uniform(n, rng);
  std::vector<float> c(static_cast<std::size_t>(m * n), std::numeric_limits<float>::quiet_NaN());
  qsl::detail::cpu::float_gemm_bt(a.data(), m, k, b.data(), n, with_bias ? bias.data() : nullptr,
                                  c.data());
  const double u = std::numeric_limits<float>::epsilon() / 2;
  const double gamma = static_cast<double>(k + 1) * u / (1 - static_cast<double>(k + 1) * u);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double exact = with_bias ? bias[j] : 0.0, size = std::abs(exact);
      for (std::int64_t p = 0; p < k; ++p) {
        exact += double{a[i * k + p]} * b[j * k + p];
        size += std::abs(double{a[i * k + p]} * b[j * k + p]);
      }
      ASSERT_NEAR(c[i * n + j], exact, gamma * size)
          << "m " << m << " k " << k << " n " << n << " at (" << i << ", " << j << ")";
    }
}

TEST_P(FloatGemm, MatchesTheDoubleProductOnEdgeAndRandomShapes) {
  std::mt19937 rng(11);
  for (int threads : {1, 2, 3}) {
    qsl::set_cpu_threads(threads);
    for (std::int64_t d : {1, 2, 63, 64, 65, 127, 131})
      for (bool bias : {false, true}) {
        check(d, 37, 5, bias, rng);    // split along m when m is large
        check(3, d, 70, bias, rng);    // k of every size
        check(2, 29, d * 3, bias, rng);  // split along n (m small: one input, many features)
      }
    for (int trial = 0; trial < 20; ++trial)
      check(1 + rng() % 200, 1 + rng() % 300, 1 + rng() % 300, trial % 2 == 0, rng);
  }
}

TEST_P(FloatGemm, EmptySumIsTheBias) {
  const std::vector<float> bias = {1.5f, -2.0f, 0.25f};
  std::vector<float> c(6, std::numeric_limits<float>::quiet_NaN());
  qsl::detail::cpu::float_gemm_bt(nullptr, 2, 0, nullptr, 3, bias.data(), c.data());
  for (std::size_t i = 0; i < c.size(); ++i) EXPECT_EQ(c[i], bias[i % 3]);
  qsl::detail::cpu::float_gemm_bt(nullptr, 2, 0, nullptr, 3, nullptr, c.data());
  for (float v : c) EXPECT_EQ(v, 0.0f);
}

INSTANTIATE_TEST_SUITE_P(EveryTarget, FloatGemm, testing::ValuesIn(qsl::supported_cpu_targets()),
                         [](const auto& info) { return std::string(qsl::to_string(info.param)); });

}  // namespace
