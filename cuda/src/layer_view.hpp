#pragma once
// The device weight layout (host side: packing, and a view the kernels and the host tests use).
//
// Rows in tiles of 32 (one warp, one row per lane), columns in 32-bit chunks. For every tile and
// chunk the lookup planes (k signs, then k masks for ternary) of the 32 rows lie side by side:
// words[tile][chunk][plane][32], so a warp reads one 128-byte line per plane. Coefficients
// [tile][group][k][32]. Offsets and bias per row. This header (the view) compiles on both
// sides and includes no Eigen; pack.hpp makes the arrays on the host.

#include <cstdint>

#include "qsl/config.hpp"

namespace qsl::cuda::detail {

inline constexpr int warp_rows = 32;
inline constexpr int chunk_cols = 32;
inline constexpr int max_bits = 8;  ///< k of any weight code (pack.hpp checks qsl::max_bits)
/// Most columns of a layer on the device: the walks count columns in 32-bit integers.
inline constexpr std::int64_t max_cols = std::int64_t{1} << 30;

/// Shapes and pointers of a packed layer (device or host memory).
struct layer_view {
  std::int64_t rows, cols, tiles, chunks, groups, group_size;
  int bits, planes;  ///< k, and lookup planes (k or 2k)
  bool ternary;
  const std::uint32_t* words;
  const float* coefficients;
  const float* offsets;
  const float* bias;  ///< may be null

  QSL_HOST_DEVICE const std::uint32_t* word_at(std::int64_t tile, std::int64_t chunk, int plane,
                                               int lane) const {
    return words + ((tile * chunks + chunk) * planes + plane) * warp_rows + lane;
  }
  QSL_HOST_DEVICE std::uint32_t word(std::int64_t tile, std::int64_t chunk, int plane,
                                     int lane) const {
    return *word_at(tile, chunk, plane, lane);
  }
  QSL_HOST_DEVICE float alpha(std::int64_t tile, std::int64_t group, int j, int lane) const {
    return coefficients[((tile * groups + group) * bits + j) * warp_rows + lane];
  }
  QSL_HOST_DEVICE std::int64_t group_begin(std::int64_t g) const { return g * group_size; }
  QSL_HOST_DEVICE std::int64_t group_end(std::int64_t g) const {
    return (g + 1) * group_size < cols ? (g + 1) * group_size : cols;
  }
};

}  // namespace qsl::cuda::detail
