// qsl::quantized_conv2d against a direct convolution loop over the reconstructed weights.
#include "qsl/quantized_conv2d.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "test_util.hpp"

namespace {

// y[i][m][oy][ox] = b[m] + sum_{c,ky,kx} W_hat[m][c][ky][kx] x[i][c][iy][ix], in double.
// `size` receives S = |b| + sum sum_j |alpha_j| |x| per output, the scale of the float bound.
std::vector<double> direct_conv(const qsl::conv2d_shape& s, const qsl::weight_code& code,
                                const std::vector<float>& bias, const std::vector<float>& x,
                                std::int64_t n, std::int64_t h, std::int64_t w,
                                std::vector<double>& size) {
  const Eigen::MatrixXf w_hat = qsl::reconstruct(code);
  const std::int64_t oh = s.out_h(h), ow = s.out_w(w);
  std::vector<double> y(static_cast<std::size_t>(n * s.out_channels * oh * ow));
  size.assign(y.size(), 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t m = 0; m < s.out_channels; ++m)
      for (std::int64_t oy = 0; oy < oh; ++oy)
        for (std::int64_t ox = 0; ox < ow; ++ox) {
          double sum = bias.empty() ? 0 : bias[m], magnitude = std::abs(sum);
          for (std::int64_t c = 0; c < s.in_channels; ++c)
            for (std::int64_t ky = 0; ky < s.kernel_h; ++ky)
              for (std::int64_t kx = 0; kx < s.kernel_w; ++kx) {
                const std::int64_t iy = oy * s.stride_h - s.pad_top + ky * s.dilation_h;
                const std::int64_t ix = ox * s.stride_w - s.pad_left + kx * s.dilation_w;
                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                const std::int64_t p = (c * s.kernel_h + ky) * s.kernel_w + kx;
                const double xv = x[((i * s.in_channels + c) * h + iy) * w + ix];
                sum += double{w_hat(m, p)} * xv;
                for (int j = 0; j < code.bits; ++j)
                  magnitude += code.coefficient(m, p / code.group_size, j) * std::abs(xv);
              }
          y[((i * s.out_channels + m) * oh + oy) * ow + ox] = sum;
          size[((i * s.out_channels + m) * oh + oy) * ow + ox] = magnitude;
        }
  return y;
}

// A float-activation convolution's outputs y against direct_conv, within the bound of
// quantized_dense_test: (8 gamma_m + gamma_k(float)) S, m = patch + groups*k + k + 8.
void expect_matches_direct_conv(const qsl::quantized_conv2d& conv, const qsl::conv2d_shape& s,
                                const std::vector<float>& bias, const std::vector<float>& x,
                                std::int64_t n, std::int64_t h, std::int64_t w,
                                const std::vector<float>& y, const std::string& what) {
  const auto& code = conv.layer().code();
  std::vector<double> size;
  const auto expected = direct_conv(s, code, bias, x, n, h, w, size);
  const double u = std::numeric_limits<float>::epsilon() / 2;
  const double m = static_cast<double>(s.patch() + code.groups() * code.bits + code.bits + 8);
  const double tol = 8 * m * u / (1 - m * u) + code.bits * u / (1 - code.bits * u);
  for (std::size_t i = 0; i < y.size(); ++i)
    ASSERT_NEAR(y[i], expected[i], tol * size[i]) << what << ", output " << i;
}

TEST(QuantizedConv2d, MatchesDirectConvolution) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 60; ++trial) {
    qsl::conv2d_shape s;
    s.in_channels = 1 + rng() % 5;
    s.out_channels = 1 + rng() % 9;
    s.kernel_h = 1 + rng() % 4;
    s.kernel_w = 1 + rng() % 4;
    s.stride_h = 1 + rng() % 3;
    s.stride_w = 1 + rng() % 3;
    s.pad_top = rng() % 3;
    s.pad_left = rng() % 3;
    s.pad_bottom = rng() % 3;
    s.pad_right = rng() % 3;
    s.dilation_h = 1 + rng() % 2;
    s.dilation_w = 1 + rng() % 2;
    const std::int64_t n = 1 + rng() % 3, h = 3 + rng() % 11, w = 3 + rng() % 11;  // odd sizes
    if (s.out_h(h) < 1 || s.out_w(w) < 1) continue;
    const Eigen::MatrixXf weights = qsl::test::gaussian(s.out_channels, s.patch(), rng());
    const qsl::row_matrix_f rows = weights;  // [M][C kh kw] row-major = [M][C][kh][kw]
    std::vector<float> bias(static_cast<std::size_t>(s.out_channels));
    for (float& b : bias) b = static_cast<float>(rng() % 7) * 0.25f;
    for (int kx : {0, 4}) {
      qsl::quantized_dense_options o;
      o.weights.bits = 2;
      o.activation_bits = kx;
      const auto conv = qsl::quantized_conv2d::compress(rows.data(), s, bias.data(), o);
      const auto xs = qsl::test::gaussian_rows(1, n * s.in_channels * h * w, rng());
      const std::vector<float> x(xs.data(), xs.data() + xs.size());
      std::vector<float> y(static_cast<std::size_t>(n * s.out_channels * s.out_h(h) * s.out_w(w)));
      conv.forward(x.data(), n, h, w, y.data());
      if (kx == 0) {
        expect_matches_direct_conv(conv, s, bias, x, n, h, w, y, "trial " + std::to_string(trial));
      } else {
        // Encoded activations: each output position is one vector of the dense layer.
        const std::int64_t oh = s.out_h(h), ow = s.out_w(w);
        std::vector<float> patches(static_cast<std::size_t>(oh * ow * s.patch()));
        qsl::im2col(s, x.data(), h, w, patches.data());
        std::vector<float> dense(static_cast<std::size_t>(oh * ow * s.out_channels));
        conv.layer().forward(patches.data(), oh * ow, dense.data());
        for (std::int64_t p = 0; p < oh * ow; ++p)
          for (std::int64_t m = 0; m < s.out_channels; ++m)
            ASSERT_EQ(y[m * oh * ow + p], dense[p * s.out_channels + m]);
      }
    }
  }
}

// im2col against its definition, with pads, strides and dilations that put kernel columns on
// both sides of the image.
TEST(QuantizedConv2d, Im2colMatchesItsDefinition) {
  std::mt19937 rng(9);
  for (int trial = 0; trial < 200; ++trial) {
    qsl::conv2d_shape s;
    s.in_channels = 1 + rng() % 3;
    s.out_channels = 1;
    s.kernel_h = 1 + rng() % 5;
    s.kernel_w = 1 + rng() % 5;
    s.stride_h = 1 + rng() % 3;
    s.stride_w = 1 + rng() % 3;
    s.pad_top = rng() % 4;
    s.pad_left = rng() % 4;
    s.pad_bottom = rng() % 4;
    s.pad_right = rng() % 4;
    s.dilation_h = 1 + rng() % 3;
    s.dilation_w = 1 + rng() % 3;
    const std::int64_t h = 1 + rng() % 9, w = 1 + rng() % 9;
    const std::int64_t oh = s.out_h(h), ow = s.out_w(w);
    if (oh < 1 || ow < 1) continue;
    std::vector<float> x(static_cast<std::size_t>(s.in_channels * h * w));
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i + 1);
    std::vector<float> patches(static_cast<std::size_t>(oh * ow * s.patch()), -1.0f);
    qsl::im2col(s, x.data(), h, w, patches.data());
    for (std::int64_t oy = 0; oy < oh; ++oy)
      for (std::int64_t ox = 0; ox < ow; ++ox)
        for (std::int64_t c = 0; c < s.in_channels; ++c)
          for (std::int64_t ky = 0; ky < s.kernel_h; ++ky)
            for (std::int64_t kx = 0; kx < s.kernel_w; ++kx) {
              const std::int64_t iy = oy * s.stride_h - s.pad_top + ky * s.dilation_h;
              const std::int64_t ix = ox * s.stride_w - s.pad_left + kx * s.dilation_w;
              const float expected =
                  iy >= 0 && iy < h && ix >= 0 && ix < w ? x[(c * h + iy) * w + ix] : 0.0f;
              ASSERT_EQ(patches[(oy * ow + ox) * s.patch() + (c * s.kernel_h + ky) * s.kernel_w +
                                kx],
                        expected)
                  << "trial " << trial;
            }
  }
}

// The fixed-width copies of stride-1 3x3, 5x5 and 7x7 kernels, next to every padding.
TEST(QuantizedConv2d, Im2colStrideOneKernelsMatchTheGeneralCase) {
  for (std::int64_t kw : {3, 5, 7})
    for (std::int64_t pad = 0; pad <= 3; ++pad)
      for (std::int64_t w = kw - 2 * pad > 1 ? kw - 2 * pad : 1; w <= 11; ++w) {
        qsl::conv2d_shape s;
        s.in_channels = 2;
        s.out_channels = 1;
        s.kernel_h = 2;
        s.kernel_w = kw;
        s.pad_left = pad;
        s.pad_right = 3 - pad;
        const std::int64_t h = 3, oh = s.out_h(h), ow = s.out_w(w);
        if (ow < 1) continue;
        std::vector<float> x(static_cast<std::size_t>(2 * h * w));
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i + 1);
        std::vector<float> fast(static_cast<std::size_t>(oh * ow * s.patch()), -1.0f);
        qsl::im2col(s, x.data(), h, w, fast.data());
        for (std::int64_t oy = 0; oy < oh; ++oy)
          for (std::int64_t ox = 0; ox < ow; ++ox)
            for (std::int64_t c = 0; c < 2; ++c)
              for (std::int64_t ky = 0; ky < 2; ++ky)
                for (std::int64_t kx = 0; kx < kw; ++kx) {
                  const std::int64_t ix = ox - pad + kx, iy = oy + ky;
                  const float expected = ix >= 0 && ix < w ? x[(c * h + iy) * w + ix] : 0.0f;
                  ASSERT_EQ(fast[(oy * ow + ox) * s.patch() + (c * 2 + ky) * kw + kx], expected)
                      << "kw " << kw << " pad " << pad << " w " << w;
                }
      }
}

// A 1-D convolution laid out as H x 1 (its own copy loop), with strides, dilations and pads at
// both ends, against the definition; and output rows taken a range at a time.
TEST(QuantizedConv2d, Im2colOfColumnsMatchesTheDefinition) {
  for (std::int64_t stride : {1, 2})
    for (std::int64_t dilation : {1, 3})
      for (std::int64_t pad : {0, 2}) {
        qsl::conv2d_shape s;
        s.in_channels = 3;
        s.out_channels = 1;
        s.kernel_h = 5;
        s.kernel_w = 1;
        s.stride_h = stride;
        s.dilation_h = dilation;
        s.pad_top = pad;
        s.pad_bottom = pad + 1;
        const std::int64_t h = 23, w = 1, oh = s.out_h(h);
        ASSERT_GE(oh, 2);
        std::vector<float> x(static_cast<std::size_t>(3 * h));
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i + 1);
        std::vector<float> whole(static_cast<std::size_t>(oh * s.patch()), -1.0f), parts(whole);
        qsl::im2col(s, x.data(), h, w, whole.data());
        qsl::im2col(s, x.data(), h, w, 0, 1, parts.data());
        qsl::im2col(s, x.data(), h, w, 1, oh, parts.data());
        for (std::int64_t oy = 0; oy < oh; ++oy)
          for (std::int64_t c = 0; c < 3; ++c)
            for (std::int64_t ky = 0; ky < 5; ++ky) {
              const std::int64_t iy = oy * stride - pad + ky * dilation;
              const float expected =
                  iy >= 0 && iy < h ? x[static_cast<std::size_t>(c * h + iy)] : 0.0f;
              const auto at = static_cast<std::size_t>(oy * s.patch() + c * 5 + ky);
              ASSERT_EQ(whole[at], expected)
                  << stride << " " << dilation << " " << pad << " at " << oy;
              ASSERT_EQ(parts[at], expected) << "by ranges, at " << oy;
            }
      }
  qsl::conv2d_shape s;
  s.in_channels = s.out_channels = s.kernel_h = s.kernel_w = 1;
  std::vector<float> x(4), patches(4);
  EXPECT_THAT(qsl::test::error_of([&] { qsl::im2col(s, x.data(), 2, 2, 1, 3, patches.data()); }),
              testing::HasSubstr("output rows [1, 3) are not within the 2 rows"));
}

// A batch large enough to go through in several chunks (and, on float activations, the
// decoded GEMM path of the dense layer) matches the direct convolution image by image, and on
// encoded activations gives every image exactly what it gets alone.
TEST(QuantizedConv2d, ChunkedBatchMatchesImageByImage) {
  const qsl::conv2d_shape s{16, 24, 3, 3, 1, 1, 1, 1, 1, 1};
  const std::int64_t n = 40, h = 15, w = 15;  // 225 x 144 patch floats per image: 2 chunks
  const auto weights = qsl::test::gaussian_rows(s.out_channels, s.patch(), 3);
  const auto xs = qsl::test::gaussian_rows(1, n * s.in_channels * h * w, 4);
  const std::vector<float> x(xs.data(), xs.data() + xs.size()), bias(24, 0.5f);
  const std::int64_t out_image = s.out_channels * h * w;
  for (int kx : {0, 3}) {
    qsl::quantized_dense_options o;
    o.weights.bits = 2;
    o.activation_bits = kx;
    const auto conv = qsl::quantized_conv2d::compress(weights.data(), s, bias.data(), o);
    std::vector<float> all(static_cast<std::size_t>(n * out_image)), one(out_image);
    conv.forward(x.data(), n, h, w, all.data());
    if (kx == 0) {
      expect_matches_direct_conv(conv, s, bias, x, n, h, w, all, "chunked batch");
      continue;
    }
    for (std::int64_t i = 0; i < n; ++i) {
      conv.forward(x.data() + i * s.in_channels * h * w, 1, h, w, one.data());
      for (std::int64_t j = 0; j < out_image; ++j)
        ASSERT_EQ(all[i * out_image + j], one[j]) << "image " << i;
    }
  }
}

TEST(QuantizedConv2d, BadShapesAreNamedErrors) {
  qsl::conv2d_shape s{2, 3, 3, 3};
  const std::vector<float> w(2 * 3 * 9, 1.0f);
  auto conv = qsl::quantized_conv2d::compress(w.data(), s, nullptr);
  std::vector<float> x(2 * 2 * 2), y(16);
  EXPECT_NE(qsl::test::error_of([&] { conv.forward(x.data(), 1, 2, 2, y.data()); })
                .find("smaller than the kernel"),
            std::string::npos);
  qsl::conv2d_shape bad = s;
  bad.stride_h = 0;
  EXPECT_NE(qsl::test::error_of([&] { qsl::quantized_conv2d::compress(w.data(), bad, nullptr); })
                .find("strides"),
            std::string::npos);
  EXPECT_NE(qsl::test::error_of([&] { qsl::quantized_conv2d(conv.layer(), {3, 3, 3, 3}); })
                .find("the shape needs"),
            std::string::npos);
}

}  // namespace

namespace {

struct int8_case {
  std::int64_t channels, kh, kw, stride_h, stride_w, dilation_h, dilation_w;
  std::int64_t top, left, bottom, right, h, w;
};

}  // namespace

// The patches of an 8-bit convolution made straight from the image (the scales by a max
// filter, the bytes transposed, by output positions or over the padded image) are the bytes and
// scales quantize_vectors_int8 gives the float im2col patches, at every stride, dilation and
// pad, in pieces of any size.
TEST(QuantizedConv2d, Int8PatchesAreTheQuantizedIm2colPatches) {
  const int8_case cases[] = {
      {3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 7, 9},  {2, 5, 1, 1, 1, 1, 1, 2, 0, 2, 0, 11, 1},
      {4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 9, 8},  {3, 2, 3, 2, 1, 2, 2, 0, 1, 2, 1, 10, 11},
      {1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 5, 5},  {5, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 8, 8},
      {2, 3, 2, 1, 1, 1, 3, 0, 3, 1, 0, 6, 13}, {17, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 16, 17}};
  std::mt19937 rng(5);
  for (const int8_case& c : cases)
    for (bool zeros : {false, true}) {
      qsl::conv2d_shape s;
      s.in_channels = c.channels;
      s.out_channels = 1;
      s.kernel_h = c.kh;
      s.kernel_w = c.kw;
      s.stride_h = c.stride_h;
      s.stride_w = c.stride_w;
      s.dilation_h = c.dilation_h;
      s.dilation_w = c.dilation_w;
      s.pad_top = c.top;
      s.pad_left = c.left;
      s.pad_bottom = c.bottom;
      s.pad_right = c.right;
      const std::int64_t h = c.h, w = c.w, oh = s.out_h(h), ow = s.out_w(w);
      const std::int64_t positions = oh * ow, k = s.patch();
      ASSERT_GE(positions, 2);
      std::normal_distribution<float> normal(0.0f, 2.0f);
      std::vector<float> x(static_cast<std::size_t>(c.channels * h * w));
      for (float& v : x) v = zeros ? 0.0f : normal(rng);
      std::vector<float> patches(static_cast<std::size_t>(positions * k)), scales(positions);
      qsl::im2col(s, x.data(), h, w, patches.data());
      std::vector<std::int8_t> q(patches.size());
      qsl::quantize_vectors_int8(patches.data(), positions, k, q.data(), scales.data());
      const std::string what = "case " + std::to_string(&c - cases) + (zeros ? ", zeros" : "");

      std::vector<float> direct(static_cast<std::size_t>(positions));
      qsl::detail::conv_patch_scales(s, x.data(), h, w, direct.data());
      ASSERT_EQ(direct, scales) << what;
      // By output positions, in two pieces, into a matrix 3 columns wider than the positions.
      const std::int64_t stride = positions + 3, split = positions / 3;
      std::vector<std::int8_t> q_t(static_cast<std::size_t>(k * stride), 99);
      qsl::detail::im2col_int8_transposed(s, x.data(), h, w, direct.data(), 0, split, q_t.data(),
                                          stride);
      qsl::detail::im2col_int8_transposed(s, x.data(), h, w, direct.data(), split,
                                          positions - split, q_t.data() + split, stride);
      for (std::int64_t p = 0; p < k; ++p)
        for (std::int64_t j = 0; j < positions; ++j)
          ASSERT_EQ(q_t[static_cast<std::size_t>(p * stride + j)],
                    q[static_cast<std::size_t>(j * k + p)])
              << what << ": patch value " << p << " of position " << j;
      if (s.stride_h != 1 || s.stride_w != 1) {
        std::vector<float> padded(1), inverse(1);
        EXPECT_THAT(qsl::test::error_of([&] {
                      qsl::detail::im2col_int8_padded(s, padded.data(), h, w, inverse.data(), 0, 1,
                                                      q_t.data(), 1);
                    }),
                    testing::HasSubstr("im2col_int8_padded"))
            << what;
        continue;
      }
      // Over the padded image: the outputs' bytes and scales at their extended positions.
      const std::int64_t wp = w + s.pad_left + s.pad_right;
      const std::int64_t extended = qsl::detail::conv_extended_positions(s, h, w);
      ASSERT_EQ(extended, (oh - 1) * wp + ow) << what;
      std::vector<float> padded(
          static_cast<std::size_t>(c.channels * (h + s.pad_top + s.pad_bottom) * wp));
      qsl::detail::pad_image(s, x.data(), h, w, padded.data());
      std::vector<float> e_scales(static_cast<std::size_t>(extended)), inverse(e_scales.size());
      qsl::detail::conv_extended_scales(s, h, w, direct.data(), e_scales.data(), inverse.data());
      std::vector<std::int8_t> e_t(static_cast<std::size_t>(k * extended));
      const std::int64_t half = extended / 2;
      qsl::detail::im2col_int8_padded(s, padded.data(), h, w, inverse.data(), 0, half, e_t.data(),
                                      extended);
      qsl::detail::im2col_int8_padded(s, padded.data(), h, w, inverse.data(), half, extended - half,
                                      e_t.data() + half, extended);
      for (std::int64_t e = 0; e < extended; ++e) {
        const std::int64_t oy = e / wp, ox = e % wp;
        if (ox >= ow) {
          ASSERT_EQ(e_scales[static_cast<std::size_t>(e)], 0.0f) << what << " at " << e;
          continue;
        }
        const std::int64_t j = oy * ow + ox;
        ASSERT_EQ(e_scales[static_cast<std::size_t>(e)], scales[static_cast<std::size_t>(j)])
            << what;
        for (std::int64_t p = 0; p < k; ++p)
          ASSERT_EQ(e_t[static_cast<std::size_t>(p * extended + e)],
                    q[static_cast<std::size_t>(j * k + p)])
              << what << ": patch value " << p << " of extended position " << e;
      }
    }
}

// A NaN inside some patch is an error naming the pixel; one that no patch reads (stride 2 skips
// it) is not, as quantize_vectors_int8 on the float patches would not see it either.
TEST(QuantizedConv2d, Int8PatchScalesRefuseNonFiniteInputsThePatchesRead) {
  qsl::conv2d_shape s;
  s.in_channels = 2;
  s.out_channels = 1;
  s.kernel_h = s.kernel_w = 1;
  s.stride_h = s.stride_w = 2;
  std::vector<float> x(2 * 5 * 5, 1.0f), scales(9);
  x[25 + 1 * 5 + 1] = std::numeric_limits<float>::quiet_NaN();  // channel 1, (1, 1): skipped
  EXPECT_NO_THROW(qsl::detail::conv_patch_scales(s, x.data(), 5, 5, scales.data()));
  x[25 + 2 * 5 + 4] = std::numeric_limits<float>::infinity();  // channel 1, (2, 4): read
  EXPECT_THAT(qsl::test::error_of(
                  [&] { qsl::detail::conv_patch_scales(s, x.data(), 5, 5, scales.data()); }),
              testing::HasSubstr("x has inf at channel 1, row 2, col 4"));
}

namespace {

// ConvTranspose's definition: every input pixel (iy, ix) of image i and tap (ky, kx) adds the
// value of product row m taps + t for that vector at output (i, m, iy sh - pt + ky dh,
// ix sw - pl + kx dw) when that is inside; in double from y's initial values, with the sum of
// magnitudes per output for the float bound.
template <class Value>
std::vector<double> direct_scatter(const qsl::conv_transpose2d_shape& s, std::int64_t images,
                                   std::int64_t h, std::int64_t w, const std::vector<float>& y0,
                                   std::vector<double>& size, Value value) {
  const std::int64_t oh = s.out_h(h), ow = s.out_w(w), m_count = s.out_channels;
  std::vector<double> y(y0.begin(), y0.end());
  size.assign(y.size(), 0.0);
  for (std::size_t j = 0; j < y.size(); ++j) size[j] = std::abs(y[j]);
  for (std::int64_t i = 0; i < images; ++i)
    for (std::int64_t iy = 0; iy < h; ++iy)
      for (std::int64_t ix = 0; ix < w; ++ix)
        for (std::int64_t ky = 0; ky < s.kernel_h; ++ky)
          for (std::int64_t kx = 0; kx < s.kernel_w; ++kx) {
            const std::int64_t oy = iy * s.stride_h - s.pad_top + ky * s.dilation_h;
            const std::int64_t ox = ix * s.stride_w - s.pad_left + kx * s.dilation_w;
            if (oy < 0 || oy >= oh || ox < 0 || ox >= ow) continue;
            for (std::int64_t m = 0; m < m_count; ++m) {
              const double v = value(m * s.taps() + ky * s.kernel_w + kx, (i * h + iy) * w + ix);
              const auto at = static_cast<std::size_t>(((i * m_count + m) * oh + oy) * ow + ox);
              y[at] += v;
              size[at] += std::abs(v);
            }
          }
  return y;
}

// A random transposed geometry: strides 1-3, dilations 1-2, pads 0-2, output_padding, kernels
// 1-4 (1 x k too), channel counts 1 to 65, inputs 1-7 x 1-9; false when the pads take it all.
bool random_transpose_shape(std::mt19937& rng, qsl::conv_transpose2d_shape& s, std::int64_t& h,
                            std::int64_t& w) {
  auto pick = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  s.in_channels = 1;  // not read by the scatter
  s.out_channels = std::vector<std::int64_t>{1, 5, 17, 63, 64, 65}[pick(0, 5)];
  s.kernel_h = pick(1, 4);
  s.kernel_w = pick(1, 4);
  s.stride_h = pick(1, 3);
  s.stride_w = pick(1, 3);
  s.dilation_h = pick(1, 2);
  s.dilation_w = pick(1, 2);
  s.pad_top = pick(0, 2);
  s.pad_bottom = pick(0, 2);
  s.pad_left = pick(0, 2);
  s.pad_right = pick(0, 2);
  s.output_pad_h = pick(0, std::max(s.stride_h, s.dilation_h) - 1);
  s.output_pad_w = pick(0, std::max(s.stride_w, s.dilation_w) - 1);
  h = pick(1, 7);
  w = pick(1, 9);
  return s.out_h(h) >= 1 && s.out_w(w) >= 1;
}

std::string describe(const qsl::conv_transpose2d_shape& s, std::int64_t h, std::int64_t w) {
  return "M " + std::to_string(s.out_channels) + " k " + std::to_string(s.kernel_h) + "x" +
         std::to_string(s.kernel_w) + " s " + std::to_string(s.stride_h) + "x" +
         std::to_string(s.stride_w) + " d " + std::to_string(s.dilation_h) + "x" +
         std::to_string(s.dilation_w) + " input " + std::to_string(h) + "x" + std::to_string(w);
}

}  // namespace

// The float scatter against its definition on random geometry, two images, y starting from a
// bias, the channels split at random between two calls: each output is a float sum of at most
// taps + 1 terms, within gamma_{taps+1} of their magnitudes.
TEST(QuantizedConv2d, TransposedScatterMatchesTheDefinition) {
  std::mt19937 rng(71);
  std::normal_distribution<float> normal;
  int cases = 0;
  for (int t = 0; t < 300; ++t) {
    qsl::conv_transpose2d_shape s;
    std::int64_t h = 0, w = 0;
    if (!random_transpose_shape(rng, s, h, w)) continue;
    const std::int64_t images = 2, vectors = images * h * w, row_stride = vectors + t % 3;
    std::vector<float> products(static_cast<std::size_t>(s.product_rows() * row_stride));
    for (float& v : products) v = normal(rng);
    std::vector<float> y(
        static_cast<std::size_t>(images * s.out_channels * s.out_h(h) * s.out_w(w)));
    for (float& v : y) v = normal(rng);  // the bias the caller put there
    std::vector<double> size;
    const auto expected =
        direct_scatter(s, images, h, w, y, size, [&](std::int64_t r, std::int64_t v) {
          return products[static_cast<std::size_t>(r * row_stride + v)];
        });
    const std::int64_t split = std::uniform_int_distribution<std::int64_t>(0, s.out_channels)(rng);
    qsl::detail::col2im_transposed(s, products.data(), row_stride, vectors, h, w, 0, split,
                                   y.data());
    qsl::detail::col2im_transposed(s, products.data(), row_stride, vectors, h, w, split,
                                   s.out_channels, y.data());
    const double u = std::numeric_limits<float>::epsilon() / 2, n = double(s.taps() + 1);
    for (std::size_t i = 0; i < y.size(); ++i)
      ASSERT_NEAR(y[i], expected[i], n * u / (1 - n * u) * size[i] + 1e-30)
          << describe(s, h, w) << " at " << i;
    ++cases;
  }
  EXPECT_GT(cases, 200);
}

// The 8-bit scatter, fed int32 sums a block of rows and a chunk of vectors at a time (blocks
// and chunks that cut through channels, input rows and images, as the integer GEMM's are),
// against the definition with each value (float(sum) x_scale) w_scale: within
// gamma_{taps+1} + 2u of the magnitudes (the two float products and the sums).
TEST(QuantizedConv2d, TransposedInt8ScatterMatchesTheDefinition) {
  std::mt19937 rng(73);
  std::uniform_int_distribution<std::int32_t> sum(-40000, 40000);
  std::uniform_real_distribution<float> scale(0.001f, 0.01f);
  int cases = 0;
  for (int t = 0; t < 200; ++t) {
    qsl::conv_transpose2d_shape s;
    std::int64_t h = 0, w = 0;
    if (!random_transpose_shape(rng, s, h, w)) continue;
    const std::int64_t images = 3, vectors = images * h * w, rows = s.product_rows();
    std::vector<std::int32_t> sums(static_cast<std::size_t>(rows * vectors));
    for (auto& v : sums) v = sum(rng);
    std::vector<float> x_scales(static_cast<std::size_t>(vectors));
    std::vector<float> w_scales(static_cast<std::size_t>(rows));
    for (float& v : x_scales) v = scale(rng);
    for (float& v : w_scales) v = scale(rng);
    std::vector<float> y(
        static_cast<std::size_t>(images * s.out_channels * s.out_h(h) * s.out_w(w)), 0.25f);
    std::vector<double> size;
    const auto expected =
        direct_scatter(s, images, h, w, y, size, [&](std::int64_t r, std::int64_t v) {
          return double(sums[static_cast<std::size_t>(r * vectors + v)]) * x_scales[v] *
                 w_scales[r];
        });
    const std::int64_t block = 1 + t % 7, chunk = 1 + t % 5;  // rows per block, vectors per chunk
    std::vector<std::int32_t> part;
    for (std::int64_t n0 = 0; n0 < rows; n0 += block)
      for (std::int64_t v0 = 0; v0 < vectors; v0 += chunk) {
        const std::int64_t count = std::min(block, rows - n0), len = std::min(chunk, vectors - v0);
        part.resize(static_cast<std::size_t>(count * len));
        for (std::int64_t r = 0; r < count; ++r)
          for (std::int64_t v = 0; v < len; ++v)
            part[static_cast<std::size_t>(r * len + v)] =
                sums[static_cast<std::size_t>((n0 + r) * vectors + v0 + v)];
        qsl::detail::col2im_transposed_int8(s, part.data(), n0, count, v0, len, x_scales.data(),
                                            w_scales.data(), h, w, 0, s.out_channels, y.data());
      }
    const double u = std::numeric_limits<float>::epsilon() / 2, n = double(s.taps() + 3);
    for (std::size_t i = 0; i < y.size(); ++i)
      ASSERT_NEAR(y[i], expected[i], n * u / (1 - n * u) * size[i] + 1e-30)
          << describe(s, h, w) << " at " << i;
    ++cases;
  }
  EXPECT_GT(cases, 120);
}

TEST(QuantizedConv2d, TransposedScatterRefusesChannelsOutsideTheOutput) {
  qsl::conv_transpose2d_shape s;
  s.in_channels = s.out_channels = 2;
  s.kernel_h = s.kernel_w = 3;
  std::vector<float> products(4 * 4 * s.product_rows()), y(2 * 6 * 6);
  EXPECT_THAT(qsl::test::error_of([&] {
                qsl::detail::col2im_transposed(s, products.data(), 16, 16, 4, 4, 0, 3, y.data());
              }),
              testing::HasSubstr("output channels [0, 3) of 2, output 6 x 6"));
  EXPECT_THAT(qsl::test::error_of([&] {
                qsl::detail::col2im_transposed(s, products.data(), 15, 16, 4, 4, 0, 2, y.data());
              }),
              testing::HasSubstr("16 vectors of images of 16 pixels, row stride 15"));
  const std::int32_t sums[4] = {};
  EXPECT_THAT(qsl::test::error_of([&] {
                qsl::detail::col2im_transposed_int8(s, sums, 17, 2, 0, 2, nullptr, nullptr, 4, 4, 0,
                                                    2, y.data());
              }),
              testing::HasSubstr("rows [17, 19) of 18"));
}
