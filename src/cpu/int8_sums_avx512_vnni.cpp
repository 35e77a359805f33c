// AVX-512 VNNI exact int8 dot products for the 8-bit activation path (kernel_table::int8_sums on
// the AVX-512 targets of CPUs with VNNI: Zen 4, Ice Lake and later).
//
// vpdpbusd multiplies u8 by s8 and adds each four products into an int32 lane, with no
// saturation: 64 products per instruction, where the AVX2 kernel's vpmaddwd gives 16. The
// activations are s8, so they enter as u8 = x + 128 (a sign-bit flip), and
// sum (x + 128) w = sum x w + 128 sum w: each weight row's 128 sum w is computed once per call
// (vpdpbusd of the row with bytes of 128) and subtracted. Both sums may pass 2^31 on the widest
// rows; they wrap mod 2^32 (vector adds), and the difference, the true sum, is below 2^31 in
// magnitude (cpu_int8_max_cols), so it comes out exact.
//
// Blocking: 4 vectors x 4 weight rows per tile (16 accumulators), 64 columns per step; vectors go
// 256 at a time (their rows stay in L2), and within that block each tile of weight rows (L1)
// meets every group of 4 vectors. The last, partial step of a row reads through byte masks.
#include <immintrin.h>

#include <algorithm>

#include "cpu/kernels.hpp"
#include "scratch.hpp"

#define QSL_TARGET_FEATURES "avx512f,avx512bw,avx512vl,avx512vnni"
#include "cpu/avx512_intrinsic_warnings.hpp"  // GCC 12's false warnings
#include "cpu/target_pragma_begin.hpp"

namespace qsl::detail::cpu {
namespace {

constexpr std::int64_t step_cols = 64;
constexpr std::int64_t vector_block = 256;
constexpr int tile_vectors = 4, tile_weight_rows = 4;

// The sum of the 16 lanes, mod 2^32: the intrinsics' adds wrap, as the sums here may.
inline std::uint32_t lane_sum(__m512i v) {
  const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  const __m128i t = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  return static_cast<std::uint32_t>(
      _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)))));
}

// 64 bytes of a row from column c; `tail` masks the columns past its end (0 there).
inline __m512i row_bytes(const std::int8_t* row, std::int64_t c, __mmask64 tail) {
  return _mm512_maskz_loadu_epi8(tail, row + c);
}

// sums[v * count + r] for V vectors and R weight rows, given each row's 128 sum w (`offset`).
template <int V, int R>
void tile(const std::int8_t* x, std::int64_t cols, const std::int8_t* w, std::int64_t count,
          const std::uint32_t* offset, std::int32_t* sums) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i acc[V][R];
  for (auto& a : acc)
    for (auto& v : a) v = _mm512_setzero_si512();
  auto step = [&](std::int64_t c, __mmask64 tail) {
    __m512i wr[R];
    for (int r = 0; r < R; ++r) wr[r] = row_bytes(w + r * cols, c, tail);
    for (int v = 0; v < V; ++v) {
      // Past the row's end x is 0, flipped to 128, against w = 0: no contribution.
      const __m512i xv = _mm512_xor_si512(row_bytes(x + v * cols, c, tail), flip);
      for (int r = 0; r < R; ++r) acc[v][r] = _mm512_dpbusd_epi32(acc[v][r], xv, wr[r]);
    }
  };
  const std::int64_t whole = cols / step_cols * step_cols;
  for (std::int64_t c = 0; c < whole; c += step_cols) step(c, ~__mmask64{0});
  if (whole < cols) step(whole, (__mmask64{1} << (cols - whole)) - 1);
  for (int v = 0; v < V; ++v)
    for (int r = 0; r < R; ++r)
      sums[v * count + r] = static_cast<std::int32_t>(lane_sum(acc[v][r]) - offset[r]);
}

template <int V>
void tile_of(int rows, const std::int8_t* x, std::int64_t cols, const std::int8_t* w,
             std::int64_t count, const std::uint32_t* offset, std::int32_t* sums) {
  switch (rows) {
    case 4:
      tile<V, 4>(x, cols, w, count, offset, sums);
      break;
    case 3:
      tile<V, 3>(x, cols, w, count, offset, sums);
      break;
    case 2:
      tile<V, 2>(x, cols, w, count, offset, sums);
      break;
    default:
      tile<V, 1>(x, cols, w, count, offset, sums);
      break;
  }
}

// 128 * sum of each weight row, mod 2^32 (what vpdpbusd adds for the flipped sign bits).
void row_offsets(const std::int8_t* w, std::int64_t count, std::int64_t cols,
                 std::uint32_t* offset) {
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  for (std::int64_t i = 0; i < count; ++i) {
    __m512i acc = _mm512_setzero_si512();
    for (std::int64_t c = 0; c < cols; c += step_cols) {
      const __mmask64 tail =
          cols - c >= step_cols ? ~__mmask64{0} : (__mmask64{1} << (cols - c)) - 1;
      acc = _mm512_dpbusd_epi32(acc, bias, row_bytes(w + i * cols, c, tail));
    }
    offset[i] = lane_sum(acc);
  }
}

}  // namespace

void int8_sums_avx512_vnni(const std::int8_t* x, std::int64_t batch, const std::int8_t* w,
                           std::int64_t count, std::int64_t cols, std::int32_t* sums) {
  if (batch <= 0 || count <= 0) return;
  scratch<std::uint32_t> offset(static_cast<std::size_t>(count));
  row_offsets(w, count, cols, offset.data());
  for (std::int64_t v0 = 0; v0 < batch; v0 += vector_block) {
    const std::int64_t v1 = std::min(batch, v0 + vector_block);
    for (std::int64_t r0 = 0; r0 < count; r0 += tile_weight_rows) {
      const int rows = static_cast<int>(std::min<std::int64_t>(tile_weight_rows, count - r0));
      const std::int8_t* wt = w + r0 * cols;
      std::int64_t v = v0;
      for (; v + tile_vectors <= v1; v += tile_vectors)
        tile_of<tile_vectors>(rows, x + v * cols, cols, wt, count, offset.data() + r0,
                              sums + v * count + r0);
      for (; v < v1; ++v)
        tile_of<1>(rows, x + v * cols, cols, wt, count, offset.data() + r0, sums + v * count + r0);
    }
  }
}

}  // namespace qsl::detail::cpu

#include "cpu/target_pragma_end.hpp"
