// The scatter step of a transposed convolution computed as a GEMM over input pixels
// (qsl/quantized_conv2d.hpp). A product row (output channel m, tap ky kx) over a run of one
// input row's pixels lands on one output row at a stride of sw (at stride 1, a contiguous run).
// Splitting by output channels needs no synchronization: a channel's outputs only receive its
// own rows. The 8-bit form applies the integer product's float step as it scatters, so the
// products never exist as a float matrix (at the ViT decoder's last layer, 16 MiB per image
// written and read back: a third of that layer's time).
#include <algorithm>
#include <string>

#include "qsl/error.hpp"
#include "qsl/quantized_conv2d.hpp"

namespace qsl::detail {

namespace {

// Rows [r0, r1) of channels [m_begin, m_end) and vectors [v0, v1): y += value(r, v) at each
// product's output.
template <class Value>
void scatter(const conv_transpose2d_shape& s, std::int64_t r0, std::int64_t r1, std::int64_t v0,
             std::int64_t v1, std::int64_t h, std::int64_t w, std::int64_t m_begin,
             std::int64_t m_end, float* y, Value value) {
  const std::int64_t oh = s.out_h(h), ow = s.out_w(w), taps = s.taps(), pixels = h * w;
  const std::int64_t plane = oh * ow, image = s.out_channels * plane, sw = s.stride_w;
  r0 = std::max(r0, m_begin * taps);
  r1 = std::min(r1, m_end * taps);
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::int64_t m = r / taps, ky = r % taps / s.kernel_w, kx = r % taps % s.kernel_w;
    // Input columns [first, last) land inside: 0 <= ix sw + offset < ow.
    const std::int64_t offset = kx * s.dilation_w - s.pad_left;
    const std::int64_t first = offset >= 0 ? 0 : (-offset + sw - 1) / sw;
    const std::int64_t last = ow - offset <= 0 ? 0 : std::min(w, (ow - offset + sw - 1) / sw);
    if (first >= last) continue;
    for (std::int64_t v = v0; v < v1;) {  // one input row's run of vectors at a time
      const std::int64_t i = v / pixels, iy = v % pixels / w, ix = v % w;
      const std::int64_t end = std::min(v1, v + (w - ix));
      const std::int64_t oy = iy * s.stride_h - s.pad_top + ky * s.dilation_h;
      const std::int64_t a = std::max(ix, first), b = std::min(ix + (end - v), last);
      if (oy >= 0 && oy < oh && a < b) {
        float* out = y + i * image + m * plane + oy * ow + a * sw + offset;
        const std::int64_t at = v + (a - ix), n = b - a;
        if (sw == 1)
          for (std::int64_t j = 0; j < n; ++j) out[j] += value(r, at + j);
        else
          for (std::int64_t j = 0; j < n; ++j) out[j * sw] += value(r, at + j);
      }
      v = end;
    }
  }
}

void check(const conv_transpose2d_shape& s, std::int64_t h, std::int64_t w, std::int64_t m_begin,
           std::int64_t m_end, const char* what) {
  require(s.out_h(h) >= 1 && s.out_w(w) >= 1 && s.kernel_h >= 1 && s.kernel_w >= 1 &&
              s.stride_w >= 1 && s.stride_h >= 1 && m_begin >= 0 && m_begin <= m_end &&
              m_end <= s.out_channels,
          std::string(what) + ": output channels [" + std::to_string(m_begin) + ", " +
              std::to_string(m_end) + ") of " + std::to_string(s.out_channels) + ", output " +
              std::to_string(s.out_h(h)) + " x " + std::to_string(s.out_w(w)));
}

}  // namespace

void col2im_transposed(const conv_transpose2d_shape& s, const float* products,
                       std::int64_t row_stride, std::int64_t vectors, std::int64_t h,
                       std::int64_t w, std::int64_t m_begin, std::int64_t m_end, float* y) {
  check(s, h, w, m_begin, m_end, "col2im_transposed");
  require(vectors >= 0 && vectors % (h * w) == 0 && row_stride >= vectors,
          "col2im_transposed: " + std::to_string(vectors) + " vectors of images of " +
              std::to_string(h * w) + " pixels, row stride " + std::to_string(row_stride));
  scatter(s, 0, s.product_rows(), 0, vectors, h, w, m_begin, m_end, y,
          [&](std::int64_t r, std::int64_t v) { return products[r * row_stride + v]; });
}

void col2im_transposed_int8(const conv_transpose2d_shape& s, const std::int32_t* sums,
                            std::int64_t n0, std::int64_t count, std::int64_t v0, std::int64_t len,
                            const float* x_scales, const float* w_scales, std::int64_t h,
                            std::int64_t w, std::int64_t m_begin, std::int64_t m_end, float* y) {
  check(s, h, w, m_begin, m_end, "col2im_transposed_int8");
  require(n0 >= 0 && count >= 0 && n0 + count <= s.product_rows() && v0 >= 0 && len >= 0,
          "col2im_transposed_int8: rows [" + std::to_string(n0) + ", " +
              std::to_string(n0 + count) + ") of " + std::to_string(s.product_rows()));
  scatter(s, n0, n0 + count, v0, v0 + len, h, w, m_begin, m_end, y,
          [&](std::int64_t r, std::int64_t v) {
            return static_cast<float>(sums[(r - n0) * len + (v - v0)]) * x_scales[v] * w_scales[r];
          });
}

}  // namespace qsl::detail
