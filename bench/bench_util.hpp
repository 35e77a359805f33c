#pragma once
// Shared inputs for the benchmarks: seeded N(0, 1) matrices, made once per shape and seed so
// that generating them (slower than some of the timed work) is never part of a timing.

#include <Eigen/Core>
#include <cstdint>
#include <map>
#include <random>
#include <tuple>

namespace qsl::bench {

inline const Eigen::MatrixXf& gaussian(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  static std::map<std::tuple<std::int64_t, std::int64_t, std::uint32_t>, Eigen::MatrixXf> cache;
  Eigen::MatrixXf& m = cache[{rows, cols, seed}];
  if (m.size() == 0) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    m.resize(rows, cols);
    for (Eigen::Index c = 0; c < m.cols(); ++c)
      for (Eigen::Index r = 0; r < m.rows(); ++r) m(r, c) = normal(rng);
  }
  return m;
}

}  // namespace qsl::bench
