#pragma once
// The packed bit-plane layout: one definition for every backend.
//
// A plane holds one bit per column of a row (or of an activation vector):
//   * column c lives in word c / 64, bit c % 64 (bit 0 is the least significant);
//   * a row of `cols` columns takes words_for(cols) = ceil(cols / 64) 64-bit words;
//   * bit value 1 means +1 and 0 means -1 (binary planes), or "nonzero" (ternary masks);
//   * padding rule: every bit at a column >= cols is 0, in weight planes, ternary masks and
//     activation planes alike. With both operands zero-padded the XOR and AND forms below
//     need no tail masking when a range ends at the last column.
// A ternary plane is a sign plane plus a nonzero mask: value = mask ? (sign ? +1 : -1) : 0.
// A ternary sign bit under a zero mask bit is 0 (canonical form), so equal codes are equal bits.
//
// The per-word functions are QSL_HOST_DEVICE so that the scalar reference, the SIMD kernels and
// the CUDA kernels share one definition of the integer math.

#include <cstdint>

#include "qsl/config.hpp"

namespace qsl {

using word = std::uint64_t;
inline constexpr int bits_per_word = 64;

/// Number of 64-bit words that hold `cols` bits.
QSL_HOST_DEVICE constexpr std::int64_t words_for(std::int64_t cols) {
  return (cols + bits_per_word - 1) / bits_per_word;
}

QSL_HOST_DEVICE inline int popcount(word w) {
#if defined(__CUDA_ARCH__)
  return __popcll(w);
#elif defined(__GNUC__) || defined(__clang__)
  return __builtin_popcountll(w);
#else
  // Portable fallback (SWAR), exact for every input.
  w = w - ((w >> 1) & 0x5555555555555555ULL);
  w = (w & 0x3333333333333333ULL) + ((w >> 2) & 0x3333333333333333ULL);
  w = (w + (w >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return static_cast<int>((w * 0x0101010101010101ULL) >> 56);
#endif
}

/// Index of the lowest set bit of a nonzero word.
QSL_HOST_DEVICE inline int lowest_bit(word w) {
#if defined(__CUDA_ARCH__)
  return __ffsll(static_cast<long long>(w)) - 1;
#elif defined(__GNUC__) || defined(__clang__)
  return __builtin_ctzll(w);
#else
  int i = 0;
  while (!((w >> i) & 1)) ++i;
  return i;
#endif
}

/// Bit `col` of a plane: true means +1 (sign planes) or nonzero (masks).
QSL_HOST_DEVICE inline bool get_bit(const word* plane, std::int64_t col) {
  return (plane[col / bits_per_word] >> (col % bits_per_word)) & 1U;
}

QSL_HOST_DEVICE inline void set_bit(word* plane, std::int64_t col) {
  plane[col / bits_per_word] |= word{1} << (col % bits_per_word);
}

/// Mask of the bits of word `word_index` that fall in columns [begin, end).
QSL_HOST_DEVICE inline word range_mask(std::int64_t word_index, std::int64_t begin,
                                       std::int64_t end) {
  const std::int64_t lo = word_index * bits_per_word;
  const std::int64_t first = begin > lo ? begin - lo : 0;
  const std::int64_t last = end < lo + bits_per_word ? end - lo : bits_per_word;  // exclusive
  if (last <= first) return 0;
  const word upper = last == bits_per_word ? ~word{0} : ((word{1} << last) - 1);
  return upper & ~((word{1} << first) - 1);
}

// ---- per-word inner products (exact integers) ------------------------------------------

/// Binary x binary over the columns selected by `valid`: sum of m_i * u_i with m, u in {-1,+1}.
QSL_HOST_DEVICE inline int binary_dot_word(word m, word u, word valid) {
  return popcount(valid) - 2 * popcount((m ^ u) & valid);
}

/// Ternary x binary: sum of t_i * u_i with t = (sign, nonzero) in {-1,0,+1}, u in {-1,+1}.
QSL_HOST_DEVICE inline int ternary_dot_word(word sign, word nonzero, word u, word valid) {
  const word z = nonzero & valid;
  return popcount(z) - 2 * popcount((sign ^ u) & z);
}

/// Binary x {0,1}: sum of m_i * t_i with m in {-1,+1}, t in {0,1} (the AND form).
QSL_HOST_DEVICE inline int binary_dot01_word(word m, word t, word valid) {
  const word active = t & valid;
  return 2 * popcount(m & active) - popcount(active);
}

// ---- range inner products over columns [begin, end) -------------------------------------

/// Sum over columns [begin, end) of m_i * u_i, both binary planes.
QSL_HOST_DEVICE inline std::int64_t binary_dot(const word* m, const word* u, std::int64_t begin,
                                               std::int64_t end) {
  std::int64_t sum = 0;
  for (std::int64_t w = begin / bits_per_word; w * bits_per_word < end; ++w)
    sum += binary_dot_word(m[w], u[w], range_mask(w, begin, end));
  return sum;
}

/// Sum over columns [begin, end) of t_i * u_i, t ternary (sign plane + mask), u binary.
QSL_HOST_DEVICE inline std::int64_t ternary_dot(const word* sign, const word* nonzero,
                                                const word* u, std::int64_t begin,
                                                std::int64_t end) {
  std::int64_t sum = 0;
  for (std::int64_t w = begin / bits_per_word; w * bits_per_word < end; ++w)
    sum += ternary_dot_word(sign[w], nonzero[w], u[w], range_mask(w, begin, end));
  return sum;
}

/// Number of set bits in columns [begin, end) of a plane.
QSL_HOST_DEVICE inline std::int64_t count_bits(const word* plane, std::int64_t begin,
                                               std::int64_t end) {
  std::int64_t sum = 0;
  for (std::int64_t w = begin / bits_per_word; w * bits_per_word < end; ++w)
    sum += popcount(plane[w] & range_mask(w, begin, end));
  return sum;
}

}  // namespace qsl
