// AVX-512 kernels (F/BW/DQ/VL). One register holds a lookup plane of a whole 16-row tile for 32
// columns, and a 16-entry float table is one register too, so a table lookup for 16 rows is one
// vpermps. Compiled twice: here without VPOPCNTDQ (popcount from byte tables, vpshufb), and by
// kernels_avx512_vpopcnt.cpp with it (vpopcntd).
#include <immintrin.h>

#include <algorithm>
#include <utility>

#include "cpu/kernel_common.hpp"

#ifndef QSL_AVX512_VPOPCNT
#define QSL_AVX512_VPOPCNT 0
#endif

// Only the code below is compiled for AVX-512 (see target_pragma.hpp).
#if QSL_AVX512_VPOPCNT
#define QSL_TARGET_FEATURES "avx512f,avx512bw,avx512dq,avx512vl,avx512vpopcntdq,bmi2,popcnt,fma"
#else
#define QSL_TARGET_FEATURES "avx512f,avx512bw,avx512dq,avx512vl,bmi2,popcnt,fma"
#endif
#include "cpu/target_pragma_begin.hpp"

// GCC 12 warns about the "undefined" pass-through operand inside its own AVX-512 intrinsics
// (_mm512_srl_epi32, _mm512_permutexvar_ps, ...): a known false positive of the headers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace qsl::detail::cpu {
namespace {

// ---- float activations: tables and look-ups --------------------------------------------------

// T[s] = sum of the x[4s + i] selected by the bits of the lane index: four masked adds of
// broadcasts, in the order i = 0..3 (the scalar target adds in the same order).
void build_tables(const cpu_weights& w, const float* x, float* tables, float* group_sums) {
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  __mmask16 select[4];
  for (int i = 0; i < 4; ++i)
    select[i] = _mm512_test_epi32_mask(lane, _mm512_set1_epi32(1 << i));
  const std::int64_t count = nibbles(w);
  for (std::int64_t s = 0; s < count; ++s) {
    __m512 t = _mm512_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      const std::int64_t c = 4 * s + i;
      const float v = c < w.cols ? x[c] : 0.0f;
      t = _mm512_mask_add_ps(t, select[i], t, _mm512_set1_ps(v));
    }
    _mm512_store_ps(tables + s * table_entries, t);
  }
  for (std::int64_t g = 0; g < w.groups; ++g) {
    float sum = 0;
    for (std::int64_t c = group_begin(w, g); c < group_end(w, g); ++c) sum += x[c];
    group_sums[g] = sum;
  }
}

// One tile: P lookup planes held as running index registers (shifted right by 4 per nibble;
// vpermps reads the low 4 bits of each lane) and P accumulators.
template <int P, bool Ternary>
__m512 lut_tile(const cpu_weights& w, const table_input& x, std::int64_t t) {
  constexpr int K = Ternary ? P / 2 : P;
  __m512 y = _mm512_setzero_ps();
  for (std::int64_t g = 0; g < w.groups; ++g) {
    __m512 acc[P];
    for (int p = 0; p < P; ++p) acc[p] = _mm512_setzero_ps();
    const std::int64_t end = last_nibble(w, g);
    for (std::int64_t s = first_nibble(w, g); s < end;) {
      const std::int64_t shift = s % 8;
      const std::int64_t run = std::min<std::int64_t>(8 - shift, end - s);
      const std::uint32_t* chunk = w.chunk_bits(t, s / 8);
      const __m128i count = _mm_cvtsi32_si128(static_cast<int>(4 * shift));
      __m512i idx[P];
      for (int p = 0; p < P; ++p)
        idx[p] = _mm512_srl_epi32(_mm512_load_si512(chunk + p * tile_rows), count);
      const float* table = x.tables + s * table_entries;
      for (std::int64_t u = 0; u < run; ++u) {
        const __m512 entries = _mm512_load_ps(table + u * table_entries);
        for (int p = 0; p < P; ++p) {
          acc[p] = _mm512_add_ps(acc[p], _mm512_permutexvar_ps(idx[p], entries));
          idx[p] = _mm512_srli_epi32(idx[p], 4);
        }
      }
      s += run;
    }
    const float* alpha = w.tile_coefficients(t, g);
    const __m512 group_sum = _mm512_set1_ps(x.group_sums[g]);
    for (int j = 0; j < K; ++j) {
      const __m512 other = Ternary ? acc[K + j] : group_sum;
      const __m512 dot = _mm512_sub_ps(_mm512_add_ps(acc[j], acc[j]), other);  // 2A - B
      y = _mm512_fmadd_ps(_mm512_load_ps(alpha + j * tile_rows), dot, y);
    }
  }
  return y;
}

template <int P, bool Ternary>
void lut_rows_for(const cpu_weights& w, const table_input& x, std::int64_t t0, std::int64_t t1,
                  float* y) {
  for (std::int64_t t = t0; t < t1; ++t)
    _mm512_storeu_ps(y + (t - t0) * tile_rows, lut_tile<P, Ternary>(w, x, t));
}

// ---- encoded activations: AND + popcount ----------------------------------------------------

// Per-lane popcount of 32-bit words.
inline __m512i popcount32(__m512i v) {
#if QSL_AVX512_VPOPCNT
  return _mm512_popcnt_epi32(v);
#else
  // Nibble table per byte (vpshufb), then bytes summed into their dword (two madds).
  const __m512i table = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3,
                                                             2, 3, 3, 4));
  const __m512i low = _mm512_set1_epi8(0x0F);
  const __m512i bytes = _mm512_add_epi8(
      _mm512_shuffle_epi8(table, _mm512_and_si512(v, low)),
      _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(v, 4), low)));
  const __m512i pairs = _mm512_maddubs_epi16(bytes, _mm512_set1_epi8(1));
  return _mm512_madd_epi16(pairs, _mm512_set1_epi16(1));
#endif
}

void encode(const cpu_weights& w, const float* x, float minimum, float inv_step, int bits,
            std::uint32_t* planes, std::int32_t* group_levels) {
  const __m512 lo = _mm512_set1_ps(minimum), inv = _mm512_set1_ps(inv_step);
  const __m512 half = _mm512_set1_ps(0.5f), zero = _mm512_setzero_ps();
  const __m512 top = _mm512_set1_ps(static_cast<float>((1 << bits) - 1));
  for (std::int64_t c = 0; c < w.chunks; ++c) {
    std::uint32_t word[max_activation_bits] = {};
    for (int h = 0; h < 2; ++h) {  // two halves of 16 columns
      const std::int64_t first = c * chunk_cols + 16 * h;
      const std::int64_t valid = std::clamp<std::int64_t>(w.cols - first, 0, 16);
      const __mmask16 m = static_cast<__mmask16>((1U << valid) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(m, x + std::min(first, w.cols));
      // floor((x - min) * inv + 0.5) with the multiply and the add rounded separately;
      // max(scaled, 0) also maps NaN to 0.
      const __m512 scaled = _mm512_roundscale_ps(
          _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, lo), inv), half), _MM_FROUND_TO_NEG_INF);
      const __m512i q = _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(scaled, zero), top));
      for (int i = 0; i < bits; ++i) {
        const __mmask16 bit = _mm512_mask_test_epi32_mask(m, q, _mm512_set1_epi32(1 << i));
        word[i] |= static_cast<std::uint32_t>(bit) << (16 * h);
      }
    }
    for (int i = 0; i < bits; ++i) planes[i * w.chunks + c] = word[i];
  }
  for (std::int64_t g = 0; g < w.groups; ++g) {
    std::int32_t sum = 0;
    for (int i = 0; i < bits; ++i)
      for (std::int64_t c = group_begin(w, g) / chunk_cols; c * chunk_cols < group_end(w, g); ++c)
        sum += _mm_popcnt_u32(planes[i * w.chunks + c] & group_chunk_mask(w, g, c)) << i;
    group_levels[g] = sum;
  }
}

// One tile: per lookup plane, sum over chunks and activation bits of 2^i popcount(m AND t_i).
template <int P, bool Ternary>
__m512 popcount_tile(const cpu_weights& w, const encoded_input& x, std::int64_t t) {
  constexpr int K = Ternary ? P / 2 : P;
  __m512 z = _mm512_setzero_ps();
  __m512i act[max_activation_bits];
  for (std::int64_t g = 0; g < w.groups; ++g) {
    __m512i acc[P];
    for (int p = 0; p < P; ++p) acc[p] = _mm512_setzero_si512();
    const std::int64_t end = group_end(w, g);
    for (std::int64_t c = group_begin(w, g) / chunk_cols; c * chunk_cols < end; ++c) {
      const std::uint32_t mask = group_chunk_mask(w, g, c);
      for (int i = 0; i < x.bits; ++i)
        act[i] = _mm512_set1_epi32(static_cast<int>(x.planes[i * w.chunks + c] & mask));
      const std::uint32_t* chunk = w.chunk_bits(t, c);
      for (int p = 0; p < P; ++p) {
        const __m512i m = _mm512_load_si512(chunk + p * tile_rows);
        // Horner over the activation bits: h = 2 h + popcount(m AND t_i), i from the top.
        __m512i h = _mm512_setzero_si512();
        for (int i = x.bits - 1; i >= 0; --i)
          h = _mm512_add_epi32(_mm512_add_epi32(h, h), popcount32(_mm512_and_si512(m, act[i])));
        acc[p] = _mm512_add_epi32(acc[p], h);
      }
    }
    const float* alpha = w.tile_coefficients(t, g);
    const __m512i levels = _mm512_set1_epi32(x.group_levels[g]);
    for (int j = 0; j < K; ++j) {
      const __m512i other = Ternary ? acc[K + j] : levels;
      const __m512i dot = _mm512_sub_epi32(_mm512_add_epi32(acc[j], acc[j]), other);
      z = _mm512_fmadd_ps(_mm512_load_ps(alpha + j * tile_rows), _mm512_cvtepi32_ps(dot), z);
    }
  }
  return z;
}

template <int P, bool Ternary>
void popcount_rows_for(const cpu_weights& w, const encoded_input& x, std::int64_t t0,
                       std::int64_t t1, float* z) {
  for (std::int64_t t = t0; t < t1; ++t)
    _mm512_storeu_ps(z + (t - t0) * tile_rows, popcount_tile<P, Ternary>(w, x, t));
}

// ---- dispatch over the number of planes (compile-time so the plane loops unroll) ------------

template <int P, bool Ternary>
struct lut_call {
  static void run(const cpu_weights& w, const table_input& x, std::int64_t t0, std::int64_t t1,
                  float* y) {
    lut_rows_for<P, Ternary>(w, x, t0, t1, y);
  }
};
template <int P, bool Ternary>
struct popcount_call {
  static void run(const cpu_weights& w, const encoded_input& x, std::int64_t t0, std::int64_t t1,
                  float* z) {
    popcount_rows_for<P, Ternary>(w, x, t0, t1, z);
  }
};

void lut_rows(const cpu_weights& w, const table_input& x, std::int64_t t0, std::int64_t t1,
              float* y) {
  by_planes<lut_call>(w, x, t0, t1, y);
}

void popcount_rows(const cpu_weights& w, const encoded_input& x, std::int64_t t0, std::int64_t t1,
                   float* z) {
  by_planes<popcount_call>(w, x, t0, t1, z);
}

}  // namespace
}  // namespace qsl::detail::cpu

#include "cpu/target_pragma_end.hpp"

namespace qsl::detail::cpu {

#if QSL_AVX512_VPOPCNT
const kernel_table& avx512_vpopcnt_kernels() {
#else
const kernel_table& avx512_kernels() {
#endif
  static const kernel_table table{build_tables, lut_rows, encode, popcount_rows};
  return table;
}

}  // namespace qsl::detail::cpu
