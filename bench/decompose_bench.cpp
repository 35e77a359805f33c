// Offline cost and quality of qsl::decompose on i.i.d. N(0, 1) weights.
//
// Every case reports the normalized error nmse = ||W - W_hat||^2 / ||W||^2 and its ratio to the
// Lloyd-Max floor for a Gaussian with 2^k levels (DESIGN.md section 1), so a speed-up that
// costs accuracy shows in the same row. Decomposition is multi-threaded (all hardware threads),
// hence UseRealTime(): CPU time of the main thread would hide the workers.
//
//   build-bench/bench/decompose_bench --benchmark_filter='MultiStart/k:3'
//
// The issue target is BM_DecomposeMultiStart/k:3/rows:4096/group:0 at <= 2 s on 2 cores.

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <thread>
#include <tuple>

#include "bench_util.hpp"
#include "qsl/decompose.hpp"

namespace {

constexpr std::int64_t kCols = 4096;
constexpr std::uint32_t kWeightSeed = 1;
constexpr std::uint32_t kCalibrationSeed = 2;

// Normalized MSE of the Lloyd-Max quantizer of N(0, 1) with 2^k levels, k = 1..4.
constexpr double kLloydMax[] = {0.3634, 0.1175, 0.03455, 0.00950};

using qsl::bench::gaussian;

// Calibration inputs whose columns differ in scale (every 7th column 5x, the others 0.3x), so
// that the weight error and the output error disagree about which weights matter most. With
// isotropic inputs the data-aware fit would have nothing to exploit.
const Eigen::MatrixXf& anisotropic_calibration() {
  static const Eigen::MatrixXf x = [] {
    Eigen::MatrixXf m = gaussian(256, kCols, kCalibrationSeed);
    for (Eigen::Index c = 0; c < m.cols(); ++c) m.col(c) *= (c % 7 == 0) ? 5.0f : 0.3f;
    return m;
  }();
  return x;
}

void set_common_counters(benchmark::State& state, const Eigen::MatrixXf& w) {
  state.counters["weights_per_s"] = benchmark::Counter(
      static_cast<double>(w.size()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = static_cast<double>(std::thread::hardware_concurrency());
}

// Arguments: k, rows, group size (0: one group per row).
void run_decompose(benchmark::State& state, qsl::method method) {
  const int bits = static_cast<int>(state.range(0));
  const Eigen::MatrixXf& w = gaussian(state.range(1), kCols, kWeightSeed);
  qsl::decompose_options options;
  options.bits = bits;
  options.method = method;
  options.group_size = state.range(2);

  qsl::weight_code code;
  for (auto _ : state) {
    code = qsl::decompose(w, options);
    benchmark::DoNotOptimize(code.coefficients.data());
  }
  // Quality is a property of the result, not of the timing: measured once, outside the loop.
  const double nmse = qsl::normalized_error(w, code);
  state.counters["nmse"] = nmse;
  if (bits >= 1 && bits <= 4) state.counters["ratio_to_lloyd_max"] = nmse / kLloydMax[bits - 1];
  set_common_counters(state, w);
}

void BM_DecomposeGreedy(benchmark::State& state) { run_decompose(state, qsl::method::greedy); }
void BM_DecomposeAlternating(benchmark::State& state) {
  run_decompose(state, qsl::method::alternating);
}
void BM_DecomposeMultiStart(benchmark::State& state) {
  run_decompose(state, qsl::method::multi_start);
}

// k = 1..4 on 1024 x 4096, one group per row; plus groups of 128 at k = 2, 3.
void method_sweep(benchmark::internal::Benchmark* b) {
  b->ArgNames({"k", "rows", "group"});
  for (int k = 1; k <= 4; ++k) b->Args({k, 1024, 0});
  for (int k = 2; k <= 3; ++k) b->Args({k, 1024, 128});
}

// Each decomposition takes from tens of milliseconds to seconds, so a small fixed count keeps
// the whole sweep in minutes; the quality counters do not depend on it.
BENCHMARK(BM_DecomposeGreedy)
    ->Apply(method_sweep)
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_DecomposeAlternating)
    ->Apply(method_sweep)
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_DecomposeMultiStart)
    ->Apply(method_sweep)
    ->Args({3, 4096, 0})  // the issue target: <= 2 s on 2 cores
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Times decompose(w, options); reports the output error on the calibration inputs x (whether
// or not options use them), the weight error and the common counters.
void run_calibrated(benchmark::State& state, const Eigen::MatrixXf& w, const Eigen::MatrixXf& x,
                    const qsl::decompose_options& options) {
  qsl::weight_code code;
  for (auto _ : state) {
    code = qsl::decompose(w, options);
    benchmark::DoNotOptimize(code.coefficients.data());
  }
  state.counters["output_nmse"] = qsl::normalized_output_error(w, code, x);
  state.counters["nmse"] = qsl::normalized_error(w, code);
  set_common_counters(state, w);
}

// Data-aware decomposition: k = 2, multi_start, 1024 x 4096, judged by the output error on the
// calibration inputs. Argument: 1 passes them in options.weights.calibration, 0 does not (the
// plain weight fit, for comparison in the same run).
void BM_DecomposeDataAware(benchmark::State& state) {
  const bool use_calibration = state.range(0) != 0;
  const Eigen::MatrixXf& w = gaussian(1024, kCols, kWeightSeed);
  const Eigen::MatrixXf& x = anisotropic_calibration();
  qsl::decompose_options options;
  options.bits = 2;
  options.method = qsl::method::multi_start;
  if (use_calibration) options.calibration = x;

  run_calibrated(state, w, x, options);
}
BENCHMARK(BM_DecomposeDataAware)
    ->ArgName("calibrated")
    ->Arg(0)
    ->Arg(1)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Error feedback (options.error_feedback) against the plain calibrated fit, on the shape of the
// bundled model's FC layer: W 512 x 3136 (N(0, 1)), k = 2, groups of 128 or one per row, and
// 3136 correlated calibration inputs X = Z A / sqrt(D) (Z N(0, 1), A a random mixing), so that
// H = X^T X is far from diagonal. M = D, as with the D x D calibration factor qsl-compress
// passes. Arguments: feedback (0 or 1), group size. Reports the output error on X (what both
// minimize) and the weight error; the time includes the plain fit, which feedback also runs.
//
//   build/bench/decompose_bench --benchmark_filter=ErrorFeedback
constexpr std::int64_t kFcRows = 512, kFcCols = 3136;

const Eigen::MatrixXf& correlated_calibration() {
  static const Eigen::MatrixXf x = gaussian(kFcCols, kFcCols, kCalibrationSeed) *
                                   gaussian(kFcCols, kFcCols, kCalibrationSeed + 1) /
                                   std::sqrt(static_cast<float>(kFcCols));
  return x;
}

void BM_DecomposeErrorFeedback(benchmark::State& state) {
  const Eigen::MatrixXf& w = gaussian(kFcRows, kFcCols, kWeightSeed);
  const Eigen::MatrixXf& x = correlated_calibration();
  qsl::decompose_options options;
  options.bits = 2;
  options.method = qsl::method::multi_start;
  options.group_size = state.range(1);
  options.calibration = x;
  options.error_feedback = state.range(0) != 0;

  run_calibrated(state, w, x, options);
}
BENCHMARK(BM_DecomposeErrorFeedback)
    ->ArgNames({"feedback", "group"})
    ->Args({0, 128})
    ->Args({1, 128})
    ->Args({0, 0})
    ->Args({1, 0})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
