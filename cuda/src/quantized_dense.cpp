// qsl::cuda::quantized_dense: packing, upload (or zero-copy mapping), kernel choice, errors.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "kernels.hpp"
#include "pack.hpp"
#include "qsl/cuda.hpp"

namespace qsl::cuda {
namespace {

// Throws qsl::error naming the call that failed.
void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess)
    throw qsl::error(std::string("CUDA: ") + call + " failed: " + cudaGetErrorString(status));
}
#define QSL_CUDA(call) check((call), #call)

void check_launch(const char* kernel_name) {
  const char* message = detail::last_launch_error();
  if (message[0] != '\0')
    throw qsl::error(std::string("CUDA: launching ") + kernel_name + " failed: " + message);
}

// Device memory, or mapped host memory on an integrated GPU (the device reads it in place).
class buffer {
 public:
  buffer() = default;
  buffer(const void* data, std::size_t bytes, bool mapped) : bytes_(bytes), mapped_(mapped) {
    if (bytes == 0) return;
    if (mapped) {
      QSL_CUDA(cudaHostAlloc(&host_, bytes, cudaHostAllocMapped));
      std::memcpy(host_, data, bytes);
      QSL_CUDA(cudaHostGetDevicePointer(&device_, host_, 0));
    } else {
      QSL_CUDA(cudaMalloc(&device_, bytes));
      QSL_CUDA(cudaMemcpy(device_, data, bytes, cudaMemcpyHostToDevice));
    }
  }
  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
  ~buffer() {
    if (mapped_ && host_ != nullptr) cudaFreeHost(host_);
    if (!mapped_ && device_ != nullptr) cudaFree(device_);
  }
  template <class T>
  const T* get() const {
    return static_cast<const T*>(device_);
  }
  std::size_t bytes() const { return bytes_; }

 private:
  void* device_ = nullptr;
  void* host_ = nullptr;
  std::size_t bytes_ = 0;
  bool mapped_ = false;
};

template <class T>
std::unique_ptr<buffer> upload(const std::vector<T>& v, bool mapped) {
  return std::make_unique<buffer>(v.data(), v.size() * sizeof(T), mapped);
}

// Scratch memory for one forward call, ordered on the stream where the device has memory
// pools (not every Tegra does), released even when a launch fails.
class scratch_buffer {
 public:
  scratch_buffer(int device, std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    int pools = 0;
    cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device);
    pooled_ = pools != 0;
    if (pooled_)
      QSL_CUDA(cudaMallocAsync(&data_, bytes, stream));
    else
      QSL_CUDA(cudaMalloc(&data_, bytes));
  }
  scratch_buffer(const scratch_buffer&) = delete;
  scratch_buffer& operator=(const scratch_buffer&) = delete;
  ~scratch_buffer() {
    if (pooled_) {
      cudaFreeAsync(data_, stream_);
    } else {
      cudaStreamSynchronize(stream_);  // the kernels must be done with it
      cudaFree(data_);
    }
  }
  void* get() const { return data_; }

 private:
  void* data_ = nullptr;
  cudaStream_t stream_;
  bool pooled_ = false;
};

}  // namespace

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: not an error for the caller
    return 0;
  }
  return count;
}

device_properties properties(int device) {
  const int count = device_count();
  qsl::detail::require(device >= 0 && device < count,
                       "qsl::cuda: device " + std::to_string(device) + " does not exist (" +
                           std::to_string(count) + " CUDA devices)");
  cudaDeviceProp p{};
  QSL_CUDA(cudaGetDeviceProperties(&p, device));
  return {p.name, p.major, p.minor, p.multiProcessorCount, p.integrated != 0, p.totalGlobalMem};
}

struct quantized_dense::impl {
  int device = 0;
  detail::packed_layer host;
  activation_quantizer activations;
  std::unique_ptr<buffer> words, coefficients, offsets, bias;
  detail::layer_view view{};
};

quantized_dense::quantized_dense(const qsl::quantized_dense& layer, int device)
    : impl_(std::make_unique<impl>()) {
  const device_properties props = properties(device);
  QSL_CUDA(cudaSetDevice(device));
  impl_->device = device;
  impl_->activations = layer.activations();
  impl_->host = detail::pack(layer.code(), layer.bias());
  const bool mapped = props.integrated;  // Jetson: no copy, the GPU reads host memory
  impl_->words = upload(impl_->host.words, mapped);
  impl_->coefficients = upload(impl_->host.coefficients, mapped);
  impl_->offsets = upload(impl_->host.offsets, mapped);
  impl_->bias = upload(impl_->host.bias, mapped);
  impl_->view = impl_->host.view();
  impl_->view.words = impl_->words->get<std::uint32_t>();
  impl_->view.coefficients = impl_->coefficients->get<float>();
  impl_->view.offsets = impl_->offsets->get<float>();
  impl_->view.bias = impl_->host.bias.empty() ? nullptr : impl_->bias->get<float>();
  // The host copies are only needed for the shapes once uploaded.
  impl_->host.words.clear();
  impl_->host.words.shrink_to_fit();
  impl_->host.coefficients.clear();
  impl_->host.coefficients.shrink_to_fit();
}

quantized_dense::quantized_dense(quantized_dense&&) noexcept = default;
quantized_dense& quantized_dense::operator=(quantized_dense&&) noexcept = default;
quantized_dense::~quantized_dense() = default;

std::int64_t quantized_dense::in_features() const { return impl_->view.cols; }
std::int64_t quantized_dense::out_features() const { return impl_->view.rows; }
int quantized_dense::device() const { return impl_->device; }
std::size_t quantized_dense::device_bytes() const {
  return impl_->words->bytes() + impl_->coefficients->bytes() + impl_->offsets->bytes() +
         impl_->bias->bytes();
}

void quantized_dense::forward(const float* x, std::int64_t batch, float* y, void* stream,
                              kernel which) const {
  qsl::detail::require(batch >= 0, "qsl::cuda::quantized_dense::forward: batch is " +
                                       std::to_string(batch) + "; expected >= 0");
  if (batch == 0) return;
  qsl::detail::require(x != nullptr && y != nullptr,
                       "qsl::cuda::quantized_dense::forward: x or y is null");
  qsl::detail::require(batch <= 65535, "qsl::cuda::quantized_dense::forward: batch is " +
                                           std::to_string(batch) + "; at most 65535 per call");
  const detail::layer_view& w = impl_->view;
  const activation_quantizer& q = impl_->activations;
  const bool encoded = q.bits > 0;
  if (which == kernel::automatic)
    which = encoded ? kernel::popcount_gemv : batch < 8 ? kernel::lut_gemv : kernel::wmma_gemm;
  qsl::detail::require(encoded == (which == kernel::popcount_gemv),
                       std::string("qsl::cuda::quantized_dense::forward: ") +
                           (encoded ? "the layer encodes its activations: use popcount_gemv"
                                    : "the layer keeps float activations: popcount_gemv needs "
                                      "activation_bits > 0"));
  QSL_CUDA(cudaSetDevice(impl_->device));
  const auto s = static_cast<cudaStream_t>(stream);
  switch (which) {
    case kernel::lut_gemv:
      detail::launch_lut_gemv(w, x, batch, y, stream);
      check_launch("lut_gemv");
      return;
    case kernel::wmma_gemm:
      detail::launch_wmma_gemm(w, x, batch, y, stream);
      check_launch("wmma_gemm");
      return;
    default:
      break;
  }
  // Encoded: scratch for the bit planes, level sums and scales, ordered on the stream.
  const std::size_t plane_bytes = static_cast<std::size_t>(batch * q.bits * w.chunks) * 4;
  const std::size_t level_bytes = static_cast<std::size_t>(batch * w.groups) * 4;
  const std::size_t scale_bytes = static_cast<std::size_t>(batch) * 2 * sizeof(float);
  scratch_buffer scratch(impl_->device, plane_bytes + level_bytes + scale_bytes, s);
  auto* planes = static_cast<std::uint32_t*>(scratch.get());
  auto* levels = reinterpret_cast<std::int32_t*>(static_cast<char*>(scratch.get()) + plane_bytes);
  auto* scales =
      reinterpret_cast<float*>(static_cast<char*>(scratch.get()) + plane_bytes + level_bytes);
  detail::launch_encode(w, x, batch, q.bits, q.calibrated, q.step, q.minimum, planes, levels,
                        scales, stream);
  check_launch("encode");
  detail::launch_popcount_gemv(w, planes, levels, scales, q.bits, batch, y, stream);
  check_launch("popcount_gemv");
}

void quantized_dense::forward_host(const float* x, std::int64_t batch, float* y,
                                   kernel which) const {
  qsl::detail::require(batch >= 0, "qsl::cuda::quantized_dense::forward_host: batch is " +
                                       std::to_string(batch) + "; expected >= 0");
  if (batch == 0) return;
  qsl::detail::require(x != nullptr && y != nullptr,
                       "qsl::cuda::quantized_dense::forward_host: x or y is null");
  constexpr std::int64_t max_call = 65535;  // forward's limit per call
  const std::int64_t rows = std::min(batch, max_call);
  const std::size_t in_bytes = static_cast<std::size_t>(rows * in_features()) * sizeof(float);
  const std::size_t out_bytes = static_cast<std::size_t>(rows * out_features()) * sizeof(float);
  QSL_CUDA(cudaSetDevice(impl_->device));
  // The default stream: synchronous copies order themselves with the kernels.
  scratch_buffer scratch(impl_->device, in_bytes + out_bytes, nullptr);
  auto* dx = static_cast<float*>(scratch.get());
  auto* dy = reinterpret_cast<float*>(static_cast<char*>(scratch.get()) + in_bytes);
  for (std::int64_t v0 = 0; v0 < batch; v0 += max_call) {
    const std::int64_t count = std::min(max_call, batch - v0);
    QSL_CUDA(cudaMemcpy(dx, x + v0 * in_features(),
                        static_cast<std::size_t>(count * in_features()) * sizeof(float),
                        cudaMemcpyHostToDevice));
    forward(dx, count, dy, nullptr, which);
    QSL_CUDA(cudaMemcpy(y + v0 * out_features(), dy,
                        static_cast<std::size_t>(count * out_features()) * sizeof(float),
                        cudaMemcpyDeviceToHost));
  }
}

}  // namespace qsl::cuda
