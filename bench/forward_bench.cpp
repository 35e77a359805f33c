// The scalar reference forward of qsl::quantized_dense beside Eigen's float GEMV and GEMM on the
// same shapes, in the same binary (STYLE.md: the baseline always runs beside).
//
// The reference is the test oracle, not a fast path: plain loops, one thread. These numbers are
// the floor the SIMD and CUDA kernels start from, not a claim of speed. Every benchmark reports
// weights_per_s = out_features * in_features * batch / time, so rows compare directly.
//
// Arguments: out_features (N), in_features (D), batch; for the reference also kx (0: float
// activations, 4: activations encoded as 4 bit planes with a per-vector scale). Weights are
// k = 2 planes with groups of 128 columns.
//
//   build-bench/bench/forward_bench --benchmark_filter='N:1024/D:1024'

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cstdint>
#include <map>
#include <random>
#include <tuple>

#include "bench_util.hpp"
#include "qsl/quantized_dense.hpp"

namespace {

constexpr std::uint32_t kWeightSeed = 1;
constexpr std::uint32_t kInputSeed = 3;

using qsl::bench::gaussian;

// One compressed layer per (N, D, kx), made once. The forward time does not depend on how the
// planes were chosen, so the cheap greedy decomposition keeps start-up short; per-vector
// activation scaling needs no calibration inputs and times the encoding step as part of forward.
const qsl::quantized_dense& layer(std::int64_t n, std::int64_t d, int kx) {
  static std::map<std::tuple<std::int64_t, std::int64_t, int>, qsl::quantized_dense> cache;
  const auto key = std::make_tuple(n, d, kx);
  auto it = cache.find(key);
  if (it == cache.end()) {
    qsl::quantized_dense_options options;
    options.weights.bits = 2;
    options.weights.group_size = 128;
    options.weights.method = qsl::method::greedy;
    options.activation_bits = kx;
    options.scaling = qsl::activation_scaling::per_vector;
    it = cache.emplace(key, qsl::quantized_dense::compress(gaussian(n, d, kWeightSeed), options))
             .first;
  }
  return it->second;
}

void set_rate(benchmark::State& state, std::int64_t n, std::int64_t d, std::int64_t batch) {
  state.counters["weights_per_s"] = benchmark::Counter(
      static_cast<double>(n * d * batch), benchmark::Counter::kIsIterationInvariantRate);
}

// Arguments: N, D (batch 1).
void BM_EigenGemv(benchmark::State& state) {
  const std::int64_t n = state.range(0), d = state.range(1);
  const Eigen::MatrixXf& w = gaussian(n, d, kWeightSeed);
  const Eigen::VectorXf x = gaussian(d, 1, kInputSeed);
  Eigen::VectorXf y(n);
  for (auto _ : state) {
    y.noalias() = w * x;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, n, d, 1);
}
BENCHMARK(BM_EigenGemv)
    ->ArgNames({"N", "D"})
    ->Args({1024, 1024})
    ->Args({4096, 4096})
    ->Unit(benchmark::kMicrosecond);

// Arguments: N, D, batch.
void BM_EigenGemm(benchmark::State& state) {
  const std::int64_t n = state.range(0), d = state.range(1), batch = state.range(2);
  const Eigen::MatrixXf& w = gaussian(n, d, kWeightSeed);
  const Eigen::MatrixXf& x = gaussian(d, batch, kInputSeed);
  Eigen::MatrixXf y(n, batch);
  for (auto _ : state) {
    y.noalias() = w * x;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, n, d, batch);
}
BENCHMARK(BM_EigenGemm)
    ->ArgNames({"N", "D", "batch"})
    ->Args({1024, 1024, 64})
    ->Args({4096, 4096, 64})
    ->Unit(benchmark::kMicrosecond);

// Arguments: N, D, batch, kx.
void BM_ReferenceForward(benchmark::State& state) {
  const std::int64_t n = state.range(0), d = state.range(1), batch = state.range(2);
  const int kx = static_cast<int>(state.range(3));
  const qsl::quantized_dense& l = layer(n, d, kx);
  // Row-major batch x D, the layout forward() takes; the same values as the Eigen inputs.
  const qsl::row_matrix_f x = gaussian(d, batch, kInputSeed).transpose();
  qsl::row_matrix_f y(batch, n);
  // The scalar reference itself (the layer's forward runs the SIMD kernels: cpu_kernels_bench).
  const float* bias = l.bias().empty() ? nullptr : l.bias().data();
  for (auto _ : state) {
    if (kx == 0) {
      qsl::reference::forward_float<float>(l.code(), x.data(), batch, bias, y.data());
    } else {
      const qsl::activation_code encoded = qsl::encode_activations(x, l.activations());
      qsl::reference::forward_encoded<float>(l.code(), encoded, bias, y.data());
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, n, d, batch);
}
// With float activations the reference walks the set bits of every weight word and takes tens of
// ms per call: a few fixed iterations, and batch 64 only on 1024 x 1024. Encoded activations
// (popcount over whole words) are fast enough for the usual automatic iteration count.
BENCHMARK(BM_ReferenceForward)
    ->ArgNames({"N", "D", "batch", "kx"})
    ->Args({1024, 1024, 1, 0})
    ->Args({4096, 4096, 1, 0})
    ->Args({1024, 1024, 64, 0})
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ReferenceForward)
    ->ArgNames({"N", "D", "batch", "kx"})
    ->Args({1024, 1024, 1, 4})
    ->Args({4096, 4096, 1, 4})
    ->Args({1024, 1024, 64, 4})
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  // The reference forward is single-threaded, so Eigen gets one thread too: the comparison is
  // per core. (Eigen only runs threads when built with OpenMP; this makes it explicit either way.)
  Eigen::setNbThreads(1);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
