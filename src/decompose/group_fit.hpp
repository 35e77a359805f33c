#pragma once
// Fits the k planes and coefficients of one group of one row with the chosen method.

#include <cstdint>
#include <vector>

#include "decompose/level_fit.hpp"
#include "qsl/decompose.hpp"

namespace qsl::detail {

/// The result for one group: coefficients (one per plane) and the code of every value, an
/// index into level_set::planes(basis, bits).
struct group_result {
  params alpha{};
  std::vector<std::int32_t> codes;
};

/// One per worker thread: owns the scratch space, so fitting allocates nothing in steady state.
class group_fitter {
 public:
  /// `group_length`: the usual number of values per group; it sets how many starts
  /// multi_start can afford.
  group_fitter(qsl::basis basis, int bits, qsl::method method, int max_iterations,
               std::int64_t group_length);

  /// Fits values[0..n) (weights may be null: all ones) and writes `out`.
  void fit(const float* values, const float* weights, std::int64_t n, group_result& out);

  const level_set& levels() const { return levels_; }

 private:
  void greedy(const float* values, const float* weights, std::int64_t n, group_result& out);

  qsl::basis basis_;
  int bits_;
  qsl::method method_;
  int max_iterations_;
  level_set levels_;
  std::vector<params> shapes_;  // grid of level-set shapes for multi_start, coarsest first

  sorted_values sorted_;
  assignment a_, scratch_;
  std::vector<float> residual_;
  std::vector<std::pair<double, params>> candidates_;
  std::vector<std::int32_t> order_;  // greedy ternary: positions by decreasing |residual|
};

/// The shapes (1, r_2, ..., r_k), 1 >= r_2 >= ... >= r_k >= 0, on the finest grid of step 1/s
/// that yields at most `budget` points.
std::vector<params> shape_grid(int k, int budget);

}  // namespace qsl::detail
