// Cost and error of qsl::encode_activations for a batch of 64 Gaussian vectors of 4096 values,
// kx = 1..8 bits, with the two ways of choosing the step (activation_code.hpp):
//   * per vector: min/max of every vector, found online;
//   * calibrated: fixed offline by calibrate_activations on a separate 256 x 4096 sample.
// Both report nmse = ||x - decode(encode(x))||^2 / ||x||^2. The per-vector range of a Gaussian
// vector spans its extremes, which wastes levels on the tails; at kx = 2 the calibrated step is
// expected near 0.12 against about 0.50 per vector.
//
//   build-bench/bench/activation_bench --benchmark_filter='/kx:2$'

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cstdint>
#include <random>

#include "bench_util.hpp"
#include "qsl/activation_code.hpp"

namespace {

constexpr std::int64_t kBatch = 64;
constexpr std::int64_t kLength = 4096;
constexpr std::int64_t kCalibrationVectors = 256;

// Row-major: the layout of activation batches.
qsl::row_matrix_f gaussian(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  return qsl::bench::gaussian(rows, cols, seed);
}

// Made once, never inside a timed loop. The calibration sample is independent of the inputs
// it is judged on, as it would be in deployment.
const qsl::row_matrix_f& inputs() {
  static const qsl::row_matrix_f x = gaussian(kBatch, kLength, 1);
  return x;
}
const qsl::row_matrix_f& calibration_sample() {
  static const qsl::row_matrix_f x = gaussian(kCalibrationVectors, kLength, 2);
  return x;
}

double encoding_nmse(const qsl::row_matrix_f& x, const qsl::activation_code& code) {
  const Eigen::MatrixXd diff = (x - qsl::decode_activations(code)).cast<double>();
  return diff.squaredNorm() / x.cast<double>().squaredNorm();
}

void run_encode(benchmark::State& state, const qsl::activation_quantizer& quantizer) {
  const qsl::row_matrix_f& x = inputs();
  qsl::activation_code code;
  for (auto _ : state) {
    code = qsl::encode_activations(x, quantizer);
    benchmark::DoNotOptimize(code.planes.data());
  }
  state.counters["nmse"] = encoding_nmse(x, code);
  state.counters["values_per_s"] = benchmark::Counter(
      static_cast<double>(x.size()), benchmark::Counter::kIsIterationInvariantRate);
}

// Argument: kx.
void BM_EncodePerVector(benchmark::State& state) {
  qsl::activation_quantizer quantizer;
  quantizer.bits = static_cast<int>(state.range(0));
  run_encode(state, quantizer);
}

// Argument: kx. Calibration is offline work, so it stays out of the timing.
void BM_EncodeCalibrated(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const qsl::activation_quantizer quantizer =
      qsl::calibrate_activations(calibration_sample(), bits);
  state.counters["step"] = quantizer.step;
  run_encode(state, quantizer);
}

BENCHMARK(BM_EncodePerVector)->ArgName("kx")->DenseRange(1, 8)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EncodeCalibrated)->ArgName("kx")->DenseRange(1, 8)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
