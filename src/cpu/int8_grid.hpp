#pragma once
// The int8 grid of a vector or a weight row (qsl/cpu.hpp's 8-bit definition), shared by the
// 8-bit products and the convolutions that quantize their patches straight from the image.
#include <cmath>
#include <cstdint>

namespace qsl::detail {

/// The grid of values whose largest magnitude is `largest`: scale = largest / 127, values are
/// multiplied by 1 / scale. A grid too fine for float (largest below ~1e-36, where 1 / scale
/// overflows) counts as all zero: scale 0.
inline float grid_scale(float largest) {
  const float scale = largest / 127.0f;
  return scale > 0.0f && std::isfinite(1.0f / scale) ? scale : 0.0f;
}

inline float grid_inverse(float scale) { return scale > 0.0f ? 1.0f / scale : 0.0f; }

/// Vectors per task of the steps before an 8-bit product (grids, sums, layouts) for vectors of
/// `cols` values: at least 16K values a task, so that a call of a few short vectors (an LSTM's
/// 40 steps) stays on its thread instead of waiting for another; a power of two from 16 to 256,
/// so tasks never straddle a block of 16 vectors or a chunk of 256.
inline std::int64_t int8_vectors_per_task(std::int64_t cols) {
  std::int64_t vectors = 16;
  while (vectors < 256 && vectors * cols < (std::int64_t{1} << 14)) vectors *= 2;
  return vectors;
}

}  // namespace qsl::detail
