// AArch64 Advanced SIMD kernels (Jetson AGX Xavier's Carmel cores). A 16-row tile is four
// 4-lane registers. The 16-entry float table is 64 bytes, four q registers, read with tbl on
// byte indices 4e..4e+3; popcounts are cnt on bytes, widened with pairwise adds. For many
// activation bits, byte tables (cpu_weights::nibble_bytes): one tbl looks up a nibble of 16
// rows, as vpshufb does on AVX2.
// NEON is mandatory on AArch64, so no target pragma is needed.
#include <arm_neon.h>

#include <algorithm>

#include "cpu/kernel_common.hpp"
#include "scratch.hpp"

namespace qsl::detail::cpu {
namespace {

// ---- float activations -----------------------------------------------------------------------

void build_tables(const cpu_weights& w, const float* x, float* tables, float* group_sums) {
  portable_tables(w, x, tables);
  group_sums_of(w, x, group_sums);
}

// T[idx & 15] for 4 lanes: byte indices 4e + {0, 1, 2, 3} into the 64-byte table.
inline float32x4_t lookup16(const uint8x16x4_t& table, uint32x4_t idx) {
  const uint32x4_t e = vshlq_n_u32(vandq_u32(idx, vdupq_n_u32(15)), 2);
  const uint8x16_t base = vreinterpretq_u8_u32(vmulq_n_u32(e, 0x01010101U));
  const uint8x16_t offsets = vreinterpretq_u8_u32(vdupq_n_u32(0x03020100U));
  return vreinterpretq_f32_u8(vqtbl4q_u8(table, vaddq_u8(base, offsets)));
}

template <int P, bool Ternary>
void lut_tile(const cpu_weights& w, const table_input& x, std::int64_t t, float* y) {
  constexpr int K = Ternary ? P / 2 : P;
  for (int quarter = 0; quarter < 4; ++quarter) {
    float32x4_t out = vdupq_n_f32(0);
    for (std::int64_t g = 0; g < w.groups; ++g) {
      float32x4_t acc[P];
      for (int p = 0; p < P; ++p) acc[p] = vdupq_n_f32(0);
      const std::int64_t end = last_nibble(w, g);
      for (std::int64_t s = first_nibble(w, g); s < end;) {
        const std::int64_t shift = s % 8;
        const std::int64_t run = std::min<std::int64_t>(8 - shift, end - s);
        const std::uint32_t* chunk = w.chunk_bits(t, s / 8) + 4 * quarter;
        const int32x4_t count = vdupq_n_s32(static_cast<int>(-4 * shift));  // right shift
        uint32x4_t idx[P];
        for (int p = 0; p < P; ++p) idx[p] = vshlq_u32(vld1q_u32(chunk + p * tile_rows), count);
        for (std::int64_t u = 0; u < run; ++u) {
          const auto* bytes =
              reinterpret_cast<const std::uint8_t*>(x.tables + (s + u) * table_entries);
          const uint8x16x4_t table = vld1q_u8_x4(bytes);
          for (int p = 0; p < P; ++p) {
            acc[p] = vaddq_f32(acc[p], lookup16(table, idx[p]));
            idx[p] = vshrq_n_u32(idx[p], 4);
          }
        }
        s += run;
      }
      const float* alpha = w.tile_coefficients(t, g) + 4 * quarter;
      const float32x4_t group_sum = vdupq_n_f32(x.group_sums[g]);
      for (int j = 0; j < K; ++j) {
        const float32x4_t other = Ternary ? acc[K + j] : group_sum;
        const float32x4_t dot = vsubq_f32(vaddq_f32(acc[j], acc[j]), other);
        out = vfmaq_f32(out, vld1q_f32(alpha + j * tile_rows), dot);
      }
    }
    vst1q_f32(y + 4 * quarter, out);
  }
}

// ---- encoded activations ---------------------------------------------------------------------

inline uint32x4_t popcount32(uint32x4_t v) {
  return vpaddlq_u16(vpaddlq_u8(vcntq_u8(vreinterpretq_u8_u32(v))));
}

// The levels q of columns first..first + 3 by encode's rule, 0 past w.cols: the one place both
// encodings (bit planes, byte tables) compute them, so both kernels see the same integers.
inline uint32x4_t levels4(const cpu_weights& w, const float* x, std::int64_t first, float32x4_t lo,
                          float32x4_t inv, float32x4_t top) {
  const int32x4_t lane = {0, 1, 2, 3};
  float v[4] = {0, 0, 0, 0};
  for (int i = 0; i < 4; ++i)
    if (first + i < w.cols) v[i] = x[first + i];
  // Multiply then add, rounded separately (-ffp-contract=off); vmaxnm maps NaN to 0.
  const float32x4_t scaled =
      vrndmq_f32(vaddq_f32(vmulq_f32(vsubq_f32(vld1q_f32(v), lo), inv), vdupq_n_f32(0.5f)));
  const uint32x4_t q = vcvtq_u32_f32(vminq_f32(vmaxnmq_f32(scaled, vdupq_n_f32(0.0f)), top));
  const std::int64_t valid = std::min<std::int64_t>(4, std::max<std::int64_t>(0, w.cols - first));
  return vandq_u32(q, vcltq_s32(lane, vdupq_n_s32(static_cast<int>(valid))));  // padding: 0
}

void encode(const cpu_weights& w, const float* x, float minimum, float inv_step, int bits,
            std::uint32_t* planes, std::int32_t* group_levels) {
  const float32x4_t lo = vdupq_n_f32(minimum), inv = vdupq_n_f32(inv_step);
  const float32x4_t top = vdupq_n_f32(static_cast<float>((1 << bits) - 1));
  const int32x4_t lane_shift = {0, 1, 2, 3};
  for (std::int64_t c = 0; c < w.chunks; ++c) {
    std::uint32_t word[max_activation_bits] = {};
    for (int part = 0; part < 8; ++part) {  // eight groups of 4 columns
      const uint32x4_t q = levels4(w, x, c * chunk_cols + 4 * part, lo, inv, top);
      for (int i = 0; i < bits; ++i) {
        const uint32x4_t bit = vandq_u32(vshlq_u32(q, vdupq_n_s32(-i)), vdupq_n_u32(1));
        word[i] |= vaddvq_u32(vshlq_u32(bit, lane_shift)) << (4 * part);
      }
    }
    for (int i = 0; i < bits; ++i) planes[i * w.chunks + c] = word[i];
  }
  group_levels_of(w, planes, bits, group_levels);
}

template <int P, bool Ternary>
void popcount_tile(const cpu_weights& w, const encoded_input& x, std::int64_t t, float* z) {
  constexpr int K = Ternary ? P / 2 : P;
  for (int quarter = 0; quarter < 4; ++quarter) {
    float32x4_t out = vdupq_n_f32(0);
    for (std::int64_t g = 0; g < w.groups; ++g) {
      uint32x4_t acc[P];
      for (int p = 0; p < P; ++p) acc[p] = vdupq_n_u32(0);
      const std::int64_t end = group_end(w, g);
      for (std::int64_t c = group_begin(w, g) / chunk_cols; c * chunk_cols < end; ++c) {
        const std::uint32_t mask = group_chunk_mask(w, g, c);
        const std::uint32_t* chunk = w.chunk_bits(t, c) + 4 * quarter;
        for (int p = 0; p < P; ++p) {
          const uint32x4_t m = vld1q_u32(chunk + p * tile_rows);
          uint32x4_t h = vdupq_n_u32(0);  // h = 2 h + popcount(m AND t_i), i from the top
          for (int i = x.bits - 1; i >= 0; --i)
            h = vaddq_u32(vaddq_u32(h, h),
                          popcount32(vandq_u32(m, vdupq_n_u32(x.planes[i * w.chunks + c] & mask))));
          acc[p] = vaddq_u32(acc[p], h);
        }
      }
      const float* alpha = w.tile_coefficients(t, g) + 4 * quarter;
      const int32x4_t levels = vdupq_n_s32(x.group_levels[g]);
      for (int j = 0; j < K; ++j) {
        const int32x4_t a = vreinterpretq_s32_u32(acc[j]);
        const int32x4_t other = Ternary ? vreinterpretq_s32_u32(acc[K + j]) : levels;
        const int32x4_t dot = vsubq_s32(vaddq_s32(a, a), other);
        out = vfmaq_f32(out, vld1q_f32(alpha + j * tile_rows), vcvtq_f32_s32(dot));
      }
    }
    vst1q_f32(z + 4 * quarter, out);
  }
}

// ---- encoded activations, byte tables -------------------------------------------------------

void encode_bytes(const cpu_weights& w, const float* x, float minimum, float inv_step, int bits,
                  std::uint8_t* low, std::uint8_t* high, std::int32_t* group_levels) {
  const float32x4_t lo = vdupq_n_f32(minimum), inv = vdupq_n_f32(inv_step);
  const float32x4_t top = vdupq_n_f32(static_cast<float>((1 << bits) - 1));
  const std::int64_t count = byte_table_nibbles(w);
  detail::scratch<std::uint32_t> q(static_cast<std::size_t>(4 * count));
  for (std::int64_t s = 0; s < count; ++s)
    vst1q_u32(q.data() + 4 * s, levels4(w, x, 4 * s, lo, inv, top));
  // Entry b of a table is the sum of the levels whose bit is set in b: four masked broadcasts,
  // entries 0-7 and 8-15 as 16-bit lanes.
  uint16x8_t bit[4][2];
  for (int i = 0; i < 4; ++i)
    for (int h = 0; h < 2; ++h) {
      std::uint16_t m[8];
      for (int b = 0; b < 8; ++b) m[b] = ((8 * h + b) >> i) & 1 ? 0xFFFF : 0;
      bit[i][h] = vld1q_u16(m);
    }
  const uint16x8_t low7 = vdupq_n_u16(0x7F);
  for (std::int64_t s = 0; s < count; ++s) {
    uint16x8_t t[2];
    for (int h = 0; h < 2; ++h) {
      t[h] = vdupq_n_u16(0);
      for (int i = 0; i < 4; ++i)
        t[h] = vaddq_u16(
            t[h], vandq_u16(vdupq_n_u16(static_cast<std::uint16_t>(q[4 * s + i])), bit[i][h]));
    }
    vst1q_u8(low + s * table_entries,
             vcombine_u8(vmovn_u16(vandq_u16(t[0], low7)), vmovn_u16(vandq_u16(t[1], low7))));
    vst1q_u8(high + s * table_entries,
             vcombine_u8(vmovn_u16(vshrq_n_u16(t[0], 7)), vmovn_u16(vshrq_n_u16(t[1], 7))));
  }
  group_levels_from(w, q.data(), group_levels);
}

// The running sums of one lookup plane for a tile's 16 rows, in add_byte_tables' byte order
// (byte b of a 16-byte half is row b / 2 for even b, 8 + b / 2 for odd b), widened to 16-bit
// lanes: [0] holds bytes 0-7, [1] bytes 8-15. A look-up gives Q's low seven bits (<= 127) and
// the rest (<= 7); the row's sum is low + 128 high.
struct plane_sums {
  uint16x8_t low[2], high[2];
};

// One look-up of both halves of a 16-column quad or an 8-column octet into `s`: `l` and `h` are
// the low and high look-ups, already added in bytes where they fit.
inline void add_lookups(uint8x16_t l0, uint8x16_t l1, uint8x16_t h, plane_sums& s) {
  s.low[0] = vaddq_u16(s.low[0], vaddl_u8(vget_low_u8(l0), vget_low_u8(l1)));
  s.low[1] = vaddq_u16(s.low[1], vaddl_high_u8(l0, l1));
  s.high[0] = vaddw_u8(s.high[0], vget_low_u8(h));
  s.high[1] = vaddw_high_u8(s.high[1], h);
}

// Quad `quad` (nibbles 4 quad .. 4 quad + 3) of every plane: half h's low four bits index the
// table of nibble 4 quad + h, its high four bits that of 4 quad + 2 + h. Per row this adds at
// most 4 * 127 to low and 4 * 7 to high.
template <int P>
inline void add_quad(const cpu_weights& w, const byte_table_input& x, std::int64_t t,
                     std::int64_t quad, plane_sums (&s)[P]) {
  const uint8x16x4_t lt = vld1q_u8_x4(x.low + 4 * quad * table_entries);
  const uint8x16x4_t ht = vld1q_u8_x4(x.high + 4 * quad * table_entries);
  const uint8x16_t nibble = vdupq_n_u8(15);
  const std::uint8_t* bytes = w.quad_bytes(t, quad);
  for (int p = 0; p < P; ++p) {
    const uint8x16x2_t v = vld1q_u8_x2(bytes + p * 2 * tile_rows);
    const uint8x16_t i0 = vandq_u8(v.val[0], nibble), i1 = vandq_u8(v.val[1], nibble);
    const uint8x16_t i2 = vshrq_n_u8(v.val[0], 4), i3 = vshrq_n_u8(v.val[1], 4);
    const uint8x16_t l0 = vaddq_u8(vqtbl1q_u8(lt.val[0], i0), vqtbl1q_u8(lt.val[2], i2));
    const uint8x16_t l1 = vaddq_u8(vqtbl1q_u8(lt.val[1], i1), vqtbl1q_u8(lt.val[3], i3));
    const uint8x16_t h = vaddq_u8(vaddq_u8(vqtbl1q_u8(ht.val[0], i0), vqtbl1q_u8(ht.val[2], i2)),
                                  vaddq_u8(vqtbl1q_u8(ht.val[1], i1), vqtbl1q_u8(ht.val[3], i3)));
    add_lookups(l0, l1, h, s[p]);
  }
}

// Octet o alone (columns 8o..8o + 7: the low or the high four bits of quad o / 2), at a group's
// edge: half h looks up nibble 2o + h.
template <int P>
inline void add_octet(const cpu_weights& w, const byte_table_input& x, std::int64_t t,
                      std::int64_t o, plane_sums (&s)[P]) {
  const bool upper = o % 2 != 0;
  const uint8x16x2_t lt = vld1q_u8_x2(x.low + 2 * o * table_entries);
  const uint8x16x2_t ht = vld1q_u8_x2(x.high + 2 * o * table_entries);
  const uint8x16_t nibble = vdupq_n_u8(15);
  const std::uint8_t* bytes = w.quad_bytes(t, o / 2);
  for (int p = 0; p < P; ++p) {
    const uint8x16x2_t v = vld1q_u8_x2(bytes + p * 2 * tile_rows);
    const uint8x16_t i0 = upper ? vshrq_n_u8(v.val[0], 4) : vandq_u8(v.val[0], nibble);
    const uint8x16_t i1 = upper ? vshrq_n_u8(v.val[1], 4) : vandq_u8(v.val[1], nibble);
    add_lookups(vqtbl1q_u8(lt.val[0], i0), vqtbl1q_u8(lt.val[1], i1),
                vaddq_u8(vqtbl1q_u8(ht.val[0], i0), vqtbl1q_u8(ht.val[1], i1)), s[p]);
  }
}

// The 16-bit sums added into the 32-bit ones of rows 4i..4i + 3 (sum[p][i]), then cleared. Each
// row's sum low + 128 high is exact in 16 bits for up to 16 quads (at most 64 * 4 * 255 = 65280).
template <int P>
inline void flush(plane_sums (&s)[P], uint32x4_t (&sum)[P][4]) {
  for (int p = 0; p < P; ++p) {
    const uint16x8_t r0 = vaddq_u16(s[p].low[0], vshlq_n_u16(s[p].high[0], 7));
    const uint16x8_t r1 = vaddq_u16(s[p].low[1], vshlq_n_u16(s[p].high[1], 7));
    const uint16x8_t rows_low = vuzp1q_u16(r0, r1);   // even bytes: rows 0-7
    const uint16x8_t rows_high = vuzp2q_u16(r0, r1);  // odd bytes: rows 8-15
    sum[p][0] = vaddw_u16(sum[p][0], vget_low_u16(rows_low));
    sum[p][1] = vaddw_high_u16(sum[p][1], rows_low);
    sum[p][2] = vaddw_u16(sum[p][2], vget_low_u16(rows_high));
    sum[p][3] = vaddw_high_u16(sum[p][3], rows_high);
    s[p] = {{vdupq_n_u16(0), vdupq_n_u16(0)}, {vdupq_n_u16(0), vdupq_n_u16(0)}};
  }
}

// Group g's plane sums A_p of tile t, quarter by quarter: octets at its edges (groups start on
// 8 columns, quads on 16), whole quads between, a flush before the 16-bit sums could pass 16
// quads' worth.
template <int P>
void group_sums(const cpu_weights& w, const byte_table_input& x, std::int64_t t, std::int64_t g,
                uint32x4_t (&sum)[P][4]) {
  plane_sums s[P];
  for (int p = 0; p < P; ++p) {
    for (auto& q : sum[p]) q = vdupq_n_u32(0);
    s[p] = {{vdupq_n_u16(0), vdupq_n_u16(0)}, {vdupq_n_u16(0), vdupq_n_u16(0)}};
  }
  constexpr int octets_per_flush = 32;
  int pending = 0;  // octets in s
  const std::int64_t end = (group_end(w, g) + 7) / 8;
  for (std::int64_t o = group_begin(w, g) / 8; o < end;) {
    const bool quad = o % 2 == 0 && o + 1 < end;
    if (pending + 2 > octets_per_flush) {
      flush<P>(s, sum);
      pending = 0;
    }
    if (quad)
      add_quad<P>(w, x, t, o / 2, s);
    else
      add_octet<P>(w, x, t, o, s);
    pending += quad ? 2 : 1;
    o += quad ? 2 : 1;
  }
  flush<P>(s, sum);
}

// The popcount kernel's float steps, in its order for every row (groups, then j): with A_j the
// sums of sign plane j and B_j the group's levels (binary) or mask j's sums (ternary),
// out += alpha_j * (2 A_j - B_j).
template <int P, bool Ternary>
void byte_tile(const cpu_weights& w, const byte_table_input& x, std::int64_t t, float* z) {
  constexpr int K = Ternary ? P / 2 : P;
  float32x4_t out[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
  for (std::int64_t g = 0; g < w.groups; ++g) {
    uint32x4_t sum[P][4];
    group_sums<P>(w, x, t, g, sum);
    const float* alpha = w.tile_coefficients(t, g);
    const int32x4_t levels = vdupq_n_s32(x.group_levels[g]);
    for (int quarter = 0; quarter < 4; ++quarter)
      for (int j = 0; j < K; ++j) {
        const int32x4_t a = vreinterpretq_s32_u32(sum[j][quarter]);
        const int32x4_t other = Ternary ? vreinterpretq_s32_u32(sum[K + j][quarter]) : levels;
        const int32x4_t dot = vsubq_s32(vaddq_s32(a, a), other);
        out[quarter] = vfmaq_f32(out[quarter], vld1q_f32(alpha + j * tile_rows + 4 * quarter),
                                 vcvtq_f32_s32(dot));
      }
  }
  for (int quarter = 0; quarter < 4; ++quarter) vst1q_f32(z + 4 * quarter, out[quarter]);
}

template <int P, bool Ternary>
struct byte_call {
  static void run(const cpu_weights& w, const byte_table_input* x, int vectors, std::int64_t t0,
                  std::int64_t t1, float* const* z) {
    for (std::int64_t t = t0; t < t1; ++t)
      for (int v = 0; v < vectors; ++v)
        byte_tile<P, Ternary>(w, x[v], t, z[v] + (t - t0) * tile_rows);
  }
};

void byte_rows(const cpu_weights& w, const byte_table_input* x, int vectors, std::int64_t t0,
               std::int64_t t1, float* const* z) {
  by_planes<byte_call>(w, x, vectors, t0, t1, z);
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

const kernel_table& neon_kernels() {
  using adapter = tile_at_a_time<tiles>;
  // byte_tables_min_bits is not measured (no AArch64 machine here): by instruction count the
  // byte tables take about 25 per quad of 16 rows x 16 columns and plane, AND + popcount
  // 12 per activation bit + 4, so they tie at 2 bits and lead from 3 (40 against 25).
  // BM_EncodedPaths on a Jetson is what should set it.
  static const kernel_table table{build_tables,           adapter::lut_rows,  encode,
                                  adapter::popcount_rows, decode_target_rows, nullptr,
                                  encode_bytes,           byte_rows,          3};
  return table;
}

}  // namespace qsl::detail::cpu
