// AArch64 Advanced SIMD kernels (Jetson AGX Xavier's Carmel cores). A 16-row tile is four
// 4-lane registers. The 16-entry float table is 64 bytes, four q registers, read with tbl on
// byte indices 4e..4e+3; popcounts are cnt on bytes, widened with pairwise adds.
// NEON is mandatory on AArch64, so no target pragma is needed.
#include <arm_neon.h>

#include <algorithm>

#include "cpu/kernel_common.hpp"

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

void encode(const cpu_weights& w, const float* x, float minimum, float inv_step, int bits,
            std::uint32_t* planes, std::int32_t* group_levels) {
  const float32x4_t lo = vdupq_n_f32(minimum), inv = vdupq_n_f32(inv_step);
  const float32x4_t half = vdupq_n_f32(0.5f), zero = vdupq_n_f32(0.0f);
  const float32x4_t top = vdupq_n_f32(static_cast<float>((1 << bits) - 1));
  const int32x4_t lane_shift = {0, 1, 2, 3};
  for (std::int64_t c = 0; c < w.chunks; ++c) {
    std::uint32_t word[max_activation_bits] = {};
    for (int part = 0; part < 8; ++part) {  // eight groups of 4 columns
      const std::int64_t first = c * chunk_cols + 4 * part;
      float v[4] = {0, 0, 0, 0};
      for (int i = 0; i < 4; ++i)
        if (first + i < w.cols) v[i] = x[first + i];
      // Multiply then add, rounded separately (-ffp-contract=off); vmaxnm maps NaN to 0.
      const float32x4_t scaled =
          vrndmq_f32(vaddq_f32(vmulq_f32(vsubq_f32(vld1q_f32(v), lo), inv), half));
      uint32x4_t q = vcvtq_u32_f32(vminq_f32(vmaxnmq_f32(scaled, zero), top));
      const std::int64_t valid =
          std::min<std::int64_t>(4, std::max<std::int64_t>(0, w.cols - first));
      const uint32x4_t in_range = vcltq_s32(lane_shift, vdupq_n_s32(static_cast<int>(valid)));
      q = vandq_u32(q, in_range);  // padding columns encode as 0
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
  static const kernel_table table{build_tables, adapter::lut_rows, encode, adapter::popcount_rows,
                                  decode_target_rows};
  return table;
}

}  // namespace qsl::detail::cpu
