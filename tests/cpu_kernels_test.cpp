// Every CPU kernel on every target this machine runs, against the scalar reference
// (qsl/reference.hpp): exact integer parts, derived float tolerances, random and edge shapes,
// and thread counts that must not change a bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <atomic>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cpu/kernels.hpp"  // the encoder, to check its bits directly
#include "cpu/thread_pool.hpp"  // external executors (ONNX Runtime's threads)
#include "cpu_target_fixture.hpp"
#include "qsl/cpu.hpp"
#include "qsl/quantized_dense.hpp"
#include "test_util.hpp"

namespace {

using qsl::row_matrix_f;

double gamma_bound(double m) {
  const double u = std::numeric_limits<float>::epsilon() / 2;
  return m * u / (1 - m * u);
}

class CpuKernels : public qsl::test::on_each_cpu_target {};

// A random shape: small enough for thousands of cases, with the edges drawn often.
struct shape {
  std::int64_t rows, cols, group, batch;
  int bits;
  qsl::basis basis;
};

shape random_shape(std::mt19937& rng) {
  const std::int64_t edge_cols[] = {1, 7, 8, 31, 32, 33, 63, 64, 65, 127, 128, 129, 131, 257};
  const std::int64_t edge_rows[] = {1, 2, 15, 16, 17, 31, 33};
  const std::int64_t groups[] = {0, 8, 16, 24, 32, 40, 64, 128};
  const std::int64_t batches[] = {1, 1, 2, 3, 5};
  shape s{};
  s.cols = rng() % 2 ? edge_cols[rng() % 14] : 1 + static_cast<std::int64_t>(rng() % 300);
  s.rows = rng() % 2 ? edge_rows[rng() % 7] : 1 + static_cast<std::int64_t>(rng() % 40);
  s.group = groups[rng() % 8];
  s.batch = batches[rng() % 5];
  s.bits = 1 + static_cast<int>(rng() % 8);
  s.basis = rng() % 3 == 0 ? qsl::basis::ternary : qsl::basis::binary;
  return s;
}

std::string describe(const shape& s) {
  return std::to_string(s.rows) + "x" + std::to_string(s.cols) + " k=" + std::to_string(s.bits) +
         (s.basis == qsl::basis::ternary ? " ternary" : " binary") +
         " group=" + std::to_string(s.group) + " batch=" + std::to_string(s.batch);
}

// Float activations: kernel and reference each sum D + groups*k + a few terms per output, so
// each is within gamma_m * 3 S of the exact value (2A - B triples the magnitudes), S =
// sum_c sum_j |alpha| |x_c| + |b|. Together: 6 gamma_m S.
// The decoded path (a GEMM on W_hat decoded in float) meets the same bound: decoding rounds
// each weight within gamma_k sum_j |alpha|, the GEMM adds gamma_(cols+1) of S.
using float_driver = void (*)(const qsl::cpu_weights&, const float*, std::int64_t, const float*,
                              float*);
void expect_float_path_matches(const qsl::weight_code& code, const row_matrix_f& x,
                               const std::vector<float>& bias, const std::string& what,
                               float_driver driver = qsl::cpu_forward_float) {
  const qsl::cpu_weights packed = qsl::pack_for_cpu(code);
  row_matrix_f y(x.rows(), code.rows), expected(x.rows(), code.rows);
  driver(packed, x.data(), x.rows(), bias.data(), y.data());
  qsl::reference::forward_float<float>(code, x.data(), x.rows(), bias.data(), expected.data());
  const double m = static_cast<double>(code.cols + code.groups() * code.bits + 8);
  for (std::int64_t v = 0; v < x.rows(); ++v)
    for (std::int64_t n = 0; n < code.rows; ++n) {
      double size = std::abs(bias[n]);
      for (std::int64_t c = 0; c < code.cols; ++c)
        for (int j = 0; j < code.bits; ++j)
          size += code.coefficient(n, c / code.group_size, j) * std::abs(double{x(v, c)});
      ASSERT_NEAR(y(v, n), expected(v, n), 6 * gamma_bound(m) * size)
          << what << " vector " << v << " row " << n;
    }
}

// Encoded activations: both sides compute exact integers; the kernel sums groups*k products
// alpha * integer and finishes with step * z + minimum * offset + b, the reference with
// (step/2) * sum + gamma * offset + b. |integer| <= (2^kx - 1) |G| per plane, so each side is
// within gamma_(groups*k + 4) * T, T = step (2^kx - 1) sum |alpha| |G| + (|min| + |gamma|)
// |offset| + |b|, plus the float rounding of gamma (u (|min| + step (2^kx - 1)/2) |offset|).
void expect_encoded_path_matches(const qsl::weight_code& code, const row_matrix_f& x,
                                 const qsl::activation_quantizer& q,
                                 const std::vector<float>& bias, const std::string& what) {
  const qsl::cpu_weights packed = qsl::pack_for_cpu(code);
  row_matrix_f y(x.rows(), code.rows), expected(x.rows(), code.rows);
  qsl::cpu_forward_encoded(packed, x.data(), x.rows(), q, bias.data(), y.data());
  const qsl::activation_code encoded = qsl::encode_activations(x, q);
  qsl::reference::forward_encoded<float>(code, encoded, bias.data(), expected.data());
  const double levels = (1 << q.bits) - 1;
  const double u = std::numeric_limits<float>::epsilon() / 2;
  const double m = static_cast<double>(code.groups() * code.bits * 2 + 8);
  for (std::int64_t v = 0; v < x.rows(); ++v) {
    const double step = encoded.step[v], minimum = std::abs(encoded.minimum[v]);
    const double gamma = std::abs(encoded.gamma(v));
    for (std::int64_t n = 0; n < code.rows; ++n) {
      double alpha_size = 0;
      for (std::int64_t g = 0; g < code.groups(); ++g)
        for (int j = 0; j < code.bits; ++j)
          alpha_size += code.coefficient(n, g, j) *
                        static_cast<double>(code.group_end(g) - code.group_begin(g));
      const double offset = std::abs(code.offsets[n]);
      const double t = step * levels * alpha_size + (minimum + gamma) * offset + std::abs(bias[n]);
      const double tol = 2 * gamma_bound(m) * t + 2 * u * (minimum + step * levels / 2) * offset;
      ASSERT_NEAR(y(v, n), expected(v, n), tol) << what << " vector " << v << " row " << n;
    }
  }
}

TEST_P(CpuKernels, RandomShapesMatchTheReference) {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 1000; ++trial) {
    const shape s = random_shape(rng);
    const auto code = qsl::test::random_code(s.rows, s.cols, s.bits, s.basis, s.group, rng());
    const row_matrix_f x = qsl::test::gaussian_rows(s.batch, s.cols, rng());
    const std::vector<float> bias(static_cast<std::size_t>(s.rows), 0.25f);
    const std::string what = describe(s) + " trial " + std::to_string(trial);
    expect_float_path_matches(code, x, bias, what);
    if (HasFatalFailure()) return;
    const int kx = 1 + static_cast<int>(rng() % 8);
    qsl::activation_quantizer q{kx};
    if (rng() % 2) q = {kx, true, 0.3f, -1.1f};  // calibrated: values outside are clamped
    expect_encoded_path_matches(code, x, q, bias, what + " kx=" + std::to_string(kx));
    if (HasFatalFailure()) return;
  }
}

TEST_P(CpuKernels, LayerShapesMatchTheReference) {
  // The benchmark's configuration at a reduced size: k = 1..3, G = 128, batches 1, 3, 64.
  for (int k = 1; k <= 3; ++k)
    for (std::int64_t batch : {1, 3, 64}) {
      const auto code = qsl::test::random_code(70, 1000, k, qsl::basis::binary, 128, 40 + k);
      const row_matrix_f x = qsl::test::gaussian_rows(batch, 1000, 50);
      const std::vector<float> bias(70, -0.5f);
      expect_float_path_matches(code, x, bias, "k " + std::to_string(k));
      expect_encoded_path_matches(code, x, {4}, bias, "k " + std::to_string(k));
    }
}

// With dyadic coefficients and integer inputs every partial sum is exact in float, so the
// kernels must reproduce the integer result bit for bit: the integer parts are exact.
TEST_P(CpuKernels, IntegerInputsGiveExactResults) {
  std::mt19937 rng(99);
  for (int trial = 0; trial < 200; ++trial) {
    shape s = random_shape(rng);
    auto code = qsl::test::random_code(s.rows, s.cols, s.bits, s.basis, s.group, rng());
    const float dyadic[] = {0.5f, 1.0f, 2.0f, 4.0f};
    for (float& a : code.coefficients) a = dyadic[rng() % 4];
    qsl::compute_offsets(code);
    const int kx = 1 + static_cast<int>(rng() % 8);
    row_matrix_f x(s.batch, s.cols);
    for (std::int64_t i = 0; i < x.size(); ++i)
      x.data()[i] = static_cast<float>(rng() % (1U << kx));  // q = x with step 1, minimum 0
    const Eigen::MatrixXd w_hat = qsl::reconstruct(code).cast<double>();
    const Eigen::MatrixXd exact = x.cast<double>() * w_hat.transpose();
    const qsl::cpu_weights packed = qsl::pack_for_cpu(code);
    row_matrix_f y_float(s.batch, s.rows), y_encoded(s.batch, s.rows);
    qsl::cpu_forward_float(packed, x.data(), s.batch, nullptr, y_float.data());
    qsl::cpu_forward_encoded(packed, x.data(), s.batch, {kx, true, 1.0f, 0.0f}, nullptr,
                             y_encoded.data());
    for (std::int64_t v = 0; v < s.batch; ++v)
      for (std::int64_t n = 0; n < s.rows; ++n) {
        ASSERT_EQ(double{y_float(v, n)}, exact(v, n)) << describe(s);
        ASSERT_EQ(double{y_encoded(v, n)}, exact(v, n)) << describe(s) << " kx " << kx;
      }
  }
}

// The encoder writes the same bits as qsl::encode_activations, padding included.
TEST_P(CpuKernels, EncoderMatchesEncodeActivations) {
  std::mt19937 rng(5);
  const auto& kernels = qsl::detail::cpu::active_kernels();
  for (std::int64_t cols : {1, 31, 32, 33, 100, 257}) {
    const auto packed = qsl::pack_for_cpu(qsl::test::random_code(1, cols, 1, qsl::basis::binary,
                                                                 0, 1));
    for (int bits = 1; bits <= 8; ++bits) {
      row_matrix_f x = qsl::test::gaussian_rows(1, cols, rng());
      x(0, 0) = 1e30f;  // clamped to the top level
      const qsl::activation_quantizer q{bits, true, 0.37f, -0.9f};
      const auto expected = qsl::encode_activations(x, q);
      std::vector<std::uint32_t> planes(static_cast<std::size_t>(bits * packed.chunks), 0xDEADU);
      std::vector<std::int32_t> levels(static_cast<std::size_t>(packed.groups));
      kernels.encode(packed, x.data(), q.minimum, 1.0f / q.step, bits, planes.data(),
                     levels.data());
      std::int32_t total = 0;
      for (std::int64_t c = 0; c < cols; ++c) {
        total += expected.level(0, c);
        for (int i = 0; i < bits; ++i)
          ASSERT_EQ((planes[i * packed.chunks + c / 32] >> (c % 32)) & 1,
                    static_cast<std::uint32_t>(qsl::get_bit(expected.plane(0, i), c)))
              << "cols " << cols << " bits " << bits << " col " << c;
      }
      for (std::int64_t c = cols; c < packed.chunks * 32; ++c)
        for (int i = 0; i < bits; ++i)
          ASSERT_EQ((planes[i * packed.chunks + c / 32] >> (c % 32)) & 1, 0U) << "padding " << c;
      EXPECT_EQ(levels[0], total);
    }
  }
}

TEST_P(CpuKernels, ThreadCountDoesNotChangeResults) {
  const auto code = qsl::test::random_code(300, 777, 3, qsl::basis::binary, 64, 8);
  const auto ternary = qsl::test::random_code(300, 777, 2, qsl::basis::ternary, 0, 9);
  const row_matrix_f x = qsl::test::gaussian_rows(5, 777, 10);
  for (const auto* c : {&code, &ternary}) {
    const qsl::cpu_weights packed = qsl::pack_for_cpu(*c);
    row_matrix_f first_float, first_encoded;
    for (int threads : {1, 2, 3}) {
      qsl::set_cpu_threads(threads);
      row_matrix_f y_float(5, 300), y_encoded(5, 300);
      qsl::cpu_forward_float(packed, x.data(), 5, nullptr, y_float.data());
      qsl::cpu_forward_encoded(packed, x.data(), 5, {4}, nullptr, y_encoded.data());
      if (threads == 1) {
        first_float = y_float;
        first_encoded = y_encoded;
      } else {
        EXPECT_EQ(y_float, first_float) << threads << " threads";
        EXPECT_EQ(y_encoded, first_encoded) << threads << " threads";
      }
    }
  }
}

// An executor that runs the parts on its own threads, as ONNX Runtime's ParallelFor does, and
// counts them.
struct counting_executor {
  std::atomic<std::int64_t> parts{0};
  static void run(void* self, std::int64_t parts, void (*task)(void*, std::int64_t),
                  void* task_context) {
    auto& e = *static_cast<counting_executor*>(self);
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t)
      threads.emplace_back([&, t] {
        for (std::int64_t p = t; p < parts; p += 3) {
          task(task_context, p);
          ++e.parts;
        }
      });
    for (auto& t : threads) t.join();
  }
};

// The kernels give the same bits on another runtime's threads (and on none: sequential).
TEST_P(CpuKernels, ExternalExecutorGivesTheSameResults) {
  const auto code = qsl::test::random_code(300, 777, 3, qsl::basis::binary, 64, 8);
  const row_matrix_f x = qsl::test::gaussian_rows(5, 777, 10);
  const qsl::cpu_weights packed = qsl::pack_for_cpu(code);
  qsl::set_cpu_threads(2);
  row_matrix_f own_float(5, 300), own_encoded(5, 300);
  qsl::cpu_forward_float(packed, x.data(), 5, nullptr, own_float.data());
  qsl::cpu_forward_encoded(packed, x.data(), 5, {4}, nullptr, own_encoded.data());
  counting_executor counter;
  const qsl::detail::cpu::external_executor threaded{3, counting_executor::run, &counter};
  const qsl::detail::cpu::external_executor sequential{1, nullptr, nullptr};
  for (const auto* e : {&threaded, &sequential}) {
    const qsl::detail::cpu::scoped_executor scope(*e);
    EXPECT_EQ(qsl::detail::cpu::thread_pool::instance().size(), e->threads);
    row_matrix_f y_float(5, 300), y_encoded(5, 300);
    qsl::cpu_forward_float(packed, x.data(), 5, nullptr, y_float.data());
    qsl::cpu_forward_encoded(packed, x.data(), 5, {4}, nullptr, y_encoded.data());
    EXPECT_EQ(y_float, own_float);
    EXPECT_EQ(y_encoded, own_encoded);
  }
  EXPECT_GT(counter.parts.load(), 1);
  EXPECT_EQ(qsl::detail::cpu::thread_pool::instance().size(), 2);  // the scope has ended
}

TEST(ExternalExecutor, ExceptionsComeBackToTheCaller) {
  counting_executor counter;
  const qsl::detail::cpu::external_executor threaded{3, counting_executor::run, &counter};
  const qsl::detail::cpu::scoped_executor scope(threaded);
  auto& pool = qsl::detail::cpu::thread_pool::instance();
  EXPECT_THROW(pool.run(10, [](std::int64_t p) {
                 if (p == 4) throw std::runtime_error("part 4");
               }),
               std::runtime_error);
  // A run inside a part stays on that part's thread.
  std::atomic<int> inner{0};
  pool.run(4, [&](std::int64_t) {
    EXPECT_EQ(pool.size(), 1);
    pool.run(3, [&](std::int64_t) { ++inner; });
  });
  EXPECT_EQ(inner.load(), 12);
}

// A vector's output does not depend on the batch it is in (kernels may process several
// vectors per step, but in the same order for each).
TEST_P(CpuKernels, BatchDoesNotChangeResults) {
  for (int k : {1, 2, 3, 4, 5})
    for (auto basis : {qsl::basis::binary, qsl::basis::ternary}) {
      const auto code = qsl::test::random_code(40, 300, k, basis, 64, 20 + k);
      const qsl::cpu_weights packed = qsl::pack_for_cpu(code);
      const row_matrix_f x = qsl::test::gaussian_rows(11, 300, 30);
      row_matrix_f batch_float(11, 40), batch_encoded(11, 40);
      qsl::cpu_forward_float(packed, x.data(), 11, nullptr, batch_float.data());
      qsl::cpu_forward_encoded(packed, x.data(), 11, {4}, nullptr, batch_encoded.data());
      for (std::int64_t v = 0; v < 11; ++v) {
        row_matrix_f one_float(1, 40), one_encoded(1, 40);
        qsl::cpu_forward_float(packed, x.row(v).data(), 1, nullptr, one_float.data());
        qsl::cpu_forward_encoded(packed, x.row(v).data(), 1, {4}, nullptr, one_encoded.data());
        ASSERT_EQ(one_float, batch_float.row(v)) << "k " << k << " vector " << v;
        ASSERT_EQ(one_encoded, batch_encoded.row(v)) << "k " << k << " vector " << v;
      }
    }
}

// Large batches go through decoded W_hat and a GEMM: edge shapes on both drivers, and the
// public entry point at and past cpu_decode_min_batch (two blocks of vectors).
TEST_P(CpuKernels, DecodedPathMatchesTheReference) {
  std::mt19937 rng(77);
  for (std::int64_t rows : {1, 15, 16, 17, 63, 64, 65, 131})
    for (std::int64_t cols : {1, 31, 32, 33, 64, 65, 257})
      for (auto basis : {qsl::basis::binary, qsl::basis::ternary}) {
        const int bits = 1 + static_cast<int>(rng() % 4);
        const std::int64_t group = cols % 8 == 0 && rng() % 2 ? 8 : 0;
        const auto code = qsl::test::random_code(rows, cols, bits, basis, group, rng());
        const row_matrix_f x = qsl::test::gaussian_rows(3, cols, rng());
        const std::vector<float> bias(static_cast<std::size_t>(rows), -0.75f);
        const std::string what = std::to_string(rows) + "x" + std::to_string(cols) + " k=" +
                                 std::to_string(bits) + " group=" + std::to_string(group);
        expect_float_path_matches(code, x, bias, what, qsl::detail::cpu::forward_float_decoded);
        if (HasFatalFailure()) return;
      }
  for (std::int64_t batch : {qsl::cpu_decode_min_batch, std::int64_t{300}}) {
    const auto code = qsl::test::random_code(70, 200, 3, qsl::basis::ternary, 40, 5);
    const row_matrix_f x = qsl::test::gaussian_rows(batch, 200, 6);
    expect_float_path_matches(code, x, std::vector<float>(70, 0.5f),
                              "batch " + std::to_string(batch));
    if (HasFatalFailure()) return;
  }
}

// A layer too large to decode whole (over 2^20 weights) is decoded one row block per task
// (called directly: cpu_forward_float keeps layers this tall on the tables).
TEST_P(CpuKernels, DecodedPathByRowBlocksMatchesTheReference) {
  const auto code = qsl::test::random_code(1100, 1000, 1, qsl::basis::binary, 128, 12);
  const row_matrix_f x = qsl::test::gaussian_rows(260, 1000, 13);  // two blocks of vectors
  expect_float_path_matches(code, x, std::vector<float>(1100, 0.125f), "1100 x 1000",
                            qsl::detail::cpu::forward_float_decoded);
}

// Decoding is exact: every target (and its whole-chunk fast path for groups of 32k columns)
// gives reconstruct()'s floats, for any row range, through the public cpu_decode_rows too.
TEST_P(CpuKernels, DecodedRowsEqualReconstruct) {
  std::uint32_t seed = 3;
  for (std::int64_t cols : {1, 31, 32, 33, 64, 65, 131, 256, 257})
    for (std::int64_t group : {0, 8, 32, 64, 96, 128})
      for (auto basis : {qsl::basis::binary, qsl::basis::ternary})
        for (int bits : {1, 2, 3, 5, 8}) {
          if (group >= cols) continue;
          const auto code = qsl::test::random_code(37, cols, bits, basis, group, ++seed);
          const Eigen::MatrixXf expected = qsl::reconstruct(code);
          const qsl::cpu_weights packed = qsl::pack_for_cpu(code);
          const std::string what = std::to_string(cols) + " cols, group " +
                                   std::to_string(group) + ", k " + std::to_string(bits);
          row_matrix_f decoded(37, cols);
          qsl::detail::cpu::decode_rows(packed, 0, 37, decoded.data());
          ASSERT_EQ(decoded, expected) << what;
          row_matrix_f part(20, cols);
          qsl::cpu_decode_rows(packed, 17, 37, part.data());
          ASSERT_EQ(part, expected.bottomRows(20)) << what << ", rows 17..36";
        }
  const auto code = qsl::test::random_code(5, 64, 2, qsl::basis::binary, 32, 1);
  const qsl::cpu_weights packed = qsl::pack_for_cpu(code);
  std::vector<float> out(5 * 64);
  EXPECT_THROW(qsl::cpu_decode_rows(packed, 3, 6, out.data()), qsl::error);
  EXPECT_THROW(qsl::cpu_decode_rows(packed, 4, 3, out.data()), qsl::error);
  qsl::cpu_decode_rows(packed, 2, 2, out.data());  // an empty range is fine
}

// Integer inputs and dyadic coefficients: the GEMM on decoded weights is exact too, and no
// thread count changes a bit of it.
TEST_P(CpuKernels, DecodedPathIsExactOnIntegersAndThreadInvariant) {
  auto code = qsl::test::random_code(90, 300, 3, qsl::basis::binary, 64, 21);
  for (float& a : code.coefficients) a = 0.5f;
  qsl::compute_offsets(code);
  const std::int64_t batch = 2 * qsl::cpu_decode_min_batch + 7;
  row_matrix_f x(batch, 300);
  std::mt19937 rng(3);
  for (std::int64_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(rng() % 16);
  const Eigen::MatrixXd exact = x.cast<double>() * qsl::reconstruct(code).cast<double>().transpose();
  const qsl::cpu_weights packed = qsl::pack_for_cpu(code);
  for (int threads : {1, 2, 3}) {
    qsl::set_cpu_threads(threads);
    row_matrix_f y(batch, 90);
    qsl::cpu_forward_float(packed, x.data(), batch, nullptr, y.data());
    ASSERT_EQ(y.cast<double>(), exact) << threads << " threads";
  }
}

TEST_P(CpuKernels, BadQuantizerIsANamedError) {
  const auto packed = qsl::pack_for_cpu(qsl::test::random_code(4, 40, 2, qsl::basis::binary, 0, 1));
  const row_matrix_f x = row_matrix_f::Ones(2, 40);
  row_matrix_f y(2, 4);
  auto run = [&](qsl::activation_quantizer q) {
    return qsl::test::error_of(
        [&] { qsl::cpu_forward_encoded(packed, x.data(), 2, q, nullptr, y.data()); });
  };
  EXPECT_NE(run({0}).find("activation bits is 0"), std::string::npos);
  EXPECT_NE(run({9}).find("activation bits is 9"), std::string::npos);
  EXPECT_NE(run({2, true, -1.0f, 0.0f}).find("calibrated step"), std::string::npos);
  EXPECT_NE(run({2, true, 1.0f, std::numeric_limits<float>::infinity()}).find("calibrated step"),
            std::string::npos);
}

TEST_P(CpuKernels, NonFiniteInputIsANamedError) {
  const auto packed = qsl::pack_for_cpu(qsl::test::random_code(4, 40, 2, qsl::basis::binary, 0, 1));
  row_matrix_f x = row_matrix_f::Ones(2, 40);
  x(1, 17) = std::numeric_limits<float>::quiet_NaN();
  row_matrix_f y(2, 4);
  EXPECT_EQ(qsl::test::error_of([&] {
              qsl::cpu_forward_encoded(packed, x.data(), 2, {4}, nullptr, y.data());
            }).find("x has nan at row 1, col 17"),
            0u + std::string("encode_activations: ").size());
}

INSTANTIATE_TEST_SUITE_P(EveryTarget, CpuKernels, testing::ValuesIn(qsl::supported_cpu_targets()),
                         [](const auto& info) { return std::string(qsl::to_string(info.param)); });

// Registered twice with CTest: as is, and with QSL_CPU_TARGET=scalar in the environment.
TEST(CpuTarget, EnvironmentForcesTheTarget) {
  const char* forced = std::getenv("QSL_CPU_TARGET");
  if (forced == nullptr) {
    EXPECT_EQ(qsl::active_cpu_target(), qsl::supported_cpu_targets().back());  // the best
  } else {
    EXPECT_EQ(qsl::active_cpu_target(), qsl::parse_cpu_target(forced));
  }
}

TEST(CpuTarget, NamesRoundTripAndUnknownIsAnError) {
  for (auto t : qsl::supported_cpu_targets()) EXPECT_EQ(qsl::parse_cpu_target(qsl::to_string(t)), t);
  EXPECT_NE(qsl::test::error_of([] { qsl::parse_cpu_target("sse9"); }).find("'sse9' is unknown"),
            std::string::npos);
  EXPECT_EQ(qsl::supported_cpu_targets().front(), qsl::cpu_target::scalar);
  EXPECT_NE(qsl::test::error_of([] { qsl::set_cpu_threads(-1); }).find("n is -1"),
            std::string::npos);
  EXPECT_NE(qsl::test::error_of([] { qsl::set_cpu_threads(qsl::max_threads + 1); })
                .find("n is 1025; expected 0 (all hardware threads) to 1024"),
            std::string::npos);
}

}  // namespace
