// 8-bit activation products (qsl/cpu.hpp) on every CPU target, against the definition written
// out here in scalar code: the int8 grids of W_hat's rows (from reconstruct(), whose floats the
// decoders must reproduce) and of the vectors, exact int64 sums, the float step in its order.
// Every fast path (AVX-512's byte-shuffle and fused decoders, the generic one) must give the
// same bytes and the same floats; against the float product the error stays within its bound.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cpu/kernels.hpp"  // the integer kernel by name
#include "cpu_target_fixture.hpp"
#include "qsl/cpu.hpp"
#include "qsl/quantized_dense.hpp"
#include "test_util.hpp"

namespace {

using qsl::row_matrix_f;

class Int8Products : public qsl::test::on_each_cpu_target {};

// The grid of a row: scale = max |v| / 127, 0 when 1 / scale is not finite.
float grid_scale(const float* v, std::int64_t n) {
  float largest = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) largest = std::max(largest, std::fabs(v[i]));
  const float scale = largest / 127.0f;
  return scale > 0.0f && std::isfinite(1.0f / scale) ? scale : 0.0f;
}

int grid_point(float v, float scale) {
  const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
  return static_cast<int>(std::nearbyint(std::min(127.0f, std::max(-127.0f, v * inverse))));
}

struct grids {
  std::vector<float> scales;
  std::vector<int> q;  // rows x cols
};

grids grids_of(const row_matrix_f& m) {
  grids g;
  for (std::int64_t r = 0; r < m.rows(); ++r) {
    g.scales.push_back(grid_scale(m.row(r).data(), m.cols()));
    for (std::int64_t c = 0; c < m.cols(); ++c) g.q.push_back(grid_point(m(r, c), g.scales.back()));
  }
  return g;
}

// y by the definition: (float(sum) * sx) * sw + b.
row_matrix_f defined_product(const qsl::weight_code& code, const row_matrix_f& x,
                             const std::vector<float>& bias) {
  const row_matrix_f w = qsl::reconstruct(code);
  const grids gw = grids_of(w), gx = grids_of(x);
  row_matrix_f y(x.rows(), code.rows);
  for (std::int64_t v = 0; v < x.rows(); ++v)
    for (std::int64_t n = 0; n < code.rows; ++n) {
      std::int64_t sum = 0;
      for (std::int64_t c = 0; c < code.cols; ++c)
        sum += std::int64_t{gx.q[v * code.cols + c]} * gw.q[n * code.cols + c];
      const float product = static_cast<float>(sum) * gx.scales[v] * gw.scales[n];
      y(v, n) = bias.empty() ? product : product + bias[n];
    }
  return y;
}

TEST_P(Int8Products, DecodedGridsAreTheDefinition) {
  std::uint32_t seed = 40;
  for (std::int64_t cols : {1, 31, 32, 33, 64, 65, 131, 256, 257})
    for (std::int64_t group : {0, 8, 32, 64, 128})
      for (auto basis : {qsl::basis::binary, qsl::basis::ternary})
        for (int bits : {1, 2, 3, 4, 5}) {
          if (group >= cols) continue;
          const auto code = qsl::test::random_code(37, cols, bits, basis, group, ++seed);
          const row_matrix_f w = qsl::reconstruct(code);
          const grids expected = grids_of(w);
          const qsl::cpu_weights packed = qsl::pack_for_cpu(code);
          const std::string what = std::to_string(cols) + " cols, group " +
                                   std::to_string(group) + ", k " + std::to_string(bits) +
                                   (basis == qsl::basis::ternary ? " ternary" : " binary");
          const std::vector<float> scales = qsl::cpu_int8_row_scales(packed);
          ASSERT_EQ(scales, expected.scales) << what;
          std::vector<std::int8_t> q(static_cast<std::size_t>(20 * cols));
          std::vector<std::uint8_t> excess(q.size());
          qsl::cpu_decode_rows_int8(packed, scales.data(), 17, 37, q.data());
          qsl::cpu_decode_rows_excess128(packed, scales.data(), 17, 37, excess.data());
          for (std::size_t i = 0; i < q.size(); ++i) {
            ASSERT_EQ(q[i], expected.q[17 * cols + i]) << what << ", value " << i;
            ASSERT_EQ(excess[i], expected.q[17 * cols + i] + 128) << what << ", value " << i;
          }
        }
}

TEST_P(Int8Products, ForwardIsTheIntegerProductOnAnyThreadCount) {
  std::uint32_t seed = 7;
  for (std::int64_t cols : qsl::test::edge_dims())
    for (auto [bits, basis, group] : {std::tuple{2, qsl::basis::binary, std::int64_t{32}},
                                      std::tuple{3, qsl::basis::ternary, std::int64_t{0}},
                                      std::tuple{1, qsl::basis::binary, std::int64_t{8}},
                                      std::tuple{4, qsl::basis::binary, std::int64_t{128}}}) {
      if (group >= cols) group = 0;
      const auto code = qsl::test::random_code(41, cols, bits, basis, group, ++seed);
      row_matrix_f x = qsl::test::gaussian_rows(5, cols, ++seed);
      x.row(1) *= 1e4f;  // vectors of other magnitudes: grids of their own
      x.row(2).setZero();
      std::vector<float> bias(41);
      for (std::size_t n = 0; n < bias.size(); ++n) bias[n] = 0.25f * static_cast<float>(n);
      const row_matrix_f expected = defined_product(code, x, bias);
      const qsl::cpu_weights packed = qsl::pack_for_cpu(code);
      const std::vector<float> scales = qsl::cpu_int8_row_scales(packed);
      for (int threads : {1, 2, 3}) {
        qsl::set_cpu_threads(threads);
        row_matrix_f y(5, 41);
        qsl::cpu_forward_int8(packed, scales.data(), x.data(), 5, bias.data(), y.data());
        ASSERT_EQ(y, expected) << cols << " cols, k " << bits << ", " << threads << " threads";
      }
    }
}

// Against the float product: x = sx qx + ex, w = sw qw + ew, |ex| <= sx / 2, |ew| <= sw / 2
// (0.501: a few ulps of the scaled values), so |x w - sx sw qx qw| <= 0.501 (sx sum |w| +
// sw sum (|x| + sx)), plus the float steps' rounding of the result (4 ulps, in double here).
TEST_P(Int8Products, CloseToTheFloatProductWithinTheDerivedBound) {
  const auto code = qsl::test::random_code(70, 300, 2, qsl::basis::binary, 64, 3);
  const row_matrix_f x = qsl::test::gaussian_rows(9, 300, 4);
  const qsl::cpu_weights packed = qsl::pack_for_cpu(code);
  const std::vector<float> scales = qsl::cpu_int8_row_scales(packed);
  row_matrix_f y(9, 70);
  qsl::cpu_forward_int8(packed, scales.data(), x.data(), 9, nullptr, y.data());
  const Eigen::MatrixXd w = qsl::reconstruct(code).cast<double>();
  const Eigen::MatrixXd exact = x.cast<double>() * w.transpose();
  const double u = std::numeric_limits<float>::epsilon() / 2;
  double worst = 0;
  for (std::int64_t v = 0; v < 9; ++v) {
    const double sx = x.row(v).cwiseAbs().maxCoeff() / 127.0;
    for (std::int64_t n = 0; n < 70; ++n) {
      const double sw = scales[static_cast<std::size_t>(n)];
      const double bound = 0.501 * (sx * w.row(n).cwiseAbs().sum() +
                                    sw * (x.row(v).cast<double>().cwiseAbs().sum() + 300 * sx)) +
                           4 * u * std::fabs(exact(v, n));
      const double error = std::fabs(y(v, n) - exact(v, n));
      ASSERT_LE(error, bound) << "vector " << v << ", row " << n;
      worst = std::max(worst, error / bound);
    }
  }
  EXPECT_GT(worst, 0.01);  // the bound is not vacuous: the grids do round
}

TEST_P(Int8Products, TransposedQuantizationIsTheRowMajorOneTransposed) {
  for (std::int64_t batch : {1, 15, 16, 17, 40})
    for (std::int64_t cols : {1, 16, 33, 64, 131}) {
      row_matrix_f x = qsl::test::gaussian_rows(batch, cols, static_cast<std::uint32_t>(batch * cols));
      std::vector<std::int8_t> q(static_cast<std::size_t>(batch * cols)), q_t(q.size());
      std::vector<float> scales(static_cast<std::size_t>(batch)), scales_t(scales.size());
      qsl::quantize_vectors_int8(x.data(), batch, cols, q.data(), scales.data());
      qsl::quantize_vectors_int8_transposed(x.data(), batch, cols, q_t.data(), scales_t.data());
      ASSERT_EQ(scales, scales_t);
      for (std::int64_t v = 0; v < batch; ++v)
        for (std::int64_t c = 0; c < cols; ++c)
          ASSERT_EQ(q_t[static_cast<std::size_t>(c * batch + v)], q[static_cast<std::size_t>(v * cols + c)])
              << batch << " x " << cols << " at " << v << ", " << c;
      // Into columns 3.. of a matrix 5 columns wider: the same bytes, the other columns kept.
      const std::int64_t stride = batch + 5;
      std::vector<std::int8_t> wide(static_cast<std::size_t>(cols * stride), 99);
      qsl::quantize_vectors_int8_transposed(x.data(), batch, cols, wide.data() + 3, stride,
                                            scales_t.data());
      for (std::int64_t c = 0; c < cols; ++c)
        for (std::int64_t v = 0; v < stride; ++v) {
          const std::int8_t expected = v >= 3 && v < 3 + batch
                                           ? q[static_cast<std::size_t>((v - 3) * cols + c)]
                                           : std::int8_t{99};
          ASSERT_EQ(wide[static_cast<std::size_t>(c * stride + v)], expected)
              << batch << " x " << cols << " at column " << v << ", row " << c;
        }
    }
  std::vector<float> x(8, 1.0f), scales(4);
  std::vector<std::int8_t> q(8);
  EXPECT_THAT(qsl::test::error_of([&] {
                qsl::quantize_vectors_int8_transposed(x.data(), 4, 2, q.data(), 3, scales.data());
              }),
              testing::HasSubstr("q_stride 3 is below batch 4"));
}

// The float step reads sums laid out either way (vector-major, or the layer's rows first as
// ORT's integer GEMM returns them) and writes the same floats: 4 x 4 register blocks and the
// scalar remainders alike.
TEST_P(Int8Products, FinishIsTheDefinitionInBothLayouts) {
  std::mt19937 rng(9);
  for (std::int64_t batch : {1, 4, 7, 21})
    for (std::int64_t count : {1, 4, 67}) {
      std::vector<std::int32_t> sums(static_cast<std::size_t>(batch * count));
      for (auto& v : sums) v = static_cast<std::int32_t>(rng() % 4000000) - 2000000;
      std::vector<float> sx(static_cast<std::size_t>(batch)), sw(static_cast<std::size_t>(count + 3)),
          bias(sw.size());
      for (auto& v : sx) v = static_cast<float>(rng() % 1000) / 997.0f;
      for (auto& v : sw) v = static_cast<float>(rng() % 1000) / 991.0f;
      for (auto& v : bias) v = static_cast<float>(rng() % 1000) / 7.0f;
      const std::int64_t n0 = 3, stride = count + 5;
      row_matrix_f by_vector = row_matrix_f::Zero(batch, stride), by_row = by_vector;
      std::vector<std::int32_t> transposed(sums.size());
      for (std::int64_t v = 0; v < batch; ++v)
        for (std::int64_t i = 0; i < count; ++i)
          transposed[static_cast<std::size_t>(i * batch + v)] = sums[static_cast<std::size_t>(v * count + i)];
      qsl::finish_int8_products(sums.data(), count, 1, sx.data(), batch, sw.data(), n0, count,
                                bias.data(), by_vector.data(), stride);
      qsl::finish_int8_products(transposed.data(), 1, batch, sx.data(), batch, sw.data(), n0,
                                count, bias.data(), by_row.data(), stride);
      for (std::int64_t v = 0; v < batch; ++v)
        for (std::int64_t i = 0; i < count; ++i) {
          const float want = static_cast<float>(sums[static_cast<std::size_t>(v * count + i)]) *
                                 sx[static_cast<std::size_t>(v)] * sw[static_cast<std::size_t>(n0 + i)] +
                             bias[static_cast<std::size_t>(n0 + i)];
          ASSERT_EQ(by_vector(v, n0 + i), want) << batch << " x " << count;
          ASSERT_EQ(by_row(v, n0 + i), want) << batch << " x " << count;
        }
    }
}

TEST_P(Int8Products, EdgeValuesAndBadInputsAreNamed) {
  auto code = qsl::test::random_code(3, 40, 2, qsl::basis::binary, 0, 1);
  code.coefficients[0] = code.coefficients[1] = 0.0f;  // row 0 is all zero
  qsl::compute_offsets(code);
  const qsl::cpu_weights packed = qsl::pack_for_cpu(code);
  const std::vector<float> scales = qsl::cpu_int8_row_scales(packed);
  EXPECT_EQ(scales[0], 0.0f);
  row_matrix_f x = row_matrix_f::Constant(2, 40, 1e-40f);  // too fine a grid: counts as zero
  row_matrix_f y(2, 3);
  const float bias[3] = {1.0f, 2.0f, 3.0f};
  qsl::cpu_forward_int8(packed, scales.data(), x.data(), 2, bias, y.data());
  EXPECT_EQ(y, (row_matrix_f(2, 3) << 1, 2, 3, 1, 2, 3).finished());
  x(1, 17) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(qsl::test::error_of([&] {
              qsl::cpu_forward_int8(packed, scales.data(), x.data(), 2, nullptr, y.data());
            }).find("x has nan at row 1, col 17"),
            std::string::npos);
  std::vector<std::int8_t> q(40 * 3);
  EXPECT_NE(qsl::test::error_of([&] {
              qsl::cpu_decode_rows_int8(packed, scales.data(), 2, 4, q.data());
            }).find("rows [2, 4) are not within the layer's 3 rows"),
            std::string::npos);
  const auto wide = qsl::pack_for_cpu(
      qsl::test::random_code(1, qsl::cpu_int8_max_cols + 1, 1, qsl::basis::binary, 0, 2));
  std::vector<float> wide_x(static_cast<std::size_t>(wide.cols), 1.0f);
  float wide_y = 0;
  EXPECT_NE(qsl::test::error_of([&] {
              qsl::cpu_forward_int8(wide, scales.data(), wide_x.data(), 1, nullptr, &wide_y);
            }).find("int32 sums hold at most 133143"),
            std::string::npos);
}

TEST_P(Int8Products, QuantizedDenseForwardInt8IsTheCpuProduct) {
  const Eigen::MatrixXf w = qsl::test::gaussian_rows(33, 130, 5);
  const Eigen::VectorXf b = Eigen::VectorXf::LinSpaced(33, -1.0f, 1.0f);
  qsl::quantized_dense_options options;
  options.weights.bits = 2;
  options.weights.group_size = 32;
  const auto layer = qsl::quantized_dense::compress(w, b, options);
  const row_matrix_f x = qsl::test::gaussian_rows(6, 130, 6);
  const std::vector<float> bias(b.data(), b.data() + 33);
  row_matrix_f y(6, 33);
  layer.forward_int8(x.data(), 6, y.data());
  EXPECT_EQ(y, defined_product(layer.code(), x, bias));
  const auto copy = layer;  // shares the grids
  row_matrix_f again(6, 33);
  copy.forward_int8(x.data(), 6, again.data());
  EXPECT_EQ(again, y);
  // A layer that encodes each vector on a grid of its own: the int8 grids replace those.
  options.activation_bits = 4;
  const auto per_vector = qsl::quantized_dense::compress(w, b, options);
  row_matrix_f encoded_y(6, 33);
  per_vector.forward_int8(x.data(), 6, encoded_y.data());
  EXPECT_EQ(encoded_y, y);
  // A calibrated quantizer fixes the layer's grid: refused.
  qsl::dense_parameters p = per_vector.parameters();
  p.activations = qsl::activation_quantizer{4, true, 0.25f, -2.0f};
  const qsl::quantized_dense calibrated(std::move(p));
  EXPECT_NE(qsl::test::error_of([&] { calibrated.forward_int8(x.data(), 6, y.data()); })
                .find("encodes its activations with a calibrated 4-bit quantizer"),
            std::string::npos);
}

// The target's integer kernel against int64 sums: every tile edge (vectors 1..5: the AVX2
// kernel's tiles of 2, the VNNI kernel's of 4; past the 256-vector block; rows 1..5 and 16/17),
// columns that end mid-register (edge_dims), and all values at +-127 on the widest rows allowed,
// whose sums come within 0.1% of 2^31 (the VNNI kernel's offset sums pass 2^31 and wrap).
TEST_P(Int8Products, SumsKernelIsTheExactDotProduct) {
  const auto kernel = qsl::detail::cpu::active_kernels().int8_sums;
  if (kernel == nullptr)
    GTEST_SKIP() << "this target has no int8_sums kernel (the portable loop is the definition)";
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> value(-127, 127);
  auto check = [&](std::int64_t batch, std::int64_t count, std::int64_t cols, bool extreme) {
    std::vector<std::int8_t> x(static_cast<std::size_t>(batch * cols)),
        w(static_cast<std::size_t>(count * cols));
    for (auto& v : x) v = static_cast<std::int8_t>(extreme ? 127 : value(rng));
    for (std::size_t i = 0; i < w.size(); ++i)
      w[i] = static_cast<std::int8_t>(extreme ? 127 : value(rng));
    if (extreme) w.back() = -127;  // one sum a little below the largest
    std::vector<std::int32_t> sums(static_cast<std::size_t>(batch * count), -1);
    kernel(x.data(), batch, w.data(), count, cols, sums.data());
    for (std::int64_t v = 0; v < batch; ++v)
      for (std::int64_t i = 0; i < count; ++i) {
        std::int64_t expected = 0;
        for (std::int64_t c = 0; c < cols; ++c)
          expected += std::int64_t{x[v * cols + c]} * w[i * cols + c];
        ASSERT_EQ(sums[v * count + i], expected)
            << batch << " vectors, " << count << " rows, " << cols << " cols: vector " << v
            << ", row " << i;
      }
  };
  for (std::int64_t cols : qsl::test::edge_dims())
    for (std::int64_t count : {1, 2, 3, 4, 5, 16, 17})
      for (std::int64_t batch : {1, 2, 3, 4, 5}) check(batch, count, cols, false);
  for (std::int64_t batch : {255, 256, 257, 513}) check(batch, 5, 47, false);
  for (std::int64_t batch : {3, 4}) check(batch, 3, qsl::cpu_int8_max_cols, true);
}

// The tile kernel (int8_tile_sums: products straight from the code, AVX-512 with VNNI, BITALG
// and VBMI) gives the integers of the decoded rows' grids times x's, exactly: every block of
// vectors (16, 8, 4, 2, 1 at a time), partial tiles and chunks, one group per row or groups of
// whole chunks, binary 1-4 bits and ternary 1-2, extreme levels (the sums of 255 x 127 wrap
// in between); codes it does not take are refused, and forward_int8 gives the decode path's
// floats with it.
TEST_P(Int8Products, TileKernelIsTheDecodedRowsProduct) {
  const auto tile_sums = qsl::detail::cpu::active_kernels().int8_tile_sums;
  if (tile_sums == nullptr) GTEST_SKIP() << "this target (or CPU) has no int8_tile_sums kernel";
  std::uint32_t seed = 3;
  auto check = [&](std::int64_t rows, std::int64_t cols, int bits, std::int64_t group,
                   std::int64_t batch, bool extreme, qsl::basis basis = qsl::basis::binary) {
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + " k=" + std::to_string(bits) +
                 (basis == qsl::basis::ternary ? " ternary" : "") +
                 " group=" + std::to_string(group) + " batch=" + std::to_string(batch) +
                 (extreme ? " extreme" : ""));
    auto code = qsl::test::random_code(rows, cols, bits, basis, group, ++seed);
    if (extreme) {  // every weight +alpha_0 (+alpha_1): each row's grid byte 127
      for (std::int64_t r = 0; r < rows; ++r)  // padding bits stay 0, as the code requires
        for (int j = 0; j < bits; ++j) {
          qsl::word* plane = code.sign_plane(r, j);
          for (std::int64_t i = 0; i < code.words_per_plane(); ++i) plane[i] = ~qsl::word{0};
          if (cols % 64 != 0) plane[code.words_per_plane() - 1] = (qsl::word{1} << (cols % 64)) - 1;
        }
      qsl::compute_offsets(code);
    }
    const qsl::cpu_weights w = qsl::pack_for_cpu(code);
    ASSERT_TRUE(qsl::detail::cpu::int8_tiles_fit(w));
    const std::vector<float> scales = qsl::cpu_int8_row_scales(w);
    std::vector<std::int8_t> wq(static_cast<std::size_t>(rows * cols));
    qsl::cpu_decode_rows_int8(w, scales.data(), 0, rows, wq.data());
    std::vector<std::int8_t> x(static_cast<std::size_t>(batch * cols));
    std::vector<std::int32_t> x_sums(static_cast<std::size_t>(batch));
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> value(-127, 127);
    for (std::int64_t v = 0; v < batch; ++v)
      for (std::int64_t c = 0; c < cols; ++c) {
        const int q = extreme ? 127 : value(rng);
        x[static_cast<std::size_t>(v * cols + c)] = static_cast<std::int8_t>(q);
        x_sums[static_cast<std::size_t>(v)] += q;
      }
    const std::int64_t steps = w.chunks * 8;
    std::vector<std::int32_t> packed(static_cast<std::size_t>(batch * steps), -1);
    qsl::detail::cpu::int8_tile_vectors(x.data(), batch, cols, steps, packed.data());
    for (std::int64_t t = 0; t < w.tiles; ++t) {
      std::vector<std::int32_t> sums(static_cast<std::size_t>(batch * 16), -1);
      ASSERT_TRUE(tile_sums(w, scales.data(), t, packed.data(), x_sums.data(), batch, sums.data()));
      for (std::int64_t v = 0; v < batch; ++v)
        for (std::int64_t r = 0; r < 16 && t * 16 + r < rows; ++r) {
          std::int64_t expected = 0;
          for (std::int64_t c = 0; c < cols; ++c)
            expected += std::int64_t{x[v * cols + c]} * wq[(t * 16 + r) * cols + c];
          ASSERT_EQ(sums[v * 16 + r], expected) << "vector " << v << ", row " << t * 16 + r;
        }
    }
  };
  for (std::int64_t cols : qsl::test::edge_dims())
    for (int bits : {1, 2, 3, 4})
      for (std::int64_t group : {std::int64_t{0}, std::int64_t{32}, std::int64_t{128}}) {
        check(17, cols, bits, group < cols ? group : 0, 1 + (cols % 5), false);
        if (bits <= 2)
          check(17, cols, bits, group < cols ? group : 0, 2 + (cols % 3), false,
                qsl::basis::ternary);
      }
  for (std::int64_t batch : {1, 2, 3, 7, 15, 16, 17, 31, 40}) check(33, 100, 2, 32, batch, false);
  for (std::int64_t rows : {1, 15, 16, 31}) check(rows, 4096, 2, 64, 16, false);
  check(16, qsl::cpu_int8_max_cols, 2, 0, 2, true);  // sums of 255 x 127 pass 2^31
  check(5, 300, 1, 0, 19, true);
  check(33, 200, 3, 64, 18, true);
  check(31, 4096, 3, 128, 16, false);
  check(33, 200, 4, 64, 18, true);
  check(20, 1000, 4, 128, 21, false);
  check(20, 1000, 2, 128, 21, false, qsl::basis::ternary);

  // Codes it does not take: refused, nothing written.
  for (auto [bits, basis, group] : {std::tuple{5, qsl::basis::binary, std::int64_t{32}},
                                    std::tuple{3, qsl::basis::ternary, std::int64_t{32}},
                                    std::tuple{2, qsl::basis::binary, std::int64_t{8}}}) {
    const auto w = qsl::pack_for_cpu(qsl::test::random_code(16, 64, bits, basis, group, ++seed));
    EXPECT_FALSE(qsl::detail::cpu::int8_tiles_fit(w));
    std::vector<std::int32_t> x(16), x_sums(1), sums(16, -1);
    const std::vector<float> scales(16, 1.0f);
    EXPECT_FALSE(tile_sums(w, scales.data(), 0, x.data(), x_sums.data(), 1, sums.data()));
    EXPECT_EQ(sums, std::vector<std::int32_t>(16, -1));
  }

  // The layout: blocks of 16, then 8, 4, 2, 1; each step's 4 bytes of a block side by side.
  {
    const std::int64_t batch = 23, cols = 10, steps = 3;  // blocks 16, 4, 2, 1
    std::vector<std::int8_t> q(static_cast<std::size_t>(batch * cols));
    for (std::size_t i = 0; i < q.size(); ++i) q[i] = static_cast<std::int8_t>(i % 251 - 125);
    std::vector<std::int32_t> out(static_cast<std::size_t>(batch * steps), -1);
    qsl::detail::cpu::int8_tile_vectors(q.data(), batch, cols, steps, out.data());
    auto bytes_at = [&](std::int64_t v0, std::int64_t width, std::int64_t v, std::int64_t s) {
      std::int8_t b[4];
      std::memcpy(b, &out[static_cast<std::size_t>(v0 * steps + s * width + v)], 4);
      return std::vector<int>(b, b + 4);
    };
    for (auto [v0, width] :
         {std::pair{0, 16}, std::pair{16, 4}, std::pair{20, 2}, std::pair{22, 1}})
      for (std::int64_t v = 0; v < width; ++v)
        for (std::int64_t s = 0; s < steps; ++s) {
          std::vector<int> want(4, 0);
          for (int i = 0; i < 4 && 4 * s + i < cols; ++i) want[i] = q[(v0 + v) * cols + 4 * s + i];
          EXPECT_EQ(bytes_at(v0, width, v, s), want) << "vector " << v0 + v << ", step " << s;
        }
  }

  // forward_int8 with it: the decode path's floats.
  const auto code = qsl::test::random_code(70, 333, 2, qsl::basis::binary, 96, ++seed);
  const qsl::cpu_weights w = qsl::pack_for_cpu(code);
  const std::vector<float> scales = qsl::cpu_int8_row_scales(w);
  const row_matrix_f x = qsl::test::gaussian_rows(21, 333, ++seed);
  row_matrix_f with(21, 70), without(21, 70);
  const auto sums = qsl::detail::cpu::active_kernels().int8_sums;
  qsl::detail::cpu::forward_int8(w, scales.data(), x.data(), 21, nullptr, with.data(), sums,
                                 tile_sums);
  qsl::detail::cpu::forward_int8(w, scales.data(), x.data(), 21, nullptr, without.data(), sums);
  EXPECT_EQ(with, without);
}

INSTANTIATE_TEST_SUITE_P(EveryTarget, Int8Products, testing::ValuesIn(qsl::supported_cpu_targets()),
                         [](const auto& info) { return std::string(qsl::to_string(info.param)); });

}  // namespace
