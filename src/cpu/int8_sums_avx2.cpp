// AVX2 exact int8 dot products for the 8-bit activation path (kernel_table::int8_sums).
//
// Why not vpmaddubsw, the u8 x s8 instruction AVX2 int8 GEMMs use: it adds each pair of
// products in int16 with saturation (255 * 127 * 2 > 2^15), which is what makes ONNX
// Runtime's MatMulInteger inexact on CPUs without VNNI. Here both operands are widened to
// int16 and multiplied with vpmaddwd, whose pairs are summed in int32: exact for any int8
// values, at 16 products per instruction (vpmaddubsw + vpmaddwd give 32 per two).
//
// Blocking: the weight rows of a call (a task's few rows) are widened once, zero-padded to a
// multiple of 16 columns; vectors go 256 at a time (their int8 rows stay in L2) and, within
// that block, each tile of 4 weight rows (L1) meets every pair of vectors: 8 accumulators, 4
// weight registers and 1 vector register of the 16.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu/kernels.hpp"
#include "scratch.hpp"

#define QSL_TARGET_FEATURES "avx2"
#include "cpu/target_pragma_begin.hpp"

namespace qsl::detail::cpu {
namespace {

constexpr std::int64_t lanes = 16;           // int16 values per register
constexpr std::int64_t vector_block = 256;   // vectors whose int8 rows stay in L2
constexpr int tile_vectors = 2, tile_weight_rows = 4;

inline std::int32_t horizontal_sum(__m256i v) {
  const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i t = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1))));
}

// 16 int8 values of a row from column c, widened.
inline __m256i widened(const std::int8_t* row, std::int64_t c) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c)));
}

// sums[v * count + r] for V vectors and R widened weight rows (stride: padded columns). The
// last, partial chunk of x goes through a zeroed copy (a row may end at its buffer's end).
template <int V, int R>
void tile(const std::int8_t* x, std::int64_t cols, const std::int16_t* w, std::int64_t stride,
          std::int64_t count, std::int32_t* sums) {
  __m256i acc[V][R];
  for (int v = 0; v < V; ++v)
    for (int r = 0; r < R; ++r) acc[v][r] = _mm256_setzero_si256();
  auto step = [&](std::int64_t c, auto&& x_at) {
    __m256i wr[R];
    for (int r = 0; r < R; ++r)
      wr[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + r * stride + c));
    for (int v = 0; v < V; ++v) {
      const __m256i xv = x_at(v);
      for (int r = 0; r < R; ++r)
        acc[v][r] = _mm256_add_epi32(acc[v][r], _mm256_madd_epi16(xv, wr[r]));
    }
  };
  const std::int64_t whole = cols / lanes * lanes;
  for (std::int64_t c = 0; c < whole; c += lanes)
    step(c, [&](int v) { return widened(x + v * cols, c); });
  if (whole < cols) {
    alignas(16) std::int8_t tails[V][lanes] = {};
    for (int v = 0; v < V; ++v)
      std::memcpy(tails[v], x + v * cols + whole, static_cast<std::size_t>(cols - whole));
    step(whole, [&](int v) { return widened(tails[v], 0); });
  }
  for (int v = 0; v < V; ++v)
    for (int r = 0; r < R; ++r) sums[v * count + r] = horizontal_sum(acc[v][r]);
}

// One tile of V vectors and `rows` (1..tile_weight_rows) weight rows.
template <int V>
void tile_of(int rows, const std::int8_t* x, std::int64_t cols, const std::int16_t* w,
             std::int64_t stride, std::int64_t count, std::int32_t* sums) {
  switch (rows) {
    case 4: tile<V, 4>(x, cols, w, stride, count, sums); break;
    case 3: tile<V, 3>(x, cols, w, stride, count, sums); break;
    case 2: tile<V, 2>(x, cols, w, stride, count, sums); break;
    default: tile<V, 1>(x, cols, w, stride, count, sums); break;
  }
}

}  // namespace

void int8_sums_avx2(const std::int8_t* x, std::int64_t batch, const std::int8_t* w,
                    std::int64_t count, std::int64_t cols, std::int32_t* sums) {
  if (batch <= 0 || count <= 0) return;
  const std::int64_t stride = (cols + lanes - 1) / lanes * lanes;
  scratch<std::int16_t> wide(static_cast<std::size_t>(count * stride));
  for (std::int64_t i = 0; i < count; ++i) {
    std::int16_t* row = wide.data() + i * stride;
    for (std::int64_t c = 0; c < cols; ++c) row[c] = w[i * cols + c];
    std::fill(row + cols, row + stride, std::int16_t{0});
  }
  for (std::int64_t v0 = 0; v0 < batch; v0 += vector_block) {
    const std::int64_t v1 = std::min(batch, v0 + vector_block);
    for (std::int64_t r0 = 0; r0 < count; r0 += tile_weight_rows) {
      const int rows = static_cast<int>(std::min<std::int64_t>(tile_weight_rows, count - r0));
      const std::int16_t* wt = wide.data() + r0 * stride;
      std::int64_t v = v0;
      for (; v + tile_vectors <= v1; v += tile_vectors)
        tile_of<tile_vectors>(rows, x + v * cols, cols, wt, stride, count, sums + v * count + r0);
      if (v < v1) tile_of<1>(rows, x + v * cols, cols, wt, stride, count, sums + v * count + r0);
    }
  }
}

}  // namespace qsl::detail::cpu

#include "cpu/target_pragma_end.hpp"
