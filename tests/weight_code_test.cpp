// Shape rules, invariants and reconstruction of qsl::weight_code.
#include "qsl/weight_code.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "qsl/error.hpp"
#include "test_util.hpp"

namespace {

using testing::HasSubstr;

using qsl::test::random_code;

TEST(WeightCode, GroupSizeResolvesToTheRule) {
  EXPECT_EQ(qsl::make_weight_code(2, 100, 2, qsl::basis::binary, 0).group_size, 100);
  EXPECT_EQ(qsl::make_weight_code(2, 100, 2, qsl::basis::binary, 128).group_size, 100);
  const auto code = qsl::make_weight_code(2, 100, 2, qsl::basis::binary, 32);
  EXPECT_EQ(code.group_size, 32);
  EXPECT_EQ(code.groups(), 4);
  EXPECT_EQ(code.group_end(3), 100);  // the last group is shorter
  EXPECT_EQ(code.words_per_plane(), 2);
  EXPECT_EQ(code.signs.size(), 2u * 2 * 2);
  EXPECT_TRUE(code.masks.empty());
  EXPECT_EQ(code.coefficients.size(), 2u * 4 * 2);
}

TEST(WeightCode, TernaryHasMasks) {
  const auto code = qsl::make_weight_code(3, 65, 2, qsl::basis::ternary, 0);
  EXPECT_EQ(code.masks.size(), code.signs.size());
  EXPECT_EQ(code.bytes(), (code.signs.size() * 2) * 8 + (code.coefficients.size() + 3) * 4);
}

TEST(WeightCode, BadShapesAreNamedErrors) {
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const qsl::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  using qsl::basis;
  EXPECT_THAT(message([] { qsl::make_weight_code(0, 8, 2, basis::binary, 0); }),
              HasSubstr("rows is 0"));
  EXPECT_THAT(message([] { qsl::make_weight_code(8, 0, 2, basis::binary, 0); }),
              HasSubstr("cols is 0"));
  EXPECT_THAT(message([] { qsl::make_weight_code(8, 8, 0, basis::binary, 0); }),
              HasSubstr("bits is 0"));
  EXPECT_THAT(message([] { qsl::make_weight_code(8, 8, 9, basis::binary, 0); }),
              HasSubstr("bits is 9"));
  EXPECT_THAT(message([] { qsl::make_weight_code(8, 64, 2, basis::binary, 12); }),
              HasSubstr("group size is 12"));
  EXPECT_THAT(message([] { qsl::make_weight_code(8, 64, 2, basis::binary, -8); }),
              HasSubstr("group size is -8"));
  EXPECT_THAT(message([] { qsl::make_weight_code(8, 64, 2, static_cast<basis>(5), 0); }),
              HasSubstr("basis is 5"));
  EXPECT_THAT(message([] { qsl::make_weight_code(1 << 30, 1 << 30, 1, basis::binary, 0); }),
              HasSubstr("rows * cols"));
}

TEST(WeightCode, ReconstructMatchesPlainLoop) {
  for (auto basis : {qsl::basis::binary, qsl::basis::ternary})
    for (std::int64_t group : {0, 8, 24, 64}) {
      const auto code = random_code(5, 131, 3, basis, group, 7);
      const Eigen::MatrixXf w = qsl::reconstruct(code);
      for (std::int64_t n = 0; n < code.rows; ++n)
        for (std::int64_t c = 0; c < code.cols; ++c) {
          float expected = 0;
          for (int j = 0; j < code.bits; ++j)
            expected += code.coefficient(n, c / code.group_size, j) *
                        static_cast<float>(code.value(n, j, c));
          ASSERT_EQ(w(n, c), expected) << n << ", " << c;
        }
    }
}

// One row decoded alone (QuantizedGather's look-up) is bit for bit that row of reconstruct,
// at edge widths too; a row outside the code is a named error.
TEST(WeightCode, ReconstructRowIsThatRowOfReconstruct) {
  for (auto basis : {qsl::basis::binary, qsl::basis::ternary})
    for (std::int64_t cols : {1, 63, 64, 65, 131})
      for (std::int64_t group : {0, 8, 24}) {
        const auto code = random_code(6, cols, 3, basis, group, 11);
        const Eigen::MatrixXf w = qsl::reconstruct(code);
        std::vector<float> row(static_cast<std::size_t>(cols), std::nanf(""));
        for (std::int64_t n = 0; n < code.rows; ++n) {
          qsl::reconstruct_row(code, n, row.data());
          for (std::int64_t c = 0; c < cols; ++c)
            ASSERT_EQ(row[static_cast<std::size_t>(c)], w(n, c)) << n << ", " << c;
        }
      }
  const auto code = random_code(6, 20, 2, qsl::basis::binary, 0, 3);
  std::vector<float> row(20);
  EXPECT_THAT(qsl::test::error_of([&] { qsl::reconstruct_row(code, 6, row.data()); }),
              HasSubstr("row 6 is outside 0..5"));
  EXPECT_THAT(qsl::test::error_of([&] { qsl::reconstruct_row(code, -1, row.data()); }),
              HasSubstr("row -1 is outside 0..5"));
}

TEST(WeightCode, OffsetsAreAlphaTimesPlaneSums) {
  for (auto basis : {qsl::basis::binary, qsl::basis::ternary}) {
    const auto code = random_code(4, 100, 2, basis, 16, 9);
    for (std::int64_t n = 0; n < code.rows; ++n) {
      double expected = 0;
      for (std::int64_t c = 0; c < code.cols; ++c)
        for (int j = 0; j < code.bits; ++j)
          expected += code.coefficient(n, c / 16, j) * code.value(n, j, c);
      EXPECT_NEAR(code.offsets[n], expected, 1e-4 * (1 + std::abs(expected)));
    }
  }
}

TEST(WeightCode, ValidateAcceptsAGoodCode) {
  EXPECT_NO_THROW(qsl::validate(random_code(3, 70, 2, qsl::basis::ternary, 8, 1)));
}

TEST(WeightCode, ValidateRejectsBrokenInvariants) {
  const auto good = random_code(3, 70, 2, qsl::basis::ternary, 8, 1);
  auto expect_rejected = [](const qsl::weight_code& code, const std::string& what) {
    try {
      qsl::validate(code, "layer fc1");
      ADD_FAILURE() << "accepted: " << what;
    } catch (const qsl::error& e) {
      EXPECT_THAT(e.what(), HasSubstr("layer fc1"));
      EXPECT_THAT(e.what(), HasSubstr(what));
    }
  };
  auto padding = good;
  padding.sign_plane(1, 0)[1] |= qsl::word{1} << 20;  // column 84 of 70
  expect_rejected(padding, "padding");
  auto sign = good;
  for (std::int64_t c = 0; c < 70; ++c)
    if (!qsl::get_bit(sign.mask_plane(0, 1), c)) {
      qsl::set_bit(sign.sign_plane(0, 1), c);
      break;
    }
  expect_rejected(sign, "zero mask bit");
  auto nan = good;
  nan.coefficients[3] = std::numeric_limits<float>::quiet_NaN();
  expect_rejected(nan, "coefficient 3");
  auto offset = good;
  offset.offsets[2] += 1.0f;
  expect_rejected(offset, "offset of row 2");
  auto short_signs = good;
  short_signs.signs.pop_back();
  expect_rejected(short_signs, "sign planes");
  auto group = good;
  group.group_size = 12;
  expect_rejected(group, "group size");
}

}  // namespace

// The ONNX operators' byte layout: column c is bit c % 8 of byte c / 8, rows and planes in
// order; reading it back gives the same planes, and a set padding bit is a named error.
TEST(WeightCode, PlaneBytesRoundTripAndRefuseSetPaddingBits) {
  for (std::int64_t cols : {1, 7, 8, 63, 64, 65, 131}) {
    const auto code = qsl::test::random_code(5, cols, 3, qsl::basis::ternary, 0, 4);
    const auto signs = qsl::plane_bytes(code, false), masks = qsl::plane_bytes(code, true);
    const std::int64_t per_plane = (cols + 7) / 8;
    ASSERT_EQ(signs.size(), static_cast<std::size_t>(5 * 3 * per_plane));
    for (std::int64_t c = 0; c < cols; ++c)  // row 2, plane 1
      EXPECT_EQ((signs[(2 * 3 + 1) * per_plane + c / 8] >> (c % 8)) & 1,
                qsl::get_bit(code.sign_plane(2, 1), c) ? 1 : 0);
    qsl::weight_code back = qsl::make_weight_code(5, cols, 3, qsl::basis::ternary, 0);
    qsl::read_plane_bytes(back, false, signs.data());
    qsl::read_plane_bytes(back, true, masks.data());
    EXPECT_EQ(back.signs, code.signs);
    EXPECT_EQ(back.masks, code.masks);
    if (cols % 8 != 0) {
      auto bad = signs;
      bad[(4 * 3 + 2) * per_plane + per_plane - 1] |= 0x80;  // row 4, plane 2, past the last col
      EXPECT_THAT(qsl::test::error_of([&] { qsl::read_plane_bytes(back, false, bad.data(), "fc"); }),
                  testing::HasSubstr("fc: row 4 sign plane 2 has bits set past column"));
    }
  }
}

// The decoded tensor's shape check the reader and the ONNX Runtime operators share.
TEST(WeightCode, ShapeHoldsWWhenItsLeadingDimsMakeTheRows) {
  EXPECT_TRUE(qsl::shape_holds_w({8, 3, 3, 3}, 8, 27, false));    // Conv [M, C, k, k]
  EXPECT_TRUE(qsl::shape_holds_w({2, 12, 5}, 24, 5, false));      // LSTM [D, G*H, I]
  EXPECT_TRUE(qsl::shape_holds_w({6}, 6, 1, false));              // one column
  EXPECT_TRUE(qsl::shape_holds_w({27, 8}, 8, 27, true));          // MatMul's W^T
  EXPECT_FALSE(qsl::shape_holds_w({8, 27}, 8, 27, true));         // W, said to be W^T
  EXPECT_TRUE(qsl::shape_holds_w({27, 2, 2, 2}, 8, 27, true));    // ConvTranspose [C, M, k, k]
  EXPECT_FALSE(qsl::shape_holds_w({2, 27, 2, 2}, 8, 27, true));   // its dims in another order
  EXPECT_FALSE(qsl::shape_holds_w({4, 6, 9}, 8, 27, false));      // no leading dims make 8
  EXPECT_FALSE(qsl::shape_holds_w({8, 3, 3, 4}, 8, 27, false));   // too many values
  EXPECT_FALSE(qsl::shape_holds_w({8, 27, 0}, 8, 27, false));     // a zero dim
  EXPECT_FALSE(qsl::shape_holds_w({}, 8, 27, false));
  EXPECT_FALSE(qsl::shape_holds_w({8, -27}, 8, 27, false));
  const std::int64_t huge = std::int64_t{1} << 40;                // no overflow on the way
  EXPECT_FALSE(qsl::shape_holds_w({huge, huge, huge}, 8, 27, false));
}
