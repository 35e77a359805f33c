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

// What one forward call may scribble on: split counters, zero when its kernels start (they
// leave them at zero when they finish, see kernels.cu), and data (partial sums, bit planes).
struct workspace {
  unsigned* counters = nullptr;
  void* data = nullptr;
};

// The workspaces of one layer. A call on a stream seen before (up to max_streams streams,
// told apart by their unique ids) reuses that stream's memory: calls on one stream run one
// after another on the device, and the counters are back at zero when a call ends, so nothing
// is allocated, cleared or freed per call. Measured on an H200, allocation, clearing and
// release were 3 of the 4 API calls of a forward pass, and the host's work per call (about
// 20 us on that VM) was more than a 4096 x 4096 GEMV on the device.
//
// Other calls get fresh memory from scratch_pool, ordered on their stream, with the counters
// cleared per call: calls on a stream being captured into a graph (the graph may be replayed on
// any stream, alongside direct calls), calls on more streams, and runtimes before CUDA 12
// (no stream ids: a stream handle may be reused by a new stream while the old one's work is
// still running).
class workspace_cache {
 public:
  static constexpr std::size_t max_streams = 4;

  // The workspace of one call; the kernels must be launched before it is destroyed (it holds
  // the cache's lock, so that another thread cannot grow the memory in between).
  class lease {
   public:
    workspace get() const { return ws_; }

   private:
    friend class workspace_cache;
    workspace ws_;
    std::unique_lock<std::mutex> lock_;
    std::unique_ptr<scratch_buffer> owned_;  // per-call memory
  };

  explicit workspace_cache(int device) : device_(device) {}
  workspace_cache(const workspace_cache&) = delete;
  workspace_cache& operator=(const workspace_cache&) = delete;
  ~workspace_cache() {
    for (const entry& e : entries_) {  // cudaFree waits for the kernels still using them
      cudaFree(e.counters);
      cudaFree(e.data);
    }
  }

  // A workspace of `counters` zeroed counters and `data_bytes` bytes for a call on `stream`.
  lease acquire(cudaStream_t stream, std::size_t counters, std::size_t data_bytes) {
    lease out;
    if (counters == 0 && data_bytes == 0) return out;
    if (reuse(stream, counters, data_bytes, out)) return out;
    const std::size_t counter_bytes = (counters * sizeof(unsigned) + 255) / 256 * 256;
    out.owned_ = std::make_unique<scratch_buffer>(device_, counter_bytes + data_bytes, stream);
    char* base = static_cast<char*>(out.owned_->get());
    if (counters > 0) QSL_CUDA(cudaMemsetAsync(base, 0, counters * sizeof(unsigned), stream));
    out.ws_.counters = reinterpret_cast<unsigned*>(base);
    out.ws_.data = base + counter_bytes;
    return out;
  }

 private:
  struct entry {
    unsigned long long stream_id = 0;
    unsigned* counters = nullptr;
    void* data = nullptr;
    std::size_t counter_count = 0, data_bytes = 0;
  };

  // The stream's own workspace, grown where needed; false where the call must use per-call
  // memory (see above) or growing failed.
  bool reuse(cudaStream_t stream, std::size_t counters, std::size_t data_bytes, lease& out) {
#if CUDART_VERSION >= 12000
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    unsigned long long id = 0;
    if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess ||
        capture != cudaStreamCaptureStatusNone || cudaStreamGetId(stream, &id) != cudaSuccess) {
      cudaGetLastError();  // not an error for the caller: the per-call path decides
      return false;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    auto found = std::find_if(entries_.begin(), entries_.end(),
                              [&](const entry& e) { return e.stream_id == id; });
    if (found == entries_.end()) {
      if (entries_.size() >= max_streams) return false;
      entries_.push_back(entry{id});
      found = entries_.end() - 1;
    }
    entry& e = *found;
    // Growing frees the old memory first (cudaFree waits for the kernels still using it); new
    // counters are cleared on the stream before its kernels run. Any failure leaves the entry
    // empty or as it was, and the call takes the per-call path.
    const auto grow = [](void** memory, std::size_t& have, std::size_t need) {
      if (have >= need) return true;
      if (*memory != nullptr && cudaFree(*memory) != cudaSuccess) return false;
      *memory = nullptr;
      have = 0;
      if (cudaMalloc(memory, need) != cudaSuccess) {
        *memory = nullptr;
        return false;
      }
      have = need;
      return true;
    };
    std::size_t counter_bytes = e.counter_count * sizeof(unsigned);
    const bool fresh = counter_bytes < counters * sizeof(unsigned);
    bool ready = grow(reinterpret_cast<void**>(&e.counters), counter_bytes, counters * sizeof(unsigned));
    e.counter_count = counter_bytes / sizeof(unsigned);
    if (ready && fresh &&
        cudaMemsetAsync(e.counters, 0, counter_bytes, stream) != cudaSuccess) {
      cudaFree(e.counters);  // not known to be zero: never reuse it
      e.counters = nullptr;
      e.counter_count = 0;
      ready = false;
    }
    ready = ready && grow(&e.data, e.data_bytes, data_bytes);
    if (!ready) {
      cudaGetLastError();  // not an error for the caller: the per-call path decides
      return false;
    }
    out.ws_ = {e.counters, e.data};
    out.lock_ = std::move(lock);
    return true;
#else
    (void)stream;
    (void)counters;
    (void)data_bytes;
    (void)out;
    return false;
#endif
  }

  int device_;
  std::mutex mutex_;
  std::vector<entry> entries_;
};

}  // namespace qsl::cuda::detail
