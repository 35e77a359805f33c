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
#include "cpu/avx512_intrinsic_warnings.hpp"  // GCC 12's false warnings
#include "cpu/target_pragma_begin.hpp"

namespace qsl::detail::cpu {
namespace {

// ---- float activations: tables and look-ups --------------------------------------------------

// T[s] = sum of the x[4s + i] selected by the bits of the lane index: four masked adds of
// broadcasts, in the order i = 0..3 (the scalar target adds in the same order).
void build_tables(const cpu_weights& w, const float* x, float* tables, float* group_sums) {
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  __mmask16 select[4];
  for (int i = 0; i < 4; ++i) select[i] = _mm512_test_epi32_mask(lane, _mm512_set1_epi32(1 << i));
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
  group_sums_of(w, x, group_sums);
}

// Register blocking of the look-up kernel, per number of lookup planes P:
//  * A accumulators per (vector, tile, plane), used in turn, so that enough independent add
//    chains hide the 4-cycle latency of vaddps. A depends on P only, so every vector's result
//    is computed in the same order whether it runs alone or in a batch (batch invariance);
//  * T tiles per step for a single vector (one table load serves T * P look-ups);
//  * V vectors per step in a batch: the index registers and their shifts (the port-0 uops that
//    bound the single-vector kernel) are shared by V vectors' tables.
constexpr int accumulators(int p) { return p == 1 || p == 3 ? 2 : 1; }
constexpr int tiles_per_step(int p) { return p <= 2 ? 2 : 1; }
constexpr int vectors_per_step(int p) { return p <= 2 ? 4 : p <= 4 ? 2 : 1; }

// V vectors x T tiles starting at tile t; y[v] receives the T * 16 outputs of vector v.
template <int P, bool Ternary, int T, int V>
void lut_tiles(const cpu_weights& w, const table_input* x, std::int64_t t, float* const* y) {
  constexpr int K = Ternary ? P / 2 : P;
  constexpr int A = accumulators(P);
  __m512 out[V][T];
  for (int v = 0; v < V; ++v)
    for (int b = 0; b < T; ++b) out[v][b] = _mm512_setzero_ps();
  for (std::int64_t g = 0; g < w.groups; ++g) {
    __m512 acc[V][T][P][A];
    for (int v = 0; v < V; ++v)
      for (int b = 0; b < T; ++b)
        for (int p = 0; p < P; ++p)
          for (int a = 0; a < A; ++a) acc[v][b][p][a] = _mm512_setzero_ps();
    const std::int64_t end = last_nibble(w, g);
    for (std::int64_t s = first_nibble(w, g); s < end;) {
      const std::int64_t shift = s % 8;
      const std::int64_t run = std::min<std::int64_t>(8 - shift, end - s);
      __m512i idx[T][P];
      for (int b = 0; b < T; ++b) {
        const std::uint32_t* chunk = w.chunk_bits(t + b, s / 8);
        for (int p = 0; p < P; ++p) {
          idx[b][p] = _mm512_load_si512(chunk + p * tile_rows);
          if (shift != 0)
            idx[b][p] = _mm512_srl_epi32(idx[b][p], _mm_cvtsi32_si128(static_cast<int>(4 * shift)));
        }
      }
      auto lookup = [&](std::int64_t u, int a) {
        __m512 entries[V];
        for (int v = 0; v < V; ++v)
          entries[v] = _mm512_load_ps(x[v].tables + (s + u) * table_entries);
        for (int b = 0; b < T; ++b)
          for (int p = 0; p < P; ++p) {
            for (int v = 0; v < V; ++v)
              acc[v][b][p][a] =
                  _mm512_add_ps(acc[v][b][p][a], _mm512_permutexvar_ps(idx[b][p], entries[v]));
            idx[b][p] = _mm512_srli_epi32(idx[b][p], 4);
          }
      };
      if (run == 8) {  // a whole chunk (groups of 32k columns): unrolled, registers only
        for (int u = 0; u < 8; ++u) lookup(u, u % A);
      } else {
        for (std::int64_t u = 0; u < run; ++u) lookup(u, 0);
      }
      s += run;
    }
    for (int v = 0; v < V; ++v) {
      const __m512 group_sum = _mm512_set1_ps(x[v].group_sums[g]);
      for (int b = 0; b < T; ++b) {
        const float* alpha = w.tile_coefficients(t + b, g);
        __m512 lookups[P];
        for (int p = 0; p < P; ++p)
          lookups[p] = A == 1 ? acc[v][b][p][0] : _mm512_add_ps(acc[v][b][p][0], acc[v][b][p][1]);
        for (int j = 0; j < K; ++j) {
          const __m512 other = Ternary ? lookups[K + j] : group_sum;
          const __m512 dot = _mm512_sub_ps(_mm512_add_ps(lookups[j], lookups[j]), other);  // 2A-B
          out[v][b] = _mm512_fmadd_ps(_mm512_load_ps(alpha + j * tile_rows), dot, out[v][b]);
        }
      }
    }
  }
  for (int v = 0; v < V; ++v)
    for (int b = 0; b < T; ++b) _mm512_storeu_ps(y[v] + b * tile_rows, out[v][b]);
}

template <int P, bool Ternary>
void lut_rows_for(const cpu_weights& w, const table_input* x, int vectors, std::int64_t t0,
                  std::int64_t t1, float* const* y) {
  constexpr int T = tiles_per_step(P), V = vectors_per_step(P);
  int v = 0;
  for (; v + V <= vectors && V > 1; v += V)  // batches: V vectors per step, one tile at a time
    for (std::int64_t t = t0; t < t1; ++t) {
      float* out[V];
      for (int i = 0; i < V; ++i) out[i] = y[v + i] + (t - t0) * tile_rows;
      lut_tiles<P, Ternary, 1, V>(w, x + v, t, out);
    }
  for (; v < vectors; ++v) {  // single vectors: T tiles per step
    std::int64_t t = t0;
    for (; t + T <= t1; t += T) {
      float* out = y[v] + (t - t0) * tile_rows;
      lut_tiles<P, Ternary, T, 1>(w, x + v, t, &out);
    }
    for (; t < t1; ++t) {
      float* out = y[v] + (t - t0) * tile_rows;
      lut_tiles<P, Ternary, 1, 1>(w, x + v, t, &out);
    }
  }
}

// ---- encoded activations: AND + popcount ----------------------------------------------------

// Per-lane popcount of 32-bit words.
inline __m512i popcount32(__m512i v) {
#if QSL_AVX512_VPOPCNT
  return _mm512_popcnt_epi32(v);
#else
  // Nibble table per byte (vpshufb), then bytes summed into their dword (two madds).
  const __m512i table =
      _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));
  const __m512i low = _mm512_set1_epi8(0x0F);
  const __m512i bytes =
      _mm512_add_epi8(_mm512_shuffle_epi8(table, _mm512_and_si512(v, low)),
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
  group_levels_of(w, planes, bits, group_levels);
}

// Sum over the chunks of group g of 2^i popcount(m AND t_i) for every lookup plane of tile t,
// into acc[p] (16 rows). Groups made of whole chunks need no column mask, so the activation
// words are broadcast straight from memory (a load, not a shuffle port uop).
//  * KX > 0 (few planes, kx known at compile time): one accumulator per plane and activation
//    bit, weighted by 2^i once per group: and + popcount + add per (plane, bit, chunk).
//  * KX == 0 (any kx): Horner over the bits within each chunk, one more add, fewer registers.
template <int P, int KX>
void count_group(const cpu_weights& w, const encoded_input& x, std::int64_t t, std::int64_t g,
                 __m512i (&acc)[P]) {
  const std::int64_t end = group_end(w, g);
  const bool whole_chunks = w.group_size % chunk_cols == 0 || w.groups == 1;
  const std::int64_t first = group_begin(w, g) / chunk_cols;
  const int bits = KX > 0 ? KX : x.bits;
  for (int p = 0; p < P; ++p) acc[p] = _mm512_setzero_si512();
  if constexpr (KX > 0) {
    __m512i count[P][KX];
    for (int p = 0; p < P; ++p)
      for (int i = 0; i < KX; ++i) count[p][i] = _mm512_setzero_si512();
    auto accumulate = [&](std::int64_t c, auto activation) {
      const std::uint32_t* chunk = w.chunk_bits(t, c);
      __m512i m[P];
      for (int p = 0; p < P; ++p) m[p] = _mm512_load_si512(chunk + p * tile_rows);
      for (int i = 0; i < KX; ++i) {
        const __m512i a = activation(i);
        for (int p = 0; p < P; ++p)
          count[p][i] = _mm512_add_epi32(count[p][i], popcount32(_mm512_and_si512(m[p], a)));
      }
    };
    if (whole_chunks) {
      for (std::int64_t c = first; c * chunk_cols < end; ++c)
        accumulate(c, [&](int i) {
          return _mm512_set1_epi32(static_cast<int>(x.planes[i * w.chunks + c]));
        });
    } else {
      for (std::int64_t c = first; c * chunk_cols < end; ++c) {
        const std::uint32_t mask = group_chunk_mask(w, g, c);
        accumulate(c, [&](int i) {
          return _mm512_set1_epi32(static_cast<int>(x.planes[i * w.chunks + c] & mask));
        });
      }
    }
    for (int p = 0; p < P; ++p)
      for (int i = 0; i < KX; ++i)
        acc[p] = _mm512_add_epi32(acc[p], _mm512_slli_epi32(count[p][i], i));
  } else {
    auto accumulate = [&](std::int64_t c, auto activation) {
      const std::uint32_t* chunk = w.chunk_bits(t, c);
      for (int p = 0; p < P; ++p) {
        const __m512i m = _mm512_load_si512(chunk + p * tile_rows);
        __m512i h = _mm512_setzero_si512();  // h = 2 h + popcount(m AND t_i), i from the top
        for (int i = bits - 1; i >= 0; --i)
          h = _mm512_add_epi32(_mm512_add_epi32(h, h),
                               popcount32(_mm512_and_si512(m, activation(i))));
        acc[p] = _mm512_add_epi32(acc[p], h);
      }
    };
    if (whole_chunks) {
      for (std::int64_t c = first; c * chunk_cols < end; ++c)
        accumulate(c, [&](int i) {
          return _mm512_set1_epi32(static_cast<int>(x.planes[i * w.chunks + c]));
        });
    } else {
      for (std::int64_t c = first; c * chunk_cols < end; ++c) {
        const std::uint32_t mask = group_chunk_mask(w, g, c);
        accumulate(c, [&](int i) {
          return _mm512_set1_epi32(static_cast<int>(x.planes[i * w.chunks + c] & mask));
        });
      }
    }
  }
}

template <int P, bool Ternary, int KX>
void popcount_rows_kx(const cpu_weights& w, const encoded_input& x, std::int64_t t0,
                      std::int64_t t1, float* z) {
  constexpr int K = Ternary ? P / 2 : P;
  for (std::int64_t t = t0; t < t1; ++t) {
    __m512 out = _mm512_setzero_ps();
    for (std::int64_t g = 0; g < w.groups; ++g) {
      __m512i acc[P];
      count_group<P, KX>(w, x, t, g, acc);
      const float* alpha = w.tile_coefficients(t, g);
      const __m512i levels = _mm512_set1_epi32(x.group_levels[g]);
      for (int j = 0; j < K; ++j) {
        const __m512i other = Ternary ? acc[K + j] : levels;
        const __m512i dot = _mm512_sub_epi32(_mm512_add_epi32(acc[j], acc[j]), other);
        out = _mm512_fmadd_ps(_mm512_load_ps(alpha + j * tile_rows), _mm512_cvtepi32_ps(dot), out);
      }
    }
    _mm512_storeu_ps(z + (t - t0) * tile_rows, out);
  }
}

template <int P, bool Ternary>
void popcount_rows_for(const cpu_weights& w, const encoded_input& x, std::int64_t t0,
                       std::int64_t t1, float* z) {
  // One accumulator per (plane, bit) while P * kx <= 16 of them fit the register file.
  switch (x.bits) {
#define QSL_KX(kx)                                                                        \
  case kx:                                                                                \
    if constexpr (P * kx <= 16) return popcount_rows_kx<P, Ternary, kx>(w, x, t0, t1, z); \
    break;
    QSL_KX(1)
    QSL_KX(2)
    QSL_KX(3)
    QSL_KX(4)
    QSL_KX(5)
    QSL_KX(6)
    QSL_KX(7)
    QSL_KX(8)
#undef QSL_KX
  }
  popcount_rows_kx<P, Ternary, 0>(w, x, t0, t1, z);
}

template <int P, bool Ternary>
struct lut_call {
  static void run(const cpu_weights& w, const table_input* x, int vectors, std::int64_t t0,
                  std::int64_t t1, float* const* y) {
    lut_rows_for<P, Ternary>(w, x, vectors, t0, t1, y);
  }
};
template <int P, bool Ternary>
struct popcount_call {
  static void run(const cpu_weights& w, const encoded_input& x, std::int64_t t0, std::int64_t t1,
                  float* z) {
    popcount_rows_for<P, Ternary>(w, x, t0, t1, z);
  }
};

void lut_rows(const cpu_weights& w, const table_input* x, int vectors, std::int64_t t0,
              std::int64_t t1, float* const* y) {
  by_planes<lut_call>(w, x, vectors, t0, t1, y);
}

void popcount_rows(const cpu_weights& w, const encoded_input& x, std::int64_t t0, std::int64_t t1,
                   float* z) {
  by_planes<popcount_call>(w, x, t0, t1, z);
}

// ---- decoding W_hat rows (decode_rows.inc's arithmetic, with masks) ---------------------------

#include "cpu/decode_rows.inc"  // NOLINT(bugprone-suspicious-include): groups within a chunk

// Groups of whole chunks (group sizes that are multiples of 32, the common case): per plane and
// 16 columns the sign bits pick +alpha or -alpha (one blend) and the used columns (ternary
// mask; the row's end) add it (one masked add). A masked-off column keeps its sum where
// decode_rows.inc adds +-0: the same floats. P lookup planes: k, or 2k with the masks. `Store`
// writes each row's 32-column sums: as floats, or on the row's int8 grid.
template <class Store>
struct whole_chunks {
  template <int P, bool Ternary>
  struct call {
    static constexpr int k = Ternary ? P / 2 : P;
    static void run(const cpu_weights& w, std::int64_t first, std::int64_t last, Store& store) {
      const __m512 zero = _mm512_setzero_ps();
      const std::int64_t chunks_per_group = w.group_size / chunk_cols;
      for (std::int64_t n = first; n < last; ++n) {
        const std::int64_t tile = n / tile_rows;
        const int lane = static_cast<int>(n % tile_rows);
        store.start_row(n, n - first);
        for (std::int64_t g = 0; g < w.groups; ++g) {
          const float* alpha = w.tile_coefficients(tile, g);
          __m512 plus[k], minus[k];
          for (int j = 0; j < k; ++j) {
            plus[j] = _mm512_set1_ps(alpha[j * tile_rows + lane]);
            minus[j] = _mm512_sub_ps(zero, plus[j]);
          }
          const std::int64_t c_end = std::min(w.chunks, (g + 1) * chunks_per_group);
          for (std::int64_t c = g * chunks_per_group; c < c_end; ++c) {
            const std::uint32_t* bits = w.chunk_bits(tile, c) + lane;
            const std::int64_t count =
                std::min<std::int64_t>(chunk_cols, w.cols - c * chunk_cols);
            const std::uint32_t in_row = count == chunk_cols ? ~0U : (1U << count) - 1;
            __m512 acc0 = zero, acc1 = zero;
            for (int j = 0; j < k; ++j) {
              const std::uint32_t sign = bits[j * tile_rows];
              const std::uint32_t used = in_row & (Ternary ? bits[(k + j) * tile_rows] : ~0U);
              acc0 = _mm512_mask_add_ps(
                  acc0, static_cast<__mmask16>(used), acc0,
                  _mm512_mask_blend_ps(static_cast<__mmask16>(sign), minus[j], plus[j]));
              acc1 = _mm512_mask_add_ps(
                  acc1, static_cast<__mmask16>(used >> 16), acc1,
                  _mm512_mask_blend_ps(static_cast<__mmask16>(sign >> 16), minus[j], plus[j]));
            }
            store.put(c * chunk_cols, count == chunk_cols, in_row, acc0, acc1);
          }
        }
      }
    }
  };
};

struct float_rows {
  float* out;
  std::int64_t cols;
  float* row = nullptr;
  void start_row(std::int64_t, std::int64_t index) { row = out + index * cols; }
  void put(std::int64_t c, bool whole, std::uint32_t in_row, __m512 acc0, __m512 acc1) {
    if (whole) {
      _mm512_storeu_ps(row + c, acc0);
      _mm512_storeu_ps(row + c + 16, acc1);
    } else {
      _mm512_mask_storeu_ps(row + c, static_cast<__mmask16>(in_row), acc0);
      _mm512_mask_storeu_ps(row + c + 16, static_cast<__mmask16>(in_row >> 16), acc1);
    }
  }
};

// q = rint(clamp(W_hat * (1 / scale), -127, 127)) per row (cvtps2dq rounds ties to even, as
// the generic path's nearbyint does), saturated to bytes, with the top bit flipped for q + 128.
struct int8_rows {
  std::uint8_t* out;
  std::int64_t cols;
  const float* scales;
  __m128i flip;
  std::uint8_t* row = nullptr;
  __m512 inverse = _mm512_setzero_ps();
  void start_row(std::int64_t n, std::int64_t index) {
    row = out + index * cols;
    inverse = _mm512_set1_ps(scales[n] > 0.0f ? 1.0f / scales[n] : 0.0f);
  }
  __m128i grid(__m512 acc) const {
    const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(acc, inverse),
                                                 _mm512_set1_ps(-127.0f)),
                                   _mm512_set1_ps(127.0f));
    return _mm_xor_si128(_mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)), flip);
  }
  void put(std::int64_t c, bool whole, std::uint32_t in_row, __m512 acc0, __m512 acc1) {
    if (whole) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(row + c), grid(acc0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(row + c + 16), grid(acc1));
    } else {
      _mm_mask_storeu_epi8(row + c, static_cast<__mmask16>(in_row), grid(acc0));
      _mm_mask_storeu_epi8(row + c + 16, static_cast<__mmask16>(in_row >> 16), grid(acc1));
    }
  }
};

void decode_rows_avx512(const cpu_weights& w, std::int64_t first, std::int64_t last,
                        float* out) {
  if (w.group_size % chunk_cols == 0) {
    float_rows store{out, w.cols};
    by_planes<whole_chunks<float_rows>::call>(w, first, last, store);
  } else {
    decode_target_rows(w, first, last, out);
  }
}

// The int8 look-up's two primitives with AVX-512BW's byte masks.
inline __m256i bit_bytes(std::uint32_t bits, int value) {
  return _mm256_maskz_mov_epi8(bits, _mm256_set1_epi8(static_cast<char>(value)));
}
inline void store_first_bytes(std::uint8_t* dst, __m256i q, std::int64_t count) {
  _mm256_mask_storeu_epi8(dst, (1U << count) - 1, q);
}

#include "cpu/int8_lookup.inc"  // NOLINT(bugprone-suspicious-include): per target

void decode_rows_int8_avx512(const cpu_weights& w, const float* scales, std::int64_t first,
                             std::int64_t last, bool excess, std::uint8_t* out) {
  if (decode_rows_int8_lookup(w, scales, first, last, excess, out)) return;
  if (w.group_size % chunk_cols != 0) {
    decode_rows_int8_generic(w, scales, first, last, excess, out);
    return;
  }
  int8_rows store{out, w.cols, scales, _mm_set1_epi8(static_cast<char>(excess ? 0x80 : 0))};
  by_planes<whole_chunks<int8_rows>::call>(w, first, last, store);
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
  // The table kernel is word tables (word_tables_avx512.cpp); AVX2's byte tables stay in the
  // table for tests and benchmarks that run them by name. byte_tables_min_bits is the word
  // tables' crossover with AND + popcount on Zen 4 (docs/benchmarks.md, issue 17): with
  // VPOPCNTDQ, popcount is as fast or faster up to 4 activation bits for k = 1 and 3 and the
  // tables win from 6 for every k; without it the tables win from 2.
  static const kernel_table table{
      build_tables, lut_rows, encode, popcount_rows, decode_rows_avx512, decode_rows_int8_avx512,
      avx2_kernels().encode_bytes, avx2_kernels().byte_rows, QSL_AVX512_VPOPCNT ? 5 : 2,
      avx2_kernels().encode_levels, avx2_kernels().dot_rows, avx2_kernels().dot_min_batch,
      // VNNI is not part of the target (Skylake-X lacks it).
      __builtin_cpu_supports("avx512vnni") ? int8_sums_avx512_vnni : int8_sums_avx2,
      encode_words_avx512, word_rows_avx512,
      __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bitalg") &&
              __builtin_cpu_supports("avx512vbmi")
          ? int8_tile_sums_avx512_vnni
          : nullptr};
  return table;
}

}  // namespace qsl::detail::cpu
