#include "cpu/thread_pool.hpp"

#include <algorithm>
#include <string>
#include <system_error>

#include "qsl/error.hpp"

namespace qsl::detail::cpu {

thread_pool& thread_pool::instance() {
  static thread_pool pool(static_cast<int>(std::max(1U, std::thread::hardware_concurrency())));
  return pool;
}

thread_pool::thread_pool(int threads) { resize(threads); }

thread_pool::~thread_pool() { resize(0); }

void thread_pool::resize(int threads) {
  std::lock_guard<std::mutex> call(call_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  stop_ = false;
  const std::uint64_t generation = generation_;
  try {
    for (int i = 1; i < threads; ++i)
      workers_.emplace_back([this, generation] { work(generation); });
  } catch (const std::system_error& e) {
    // The workers that started stay: still a working pool, smaller than asked.
    throw error("cannot start " + std::to_string(threads) + " CPU threads (" +
                std::to_string(size()) + " running): " + e.what());
  }
}

// Takes parts until none are left; runs on the workers and on the caller.
void thread_pool::drain() {
  for (;;) {
    std::int64_t part;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (next_ >= parts_ || error_) return;
      part = next_++;
    }
    try {
      (*task_)(part);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void thread_pool::work(std::uint64_t generation_seen) {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != generation_seen; });
      if (stop_) return;
      generation_seen = generation_;
      ++busy_;
    }
    drain();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --busy_;
    }
    done_.notify_all();
  }
}

void thread_pool::run(std::int64_t parts, const std::function<void(std::int64_t)>& task) {
  std::lock_guard<std::mutex> call(call_mutex_);
  if (parts <= 0) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    task_ = &task;
    parts_ = parts;
    next_ = 0;
    error_ = nullptr;
    ++generation_;
  }
  if (parts > 1) wake_.notify_all();
  drain();
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return busy_ == 0; });
    error = error_;
    task_ = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace qsl::detail::cpu
