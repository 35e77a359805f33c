#pragma once
// Moving fitted groups into a weight_code, and the canonical form of a group.

#include <cstdint>

#include "decompose/group_fit.hpp"
#include "qsl/weight_code.hpp"

namespace qsl::detail {

/// Writes the codes (indices into level_set::planes) and coefficients of one group.
void write_group(weight_code& code, std::int64_t row, std::int64_t group, const group_result& r);

/// Makes the coefficients of (row, group) >= 0 and orders its planes by decreasing
/// coefficient, changing the bits so that the reconstruction stays the same.
void normalize_group(weight_code& code, std::int64_t row, std::int64_t group);

}  // namespace qsl::detail
