#include "decompose/level_fit.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

namespace qsl::detail {

level_set level_set::planes(qsl::basis basis, int k) {
  level_set s;
  s.dims_ = k;
  const int radix = basis == qsl::basis::binary ? 2 : 3;
  s.size_ = 1;
  for (int j = 0; j < k; ++j) s.size_ *= radix;
  s.features_.resize(static_cast<std::size_t>(s.size_) * k);
  for (int c = 0; c < s.size_; ++c) {
    int rest = c;
    for (int j = 0; j < k; ++j) {
      const int digit = rest % radix;
      rest /= radix;
      // binary: 0 -> -1, 1 -> +1; ternary: 0 -> -1, 1 -> 0, 2 -> +1
      s.features_[static_cast<std::size_t>(c) * k + j] =
          static_cast<float>(radix == 2 ? 2 * digit - 1 : digit - 1);
    }
  }
  return s;
}

level_set level_set::uniform(int bits) {
  level_set s;
  s.dims_ = 2;
  s.size_ = 1 << bits;
  s.features_.resize(static_cast<std::size_t>(s.size_) * 2);
  for (int q = 0; q < s.size_; ++q) {
    s.features_[2 * q] = 1.0f;
    s.features_[2 * q + 1] = static_cast<float>(q);
  }
  return s;
}

namespace {

// Order-preserving map of a float to an unsigned key (negative values reversed).
std::uint32_t sort_key(float v) {
  std::uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return (bits & 0x80000000U) ? ~bits : (bits | 0x80000000U);
}

// Stable LSD radix sort of (key, index) pairs in three 11-bit passes: a row of thousands of
// weights sorts about 5x faster than with std::sort, and sorting is the largest fixed cost.
void radix_sort(std::vector<std::uint32_t>& keys, std::vector<std::int32_t>& order,
                std::vector<std::uint32_t>& key_scratch, std::vector<std::int32_t>& order_scratch) {
  constexpr int radix_bits = 11;
  constexpr std::uint32_t buckets = 1U << radix_bits;
  const std::size_t n = keys.size();
  key_scratch.resize(n);
  order_scratch.resize(n);
  std::uint32_t count[buckets];
  for (int shift = 0; shift < 32; shift += radix_bits) {
    std::fill(count, count + buckets, 0U);
    for (std::size_t i = 0; i < n; ++i) ++count[(keys[i] >> shift) & (buckets - 1)];
    std::uint32_t sum = 0;
    for (std::uint32_t b = 0; b < buckets; ++b) {
      const std::uint32_t c = count[b];
      count[b] = sum;
      sum += c;
    }
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t slot = count[(keys[i] >> shift) & (buckets - 1)]++;
      key_scratch[slot] = keys[i];
      order_scratch[slot] = order[i];
    }
    keys.swap(key_scratch);
    order.swap(order_scratch);
  }
}

}  // namespace

void sorted_values::assign(const float* values, const float* weights, std::int64_t n) {
  keys_.resize(static_cast<std::size_t>(n));
  order_.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    keys_[i] = sort_key(values[i]);
    order_[i] = static_cast<std::int32_t>(i);
  }
  if (n >= 512) {
    radix_sort(keys_, order_, key_scratch_, order_scratch_);
  } else {
    std::sort(order_.begin(), order_.end(), [&](std::int32_t a, std::int32_t b) {
      return keys_[a] < keys_[b] || (keys_[a] == keys_[b] && a < b);
    });
  }
  values_.resize(n);
  w_.resize(n + 1);
  s_.resize(n + 1);
  q_.resize(n + 1);
  w_[0] = s_[0] = q_[0] = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float value = values[order_[i]];
    const double v = value;
    const double wt = weights == nullptr ? 1.0 : weights[order_[i]];
    values_[i] = value;
    w_[i + 1] = w_[i] + wt;
    s_[i + 1] = s_[i] + wt * v;
    q_[i + 1] = q_[i] + wt * v * v;
  }
}

std::int64_t sorted_values::lower_bound(std::int64_t first, double t) const {
  // Branchless binary search: the thresholds are unpredictable, so a conditional move beats a
  // mispredicted branch at every step. Comparison in double: a float threshold could round a
  // value onto the wrong side.
  const float* base = values_.data() + first;
  std::int64_t len = size() - first;
  while (len > 1) {
    const std::int64_t half = len / 2;
    base = static_cast<double>(base[half - 1]) < t ? base + half : base;
    len -= half;
  }
  return (base - values_.data()) + (len == 1 && static_cast<double>(*base) < t ? 1 : 0);
}

double assignment::evaluate(const sorted_values& x, const level_set& levels, const params& theta) {
  const int count = levels.size();
  sorted_levels_.resize(static_cast<std::size_t>(count));
  for (int c = 0; c < count; ++c) sorted_levels_[c] = {levels.level(c, theta), c};
  std::sort(sorted_levels_.begin(), sorted_levels_.end());

  const std::int64_t n = x.size();
  const auto& v = x.values();
  // With many levels and few values a linear merge beats one binary search per threshold.
  const bool merge = static_cast<std::int64_t>(count) * 16 > n;
  segments_.clear();
  double error = 0;
  std::int64_t begin = 0;
  for (int i = 0; i < count && begin < n; ++i) {
    std::int64_t end = n;
    if (i + 1 < count) {
      const double threshold = 0.5 * (sorted_levels_[i].first + sorted_levels_[i + 1].first);
      if (merge) {
        end = begin;
        while (end < n && static_cast<double>(v[end]) < threshold) ++end;
      } else {
        end = x.lower_bound(begin, threshold);
      }
    }
    if (end == begin) continue;
    const double l = sorted_levels_[i].first;
    const double w = x.weight(begin, end), s = x.sum(begin, end);
    error += x.sum_squares(begin, end) - 2 * l * s + l * l * w;
    segments_.push_back({sorted_levels_[i].second, begin, end, w, s});
    begin = end;
  }
  return std::max(error, 0.0);
}

params assignment::least_squares(const level_set& levels) const {
  using matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, 0, max_params, max_params>;
  using vector = Eigen::Matrix<double, Eigen::Dynamic, 1, 0, max_params, 1>;
  const int p = levels.dims();
  matrix a = matrix::Zero(p, p);
  vector r = vector::Zero(p);
  for (const segment& s : segments_) {
    const float* f = levels.features(s.code);
    for (int i = 0; i < p; ++i) {
      r[i] += s.sum * f[i];
      for (int j = 0; j < p; ++j) a(i, j) += s.weight * f[i] * f[j];
    }
  }
  const vector solution = a.completeOrthogonalDecomposition().solve(r);
  params theta{};
  for (int i = 0; i < p; ++i) theta[i] = std::isfinite(solution[i]) ? solution[i] : 0.0;
  return theta;
}

double assignment::best_scale(const level_set& levels, const params& shape) const {
  double num = 0, den = 0;
  for (const segment& s : segments_) {
    const double l = levels.level(s.code, shape);
    num += l * s.sum;
    den += l * l * s.weight;
  }
  return den > 0 ? num / den : 0.0;
}

void assignment::codes(const sorted_values& x, std::vector<std::int32_t>& out) const {
  out.resize(static_cast<std::size_t>(x.size()));
  for (const segment& s : segments_)
    for (std::int64_t i = s.begin; i < s.end; ++i) out[x.order()[i]] = s.code;
}

double alternate(const sorted_values& x, const level_set& levels, params& theta, int max_iterations,
                 assignment& a, assignment& scratch) {
  // Each round can only lower the error: least squares is optimal for the assignment, and the
  // nearest-level assignment is optimal for the new theta.
  double error = a.evaluate(x, levels, theta);
  for (int it = 0; it < max_iterations; ++it) {
    const params next = a.least_squares(levels);
    const double next_error = scratch.evaluate(x, levels, next);
    if (!(next_error < error)) break;
    const bool converged = next_error > error * (1 - 1e-9);
    theta = next;
    error = next_error;
    std::swap(a, scratch);
    if (converged) break;
  }
  return error;
}

}  // namespace qsl::detail
