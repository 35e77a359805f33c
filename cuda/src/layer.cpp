// qsl::cuda::layer: the argument checks of every forward pass, and forward_host (copies in,
// device forward passes of at most 65535 vectors, copies out), written once for every layer.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "device_memory.hpp"
#include "qsl/cuda.hpp"

namespace qsl::cuda {

namespace {
constexpr std::int64_t max_batch_per_call = 65535;  // the kernels' grid limit

// True for an empty batch; throws qsl::error naming the class and the call for a negative or
// too large batch or a null array. No message is built unless it throws: forward runs once per
// layer and pass, and its checks should cost nothing beside the launch.
bool empty_batch(const char* who, const char* call, const void* x, const void* y,
                 std::int64_t batch, std::int64_t most) {
  const auto fail = [&](const std::string& what) {
    throw qsl::error(std::string(who) + "::" + call + ": " + what);
  };
  if (batch < 0) fail("batch is " + std::to_string(batch) + "; expected >= 0");
  if (batch == 0) return true;
  if (x == nullptr || y == nullptr) fail("x or y is null");
  if (batch > most)
    fail("batch is " + std::to_string(batch) + "; at most " + std::to_string(most) + " per call");
  return false;
}
}  // namespace

void layer::forward(const float* x, std::int64_t batch, float* y, void* stream,
                    kernel which) const {
  checked_run(x, element::f32, batch, y, stream, which);
}

void layer::forward(const fp16* x, std::int64_t batch, fp16* y, void* stream,
                    kernel which) const {
  checked_run(x, element::f16, batch, y, stream, which);
}

void layer::checked_run(const void* x, element type, std::int64_t batch, void* y, void* stream,
                        kernel which) const {
  if (empty_batch(name(), "forward", x, y, batch, max_batch_per_call)) return;
  run(x, type, batch, y, type, stream, which);
}

void layer::forward_host(const float* x, std::int64_t batch, float* y, kernel which) const {
  // Any batch: larger ones run as several calls below.
  if (empty_batch(name(), "forward_host", x, y, batch, INT64_MAX)) return;
  const std::int64_t rows = std::min(batch, max_batch_per_call);
  const std::size_t in_bytes = static_cast<std::size_t>(rows * in_features()) * sizeof(float);
  const std::size_t out_bytes = static_cast<std::size_t>(rows * out_features()) * sizeof(float);
  QSL_CUDA(cudaSetDevice(device()));
  // The default stream: synchronous copies order themselves with the kernels.
  detail::scratch_buffer scratch(device(), in_bytes + out_bytes, nullptr);
  auto* dx = static_cast<float*>(scratch.get());
  auto* dy = reinterpret_cast<float*>(static_cast<char*>(scratch.get()) + in_bytes);
  for (std::int64_t v0 = 0; v0 < batch; v0 += max_batch_per_call) {
    const std::int64_t count = std::min(max_batch_per_call, batch - v0);
    QSL_CUDA(cudaMemcpy(dx, x + v0 * in_features(),
                        static_cast<std::size_t>(count * in_features()) * sizeof(float),
                        cudaMemcpyHostToDevice));
    run(dx, element::f32, count, dy, element::f32, nullptr, which);
    QSL_CUDA(cudaMemcpy(y + v0 * out_features(), dy,
                        static_cast<std::size_t>(count * out_features()) * sizeof(float),
                        cudaMemcpyDeviceToHost));
  }
}

}  // namespace qsl::cuda
