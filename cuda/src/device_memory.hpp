#pragma once
// Host-side helpers both layer types of qsl::cuda share: CUDA error checks that name the call,
// device (or mapped host) buffers and per-call scratch memory.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels.hpp"
#include "qsl/error.hpp"

namespace qsl::cuda::detail {

// Throws qsl::error naming the call that failed.
inline void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess)
    throw qsl::error(std::string("CUDA: ") + call + " failed: " + cudaGetErrorString(status));
}
#define QSL_CUDA(call) ::qsl::cuda::detail::check((call), #call)

inline void check_launch(const char* kernel_name) {
  const char* message = last_launch_error();
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

// qsl's own stream-ordered memory pool of a device (null where the device has no memory pools:
// not every Tegra does). The device's default pool hands its memory back to the system at every
// synchronization (release threshold 0), so each forward call mapped fresh memory: measured on
// an H200, about 55 us per call, more than a 4096 x 4096 GEMV itself. This pool keeps what it
// has (no release threshold): its size is the most scratch that calls had in flight at once.
// The default pool, which the application may be using, is left as it is.
inline cudaMemPool_t scratch_pool(int device) {
  static std::mutex mutex;
  static std::map<int, cudaMemPool_t> pools;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto found = pools.find(device);
  if (found != pools.end()) return found->second;
  int supported = 0;
  cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device);
  cudaMemPool_t pool = nullptr;
  if (supported != 0) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    QSL_CUDA(cudaMemPoolCreate(&pool, &props));
    std::uint64_t keep_all = UINT64_MAX;
    QSL_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all));
  }
  pools.emplace(device, pool);
  return pool;
}

// Scratch memory for one forward call, ordered on the stream from scratch_pool (plain
// cudaMalloc without pools), released even when a launch fails.
class scratch_buffer {
 public:
  scratch_buffer(int device, std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    const cudaMemPool_t pool = scratch_pool(device);
    pooled_ = pool != nullptr;
    if (pooled_)
      QSL_CUDA(cudaMallocFromPoolAsync(&data_, bytes, pool, stream));
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

}  // namespace qsl::cuda::detail
