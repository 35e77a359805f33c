// The CUDA kernels beside cuBLAS (SGEMV, HGEMV as a one-column GemmEx, SGEMM, HGEMM) in one
// binary, on whatever GPU is present (every case is skipped, with the reason, without one).
//
//   build/bench/cuda_bench --benchmark_out=cuda.json --benchmark_out_format=json
//
// GEMV: N x D = 4096^2 and 8192^2, k = 1, 2, 3 planes, groups of 128, float activations
// (look-up tables, kernel 1, and warp-level decode, kernel 4) and 4-bit activations (encoder +
// popcount), and k = 2 with fp16 activations. Batch 8, 16, 64: the look-up GEMV beside the
// tensor-core GEMM (kernel 2). Counters: weights_per_s (N D batch / time), weight_GBps (bytes
// of the device weights read per call / time) and roofline_pct (weight_GBps / the device's memory bandwidth, measured
// in this process as a device-to-device copy). Times come from CUDA events (manual time), per
// call, over 20 calls: back to back (name<false>: what a plain call costs, host API work
// included) and replayed as a CUDA graph (name<true>: the device's time).
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <map>
#include <random>
#include <tuple>

#include "qsl/cuda.hpp"

namespace {

bool have_gpu() { return qsl::cuda::device_count() > 0; }

template <class T>
T* device_array(std::size_t count, float scale, std::uint32_t seed) {
  std::vector<T> host(count);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  for (auto& v : host) v = static_cast<T>(normal(rng));
  T* d = nullptr;
  cudaMalloc(&d, count * sizeof(T));
  cudaMemcpy(d, host.data(), count * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}

// Bytes per second of a device-to-device copy (read + write), measured once.
double memory_bandwidth() {
  static const double bandwidth = [] {
    const std::size_t bytes = std::size_t{1} << 30;
    void *a = nullptr, *b = nullptr;
    cudaMalloc(&a, bytes);
    cudaMalloc(&b, bytes);
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(start);
    for (int i = 0; i < 10; ++i) cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    cudaFree(a);
    cudaFree(b);
    return 2.0 * 10 * static_cast<double>(bytes) / (ms * 1e-3);
  }();
  return bandwidth;
}

constexpr int calls_per_timing = 20;

cudaStream_t bench_stream() {
  static const cudaStream_t stream = [] {
    cudaStream_t s = nullptr;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    return s;
  }();
  return stream;
}

// Per call: calls_per_timing back-to-back calls fn(stream) between two CUDA events. With
// Graph, the calls are captured once into a CUDA graph that each iteration replays: the
// device's time without the host's per-call API work (launches, stream-ordered scratch), which
// is what a deployment that records its forward passes as graphs (CUDA graphs, TensorRT) pays.
template <bool Graph, class Fn>
void timed(benchmark::State& state, Fn fn) {
  const cudaStream_t s = bench_stream();
  fn(s);  // warm up (tables of the pool, cuBLAS's workspace)
  cudaGraphExec_t exec = nullptr;
  if (Graph) {
    cudaGraph_t graph = nullptr;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    for (int i = 0; i < calls_per_timing; ++i) fn(s);
    if (cudaStreamEndCapture(s, &graph) != cudaSuccess ||
        cudaGraphInstantiateWithFlags(&exec, graph, 0) != cudaSuccess) {
      cudaGetLastError();
      return state.SkipWithError("the calls could not be captured into a CUDA graph");
    }
    cudaGraphDestroy(graph);
  }
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (auto _ : state) {
    cudaEventRecord(start, s);
    if (Graph)
      cudaGraphLaunch(exec, s);
    else
      for (int i = 0; i < calls_per_timing; ++i) fn(s);
    cudaEventRecord(stop, s);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    state.SetIterationTime(ms * 1e-3 / calls_per_timing);
  }
  if (exec != nullptr) cudaGraphExecDestroy(exec);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

void rates(benchmark::State& state, std::int64_t n, std::int64_t d, std::int64_t batch,
           double weight_bytes) {
  state.counters["weights_per_s"] = benchmark::Counter(
      static_cast<double>(n * d * batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_GBps"] =
      benchmark::Counter(weight_bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["roofline_pct"] = benchmark::Counter(
      100.0 * weight_bytes / memory_bandwidth(), benchmark::Counter::kIsIterationInvariantRate);
}

// A layer of random codes (speed does not depend on how the planes were chosen).
const qsl::cuda::quantized_dense& layer(std::int64_t n, std::int64_t d, int k, int kx) {
  static std::map<std::tuple<std::int64_t, std::int64_t, int, int>,
                  std::unique_ptr<qsl::cuda::quantized_dense>> cache;
  auto& slot = cache[{n, d, k, kx}];
  if (!slot) {
    qsl::dense_parameters p;
    p.code = qsl::make_weight_code(n, d, k, qsl::basis::binary, 128);
    std::mt19937_64 rng(7);
    for (auto& w : p.code.signs) w = rng();
    for (std::int64_t r = 0; r < n; ++r)
      for (int j = 0; j < k; ++j) {
        qsl::word* plane = p.code.sign_plane(r, j);
        const std::int64_t last = p.code.words_per_plane() - 1;
        plane[last] &= qsl::range_mask(last, 0, d);
      }
    for (std::size_t i = 0; i < p.code.coefficients.size(); ++i)
      p.code.coefficients[i] = 1.0f / static_cast<float>(1 + i % 3);
    qsl::compute_offsets(p.code);
    p.activations.bits = kx;
    slot = std::make_unique<qsl::cuda::quantized_dense>(qsl::quantized_dense(p));
  }
  return *slot;
}

// Arguments: N, D, batch, k, kx, kernel (qsl::cuda::kernel: 0 automatic, 1 lut_gemv,
// 2 wmma_gemm, 4 decode_gemv), fp16 (1: fp16 activations in and out, as cuBLAS HGEMV's).
template <bool Graph>
void BM_Qsl(benchmark::State& state) {
  if (!have_gpu()) return state.SkipWithError("no CUDA device");
  const std::int64_t n = state.range(0), d = state.range(1), batch = state.range(2);
  const int k = static_cast<int>(state.range(3)), kx = static_cast<int>(state.range(4));
  const auto which = static_cast<qsl::cuda::kernel>(state.range(5));
  const bool half = state.range(6) != 0;
  const auto& gpu = layer(n, d, k, kx);
  float* x = device_array<float>(static_cast<std::size_t>(batch * d), 1.0f, 1);
  float* y = device_array<float>(static_cast<std::size_t>(batch * n), 1.0f, 2);
  if (half) {  // the first halves of the same arrays
    const auto* hx = reinterpret_cast<const qsl::cuda::fp16*>(x);
    auto* hy = reinterpret_cast<qsl::cuda::fp16*>(y);
    timed<Graph>(state, [&](cudaStream_t s) { gpu.forward(hx, batch, hy, s, which); });
  } else {
    timed<Graph>(state, [&](cudaStream_t s) { gpu.forward(x, batch, y, s, which); });
  }
  rates(state, n, d, batch, static_cast<double>(gpu.device_bytes()));
  cudaFree(x);
  cudaFree(y);
}

cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t c;
    cublasCreate(&c);
    cublasSetStream(c, bench_stream());
    return c;
  }();
  return h;
}

// Arguments: N, D, batch. W is row-major N x D (column-major D x N), y = x W^T.
template <bool Graph>
void BM_CublasFloat(benchmark::State& state) {
  if (!have_gpu()) return state.SkipWithError("no CUDA device");
  const int n = static_cast<int>(state.range(0)), d = static_cast<int>(state.range(1));
  const int batch = static_cast<int>(state.range(2));
  float* w = device_array<float>(static_cast<std::size_t>(n) * d, 1.0f, 3);
  float* x = device_array<float>(static_cast<std::size_t>(batch) * d, 1.0f, 4);
  float* y = device_array<float>(static_cast<std::size_t>(batch) * n, 1.0f, 5);
  const float one = 1, zero = 0;
  timed<Graph>(state, [&](cudaStream_t) {
    if (batch == 1)
      cublasSgemv(handle(), CUBLAS_OP_T, d, n, &one, w, d, x, 1, &zero, y, 1);  // SGEMV
    else
      cublasSgemm(handle(), CUBLAS_OP_T, CUBLAS_OP_N, n, batch, d, &one, w, d, x, d, &zero, y,
                  n);  // SGEMM
  });
  rates(state, n, d, batch, 4.0 * n * d);
  cudaFree(w);
  cudaFree(x);
  cudaFree(y);
}

// Arguments: N, D, batch. fp16 data, fp32 accumulation (HGEMV is a one-column GemmEx).
template <bool Graph>
void BM_CublasHalf(benchmark::State& state) {
  if (!have_gpu()) return state.SkipWithError("no CUDA device");
  const int n = static_cast<int>(state.range(0)), d = static_cast<int>(state.range(1));
  const int batch = static_cast<int>(state.range(2));
  __half* w = device_array<__half>(static_cast<std::size_t>(n) * d, 1.0f, 6);
  __half* x = device_array<__half>(static_cast<std::size_t>(batch) * d, 1.0f, 7);
  __half* y = device_array<__half>(static_cast<std::size_t>(batch) * n, 1.0f, 8);
  const float one = 1, zero = 0;
  timed<Graph>(state, [&](cudaStream_t) {
    cublasGemmEx(handle(), CUBLAS_OP_T, CUBLAS_OP_N, n, batch, d, &one, w, CUDA_R_16F, d, x,
                 CUDA_R_16F, d, &zero, y, CUDA_R_16F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  });
  rates(state, n, d, batch, 2.0 * n * d);
  cudaFree(w);
  cudaFree(x);
  cudaFree(y);
}

constexpr std::int64_t lut = 1, wmma = 2, decode = 4, automatic = 0;

void gemv_shapes(benchmark::internal::Benchmark* b, bool qsl) {
  for (std::int64_t n : {4096, 8192}) {
    if (!qsl) {
      b->Args({n, n, 1});
      continue;
    }
    for (std::int64_t k : {1, 2, 3}) {
      b->Args({n, n, 1, k, 0, lut, 0});
      b->Args({n, n, 1, k, 0, decode, 0});
      b->Args({n, n, 1, k, 4, automatic, 0});
    }
    b->Args({n, n, 1, 2, 0, lut, 1});
  }
}
void gemm_shapes(benchmark::internal::Benchmark* b, bool qsl) {
  for (std::int64_t batch : {8, 16, 64}) {
    if (!qsl) {
      b->Args({4096, 4096, batch});
      continue;
    }
    b->Args({4096, 4096, batch, 2, 0, lut, 0});
    b->Args({4096, 4096, batch, 2, 0, wmma, 0});
    b->Args({4096, 4096, batch, 2, 4, automatic, 0});
  }
}

// Plain calls: every shape; graph replays: the GEMV shapes and batch 64.
void graph_shapes(benchmark::internal::Benchmark* b, bool qsl) {
  for (std::int64_t n : {4096, 8192}) {
    if (!qsl) {
      b->Args({n, n, 1});
      continue;
    }
    for (std::int64_t k : {1, 2, 3}) b->Args({n, n, 1, k, 0, lut, 0});
    b->Args({n, n, 1, 2, 0, decode, 0});
    b->Args({n, n, 1, 2, 4, automatic, 0});
    b->Args({n, n, 1, 2, 0, lut, 1});
  }
  if (!qsl) {
    b->Args({4096, 4096, 64});
    return;
  }
  b->Args({4096, 4096, 64, 2, 0, wmma, 0});
  b->Args({4096, 4096, 64, 2, 0, wmma, 1});
}

#define QSL_CUBLAS_BENCH(name)                                                             \
  BENCHMARK_TEMPLATE(name, false)                                                          \
      ->Apply([](auto* b) { gemv_shapes(b, false); gemm_shapes(b, false); })               \
      ->ArgNames({"N", "D", "batch"})->UseManualTime()->Unit(benchmark::kMicrosecond);     \
  BENCHMARK_TEMPLATE(name, true)                                                           \
      ->Apply([](auto* b) { graph_shapes(b, false); })                                     \
      ->ArgNames({"N", "D", "batch"})->UseManualTime()->Unit(benchmark::kMicrosecond);
QSL_CUBLAS_BENCH(BM_CublasFloat)
QSL_CUBLAS_BENCH(BM_CublasHalf)
BENCHMARK_TEMPLATE(BM_Qsl, false)
    ->Apply([](auto* b) { gemv_shapes(b, true); gemm_shapes(b, true); })
    ->ArgNames({"N", "D", "batch", "k", "kx", "kernel", "fp16"})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_Qsl, true)
    ->Apply([](auto* b) { graph_shapes(b, true); })
    ->ArgNames({"N", "D", "batch", "k", "kx", "kernel", "fp16"})->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
