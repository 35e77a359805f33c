#include "decompose/group_fit.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace qsl::detail {
namespace {

constexpr int scale_rounds = 4;       // scale-only Lloyd rounds per grid shape
constexpr int refined_candidates = 4;  // best grid shapes refined by alternating

int radix(qsl::basis b) { return b == qsl::basis::binary ? 2 : 3; }

// Number of points of the shape grid with step 1/s in k - 1 ordered ratios: C(s + k - 1, k - 1).
double grid_points(int s, int k) {
  double c = 1;
  for (int i = 1; i < k; ++i) c = c * (s + i) / i;
  return c;
}

void grid_recurse(int k, int s, int j, int upper, params& shape, std::vector<params>& out) {
  if (j == k) {
    out.push_back(shape);
    return;
  }
  for (int step = upper; step >= 0; --step) {
    shape[j] = static_cast<double>(step) / s;
    grid_recurse(k, s, j + 1, step, shape, out);
  }
}

// Grid shapes multi_start tries for groups of n values: evaluating one start costs about
// L log n against the n log n of sorting the group once. A coarse grid also keeps the best few
// shapes far apart, so they reach different basins (a finer grid measured worse at k = 4).
int start_budget(std::int64_t n) {
  return static_cast<int>(std::clamp<std::int64_t>(n / 64, 8, 64));
}

}  // namespace

std::vector<params> shape_grid(int k, int budget) {
  std::vector<params> out;
  if (k == 1) {
    params one{};
    one[0] = 1;
    out.push_back(one);
    return out;
  }
  int s = 1;
  while (grid_points(s + 1, k) <= budget) ++s;
  params shape{};
  shape[0] = 1;
  grid_recurse(k, s, 1, s, shape, out);
  return out;
}

group_fitter::group_fitter(qsl::basis basis, int bits, qsl::method method, int max_iterations,
                           std::int64_t group_length)
    : basis_(basis),
      bits_(bits),
      method_(method),
      max_iterations_(max_iterations),
      levels_(level_set::planes(basis, bits)) {
  // Ternary level sets grow as 3^k: past 81 levels a grid start costs more than it finds.
  const bool affordable = levels_.size() <= 256 && (basis == qsl::basis::binary || bits <= 4);
  if (method == qsl::method::multi_start && affordable)
    shapes_ = shape_grid(bits, start_budget(group_length));
}

void group_fitter::greedy(const float* values, const float* weights, std::int64_t n,
                          group_result& out) {
  residual_.assign(values, values + n);
  out.codes.assign(static_cast<std::size_t>(n), 0);
  out.alpha = {};
  auto weight = [&](std::int64_t i) { return weights == nullptr ? 1.0 : double{weights[i]}; };
  std::int32_t place = 1;  // radix^j
  for (int j = 0; j < bits_; ++j, place *= radix(basis_)) {
    double alpha = 0;
    if (basis_ == qsl::basis::binary) {
      // alpha = weighted mean |r|: least squares for the codes sign(r).
      double num = 0, den = 0;
      for (std::int64_t i = 0; i < n; ++i) {
        num += weight(i) * std::abs(residual_[i]);
        den += weight(i);
      }
      alpha = den > 0 ? num / den : 0.0;
      for (std::int64_t i = 0; i < n; ++i) {
        const bool positive = residual_[i] >= 0;
        if (positive) out.codes[i] += place;
        residual_[i] -= static_cast<float>(positive ? alpha : -alpha);
      }
    } else {
      // Support = the m largest |r|; m maximizes the error reduction (sum w|r|)^2 / sum w.
      order_.resize(static_cast<std::size_t>(n));
      std::iota(order_.begin(), order_.end(), 0);
      std::sort(order_.begin(), order_.end(), [&](std::int32_t a, std::int32_t b) {
        return std::abs(residual_[a]) > std::abs(residual_[b]) ||
               (std::abs(residual_[a]) == std::abs(residual_[b]) && a < b);
      });
      double num = 0, den = 0, best_gain = 0;
      std::int64_t best_m = 0;
      for (std::int64_t m = 0; m < n; ++m) {
        num += weight(order_[m]) * std::abs(residual_[order_[m]]);
        den += weight(order_[m]);
        if (den > 0 && num * num / den > best_gain) {
          best_gain = num * num / den;
          best_m = m + 1;
          alpha = num / den;
        }
      }
      for (std::int64_t i = 0; i < n; ++i) out.codes[i] += place;  // digit 1: zero
      for (std::int64_t m = 0; m < best_m; ++m) {
        const std::int32_t i = order_[m];
        const bool positive = residual_[i] >= 0;
        out.codes[i] += positive ? place : -place;  // digit 2: +1, digit 0: -1
        residual_[i] -= static_cast<float>(positive ? alpha : -alpha);
      }
    }
    out.alpha[j] = alpha;
  }
}

void group_fitter::fit(const float* values, const float* weights, std::int64_t n,
                       group_result& out) {
  greedy(values, weights, n, out);
  if (method_ != qsl::method::greedy) {
    sorted_.assign(values, weights, n);
    params best = out.alpha;
    double best_error = alternate(sorted_, levels_, best, max_iterations_, a_, scratch_);

    const double total_weight = sorted_.weight(0, n);
    const double mean_square = total_weight > 0 ? sorted_.total_sum_squares() / total_weight : 0;
    if (!shapes_.empty() && mean_square > 0) {
      // Mean square level of a shape when every code is equally likely.
      const double code_power = basis_ == qsl::basis::binary ? 1.0 : 2.0 / 3.0;
      candidates_.clear();
      for (const params& shape : shapes_) {
        double norm = 0;
        for (int j = 0; j < bits_; ++j) norm += shape[j] * shape[j];
        double scale = std::sqrt(mean_square / (code_power * norm));
        double error = 0;
        for (int round = 0; round <= scale_rounds; ++round) {
          params theta{};
          for (int j = 0; j < bits_; ++j) theta[j] = scale * shape[j];
          error = a_.evaluate(sorted_, levels_, theta);
          if (round < scale_rounds) scale = a_.best_scale(levels_, shape);
        }
        params theta{};
        for (int j = 0; j < bits_; ++j) theta[j] = scale * shape[j];
        candidates_.push_back({error, theta});
      }
      const auto top = candidates_.begin() +
                       std::min<std::ptrdiff_t>(refined_candidates, candidates_.size());
      std::partial_sort(candidates_.begin(), top, candidates_.end(),
                        [](const auto& a, const auto& b) { return a.first < b.first; });
      for (auto it = candidates_.begin(); it != top; ++it) {
        params theta = it->second;
        const double error = alternate(sorted_, levels_, theta, max_iterations_, a_, scratch_);
        if (error < best_error) {
          best_error = error;
          best = theta;
        }
      }
    }
    // Codes = nearest levels of the best theta; then least squares for those codes, which can
    // only lower the error further.
    a_.evaluate(sorted_, levels_, best);
    a_.codes(sorted_, out.codes);
    out.alpha = a_.least_squares(levels_);
  }
}

}  // namespace qsl::detail
