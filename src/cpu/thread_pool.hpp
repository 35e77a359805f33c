#pragma once
// A persistent pool for the online kernels: a GEMV takes tens of microseconds, so threads are
// started once and woken per call instead of created per call.

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "qsl/config.hpp"

namespace qsl::detail::cpu {

// Exported (QSL_API) for qsl's other libraries (qsl::onnx), which share the one pool; not API.
class QSL_API thread_pool {
 public:
  /// The process-wide pool, sized by set_cpu_threads (all hardware threads by default).
  static thread_pool& instance();

  explicit thread_pool(int threads);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  /// Runs task(part) for part in [0, parts) and waits; the caller runs part 0's share too.
  /// Parts are handed out in order; the first exception is rethrown here. Not reentrant: calls
  /// from several threads at once are serialized.
  void run(std::int64_t parts, const std::function<void(std::int64_t)>& task);
  /// Replaces the workers (between calls).
  void resize(int threads);

 private:
  void work(std::uint64_t generation_seen);
  void drain();

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one run() at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(std::int64_t)>* task_ = nullptr;
  std::int64_t parts_ = 0, next_ = 0;
  int busy_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace qsl::detail::cpu
