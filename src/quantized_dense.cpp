#include "qsl/quantized_dense.hpp"

#include <cmath>

namespace qsl {

dense_parameters compress_dense(const Eigen::Ref<const Eigen::MatrixXf>& w, const float* bias,
                                const quantized_dense_options& options) {
  const char* where = "quantized_dense::compress: ";
  detail::require(options.activation_bits >= 0 && options.activation_bits <= max_activation_bits,
                  where + std::string("options.activation_bits is ") +
                      std::to_string(options.activation_bits) + "; expected 0.." +
                      std::to_string(max_activation_bits));
  const activation_scaling scaling = options.scaling;
  detail::require(scaling == activation_scaling::automatic ||
                      scaling == activation_scaling::per_vector ||
                      scaling == activation_scaling::calibrated,
                  where + std::string("options.scaling is ") +
                      std::to_string(static_cast<int>(scaling)) +
                      "; expected automatic, per_vector or calibrated");
  const bool have_calibration = options.weights.calibration.size() > 0;
  detail::require(scaling != activation_scaling::calibrated || have_calibration,
                  where + std::string("calibrated activations need calibration inputs in "
                                      "options.weights.calibration; none were given"));
  dense_parameters p;
  if (bias != nullptr) {  // checked before the (long) decomposition
    p.bias.assign(bias, bias + w.rows());
    for (std::int64_t n = 0; n < w.rows(); ++n)
      detail::require(std::isfinite(p.bias[n]), where + std::string("bias has ") +
                                                    std::to_string(p.bias[n]) + " at " +
                                                    std::to_string(n) +
                                                    "; expected finite values");
  }
  p.code = decompose(w, options.weights);
  p.activations.bits = options.activation_bits;
  if (options.activation_bits > 0 && have_calibration &&
      scaling != activation_scaling::per_vector) {
    p.activations = calibrate_activations(options.weights.calibration, options.activation_bits);
  }
  return p;
}

}  // namespace qsl
