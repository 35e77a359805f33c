// The fast encoded-activation kernels on every target that has them: byte tables
// (cpu_weights::nibble_bytes: AVX2, AVX-512, NEON), word tables (cpu_weights::quint_words,
// AVX-512) and byte dots
// (planes unpacked to bytes, for batches). They compute
// the AND + popcount kernels' integers with the same float steps, so on one target each must
// agree with that path bit for bit; with dyadic coefficients and integer inputs every float step
// is exact, so they must also give the exact integer result. The scalar target has none; NEON
// runs here under qemu (tools/test-neon.sh).
#include <gtest/gtest.h>

#include <Eigen/Core>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/kernels.hpp"  // the kernels by name
#include "cpu_target_fixture.hpp"
#include "qsl/cpu.hpp"
#include "test_util.hpp"

namespace {

using qsl::row_matrix_f;
using qsl::detail::cpu::encoded_kernel;

class CpuEncodedKernels
    : public testing::TestWithParam<std::tuple<qsl::cpu_target, encoded_kernel>> {
 protected:
  void SetUp() override {
    qsl::set_cpu_target(std::get<0>(GetParam()));
    const auto& k = qsl::detail::cpu::active_kernels();
    const bool missing = kernel() == encoded_kernel::byte_tables   ? k.byte_rows == nullptr
                         : kernel() == encoded_kernel::word_tables ? k.word_rows == nullptr
                                                                   : k.dot_rows == nullptr;
    if (missing)
      GTEST_SKIP() << qsl::to_string(std::get<0>(GetParam())) << " has no "
                   << qsl::detail::cpu::to_string(kernel()) << " kernel";
  }
  static encoded_kernel kernel() { return std::get<1>(GetParam()); }

  // The layout the kernel under test reads (the target's table layout at random for byte dots,
  // which read w.words: it must not matter).
  static void add_layout_for_kernel(qsl::cpu_weights& w, bool add_layout = true) {
    if (kernel() == encoded_kernel::byte_tables)
      qsl::add_byte_tables(w);
    else if (kernel() == encoded_kernel::word_tables)
      qsl::add_word_tables(w);
    else if (add_layout)
      qsl::add_encoded_layout(w);
  }

  // The same forward through AND + popcount and through the kernel under test.
  static void forward_both(const qsl::weight_code& code, const row_matrix_f& x,
                           const qsl::activation_quantizer& q, const float* bias,
                           row_matrix_f& popcount, row_matrix_f& fast, bool add_layout = true) {
    qsl::cpu_weights w = qsl::pack_for_cpu(code);
    popcount.resize(x.rows(), code.rows);
    fast.resize(x.rows(), code.rows);
    qsl::detail::cpu::forward_encoded(w, x.data(), x.rows(), q, bias, popcount.data(),
                                      encoded_kernel::popcount);
    add_layout_for_kernel(w, add_layout);
    qsl::detail::cpu::forward_encoded(w, x.data(), x.rows(), q, bias, fast.data(), kernel());
  }

 private:
  qsl::test::cpu_settings_guard saved_;
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

bool same_bits(const row_matrix_f& a, const row_matrix_f& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)) == 0;
}

TEST_P(CpuEncodedKernels, GiveThePopcountKernelsFloatsBitForBit) {
  std::mt19937 rng(2026);
  for (int trial = 0; trial < 600; ++trial) {
    shape s = random_shape(rng);
    if (rng() % 4 == 0) s.batch = 1 + static_cast<std::int64_t>(rng() % 70);  // past 64 too
    const auto code = qsl::test::random_code(s.rows, s.cols, s.bits, s.basis, s.group, rng());
    const row_matrix_f x = qsl::test::gaussian_rows(s.batch, s.cols, rng());
    const int kx = 1 + static_cast<int>(rng() % qsl::max_activation_bits);
    qsl::activation_quantizer q{kx};
    if (rng() % 2) q = {kx, true, 0.01f, -1.3f};  // calibrated: values outside are clamped
    const std::vector<float> bias(static_cast<std::size_t>(s.rows), -0.75f);
    row_matrix_f popcount, fast;
    forward_both(code, x, q, bias.data(), popcount, fast, rng() % 2 != 0);
    ASSERT_TRUE(same_bits(popcount, fast))
        << describe(s) << " kx=" << kx << " trial " << trial << "\npopcount\n"
        << popcount << "\n"
        << qsl::detail::cpu::to_string(kernel()) << "\n"
        << fast;
  }
}

// Every level at its top (q = 255) on long groups: the 16-bit partial sums of the kernels would
// wrap if they were not flushed (byte tables: after 64 octets; byte dots: after 64 nibbles; word
// tables: after 51 quints, 255 columns, so a group of 272 has one flush inside it), and
// the result is an exact integer to compare with. Rows 3 and 12 (one in each half of a tile)
// have every weight of plane 0 set, so their plane sums reach 255 x the group's columns: 65280
// at 256 columns, the most the byte tables' one-flush path for whole-quad groups adds in 16 bits,
// and 69360 at 272, which would wrap there.
TEST_P(CpuEncodedKernels, LongGroupsOfTopLevelsAreExact) {
  for (std::int64_t cols : {256, 1500, 4099})
    for (std::int64_t group : {std::int64_t{0}, std::int64_t{256}, std::int64_t{272},
                               std::int64_t{1032}})
      for (auto basis : {qsl::basis::binary, qsl::basis::ternary}) {
        auto code = qsl::test::random_code(19, cols, 2, basis, group, 7);
        for (std::int64_t row : {3, 12})
          for (std::int64_t c = 0; c < cols; ++c) {
            qsl::set_bit(code.sign_plane(row, 0), c);
            if (qsl::word* mask = code.mask_plane(row, 0)) qsl::set_bit(mask, c);
          }
        std::mt19937 rng(static_cast<std::uint32_t>(cols + group));
        for (float& a : code.coefficients) a = rng() % 2 ? 0.5f : 2.0f;
        qsl::compute_offsets(code);
        row_matrix_f x = row_matrix_f::Constant(2, cols, 255.0f);
        for (std::int64_t c = 0; c < cols; c += 3) x(1, c) = static_cast<float>(rng() % 256);
        row_matrix_f popcount, y;
        forward_both(code, x, {8, true, 1.0f, 0.0f}, nullptr, popcount, y);
        const Eigen::MatrixXd exact =
            x.cast<double>() * qsl::reconstruct(code).cast<double>().transpose();
        for (std::int64_t v = 0; v < 2; ++v)
          for (std::int64_t n = 0; n < 19; ++n)
            ASSERT_EQ(double{y(v, n)}, exact(v, n))
                << cols << " cols, group " << group << ", vector " << v << ", row " << n;
      }
}

TEST_P(CpuEncodedKernels, IntegerInputsGiveExactResults) {
  std::mt19937 rng(31);
  for (int trial = 0; trial < 200; ++trial) {
    const shape s = random_shape(rng);
    auto code = qsl::test::random_code(s.rows, s.cols, s.bits, s.basis, s.group, rng());
    const float dyadic[] = {0.25f, 0.5f, 1.0f, 2.0f};
    for (float& a : code.coefficients) a = dyadic[rng() % 4];
    qsl::compute_offsets(code);
    const int kx = 1 + static_cast<int>(rng() % qsl::max_activation_bits);
    row_matrix_f x(s.batch, s.cols);
    for (std::int64_t i = 0; i < x.size(); ++i)
      x.data()[i] = static_cast<float>(rng() % (1U << kx));  // q = x with step 1, minimum 0
    const Eigen::MatrixXd exact =
        x.cast<double>() * qsl::reconstruct(code).cast<double>().transpose();
    row_matrix_f popcount, fast;
    forward_both(code, x, {kx, true, 1.0f, 0.0f}, nullptr, popcount, fast);
    for (std::int64_t v = 0; v < s.batch; ++v)
      for (std::int64_t n = 0; n < s.rows; ++n)
        ASSERT_EQ(double{fast(v, n)}, exact(v, n)) << describe(s) << " kx " << kx;
  }
}

TEST_P(CpuEncodedKernels, ThreadsAndBatchDoNotChangeResults) {
  const auto code = qsl::test::random_code(300, 1000, 3, qsl::basis::ternary, 128, 8);
  qsl::cpu_weights packed = qsl::pack_for_cpu(code);
  add_layout_for_kernel(packed);
  const row_matrix_f x = qsl::test::gaussian_rows(7, 1000, 9);
  auto run = [&](const float* in, std::int64_t batch, float* out) {
    qsl::detail::cpu::forward_encoded(packed, in, batch, {8}, nullptr, out, kernel());
  };
  row_matrix_f one_thread(7, 300), two_threads(7, 300);
  qsl::set_cpu_threads(1);
  run(x.data(), 7, one_thread.data());
  qsl::set_cpu_threads(2);
  run(x.data(), 7, two_threads.data());
  EXPECT_TRUE(same_bits(one_thread, two_threads));
  for (std::int64_t v = 0; v < 7; ++v) {
    row_matrix_f alone(1, 300);
    run(x.row(v).data(), 1, alone.data());
    EXPECT_TRUE(same_bits(alone, row_matrix_f(one_thread.row(v)))) << "vector " << v;
  }
}

// Batches past one block of 64 vectors (each block encoded and run in turn).
TEST_P(CpuEncodedKernels, LargeBatchesMatchThePopcountPath) {
  const auto code = qsl::test::random_code(40, 200, 2, qsl::basis::binary, 64, 12);
  const row_matrix_f x = qsl::test::gaussian_rows(130, 200, 13);
  const std::vector<float> bias(40, 0.5f);
  row_matrix_f popcount, fast;
  forward_both(code, x, {8}, bias.data(), popcount, fast);
  EXPECT_TRUE(same_bits(popcount, fast));
}

INSTANTIATE_TEST_SUITE_P(EveryTarget, CpuEncodedKernels,
                         testing::Combine(testing::ValuesIn(qsl::supported_cpu_targets()),
                                          testing::Values(encoded_kernel::byte_tables,
                                                          encoded_kernel::word_tables,
                                                          encoded_kernel::byte_dots)),
                         [](const auto& info) {
                           const encoded_kernel kernel = std::get<1>(info.param);
                           return std::string(qsl::to_string(std::get<0>(info.param))) +
                                  (kernel == encoded_kernel::byte_tables   ? "_ByteTables"
                                   : kernel == encoded_kernel::word_tables ? "_WordTables"
                                                                           : "_ByteDots");
                         });

// What cpu_forward_encoded takes: AND + popcount without the target's table layout or below
// cpu_byte_tables_min_bits(); with them the target's table kernel (word tables on AVX-512, byte
// tables on AVX2), and byte dots from cpu_byte_dots_min_batch() vectors on. A kernel the target
// or layer lacks is a named error, not a crash.
class CpuEncodedDispatch : public qsl::test::on_each_cpu_target {};

TEST_P(CpuEncodedDispatch, TakesTheDocumentedKernel) {
  using qsl::detail::cpu::fastest_encoded_kernel;
  const auto code = qsl::test::random_code(20, 100, 2, qsl::basis::binary, 0, 4);
  qsl::cpu_weights w = qsl::pack_for_cpu(code);
  const std::int64_t dots = qsl::cpu_byte_dots_min_batch();
  const int tables = qsl::cpu_byte_tables_min_bits();
  const auto& k = qsl::detail::cpu::active_kernels();
  const row_matrix_f x = qsl::test::gaussian_rows(1, 100, 5);
  row_matrix_f y(1, 20);
  for (std::int64_t batch : {std::int64_t{1}, std::int64_t{64}})
    EXPECT_EQ(fastest_encoded_kernel(w, batch, 8), encoded_kernel::popcount) << "no byte layout";
  for (auto kernel : {encoded_kernel::byte_tables, encoded_kernel::word_tables})
    EXPECT_THROW(qsl::detail::cpu::forward_encoded(w, x.data(), 1, {8}, nullptr, y.data(), kernel),
                 qsl::error)
        << qsl::detail::cpu::to_string(kernel) << " without its layout";
  if (k.dot_rows == nullptr) {
    EXPECT_EQ(dots, std::numeric_limits<std::int64_t>::max());
    EXPECT_THROW(qsl::detail::cpu::forward_encoded(w, x.data(), 1, {8}, nullptr, y.data(),
                                                   encoded_kernel::byte_dots),
                 qsl::error);
  }
  // The other target's layout alone is not enough: the kernel needs its own.
  const encoded_kernel table_kernel =
      k.word_rows != nullptr ? encoded_kernel::word_tables : encoded_kernel::byte_tables;
  qsl::cpu_weights other = w;
  if (table_kernel == encoded_kernel::word_tables)
    qsl::add_byte_tables(other);
  else
    qsl::add_word_tables(other);
  EXPECT_EQ(fastest_encoded_kernel(other, 1, 8), encoded_kernel::popcount);
  qsl::add_encoded_layout(w);
  EXPECT_EQ(w.quint_words.empty(), k.word_rows == nullptr);
  EXPECT_EQ(w.nibble_bytes.empty(), k.word_rows != nullptr || k.byte_rows == nullptr);
  if (tables > qsl::max_activation_bits) {
    EXPECT_EQ(fastest_encoded_kernel(w, 64, 8), encoded_kernel::popcount);
    return;
  }
  EXPECT_EQ(fastest_encoded_kernel(w, 1, tables), table_kernel);
  if (tables > 1) {
    EXPECT_EQ(fastest_encoded_kernel(w, 1, tables - 1), encoded_kernel::popcount);
  }
  EXPECT_GE(dots, k.dot_min_batch) << "one vector never repays the unpacking";
  if (dots != std::numeric_limits<std::int64_t>::max()) {
    EXPECT_EQ(fastest_encoded_kernel(w, dots, tables), encoded_kernel::byte_dots);
    EXPECT_EQ(fastest_encoded_kernel(w, dots - 1, 8), table_kernel);
  }
}

INSTANTIATE_TEST_SUITE_P(EveryTarget, CpuEncodedDispatch,
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

// The word layout: three quints of 5 columns per 16-bit word, each group's quints counted from
// its first column; adding it twice changes nothing; every bit of the code is found where
// cpu_weights documents it, and every other bit (past a group's end, bit 15) is 0.
TEST(WordTableLayout, HoldsEveryBitOnceAndIsIdempotent) {
  for (std::int64_t group : {std::int64_t{0}, std::int64_t{24}, std::int64_t{128}}) {
    const auto code = qsl::test::random_code(21, 75, 2, qsl::basis::ternary, group, 3);
    qsl::cpu_weights w = qsl::pack_for_cpu(code);
    const std::size_t before = w.bytes();
    qsl::add_word_tables(w);
    const std::int64_t size = w.group_size;  // 75 for group 0 (the whole row) and for 128
    ASSERT_EQ(w.word_slots, ((size + 4) / 5 + 2) / 3) << "group " << group;
    ASSERT_EQ(w.quint_words.size(),
              static_cast<std::size_t>(w.tiles * w.groups * w.word_slots * w.planes * 16));
    EXPECT_EQ(w.bytes(), before + 2 * w.quint_words.size());
    const auto layout = w.quint_words;
    qsl::add_word_tables(w);
    EXPECT_EQ(w.quint_words, layout);
    for (std::int64_t n = 0; n < w.tiles * 16; ++n)
      for (int p = 0; p < w.planes; ++p) {
        const qsl::word* plane = n >= code.rows  ? nullptr
                                 : p < code.bits ? code.sign_plane(n, p)
                                                 : code.mask_plane(n, p - 2);
        for (std::int64_t g = 0; g < w.groups; ++g)
          for (std::int64_t s = 0; s < w.word_slots; ++s) {
            const std::uint16_t word = w.group_words(n / 16, g)[(s * w.planes + p) * 16 + n % 16];
            for (int b = 0; b < 16; ++b) {
              const std::int64_t c = g * size + (3 * s + b / 5) * 5 + b % 5;
              const bool inside = b < 15 && c < std::min((g + 1) * size, code.cols);
              const int expected = inside && plane ? static_cast<int>(qsl::get_bit(plane, c)) : 0;
              ASSERT_EQ((word >> b) & 1, expected) << "group " << group << " row " << n << " plane "
                                                   << p << " slot " << s << " bit " << b;
            }
          }
      }
  }
}

}  // namespace
