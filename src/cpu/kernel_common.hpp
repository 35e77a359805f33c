#pragma once
// Pieces every target's kernels share: group boundaries in nibbles and chunks, the column mask
// of a group inside a chunk, and the scalar encoding of one value. Header-only so that each
// target's translation unit inlines them with its own flags.

#include <cmath>
#include <cstdint>
#include <utility>

#include "cpu/kernels.hpp"
#include "qsl/bit_planes.hpp"

namespace qsl::detail::cpu {

inline std::int64_t group_begin(const cpu_weights& w, std::int64_t g) { return g * w.group_size; }
inline std::int64_t group_end(const cpu_weights& w, std::int64_t g) {
  const std::int64_t e = (g + 1) * w.group_size;
  return e < w.cols ? e : w.cols;
}
/// Nibbles [first, last) of group g. Groups start on a byte (a multiple of 8 columns), so the
/// first nibble is exact; the last one may hold zero padding past the final column.
inline std::int64_t first_nibble(const cpu_weights& w, std::int64_t g) {
  return group_begin(w, g) / 4;
}
inline std::int64_t last_nibble(const cpu_weights& w, std::int64_t g) {
  return (group_end(w, g) + 3) / 4;
}
/// Bits of chunk `c` that belong to group g.
inline std::uint32_t group_chunk_mask(const cpu_weights& w, std::int64_t g, std::int64_t c) {
  const std::int64_t lo = c * chunk_cols;
  const std::int64_t b = group_begin(w, g) > lo ? group_begin(w, g) - lo : 0;
  const std::int64_t e = group_end(w, g) < lo + chunk_cols ? group_end(w, g) - lo : chunk_cols;
  if (e <= b) return 0;
  const std::uint32_t upper = e == chunk_cols ? ~0U : ((1U << e) - 1);
  return upper & ~((1U << b) - 1);
}

/// The encoding rule of qsl/activation_code.hpp for one value. qsl compiles with
/// -ffp-contract=off, so the multiply and the add round separately on every target.
/// NaN (inf * 0 when the step is 0) encodes as 0, like the SIMD max(scaled, 0).
inline std::uint32_t encode_level(float x, float minimum, float inv_step, float top) {
  const float scaled = std::floor((x - minimum) * inv_step + 0.5f);
  return static_cast<std::uint32_t>(!(scaled > 0) ? 0.0f : scaled >= top ? top : scaled);
}

// Calls F<planes, ternary>::run for the code's k, so that the plane loops have a fixed count.
template <template <int, bool> class F, class... Args>
void by_planes(const cpu_weights& w, Args&&... args) {
  const bool ternary = w.basis == qsl::basis::ternary;
  switch (w.bits) {
#define QSL_CASE(k)                                        \
  case k:                                                  \
    if (ternary)                                           \
      F<2 * k, true>::run(w, std::forward<Args>(args)...); \
    else                                                   \
      F<k, false>::run(w, std::forward<Args>(args)...);    \
    return;
    QSL_CASE(1)
    QSL_CASE(2)
    QSL_CASE(3)
    QSL_CASE(4)
    QSL_CASE(5)
    QSL_CASE(6)
    QSL_CASE(7)
    QSL_CASE(8)
#undef QSL_CASE
  }
}

}  // namespace qsl::detail::cpu
