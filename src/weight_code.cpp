#include "qsl/weight_code.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "qsl/error.hpp"

namespace qsl {
namespace {

// Caps keep every index product inside 64 bits and refuse sizes no layer has.
constexpr std::int64_t max_dimension = std::int64_t{1} << 31;   // rows or cols
constexpr std::int64_t max_weights = std::int64_t{1} << 38;     // rows * cols

std::string str(std::int64_t v) { return std::to_string(v); }

// Sum of the basis values of one plane over columns [b, e).
std::int64_t plane_sum(const weight_code& code, std::int64_t row, int plane, std::int64_t b,
                       std::int64_t e) {
  const word* mask = code.mask_plane(row, plane);
  const std::int64_t positive = count_bits(code.sign_plane(row, plane), b, e);
  const std::int64_t nonzero = mask == nullptr ? e - b : count_bits(mask, b, e);
  return 2 * positive - nonzero;  // canonical form: no sign bit under a zero mask bit
}

std::vector<float> offsets_of(const weight_code& code) {
  std::vector<float> out(static_cast<std::size_t>(code.rows));
  for (std::int64_t n = 0; n < code.rows; ++n) {
    double sum = 0;
    for (std::int64_t g = 0; g < code.groups(); ++g)
      for (int j = 0; j < code.bits; ++j)
        sum += double{code.coefficient(n, g, j)} *
               static_cast<double>(plane_sum(code, n, j, code.group_begin(g), code.group_end(g)));
    out[n] = static_cast<float>(sum);
  }
  return out;
}

}  // namespace

std::int64_t check_shape(std::int64_t rows, std::int64_t cols, int bits, qsl::basis basis,
                         std::int64_t group_size, const char* what) {
  const std::string where = std::string(what) + ": ";
  detail::require(rows >= 1 && rows < max_dimension,
                  where + "rows is " + str(rows) + "; expected 1.." + str(max_dimension - 1));
  detail::require(cols >= 1 && cols < max_dimension,
                  where + "cols is " + str(cols) + "; expected 1.." + str(max_dimension - 1));
  detail::require(rows * cols <= max_weights, where + "rows * cols is " + str(rows * cols) +
                                                  "; expected at most " + str(max_weights));
  detail::require(bits >= 1 && bits <= max_bits,
                  where + "bits is " + str(bits) + "; expected 1.." + str(max_bits));
  detail::require(basis == qsl::basis::binary || basis == qsl::basis::ternary,
                  where + "basis is " + str(static_cast<int>(basis)) +
                      "; expected 0 (binary) or 1 (ternary)");
  detail::require(group_size == 0 || (group_size >= 8 && group_size % 8 == 0),
                  where + "group size is " + str(group_size) +
                      "; expected 0 (one group per row) or a positive multiple of 8");
  return group_size == 0 || group_size > cols ? cols : group_size;
}

weight_code make_weight_code(std::int64_t rows, std::int64_t cols, int bits, qsl::basis basis,
                             std::int64_t group_size) {
  weight_code code;
  code.group_size = check_shape(rows, cols, bits, basis, group_size);
  code.rows = rows;
  code.cols = cols;
  code.bits = bits;
  code.basis = basis;
  const auto plane_words = static_cast<std::size_t>(rows * bits * code.words_per_plane());
  code.signs.assign(plane_words, 0);
  if (basis == qsl::basis::ternary) code.masks.assign(plane_words, 0);
  code.coefficients.assign(static_cast<std::size_t>(rows * code.groups() * bits), 0.0f);
  code.offsets.assign(static_cast<std::size_t>(rows), 0.0f);
  return code;
}

void compute_offsets(weight_code& code) { code.offsets = offsets_of(code); }

void validate(const weight_code& code, const char* what) {
  const std::string where = std::string(what) + ": ";
  // Shape first, with the same rules as make_weight_code.
  // The stored group size is resolved: the column count (one group per row) or a multiple
  // of 8 below it.
  detail::require(code.group_size == code.cols ||
                      (code.group_size >= 8 && code.group_size % 8 == 0 &&
                       code.group_size < code.cols),
                  where + "group size is " + str(code.group_size) + " for " + str(code.cols) +
                      " columns; expected the column count or a multiple of 8 below it");
  check_shape(code.rows, code.cols, code.bits, code.basis,
              code.group_size == code.cols ? 0 : code.group_size, what);
  const auto plane_words = static_cast<std::size_t>(code.rows * code.bits * code.words_per_plane());
  detail::require(code.signs.size() == plane_words,
                  where + "sign planes hold " + str(static_cast<std::int64_t>(code.signs.size())) +
                      " words; expected " + str(static_cast<std::int64_t>(plane_words)));
  const std::size_t mask_words = code.basis == qsl::basis::ternary ? plane_words : 0;
  detail::require(code.masks.size() == mask_words,
                  where + "masks hold " + str(static_cast<std::int64_t>(code.masks.size())) +
                      " words; expected " + str(static_cast<std::int64_t>(mask_words)));
  const auto coefficient_count = static_cast<std::size_t>(code.rows * code.groups() * code.bits);
  detail::require(code.coefficients.size() == coefficient_count,
                  where + "holds " + str(static_cast<std::int64_t>(code.coefficients.size())) +
                      " coefficients; expected " + str(static_cast<std::int64_t>(coefficient_count)));
  detail::require(code.offsets.size() == static_cast<std::size_t>(code.rows),
                  where + "holds " + str(static_cast<std::int64_t>(code.offsets.size())) +
                      " offsets; expected " + str(code.rows));

  // Padding bits and canonical ternary signs.
  const std::int64_t words = code.words_per_plane();
  const word tail = range_mask(words - 1, 0, code.cols);
  for (std::int64_t n = 0; n < code.rows; ++n)
    for (int j = 0; j < code.bits; ++j) {
      const word* sign = code.sign_plane(n, j);
      const word* mask = code.mask_plane(n, j);
      // (Messages are built only on failure: these loops run over every row at load.)
      if ((sign[words - 1] & ~tail) != 0 || (mask != nullptr && (mask[words - 1] & ~tail) != 0))
        throw error(where + "row " + str(n) + " plane " + str(j) +
                    " has padding bits set past column " + str(code.cols - 1));
      if (mask != nullptr)
        for (std::int64_t w = 0; w < words; ++w)
          if ((sign[w] & ~mask[w]) != 0)
            throw error(where + "row " + str(n) + " plane " + str(j) +
                        " has a sign bit under a zero mask bit in word " + str(w));
    }
  for (std::size_t i = 0; i < code.coefficients.size(); ++i)
    if (!std::isfinite(code.coefficients[i]))
      throw error(where + "coefficient " + str(static_cast<std::int64_t>(i)) + " is " +
                  std::to_string(code.coefficients[i]) + "; expected a finite value");
  const std::vector<float> expected = offsets_of(code);
  for (std::int64_t n = 0; n < code.rows; ++n)
    if (code.offsets[n] != expected[n])
      throw error(where + "offset of row " + str(n) + " is " + std::to_string(code.offsets[n]) +
                  "; expected " + std::to_string(expected[n]) +
                  " from the planes and coefficients");
}

std::vector<std::uint8_t> plane_bytes(const weight_code& code, bool masks) {
  const std::int64_t bytes = (code.cols + 7) / 8;
  std::vector<std::uint8_t> out(static_cast<std::size_t>(code.rows * code.bits * bytes), 0);
  if (masks && code.masks.empty()) return out;
  for (std::int64_t n = 0; n < code.rows; ++n)
    for (int j = 0; j < code.bits; ++j) {
      const word* plane = masks ? code.mask_plane(n, j) : code.sign_plane(n, j);
      std::uint8_t* dst = out.data() + (n * code.bits + j) * bytes;
      for (std::int64_t b = 0; b < bytes; ++b)
        dst[b] = static_cast<std::uint8_t>(plane[b / 8] >> (8 * (b % 8)));
    }
  return out;
}

void read_plane_bytes(weight_code& code, bool masks, const std::uint8_t* bytes,
                      const char* what) {
  const std::int64_t per_plane = (code.cols + 7) / 8;
  detail::require(!masks || !code.masks.empty(),
                  std::string(what) + ": a binary code has no masks to read");
  for (std::int64_t n = 0; n < code.rows; ++n)
    for (int j = 0; j < code.bits; ++j) {
      word* plane = masks ? code.mask_plane(n, j) : code.sign_plane(n, j);
      std::fill(plane, plane + code.words_per_plane(), word{0});
      const std::uint8_t* src = bytes + (n * code.bits + j) * per_plane;
      for (std::int64_t b = 0; b < per_plane; ++b) plane[b / 8] |= word{src[b]} << (8 * (b % 8));
      const std::int64_t last = code.words_per_plane() - 1;
      if ((plane[last] & ~range_mask(last, 0, code.cols)) != 0)
        throw error(std::string(what) + ": row " + str(n) + " " + (masks ? "mask" : "sign") +
                    " plane " + std::to_string(j) + " has bits set past column " +
                    str(code.cols - 1));
    }
}

void reconstruct_row(const weight_code& code, std::int64_t row, float* out) {
  detail::require(row >= 0 && row < code.rows, "reconstruct_row: row " + str(row) +
                                                   " is outside 0.." + str(code.rows - 1));
  std::fill(out, out + code.cols, 0.0f);
  for (std::int64_t g = 0; g < code.groups(); ++g)
    for (int j = 0; j < code.bits; ++j) {
      const float alpha = code.coefficient(row, g, j);
      const word* signs = code.sign_plane(row, j);
      const word* mask = code.mask_plane(row, j);
      for (std::int64_t c = code.group_begin(g); c < code.group_end(g); ++c) {
        if (mask != nullptr && !get_bit(mask, c)) continue;  // adds 0: out[c] is unchanged
        out[c] += get_bit(signs, c) ? alpha : -alpha;
      }
    }
}

void reconstruct(const weight_code& code, Eigen::Ref<Eigen::MatrixXf> out) {
  detail::require_output_shape("reconstruct", out.rows(), out.cols(), code.rows, code.cols);
  Eigen::Matrix<float, 1, Eigen::Dynamic> row(code.cols);
  for (std::int64_t n = 0; n < code.rows; ++n) {
    reconstruct_row(code, n, row.data());
    out.row(n) = row;
  }
}

}  // namespace qsl
