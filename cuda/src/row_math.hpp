#pragma once
// The per-lane (per-row) math of the CUDA kernels, as QSL_HOST_DEVICE functions: the kernels
// call them on the device, and tests/cuda_row_math_test.cpp runs the same code on the host,
// lane by lane, against the scalar reference, so the arithmetic, the layout and the group
// handling are tested on machines without a GPU. What only a GPU can test is the glue around
// them (shared memory, synchronization, launch shapes, tensor cores).

#include <cmath>
#include <cstdint>

#include "layer_view.hpp"
#include "qsl/bit_planes.hpp"

namespace qsl::cuda::detail {

/// The encoding rule of qsl/activation_code.hpp, bit for bit: the multiply and the add are
/// rounded separately (no FMA contraction on the device), and NaN encodes as 0.
QSL_HOST_DEVICE inline std::uint32_t encode_level(float x, float minimum, float inv_step,
                                                  float top) {
#if defined(__CUDA_ARCH__)
  const float scaled = floorf(__fadd_rn(__fmul_rn(__fsub_rn(x, minimum), inv_step), 0.5f));
#else
  const float scaled = std::floor((x - minimum) * inv_step + 0.5f);
#endif
  return static_cast<std::uint32_t>(!(scaled > 0) ? 0.0f : scaled >= top ? top : scaled);
}

/// Bits of chunk `c` that belong to group g.
QSL_HOST_DEVICE inline std::uint32_t group_chunk_mask(const layer_view& w, std::int64_t g,
                                                      std::int64_t c) {
  const std::int64_t lo = c * chunk_cols;
  const std::int64_t b = w.group_begin(g) > lo ? w.group_begin(g) - lo : 0;
  const std::int64_t e = w.group_end(g) < lo + chunk_cols ? w.group_end(g) - lo : chunk_cols;
  if (e <= b) return 0;
  const std::uint32_t upper = e == chunk_cols ? ~0U : ((1U << e) - 1);
  return upper & ~((1U << b) - 1);
}

/// Float activations: acc[p] += T(s, nibble s of lookup plane p at this lane) for the nibbles
/// s in [s_begin, s_end). table(s, v) is the table entry: the sum of x[4s + i] over the bits i
/// of v (zero past the last column).
template <int P, class Table>
QSL_HOST_DEVICE void lookup_nibbles(const layer_view& w, std::int64_t tile, int lane,
                                    std::int64_t s_begin, std::int64_t s_end, const Table& table,
                                    float (&acc)[P]) {
  std::uint32_t word[P] = {};
  for (std::int64_t s = s_begin; s < s_end; ++s) {
    if (s == s_begin || s % 8 == 0)
      for (int p = 0; p < P; ++p) word[p] = w.word(tile, s / 8, p, lane) >> (4 * (s % 8));
    for (int p = 0; p < P; ++p) {
      acc[p] += table(s, word[p] & 15U);
      word[p] >>= 4;
    }
  }
}

/// The end of group g for float activations: sum_j alpha_j (2 A_j - B_j), B the group's sum of
/// x (binary) or the mask look-up (ternary).
template <int P, bool Ternary>
QSL_HOST_DEVICE float finish_float_group(const layer_view& w, std::int64_t tile, std::int64_t g,
                                         int lane, const float (&acc)[P], float group_sum) {
  constexpr int K = Ternary ? P / 2 : P;
  float out = 0;
  for (int j = 0; j < K; ++j) {
    const float other = Ternary ? acc[K + j] : group_sum;
    out += w.alpha(tile, g, j, lane) * (2 * acc[j] - other);
  }
  return out;
}

/// Encoded activations over the chunks of group g: acc[p] += sum_i 2^i popcount(m_p AND t_i),
/// act[i * chunks + c] the activation bit planes (zero past the last column).
template <int P>
QSL_HOST_DEVICE void count_group(const layer_view& w, std::int64_t tile, int lane, std::int64_t g,
                                 const std::uint32_t* act, int kx, std::int64_t (&acc)[P]) {
  const std::int64_t end = w.group_end(g);
  for (std::int64_t c = w.group_begin(g) / chunk_cols; c * chunk_cols < end; ++c) {
    const std::uint32_t mask = group_chunk_mask(w, g, c);
    for (int p = 0; p < P; ++p) {
      const std::uint32_t m = w.word(tile, c, p, lane) & mask;
      std::int64_t h = 0;  // Horner over the bits, from the top
      for (int i = kx - 1; i >= 0; --i) h = 2 * h + qsl::popcount(m & act[i * w.chunks + c]);
      acc[p] += h;
    }
  }
}

/// The end of group g for encoded activations: sum_j alpha_j (2 I_j - B_j), B the group's sum
/// of levels (binary) or the mask count (ternary).
template <int P, bool Ternary>
QSL_HOST_DEVICE float finish_encoded_group(const layer_view& w, std::int64_t tile, std::int64_t g,
                                           int lane, const std::int64_t (&acc)[P],
                                           std::int32_t group_levels) {
  constexpr int K = Ternary ? P / 2 : P;
  float out = 0;
  for (int j = 0; j < K; ++j) {
    const std::int64_t other = Ternary ? acc[K + j] : group_levels;
    out += w.alpha(tile, g, j, lane) * static_cast<float>(2 * acc[j] - other);
  }
  return out;
}

/// One reconstructed weight W_hat[row, col] (the GEMM kernel decodes tiles of these).
QSL_HOST_DEVICE inline float decode_weight(const layer_view& w, std::int64_t row,
                                           std::int64_t col) {
  const std::int64_t tile = row / warp_rows, c = col / chunk_cols, g = col / w.group_size;
  const int lane = static_cast<int>(row % warp_rows);
  const int bit = static_cast<int>(col % chunk_cols);
  float out = 0;
  for (int j = 0; j < w.bits; ++j) {
    const bool positive = (w.word(tile, c, j, lane) >> bit) & 1U;
    const bool nonzero = !w.ternary || ((w.word(tile, c, w.bits + j, lane) >> bit) & 1U);
    if (nonzero) out += positive ? w.alpha(tile, g, j, lane) : -w.alpha(tile, g, j, lane);
  }
  return out;
}

}  // namespace qsl::cuda::detail
