// AVX2 kernels. A 16-row tile is two 8-lane halves. vpermps looks up 8 entries, so a 16-entry
// table is two registers and bit 3 of the nibble picks the half (blendv on that bit moved to the
// sign). Popcounts come from byte tables (vpshufb).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "cpu/kernel_common.hpp"
#include "scratch.hpp"

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

// The levels of columns [first, first + 8) by the encoding rule (kernel_common.hpp), 0 past w.cols.
inline __m256i levels8(const cpu_weights& w, const float* x, std::int64_t first, __m256 lo,
                       __m256 inv, __m256 top) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const std::int64_t valid = std::clamp<std::int64_t>(w.cols - first, 0, 8);
  const __m256i in_range = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)), lane);
  const __m256 v = _mm256_maskload_ps(x + std::min(first, w.cols), in_range);
  const __m256 scaled = _mm256_floor_ps(
      _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v, lo), inv), _mm256_set1_ps(0.5f)));
  // max(scaled, 0) returns 0 for NaN (the second operand), as the scalar rule does.
  const __m256i q =
      _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(scaled, _mm256_setzero_ps()), top));
  return _mm256_and_si256(q, in_range);
}

void encode(const cpu_weights& w, const float* x, float minimum, float inv_step, int bits,
            std::uint32_t* planes, std::int32_t* group_levels) {
  const __m256 lo = _mm256_set1_ps(minimum), inv = _mm256_set1_ps(inv_step);
  const __m256 top = _mm256_set1_ps(static_cast<float>((1 << bits) - 1));
  for (std::int64_t c = 0; c < w.chunks; ++c) {
    std::uint32_t word[max_activation_bits] = {};
    for (int part = 0; part < 4; ++part) {  // four quarters of 8 columns
      const __m256i q = levels8(w, x, c * chunk_cols + 8 * part, lo, inv, top);
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

// ---- encoded activations, byte tables -------------------------------------------------------

void encode_bytes(const cpu_weights& w, const float* x, float minimum, float inv_step, int bits,
                  std::uint8_t* low, std::uint8_t* high, std::int32_t* group_levels) {
  const __m256 lo = _mm256_set1_ps(minimum), inv = _mm256_set1_ps(inv_step);
  const __m256 top = _mm256_set1_ps(static_cast<float>((1 << bits) - 1));
  const std::int64_t count = byte_table_nibbles(w);
  detail::scratch<std::int32_t> q(static_cast<std::size_t>(4 * count));
  for (std::int64_t c = 0; c < 4 * count; c += 8)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q.data() + c), levels8(w, x, c, lo, inv, top));
  // Entry b of a table is the sum of the levels whose bit is set in b: four masked broadcasts.
  __m256i bit[4];
  for (int i = 0; i < 4; ++i) {
    alignas(32) std::int16_t m[table_entries];
    for (int b = 0; b < table_entries; ++b) m[b] = static_cast<std::int16_t>((b >> i) & 1 ? -1 : 0);
    bit[i] = _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
  }
  const __m256i low7 = _mm256_set1_epi16(0x7F);
  for (std::int64_t s = 0; s < count; ++s) {
    const std::int32_t* v = q.data() + 4 * s;
    __m256i t = _mm256_and_si256(_mm256_set1_epi16(static_cast<std::int16_t>(v[0])), bit[0]);
    for (int i = 1; i < 4; ++i)
      t = _mm256_add_epi16(
          t, _mm256_and_si256(_mm256_set1_epi16(static_cast<std::int16_t>(v[i])), bit[i]));
    // [low 0-7, high 0-7 | low 8-15, high 8-15] -> [low 0-15 | high 0-15]
    const __m256i packed = _mm256_permute4x64_epi64(
        _mm256_packus_epi16(_mm256_and_si256(t, low7), _mm256_srli_epi16(t, 7)),
        _MM_SHUFFLE(3, 1, 2, 0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(low + s * table_entries),
                     _mm256_castsi256_si128(packed));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(high + s * table_entries),
                     _mm256_extracti128_si256(packed, 1));
  }
  group_levels_from(w, q.data(), group_levels);
}

// The running sums of one lookup plane for 16 rows. Byte 2i of each 16-byte half is row i, byte
// 2i + 1 row 8 + i (add_byte_tables' order); the two halves are two nibbles of the same rows.
// A look-up gives Q's low seven bits l (<= 127) and the rest h (<= 7), so the l of the two
// nibble pairs of a quad add in bytes (<= 254); that byte sum is added as 16-bit words
// (l_even + 256 l_odd) and, by a multiply-add, l_odd alone, and the h add in bytes for up to 17
// quads and an octet. The flush recovers each row's exact sum from the three. Per quad and plane
// that is 4 shuffles and 10 other operations (widening by unpacks would take 8 shuffles).
struct plane_sums {
  __m256i low, low_odd, high;
};

inline void add_quad(__m256i low0, __m256i high0, __m256i low1, __m256i high1, __m256i idx0,
                     __m256i idx1, plane_sums& s) {
  const __m256i odd_bytes = _mm256_set1_epi16(0x0100);  // (u8 x s8) pairs: 0 * even + 1 * odd
  const __m256i l =
      _mm256_add_epi8(_mm256_shuffle_epi8(low0, idx0), _mm256_shuffle_epi8(low1, idx1));
  s.low = _mm256_add_epi16(s.low, l);
  s.low_odd = _mm256_add_epi16(s.low_odd, _mm256_maddubs_epi16(l, odd_bytes));
  s.high = _mm256_add_epi8(
      s.high, _mm256_add_epi8(_mm256_shuffle_epi8(high0, idx0), _mm256_shuffle_epi8(high1, idx1)));
}

inline __m256i load_bytes(const std::uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// One quad of two planes (weight bytes at `bytes`, 32 bytes apart) into s0 and s1: add_quad's
// steps, each table loaded once for both planes. Written as one asm block because it needs 15 of
// the 16 registers (6 sums, the nibble mask, 2 tables, 4 indices, 2 look-ups): given the same
// steps as intrinsics, GCC spilled a sum to the stack, and the store and reload in every quad
// made that sum's chain of additions the loop's critical path.
[[gnu::always_inline]] inline void add_quad_two_planes(const std::uint8_t* bytes,
                                                       const std::uint8_t* low,
                                                       const std::uint8_t* high, __m256i mask,
                                                       plane_sums& s0, plane_sums& s1) {
  // The asm's offsets: plane 1's bytes and the second nibble pair's tables are 32 bytes on.
  static_assert(2 * tile_rows == 32 && 2 * table_entries == 32, "add_quad_two_planes' offsets");
  alignas(32) static const std::uint16_t odd_bytes[16] = {
      0x0100, 0x0100, 0x0100, 0x0100, 0x0100, 0x0100, 0x0100, 0x0100,
      0x0100, 0x0100, 0x0100, 0x0100, 0x0100, 0x0100, 0x0100, 0x0100};
  __m256i idx00, idx01, idx10, idx11, table0, table1, look0, look1;
  asm("vmovdqu (%[bytes]), %[i00]\n\t"
      "vpsrlw $4, %[i00], %[i01]\n\t"
      "vpand %[mask], %[i00], %[i00]\n\t"
      "vpand %[mask], %[i01], %[i01]\n\t"
      "vmovdqu 32(%[bytes]), %[i10]\n\t"
      "vpsrlw $4, %[i10], %[i11]\n\t"
      "vpand %[mask], %[i10], %[i10]\n\t"
      "vpand %[mask], %[i11], %[i11]\n\t"
      // low tables: l = T0[idx0] + T1[idx1] per plane, then low += l, low_odd += l's odd bytes
      "vmovdqu (%[low]), %[t0]\n\t"
      "vmovdqu 32(%[low]), %[t1]\n\t"
      "vpshufb %[i00], %[t0], %[l0]\n\t"
      "vpshufb %[i01], %[t1], %[l1]\n\t"
      "vpaddb %[l1], %[l0], %[l0]\n\t"
      "vpaddw %[l0], %[lo0], %[lo0]\n\t"
      "vpmaddubsw %[odd], %[l0], %[l0]\n\t"
      "vpaddw %[l0], %[od0], %[od0]\n\t"
      "vpshufb %[i10], %[t0], %[l0]\n\t"
      "vpshufb %[i11], %[t1], %[l1]\n\t"
      "vpaddb %[l1], %[l0], %[l0]\n\t"
      "vpaddw %[l0], %[lo1], %[lo1]\n\t"
      "vpmaddubsw %[odd], %[l0], %[l0]\n\t"
      "vpaddw %[l0], %[od1], %[od1]\n\t"
      // high tables: high += T0[idx0] + T1[idx1] per plane, in bytes
      "vmovdqu (%[high]), %[t0]\n\t"
      "vmovdqu 32(%[high]), %[t1]\n\t"
      "vpshufb %[i00], %[t0], %[l0]\n\t"
      "vpshufb %[i01], %[t1], %[l1]\n\t"
      "vpaddb %[l1], %[l0], %[l0]\n\t"
      "vpaddb %[l0], %[hi0], %[hi0]\n\t"
      "vpshufb %[i10], %[t0], %[l0]\n\t"
      "vpshufb %[i11], %[t1], %[l1]\n\t"
      "vpaddb %[l1], %[l0], %[l0]\n\t"
      "vpaddb %[l0], %[hi1], %[hi1]"
      : [lo0] "+x"(s0.low), [od0] "+x"(s0.low_odd), [hi0] "+x"(s0.high), [lo1] "+x"(s1.low),
        [od1] "+x"(s1.low_odd), [hi1] "+x"(s1.high), [i00] "=&x"(idx00), [i01] "=&x"(idx01),
        [i10] "=&x"(idx10), [i11] "=&x"(idx11), [t0] "=&x"(table0), [t1] "=&x"(table1),
        [l0] "=&x"(look0), [l1] "=&x"(look1)
      : [bytes] "r"(bytes), [low] "r"(low), [high] "r"(high), [mask] "x"(mask),
        [odd] "m"(odd_bytes), "m"(*reinterpret_cast<const std::uint8_t(*)[64]>(bytes)),
        "m"(*reinterpret_cast<const std::uint8_t(*)[64]>(low)),
        "m"(*reinterpret_cast<const std::uint8_t(*)[64]>(high)));
}

// Whole quads [first, first + count) of one tile into the 16-bit sums of planes
// [first_plane, first_plane + N), N <= 2: per quad, the tables of its four nibbles are loaded
// once for the N planes. More planes at once would not fit the registers, so quad_loop sweeps
// the quads once per pair of planes.
template <int N>
[[gnu::always_inline]] inline void quad_loop_planes(const cpu_weights& w,
                                                    const byte_table_input& x, std::int64_t t,
                                                    int planes, int first_plane,
                                                    std::int64_t first, std::int64_t count,
                                                    plane_sums* sums) {
  static_assert(N == 1 || N == 2, "one or two planes per sweep");
  const __m256i nibble_mask = _mm256_set1_epi8(0x0F);
  const std::uint8_t* bytes = w.quad_bytes(t, first) + first_plane * 2 * tile_rows;
  const std::uint8_t* low = x.low + 4 * first * table_entries;
  const std::uint8_t* high = x.high + 4 * first * table_entries;
  plane_sums s[N];
  for (int p = 0; p < N; ++p) s[p] = sums[p];
  for (std::int64_t i = 0; i < count; ++i) {
    if constexpr (N == 2) {
      add_quad_two_planes(bytes, low, high, nibble_mask, s[0], s[1]);
    } else {
      const __m256i v = load_bytes(bytes);
      add_quad(load_bytes(low), load_bytes(high), load_bytes(low + 2 * table_entries),
               load_bytes(high + 2 * table_entries), _mm256_and_si256(v, nibble_mask),
               _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble_mask), s[0]);
    }
    bytes += planes * 2 * tile_rows;
    low += 4 * table_entries;
    high += 4 * table_entries;
  }
  for (int p = 0; p < N; ++p) sums[p] = s[p];
}

template <int P>
[[gnu::always_inline]] inline void quad_loop(const cpu_weights& w, const byte_table_input& x,
                                             std::int64_t t, std::int64_t first,
                                             std::int64_t count, plane_sums (&sums)[P]) {
  for (int p = 0; p + 1 < P; p += 2) quad_loop_planes<2>(w, x, t, P, p, first, count, sums + p);
  if (P % 2 != 0) quad_loop_planes<1>(w, x, t, P, P - 1, first, count, sums + P - 1);
}

// quad_loop out of line, on a copy of part[] held in locals (groups with octet edges).
template <int P>
[[gnu::noinline]] void add_quads(const cpu_weights& w, const byte_table_input& x, std::int64_t t,
                                 std::int64_t first, std::int64_t count, plane_sums (&part)[P]) {
  plane_sums sums[P];
  std::copy(part, part + P, sums);
  quad_loop<P>(w, x, t, first, count, sums);
  std::copy(sums, sums + P, part);
}

// One octet o (8 columns: the low or the high four bits of quad o / 2), at a group's edge.
template <int P>
inline void add_octet(const cpu_weights& w, const byte_table_input& x, std::int64_t t,
                      std::int64_t o, plane_sums (&part)[P]) {
  const __m256i nibble_mask = _mm256_set1_epi8(0x0F);
  const bool upper = o % 2 != 0;
  const std::int64_t nibble = 4 * (o / 2) + (upper ? 2 : 0);
  const __m256i low = load_bytes(x.low + nibble * table_entries);
  const __m256i high = load_bytes(x.high + nibble * table_entries);
  const std::uint8_t* bytes = w.quad_bytes(t, o / 2);
  const __m256i zero = _mm256_setzero_si256();  // index 0 looks up Q = 0 in any table
  for (int p = 0; p < P; ++p) {
    const __m256i v = load_bytes(bytes + p * 2 * tile_rows);
    add_quad(low, high, low, high,
             _mm256_and_si256(upper ? _mm256_srli_epi16(v, 4) : v, nibble_mask), zero, part[p]);
  }
}

// Each row's exact sum in 16 bits (mod 2^16; every true sum is below 2^16), rows 0-7 in [0] and
// 8-15 in [1], each as its two halves (two nibbles of the same rows):
//   rows 0-7:  (low - 256 low_odd) + 128 (high & 0xFF),   rows 8-15: low_odd + 128 (high >> 8).
inline void row_words(const plane_sums& s, __m256i (&rows)[2]) {
  const __m256i low_byte = _mm256_set1_epi16(0xFF);
  rows[0] = _mm256_add_epi16(_mm256_sub_epi16(s.low, _mm256_slli_epi16(s.low_odd, 8)),
                             _mm256_slli_epi16(_mm256_and_si256(s.high, low_byte), 7));
  rows[1] = _mm256_add_epi16(s.low_odd, _mm256_slli_epi16(_mm256_srli_epi16(s.high, 8), 7));
}

// The 16-bit sums added into the 32-bit ones of rows 0-7 ([0]) and 8-15 ([1]), then cleared;
// the two halves are added in 32 bits.
template <int P>
inline void flush_parts(plane_sums (&part)[P], __m256i (&sum)[P][2]) {
  for (int p = 0; p < P; ++p) {
    __m256i rows[2];
    row_words(part[p], rows);
    for (int i = 0; i < 2; ++i)
      sum[p][i] = _mm256_add_epi32(
          sum[p][i], _mm256_add_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(rows[i])),
                                      _mm256_cvtepu16_epi32(_mm256_extracti128_si256(rows[i], 1))));
    part[p] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
  }
}

// The popcount kernel's float steps for one group, in its order: with A_j = sum[2 j + h] (the
// plane sums of rows 8h..8h+7) and B_j the group's levels (binary) or mask j's sums (ternary),
// out[h] += alpha_j * (2 A_j - B_j) for j = 0..K-1. Every encoded kernel ends with it, so on one
// target they give the same floats.
template <int P, bool Ternary>
inline void add_group(const float* alpha, std::int32_t group_levels, const __m256i* sum,
                      __m256* out) {
  constexpr int K = Ternary ? P / 2 : P;
  const __m256i levels = _mm256_set1_epi32(group_levels);
  for (int half = 0; half < 2; ++half)
    for (int j = 0; j < K; ++j) {
      const __m256i a = sum[2 * j + half];
      const __m256i other = Ternary ? sum[2 * (K + j) + half] : levels;
      const __m256i dot = _mm256_sub_epi32(_mm256_add_epi32(a, a), other);
      out[half] = _mm256_fmadd_ps(_mm256_load_ps(alpha + j * tile_rows + 8 * half),
                                  _mm256_cvtepi32_ps(dot), out[half]);
    }
}

// The 32-bit sums of group g of tile t, for any group: octets at its edges, and a flush every
// quads_per_flush quads. A quad adds at most 2 * 7 to a high byte and 2 * 4 * 255 to a row's sum
// in each half, an octet half that: between flushes at most 17 quads and the group's first octet
// (245 and 35700, below 256 and 2^16).
template <int P>
[[gnu::noinline]] void group_sums_with_edges(const cpu_weights& w, const byte_table_input& x,
                                             std::int64_t t, std::int64_t g,
                                             __m256i (&sum)[P][2]) {
  constexpr std::int64_t quads_per_flush = 17;
  plane_sums part[P];
  for (int p = 0; p < P; ++p) {
    sum[p][0] = sum[p][1] = _mm256_setzero_si256();
    part[p] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
  }
  std::int64_t o = group_begin(w, g) / 8;
  const std::int64_t end = (group_end(w, g) + 7) / 8;
  bool pending = false;  // part holds sums not yet flushed
  if (o % 2 != 0) {      // groups start on 8 columns, quads on 16
    add_octet<P>(w, x, t, o++, part);
    pending = true;
  }
  for (std::int64_t quad = o / 2; quad < end / 2;) {
    const std::int64_t count = std::min(quads_per_flush, end / 2 - quad);
    add_quads<P>(w, x, t, quad, count, part);
    flush_parts<P>(part, sum);
    pending = false;
    quad += count;
  }
  if (end % 2 != 0 && end - 1 >= o) {
    add_octet<P>(w, x, t, end - 1, part);
    pending = true;
  }
  if (pending) flush_parts<P>(part, sum);
}

// Groups of whole quads, at most 256 columns (the usual 64 or 128): one pass of the quad loop
// with its sums in registers, and one flush. At most 16 quads, within the 17 a flush allows
// (high bytes <= 16 * 14 = 224), and a row's two halves add in 16 bits before the widening
// (at most 256 * 255 = 65280 per row).
inline bool whole_quad_group(const cpu_weights& w, std::int64_t g) {
  return group_begin(w, g) % 16 == 0 && group_end(w, g) % 16 == 0 &&
         group_end(w, g) - group_begin(w, g) <= 256;
}

// The 32-bit sums of the `count` whole quads from `first` (one group of at most 16 quads).
template <int P>
[[gnu::always_inline]] inline void whole_quad_sums(const cpu_weights& w,
                                                   const byte_table_input& x, std::int64_t t,
                                                   std::int64_t first, std::int64_t count,
                                                   __m256i (&sum)[P][2]) {
  plane_sums part[P];
  for (int p = 0; p < P; ++p)
    part[p] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
  quad_loop<P>(w, x, t, first, count, part);
  for (int p = 0; p < P; ++p) {
    __m256i rows[2];
    row_words(part[p], rows);
    for (int i = 0; i < 2; ++i)
      sum[p][i] = _mm256_cvtepu16_epi32(_mm_add_epi16(_mm256_castsi256_si128(rows[i]),
                                                      _mm256_extracti128_si256(rows[i], 1)));
  }
}

template <int P>
[[gnu::always_inline]] inline void group_sums_whole_quads(const cpu_weights& w,
                                                          const byte_table_input& x,
                                                          std::int64_t t, std::int64_t g,
                                                          __m256i (&sum)[P][2]) {
  whole_quad_sums<P>(w, x, t, group_begin(w, g) / 16,
                     (group_end(w, g) - group_begin(w, g)) / 16, sum);
}

template <int P, bool Ternary>
void byte_tile(const cpu_weights& w, const byte_table_input& x, std::int64_t t, float* z) {
  __m256 out[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};  // rows 0-7, 8-15
  for (std::int64_t g = 0; g < w.groups; ++g) {
    __m256i sum[P][2];
    if (whole_quad_group(w, g))
      group_sums_whole_quads<P>(w, x, t, g, sum);
    else
      group_sums_with_edges<P>(w, x, t, g, sum);
    add_group<P, Ternary>(w.tile_coefficients(t, g), x.group_levels[g], &sum[0][0], out);
  }
  _mm256_storeu_ps(z, out[0]);
  _mm256_storeu_ps(z + 8, out[1]);
}

// Every group of whole quads (the usual case: groups of 64, 128 or 256 columns and columns a
// multiple of 16)? Then byte_tile_whole_quads walks the groups without a per-group test.
inline bool all_whole_quad_groups(const cpu_weights& w) {
  return w.groups > 0 && whole_quad_group(w, 0) && whole_quad_group(w, w.groups - 1);
}

// byte_tile for all_whole_quad_groups(w): the same sums and float steps in the same order.
template <int P, bool Ternary>
void byte_tile_whole_quads(const cpu_weights& w, const byte_table_input& x, std::int64_t t,
                           float* z) {
  __m256 out[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  const std::int64_t quads_per_group = w.group_size / 16;
  const float* alpha = w.tile_coefficients(t, 0);
  for (std::int64_t g = 0, quad = 0; g < w.groups; ++g, quad += quads_per_group) {
    __m256i sum[P][2];
    whole_quad_sums<P>(w, x, t, quad, std::min(quads_per_group, w.quads - quad), sum);
    add_group<P, Ternary>(alpha, x.group_levels[g], &sum[0][0], out);
    alpha += w.bits * tile_rows;
  }
  _mm256_storeu_ps(z, out[0]);
  _mm256_storeu_ps(z + 8, out[1]);
}

template <int P, bool Ternary>
struct byte_call {
  static void run(const cpu_weights& w, const byte_table_input* x, int vectors, std::int64_t t0,
                  std::int64_t t1, float* const* z) {
    const bool whole = all_whole_quad_groups(w);
    for (std::int64_t t = t0; t < t1; ++t)
      for (int v = 0; v < vectors; ++v) {
        float* out = z[v] + (t - t0) * tile_rows;
        if (whole)
          byte_tile_whole_quads<P, Ternary>(w, x[v], t, out);
        else
          byte_tile<P, Ternary>(w, x[v], t, out);
      }
  }
};

void byte_rows(const cpu_weights& w, const byte_table_input* x, int vectors, std::int64_t t0,
               std::int64_t t1, float* const* z) {
  by_planes<byte_call>(w, x, vectors, t0, t1, z);
}

// ---- encoded activations, byte dots (batches) ------------------------------------------------

void encode_levels(const cpu_weights& w, const float* x, float minimum, float inv_step, int bits,
                   std::uint8_t* levels, std::int32_t* group_levels) {
  const __m256 lo = _mm256_set1_ps(minimum), inv = _mm256_set1_ps(inv_step);
  const __m256 top = _mm256_set1_ps(static_cast<float>((1 << bits) - 1));
  // The two packs work per 128-bit half: their dwords hold columns 0-3 of q0, q1, q2, q3, then
  // 4-7 of each; this permutation puts the 32 columns back in order.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (std::int64_t c = 0; c < w.chunks * chunk_cols; c += chunk_cols) {
    __m256i q[4];
    for (int i = 0; i < 4; ++i) q[i] = levels8(w, x, c + 8 * i, lo, inv, top);
    const __m256i bytes =
        _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(levels + c),
                        _mm256_permutevar8x32_epi32(bytes, order));
  }
  group_levels_from(w, levels, group_levels);
}

// A block of at most 64 nibbles: each adds at least -2 * 255 to a 16-bit lane (a pair of
// columns), so 64 of them stay above -32768. Fewer for many planes, so that the unpacked block
// (block * P * 64 bytes) stays within 16 KiB, in L1.
template <int P>
constexpr std::int64_t dot_block_nibbles() {
  return std::min<std::int64_t>(64, 256 / P);
}

// The lookup planes of tile t over nibbles [first, first + count) as bytes, [nibble][plane][half]:
// byte 4r + i of half h is -1 where row 8h + r has the bit of column 4n + i set, else 0. A byte
// shuffle copies byte n % 8 / 2 of each row's word over its dword, and the nibble's four bits
// are tested one per byte.
template <int P>
void unpack_nibbles(const cpu_weights& w, std::int64_t t, std::int64_t first, std::int64_t count,
                    __m256i* out) {
  const __m256i dword_base = _mm256_setr_epi8(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12, 0,
                                              0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12);
  const __m256i bits[2] = {_mm256_set1_epi32(0x08040201),
                           _mm256_set1_epi32(static_cast<int>(0x80402010U))};
  for (std::int64_t n = first; n < first + count; ++n) {
    const int m = static_cast<int>(n % 8);
    const __m256i spread = _mm256_add_epi8(dword_base, _mm256_set1_epi8(static_cast<char>(m / 2)));
    const __m256i select = bits[m % 2];
    const std::uint32_t* words = w.chunk_bits(t, n / 8);
    for (int p = 0; p < P; ++p)
      for (int half = 0; half < 2; ++half) {
        const __m256i v =
            _mm256_load_si256(reinterpret_cast<const __m256i*>(words + p * tile_rows + 8 * half));
        const __m256i r = _mm256_and_si256(_mm256_shuffle_epi8(v, spread), select);
        *out++ = _mm256_cmpeq_epi8(r, select);
      }
  }
}

// sum[p][h] += A_p of rows 8h..8h+7 over an unpacked block, for planes [First, First + 4) (at
// most four planes per pass, so that the 16-bit sums stay in registers). The dword of four
// levels is broadcast, so each dword lane (row) multiplies its four bytes with the four levels.
template <int P, int First = 0>
inline void dot_block(const std::uint8_t* levels, const __m256i* unpacked, std::int64_t count,
                      __m256i* sum) {
  constexpr int planes = std::min(4, P - First);
  __m256i acc[planes][2];
  for (int p = 0; p < planes; ++p) acc[p][0] = acc[p][1] = _mm256_setzero_si256();
  for (std::int64_t i = 0; i < count; ++i) {
    std::int32_t four;
    std::memcpy(&four, levels + 4 * i, sizeof four);
    const __m256i q = _mm256_set1_epi32(four);
    const __m256i* bytes = unpacked + (i * P + First) * 2;
    for (int p = 0; p < planes; ++p)
      for (int half = 0; half < 2; ++half)
        acc[p][half] = _mm256_add_epi16(acc[p][half], _mm256_maddubs_epi16(q, bytes[2 * p + half]));
  }
  const __m256i minus_one = _mm256_set1_epi16(-1);  // the bytes were -1: negate while widening
  for (int p = 0; p < planes; ++p)
    for (int half = 0; half < 2; ++half)
      sum[2 * (First + p) + half] =
          _mm256_add_epi32(sum[2 * (First + p) + half], _mm256_madd_epi16(acc[p][half], minus_one));
  if constexpr (First + planes < P) dot_block<P, First + planes>(levels, unpacked, count, sum);
}

// Scratch for `count` 256-bit registers, 64-byte aligned (a std::vector of __m256i would drop
// the type's attributes).
class register_scratch {
 public:
  explicit register_scratch(std::int64_t count) : bytes_(static_cast<std::size_t>(count) * 32) {}
  __m256i* ints() { return reinterpret_cast<__m256i*>(bytes_.data()); }
  __m256* floats() { return reinterpret_cast<__m256*>(bytes_.data()); }
  std::int64_t count() const { return static_cast<std::int64_t>(bytes_.size() / 32); }

 private:
  detail::scratch<std::uint8_t> bytes_;
};

template <int P, bool Ternary>
struct dot_call {
  // Tiles outer; per group and block, the planes are unpacked once for all the vectors.
  static void run(const cpu_weights& w, const level_input* x, int vectors, std::int64_t t0,
                  std::int64_t t1, float* const* z) {
    constexpr std::int64_t block = dot_block_nibbles<P>();
    register_scratch unpacked(block * P * 2), sums(std::int64_t{vectors} * P * 2),
        out(std::int64_t{vectors} * 2);
    for (std::int64_t t = t0; t < t1; ++t) {
      std::fill_n(out.floats(), out.count(), _mm256_setzero_ps());
      for (std::int64_t g = 0; g < w.groups; ++g) {
        std::fill_n(sums.ints(), sums.count(), _mm256_setzero_si256());
        const std::int64_t end = last_nibble(w, g);
        for (std::int64_t n = first_nibble(w, g); n < end; n += block) {
          const std::int64_t count = std::min(block, end - n);
          unpack_nibbles<P>(w, t, n, count, unpacked.ints());
          for (int v = 0; v < vectors; ++v)
            dot_block<P>(x[v].levels + 4 * n, unpacked.ints(), count, sums.ints() + v * P * 2);
        }
        for (int v = 0; v < vectors; ++v)
          add_group<P, Ternary>(w.tile_coefficients(t, g), x[v].group_levels[g],
                                sums.ints() + v * P * 2, out.floats() + 2 * v);
      }
      for (int v = 0; v < vectors; ++v) {
        float* zt = z[v] + (t - t0) * tile_rows;
        _mm256_storeu_ps(zt, out.floats()[2 * v]);
        _mm256_storeu_ps(zt + 8, out.floats()[2 * v + 1]);
      }
    }
  }
};

void dot_rows(const cpu_weights& w, const level_input* x, int vectors, std::int64_t t0,
              std::int64_t t1, float* const* z) {
  by_planes<dot_call>(w, x, vectors, t0, t1, z);
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

// The int8 look-up's two primitives: bit i of `bits` to byte i by a byte shuffle (bytes 0-7
// of the result from the word's byte 0, ...) and a compare against each byte's bit; the
// partial store through a copy.
inline __m256i bit_bytes(std::uint32_t bits, int value) {
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                       3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(static_cast<char>(value)));
}
inline void store_first_bytes(std::uint8_t* dst, __m256i q, std::int64_t count) {
  alignas(32) std::uint8_t bytes[chunk_cols];
  _mm256_store_si256(reinterpret_cast<__m256i*>(bytes), q);
  std::memcpy(dst, bytes, static_cast<std::size_t>(count));
}

#include "cpu/int8_lookup.inc"  // NOLINT(bugprone-suspicious-include): per target

// Codes int8_lookup does not take: decode_rows, then each row's grid.
void decode_rows_int8(const cpu_weights& w, const float* scales, std::int64_t first,
                      std::int64_t last, bool excess, std::uint8_t* out) {
  if (!decode_rows_int8_lookup(w, scales, first, last, excess, out))
    decode_rows_int8_generic(w, scales, first, last, excess, out);
}

}  // namespace
}  // namespace qsl::detail::cpu

#include "cpu/target_pragma_end.hpp"

namespace qsl::detail::cpu {

const kernel_table& avx2_kernels() {
  using adapter = tile_at_a_time<tiles>;
  static const kernel_table table{
      build_tables, adapter::lut_rows, encode, adapter::popcount_rows, decode_target_rows,
      decode_rows_int8,
      encode_bytes, byte_rows,         2,      encode_levels,          dot_rows,           4,
      int8_sums_avx2};
  return table;
}

}  // namespace qsl::detail::cpu
