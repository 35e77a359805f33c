// The portable target: plain C++ over the packed layout, one row at a time. It runs on every
// CPU, and it is the schedule the SIMD targets are tested against (besides the reference).
#include <algorithm>

#include "cpu/kernel_common.hpp"

namespace qsl::detail::cpu {
namespace {

void build_tables(const cpu_weights& w, const float* x, float* tables, float* group_sums) {
  portable_tables(w, x, tables);
  group_sums_of(w, x, group_sums);
}

// Sum over the nibbles of group g of T[s][nibble s of lookup plane p, row r].
float plane_lookup(const cpu_weights& w, const float* tables, std::int64_t tile, int r, int p,
                   std::int64_t g) {
  float sum = 0;
  for (std::int64_t s = first_nibble(w, g); s < last_nibble(w, g); ++s) {
    const std::uint32_t word = w.chunk_bits(tile, s / 8)[p * tile_rows + r];
    sum += tables[s * table_entries + ((word >> (4 * (s % 8))) & 15)];
  }
  return sum;
}

void lut_rows_one(const cpu_weights& w, const table_input& x, std::int64_t tile_begin,
                  std::int64_t tile_end, float* y) {
  const bool ternary = w.basis == qsl::basis::ternary;
  for (std::int64_t t = tile_begin; t < tile_end; ++t)
    for (int r = 0; r < tile_rows && t * tile_rows + r < w.rows; ++r) {
      float acc = 0;
      for (std::int64_t g = 0; g < w.groups; ++g) {
        const float* alpha = w.tile_coefficients(t, g);
        for (int j = 0; j < w.bits; ++j) {
          const float a = plane_lookup(w, x.tables, t, r, j, g);
          const float b =
              ternary ? plane_lookup(w, x.tables, t, r, w.bits + j, g) : x.group_sums[g];
          acc += alpha[j * tile_rows + r] * (2 * a - b);
        }
      }
      y[(t - tile_begin) * tile_rows + r] = acc;
    }
}

// One vector at a time (the batch form of the kernel table).
void lut_rows(const cpu_weights& w, const table_input* x, int vectors, std::int64_t t0,
              std::int64_t t1, float* const* y) {
  for (int v = 0; v < vectors; ++v) lut_rows_one(w, x[v], t0, t1, y[v]);
}

void encode(const cpu_weights& w, const float* x, float minimum, float inv_step, int bits,
            std::uint32_t* planes, std::int32_t* group_levels) {
  const auto top = static_cast<float>((1 << bits) - 1);
  std::fill(planes, planes + bits * w.chunks, 0U);
  for (std::int64_t c = 0; c < w.cols; ++c) {
    const std::uint32_t q = encode_level(x[c], minimum, inv_step, top);
    for (int i = 0; i < bits; ++i)
      planes[i * w.chunks + c / chunk_cols] |= ((q >> i) & 1) << (c % 32);
  }
  group_levels_of(w, planes, bits, group_levels);
}

// Sum over the chunks of group g and the activation bits of 2^i popcount(plane AND t_i).
std::int64_t plane_count(const cpu_weights& w, const encoded_input& x, std::int64_t tile, int r,
                         int p, std::int64_t g) {
  std::int64_t sum = 0;
  for (std::int64_t c = group_begin(w, g) / chunk_cols; c * chunk_cols < group_end(w, g); ++c) {
    const std::uint32_t word = w.chunk_bits(tile, c)[p * tile_rows + r] & group_chunk_mask(w, g, c);
    for (int i = 0; i < x.bits; ++i)
      sum += static_cast<std::int64_t>(qsl::popcount(word & x.planes[i * w.chunks + c])) << i;
  }
  return sum;
}

void popcount_rows(const cpu_weights& w, const encoded_input& x, std::int64_t tile_begin,
                   std::int64_t tile_end, float* z) {
  const bool ternary = w.basis == qsl::basis::ternary;
  for (std::int64_t t = tile_begin; t < tile_end; ++t)
    for (int r = 0; r < tile_rows && t * tile_rows + r < w.rows; ++r) {
      float acc = 0;
      for (std::int64_t g = 0; g < w.groups; ++g) {
        const float* alpha = w.tile_coefficients(t, g);
        for (int j = 0; j < w.bits; ++j) {
          const std::int64_t a = plane_count(w, x, t, r, j, g);
          const std::int64_t b =
              ternary ? plane_count(w, x, t, r, w.bits + j, g) : x.group_levels[g];
          acc += alpha[j * tile_rows + r] * static_cast<float>(2 * a - b);
        }
      }
      z[(t - tile_begin) * tile_rows + r] = acc;
    }
}

#include "cpu/decode_rows.inc"  // NOLINT(bugprone-suspicious-include): per target

}  // namespace

const kernel_table& scalar_kernels() {
  static const kernel_table table{build_tables, lut_rows, encode, popcount_rows,
                                  decode_target_rows};
  return table;
}

}  // namespace qsl::detail::cpu
