#pragma once
// The checks that quantized_dense and twd_dense layers share beyond their weight codes: the bias
// and the activation quantizer (validate() of dense_parameters and of twd_dense_parameters).

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qsl/activation_code.hpp"
#include "qsl/error.hpp"

namespace qsl::detail {

/// `bias` empty or one finite value per output row; `a` within max_activation_bits and, when
/// calibrated, with a usable step and minimum. `where` prefixes the messages ("layer fc1: ").
inline void validate_bias_and_activations(const std::vector<float>& bias, std::int64_t rows,
                                          const activation_quantizer& a, const std::string& where) {
  const auto str = [](auto v) { return std::to_string(v); };
  require(bias.empty() || bias.size() == static_cast<std::size_t>(rows),
          where + "bias has " + str(bias.size()) + " values; expected 0 or " + str(rows));
  for (std::size_t i = 0; i < bias.size(); ++i)
    require(std::isfinite(bias[i]),
            where + "bias " + str(i) + " is " + str(bias[i]) + "; expected a finite value");
  require(
      a.bits >= 0 && a.bits <= max_activation_bits,
      where + "activation bits is " + str(a.bits) + "; expected 0.." + str(max_activation_bits));
  if (a.calibrated)
    require(a.bits > 0 && std::isfinite(a.step) && a.step >= 0 && std::isfinite(a.minimum),
            where +
                "calibrated activations need bits >= 1, a finite step >= 0 and a finite "
                "minimum; got bits " +
                str(a.bits) + ", step " + str(a.step) + ", minimum " + str(a.minimum));
}

}  // namespace qsl::detail
