// AVX-512 VNNI int8 products straight from the packed code (kernel_table::int8_tile_sums), for
// codes of at most 4 lookup planes (binary k <= 4, ternary k <= 2): the 8-bit activation path's
// integer step without a decoded copy of the weights.
//
// Why: the decode-then-multiply form (int8_sums_avx512_vnni.cpp on rows decoded by
// decode_rows_int8) spent a third of a 16-vector call decoding, and its 4 x 4 tiles of row-major
// bytes ended in horizontal sums and read 8 cache lines per 16 vpdpbusd. Here a 16-row tile's
// weights for 4 columns are one register in vpdpbusd's own layout (dword r = row r's 4 bytes),
// made in registers from the code and used by every vector of the call:
//   * vpshufbitqmb gathers bit 4s + i of row r of a lookup plane to mask bit 4r + i (a qword of
//     the plane's register holds rows 2q and 2q + 1, so the 64 bits come from their own qword);
//   * the planes' masks make each byte's pattern (0..3), offset by 4 (r % 4), and one vpshufb
//     looks up row r's grid byte + 128 for that pattern in its 128-bit lane's table (4 rows x
//     4 patterns); with 3 planes (8 patterns) one vpermi2b looks it up in 16 rows x 8 entries
//     held in two registers, with 4 (16 patterns) two vpermi2b and a blend on the last plane. The
//     tables are the decode-then-round path's bytes (int8_lookup.inc's sums), so the products are
//     the same integers.
//   * The weights are the unsigned operand (q + 128) and x the signed one, broadcast from
//     memory as vpdpbusd's embedded {1to16} operand: sum (q + 128) x = sum q x + 128 sum x, and
//     128 sum x is subtracted once per vector. Sums may wrap mod 2^32 in between; the result,
//     the true sum, is within int32 (cpu_int8_max_cols), so it comes out exact.
// Up to 16 vectors share each weight register: 16 accumulators, one vpdpbusd per vector and
// 4 columns, and 2P + 1 instructions of decoding (P planes) per 4 columns for all of them. The
// vectors come interleaved (int8_tile_vectors: a block's 4-byte column groups side by side, one
// cache line per step for 16 vectors): read from rows 4 KiB apart, their loads fought over L1 sets.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cpu/kernel_common.hpp"
#include "scratch.hpp"

#define QSL_TARGET_FEATURES "avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg,avx512vbmi"
#include "cpu/avx512_intrinsic_warnings.hpp"  // GCC 12's false warnings
#include "cpu/target_pragma_begin.hpp"

namespace qsl::detail::cpu {
namespace {

constexpr int steps_per_chunk = chunk_cols / 4;
constexpr int max_vectors = 16;

// vpshufbitqmb's selectors for the 4-column step s of a chunk: byte 4r + i takes bit
// 32 (r % 2) + 4s + i of its qword (rows 2q, 2q + 1).
struct selectors {
  __m512i step[steps_per_chunk];
  selectors() {
    for (int s = 0; s < steps_per_chunk; ++s) {
      alignas(64) std::uint8_t b[64];
      for (int r = 0; r < tile_rows; ++r)
        for (int i = 0; i < 4; ++i)
          b[4 * r + i] = static_cast<std::uint8_t>(32 * (r % 2) + 4 * s + i);
      step[s] = _mm512_load_si512(b);
    }
  }
};

// Bytes of one group's table: 4 patterns x 16 rows for up to 2 lookup planes (one vpshufb
// register), 8 x 16 for 3 (two registers for vpermi2b), 16 x 16 for 4 (two pairs).
template <int P>
constexpr int table_bytes = P <= 2   ? 64
                            : P == 3 ? 128
                                     : 256;

// Row r's grid bytes + 128 for each pattern of its P lookup planes (bit p: plane p's bit; for a
// ternary code signs 0..k-1, then masks), at byte 4r + pattern (P <= 2: entry 4 (r % 4) +
// pattern of the 128-bit lane of rows 4 (r / 4)..) or at 16 pattern + r (P = 3, 4: each
// pattern's 16 rows side by side): one table per group of the tile. The byte of a pattern is what
// int8_lookup.inc stores for it: the planes' +-alpha summed in order j = 0..k-1 (a ternary
// plane's term only where its mask bit is set), scaled, clamped and rounded to nearest even
// (cvtps2dq), 16 rows at a time.
template <int P, bool Ternary>
void group_tables(const cpu_weights& w, const float* scales, std::int64_t t, std::uint8_t* out) {
  constexpr int K = Ternary ? P / 2 : P;
  constexpr int patterns = 1 << P;
  const std::int64_t first = t * tile_rows;
  const auto rows =
      static_cast<__mmask16>((1U << std::min<std::int64_t>(tile_rows, w.rows - first)) - 1);
  const __m512 scale = _mm512_maskz_loadu_ps(rows, scales + first);
  // 1 / scale where scale > 0, else 0 (and 0 for padding rows).
  const __m512 inverse = _mm512_maskz_div_ps(
      _mm512_cmp_ps_mask(scale, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(1.0f), scale);
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  const __m512i excess = _mm512_set1_epi32(128);
  for (std::int64_t g = 0; g < w.groups; ++g) {
    const float* alpha = w.tile_coefficients(t, g);
    __m512i bytes = _mm512_setzero_si512();  // P <= 2: dword r holds row r's 4 patterns
    for (int pattern = 0; pattern < patterns; ++pattern) {
      __m512 value = _mm512_setzero_ps();
      for (int j = 0; j < K; ++j) {
        const int sign = (pattern >> j) & 1;
        const bool used = !Ternary || ((pattern >> (K + j)) & 1) != 0;
        const __m512 a = _mm512_load_ps(alpha + j * tile_rows);
        if (used)
          value = _mm512_add_ps(value, sign != 0 ? a : _mm512_sub_ps(_mm512_setzero_ps(), a));
      }
      const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(value, inverse), lo), hi);
      const __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), excess);  // 1..255
      if constexpr (P >= 3)  // the pattern's 16 rows as bytes
        _mm_store_si128(reinterpret_cast<__m128i*>(out + g * table_bytes<P> + 16 * pattern),
                        _mm512_cvtepi32_epi8(q));
      else
        bytes = _mm512_or_si512(bytes, _mm512_slli_epi32(q, 8 * pattern));
    }
    if constexpr (P <= 2) _mm512_store_si512(out + g * table_bytes<P>, bytes);
  }
}

// The table index of byte 4r + i before the pattern is added: 4 (r % 4) for vpshufb (the row's
// place in its lane), r itself for vpermi2b (patterns are 16 entries apart there).
template <int P>
inline const std::array<std::uint8_t, 64> pattern_base = [] {
  std::array<std::uint8_t, 64> b{};
  for (int r = 0; r < tile_rows; ++r)
    for (int i = 0; i < 4; ++i)
      b[4 * r + i] = static_cast<std::uint8_t>(P <= 2 ? 4 * (r % 4) : r);
  return b;
}();

// acc[v] += the products of a block of V vectors (x: [step][V] 4-byte column groups) with the
// tile's weights over chunks [c0, c1) of group table `table`.
template <int P, int V>
[[gnu::always_inline]] inline void chunk_products(const cpu_weights& w, std::int64_t t,
                                                  std::int64_t c0, std::int64_t c1,
                                                  const std::uint8_t* table, const selectors& sel,
                                                  const std::int32_t* x, __m512i (&acc)[V]) {
  const __m512i base = _mm512_loadu_si512(pattern_base<P>.data());
  const __m512i lut0 = _mm512_load_si512(table);
  const __m512i lut1 = P > 2 ? _mm512_load_si512(table + 64) : lut0;
  const __m512i lut2 = P > 3 ? _mm512_load_si512(table + 128) : lut0;
  const __m512i lut3 = P > 3 ? _mm512_load_si512(table + 192) : lut0;
  for (std::int64_t c = c0; c < c1; ++c) {
    const std::uint32_t* bits = w.chunk_bits(t, c);
    __m512i plane[P];
    for (int p = 0; p < P; ++p) plane[p] = _mm512_load_si512(bits + p * tile_rows);
    const std::int32_t* xc = x + c * steps_per_chunk * V;
    for (int s = 0; s < steps_per_chunk; ++s) {
      __m512i idx = base;
      // 3 and 4 planes: patterns are 16 entries apart, and a fourth plane picks the register pair.
      constexpr int indexed = P == 4 ? 3 : P;
      for (int p = 0; p < indexed; ++p)
        idx = _mm512_mask_add_epi8(idx, _mm512_bitshuffle_epi64_mask(plane[p], sel.step[s]), idx,
                                   _mm512_set1_epi8(static_cast<char>((P >= 3 ? 16 : 1) << p)));
      __m512i weights;
      if constexpr (P <= 2)
        weights = _mm512_shuffle_epi8(lut0, idx);
      else if constexpr (P == 3)
        weights = _mm512_permutex2var_epi8(lut0, idx, lut1);
      else
        weights = _mm512_mask_blend_epi8(_mm512_bitshuffle_epi64_mask(plane[3], sel.step[s]),
                                         _mm512_permutex2var_epi8(lut0, idx, lut1),
                                         _mm512_permutex2var_epi8(lut2, idx, lut3));
      for (int v = 0; v < V; ++v)
        acc[v] = _mm512_dpbusd_epi32(acc[v], weights, _mm512_set1_epi32(xc[s * V + v]));
    }
  }
}

template <int P, int V>
void vector_block(const cpu_weights& w, std::int64_t t, const std::uint8_t* tables,
                  const selectors& sel, const std::int32_t* x, const std::int32_t* x_sums,
                  std::int32_t* sums) {
  __m512i acc[V];
  for (auto& a : acc) a = _mm512_setzero_si512();
  const std::int64_t chunks_per_group = w.groups == 1 ? w.chunks : w.group_size / chunk_cols;
  for (std::int64_t g = 0; g < w.groups; ++g) {
    const std::int64_t c0 = g * chunks_per_group, c1 = std::min(w.chunks, c0 + chunks_per_group);
    chunk_products<P, V>(w, t, c0, c1, tables + g * table_bytes<P>, sel, x, acc);
  }
  for (int v = 0; v < V; ++v)  // sum (q + 128) x - 128 sum x, mod 2^32
    _mm512_storeu_si512(sums + v * tile_rows,
                        _mm512_sub_epi32(acc[v], _mm512_set1_epi32(static_cast<std::int32_t>(
                                                     static_cast<std::uint32_t>(x_sums[v]) << 7))));
}

// The blocks of int8_tile_vectors' layout: 16 vectors at a time, then one block each of 8, 4,
// 2 and 1 for the rest; block v0 starts at x + v0 * w.chunks * 8.
template <int P, bool Ternary>
void tile_sums(const cpu_weights& w, const float* scales, std::int64_t t, const std::int32_t* x,
               const std::int32_t* x_sums, std::int64_t batch, std::int32_t* sums) {
  static const selectors sel;
  scratch<std::uint8_t> tables(static_cast<std::size_t>(w.groups * table_bytes<P>));  // aligned
  group_tables<P, Ternary>(w, scales, t, tables.data());
  const std::int64_t steps = w.chunks * steps_per_chunk;
  std::int64_t v = 0;
  auto blocks = [&](auto vectors) {
    constexpr int V = decltype(vectors)::value;
    for (; v + V <= batch; v += V)
      vector_block<P, V>(w, t, tables.data(), sel, x + v * steps, x_sums + v, sums + v * tile_rows);
  };
  blocks(std::integral_constant<int, max_vectors>{});
  blocks(std::integral_constant<int, 8>{});
  blocks(std::integral_constant<int, 4>{});
  blocks(std::integral_constant<int, 2>{});
  blocks(std::integral_constant<int, 1>{});
}

}  // namespace

bool int8_tile_sums_avx512_vnni(const cpu_weights& w, const float* scales, std::int64_t tile,
                                const std::int32_t* x, const std::int32_t* x_sums,
                                std::int64_t batch, std::int32_t* sums) {
  if (!int8_tiles_fit(w)) return false;
  if (w.basis == qsl::basis::ternary && w.bits == 1)
    tile_sums<2, true>(w, scales, tile, x, x_sums, batch, sums);
  else if (w.basis == qsl::basis::ternary)
    tile_sums<4, true>(w, scales, tile, x, x_sums, batch, sums);
  else if (w.bits == 1)
    tile_sums<1, false>(w, scales, tile, x, x_sums, batch, sums);
  else if (w.bits == 2)
    tile_sums<2, false>(w, scales, tile, x, x_sums, batch, sums);
  else if (w.bits == 3)
    tile_sums<3, false>(w, scales, tile, x, x_sums, batch, sums);
  else
    tile_sums<4, false>(w, scales, tile, x, x_sums, batch, sums);
  return true;
}

}  // namespace qsl::detail::cpu

#include "cpu/target_pragma_end.hpp"
