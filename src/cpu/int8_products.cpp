// 8-bit activation products (qsl/cpu.hpp, docs/design.md "8-bit activation products"): the
// int8 grids of W_hat's rows and of the input vectors, the exact integer sums, and the one float
// step both qsl's loop and ONNX Runtime's integer GEMM finish with.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

#include "cpu/int8_grid.hpp"
#include "cpu/kernels.hpp"
#include "cpu/thread_pool.hpp"
#include "qsl/cpu.hpp"
#include "qsl/error.hpp"
#include "scratch.hpp"

namespace qsl {
namespace {

// Rows decoded per task: a 16-row float block of a 4096-wide layer stays in L2.
constexpr std::int64_t rows_per_task = 16;

using detail::grid_inverse;
using detail::grid_scale;

// One grid for all `count` values (int8_grid.hpp's rounding rule).
template <bool Excess, class Byte>
void to_grid(const float* values, std::int64_t count, float inverse, Byte* q) {
  detail::to_grid_bytes<Excess, false>(values, count, &inverse, q);
}

// max |values|, and whether every value is finite (NaN or infinity compare "not <= FLT_MAX").
float largest_magnitude(const float* values, std::int64_t count, bool* finite = nullptr) {
  constexpr float largest_finite = std::numeric_limits<float>::max();
  float m = 0.0f;
  bool all_finite = true;
  std::int64_t c = 0;
#if defined(__SSE2__)
  const __m128 magnitude = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
  const __m128 limit = _mm_set1_ps(largest_finite);
  __m128 m4 = _mm_setzero_ps(), bad = _mm_setzero_ps();
  for (; c + 4 <= count; c += 4) {
    const __m128 a = _mm_and_ps(_mm_loadu_ps(values + c), magnitude);
    m4 = _mm_max_ps(m4, a);
    bad = _mm_or_ps(bad, _mm_cmpnle_ps(a, limit));
  }
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, m4);
  m = std::max(std::max(lanes[0], lanes[1]), std::max(lanes[2], lanes[3]));
  all_finite = _mm_movemask_ps(bad) == 0;
#endif
  for (; c < count; ++c) {
    const float a = std::fabs(values[c]);
    m = std::max(m, a);
    all_finite = all_finite && a <= largest_finite;
  }
  if (finite != nullptr) *finite = all_finite;
  return m;
}

// Throws unless every value of vector `v` is finite, naming the first that is not.
void require_finite(const float* row, std::int64_t cols, std::int64_t v) {
  for (std::int64_t c = 0; c < cols; ++c)
    if (!std::isfinite(row[c]))
      throw error("8-bit activations: x has " + std::to_string(row[c]) + " at row " +
                  std::to_string(v) + ", col " + std::to_string(c) + "; expected finite values");
}

// The grid of vector v (throws for NaN/Inf).
float vector_scale(const float* row, std::int64_t cols, std::int64_t v) {
  bool finite = true;
  const float largest = largest_magnitude(row, cols, &finite);
  if (!finite) require_finite(row, cols, v);
  return grid_scale(largest);
}

void require_rows(const cpu_weights& w, std::int64_t first, std::int64_t last, const char* what) {
  detail::require(first >= 0 && first <= last && last <= w.rows,
                  std::string(what) + ": rows [" + std::to_string(first) + ", " +
                      std::to_string(last) + ") are not within the layer's " +
                      std::to_string(w.rows) + " rows");
}

// The active target's fused int8 decoder, or the generic one.
auto int8_decoder() -> decltype(detail::cpu::kernel_table::decode_rows_int8) {
  const auto fused = detail::cpu::active_kernels().decode_rows_int8;
  return fused != nullptr ? fused : detail::cpu::decode_rows_int8_generic;
}

// Rows [first, last) of W_hat on their grids (q, or q + 128 when `excess`) into out, on
// cpu_threads() threads, with the target's fused kernel where it has one.
void decode_rows_int8(const cpu_weights& w, const float* scales, std::int64_t first,
                      std::int64_t last, bool excess, std::uint8_t* out, const char* what) {
  require_rows(w, first, last, what);
  const auto fused = int8_decoder();
  const std::int64_t tasks = (last - first + rows_per_task - 1) / rows_per_task;
  detail::cpu::thread_pool::instance().run(tasks, [&](std::int64_t t) {
    const std::int64_t n0 = first + t * rows_per_task, n1 = std::min(last, n0 + rows_per_task);
    fused(w, scales, n0, n1, excess, out + (n0 - first) * w.cols);
  });
}

}  // namespace

std::vector<float> cpu_int8_row_scales(const cpu_weights& w) {
  std::vector<float> scales(static_cast<std::size_t>(w.rows));
  const std::int64_t tasks = (w.rows + rows_per_task - 1) / rows_per_task;
  detail::cpu::thread_pool::instance().run(tasks, [&](std::int64_t t) {
    const std::int64_t n0 = t * rows_per_task, n1 = std::min(w.rows, n0 + rows_per_task);
    detail::scratch<float> rows(static_cast<std::size_t>((n1 - n0) * w.cols));
    detail::cpu::decode_rows(w, n0, n1, rows.data());
    for (std::int64_t n = n0; n < n1; ++n)
      scales[static_cast<std::size_t>(n)] =
          grid_scale(largest_magnitude(rows.data() + (n - n0) * w.cols, w.cols));
  });
  return scales;
}

namespace detail::cpu {

void int8_sums_portable(const std::int8_t* x, std::int64_t batch, const std::int8_t* w,
                        std::int64_t count, std::int64_t cols, std::int32_t* sums) {
  for (std::int64_t v = 0; v < batch; ++v)
    for (std::int64_t i = 0; i < count; ++i) {
      std::int32_t sum = 0;
      for (std::int64_t c = 0; c < cols; ++c)
        sum += std::int32_t{x[v * cols + c]} * std::int32_t{w[i * cols + c]};
      sums[v * count + i] = sum;
    }
}

void decode_rows_int8_generic(const cpu_weights& w, const float* scales, std::int64_t first,
                              std::int64_t last, bool excess, std::uint8_t* out) {
  detail::scratch<float> row(static_cast<std::size_t>(w.cols));
  for (std::int64_t n = first; n < last; ++n) {
    decode_rows(w, n, n + 1, row.data());
    std::uint8_t* q = out + (n - first) * w.cols;
    if (excess)
      to_grid<true>(row.data(), w.cols, grid_inverse(scales[n]), q);
    else
      to_grid<false>(row.data(), w.cols, grid_inverse(scales[n]), reinterpret_cast<std::int8_t*>(q));
  }
}

}  // namespace detail::cpu

void cpu_decode_rows_int8(const cpu_weights& w, const float* scales, std::int64_t first,
                          std::int64_t last, std::int8_t* out) {
  decode_rows_int8(w, scales, first, last, false, reinterpret_cast<std::uint8_t*>(out),
                   "cpu_decode_rows_int8");
}

void cpu_decode_rows_excess128(const cpu_weights& w, const float* scales, std::int64_t first,
                               std::int64_t last, std::uint8_t* out) {
  decode_rows_int8(w, scales, first, last, true, out, "cpu_decode_rows_excess128");
}

void quantize_vectors_int8(const float* x, std::int64_t batch, std::int64_t cols, std::int8_t* q,
                           float* scales) {
  for (std::int64_t v = 0; v < batch; ++v) {
    const float* row = x + v * cols;
    scales[v] = vector_scale(row, cols, v);
    to_grid<false>(row, cols, grid_inverse(scales[v]), q + v * cols);
  }
}

namespace {

// out column c = in row c for a 16 x 16 block of bytes: four rounds of interleaving rows i and
// i + 8 (a perfect shuffle) transpose it; the scalar loop does the same for partial blocks.
void transpose_bytes(const std::int8_t* in, std::int64_t in_stride, std::int64_t rows,
                     std::int64_t cols, std::int8_t* out, std::int64_t out_stride) {
#if defined(__SSE2__)
  if (rows == 16 && cols == 16) {
    __m128i a[16], b[16];
    for (int r = 0; r < 16; ++r)
      a[r] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + r * in_stride));
    for (int round = 0; round < 4; ++round) {
      for (int i = 0; i < 8; ++i) {
        b[2 * i] = _mm_unpacklo_epi8(a[i], a[i + 8]);
        b[2 * i + 1] = _mm_unpackhi_epi8(a[i], a[i + 8]);
      }
      for (int r = 0; r < 16; ++r) a[r] = b[r];
    }
    for (int c = 0; c < 16; ++c)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c * out_stride), a[c]);
    return;
  }
#endif
  for (std::int64_t c = 0; c < cols; ++c)
    for (std::int64_t r = 0; r < rows; ++r) out[c * out_stride + r] = in[r * in_stride + c];
}

}  // namespace

void quantize_vectors_int8_transposed(const float* x, std::int64_t batch, std::int64_t cols,
                                      std::int8_t* q_t, float* scales) {
  quantize_vectors_int8_transposed(x, batch, cols, q_t, batch, scales);
}

void quantize_vectors_int8_transposed(const float* x, std::int64_t batch, std::int64_t cols,
                                      std::int8_t* q_t, std::int64_t q_stride, float* scales) {
  detail::require(q_stride >= batch, "quantize_vectors_int8_transposed: q_stride " +
                                         std::to_string(q_stride) + " is below batch " +
                                         std::to_string(batch));
  // 16 vectors at a time: on their grids row by row (vectorized), then transposed 16 x 16
  // bytes at a time into their columns of q_t.
  constexpr std::int64_t tile = 16;
  detail::scratch<std::int8_t> rows(static_cast<std::size_t>(tile * cols));
  for (std::int64_t v0 = 0; v0 < batch; v0 += tile) {
    const std::int64_t count = std::min(tile, batch - v0);
    quantize_vectors_int8(x + v0 * cols, count, cols, rows.data(), scales + v0);
    for (std::int64_t c0 = 0; c0 < cols; c0 += tile)
      transpose_bytes(rows.data() + c0, cols, count, std::min(tile, cols - c0),
                      q_t + c0 * q_stride + v0, q_stride);
  }
}

namespace {

// One output of the float step, in the order qsl/cpu.hpp defines.
inline float finished(std::int32_t sum, float sx, float sw, const float* bias, std::int64_t n) {
  const float product = static_cast<float>(sum) * sx * sw;
  return bias != nullptr ? product + bias[n] : product;
}

}  // namespace

void finish_int8_products(const std::int32_t* sums, std::int64_t v_stride, std::int64_t n_stride,
                          const float* x_scales, std::int64_t batch, const float* w_scales,
                          std::int64_t n0, std::int64_t count, const float* bias, float* y,
                          std::int64_t y_stride) {
  // Tiles of 16 vectors x 64 outputs: sums laid out either way (one vector's row, or one
  // output's) are read a cache line at a time, and y a row of 64 floats at a time.
  constexpr std::int64_t tile_vectors = 16, tile_outputs = 64;
  for (std::int64_t v0 = 0; v0 < batch; v0 += tile_vectors)
    for (std::int64_t i0 = 0; i0 < count; i0 += tile_outputs) {
      const std::int64_t v1 = std::min(batch, v0 + tile_vectors);
      const std::int64_t i1 = std::min(count, i0 + tile_outputs);
      std::int64_t v = v0;
#if defined(__SSE2__)
      // The layout of a product with the layer's rows first (v_stride 1): 4 x 4 blocks of
      // sums transposed in registers, the same operations per value in the same order
      // (cvtdq2ps rounds to nearest as the cast does).
      if (v_stride == 1)
        for (; v + 4 <= v1; v += 4) {
          std::int64_t i = i0;
          for (; i + 4 <= i1; i += 4) {
            __m128 r[4];
            for (int k = 0; k < 4; ++k)
              r[k] = _mm_cvtepi32_ps(_mm_loadu_si128(
                  reinterpret_cast<const __m128i*>(sums + (i + k) * n_stride + v)));
            _MM_TRANSPOSE4_PS(r[0], r[1], r[2], r[3]);  // r[k]: vector v + k, outputs i..i+3
            const __m128 sw = _mm_loadu_ps(w_scales + n0 + i);
            for (int k = 0; k < 4; ++k) {
              __m128 out = _mm_mul_ps(_mm_mul_ps(r[k], _mm_set1_ps(x_scales[v + k])), sw);
              if (bias != nullptr) out = _mm_add_ps(out, _mm_loadu_ps(bias + n0 + i));
              _mm_storeu_ps(y + (v + k) * y_stride + n0 + i, out);
            }
          }
          for (; i < i1; ++i)
            for (int k = 0; k < 4; ++k)
              y[(v + k) * y_stride + n0 + i] = finished(
                  sums[(v + k) * v_stride + i * n_stride], x_scales[v + k], w_scales[n0 + i], bias,
                  n0 + i);
        }
#endif
      for (; v < v1; ++v) {
        float* out = y + v * y_stride + n0;
        const std::int32_t* s = sums + v * v_stride;
        std::int64_t i = i0;
#if defined(__SSE2__)
        // One vector's sums side by side (the tile kernels' layout): 4 outputs at a time.
        if (n_stride == 1) {
          const __m128 sx = _mm_set1_ps(x_scales[v]);
          for (; i + 4 <= i1; i += 4) {
            const __m128 sum =
                _mm_cvtepi32_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
            __m128 product = _mm_mul_ps(_mm_mul_ps(sum, sx), _mm_loadu_ps(w_scales + n0 + i));
            if (bias != nullptr) product = _mm_add_ps(product, _mm_loadu_ps(bias + n0 + i));
            _mm_storeu_ps(out + i, product);
          }
        }
#endif
        for (; i < i1; ++i)
          out[i] = finished(s[i * n_stride], x_scales[v], w_scales[n0 + i], bias, n0 + i);
      }
    }
}

namespace detail::cpu {

namespace {

// The blocks of int8_tile_vectors' layout for vectors [v0, v0 + count), where v0 is a multiple
// of 16 and count is 16 or the batch's remainder: one block of 16, or blocks of 8, 4, 2 and 1.
void tile_vector_blocks(const std::int8_t* q, std::int64_t v0, std::int64_t count,
                        std::int64_t cols, std::int64_t steps, std::int32_t* out) {
  const std::int64_t whole = std::min(steps, cols / 4);
  for (std::int64_t width : {16, 8, 4, 2, 1}) {
    if (count < width) continue;
    std::int32_t* dst = out + v0 * steps;
    for (std::int64_t v = 0; v < width; ++v) {
      const std::int8_t* row = q + (v0 + v) * cols;
      for (std::int64_t s = 0; s < whole; ++s) std::memcpy(dst + s * width + v, row + 4 * s, 4);
      for (std::int64_t s = whole; s < steps; ++s) {
        std::int8_t four[4] = {0, 0, 0, 0};  // columns past the row's end: 0
        for (std::int64_t i = 0; i < 4 && 4 * s + i < cols; ++i) four[i] = row[4 * s + i];
        std::memcpy(dst + s * width + v, four, sizeof four);
      }
    }
    v0 += width;
    count -= width;
  }
}

// The blocks of int8_tile_vectors' layout.
constexpr std::int64_t block_vectors = 16;

}  // namespace

void int8_tile_vectors(const std::int8_t* q, std::int64_t batch, std::int64_t cols,
                       std::int64_t steps, std::int32_t* out) {
  for (std::int64_t v0 = 0; v0 < batch; v0 += block_vectors)
    tile_vector_blocks(q, v0, std::min(block_vectors, batch - v0), cols, steps, out);
}

namespace {

// The vectors' grids in parallel (int8_vectors_per_task): at a few hundred vectors of a narrow
// layer (a ViT's 257 tokens x 384) these steps are a fifth of the product, and on one thread
// they held back a second.
void quantize_in_parallel(const float* x, std::int64_t batch, std::int64_t cols, std::int8_t* q,
                          float* scales) {
  const std::int64_t per_task = detail::int8_vectors_per_task(cols);
  thread_pool::instance().run((batch + per_task - 1) / per_task, [&](std::int64_t t) {
    const std::int64_t v0 = t * per_task;
    quantize_vectors_int8(x + v0 * cols, std::min(per_task, batch - v0), cols, q + v0 * cols,
                          scales + v0);
  });
}

// forward_int8 with a tile kernel: x's grids, sums and layout in tasks of vectors, then one
// task per 16-row tile of the layer.
void forward_int8_tiles(const cpu_weights& w, const float* scales, const float* x,
                        std::int64_t batch, const float* bias, float* y,
                        decltype(kernel_table::int8_tile_sums) tile_sums) {
  const std::int64_t steps = w.chunks * (chunk_cols / 4);
  scratch<std::int8_t> xq(static_cast<std::size_t>(batch * w.cols));
  scratch<std::int32_t> packed(static_cast<std::size_t>(batch * steps));
  std::vector<float> x_scales(static_cast<std::size_t>(batch));
  std::vector<std::int32_t> x_sums(static_cast<std::size_t>(batch));
  const std::int64_t per_task = detail::int8_vectors_per_task(w.cols);
  thread_pool::instance().run((batch + per_task - 1) / per_task, [&](std::int64_t t) {
    const std::int64_t v0 = t * per_task, count = std::min(per_task, batch - v0);
    std::int8_t* q = xq.data() + v0 * w.cols;
    quantize_vectors_int8(x + v0 * w.cols, count, w.cols, q, x_scales.data() + v0);
    for (std::int64_t v = 0; v < count; ++v) {
      std::int32_t sum = 0;  // a local: a store through int8_t* may alias x_sums
      for (std::int64_t c = 0; c < w.cols; ++c) sum += q[v * w.cols + c];
      x_sums[static_cast<std::size_t>(v0 + v)] = sum;
    }
    for (std::int64_t b = v0; b < v0 + count; b += block_vectors)
      tile_vector_blocks(xq.data(), b, std::min(block_vectors, batch - b), w.cols, steps,
                         packed.data());
  });
  thread_pool::instance().run(w.tiles, [&](std::int64_t t) {
    const std::int64_t n0 = t * tile_rows, count = std::min<std::int64_t>(w.rows - n0, tile_rows);
    scratch<std::int32_t> sums(static_cast<std::size_t>(batch * tile_rows));  // all written
    tile_sums(w, scales, t, packed.data(), x_sums.data(), batch, sums.data());
    finish_int8_products(sums.data(), tile_rows, 1, x_scales.data(), batch, scales, n0, count, bias,
                         y, w.rows);
  });
}

}  // namespace

void forward_int8(const cpu_weights& w, const float* scales, const float* x, std::int64_t batch,
                  const float* bias, float* y, decltype(kernel_table::int8_sums) int8_sums,
                  decltype(kernel_table::int8_tile_sums) tile_sums) {
  detail::require(w.cols <= cpu_int8_max_cols,
                  "8-bit activations: the layer has " + std::to_string(w.cols) +
                      " columns; int32 sums hold at most " + std::to_string(cpu_int8_max_cols));
  if (batch <= 0) return;
  if (tile_sums != nullptr && int8_tiles_fit(w))
    return forward_int8_tiles(w, scales, x, batch, bias, y, tile_sums);
  if (int8_sums == nullptr) int8_sums = int8_sums_portable;
  scratch<std::int8_t> xq(static_cast<std::size_t>(batch * w.cols));
  std::vector<float> x_scales(static_cast<std::size_t>(batch));
  quantize_in_parallel(x, batch, w.cols, xq.data(), x_scales.data());
  const std::int64_t tasks = (w.rows + rows_per_task - 1) / rows_per_task;
  thread_pool::instance().run(tasks, [&](std::int64_t t) {
    const std::int64_t n0 = t * rows_per_task, count = std::min(w.rows - n0, rows_per_task);
    scratch<std::int8_t> wq(static_cast<std::size_t>(count * w.cols));
    int8_decoder()(w, scales, n0, n0 + count, false, reinterpret_cast<std::uint8_t*>(wq.data()));
    scratch<std::int32_t> sums(static_cast<std::size_t>(batch * count));  // all written
    int8_sums(xq.data(), batch, wq.data(), count, w.cols, sums.data());
    finish_int8_products(sums.data(), count, 1, x_scales.data(), batch, scales, n0, count, bias,
                         y, w.rows);
  });
}

}  // namespace detail::cpu

bool cpu_int8_from_code(const cpu_weights& w) {
  return detail::cpu::active_kernels().int8_tile_sums != nullptr && detail::cpu::int8_tiles_fit(w);
}

void cpu_forward_int8(const cpu_weights& w, const float* scales, const float* x,
                      std::int64_t batch, const float* bias, float* y) {
  const auto& k = detail::cpu::active_kernels();
  detail::cpu::forward_int8(w, scales, x, batch, bias, y, k.int8_sums, k.int8_tile_sums);
}

}  // namespace qsl
