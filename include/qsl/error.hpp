#pragma once
// Errors. The host API throws qsl::error with a message that names the input,
// the value and what was expected; kernels and device code return qsl::status.

#include <stdexcept>
#include <string>

#include "qsl/config.hpp"

namespace qsl {

/// Thrown by every host-side function of qsl on bad input or corrupt data.
class QSL_API error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Result of a kernel: kernels never throw.
enum class status : int {
  ok = 0,
  invalid_argument = 1,
  unsupported = 2,
};

namespace detail {
/// Throws qsl::error(message) when `condition` is false. Keeps call sites one line long.
inline void require(bool condition, const std::string& message) {
  if (!condition) throw error(message);
}
/// Throws unless an output matrix given by the caller is rows x cols ("what: out is 2 x 3;
/// expected 4 x 5").
inline void require_output_shape(const char* what, long long out_rows, long long out_cols,
                                 long long rows, long long cols) {
  if (out_rows != rows || out_cols != cols)
    throw error(std::string(what) + ": out is " + std::to_string(out_rows) + " x " +
                std::to_string(out_cols) + "; expected " + std::to_string(rows) + " x " +
                std::to_string(cols));
}
}  // namespace detail

}  // namespace qsl
