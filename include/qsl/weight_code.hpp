#pragma once
// qsl::weight_code: a weight matrix W (rows x cols, outputs x inputs) stored as k bit planes
// per row and real coefficients per (row, group, plane):
//
//     W[n, c] ~ sum_j alpha[n, g(c), j] * m[n, j, c],   m in {-1,+1} (binary) or {-1,0,+1}
//
// Columns are cut into groups of `group_size` columns; the last group of a row may be shorter.
// Planes follow the layout of qsl/bit_planes.hpp. Decompositions made by qsl::decompose keep
// alpha >= 0 and order the planes of each group by decreasing alpha.

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "qsl/bit_planes.hpp"
#include "qsl/config.hpp"

namespace qsl {

/// The set each basis vector is drawn from.
enum class basis : std::uint8_t {
  binary = 0,   ///< {-1, +1}: one sign plane per basis vector
  ternary = 1,  ///< {-1, 0, +1}: a sign plane and a nonzero mask per basis vector
};

inline constexpr int max_bits = 8;  ///< most planes (basis vectors) per weight

struct weight_code {
  std::int64_t rows = 0;        ///< N: outputs
  std::int64_t cols = 0;        ///< D: inputs
  int bits = 0;                 ///< k: planes per row, 1..max_bits
  qsl::basis basis = qsl::basis::binary;
  std::int64_t group_size = 0;  ///< G: columns per group (the last group may be shorter)

  std::vector<word> signs;         ///< [row][plane][word]: bit 1 means +1
  std::vector<word> masks;         ///< ternary only, [row][plane][word]: bit 1 means nonzero
  std::vector<float> coefficients;  ///< [row][group][plane]: alpha
  /// Offline term per row: sum over groups and planes of alpha * (sum of the plane's values in
  /// the group). Multiplied online by the activation offset gamma (DESIGN.md section 1).
  std::vector<float> offsets;

  std::int64_t groups() const { return (cols + group_size - 1) / group_size; }
  std::int64_t words_per_plane() const { return words_for(cols); }
  std::int64_t group_begin(std::int64_t g) const { return g * group_size; }
  std::int64_t group_end(std::int64_t g) const {
    return (g + 1) * group_size < cols ? (g + 1) * group_size : cols;
  }

  const word* sign_plane(std::int64_t row, int plane) const {
    return signs.data() + (row * bits + plane) * words_per_plane();
  }
  word* sign_plane(std::int64_t row, int plane) {
    return signs.data() + (row * bits + plane) * words_per_plane();
  }
  /// The nonzero mask of a ternary plane; nullptr for the binary basis.
  const word* mask_plane(std::int64_t row, int plane) const {
    return masks.empty() ? nullptr : masks.data() + (row * bits + plane) * words_per_plane();
  }
  word* mask_plane(std::int64_t row, int plane) {
    return masks.empty() ? nullptr : masks.data() + (row * bits + plane) * words_per_plane();
  }
  float coefficient(std::int64_t row, std::int64_t group, int plane) const {
    return coefficients[static_cast<std::size_t>((row * groups() + group) * bits + plane)];
  }
  float& coefficient(std::int64_t row, std::int64_t group, int plane) {
    return coefficients[static_cast<std::size_t>((row * groups() + group) * bits + plane)];
  }

  /// Value of basis vector `plane` of `row` at column `col`: -1, 0 or +1.
  int value(std::int64_t row, int plane, std::int64_t col) const {
    const word* mask = mask_plane(row, plane);
    if (mask != nullptr && !get_bit(mask, col)) return 0;
    return get_bit(sign_plane(row, plane), col) ? 1 : -1;
  }

  /// Bytes of everything the code stores (planes, masks, coefficients, offsets).
  std::size_t bytes() const {
    return (signs.size() + masks.size()) * sizeof(word) +
           (coefficients.size() + offsets.size()) * sizeof(float);
  }
};

/// Checks a shape without allocating anything and returns the group size it resolves to
/// (group_size 0, or one at least `cols`, means one group per row). Throws qsl::error whose
/// message starts with `what`.
QSL_API std::int64_t check_shape(std::int64_t rows, std::int64_t cols, int bits, qsl::basis basis,
                                 std::int64_t group_size, const char* what = "weight code");

/// Allocates a zeroed code of the given shape. Throws qsl::error on a bad shape.
QSL_API weight_code make_weight_code(std::int64_t rows, std::int64_t cols, int bits,
                                     qsl::basis basis, std::int64_t group_size);

/// Checks every invariant: shape, sizes of the arrays, zero padding bits, canonical ternary
/// signs, finite coefficients, offsets equal to their definition. Throws qsl::error naming
/// what is wrong; `what` prefixes the message (e.g. the layer's name).
QSL_API void validate(const weight_code& code, const char* what = "weight code");

/// Recomputes code.offsets from the planes and coefficients.
QSL_API void compute_offsets(weight_code& code);

/// One kind of plane (the signs, or the ternary masks) as bytes, the layout qsl's ONNX operators
/// store: [row][plane][ceil(cols / 8)], column c is bit c % 8 of byte c / 8, padding bits zero.
QSL_API std::vector<std::uint8_t> plane_bytes(const weight_code& code, bool masks);

/// Fills the signs (or masks) of `code`, made by make_weight_code, from bytes in that layout
/// (rows * bits * ceil(cols / 8) of them). Throws qsl::error, prefixed by `what`, when a padding
/// bit is set.
QSL_API void read_plane_bytes(weight_code& code, bool masks, const std::uint8_t* bytes,
                              const char* what = "weight code");

/// Writes row `row` of W_hat (cols values) to `out`: the sum over groups and planes in the
/// order reconstruct uses, so both give the same floats. Throws qsl::error for a row outside
/// 0..rows-1. (Embedding look-ups decode only the rows they gather.)
QSL_API void reconstruct_row(const weight_code& code, std::int64_t row, float* out);

/// Writes the dense approximation W_hat into `out`, which must be rows x cols. Throws qsl::error
/// naming the shape otherwise.
QSL_API void reconstruct(const weight_code& code, Eigen::Ref<Eigen::MatrixXf> out);

/// The dense approximation W_hat (rows x cols). Inline, so that the matrix is allocated and
/// freed by the caller's Eigen (docs/design.md, "An ABI that does not depend on the user's
/// flags").
inline Eigen::MatrixXf reconstruct(const weight_code& code) {
  Eigen::MatrixXf out(code.rows, code.cols);
  reconstruct(code, out);
  return out;
}

/// Whether a tensor of `shape` holds a rows x cols W as a decoded weight does: W^T, [cols, rows]
/// (or [cols, ...] with the rest making the rows: a ConvTranspose's [C, M, k...]), when
/// `transposed`; else W row-major, its leading dims making the rows ([M, C, k...] for a
/// convolution, [directions, gates x hidden, inputs] for a recurrent weight, [rows] x cols
/// flattened for a 1-D shape of rows). Dims below 1 and products past rows x cols are refused
/// without overflow. (The qsl-format reader and the ONNX Runtime operators check it alike.)
inline bool shape_holds_w(const std::vector<std::int64_t>& shape, std::int64_t rows,
                          std::int64_t cols, bool transposed) {
  if (shape.empty() || rows < 1 || cols < 1) return false;
  std::int64_t elements = 1;
  for (std::int64_t d : shape) {
    if (d < 1 || elements > rows * cols / d) return false;
    elements *= d;
  }
  if (elements != rows * cols) return false;
  if (transposed) return shape[0] == cols;  // W^T [cols, rows] (or its rows split: [C, M, k...])
  std::int64_t leading = 1;
  for (std::size_t d = 0; d + 1 < shape.size(); ++d)
    if ((leading *= shape[d]) == rows) return true;
  return shape.size() == 1 && shape[0] == rows;
}

}  // namespace qsl
