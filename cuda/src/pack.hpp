#pragma once
// Host side of the device layout (layer_view.hpp): packing a weight code into it.

#include <string>
#include <vector>

#include "layer_view.hpp"
#include "qsl/error.hpp"
#include "qsl/weight_code.hpp"

namespace qsl::cuda::detail {

static_assert(qsl::max_bits <= max_bits, "the kernels are instantiated for up to max_bits planes");

/// The packed arrays on the host.
struct packed_layer {
  std::int64_t rows = 0, cols = 0, tiles = 0, chunks = 0, groups = 0, group_size = 0;
  int bits = 0, planes = 0;
  bool ternary = false;
  std::vector<std::uint32_t> words;
  std::vector<float> coefficients, offsets, bias;

  layer_view view() const {
    return {rows,  cols,    tiles,        chunks,          groups,
            group_size, bits, planes, ternary, words.data(), coefficients.data(),
            offsets.data(), bias.empty() ? nullptr : bias.data()};
  }
};

inline packed_layer pack(const weight_code& code, const std::vector<float>& bias) {
  qsl::detail::require(code.cols <= max_cols,
                       "qsl::cuda: the layer has " + std::to_string(code.cols) +
                           " input features; the CUDA kernels take at most " +
                           std::to_string(max_cols));
  packed_layer p;
  p.rows = code.rows;
  p.cols = code.cols;
  p.bits = code.bits;
  p.ternary = code.basis == qsl::basis::ternary;
  p.planes = p.ternary ? 2 * code.bits : code.bits;
  p.group_size = code.group_size;
  p.groups = code.groups();
  p.tiles = (code.rows + warp_rows - 1) / warp_rows;
  p.chunks = (code.cols + chunk_cols - 1) / chunk_cols;
  p.words.assign(static_cast<std::size_t>(p.tiles * p.chunks * p.planes * warp_rows), 0U);
  p.coefficients.assign(static_cast<std::size_t>(p.tiles * p.groups * p.bits * warp_rows), 0.0f);
  p.offsets = code.offsets;
  p.bias = bias;
  for (std::int64_t n = 0; n < code.rows; ++n) {
    const std::int64_t tile = n / warp_rows;
    const std::int64_t lane = n % warp_rows;
    for (int q = 0; q < p.planes; ++q) {
      const word* plane = q < code.bits ? code.sign_plane(n, q) : code.mask_plane(n, q - code.bits);
      for (std::int64_t c = 0; c < p.chunks; ++c)
        p.words[static_cast<std::size_t>(((tile * p.chunks + c) * p.planes + q) * warp_rows +
                                         lane)] =
            static_cast<std::uint32_t>(plane[c / 2] >> (32 * (c % 2)));
    }
    for (std::int64_t g = 0; g < p.groups; ++g)
      for (int j = 0; j < p.bits; ++j)
        p.coefficients[static_cast<std::size_t>(((tile * p.groups + g) * p.bits + j) * warp_rows +
                                                lane)] = code.coefficient(n, g, j);
  }
  return p;
}

}  // namespace qsl::cuda::detail
