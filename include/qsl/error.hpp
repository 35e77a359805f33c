#pragma once
// Errors. The host API throws qsl::error with a message that names the input,
// the value and what was expected; kernels and device code return qsl::status.

#include <stdexcept>
#include <string>

namespace qsl {

/// Thrown by every host-side function of qsl on bad input or corrupt data.
class error : public std::runtime_error {
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
}  // namespace detail

}  // namespace qsl
