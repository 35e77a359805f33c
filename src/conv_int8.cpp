// 8-bit activations of a convolution straight from its input (qsl/quantized_conv2d.hpp): each
// output position's patch grid from a max filter over the image, then the patches' int8 bytes
// written transposed, the operand layout of an integer GEMM whose other side is the layer's rows.
// The bytes and scales are those of im2col + quantize_vectors_int8 on the float patches.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cpu/int8_grid.hpp"
#include "qsl/error.hpp"
#include "qsl/quantized_conv2d.hpp"
#include "scratch.hpp"

namespace qsl::detail {
namespace {

// q[j] = rint(clamp(v[j] * inverse[j], -127, 127)): each value on its own position's grid.
void to_grids(const float* v, const float* inverse, std::int64_t count, std::int8_t* q) {
  to_grid_bytes<false, true>(v, count, inverse, q);
}

// out[o * out_stride] = the largest of in[i * in_stride] over a window's taps i = o * stride -
// pad + tap * dilation inside [0, size), 0 for none (a max filter along one axis).
void window_max(const float* in, std::int64_t in_stride, std::int64_t size, std::int64_t taps,
                std::int64_t stride, std::int64_t pad, std::int64_t dilation, float* out,
                std::int64_t out_stride, std::int64_t outputs) {
  for (std::int64_t o = 0; o < outputs; ++o) {
    float m = 0.0f;
    for (std::int64_t t = 0; t < taps; ++t) {
      const std::int64_t i = o * stride - pad + t * dilation;
      if (i >= 0 && i < size) m = std::max(m, in[i * in_stride]);
    }
    out[o * out_stride] = m;
  }
}

// Throws for the first NaN or infinite value of the patch at output (oy, ox).
[[noreturn]] void throw_non_finite(const conv2d_shape& s, const float* x, std::int64_t h,
                                   std::int64_t w, std::int64_t oy, std::int64_t ox) {
  for (std::int64_t c = 0; c < s.in_channels; ++c)
    for (std::int64_t ky = 0; ky < s.kernel_h; ++ky)
      for (std::int64_t kx = 0; kx < s.kernel_w; ++kx) {
        const std::int64_t iy = oy * s.stride_h - s.pad_top + ky * s.dilation_h;
        const std::int64_t ix = ox * s.stride_w - s.pad_left + kx * s.dilation_w;
        if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
        const float v = x[(c * h + iy) * w + ix];
        if (!std::isfinite(v))
          throw error("8-bit activations: x has " + std::to_string(v) + " at channel " +
                      std::to_string(c) + ", row " + std::to_string(iy) + ", col " +
                      std::to_string(ix) + " of the image; expected finite values");
      }
  throw error("8-bit activations: a patch of x is not finite");  // not reached
}

}  // namespace

void conv_patch_scales(const conv2d_shape& s, const float* x, std::int64_t h, std::int64_t w,
                       float* scales) {
  const std::int64_t oh = s.out_h(h), ow = s.out_w(w), pixels = h * w;
  // The largest magnitude at each pixel over the channels (infinity for a NaN or infinite
  // value): a patch's largest value is the largest of its window's (padding adds zeros, which
  // never raise it).
  constexpr float bad = std::numeric_limits<float>::infinity();
  scratch<float> largest(static_cast<std::size_t>(pixels));
  std::fill(largest.data(), largest.data() + pixels, 0.0f);
  for (std::int64_t c = 0; c < s.in_channels; ++c) {
    const float* plane = x + c * pixels;
    for (std::int64_t i = 0; i < pixels; ++i) {
      const float a = std::fabs(plane[i]);
      largest[i] = std::max(largest[i], a <= std::numeric_limits<float>::max() ? a : bad);
    }
  }
  // The window's maximum: along each row first, then down the columns.
  scratch<float> rows(static_cast<std::size_t>(h * ow)), windows(static_cast<std::size_t>(oh * ow));
  for (std::int64_t iy = 0; iy < h; ++iy)
    window_max(largest.data() + iy * w, 1, w, s.kernel_w, s.stride_w, s.pad_left, s.dilation_w,
               rows.data() + iy * ow, 1, ow);
  for (std::int64_t ox = 0; ox < ow; ++ox)
    window_max(rows.data() + ox, ow, h, s.kernel_h, s.stride_h, s.pad_top, s.dilation_h,
               windows.data() + ox, ow, oh);
  for (std::int64_t oy = 0; oy < oh; ++oy)
    for (std::int64_t ox = 0; ox < ow; ++ox) {
      const float m = windows[oy * ow + ox];
      if (m == bad) throw_non_finite(s, x, h, w, oy, ox);
      scales[oy * ow + ox] = grid_scale(m);
    }
}

void im2col_int8_transposed(const conv2d_shape& s, const float* x, std::int64_t h, std::int64_t w,
                            const float* scales, std::int64_t first, std::int64_t count,
                            std::int8_t* q_t, std::int64_t q_stride) {
  const std::int64_t oh = s.out_h(h), ow = s.out_w(w);
  require(first >= 0 && count >= 0 && first + count <= oh * ow && q_stride >= count,
          "im2col_int8_transposed: positions [" + std::to_string(first) + ", " +
              std::to_string(first + count) + ") of " + std::to_string(oh * ow) +
              " with q_stride " + std::to_string(q_stride));
  scratch<float> inverse(static_cast<std::size_t>(count)), values(inverse.size());
  for (std::int64_t j = 0; j < count; ++j) inverse[j] = grid_inverse(scales[first + j]);
  // The positions as runs along output rows: the same runs for every patch entry.
  struct run {
    std::int64_t oy, ox0, j, length;
  };
  std::vector<run> runs;
  for (std::int64_t j = 0; j < count;) {
    const std::int64_t oy = (first + j) / ow, ox0 = (first + j) % ow;
    const std::int64_t length = std::min(ow - ox0, count - j);
    runs.push_back({oy, ox0, j, length});
    j += length;
  }
  const std::int64_t sw = s.stride_w;
  for (std::int64_t c = 0; c < s.in_channels; ++c)
    for (std::int64_t ky = 0; ky < s.kernel_h; ++ky)
      for (std::int64_t kx = 0; kx < s.kernel_w; ++kx) {
        // Output columns [first_ox, end_ox) read inside the row: ix = ox * stride + shift.
        const std::int64_t shift = kx * s.dilation_w - s.pad_left;
        const std::int64_t first_ox = shift >= 0 ? 0 : (-shift + sw - 1) / sw;
        const std::int64_t end_ox = w - 1 - shift < 0 ? 0 : (w - 1 - shift) / sw + 1;
        for (const run& r : runs) {
          float* out = values.data() + r.j;
          const std::int64_t iy = r.oy * s.stride_h - s.pad_top + ky * s.dilation_h;
          const std::int64_t lo = std::clamp<std::int64_t>(first_ox - r.ox0, 0, r.length);
          const std::int64_t hi =
              iy < 0 || iy >= h ? lo : std::clamp<std::int64_t>(end_ox - r.ox0, lo, r.length);
          for (std::int64_t i = 0; i < lo; ++i) out[i] = 0.0f;
          if (lo < hi) {  // a copy without a test per value (contiguous at stride 1)
            const float* from = x + (c * h + iy) * w + (r.ox0 + lo) * sw + shift;  // ix >= 0
            float* to = out + lo;
            if (sw == 1)
              for (std::int64_t i = 0; i < hi - lo; ++i) to[i] = from[i];
            else
              for (std::int64_t i = 0; i < hi - lo; ++i) to[i] = from[i * sw];
          }
          for (std::int64_t i = hi; i < r.length; ++i) out[i] = 0.0f;
        }
        to_grids(values.data(), inverse.data(), count,
                 q_t + ((c * s.kernel_h + ky) * s.kernel_w + kx) * q_stride);
      }
}

std::int64_t conv_extended_positions(const conv2d_shape& s, std::int64_t h, std::int64_t w) {
  const std::int64_t oh = s.out_h(h), ow = s.out_w(w);
  return oh < 1 || ow < 1 ? 0 : (oh - 1) * (w + s.pad_left + s.pad_right) + ow;
}

void conv_extended_scales(const conv2d_shape& s, std::int64_t h, std::int64_t w,
                          const float* scales, float* extended, float* inverse) {
  const std::int64_t ow = s.out_w(w), wp = w + s.pad_left + s.pad_right;
  const std::int64_t count = conv_extended_positions(s, h, w);
  for (std::int64_t e = 0; e < count; ++e) {
    const std::int64_t oy = e / wp, ox = e % wp;
    extended[e] = ox < ow ? scales[oy * ow + ox] : 0.0f;
    inverse[e] = grid_inverse(extended[e]);
  }
}

void pad_image(const conv2d_shape& s, const float* x, std::int64_t h, std::int64_t w,
               float* padded) {
  const std::int64_t hp = h + s.pad_top + s.pad_bottom, wp = w + s.pad_left + s.pad_right;
  std::fill(padded, padded + s.in_channels * hp * wp, 0.0f);
  for (std::int64_t c = 0; c < s.in_channels; ++c)
    for (std::int64_t iy = 0; iy < h; ++iy)
      std::copy(x + (c * h + iy) * w, x + (c * h + iy + 1) * w,
                padded + (c * hp + iy + s.pad_top) * wp + s.pad_left);
}

void im2col_int8_padded(const conv2d_shape& s, const float* padded, std::int64_t h, std::int64_t w,
                        const float* inverse, std::int64_t first, std::int64_t count,
                        std::int8_t* q_t, std::int64_t q_stride) {
  require(s.stride_h == 1 && s.stride_w == 1 && first >= 0 && count >= 0 &&
              first + count <= conv_extended_positions(s, h, w) && q_stride >= count,
          "im2col_int8_padded: positions [" + std::to_string(first) + ", " +
              std::to_string(first + count) + ") of " +
              std::to_string(conv_extended_positions(s, h, w)) + " with strides " +
              std::to_string(s.stride_h) + " x " + std::to_string(s.stride_w));
  const std::int64_t hp = h + s.pad_top + s.pad_bottom, wp = w + s.pad_left + s.pad_right;
  for (std::int64_t c = 0; c < s.in_channels; ++c)
    for (std::int64_t ky = 0; ky < s.kernel_h; ++ky)
      for (std::int64_t kx = 0; kx < s.kernel_w; ++kx)
        to_grids(padded + c * hp * wp + ky * s.dilation_h * wp + kx * s.dilation_w + first,
                 inverse + first, count,
                 q_t + ((c * s.kernel_h + ky) * s.kernel_w + kx) * q_stride);
}

}  // namespace qsl::detail
