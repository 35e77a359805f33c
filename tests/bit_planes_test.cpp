// The integer identities of the popcount forms against plain loops over {-1, 0, +1} values.
#include "qsl/bit_planes.hpp"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace {

using qsl::word;

// Value of bit `i` as a binary basis element: +1 or -1.
int sign_of(word w, int i) { return ((w >> i) & 1) ? 1 : -1; }

TEST(BitPlanes, WordsForRoundsUp) {
  EXPECT_EQ(qsl::words_for(1), 1);
  EXPECT_EQ(qsl::words_for(63), 1);
  EXPECT_EQ(qsl::words_for(64), 1);
  EXPECT_EQ(qsl::words_for(65), 2);
  EXPECT_EQ(qsl::words_for(128), 2);
  EXPECT_EQ(qsl::words_for(129), 3);
}

TEST(BitPlanes, PopcountMatchesLoop) {
  std::mt19937_64 rng(1);
  for (int t = 0; t < 1000; ++t) {
    const word w = rng() & rng();  // vary the density
    int expected = 0;
    for (int i = 0; i < 64; ++i) expected += (w >> i) & 1;
    ASSERT_EQ(qsl::popcount(w), expected);
  }
  EXPECT_EQ(qsl::popcount(0), 0);
  EXPECT_EQ(qsl::popcount(~word{0}), 64);
}

TEST(BitPlanes, LowestBitMatchesLoop) {
  std::mt19937_64 rng(4);
  for (int t = 0; t < 1000; ++t) {
    const word w = (rng() | 1) << (rng() % 64);  // nonzero, lowest bit anywhere
    int expected = 0;
    while (!((w >> expected) & 1)) ++expected;
    ASSERT_EQ(qsl::lowest_bit(w), expected);
  }
  EXPECT_EQ(qsl::lowest_bit(word{1} << 63), 63);
}

TEST(BitPlanes, RangeMaskSelectsExactlyTheRange) {
  for (std::int64_t w = 0; w < 3; ++w)
    for (std::int64_t begin = 0; begin <= 192; begin += 7)
      for (std::int64_t end = begin; end <= 192; end += 5) {
        const word mask = qsl::range_mask(w, begin, end);
        for (int i = 0; i < 64; ++i) {
          const std::int64_t col = w * 64 + i;
          ASSERT_EQ((mask >> i) & 1, (col >= begin && col < end) ? 1U : 0U)
              << "word " << w << " range [" << begin << ", " << end << ") bit " << i;
        }
      }
}

TEST(BitPlanes, SetAndGetBit) {
  std::vector<word> plane(3, 0);
  for (std::int64_t col : {0, 5, 63, 64, 127, 128, 191}) qsl::set_bit(plane.data(), col);
  for (std::int64_t col = 0; col < 192; ++col) {
    const bool expected = col == 0 || col == 5 || col == 63 || col == 64 || col == 127 ||
                          col == 128 || col == 191;
    EXPECT_EQ(qsl::get_bit(plane.data(), col), expected) << col;
  }
}

TEST(BitPlanes, WordDotProductsMatchPlainLoops) {
  std::mt19937_64 rng(2);
  for (int t = 0; t < 2000; ++t) {
    const word m = rng(), u = rng(), nonzero = rng() & rng(), valid = rng() | rng();
    const word sign = m & nonzero;  // canonical ternary: no sign bit under a zero mask bit
    int binary = 0, ternary = 0, binary01 = 0;
    for (int i = 0; i < 64; ++i) {
      if (!((valid >> i) & 1)) continue;
      binary += sign_of(m, i) * sign_of(u, i);
      const int t_i = ((nonzero >> i) & 1) ? sign_of(sign, i) : 0;
      ternary += t_i * sign_of(u, i);
      binary01 += sign_of(m, i) * static_cast<int>((u >> i) & 1);
    }
    ASSERT_EQ(qsl::binary_dot_word(m, u, valid), binary);
    ASSERT_EQ(qsl::ternary_dot_word(sign, nonzero, u, valid), ternary);
    ASSERT_EQ(qsl::binary_dot01_word(m, u, valid), binary01);
  }
}

// Random planes of `cols` columns that obey the padding rule (zero past the last column).
std::vector<word> random_plane(std::int64_t cols, std::mt19937_64& rng) {
  std::vector<word> plane(static_cast<std::size_t>(qsl::words_for(cols)));
  for (word& w : plane) w = rng();
  plane.back() &= qsl::range_mask(static_cast<std::int64_t>(plane.size()) - 1, 0, cols);
  return plane;
}

TEST(BitPlanes, RangeDotProductsMatchPlainLoops) {
  std::mt19937_64 rng(3);
  for (std::int64_t cols : {1, 2, 7, 63, 64, 65, 127, 128, 129, 131, 257, 1000}) {
    const auto m = random_plane(cols, rng), u = random_plane(cols, rng);
    auto nonzero = random_plane(cols, rng);
    auto sign = m;
    for (std::size_t w = 0; w < sign.size(); ++w) sign[w] &= nonzero[w];
    for (int t = 0; t < 50; ++t) {
      std::int64_t begin = static_cast<std::int64_t>(rng() % cols);
      std::int64_t end = begin + 1 + static_cast<std::int64_t>(rng() % (cols - begin));
      if (t == 0) begin = 0, end = cols;  // the whole row, where padding must not count
      std::int64_t binary = 0, ternary = 0, ones = 0;
      for (std::int64_t c = begin; c < end; ++c) {
        const int mc = qsl::get_bit(m.data(), c) ? 1 : -1;
        const int uc = qsl::get_bit(u.data(), c) ? 1 : -1;
        const int tc = qsl::get_bit(nonzero.data(), c) ? (qsl::get_bit(sign.data(), c) ? 1 : -1)
                                                       : 0;
        binary += mc * uc;
        ternary += tc * uc;
        ones += qsl::get_bit(m.data(), c);
      }
      ASSERT_EQ(qsl::binary_dot(m.data(), u.data(), begin, end), binary)
          << cols << " [" << begin << ", " << end << ")";
      ASSERT_EQ(qsl::ternary_dot(sign.data(), nonzero.data(), u.data(), begin, end), ternary);
      ASSERT_EQ(qsl::count_bits(m.data(), begin, end), ones);
    }
  }
}

}  // namespace
