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

/// sums[g] = sum of x over group g (the B of binary planes in the look-up kernels).
inline void group_sums_of(const cpu_weights& w, const float* x, float* sums) {
  for (std::int64_t g = 0; g < w.groups; ++g) {
    float sum = 0;
    for (std::int64_t c = group_begin(w, g); c < group_end(w, g); ++c) sum += x[c];
    sums[g] = sum;
  }
}

/// levels[g] = sum of the levels q over group g (the encoded kernels' B of binary planes), for
/// encoders that keep q as numbers (int32, uint32 or bytes).
template <class Level>
inline void group_levels_from(const cpu_weights& w, const Level* q, std::int32_t* levels) {
  for (std::int64_t g = 0; g < w.groups; ++g) {
    std::int32_t sum = 0;
    for (std::int64_t c = group_begin(w, g); c < group_end(w, g); ++c)
      sum += static_cast<std::int32_t>(q[c]);
    levels[g] = sum;
  }
}

/// The tables in plain C++, entries summed in the order x0 + x1 + x2 + x3 (the order every
/// target keeps, so that targets differ from each other only where they must).
inline void portable_tables(const cpu_weights& w, const float* x, float* tables) {
  const std::int64_t count = nibbles(w);
  for (std::int64_t s = 0; s < count; ++s) {
    float v[4];
    for (int i = 0; i < 4; ++i) v[i] = 4 * s + i < w.cols ? x[4 * s + i] : 0.0f;
    float* t = tables + s * table_entries;
    for (int b = 0; b < table_entries; ++b) {
      float sum = 0;
      for (int i = 0; i < 4; ++i)
        if ((b >> i) & 1) sum += v[i];
      t[b] = sum;
    }
  }
}

/// levels[g] = sum of q over group g, from the encoded planes ([bit][chunk]).
inline void group_levels_of(const cpu_weights& w, const std::uint32_t* planes, int bits,
                            std::int32_t* levels) {
  for (std::int64_t g = 0; g < w.groups; ++g) {
    std::int32_t sum = 0;
    for (int i = 0; i < bits; ++i)
      for (std::int64_t c = group_begin(w, g) / chunk_cols; c * chunk_cols < group_end(w, g); ++c)
        sum += qsl::popcount(planes[i * w.chunks + c] & group_chunk_mask(w, g, c)) << i;
    levels[g] = sum;
  }
}

/// Kernel-table entries for targets that compute one 16-row tile of one vector at a time:
/// Tiles<P, Ternary> provides static lut(w, x, t, y) and popcount(w, x, t, z) for tile t.
/// (Instantiated outside the target region: it only calls the target's functions.)
template <template <int, bool> class Tiles>
struct tile_at_a_time {
  template <int P, bool Ternary>
  struct lut_call {
    static void run(const cpu_weights& w, const table_input& x, std::int64_t t0, std::int64_t t1,
                    float* y) {
      for (std::int64_t t = t0; t < t1; ++t)
        Tiles<P, Ternary>::lut(w, x, t, y + (t - t0) * tile_rows);
    }
  };
  template <int P, bool Ternary>
  struct popcount_call {
    static void run(const cpu_weights& w, const encoded_input& x, std::int64_t t0, std::int64_t t1,
                    float* z) {
      for (std::int64_t t = t0; t < t1; ++t)
        Tiles<P, Ternary>::popcount(w, x, t, z + (t - t0) * tile_rows);
    }
  };
  static void lut_rows(const cpu_weights& w, const table_input* x, int vectors, std::int64_t t0,
                       std::int64_t t1, float* const* y) {
    for (int v = 0; v < vectors; ++v) by_planes<lut_call>(w, x[v], t0, t1, y[v]);
  }
  static void popcount_rows(const cpu_weights& w, const encoded_input& x, std::int64_t t0,
                            std::int64_t t1, float* z) {
    by_planes<popcount_call>(w, x, t0, t1, z);
  }
};

}  // namespace qsl::detail::cpu
