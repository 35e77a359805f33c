#pragma once
// The one check every offline entry point runs on its float inputs (decompose,
// factorize_ternary): the first non-finite element, named.

#include <Eigen/Core>
#include <cmath>
#include <string>

#include "qsl/error.hpp"

namespace qsl::detail {

/// Throws qsl::error "<what><name> has <value> at row r, col c; expected finite values" for the
/// first non-finite element in row-major order, so the message does not depend on the storage
/// order.
template <class Matrix>
void require_finite(const Matrix& m, const std::string& what, const std::string& name) {
  if (m.allFinite()) return;
  for (Eigen::Index r = 0; r < m.rows(); ++r)
    for (Eigen::Index c = 0; c < m.cols(); ++c)
      if (!std::isfinite(m(r, c)))
        throw error(what + name + " has " + std::to_string(m(r, c)) + " at row " +
                    std::to_string(r) + ", col " + std::to_string(c) + "; expected finite values");
}

}  // namespace qsl::detail
