#include "decompose/code_writer.hpp"

#include <algorithm>
#include <numeric>

namespace qsl::detail {

void write_group(weight_code& code, std::int64_t row, std::int64_t group, const group_result& r) {
  const bool ternary = code.basis == qsl::basis::ternary;
  const std::int64_t begin = code.group_begin(group), end = code.group_end(group);
  // Binary codes are the sign bits themselves (bit j of the code is plane j); ternary codes
  // are base-3 digits (0: -1, 1: zero, 2: +1).
  for (int j = 0; j < code.bits; ++j) {
    word* sign = code.sign_plane(row, j);
    word* mask = code.mask_plane(row, j);
    std::int32_t place = 1;
    for (int i = 0; i < j; ++i) place *= 3;
    for (std::int64_t c = begin; c < end; ++c) {
      const std::int32_t value = r.codes[static_cast<std::size_t>(c - begin)];
      const word bit = word{1} << (c % bits_per_word);
      if (!ternary) {
        if ((value >> j) & 1) sign[c / bits_per_word] |= bit;
      } else {
        const int digit = (value / place) % 3;
        if (digit != 1) mask[c / bits_per_word] |= bit;
        if (digit == 2) sign[c / bits_per_word] |= bit;
      }
    }
  }
  for (int j = 0; j < code.bits; ++j)
    code.coefficient(row, group, j) = static_cast<float>(r.alpha[j]);
}

void normalize_group(weight_code& code, std::int64_t row, std::int64_t group) {
  const std::int64_t begin = code.group_begin(group), end = code.group_end(group);
  const std::int64_t first_word = begin / bits_per_word, last_word = (end - 1) / bits_per_word;
  const int k = code.bits;
  for (int j = 0; j < k; ++j) {
    float& alpha = code.coefficient(row, group, j);
    if (!(alpha < 0)) continue;
    alpha = -alpha;
    word* sign = code.sign_plane(row, j);
    const word* mask = code.mask_plane(row, j);
    for (std::int64_t w = first_word; w <= last_word; ++w)
      sign[w] ^= range_mask(w, begin, end) & (mask == nullptr ? ~word{0} : mask[w]);
  }
  int perm[max_bits];
  std::iota(perm, perm + k, 0);
  std::stable_sort(perm, perm + k, [&](int a, int b) {
    return code.coefficient(row, group, a) > code.coefficient(row, group, b);
  });
  if (std::is_sorted(perm, perm + k)) return;
  float alpha[max_bits];
  for (int j = 0; j < k; ++j) alpha[j] = code.coefficient(row, group, perm[j]);
  for (int j = 0; j < k; ++j) code.coefficient(row, group, j) = alpha[j];
  word old_sign[max_bits], old_mask[max_bits];
  for (std::int64_t w = first_word; w <= last_word; ++w) {
    const word m = range_mask(w, begin, end);
    for (int j = 0; j < k; ++j) {
      old_sign[j] = code.sign_plane(row, j)[w];
      if (code.mask_plane(row, j) != nullptr) old_mask[j] = code.mask_plane(row, j)[w];
    }
    for (int j = 0; j < k; ++j) {
      word& s = code.sign_plane(row, j)[w];
      s = (s & ~m) | (old_sign[perm[j]] & m);
      if (word* mask = code.mask_plane(row, j)) mask[w] = (mask[w] & ~m) | (old_mask[perm[j]] & m);
    }
  }
}

}  // namespace qsl::detail
