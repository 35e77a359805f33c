#pragma once
// The int8 grid of a vector or a weight row (qsl/cpu.hpp's 8-bit definition), shared by the
// 8-bit products and the convolutions that quantize their patches straight from the image.
#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace qsl::detail {

/// The grid of values whose largest magnitude is `largest`: scale = largest / 127, values are
/// multiplied by 1 / scale. A grid too fine for float (largest below ~1e-36, where 1 / scale
/// overflows) counts as all zero: scale 0.
inline float grid_scale(float largest) {
  const float scale = largest / 127.0f;
  return scale > 0.0f && std::isfinite(1.0f / scale) ? scale : 0.0f;
}

inline float grid_inverse(float scale) { return scale > 0.0f ? 1.0f / scale : 0.0f; }

/// q[c] = rint(clamp(values[c] * inverse, -127, 127)) (ties to even, the default rounding
/// mode) for c < count, stored as q (int8) or q + 128 (`Excess`: the unsigned operand of u8 x s8
/// GEMMs); `inverse` is inverse[0] for every value, or inverse[c] per value (`PerValue`: each
/// value on its own vector's grid, a convolution's transposed patches). On x86 16 values at a
/// time with SSE2, which every x86-64 CPU has (cvtps2dq rounds as nearbyint does; the compiler
/// does not vectorize the scalar loop, whose nearbyint is a library call per value). The one
/// rounding rule every 8-bit path shares, so that their bytes agree.
template <bool Excess, bool PerValue, class Byte>
inline void to_grid_bytes(const float* values, std::int64_t count, const float* inverse, Byte* q) {
  std::int64_t c = 0;
#if defined(__SSE2__)
  const __m128 lo = _mm_set1_ps(-127.0f), hi = _mm_set1_ps(127.0f), one = _mm_set1_ps(inverse[0]);
  const __m128i excess = _mm_set1_epi8(static_cast<char>(0x80));
  auto grid4 = [&](std::int64_t at) {
    const __m128 scale = PerValue ? _mm_loadu_ps(inverse + at) : one;
    const __m128 v = _mm_mul_ps(_mm_loadu_ps(values + at), scale);
    return _mm_cvtps_epi32(_mm_min_ps(_mm_max_ps(v, lo), hi));
  };
  for (; c + 16 <= count; c += 16) {
    __m128i bytes = _mm_packs_epi16(_mm_packs_epi32(grid4(c), grid4(c + 4)),
                                    _mm_packs_epi32(grid4(c + 8), grid4(c + 12)));
    if (Excess) bytes = _mm_xor_si128(bytes, excess);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + c), bytes);
  }
#endif
  for (; c < count; ++c) {
    const float v = std::min(127.0f, std::max(-127.0f, values[c] * inverse[PerValue ? c : 0]));
    const auto r = static_cast<std::int32_t>(std::nearbyint(v));
    q[c] = static_cast<Byte>(Excess ? r + 128 : r);
  }
}

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
