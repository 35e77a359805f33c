#pragma once
// The int8 grid of a vector or a weight row (qsl/cpu.hpp's 8-bit definition), shared by the
// 8-bit products and the convolutions that quantize their patches straight from the image.
#include <cmath>

namespace qsl::detail {

/// The grid of values whose largest magnitude is `largest`: scale = largest / 127, values are
/// multiplied by 1 / scale. A grid too fine for float (largest below ~1e-36, where 1 / scale
/// overflows) counts as all zero: scale 0.
inline float grid_scale(float largest) {
  const float scale = largest / 127.0f;
  return scale > 0.0f && std::isfinite(1.0f / scale) ? scale : 0.0f;
}

inline float grid_inverse(float scale) { return scale > 0.0f ? 1.0f / scale : 0.0f; }

}  // namespace qsl::detail
