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

/// Another runtime's threads, to run qsl's parallel loops on instead of qsl's pool: ONNX
/// Runtime's intra-op pool inside an ORT operator (onnxruntime/), so that a session never gets
/// more threads than it asked for. run(context, parts, task, task_context) must call
/// task(task_context, part) once for every part in [0, parts) and return when all are done;
/// `threads` is how many it may run at once (it only shapes how the work is split).
struct external_executor {
  int threads = 1;
  void (*run)(void* context, std::int64_t parts, void (*task)(void*, std::int64_t),
              void* task_context) = nullptr;
  void* context = nullptr;
};

/// While one is alive, thread_pool calls made from this thread run on `executor`.
class QSL_API scoped_executor {
 public:
  explicit scoped_executor(const external_executor& executor);
  ~scoped_executor();
  scoped_executor(const scoped_executor&) = delete;
  scoped_executor& operator=(const scoped_executor&) = delete;

 private:
  const external_executor* previous_;
};

// Exported (QSL_API) for qsl's other libraries (qsl::onnx), which share the one pool; not API.
class QSL_API thread_pool {
 public:
  /// The process-wide pool, sized by set_cpu_threads (all hardware threads by default).
  static thread_pool& instance();

  /// A pool of `threads` (the caller included). Its workers start with the first run() that
  /// needs them, so a process whose qsl work all runs on an external executor (an ONNX Runtime
  /// session) has no qsl threads at all.
  explicit thread_pool(int threads);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  /// Threads a run() may use: the pool's, or the scoped external executor's.
  int size() const;
  /// Runs task(part) for part in [0, parts) and waits; the caller runs part 0's share too.
  /// Under a scoped_executor the parts run on that executor instead.
  /// Parts are handed out in order; the first exception is rethrown here. Not reentrant: calls
  /// from several threads at once are serialized.
  void run(std::int64_t parts, const std::function<void(std::int64_t)>& task);
  /// Replaces the workers (between calls); started ones are restarted at once.
  void resize(int threads);

 private:
  void work(std::uint64_t generation_seen);
  void drain();
  void start_workers();  // under call_mutex_

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
  int threads_ = 1;       // the pool's size, the caller included
  bool started_ = false;  // workers_ holds threads_ - 1 running workers
};

}  // namespace qsl::detail::cpu
