// The scatter step of a transposed convolution computed as a GEMM over input pixels
// (qsl/quantized_conv2d.hpp). Each output row gathers its products: tap rows ky whose input row
// iy = (oy + pt - ky dh) / sh is whole and inside, then, per input pixel of that row and tap kx,
// one contiguous run of out_channels products added at output column ox. The sums build up in
// a row buffer laid out [ox][m] (so that every addition is a contiguous run the compiler
// vectorizes), which is then transposed into the NCHW output.
#include <algorithm>
#include <vector>

#include "qsl/error.hpp"
#include "qsl/quantized_conv2d.hpp"

namespace qsl::detail {

void col2im_transposed_rows(const conv_transpose2d_shape& s, const float* products,
                            std::int64_t row_stride, std::int64_t h, std::int64_t w,
                            const float* bias, std::int64_t oy_begin, std::int64_t oy_end,
                            float* y) {
  const std::int64_t m_count = s.out_channels, oh = s.out_h(h), ow = s.out_w(w);
  require(oh >= 1 && ow >= 1 && oy_begin >= 0 && oy_begin <= oy_end && oy_end <= oh &&
              row_stride >= s.product_rows(),
          "col2im_transposed_rows: output rows [" + std::to_string(oy_begin) + ", " +
              std::to_string(oy_end) + ") of " + std::to_string(oh) + " x " + std::to_string(ow) +
              ", row stride " + std::to_string(row_stride) + " for " +
              std::to_string(s.product_rows()) + " product rows");
  std::vector<float> acc(static_cast<std::size_t>(ow * m_count));
  for (std::int64_t oy = oy_begin; oy < oy_end; ++oy) {
    for (std::int64_t ox = 0; ox < ow; ++ox)
      for (std::int64_t m = 0; m < m_count; ++m)
        acc[static_cast<std::size_t>(ox * m_count + m)] = bias != nullptr ? bias[m] : 0.0f;
    for (std::int64_t ky = 0; ky < s.kernel_h; ++ky) {
      const std::int64_t from = oy + s.pad_top - ky * s.dilation_h;
      if (from < 0 || from % s.stride_h != 0 || from / s.stride_h >= h) continue;
      const std::int64_t iy = from / s.stride_h;
      for (std::int64_t ix = 0; ix < w; ++ix) {
        const float* pixel = products + (iy * w + ix) * row_stride;
        for (std::int64_t kx = 0; kx < s.kernel_w; ++kx) {
          const std::int64_t ox = ix * s.stride_w - s.pad_left + kx * s.dilation_w;
          if (ox < 0 || ox >= ow) continue;
          const float* tap = pixel + (ky * s.kernel_w + kx) * m_count;
          float* out = acc.data() + ox * m_count;
          for (std::int64_t m = 0; m < m_count; ++m) out[m] += tap[m];
        }
      }
    }
    transpose_floats(acc.data(), m_count, ow, m_count, y + oy * ow, oh * ow);
  }
}

}  // namespace qsl::detail
