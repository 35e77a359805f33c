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
  const std::int64_t count = nibbles(w);
  for (std::int64_t s = 0; s < count; ++s) {
    float v[4];
    for (int i = 0; i < 4; ++i) v[i] = 4 * s + i < w.cols ? x[4 * s + i] : 0.0f;
    float* t = tables + s * table_entries;
    for (int b = 0; b < table_entries; ++b) {  // the scalar order: x0 + x1 + x2 + x3
      float sum = 0;
      for (int i = 0; i < 4; ++i)
        if ((b >> i) & 1) sum += v[i];
      t[b] = sum;
    }
  }
  for (std::int64_t g = 0; g < w.groups; ++g) {
    float sum = 0;
    for (std::int64_t c = group_begin(w, g); c < group_end(w, g); ++c) sum += x[c];
    group_sums[g] = sum;
  }
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
          const auto* bytes = reinterpret_cast<const std::uint8_t*>(
              x.tables + (s + u) * table_entries);
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
      const std::int64_t valid = std::min<std::int64_t>(4, std::max<std::int64_t>(0, w.cols - first));
      const uint32x4_t in_range = vcltq_s32(lane_shift, vdupq_n_s32(static_cast<int>(valid)));
      q = vandq_u32(q, in_range);  // padding columns encode as 0
      for (int i = 0; i < bits; ++i) {
        const uint32x4_t bit = vandq_u32(vshlq_u32(q, vdupq_n_s32(-i)), vdupq_n_u32(1));
        word[i] |= vaddvq_u32(vshlq_u32(bit, lane_shift)) << (4 * part);
      }
    }
    for (int i = 0; i < bits; ++i) planes[i * w.chunks + c] = word[i];
  }
  for (std::int64_t g = 0; g < w.groups; ++g) {
    std::int32_t sum = 0;
    for (int i = 0; i < bits; ++i)
      for (std::int64_t c = group_begin(w, g) / chunk_cols; c * chunk_cols < group_end(w, g); ++c)
        sum += qsl::popcount(planes[i * w.chunks + c] & group_chunk_mask(w, g, c)) << i;
    group_levels[g] = sum;
  }
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

template <int P, bool Ternary>
struct lut_call {
  static void run(const cpu_weights& w, const table_input& x, std::int64_t t0, std::int64_t t1,
                  float* y) {
    for (std::int64_t t = t0; t < t1; ++t) lut_tile<P, Ternary>(w, x, t, y + (t - t0) * tile_rows);
  }
};
template <int P, bool Ternary>
struct popcount_call {
  static void run(const cpu_weights& w, const encoded_input& x, std::int64_t t0, std::int64_t t1,
                  float* z) {
    for (std::int64_t t = t0; t < t1; ++t)
      popcount_tile<P, Ternary>(w, x, t, z + (t - t0) * tile_rows);
  }
};

void lut_rows_one(const cpu_weights& w, const table_input& x, std::int64_t t0, std::int64_t t1,
                  float* y) {
  by_planes<lut_call>(w, x, t0, t1, y);
}

// One vector at a time (the batch form of the kernel table).
void lut_rows(const cpu_weights& w, const table_input* x, int vectors, std::int64_t t0,
              std::int64_t t1, float* const* y) {
  for (int v = 0; v < vectors; ++v) lut_rows_one(w, x[v], t0, t1, y[v]);
}

void popcount_rows(const cpu_weights& w, const encoded_input& x, std::int64_t t0, std::int64_t t1,
                   float* z) {
  by_planes<popcount_call>(w, x, t0, t1, z);
}

}  // namespace

const kernel_table& neon_kernels() {
  static const kernel_table table{build_tables, lut_rows, encode, popcount_rows};
  return table;
}

}  // namespace qsl::detail::cpu
