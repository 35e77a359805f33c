// qsl-cuda-example: a compressed layer on the GPU, fed from device memory on a stream, with
// fp32 and with fp16 activations, checked against the CPU layer. Without a GPU it says so and
// exits 0 (CI builds it everywhere; it runs where a device is).
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <qsl/cuda.hpp>
#include <qsl/quantized_dense.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw qsl::error(std::string(what) + ": " + cudaGetErrorString(status));
}

}  // namespace

int main() try {
  if (qsl::cuda::device_count() == 0) {
    std::printf("qsl-cuda-example: no CUDA device here; nothing to run\n");
    return 0;
  }
  const Eigen::Index out = 1024, in = 4096, batch = 4;
  Eigen::MatrixXf w = Eigen::MatrixXf::Random(out, in);
  Eigen::VectorXf b = Eigen::VectorXf::Zero(out);
  qsl::quantized_dense_options options;
  options.weights.bits = 2;
  options.weights.group_size = 128;
  const auto layer = qsl::quantized_dense::compress(w, b, options);
  const qsl::cuda::quantized_dense gpu(layer);  // packs and uploads once

  const qsl::quantized_dense::matrix x = qsl::quantized_dense::matrix::Random(batch, in);
  const qsl::quantized_dense::matrix expected = layer.forward(x);
  cudaStream_t stream = nullptr;
  check(cudaStreamCreate(&stream), "cudaStreamCreate");

  // fp32 activations: x and y in device memory, asynchronous on the stream.
  float *dx = nullptr, *dy = nullptr;
  check(cudaMalloc(&dx, sizeof(float) * batch * in), "cudaMalloc");
  check(cudaMalloc(&dy, sizeof(float) * batch * out), "cudaMalloc");
  check(cudaMemcpyAsync(dx, x.data(), sizeof(float) * batch * in, cudaMemcpyHostToDevice, stream),
        "copy x");
  gpu.forward(dx, batch, dy, stream);
  std::vector<float> y(static_cast<std::size_t>(batch * out));
  check(cudaMemcpyAsync(y.data(), dy, sizeof(float) * y.size(), cudaMemcpyDeviceToHost, stream),
        "copy y");

  // fp16 activations (e.g. from an fp16 network): the same call on __half arrays.
  std::vector<__half> hx(static_cast<std::size_t>(batch * in)), hy(y.size());
  for (std::size_t i = 0; i < hx.size(); ++i) hx[i] = __float2half(x.data()[i]);
  __half *dhx = nullptr, *dhy = nullptr;
  check(cudaMalloc(&dhx, sizeof(__half) * hx.size()), "cudaMalloc");
  check(cudaMalloc(&dhy, sizeof(__half) * hy.size()), "cudaMalloc");
  check(cudaMemcpyAsync(dhx, hx.data(), sizeof(__half) * hx.size(), cudaMemcpyHostToDevice, stream),
        "copy x");
  gpu.forward(reinterpret_cast<const qsl::cuda::fp16*>(dhx), batch,
              reinterpret_cast<qsl::cuda::fp16*>(dhy), stream);
  check(cudaMemcpyAsync(hy.data(), dhy, sizeof(__half) * hy.size(), cudaMemcpyDeviceToHost, stream),
        "copy y");
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");

  double fp32_error = 0, fp16_error = 0, scale = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    fp32_error = std::fmax(fp32_error, std::fabs(y[i] - expected.data()[i]));
    fp16_error = std::fmax(fp16_error, std::fabs(__half2float(hy[i]) - expected.data()[i]));
    scale = std::fmax(scale, std::fabs(expected.data()[i]));
  }
  std::printf("%s: %lld x %lld layer, batch %lld; largest |y| %.3g, largest difference from the "
              "CPU: fp32 %.3g, fp16 %.3g\n",
              qsl::cuda::properties(gpu.device()).name.c_str(), static_cast<long long>(out),
              static_cast<long long>(in), static_cast<long long>(batch), scale, fp32_error,
              fp16_error);
  cudaFree(dx);
  cudaFree(dy);
  cudaFree(dhx);
  cudaFree(dhy);
  cudaStreamDestroy(stream);
  // fp32: a different order of additions; fp16: inputs and outputs rounded to 11 bits.
  return fp32_error <= 1e-3 * scale && fp16_error <= 1e-2 * scale ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "qsl-cuda-example: %s\n", e.what());
  return 1;
}
