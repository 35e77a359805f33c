#pragma once
// The scalar reference of the inner products (DESIGN.md §1): the oracle every fast kernel is
// tested against. Plain loops, no SIMD, no threads.
//
//   float activations (kx = 0):
//     y[n] = sum_g sum_j alpha[n,g,j] * (m[n,g,j] . x[g]) + b[n]
//   encoded activations (kx >= 1), with d[n,g,j,i] = m[n,g,j] . u[i] over group g (an exact
//   integer: |G| - 2 popcount(m XOR u), or the ternary form):
//     y[n] = (step / 2) * sum_g sum_j alpha[n,g,j] * I[n,g,j] + gamma * offset[n] + b[n],
//     I[n,g,j] = sum_i 2^i d[n,g,j,i]   (exact integer: sum_i beta_i u_i = (step/2) sum_i 2^i u_i)

#include <cstdint>
#include <vector>

#include "qsl/activation_code.hpp"
#include "qsl/bit_planes.hpp"
#include "qsl/weight_code.hpp"

namespace qsl::reference {

/// m[row, plane] . u[vector, act_plane] over the columns of `group`: an exact integer.
inline std::int64_t plane_dot(const weight_code& w, std::int64_t row, std::int64_t group,
                              int plane, const activation_code& x, std::int64_t vector,
                              int act_plane) {
  const std::int64_t b = w.group_begin(group), e = w.group_end(group);
  const word* u = x.plane(vector, act_plane);
  const word* mask = w.mask_plane(row, plane);
  return mask == nullptr ? binary_dot(w.sign_plane(row, plane), u, b, e)
                         : ternary_dot(w.sign_plane(row, plane), mask, u, b, e);
}

/// I[n,g,j] = sum_i 2^i (m[n,g,j] . u[i]): the whole integer part of one (row, group, plane).
inline std::int64_t weighted_plane_dot(const weight_code& w, std::int64_t row,
                                       std::int64_t group, int plane, const activation_code& x,
                                       std::int64_t vector) {
  std::int64_t sum = 0;
  for (int i = 0; i < x.bits; ++i)
    sum += plane_dot(w, row, group, plane, x, vector, i) * (std::int64_t{1} << i);
  return sum;
}

/// y (vectors x rows, row-major) from encoded activations. `bias` may be null.
template <class Scalar>
void forward_encoded(const weight_code& w, const activation_code& x, const float* bias,
                     Scalar* y) {
  for (std::int64_t v = 0; v < x.vectors; ++v) {
    const Scalar half_step = static_cast<Scalar>(x.step[v]) / 2;
    const Scalar gamma = static_cast<Scalar>(x.gamma(v));
    for (std::int64_t n = 0; n < w.rows; ++n) {
      Scalar acc = 0;
      for (std::int64_t g = 0; g < w.groups(); ++g)
        for (int j = 0; j < w.bits; ++j)
          acc += static_cast<Scalar>(w.coefficient(n, g, j)) *
                 static_cast<Scalar>(weighted_plane_dot(w, n, g, j, x, v));
      Scalar out = half_step * acc + gamma * static_cast<Scalar>(w.offsets[n]);
      if (bias != nullptr) out += static_cast<Scalar>(bias[n]);
      y[v * w.rows + n] = out;
    }
  }
}

/// y (vectors x rows, row-major) from float activations x (vectors x cols, row-major).
/// Per group and plane, m . x = 2 * (sum of x where m = +1) - (sum of x where m != 0): one pass
/// over the set bits of each word instead of a branch per column.
template <class Scalar>
void forward_float(const weight_code& w, const Scalar* x, std::int64_t vectors, const float* bias,
                   Scalar* y) {
  std::vector<Scalar> group_sums(static_cast<std::size_t>(w.groups()));
  // Sum of x over the set bits of plane[b, e).
  auto masked_sum = [](const word* plane, const Scalar* xv, std::int64_t b, std::int64_t e) {
    Scalar sum = 0;
    for (std::int64_t i = b / bits_per_word; i * bits_per_word < e; ++i)
      for (word bits = plane[i] & range_mask(i, b, e); bits != 0; bits &= bits - 1)
        sum += xv[i * bits_per_word + lowest_bit(bits)];
    return sum;
  };
  for (std::int64_t v = 0; v < vectors; ++v) {
    const Scalar* xv = x + v * w.cols;
    for (std::int64_t g = 0; g < w.groups(); ++g) {
      Scalar sum = 0;
      for (std::int64_t c = w.group_begin(g); c < w.group_end(g); ++c) sum += xv[c];
      group_sums[static_cast<std::size_t>(g)] = sum;
    }
    for (std::int64_t n = 0; n < w.rows; ++n) {
      Scalar acc = 0;
      for (std::int64_t g = 0; g < w.groups(); ++g)
        for (int j = 0; j < w.bits; ++j) {
          const std::int64_t b = w.group_begin(g), e = w.group_end(g);
          const word* mask = w.mask_plane(n, j);
          const Scalar positive = masked_sum(w.sign_plane(n, j), xv, b, e);
          const Scalar nonzero =
              mask == nullptr ? group_sums[static_cast<std::size_t>(g)] : masked_sum(mask, xv, b, e);
          acc += static_cast<Scalar>(w.coefficient(n, g, j)) * (2 * positive - nonzero);
        }
      if (bias != nullptr) acc += static_cast<Scalar>(bias[n]);
      y[v * w.rows + n] = acc;
    }
  }
}

}  // namespace qsl::reference
