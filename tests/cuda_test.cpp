// The CUDA kernels against the CPU reference, on the GPU. Compiled everywhere CUDA is; every
// test skips, saying why, when no GPU is present (the per-lane math is also tested without a
// GPU in cuda_row_math_test.cpp).
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iterator>
#include <limits>
#include <random>
#include <vector>

#include "qsl/cuda.hpp"
#include "test_util.hpp"

namespace {

using qsl::row_matrix_f;

#define SKIP_WITHOUT_GPU()                                                               \
  if (qsl::cuda::device_count() == 0)                                                    \
  GTEST_SKIP() << "no CUDA device in this machine: the kernels are compiled but not run " \
                  "(run tools/gpu-check.sh on a machine with a GPU)"

// y = forward(x) through device memory.
row_matrix_f run(const qsl::cuda::layer& gpu, const row_matrix_f& x, qsl::cuda::kernel which) {
  float *dx = nullptr, *dy = nullptr;
  const std::size_t in = static_cast<std::size_t>(x.size()) * sizeof(float);
  const std::size_t out = static_cast<std::size_t>(x.rows() * gpu.out_features()) * sizeof(float);
  EXPECT_EQ(cudaMalloc(&dx, in), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&dy, out), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(dx, x.data(), in, cudaMemcpyHostToDevice), cudaSuccess);
  gpu.forward(dx, x.rows(), dy, nullptr, which);
  row_matrix_f y(x.rows(), gpu.out_features());
  EXPECT_EQ(cudaMemcpy(y.data(), dy, out, cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(dx);
  cudaFree(dy);
  return y;
}

// The same through fp16 device arrays: x rounded to the nearest fp16 on the host (its bits in
// x_half), y's fp16 bits returned.
using half_bits = Eigen::Matrix<std::uint16_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

half_bits to_half(const row_matrix_f& x) {
  half_bits out(x.rows(), x.cols());
  for (std::int64_t i = 0; i < x.size(); ++i)
    out.data()[i] = __half_as_ushort(__float2half_rn(x.data()[i]));
  return out;
}

row_matrix_f to_float(const half_bits& h) {
  row_matrix_f out(h.rows(), h.cols());
  for (std::int64_t i = 0; i < h.size(); ++i)
    out.data()[i] = __half2float(__ushort_as_half(h.data()[i]));
  return out;
}

template <class Layer>
half_bits run_half(const Layer& gpu, const half_bits& x, qsl::cuda::kernel which) {
  void *dx = nullptr, *dy = nullptr;
  const std::size_t in = static_cast<std::size_t>(x.size()) * 2;
  const std::size_t out = static_cast<std::size_t>(x.rows() * gpu.out_features()) * 2;
  EXPECT_EQ(cudaMalloc(&dx, in), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&dy, out), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(dx, x.data(), in, cudaMemcpyHostToDevice), cudaSuccess);
  gpu.forward(static_cast<const qsl::cuda::fp16*>(dx), x.rows(),
              static_cast<qsl::cuda::fp16*>(dy), nullptr, which);
  half_bits y(x.rows(), gpu.out_features());
  EXPECT_EQ(cudaMemcpy(y.data(), dy, out, cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(dx);
  cudaFree(dy);
  return y;
}

double gamma_bound(double m) {
  const double u = std::numeric_limits<float>::epsilon() / 2;
  return m * u / (1 - m * u);
}

// S = sum_c sum_j |alpha| |x_c| + |b| per output (the scale of every float bound below).
double magnitude(const qsl::weight_code& code, const row_matrix_f& x, std::int64_t v,
                 std::int64_t n) {
  double size = 0;
  for (std::int64_t c = 0; c < code.cols; ++c)
    for (int j = 0; j < code.bits; ++j)
      size += code.coefficient(n, c / code.group_size, j) * std::abs(double{x(v, c)});
  return size;
}

struct shape {
  std::int64_t rows, cols, group;
  int bits;
  qsl::basis basis;
};

std::vector<shape> shapes() {
  std::vector<shape> out;
  for (std::int64_t cols : {1, 63, 64, 65, 127, 131, 257, 1000})
    for (std::int64_t rows : {1, 31, 33, 100})
      for (int bits : {1, 2, 3})
        out.push_back({rows, cols, cols > 128 ? 64 : 0, bits,
                       (rows + bits) % 3 == 0 ? qsl::basis::ternary : qsl::basis::binary});
  return out;
}

qsl::quantized_dense layer_of(const shape& s, int activation_bits, std::uint32_t seed) {
  const auto code = qsl::test::random_code(s.rows, s.cols, s.bits, s.basis, s.group, seed);
  qsl::dense_parameters p;
  p.code = code;
  p.bias.assign(static_cast<std::size_t>(s.rows), 0.25f);
  p.activations.bits = activation_bits;
  return qsl::quantized_dense(p);
}

TEST(Cuda, DeviceCountNeverThrows) {
  EXPECT_GE(qsl::cuda::device_count(), 0);  // 0 on machines without a driver or a GPU
}

// Float activations, both GEMVs: within the derived bound of the reference; the warp-level
// decode adds the same numbers in the same order as the tables, so it must give the same bits.
void expect_float_gemvs_match(const shape& s, std::int64_t batch, std::uint32_t seed) {
  const auto layer = layer_of(s, 0, seed);
  const qsl::cuda::quantized_dense gpu(layer);
  const row_matrix_f x = qsl::test::gaussian_rows(batch, s.cols, seed + 1);
  const row_matrix_f y = run(gpu, x, qsl::cuda::kernel::lut_gemv);
  ASSERT_EQ(run(gpu, x, qsl::cuda::kernel::decode_gemv), y)
      << s.rows << "x" << s.cols << " k " << s.bits << " batch " << batch;
  row_matrix_f expected(batch, s.rows);
  qsl::reference::forward_float<float>(layer.code(), x.data(), batch, layer.bias().data(),
                                       expected.data());
  // Terms: D inputs, groups * k finishes, and each split (at most one per 256 columns) cuts one
  // more group in two.
  const double m = static_cast<double>(s.cols + (layer.code().groups() + s.cols / 256 + 1) * s.bits + 8);
  for (std::int64_t v = 0; v < batch; ++v)
    for (std::int64_t n = 0; n < s.rows; ++n)
      ASSERT_NEAR(y(v, n), expected(v, n),
                  6 * gamma_bound(m) * (magnitude(layer.code(), x, v, n) + 0.25))
          << s.rows << "x" << s.cols << " k " << s.bits << " batch " << batch;
}

// The tensor-core GEMM within the fp16 bound: x and W_hat are rounded to half (relative 2^-11
// each), products are exact in fp32 and summed in fp32: |error| <= (2^-10 + gamma_D) S, with
// 2^-9 and 2 gamma_D for margin.
void expect_wmma_matches(const qsl::quantized_dense& layer, const row_matrix_f& x) {
  const qsl::weight_code& code = layer.code();
  const row_matrix_f y = run(qsl::cuda::quantized_dense(layer), x, qsl::cuda::kernel::wmma_gemm);
  row_matrix_f expected(x.rows(), code.rows);
  qsl::reference::forward_float<float>(code, x.data(), x.rows(), layer.bias().data(),
                                       expected.data());
  for (std::int64_t v = 0; v < x.rows(); ++v)
    for (std::int64_t n = 0; n < code.rows; ++n)
      ASSERT_NEAR(y(v, n), expected(v, n),
                  (std::ldexp(1.0, -9) + 2 * gamma_bound(static_cast<double>(code.cols))) *
                          magnitude(code, x, v, n) + 1e-6)
          << code.rows << "x" << code.cols << " k " << code.bits << " batch " << x.rows();
}

// Encoded activations on integers in [0, 2^kx) with dyadic coefficients: every sum is exact,
// so the GPU must give x W_hat^T exactly.
void expect_popcount_exact(const shape& s, int kx, std::int64_t batch, std::mt19937& rng) {
  auto code = qsl::test::random_code(s.rows, s.cols, s.bits, s.basis, s.group, rng());
  for (float& a : code.coefficients) a = static_cast<float>(1 << (rng() % 3));
  qsl::compute_offsets(code);
  qsl::dense_parameters p;
  p.code = code;
  p.activations = {kx, true, 1.0f, 0.0f};  // q = x for integers in [0, 2^kx)
  const qsl::quantized_dense layer(p);
  row_matrix_f x(batch, s.cols);
  for (std::int64_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(rng() % (1U << kx));
  const row_matrix_f y = run(qsl::cuda::quantized_dense(layer), x, qsl::cuda::kernel::popcount_gemv);
  const Eigen::MatrixXd exact = x.cast<double>() * qsl::reconstruct(code).cast<double>().transpose();
  for (std::int64_t v = 0; v < batch; ++v)
    for (std::int64_t n = 0; n < s.rows; ++n)
      ASSERT_EQ(double{y(v, n)}, exact(v, n))
          << s.rows << "x" << s.cols << " k " << s.bits << " kx " << kx << " batch " << batch;
}

TEST(Cuda, LookUpAndDecodeGemvsMatchReference) {
  SKIP_WITHOUT_GPU();
  std::uint32_t seed = 1;
  for (const shape& s : shapes())
    for (std::int64_t batch : {1, 3}) expect_float_gemvs_match(s, batch, seed += 2);
}

// Layers wide enough to be split over many blocks (split-K), row counts off the block size.
TEST(Cuda, GemvsSplitWideLayers) {
  SKIP_WITHOUT_GPU();
  const shape wide[] = {{4096, 4096, 128, 2, qsl::basis::binary},
                        {1000, 8192, 64, 2, qsl::basis::ternary},
                        {33, 100003, 0, 1, qsl::basis::binary},
                        {257, 20000, 40, 3, qsl::basis::binary}};
  std::uint32_t seed = 50;
  for (const shape& s : wide)
    for (std::int64_t batch : {1, 3}) expect_float_gemvs_match(s, batch, seed += 2);
  // The tensor-core GEMM, split the same way.
  for (const shape& s : wide) {
    seed += 2;
    expect_wmma_matches(layer_of(s, 0, seed), qsl::test::gaussian_rows(9, s.cols, seed + 1));
  }
  // Encoded: integers in [0, 8) and dyadic coefficients, exact (|sums| < 2^24).
  std::mt19937 rng(51);
  for (const shape& s : wide) expect_popcount_exact(s, 3, 2, rng);
}

// Every kernel is instantiated per plane count (k binary planes, or 2k for ternary): each
// instantiation runs here, k = 1..8 of both bases, on a shape with several groups and splits.
TEST(Cuda, EveryPlaneCountRunsOnEveryKernel) {
  SKIP_WITHOUT_GPU();
  std::uint32_t seed = 400;
  std::mt19937 rng(401);
  for (auto basis : {qsl::basis::binary, qsl::basis::ternary})
    for (int bits = 1; bits <= 8; ++bits) {
      SCOPED_TRACE("k " + std::to_string(bits) + (basis == qsl::basis::ternary ? " ternary" : " binary"));
      const shape s{70, 1500, 64, bits, basis};
      expect_float_gemvs_match(s, 3, seed += 2);
      seed += 2;
      expect_wmma_matches(layer_of(s, 0, seed), qsl::test::gaussian_rows(9, s.cols, seed + 1));
      expect_popcount_exact(s, 1 + bits % 4, 3, rng);
    }
}

// Integer inputs and dyadic coefficients: every sum is exact, so the GPU must match exactly.
TEST(Cuda, PopcountGemvIsExactOnIntegers) {
  SKIP_WITHOUT_GPU();
  std::mt19937 rng(2);
  for (const shape& s : shapes())
    for (std::int64_t batch : {1, 3, 8, 64}) {
      const int kx = 1 + static_cast<int>(rng() % 8);
      expect_popcount_exact(s, kx, batch, rng);
    }
}

TEST(Cuda, PopcountGemvWithPerVectorScaleMatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::uint32_t seed = 100;
  for (const shape& s : shapes()) {
    const auto layer = layer_of(s, 4, ++seed);
    const row_matrix_f x = qsl::test::gaussian_rows(3, s.cols, ++seed);
    const row_matrix_f y = run(qsl::cuda::quantized_dense(layer), x,
                               qsl::cuda::kernel::popcount_gemv);
    const row_matrix_f expected = layer.forward(x);  // the CPU kernels: exact integer parts
    // Both sides differ only in the float sums of alpha * integer (groups*k terms) and the
    // finish step * z + minimum * offset + b: within 2 gamma_m T on each side, with
    // T = step (2^kx - 1) sum |alpha| |G| + |minimum| |offset| + |b|.
    const qsl::weight_code& code = layer.code();
    const double m = static_cast<double>(code.groups() * s.bits * 2 + 8);
    for (std::int64_t v = 0; v < 3; ++v) {
      const double lo = x.row(v).minCoeff(), step = (x.row(v).maxCoeff() - lo) / 15.0;
      for (std::int64_t n = 0; n < s.rows; ++n) {
        double alpha_size = 0;
        for (std::int64_t g = 0; g < code.groups(); ++g)
          for (int j = 0; j < s.bits; ++j)
            alpha_size += code.coefficient(n, g, j) *
                          static_cast<double>(code.group_end(g) - code.group_begin(g));
        const double t = step * 15 * alpha_size + std::abs(lo * code.offsets[n]) + 0.25;
        ASSERT_NEAR(y(v, n), expected(v, n), 4 * gamma_bound(m) * t) << s.rows << "x" << s.cols;
      }
    }
  }
}

// The tensor-core GEMM on edge shapes and batches around its 64-vector tile (fp16 bound).
TEST(Cuda, WmmaGemmMatchesReferenceWithinHalfPrecision) {
  SKIP_WITHOUT_GPU();
  std::uint32_t seed = 200;
  for (const shape& s : shapes())
    for (std::int64_t batch : {1, 3, 8, 64, 70}) {
      const auto layer = layer_of(s, 0, ++seed);
      expect_wmma_matches(layer, qsl::test::gaussian_rows(batch, s.cols, ++seed));
    }
}

TEST(Cuda, AutomaticKernelChoiceAndErrors) {
  SKIP_WITHOUT_GPU();
  const auto layer = layer_of({40, 100, 0, 2, qsl::basis::binary}, 0, 7);
  const qsl::cuda::quantized_dense gpu(layer);
  EXPECT_EQ(gpu.in_features(), 100);
  EXPECT_EQ(gpu.out_features(), 40);
  EXPECT_GT(gpu.device_bytes(), 0u);
  const row_matrix_f x = qsl::test::gaussian_rows(2, 100, 8);
  const row_matrix_f y = run(gpu, x, qsl::cuda::kernel::automatic);
  EXPECT_TRUE(y.isApprox(layer.forward(x), 1e-4f));
  const float* no_x = nullptr;
  float* no_y = nullptr;
  EXPECT_THROW(gpu.forward(no_x, 2, no_y), qsl::error);
  EXPECT_THROW(gpu.forward(no_x, -1, no_y), qsl::error);
  const qsl::cuda::fp16* no_half_x = nullptr;
  qsl::cuda::fp16* no_half_y = nullptr;
  EXPECT_THROW(gpu.forward(no_half_x, 2, no_half_y), qsl::error);
  float* dummy = reinterpret_cast<float*>(16);
  EXPECT_THROW(gpu.forward(dummy, 1, dummy, nullptr, qsl::cuda::kernel::popcount_gemv),
               qsl::error);  // a float-activation layer has no encoded path
  EXPECT_THROW(gpu.forward(dummy, 1, dummy, nullptr, static_cast<qsl::cuda::kernel>(9)),
               qsl::error);  // not a kernel
  EXPECT_THROW(qsl::cuda::quantized_dense(layer, 99), qsl::error);
}

// forward on a stream can be recorded into a CUDA graph (its scratch becomes the graph's
// allocation nodes) and replayed, with the bits of a direct call: the kernels are deterministic.
// fp16 activations are the fp32 pass of the fp16 inputs, rounded once at the end: inside, the
// kernels widen x exactly and do the same arithmetic, so every kernel must give the bits of
// __float2half_rn(fp32 result on the widened inputs).
TEST(Cuda, HalfActivationsAreTheFp32PassRoundedOnce) {
  SKIP_WITHOUT_GPU();
  using qsl::cuda::kernel;
  std::uint32_t seed = 300;
  std::vector<shape> cases;
  for (std::size_t i = 0; i < shapes().size(); i += 7) cases.push_back(shapes()[i]);
  cases.push_back({1000, 8192, 64, 2, qsl::basis::binary});  // split over many blocks
  for (const shape& s : cases)
    for (int activation_bits : {0, 4})
      for (kernel which : {kernel::lut_gemv, kernel::decode_gemv, kernel::wmma_gemm,
                           kernel::popcount_gemv}) {
        if ((activation_bits > 0) != (which == kernel::popcount_gemv)) continue;
        const qsl::cuda::quantized_dense gpu(layer_of(s, activation_bits, ++seed));
        for (std::int64_t batch : {1, 3, 70}) {
          const half_bits x = to_half(qsl::test::gaussian_rows(batch, s.cols, ++seed));
          const half_bits expected = to_half(run(gpu, to_float(x), which));
          EXPECT_EQ(run_half(gpu, x, which), expected)
              << s.rows << "x" << s.cols << " kernel " << static_cast<int>(which) << " batch "
              << batch;
        }
      }
}

// Calls reuse their stream's workspace: the split counters must be back at zero after every
// call (else a later call never finishes its sums), and growing the workspace for a larger
// batch must not disturb later calls. More streams than the cache keeps take the per-call path.
// Every result is compared bit for bit with the first call's, into outputs filled with NaN.
TEST(Cuda, RepeatedCallsOnManyStreamsGiveTheFirstCallsBits) {
  SKIP_WITHOUT_GPU();
  using qsl::cuda::kernel;
  const shape s{1000, 8192, 64, 2, qsl::basis::binary};
  const std::int64_t batches[] = {1, 3, 2, 70};
  std::vector<cudaStream_t> streams(6);
  for (auto& stream : streams)
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  for (int activation_bits : {0, 4})
    for (kernel which : {kernel::lut_gemv, kernel::wmma_gemm, kernel::popcount_gemv}) {
      if ((activation_bits > 0) != (which == kernel::popcount_gemv)) continue;
      const qsl::cuda::quantized_dense gpu(layer_of(s, activation_bits, 90));
      const row_matrix_f x = qsl::test::gaussian_rows(70, s.cols, 91);
      float *dx = nullptr, *dy = nullptr;
      const std::size_t out = static_cast<std::size_t>(70 * s.rows) * sizeof(float);
      ASSERT_EQ(cudaMalloc(&dx, static_cast<std::size_t>(x.size()) * sizeof(float)), cudaSuccess);
      ASSERT_EQ(cudaMalloc(&dy, out), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(dx, x.data(), static_cast<std::size_t>(x.size()) * sizeof(float),
                           cudaMemcpyHostToDevice), cudaSuccess);
      std::vector<row_matrix_f> first;
      for (std::int64_t batch : batches) first.push_back(run(gpu, x.topRows(batch), which));
      for (int round = 0; round < 3; ++round)
        for (std::size_t i = 0; i < streams.size(); ++i)
          for (std::size_t b = 0; b < std::size(batches); ++b) {
            const std::int64_t batch = batches[b];
            ASSERT_EQ(cudaMemsetAsync(dy, 0xFF, out, streams[i]), cudaSuccess);  // NaN
            gpu.forward(dx, batch, dy, streams[i], which);
            row_matrix_f y(batch, s.rows);
            ASSERT_EQ(cudaStreamSynchronize(streams[i]), cudaSuccess);
            ASSERT_EQ(cudaMemcpy(y.data(), dy, static_cast<std::size_t>(y.size()) * sizeof(float),
                                 cudaMemcpyDeviceToHost), cudaSuccess);
            ASSERT_EQ(y, first[b]) << "kernel " << static_cast<int>(which) << " round " << round
                                   << " stream " << i << " batch " << batch;
          }
      cudaFree(dx);
      cudaFree(dy);
    }
  for (auto& stream : streams) cudaStreamDestroy(stream);
}

TEST(Cuda, ForwardCanBeCapturedIntoAGraph) {
  SKIP_WITHOUT_GPU();
  const shape s{1000, 8192, 64, 2, qsl::basis::binary};
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  for (int activation_bits : {0, 4})
    for (auto which : {qsl::cuda::kernel::automatic, qsl::cuda::kernel::wmma_gemm}) {
      if (activation_bits > 0 && which == qsl::cuda::kernel::wmma_gemm) continue;
      const qsl::cuda::quantized_dense gpu(layer_of(s, activation_bits, 77));
      const std::int64_t batch = 3;
      const row_matrix_f x = qsl::test::gaussian_rows(batch, s.cols, 78);
      float *dx = nullptr, *direct = nullptr, *replayed = nullptr;
      const std::size_t out = static_cast<std::size_t>(batch * s.rows) * sizeof(float);
      ASSERT_EQ(cudaMalloc(&dx, static_cast<std::size_t>(x.size()) * sizeof(float)), cudaSuccess);
      ASSERT_EQ(cudaMalloc(&direct, out), cudaSuccess);
      ASSERT_EQ(cudaMalloc(&replayed, out), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(dx, x.data(), static_cast<std::size_t>(x.size()) * sizeof(float),
                           cudaMemcpyHostToDevice), cudaSuccess);
      gpu.forward(dx, batch, direct, stream, which);
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
      gpu.forward(dx, batch, replayed, stream, which);
      ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
      ASSERT_EQ(cudaGraphInstantiateWithFlags(&exec, graph, 0), cudaSuccess);
      for (int replay = 0; replay < 2; ++replay) ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      row_matrix_f a(batch, s.rows), b(batch, s.rows);
      ASSERT_EQ(cudaMemcpy(a.data(), direct, out, cudaMemcpyDeviceToHost), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(b.data(), replayed, out, cudaMemcpyDeviceToHost), cudaSuccess);
      EXPECT_EQ(a, b) << "activation bits " << activation_bits;
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
      cudaFree(dx);
      cudaFree(direct);
      cudaFree(replayed);
    }
  cudaStreamDestroy(stream);
}

// forward_host = copies + forward, split at forward's 65535-vector limit: the same numbers as
// the device calls over the same splits.
TEST(Cuda, ForwardHostSplitsLargeBatchesLikeDeviceCalls) {
  SKIP_WITHOUT_GPU();
  const auto layer = layer_of({24, 100, 0, 2, qsl::basis::binary}, 0, 9);
  const qsl::cuda::quantized_dense gpu(layer);
  const std::int64_t batch = 65535 + 4465;
  const row_matrix_f x = qsl::test::gaussian_rows(batch, 100, 10);
  row_matrix_f y(batch, 24);
  gpu.forward_host(x.data(), batch, y.data(), qsl::cuda::kernel::lut_gemv);
  const row_matrix_f head = run(gpu, x.topRows(65535), qsl::cuda::kernel::lut_gemv);
  const row_matrix_f tail = run(gpu, x.bottomRows(4465), qsl::cuda::kernel::lut_gemv);
  EXPECT_EQ(y.topRows(65535), head);
  EXPECT_EQ(y.bottomRows(4465), tail);
  EXPECT_THROW(gpu.forward_host(nullptr, 2, nullptr), qsl::error);
  EXPECT_THROW(gpu.forward_host(x.data(), -1, y.data()), qsl::error);
}

// ---- TWD layers: the basis step on quantized_dense's kernels, then the mixing kernel ----

// A TWD layer with a random ternary basis (K x D) and random (or integer) C and bias.
qsl::twd_dense twd_layer_of(std::int64_t n, std::int64_t d, std::int64_t k, int activation_bits,
                            bool integers, std::uint32_t seed) {
  qsl::twd_dense_parameters p;
  p.code.rows = n;
  p.code.cols = d;
  p.code.basis = qsl::test::random_code(k, d, 1, qsl::basis::ternary, 0, seed);
  std::fill(p.code.basis.coefficients.begin(), p.code.basis.coefficients.end(), 1.0f);
  qsl::compute_offsets(p.code.basis);
  std::mt19937 rng(seed + 1);
  std::uniform_int_distribution<int> small(-3, 3);
  std::normal_distribution<float> normal;
  auto value = [&] { return integers ? static_cast<float>(small(rng)) : normal(rng); };
  for (std::int64_t i = 0; i < k * n; ++i) p.code.mixing.push_back(value());
  for (std::int64_t i = 0; i < n; ++i) p.bias.push_back(value());
  p.activations.bits = activation_bits;
  if (activation_bits > 0 && integers) {  // levels 0..2^bits-1 represent integers exactly
    p.activations.calibrated = true;
    p.activations.step = 1;
    p.activations.minimum = 0;
  }
  return qsl::twd_dense(std::move(p));
}

TEST(Cuda, TwdDenseMatchesCpuOnEdgeShapes) {
  SKIP_WITHOUT_GPU();
  std::uint32_t seed = 40;
  for (std::int64_t d : {1, 63, 65, 300})
    for (std::int64_t n : {1, 33, 300})
      for (std::int64_t k : {1, 5, 40}) {
        SCOPED_TRACE("d " + std::to_string(d) + " n " + std::to_string(n) + " k " + std::to_string(k));
        const qsl::twd_dense cpu = twd_layer_of(n, d, k, 0, false, ++seed);
        const qsl::cuda::twd_dense gpu(cpu);
        EXPECT_EQ(gpu.basis_vectors(), k);
        for (std::int64_t batch : {1, 3, 8, 64}) {
          const row_matrix_f x = qsl::test::gaussian_rows(batch, d, seed + 7);
          row_matrix_f got(batch, n), expected(batch, n);
          gpu.forward_host(x.data(), batch, got.data());
          cpu.forward(x.data(), batch, expected.data());
          // Both sum z_k = m_k . x (D terms, any order) then C^T z + b (K + 1 terms): each
          // within gamma_{D + K + 1} of the scale S = sum_k |C_kn| |x|_1 + |b_n|; the wmma
          // path (batch >= 8) rounds x to fp16 first: 2^-11 relative on each |x_d|.
          const double rel = gamma_bound(static_cast<double>(d + k + 1)) * 2 +
                             (batch >= 8 ? std::ldexp(1.0, -10) : 0.0);
          for (std::int64_t v = 0; v < batch; ++v) {
            const double l1 = x.row(v).cwiseAbs().cast<double>().sum();
            for (std::int64_t o = 0; o < n; ++o) {
              double scale = std::abs(cpu.bias()[static_cast<std::size_t>(o)]);
              for (std::int64_t j = 0; j < k; ++j) scale += std::abs(cpu.code().mix(j, o)) * l1;
              ASSERT_NEAR(got(v, o), expected(v, o), rel * scale + 1e-30) << v << ", " << o;
            }
          }
        }
      }
}

// As for quantized_dense: fp16 in and out, fp32 inside (z too), rounded once.
TEST(Cuda, TwdDenseHalfActivationsAreTheFp32PassRoundedOnce) {
  SKIP_WITHOUT_GPU();
  for (int activation_bits : {0, 4}) {
    const qsl::cuda::twd_dense gpu(twd_layer_of(300, 129, 17, activation_bits, false, 5));
    for (std::int64_t batch : {1, 8, 64}) {
      const auto which = qsl::cuda::kernel::automatic;
      const half_bits x = to_half(qsl::test::gaussian_rows(batch, 129, 6));
      const half_bits expected = to_half(run(gpu, to_float(x), which));
      EXPECT_EQ(run_half(gpu, x, which), expected) << "activation bits " << activation_bits;
    }
  }
}

TEST(Cuda, TwdDenseEncodedIsExactOnIntegers) {
  SKIP_WITHOUT_GPU();
  const std::int64_t n = 70, d = 129, k = 17, batch = 5;
  const qsl::twd_dense cpu = twd_layer_of(n, d, k, 4, true, 3);
  const qsl::cuda::twd_dense gpu(cpu);
  std::mt19937 rng(4);
  std::uniform_int_distribution<int> level(0, 15);
  row_matrix_f x(batch, d);
  for (std::int64_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(level(rng));
  row_matrix_f got(batch, n), expected(batch, n);
  gpu.forward_host(x.data(), batch, got.data(), qsl::cuda::kernel::popcount_gemv);
  cpu.forward(x.data(), batch, expected.data());
  // z_k = m_k . x is an integer below 2^11 and C, b are small integers: every sum is exact.
  EXPECT_EQ(got, expected);
  EXPECT_THROW(gpu.forward_host(x.data(), batch, got.data(), qsl::cuda::kernel::lut_gemv),
               qsl::error);
  EXPECT_THROW(gpu.forward_host(nullptr, 2, nullptr), qsl::error);
}

}  // namespace
