#pragma once
// The engine behind every decomposition method: fit a *structured* level set to the values of
// one group.
//
// A level set is a table of codes c with feature vectors f_c (p entries) and parameters theta:
// level_c = f_c . theta. BCQ with k binary planes has 2^k codes with f_c in {-1,+1}^k and
// theta = alpha; the ternary basis has 3^k codes in {-1,0,+1}^k; a uniform activation quantizer
// has f_q = (1, q) and theta = (x_min, step).
//
// Given theta, the best code of every value is the nearest level, so after sorting the values
// once the assignment is 2^k contiguous segments, found by binary search, and the weighted error
// of the whole group follows from prefix sums of w, w*x and w*x^2: one evaluation costs
// O(L log n) instead of O(n L). That is what lets qsl try hundreds of starts per group.

#include <array>
#include <cstdint>
#include <vector>

#include "qsl/weight_code.hpp"

namespace qsl::detail {

inline constexpr int max_params = 8;
using params = std::array<double, max_params>;

/// The codes of a level set and their feature vectors.
class level_set {
 public:
  /// All 2^k (binary) or 3^k (ternary) codes of k planes.
  static level_set planes(qsl::basis basis, int k);
  /// The 2^bits codes of a uniform quantizer: features (1, q), theta = (x_min, step).
  static level_set uniform(int bits);

  int size() const { return size_; }
  int dims() const { return dims_; }
  const float* features(int code) const { return features_.data() + code * dims_; }
  double level(int code, const params& theta) const {
    double v = 0;
    const float* f = features(code);
    for (int j = 0; j < dims_; ++j) v += f[j] * theta[j];
    return v;
  }

 private:
  int size_ = 0;
  int dims_ = 0;
  std::vector<float> features_;  // [code][dim]
};

/// The values of one group sorted once, with weighted prefix sums.
class sorted_values {
 public:
  /// `weights` may be null (all ones). Values and weights must be finite; weights >= 0.
  void assign(const float* values, const float* weights, std::int64_t n);

  std::int64_t size() const { return static_cast<std::int64_t>(values_.size()); }
  const std::vector<float>& values() const { return values_; }      ///< ascending
  const std::vector<std::int32_t>& order() const { return order_; }  ///< original index of each
  /// Weighted sums over sorted positions [a, b).
  double weight(std::int64_t a, std::int64_t b) const { return w_[b] - w_[a]; }
  double sum(std::int64_t a, std::int64_t b) const { return s_[b] - s_[a]; }
  double sum_squares(std::int64_t a, std::int64_t b) const { return q_[b] - q_[a]; }
  double total_sum_squares() const { return q_.back(); }
  /// First sorted position at or after `first` whose value is >= t.
  std::int64_t lower_bound(std::int64_t first, double t) const;

 private:
  std::vector<float> values_;
  std::vector<std::int32_t> order_;
  std::vector<double> w_, s_, q_;  // prefix sums, n + 1 entries
  std::vector<std::uint32_t> keys_, key_scratch_;
  std::vector<std::int32_t> order_scratch_;
};

/// The nearest-level assignment of a group for one theta: per code, the sorted range it owns
/// and the weighted statistics of that range.
class assignment {
 public:
  /// Assigns every value to its nearest level and returns the weighted squared error.
  double evaluate(const sorted_values& x, const level_set& levels, const params& theta);

  /// Least-squares theta for the current assignment (min-norm when the codes in use do not
  /// determine every parameter).
  params least_squares(const level_set& levels) const;
  /// Best scale s for levels s * (f_c . shape) under the current assignment (0 if none).
  double best_scale(const level_set& levels, const params& shape) const;

  /// Code of every value in original order (after evaluate()).
  void codes(const sorted_values& x, std::vector<std::int32_t>& out) const;

 private:
  struct segment {
    std::int32_t code;
    std::int64_t begin, end;  // sorted positions
    double weight, sum;
  };
  std::vector<segment> segments_;  // in increasing level order, empty ones dropped
  std::vector<std::pair<double, std::int32_t>> sorted_levels_;
};

/// Alternating: assignment -> least squares until the error stops falling. Updates theta and
/// returns its error; `a` is left holding the assignment of the returned theta. `scratch` is
/// working space (kept by the caller so that no round allocates).
double alternate(const sorted_values& x, const level_set& levels, params& theta, int max_iterations,
                 assignment& a, assignment& scratch);

}  // namespace qsl::detail
