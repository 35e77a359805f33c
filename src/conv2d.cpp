// The CPU convolution driver of qsl::quantized_conv2d (and of the executor's fp32 Conv): im2col
// into a bounded scratch buffer, one GEMM per chunk of images, then the transposition of each
// image's (OH OW) x M result to M x OH x OW.
#include <algorithm>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "cpu/thread_pool.hpp"
#include "qsl/quantized_conv2d.hpp"
#include "scratch.hpp"

namespace qsl {
namespace {

// Patch floats per chunk: 4 MiB of patches (the look-up kernels add 4x that in tables), enough
// rows for the GEMM to reach full speed on any layer of a small CNN.
constexpr std::int64_t chunk_patch_floats = std::int64_t{1} << 20;

// Stride 1, dilation 1: the columns from `ox` on whose window lies inside the image get KW
// consecutive values each. Returns the first column past them.
template <int KW>
std::int64_t copy_interior(const float* src, std::int64_t ox, float*& dst, std::int64_t ow,
                           std::int64_t pad_left, std::int64_t patch,
                           const std::vector<std::int64_t>& first,
                           const std::vector<std::int64_t>& last) {
  for (; ox < ow && first[ox] == 0 && last[ox] == KW; ++ox, dst += patch) {
    const float* from = src + (ox - pad_left);
    for (int kx = 0; kx < KW; ++kx) dst[kx] = from[kx];
  }
  return ox;
}

}  // namespace

conv2d_shape group_shape(const onnx_conv_attributes& a, std::int64_t h, std::int64_t w) {
  const std::size_t dims = a.kernel.size();
  const auto list = [](const std::vector<std::int64_t>& v) {
    std::string out = "[";
    for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
    return out + "]";
  };
  detail::require((dims == 1 || dims == 2) && a.strides.size() == dims &&
                      a.dilations.size() == dims && a.pads.size() == 2 * dims,
                  "conv: kernel_shape " + list(a.kernel) + ", strides " + list(a.strides) +
                      ", dilations " + list(a.dilations) + ", pads " + list(a.pads) +
                      ": expected 1 or 2 spatial dimensions, the same in each");
  detail::require(a.groups >= 1 && a.channels >= 1 && a.outputs >= 1 &&
                      a.channels % a.groups == 0 && a.outputs % a.groups == 0,
                  "conv: " + std::to_string(a.channels) + " input and " +
                      std::to_string(a.outputs) + " output channels in " +
                      std::to_string(a.groups) + " groups: expected a group count that divides both");
  const std::vector<std::int64_t> sizes =
      dims == 2 ? std::vector<std::int64_t>{h, w} : std::vector<std::int64_t>{w};
  std::vector<std::int64_t> begin(dims, 0), end(dims, 0);
  for (std::size_t d = 0; d < dims; ++d) {
    if (a.auto_pad == "NOTSET") {
      begin[d] = a.pads[d];
      end[d] = a.pads[d + dims];
    } else if (a.auto_pad == "SAME_UPPER" || a.auto_pad == "SAME_LOWER") {
      // The output is ceil(size / stride); SAME_UPPER puts the odd pad at the end.
      const std::int64_t stride = std::max<std::int64_t>(a.strides[d], 1);
      const std::int64_t out = (sizes[d] + stride - 1) / stride;
      const std::int64_t span = a.dilations[d] * (a.kernel[d] - 1) + 1;
      const std::int64_t total = std::max<std::int64_t>(0, (out - 1) * stride + span - sizes[d]);
      begin[d] = a.auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      end[d] = total - begin[d];
    } else {
      detail::require(a.auto_pad == "VALID", "conv: auto_pad is '" + a.auto_pad +
                                                 "'; expected NOTSET, VALID, SAME_UPPER or "
                                                 "SAME_LOWER");
    }
  }
  const bool two = dims == 2;
  conv2d_shape s;
  s.in_channels = a.channels / a.groups;
  s.out_channels = a.outputs / a.groups;
  s.kernel_h = two ? a.kernel[0] : 1;
  s.kernel_w = a.kernel.back();
  s.stride_h = two ? a.strides[0] : 1;
  s.stride_w = a.strides.back();
  s.dilation_h = two ? a.dilations[0] : 1;
  s.dilation_w = a.dilations.back();
  s.pad_top = two ? begin[0] : 0;
  s.pad_bottom = two ? end[0] : 0;
  s.pad_left = begin.back();
  s.pad_right = end.back();
  return s;
}

void im2col(const conv2d_shape& s, const float* x, std::int64_t h, std::int64_t w,
            float* patches) {
  im2col(s, x, h, w, 0, s.out_h(h), patches);
}

void im2col(const conv2d_shape& s, const float* x, std::int64_t h, std::int64_t w,
            std::int64_t first_row, std::int64_t last_row, float* patches) {
  const std::int64_t oh = s.out_h(h), ow = s.out_w(w), kh = s.kernel_h, kw = s.kernel_w;
  detail::require(0 <= first_row && first_row <= last_row && last_row <= oh,
                  "im2col: output rows [" + std::to_string(first_row) + ", " +
                      std::to_string(last_row) + ") are not within the " + std::to_string(oh) +
                      " rows of the output");
  // For every output column, the kernel columns [first, last) that land inside the image: the
  // inner loop then copies without a bounds test per value.
  std::vector<std::int64_t> first(static_cast<std::size_t>(ow)), last(first.size());
  for (std::int64_t ox = 0; ox < ow; ++ox) {
    std::int64_t lo = kw, hi = 0;
    for (std::int64_t kx = 0; kx < kw; ++kx) {
      const std::int64_t ix = ox * s.stride_w - s.pad_left + kx * s.dilation_w;
      if (ix >= 0 && ix < w) {
        lo = std::min(lo, kx);
        hi = kx + 1;
      }
    }
    first[ox] = lo;
    last[ox] = std::max(lo, hi);
  }
  // One source row (c, iy) at a time: it feeds kw values to every output column.
  const std::int64_t patch = s.patch();
  const bool dense_rows = s.stride_w == 1 && s.dilation_w == 1 && (kw == 3 || kw == 5 || kw == 7);
  // Any column, bounds from first/last: zeros outside the image.
  auto edge = [&](const float* src, std::int64_t ox, float* dst) {
    const std::int64_t x0 = ox * s.stride_w - s.pad_left;
    for (std::int64_t kx = 0; kx < kw; ++kx)
      dst[kx] = kx >= first[ox] && kx < last[ox] ? src[x0 + kx * s.dilation_w] : 0.0f;
  };
  if (w == 1 && ow == 1 && kw == 1 && s.pad_left == 0) {
    // A 1-D convolution laid out as H x 1 (magika's): each patch is every channel's window of
    // kh values down its column. The general loop below paid its per-row setup per value here,
    // a quarter of the convolution's time.
    for (std::int64_t oy = first_row; oy < last_row; ++oy) {
      const std::int64_t y0 = oy * s.stride_h - s.pad_top;
      const bool inside = y0 >= 0 && y0 + (kh - 1) * s.dilation_h < h;
      float* dst = patches + oy * patch;
      for (std::int64_t c = 0; c < s.in_channels; ++c, dst += kh) {
        const float* column = x + c * h;
        if (inside) {
          for (std::int64_t ky = 0; ky < kh; ++ky) dst[ky] = column[y0 + ky * s.dilation_h];
        } else {
          for (std::int64_t ky = 0; ky < kh; ++ky) {
            const std::int64_t iy = y0 + ky * s.dilation_h;
            dst[ky] = iy >= 0 && iy < h ? column[iy] : 0.0f;
          }
        }
      }
    }
    return;
  }
  for (std::int64_t oy = first_row; oy < last_row; ++oy)
    for (std::int64_t c = 0; c < s.in_channels; ++c)
      for (std::int64_t ky = 0; ky < kh; ++ky) {
        const std::int64_t iy = oy * s.stride_h - s.pad_top + ky * s.dilation_h;
        float* dst = patches + oy * ow * patch + (c * kh + ky) * kw;
        if (iy < 0 || iy >= h) {
          for (std::int64_t ox = 0; ox < ow; ++ox, dst += patch)
            for (std::int64_t kx = 0; kx < kw; ++kx) dst[kx] = 0.0f;
          continue;
        }
        const float* src = x + (c * h + iy) * w;
        if (dense_rows) {  // 3x3 / 5x5 ... kernels at stride 1: a fixed-size copy per column
          std::int64_t ox = 0;
          for (; ox < ow && last[ox] - first[ox] < kw; ++ox, dst += patch) edge(src, ox, dst);
          switch (kw) {
            case 3: ox = copy_interior<3>(src, ox, dst, ow, s.pad_left, patch, first, last); break;
            case 5: ox = copy_interior<5>(src, ox, dst, ow, s.pad_left, patch, first, last); break;
            case 7: ox = copy_interior<7>(src, ox, dst, ow, s.pad_left, patch, first, last); break;
            default: break;
          }
          for (; ox < ow; ++ox, dst += patch) edge(src, ox, dst);
          continue;
        }
        for (std::int64_t ox = 0; ox < ow; ++ox, dst += patch) {
          const std::int64_t x0 = ox * s.stride_w - s.pad_left, lo = first[ox], hi = last[ox];
          if (lo == 0 && hi == kw) {
            for (std::int64_t kx = 0; kx < kw; ++kx) dst[kx] = src[x0 + kx * s.dilation_w];
          } else {
            for (std::int64_t kx = 0; kx < kw; ++kx)
              dst[kx] = kx >= lo && kx < hi ? src[x0 + kx * s.dilation_w] : 0.0f;
          }
        }
      }
}

namespace detail {

// A value at a time, reading down a column of rows M floats apart (a power of two, so 16 such
// rows share two L1 sets), this was a tenth of a 1-D convolution's time (magika's).
void transpose_floats(const float* in, std::int64_t in_stride, std::int64_t rows, std::int64_t cols,
                      float* out, std::int64_t out_stride) {
  std::int64_t r = 0;
#if defined(__SSE2__)
  for (; r + 4 <= rows; r += 4) {
    std::int64_t c = 0;
    for (; c + 4 <= cols; c += 4) {
      __m128 a = _mm_loadu_ps(in + r * in_stride + c);
      __m128 b = _mm_loadu_ps(in + (r + 1) * in_stride + c);
      __m128 d = _mm_loadu_ps(in + (r + 2) * in_stride + c);
      __m128 e = _mm_loadu_ps(in + (r + 3) * in_stride + c);
      _MM_TRANSPOSE4_PS(a, b, d, e);
      _mm_storeu_ps(out + c * out_stride + r, a);
      _mm_storeu_ps(out + (c + 1) * out_stride + r, b);
      _mm_storeu_ps(out + (c + 2) * out_stride + r, d);
      _mm_storeu_ps(out + (c + 3) * out_stride + r, e);
    }
    for (; c < cols; ++c)
      for (std::int64_t k = 0; k < 4; ++k)
        out[c * out_stride + r + k] = in[(r + k) * in_stride + c];
  }
#endif
  for (; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) out[c * out_stride + r] = in[r * in_stride + c];
}

std::int64_t conv_images_per_chunk(const conv2d_shape& s, std::int64_t positions, std::int64_t n) {
  return std::clamp<std::int64_t>(
      chunk_patch_floats / std::max<std::int64_t>(1, positions * s.patch()), 1,
      std::max<std::int64_t>(n, 1));
}

void conv2d_by_gemm(const conv2d_shape& s, const float* x, std::int64_t n, std::int64_t h,
                    std::int64_t w, float* y, const patch_gemm& gemm, const char* what) {
  const std::string where = std::string(what) + ": ";
  require(n >= 0 && h >= 1 && w >= 1,
          where + "input is " + std::to_string(n) + " x " + std::to_string(s.in_channels) + " x " +
              std::to_string(h) + " x " + std::to_string(w) + "; expected n >= 0 and h, w >= 1");
  require(n == 0 || (x != nullptr && y != nullptr), where + "x or y is null");
  const std::int64_t oh = s.out_h(h), ow = s.out_w(w), m = s.out_channels;
  require(oh >= 1 && ow >= 1, where + "a " + std::to_string(h) + " x " + std::to_string(w) +
                                  " input is smaller than the kernel");
  const std::int64_t positions = oh * ow, patch = s.patch();
  const std::int64_t per_chunk = conv_images_per_chunk(s, positions, n);
  scratch<float> patches(static_cast<std::size_t>(per_chunk * positions * patch));
  scratch<float> out(static_cast<std::size_t>(per_chunk * positions * m));
  cpu::thread_pool& pool = cpu::thread_pool::instance();
  // Tasks of a few output rows (about 64 positions) and of 64 output channels, so that one
  // image spreads over the threads too.
  const std::int64_t rows_per_task = std::clamp<std::int64_t>(64 / ow, 1, oh);
  const std::int64_t row_tasks = (oh + rows_per_task - 1) / rows_per_task;
  constexpr std::int64_t channels_per_task = 64;
  const std::int64_t channel_tasks = (m + channels_per_task - 1) / channels_per_task;
  for (std::int64_t i0 = 0; i0 < n; i0 += per_chunk) {
    const std::int64_t images = std::min(per_chunk, n - i0);
    pool.run(images * row_tasks, [&](std::int64_t t) {
      const std::int64_t i = t / row_tasks, first = t % row_tasks * rows_per_task;
      im2col(s, x + (i0 + i) * s.in_channels * h * w, h, w, first,
             std::min(oh, first + rows_per_task), patches.data() + i * positions * patch);
    });
    gemm(patches.data(), images * positions, out.data());
    pool.run(images * channel_tasks, [&](std::int64_t t) {
      const std::int64_t i = t / channel_tasks, c0 = t % channel_tasks * channels_per_task;
      const std::int64_t c1 = std::min(m, c0 + channels_per_task);
      const float* src = out.data() + i * positions * m;
      float* dst = y + (i0 + i) * m * positions;
      transpose_floats(src + c0, m, positions, c1 - c0, dst + c0 * positions, positions);
    });
  }
}

}  // namespace detail
}  // namespace qsl
