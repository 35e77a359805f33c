#pragma once
// qsl::encode_activations: a batch of input vectors as kx binary planes each (DESIGN.md §1):
//
//     x ~ x_min + step * q,   q = sum_i 2^i t_i,   t_i in {0,1}
//       = sum_i beta_i u_i + gamma,   u_i = 2 t_i - 1,
//         beta_i = step * 2^(i-1),    gamma = x_min + step * (2^kx - 1) / 2
//
// The encoding rule, which every backend reproduces bit for bit:
//     q = clamp(floor((x - x_min) * inv_step + 0.5f), 0, 2^kx - 1)   (float arithmetic)
// with inv_step = 1.0f / step, and q = 0 when step == 0.
// Plane i holds bit i of q in the layout of qsl/bit_planes.hpp (bit 1 means u = +1).
//
// Two ways to choose step and x_min:
//   * per vector (dynamic): x_min = min(x), step = (max(x) - min(x)) / (2^kx - 1);
//   * calibrated (static, as in the original method): fixed offline from calibration inputs
//     by calibrate_activations, so that online only the binary code is chosen. For Gaussian
//     inputs at kx = 2 the calibrated scale has about a quarter of the per-vector error.

#include <Eigen/Core>
#include <cstdint>
#include <vector>

#include "qsl/bit_planes.hpp"
#include "qsl/config.hpp"

namespace qsl {

inline constexpr int max_activation_bits = 8;

using row_matrix_f = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// How activations are quantized. bits == 0 keeps float activations.
struct activation_quantizer {
  int bits = 0;             ///< kx, 0..8
  bool calibrated = false;  ///< false: step and minimum per vector; true: the fixed values below
  float step = 0;           ///< fixed step (calibrated only), >= 0
  float minimum = 0;        ///< fixed x_min (calibrated only)
};

/// The encoded batch.
struct activation_code {
  std::int64_t vectors = 0;  ///< batch size
  std::int64_t length = 0;   ///< D
  int bits = 0;              ///< kx
  std::vector<word> planes;  ///< [vector][plane][word]
  std::vector<float> step;     ///< per vector
  std::vector<float> minimum;  ///< per vector

  std::int64_t words_per_plane() const { return words_for(length); }
  const word* plane(std::int64_t vector, int i) const {
    return planes.data() + (vector * bits + i) * words_per_plane();
  }
  word* plane(std::int64_t vector, int i) {
    return planes.data() + (vector * bits + i) * words_per_plane();
  }
  /// gamma of DESIGN.md: the offset that multiplies the weights' offline term.
  float gamma(std::int64_t vector) const {
    return minimum[vector] + step[vector] * static_cast<float>((1 << bits) - 1) * 0.5f;
  }
  /// The level index q of element `col` of `vector`.
  int level(std::int64_t vector, std::int64_t col) const {
    int q = 0;
    for (int i = 0; i < bits; ++i) q |= static_cast<int>(get_bit(plane(vector, i), col)) << i;
    return q;
  }
};

/// Fixed step and minimum minimizing the mean squared error of kx-bit uniform quantization
/// over every value of x (M x D); at most 2^20 values are used, evenly spaced. Throws
/// qsl::error for an empty x, NaN/Inf, or bits outside 1..8.
QSL_API activation_quantizer calibrate_activations(const Eigen::Ref<const row_matrix_f>& x,
                                                   int bits);

/// Encodes `vectors` rows of `length` floats (row-major). Throws qsl::error for NaN/Inf, a
/// quantizer with bits outside 1..8, or a bad calibrated step.
QSL_API activation_code encode_activations(const float* x, std::int64_t vectors,
                                           std::int64_t length,
                                           const activation_quantizer& quantizer);

/// The same for an Eigen row-major batch.
QSL_API activation_code encode_activations(const Eigen::Ref<const row_matrix_f>& x,
                                           const activation_quantizer& quantizer);

/// Writes the values the code stands for, x_min + step * q, into `out` (vectors x length).
QSL_API void decode_activations(const activation_code& code, Eigen::Ref<row_matrix_f> out);

/// The same, in a new matrix (inline: allocated and freed by the caller's Eigen).
inline row_matrix_f decode_activations(const activation_code& code) {
  row_matrix_f out(code.vectors, code.length);
  decode_activations(code, out);
  return out;
}

}  // namespace qsl
