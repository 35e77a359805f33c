// AVX2 kernels. A 16-row tile is two 8-lane halves. vpermps looks up 8 entries, so a 16-entry
// table is two registers and bit 3 of the nibble picks the half (blendv on that bit moved to the
// sign). Popcounts come from byte tables (vpshufb).
#include <immintrin.h>

#include <algorithm>
#include <utility>

#include "cpu/kernel_common.hpp"

#define QSL_TARGET_FEATURES "avx2,fma,bmi2,popcnt"
#include "cpu/target_pragma_begin.hpp"

namespace qsl::detail::cpu {
namespace {

// ---- float activations -----------------------------------------------------------------------

void build_tables(const cpu_weights& w, const float* x, float* tables, float* group_sums) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const std::int64_t count = nibbles(w);
  for (std::int64_t s = 0; s < count; ++s) {
    float v[4];
    for (int i = 0; i < 4; ++i) v[i] = 4 * s + i < w.cols ? x[4 * s + i] : 0.0f;
    // Entries 0..7 use bits 0..2; entries 8..15 add x3 last (the scalar order).
    __m256 lo = _mm256_setzero_ps();
    for (int i = 0; i < 3; ++i) {
      const __m256 select = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
          _mm256_and_si256(lane, _mm256_set1_epi32(1 << i)), _mm256_set1_epi32(1 << i)));
      lo = _mm256_add_ps(lo, _mm256_and_ps(select, _mm256_set1_ps(v[i])));
    }
    const __m256 hi = _mm256_add_ps(lo, _mm256_set1_ps(v[3]));
    _mm256_store_ps(tables + s * table_entries, lo);
    _mm256_store_ps(tables + s * table_entries + 8, hi);
  }
  group_sums_of(w, x, group_sums);
}

// T[idx & 15] for 8 lanes: two 8-entry look-ups, bit 3 (moved to the sign bit) picks one.
inline __m256 lookup16(__m256 lo, __m256 hi, __m256i idx) {
  const __m256 pick_hi = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
                          pick_hi);
}

template <int P, bool Ternary>
void lut_tile(const cpu_weights& w, const table_input& x, std::int64_t t, float* y) {
  constexpr int K = Ternary ? P / 2 : P;
  for (int half = 0; half < 2; ++half) {
    __m256 out = _mm256_setzero_ps();
    for (std::int64_t g = 0; g < w.groups; ++g) {
      __m256 acc[P];
      for (int p = 0; p < P; ++p) acc[p] = _mm256_setzero_ps();
      const std::int64_t end = last_nibble(w, g);
      for (std::int64_t s = first_nibble(w, g); s < end;) {
        const std::int64_t shift = s % 8;
        const std::int64_t run = std::min<std::int64_t>(8 - shift, end - s);
        const std::uint32_t* chunk = w.chunk_bits(t, s / 8) + 8 * half;
        const __m128i count = _mm_cvtsi32_si128(static_cast<int>(4 * shift));
        __m256i idx[P];
        for (int p = 0; p < P; ++p)
          idx[p] = _mm256_srl_epi32(
              _mm256_load_si256(reinterpret_cast<const __m256i*>(chunk + p * tile_rows)), count);
        const float* table = x.tables + s * table_entries;
        for (std::int64_t u = 0; u < run; ++u) {
          const __m256 lo = _mm256_load_ps(table + u * table_entries);
          const __m256 hi = _mm256_load_ps(table + u * table_entries + 8);
          for (int p = 0; p < P; ++p) {
            acc[p] = _mm256_add_ps(acc[p], lookup16(lo, hi, idx[p]));
            idx[p] = _mm256_srli_epi32(idx[p], 4);
          }
        }
        s += run;
      }
      const float* alpha = w.tile_coefficients(t, g) + 8 * half;
      const __m256 group_sum = _mm256_set1_ps(x.group_sums[g]);
      for (int j = 0; j < K; ++j) {
        const __m256 other = Ternary ? acc[K + j] : group_sum;
        const __m256 dot = _mm256_sub_ps(_mm256_add_ps(acc[j], acc[j]), other);
        out = _mm256_fmadd_ps(_mm256_load_ps(alpha + j * tile_rows), dot, out);
      }
    }
    _mm256_storeu_ps(y + 8 * half, out);
  }
}

// ---- encoded activations ---------------------------------------------------------------------

inline __m256i popcount32(__m256i v) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                         1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0F);
  const __m256i bytes =
      _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_and_si256(v, low)),
                      _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)));
  return _mm256_madd_epi16(_mm256_maddubs_epi16(bytes, _mm256_set1_epi8(1)), _mm256_set1_epi16(1));
}

void encode(const cpu_weights& w, const float* x, float minimum, float inv_step, int bits,
            std::uint32_t* planes, std::int32_t* group_levels) {
  const __m256 lo = _mm256_set1_ps(minimum), inv = _mm256_set1_ps(inv_step);
  const __m256 half = _mm256_set1_ps(0.5f), zero = _mm256_setzero_ps();
  const __m256 top = _mm256_set1_ps(static_cast<float>((1 << bits) - 1));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (std::int64_t c = 0; c < w.chunks; ++c) {
    std::uint32_t word[max_activation_bits] = {};
    for (int part = 0; part < 4; ++part) {  // four quarters of 8 columns
      const std::int64_t first = c * chunk_cols + 8 * part;
      const std::int64_t valid = std::clamp<std::int64_t>(w.cols - first, 0, 8);
      const __m256i in_range = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)), lane);
      const __m256 v = _mm256_maskload_ps(x + std::min(first, w.cols), in_range);
      const __m256 scaled =
          _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v, lo), inv), half));
      // max(scaled, 0) returns 0 for NaN (the second operand), as the scalar rule does.
      __m256i q = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(scaled, zero), top));
      q = _mm256_and_si256(q, in_range);  // padding columns encode as 0
      for (int i = 0; i < bits; ++i) {
        const int bit = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(q, 31 - i)));
        word[i] |= static_cast<std::uint32_t>(bit) << (8 * part);
      }
    }
    for (int i = 0; i < bits; ++i) planes[i * w.chunks + c] = word[i];
  }
  group_levels_of(w, planes, bits, group_levels);
}

template <int P, bool Ternary>
void popcount_tile(const cpu_weights& w, const encoded_input& x, std::int64_t t, float* z) {
  constexpr int K = Ternary ? P / 2 : P;
  __m256i act[max_activation_bits];
  for (int half = 0; half < 2; ++half) {
    __m256 out = _mm256_setzero_ps();
    for (std::int64_t g = 0; g < w.groups; ++g) {
      __m256i acc[P];
      for (int p = 0; p < P; ++p) acc[p] = _mm256_setzero_si256();
      const std::int64_t end = group_end(w, g);
      for (std::int64_t c = group_begin(w, g) / chunk_cols; c * chunk_cols < end; ++c) {
        const std::uint32_t mask = group_chunk_mask(w, g, c);
        for (int i = 0; i < x.bits; ++i)
          act[i] = _mm256_set1_epi32(static_cast<int>(x.planes[i * w.chunks + c] & mask));
        const std::uint32_t* chunk = w.chunk_bits(t, c) + 8 * half;
        for (int p = 0; p < P; ++p) {
          const __m256i m =
              _mm256_load_si256(reinterpret_cast<const __m256i*>(chunk + p * tile_rows));
          __m256i h = _mm256_setzero_si256();
          for (int i = x.bits - 1; i >= 0; --i)
            h = _mm256_add_epi32(_mm256_add_epi32(h, h), popcount32(_mm256_and_si256(m, act[i])));
          acc[p] = _mm256_add_epi32(acc[p], h);
        }
      }
      const float* alpha = w.tile_coefficients(t, g) + 8 * half;
      const __m256i levels = _mm256_set1_epi32(x.group_levels[g]);
      for (int j = 0; j < K; ++j) {
        const __m256i other = Ternary ? acc[K + j] : levels;
        const __m256i dot = _mm256_sub_epi32(_mm256_add_epi32(acc[j], acc[j]), other);
        out = _mm256_fmadd_ps(_mm256_load_ps(alpha + j * tile_rows), _mm256_cvtepi32_ps(dot), out);
      }
    }
    _mm256_storeu_ps(z + 8 * half, out);
  }
}

// The tile functions as the shared one-tile-at-a-time adapter expects them.
template <int P, bool Ternary>
struct tiles {
  static void lut(const cpu_weights& w, const table_input& x, std::int64_t t, float* y) {
    lut_tile<P, Ternary>(w, x, t, y);
  }
  static void popcount(const cpu_weights& w, const encoded_input& x, std::int64_t t, float* z) {
    popcount_tile<P, Ternary>(w, x, t, z);
  }
};

#include "cpu/decode_rows.inc"  // NOLINT(bugprone-suspicious-include): per target

}  // namespace
}  // namespace qsl::detail::cpu

#include "cpu/target_pragma_end.hpp"

namespace qsl::detail::cpu {

const kernel_table& avx2_kernels() {
  using adapter = tile_at_a_time<tiles>;
  static const kernel_table table{build_tables, adapter::lut_rows, encode, adapter::popcount_rows,
                                  decode_target_rows};
  return table;
}

}  // namespace qsl::detail::cpu
