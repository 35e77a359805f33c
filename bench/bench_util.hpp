#pragma once
// Shared pieces of the benchmarks: seeded N(0, 1) matrices, made once per shape and seed so
// that generating them (slower than some of the timed work) is never part of a timing; the
// Eigen baseline of a dense layer; thread counts; the main() of the binaries that time Eigen
// beside qsl's thread pool.

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <random>
#include <thread>
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

using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// gaussian(rows, cols, seed) stored row-major (the layout of qsl's x and y), made once.
inline const row_matrix& gaussian_rows(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  static std::map<std::tuple<std::int64_t, std::int64_t, std::uint32_t>, row_matrix> cache;
  row_matrix& m = cache[{rows, cols, seed}];
  if (m.size() == 0) m = gaussian(rows, cols, seed);
  return m;
}

inline int all_threads() {
  return static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
}
/// A benchmark's thread argument: 0 means all threads.
inline int threads_of(std::int64_t arg) { return arg == 0 ? all_threads() : static_cast<int>(arg); }

/// Times the fp32 baseline y = x W^T: Eigen's GEMV at batch 1 (x one row), its GEMM otherwise.
inline void time_eigen_forward(benchmark::State& state, const row_matrix& w, const row_matrix& x) {
  row_matrix y(x.rows(), w.rows());
  for (auto _ : state) {
    if (x.rows() == 1)
      y.row(0).noalias() = (w * x.row(0).transpose()).transpose();  // GEMV
    else
      y.noalias() = x * w.transpose();  // GEMM
    benchmark::DoNotOptimize(y.data());
  }
}

/// main() for binaries that time Eigen beside qsl's thread pool.
inline int run_benchmarks(int argc, char** argv) {
  // Eigen's OpenMP threads must not spin between its GEMMs while qsl's pool runs.
  setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace qsl::bench
