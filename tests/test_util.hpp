#pragma once
// Shared helpers for the tests: seeded random data and the edge shapes every module covers.

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "qsl/activation_code.hpp"
#include "qsl/error.hpp"
#include "qsl/weight_code.hpp"

namespace qsl::test {

/// N(0, 1) matrix, column-major, reproducible from the seed.
inline Eigen::MatrixXf gaussian(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Eigen::MatrixXf m(rows, cols);
  for (Eigen::Index c = 0; c < m.cols(); ++c)
    for (Eigen::Index r = 0; r < m.rows(); ++r) m(r, c) = normal(rng);
  return m;
}

/// N(0, 1) matrix, row-major (the layout of activation batches).
inline row_matrix_f gaussian_rows(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  return gaussian(rows, cols, seed);
}

/// Column counts that exercise word and group boundaries: 1, around 64, around 128, primes.
inline const std::vector<std::int64_t>& edge_dims() {
  static const std::vector<std::int64_t> dims = {1, 2, 7, 8, 63, 64, 65, 127, 128, 129, 131, 257};
  return dims;
}

/// A code with random planes (canonical, zero-padded), coefficients uniform in [0.1, 2) and
/// true offsets: a fast way to many shapes without running a decomposition.
inline qsl::weight_code random_code(std::int64_t rows, std::int64_t cols, int bits,
                                    qsl::basis basis, std::int64_t group, std::uint32_t seed) {
  qsl::weight_code code = qsl::make_weight_code(rows, cols, bits, basis, group);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(0.1f, 2.0f);
  for (std::int64_t n = 0; n < rows; ++n)
    for (int j = 0; j < bits; ++j)
      for (std::int64_t c = 0; c < cols; ++c) {
        const bool nonzero = basis == qsl::basis::binary || rng() % 3 != 0;
        if (!nonzero) continue;
        if (qsl::word* mask = code.mask_plane(n, j)) qsl::set_bit(mask, c);
        if (rng() % 2) qsl::set_bit(code.sign_plane(n, j), c);
      }
  for (float& a : code.coefficients) a = uniform(rng);
  qsl::compute_offsets(code);
  return code;
}

/// The message of the qsl::error that f throws, or "no error".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const qsl::error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace qsl::test
