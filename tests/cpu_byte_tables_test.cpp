// The byte-table kernels of encoded activations (cpu_weights::nibble_bytes) on every target
// that has them (scalar and NEON have none: AND + popcount is faster there): they compute the popcount kernels' integers with the same float steps, so on
// one target the two paths must agree bit for bit; with dyadic coefficients and integer inputs
// every float step is exact, so they must also give the exact integer result.
#include <gtest/gtest.h>

#include <Eigen/Core>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/kernels.hpp"  // which targets have byte-table kernels
#include "cpu_target_fixture.hpp"
#include "qsl/cpu.hpp"
#include "test_util.hpp"

namespace {

using qsl::row_matrix_f;

class CpuByteTables : public qsl::test::on_each_cpu_target {
 protected:
  void SetUp() override {
    on_each_cpu_target::SetUp();
    if (qsl::detail::cpu::active_kernels().byte_rows == nullptr)
      GTEST_SKIP() << qsl::to_string(GetParam()) << " has no byte-table kernel (AND + popcount)";
  }
};

struct shape {
  std::int64_t rows, cols, group, batch;
  int bits;
  qsl::basis basis;
};

std::string describe(const shape& s) {
  return std::to_string(s.rows) + "x" + std::to_string(s.cols) + " k=" + std::to_string(s.bits) +
         (s.basis == qsl::basis::ternary ? " ternary" : " binary") +
         " group=" + std::to_string(s.group) + " batch=" + std::to_string(s.batch);
}

// Edge columns around octets (8), quads (16), chunks (32) and words (64), primes, and groups
// that start or end inside a quad (8, 24, 40) or span many 16-bit flushes (520, 0 = per row).
shape random_shape(std::mt19937& rng) {
  const std::int64_t edge_cols[] = {1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 63, 64, 65, 131, 257};
  const std::int64_t edge_rows[] = {1, 15, 16, 17, 31, 33};
  const std::int64_t groups[] = {0, 8, 16, 24, 40, 64, 128, 520};
  shape s{};
  s.cols = rng() % 2 ? edge_cols[rng() % 16] : 1 + static_cast<std::int64_t>(rng() % 700);
  s.rows = rng() % 2 ? edge_rows[rng() % 6] : 1 + static_cast<std::int64_t>(rng() % 40);
  s.group = groups[rng() % 8];
  s.batch = 1 + static_cast<std::int64_t>(rng() % 3);
  s.bits = 1 + static_cast<int>(rng() % 8);
  s.basis = rng() % 3 == 0 ? qsl::basis::ternary : qsl::basis::binary;
  return s;
}

// The same forward on the words alone (AND + popcount) and with the byte layout added.
void forward_both(const qsl::weight_code& code, const row_matrix_f& x,
                  const qsl::activation_quantizer& q, const float* bias, row_matrix_f& popcount,
                  row_matrix_f& bytes) {
  const qsl::cpu_weights words = qsl::pack_for_cpu(code);
  qsl::cpu_weights with_bytes = words;
  qsl::add_byte_tables(with_bytes);
  popcount.resize(x.rows(), code.rows);
  bytes.resize(x.rows(), code.rows);
  qsl::cpu_forward_encoded(words, x.data(), x.rows(), q, bias, popcount.data());
  qsl::cpu_forward_encoded(with_bytes, x.data(), x.rows(), q, bias, bytes.data());
}

bool same_bits(const row_matrix_f& a, const row_matrix_f& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)) == 0;
}

TEST_P(CpuByteTables, GiveThePopcountKernelsFloatsBitForBit) {
  std::mt19937 rng(2026);
  for (int trial = 0; trial < 600; ++trial) {
    const shape s = random_shape(rng);
    const auto code = qsl::test::random_code(s.rows, s.cols, s.bits, s.basis, s.group, rng());
    const row_matrix_f x = qsl::test::gaussian_rows(s.batch, s.cols, rng());
    const int kx = qsl::cpu_byte_tables_min_bits() +
                   static_cast<int>(rng() % (qsl::max_activation_bits -
                                             qsl::cpu_byte_tables_min_bits() + 1));
    qsl::activation_quantizer q{kx};
    if (rng() % 2) q = {kx, true, 0.01f, -1.3f};  // calibrated: values outside are clamped
    const std::vector<float> bias(static_cast<std::size_t>(s.rows), -0.75f);
    row_matrix_f popcount, bytes;
    forward_both(code, x, q, bias.data(), popcount, bytes);
    ASSERT_TRUE(same_bits(popcount, bytes))
        << describe(s) << " kx=" << kx << " trial " << trial << "\npopcount\n"
        << popcount << "\nbyte tables\n"
        << bytes;
  }
}

// Every level at its top (q = 255) on long groups: the 16-bit partial sums would wrap after
// 64 octets if they were not flushed, and the result is an exact integer to compare with.
TEST_P(CpuByteTables, LongGroupsOfTopLevelsAreExact) {
  for (std::int64_t cols : {1500, 4099})
    for (std::int64_t group : {std::int64_t{0}, std::int64_t{1032}})
      for (auto basis : {qsl::basis::binary, qsl::basis::ternary}) {
        auto code = qsl::test::random_code(19, cols, 2, basis, group, 7);
        std::mt19937 rng(static_cast<std::uint32_t>(cols + group));
        for (float& a : code.coefficients) a = rng() % 2 ? 0.5f : 2.0f;
        qsl::compute_offsets(code);
        row_matrix_f x = row_matrix_f::Constant(2, cols, 255.0f);
        for (std::int64_t c = 0; c < cols; c += 3) x(1, c) = static_cast<float>(rng() % 256);
        qsl::cpu_weights packed = qsl::pack_for_cpu(code);
        qsl::add_byte_tables(packed);
        row_matrix_f y(2, 19);
        qsl::cpu_forward_encoded(packed, x.data(), 2, {8, true, 1.0f, 0.0f}, nullptr, y.data());
        const Eigen::MatrixXd exact =
            x.cast<double>() * qsl::reconstruct(code).cast<double>().transpose();
        for (std::int64_t v = 0; v < 2; ++v)
          for (std::int64_t n = 0; n < 19; ++n)
            ASSERT_EQ(double{y(v, n)}, exact(v, n))
                << cols << " cols, group " << group << ", vector " << v << ", row " << n;
      }
}

TEST_P(CpuByteTables, IntegerInputsGiveExactResults) {
  std::mt19937 rng(31);
  for (int trial = 0; trial < 200; ++trial) {
    const shape s = random_shape(rng);
    auto code = qsl::test::random_code(s.rows, s.cols, s.bits, s.basis, s.group, rng());
    const float dyadic[] = {0.25f, 0.5f, 1.0f, 2.0f};
    for (float& a : code.coefficients) a = dyadic[rng() % 4];
    qsl::compute_offsets(code);
    const int kx = qsl::cpu_byte_tables_min_bits() +
                   static_cast<int>(rng() % (qsl::max_activation_bits -
                                             qsl::cpu_byte_tables_min_bits() + 1));
    row_matrix_f x(s.batch, s.cols);
    for (std::int64_t i = 0; i < x.size(); ++i)
      x.data()[i] = static_cast<float>(rng() % (1U << kx));  // q = x with step 1, minimum 0
    const Eigen::MatrixXd exact =
        x.cast<double>() * qsl::reconstruct(code).cast<double>().transpose();
    row_matrix_f popcount, bytes;
    forward_both(code, x, {kx, true, 1.0f, 0.0f}, nullptr, popcount, bytes);
    for (std::int64_t v = 0; v < s.batch; ++v)
      for (std::int64_t n = 0; n < s.rows; ++n)
        ASSERT_EQ(double{bytes(v, n)}, exact(v, n)) << describe(s) << " kx " << kx;
  }
}

TEST_P(CpuByteTables, ThreadsAndBatchDoNotChangeResults) {
  const auto code = qsl::test::random_code(300, 1000, 3, qsl::basis::ternary, 128, 8);
  qsl::cpu_weights packed = qsl::pack_for_cpu(code);
  qsl::add_byte_tables(packed);
  const row_matrix_f x = qsl::test::gaussian_rows(7, 1000, 9);
  row_matrix_f one_thread(7, 300), two_threads(7, 300);
  qsl::set_cpu_threads(1);
  qsl::cpu_forward_encoded(packed, x.data(), 7, {8}, nullptr, one_thread.data());
  qsl::set_cpu_threads(2);
  qsl::cpu_forward_encoded(packed, x.data(), 7, {8}, nullptr, two_threads.data());
  EXPECT_TRUE(same_bits(one_thread, two_threads));
  for (std::int64_t v = 0; v < 7; ++v) {
    row_matrix_f alone(1, 300);
    qsl::cpu_forward_encoded(packed, x.row(v).data(), 1, {8}, nullptr, alone.data());
    EXPECT_TRUE(same_bits(alone, row_matrix_f(one_thread.row(v)))) << "vector " << v;
  }
}

// Batches past one block of 64 vectors (each block encoded and run in turn).
TEST_P(CpuByteTables, LargeBatchesMatchThePopcountPath) {
  const auto code = qsl::test::random_code(40, 200, 2, qsl::basis::binary, 64, 12);
  const row_matrix_f x = qsl::test::gaussian_rows(130, 200, 13);
  const std::vector<float> bias(40, 0.5f);
  row_matrix_f popcount, bytes;
  forward_both(code, x, {8}, bias.data(), popcount, bytes);
  EXPECT_TRUE(same_bits(popcount, bytes));
}

INSTANTIATE_TEST_SUITE_P(EveryTarget, CpuByteTables,
                         testing::ValuesIn(qsl::supported_cpu_targets()),
                         [](const auto& info) { return std::string(qsl::to_string(info.param)); });

// The layout itself: one byte per row, plane and pair of nibbles; adding it twice changes
// nothing; every nibble of the words is found where cpu_weights documents it.
TEST(ByteTableLayout, HoldsEveryNibbleOnceAndIsIdempotent) {
  const auto code = qsl::test::random_code(21, 75, 2, qsl::basis::ternary, 24, 3);
  qsl::cpu_weights w = qsl::pack_for_cpu(code);
  const std::size_t before = w.bytes();
  qsl::add_byte_tables(w);
  ASSERT_EQ(w.quads, 5);  // ceil(75 / 16)
  ASSERT_EQ(w.nibble_bytes.size(), static_cast<std::size_t>(w.tiles * w.quads * w.planes * 32));
  EXPECT_EQ(w.bytes(), before + w.nibble_bytes.size());
  const auto layout = w.nibble_bytes;
  qsl::add_byte_tables(w);
  EXPECT_EQ(w.nibble_bytes, layout);
  for (std::int64_t n = 0; n < code.rows; ++n)
    for (int p = 0; p < w.planes; ++p) {
      const qsl::word* plane = p < code.bits ? code.sign_plane(n, p) : code.mask_plane(n, p - 2);
      for (std::int64_t c = 0; c < w.quads * 16; ++c) {
        const std::int64_t s = c / 4, within = s % 4;
        const std::int64_t r = n % 16, b = r < 8 ? 2 * r : 2 * (r - 8) + 1;
        const std::uint8_t byte = w.quad_bytes(n / 16, s / 4)[(2 * p + within % 2) * 16 + b];
        const int bit = (byte >> (4 * (within / 2) + c % 4)) & 1;
        ASSERT_EQ(bit, c < code.cols ? static_cast<int>(qsl::get_bit(plane, c)) : 0)
            << "row " << n << " plane " << p << " col " << c;
      }
    }
}

}  // namespace
