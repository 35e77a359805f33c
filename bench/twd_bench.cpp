// The TWD layer (qsl::twd_dense) against Eigen's float GEMV/GEMM of the same W, in one binary
// and one run, and the time of the factorization itself.
//
//   build/bench/twd_bench --benchmark_min_time=0.2s
//
// BM_TwdForward: N x D = 512 x 3136 (the bundled model's FC layer) and 4096 x 4096, K chosen by
// twd_basis_vectors_for for 1 and 2 stored bits per weight, batch 1 and 64, float activations
// (kx = 0) or 4-bit (kx = 4), one thread and all threads. Random ternary bases and mixing stand
// in for a factorization: the speed does not depend on the values. BM_Eigen is fp32 W x (GEMV
// at batch 1, GEMM otherwise) at the same shape, batch and threads. Every case reports
//   weights_per_s  N * D * batch / time (the dense layer's weights, whatever the method)
// BM_Factorize times factorize_ternary at 512 x 3136, K = 128, 10 rounds, without and with a
// 3136 x 3136 calibration matrix (all threads), and reports the errors it reached.

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <map>
#include <random>
#include <tuple>
#include <utility>

#include "bench_util.hpp"
#include "qsl/cpu.hpp"
#include "qsl/twd.hpp"
#include "qsl/twd_dense.hpp"

namespace {

using qsl::bench::row_matrix;
using qsl::bench::threads_of;

constexpr std::uint32_t kWeightSeed = 1, kInputSeed = 3;

const row_matrix& weights(std::int64_t n, std::int64_t d) {
  return qsl::bench::gaussian_rows(n, d, kWeightSeed);
}
const row_matrix& inputs(std::int64_t batch, std::int64_t d) {
  return qsl::bench::gaussian_rows(batch, d, kInputSeed);
}

// A layer with K random ternary basis vectors (a third zeros) and random mixing.
const qsl::twd_dense& layer(std::int64_t n, std::int64_t d, int bits, int kx) {
  static std::map<std::tuple<std::int64_t, std::int64_t, int, int>, qsl::twd_dense> cache;
  auto it = cache.find({n, d, bits, kx});
  if (it != cache.end()) return it->second;
  const int k = qsl::twd_basis_vectors_for(n, d, bits);
  qsl::twd_dense_parameters p;
  p.code.rows = n;
  p.code.cols = d;
  p.code.basis = qsl::make_weight_code(k, d, 1, qsl::basis::ternary, 0);
  std::mt19937 rng(kWeightSeed + static_cast<std::uint32_t>(bits));
  for (std::int64_t r = 0; r < k; ++r)
    for (std::int64_t c = 0; c < d; ++c) {
      if (rng() % 3 == 0) continue;
      qsl::set_bit(p.code.basis.mask_plane(r, 0), c);
      if (rng() % 2) qsl::set_bit(p.code.basis.sign_plane(r, 0), c);
    }
  for (float& a : p.code.basis.coefficients) a = 1.0f;
  qsl::compute_offsets(p.code.basis);
  std::normal_distribution<float> normal;
  p.code.mixing.resize(static_cast<std::size_t>(k * n));
  for (float& c : p.code.mixing) c = normal(rng);
  p.activations.bits = kx;
  return cache.emplace(std::make_tuple(n, d, bits, kx), qsl::twd_dense(std::move(p))).first->second;
}

void set_rate(benchmark::State& state, std::int64_t n, std::int64_t d, std::int64_t batch) {
  state.counters["weights_per_s"] = benchmark::Counter(
      static_cast<double>(n * d * batch), benchmark::Counter::kIsIterationInvariantRate);
}

// Arguments: N, D, batch, threads (0: all).
void BM_Eigen(benchmark::State& state) {
  const std::int64_t n = state.range(0), d = state.range(1), batch = state.range(2);
  Eigen::setNbThreads(threads_of(state.range(3)));
  qsl::bench::time_eigen_forward(state, weights(n, d), inputs(batch, d));
  set_rate(state, n, d, batch);
}

// Arguments: N, D, batch, threads (0: all), stored bits per weight, kx.
void BM_TwdForward(benchmark::State& state) {
  const std::int64_t n = state.range(0), d = state.range(1), batch = state.range(2);
  const int bits = static_cast<int>(state.range(4)), kx = static_cast<int>(state.range(5));
  qsl::set_cpu_threads(threads_of(state.range(3)));
  const qsl::twd_dense& l = layer(n, d, bits, kx);
  const row_matrix& x = inputs(batch, d);
  row_matrix y(batch, n);
  for (auto _ : state) {
    l.forward(x.data(), batch, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  set_rate(state, n, d, batch);
  state.counters["K"] = static_cast<double>(l.basis_vectors());
  state.counters["bits_per_weight"] = l.bits_per_weight();
  state.SetLabel(qsl::to_string(qsl::active_cpu_target()));
}

void shapes(benchmark::internal::Benchmark* b, bool twd) {
  for (auto [n, d] : {std::pair<std::int64_t, std::int64_t>{512, 3136}, {4096, 4096}})
    for (std::int64_t batch : {1, 64})
      for (std::int64_t threads : {1, 0}) {
        if (!twd) {
          b->Args({n, d, batch, threads});
          continue;
        }
        for (std::int64_t kx : {0, 4})
          for (std::int64_t bits : {1, 2}) b->Args({n, d, batch, threads, bits, kx});
      }
}

// Arguments: with calibration (0 or 1). 512 x 3136, K = 128, 10 refinement rounds.
void BM_Factorize(benchmark::State& state) {
  const bool calibrated = state.range(0) != 0;
  const Eigen::MatrixXf& w = qsl::bench::gaussian(512, 3136, kWeightSeed);
  // Correlated inputs (as activations are): each column leans on the one before.
  static Eigen::MatrixXf x;
  if (calibrated && x.size() == 0) {
    x = qsl::bench::gaussian(3136, 3136, kInputSeed);
    for (Eigen::Index c = 1; c < x.cols(); ++c) x.col(c) = 0.8f * x.col(c - 1) + 0.6f * x.col(c);
  }
  qsl::twd_options o;
  o.basis_vectors = 128;
  o.refine_iterations = 10;
  if (calibrated) o.calibration = x;
  qsl::twd_code code;
  for (auto _ : state) {
    code = qsl::factorize_ternary(w, o);
    benchmark::DoNotOptimize(code.mixing.data());
  }
  state.counters["weight_error"] = qsl::normalized_error(w, code);
  if (calibrated) state.counters["output_error"] = qsl::normalized_output_error(w, code, x);
}

BENCHMARK(BM_Eigen)->Apply([](auto* b) { shapes(b, false); })
    -> ArgNames({"N", "D", "batch", "threads"}) -> UseRealTime() -> Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TwdForward)
    ->Apply([](auto* b) { shapes(b, true); })
        -> ArgNames({"N", "D", "batch", "threads", "bits", "kx"}) -> UseRealTime()
            -> Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Factorize)
    ->ArgNames({"calibrated"})
    ->Arg(0)
    ->Arg(1)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);

}  // namespace

int main(int argc, char** argv) { return qsl::bench::run_benchmarks(argc, argv); }
