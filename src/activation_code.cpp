#include "qsl/activation_code.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "decompose/level_fit.hpp"
#include "qsl/error.hpp"

namespace qsl {
namespace {

constexpr std::int64_t max_calibration_values = std::int64_t{1} << 20;
// Fraction of values clipped at each end by the starting points of the calibration search.
constexpr double clip_fractions[] = {0.0, 1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.2};

std::string str(std::int64_t v) { return std::to_string(v); }

void check_bits(int bits, const char* where) {
  detail::require(bits >= 1 && bits <= max_activation_bits,
                  std::string(where) + ": activation bits is " + str(bits) + "; expected 1.." +
                      str(max_activation_bits));
}

void check_finite(const float* x, std::int64_t rows, std::int64_t cols, const char* where,
                  const char* name) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const float v = x[r * cols + c];
      if (!std::isfinite(v))
        throw error(std::string(where) + ": " + name + " has " + std::to_string(v) + " at row " +
                    str(r) + ", col " + str(c) + "; expected finite values");
    }
}

// The elements of x row after row without a copy when the Ref is already packed.
const float* contiguous(const Eigen::Ref<const row_matrix_f>& x, row_matrix_f& copy) {
  if (x.outerStride() == x.cols()) return x.data();
  copy = x;
  return copy.data();
}

}  // namespace

activation_quantizer calibrate_activations(const Eigen::Ref<const row_matrix_f>& x, int bits) {
  const char* where = "calibrate_activations";
  check_bits(bits, where);
  detail::require(x.rows() >= 1 && x.cols() >= 1, std::string(where) + ": x is " +
                                                       str(x.rows()) + " x " + str(x.cols()) +
                                                       "; expected at least 1 x 1");
  row_matrix_f copy;
  const float* data = contiguous(x, copy);
  check_finite(data, x.rows(), x.cols(), where, "x");

  const std::int64_t total = x.size();
  const std::int64_t stride = (total + max_calibration_values - 1) / max_calibration_values;
  std::vector<float> sample;
  sample.reserve(static_cast<std::size_t>(total / stride + 1));
  for (std::int64_t i = 0; i < total; i += stride) sample.push_back(data[i]);

  detail::sorted_values sorted;
  sorted.assign(sample.data(), nullptr, static_cast<std::int64_t>(sample.size()));
  const auto& v = sorted.values();
  const std::int64_t n = sorted.size();
  const detail::level_set levels = detail::level_set::uniform(bits);
  const int top = (1 << bits) - 1;

  activation_quantizer best{bits, true, 0.0f, v.front()};
  if (v.back() == v.front()) return best;  // constant input: every value is the minimum
  double best_error = -1;
  detail::assignment a, scratch;
  for (double clip : clip_fractions) {
    const auto lo = static_cast<std::int64_t>(clip * static_cast<double>(n - 1));
    const double low = v[lo], high = v[n - 1 - lo];
    if (!(high > low)) continue;
    detail::params theta{};
    theta[0] = low;
    theta[1] = (high - low) / top;
    const double err = detail::alternate(sorted, levels, theta, 200, a, scratch);
    if (theta[1] > 0 && std::isfinite(theta[0]) && (best_error < 0 || err < best_error)) {
      best_error = err;
      best.minimum = static_cast<float>(theta[0]);
      best.step = static_cast<float>(theta[1]);
    }
  }
  return best;
}

activation_code encode_activations(const float* x, std::int64_t vectors, std::int64_t length,
                                   const activation_quantizer& q) {
  const char* where = "encode_activations";
  check_bits(q.bits, where);
  detail::require(x != nullptr, std::string(where) + ": x is null");
  detail::require(vectors >= 1 && length >= 1, std::string(where) + ": x is " + str(vectors) +
                                                    " x " + str(length) +
                                                    "; expected at least 1 x 1");
  if (q.calibrated)
    detail::require(std::isfinite(q.step) && q.step >= 0 && std::isfinite(q.minimum),
                    std::string(where) + ": calibrated step " + std::to_string(q.step) +
                        " and minimum " + std::to_string(q.minimum) +
                        "; expected a finite step >= 0 and a finite minimum");
  check_finite(x, vectors, length, where, "x");

  activation_code code;
  code.vectors = vectors;
  code.length = length;
  code.bits = q.bits;
  code.planes.assign(static_cast<std::size_t>(vectors * q.bits * words_for(length)), 0);
  code.step.resize(static_cast<std::size_t>(vectors));
  code.minimum.resize(static_cast<std::size_t>(vectors));
  const int top = (1 << q.bits) - 1;
  for (std::int64_t r = 0; r < vectors; ++r) {
    const float* row = x + r * length;
    float minimum = q.minimum, step = q.step;
    if (!q.calibrated) {
      const auto [lo, hi] = std::minmax_element(row, row + length);
      minimum = *lo;
      step = (*hi - *lo) / static_cast<float>(top);
      // max - min can overflow to +inf for finite inputs of opposite huge signs.
      detail::require(std::isfinite(step), std::string(where) + ": row " + str(r) +
                                               " spans more than the float range");
    }
    code.minimum[r] = minimum;
    code.step[r] = step;
    if (step == 0) continue;  // every q is 0
    const float inv_step = 1.0f / step;
    // One word of every plane at a time: the bits are gathered in registers, not set one by one.
    for (std::int64_t w = 0; w * bits_per_word < length; ++w) {
      word planes[max_activation_bits] = {};
      const std::int64_t first = w * bits_per_word;
      const int count = static_cast<int>(std::min<std::int64_t>(bits_per_word, length - first));
      for (int b = 0; b < count; ++b) {
        const float scaled = std::floor((row[first + b] - minimum) * inv_step + 0.5f);
        const auto level =
            static_cast<word>(!(scaled > 0) ? 0 : scaled >= top ? top : static_cast<int>(scaled));
        for (int i = 0; i < q.bits; ++i) planes[i] |= ((level >> i) & 1) << b;
      }
      for (int i = 0; i < q.bits; ++i) code.plane(r, i)[w] = planes[i];
    }
  }
  return code;
}

activation_code encode_activations(const Eigen::Ref<const row_matrix_f>& x,
                                   const activation_quantizer& q) {
  row_matrix_f copy;
  return encode_activations(contiguous(x, copy), x.rows(), x.cols(), q);
}

void decode_activations(const activation_code& code, Eigen::Ref<row_matrix_f> out) {
  detail::require_output_shape("decode_activations", out.rows(), out.cols(), code.vectors,
                               code.length);
  for (std::int64_t r = 0; r < code.vectors; ++r)
    for (std::int64_t c = 0; c < code.length; ++c)
      out(r, c) = code.minimum[r] + code.step[r] * static_cast<float>(code.level(r, c));
}

}  // namespace qsl
