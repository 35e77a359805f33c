#include "cpu/thread_pool.hpp"

#include <algorithm>
#include <string>
#include <system_error>

#include "qsl/error.hpp"

namespace qsl::detail::cpu {
namespace {

thread_local const external_executor* current_executor = nullptr;
// Runs every part on the calling thread: what parts running on an external executor see, so
// that a loop inside a part never starts another parallel run.
const external_executor sequential_executor{1, nullptr, nullptr};

struct external_task {
  const std::function<void(std::int64_t)>* task;
  std::mutex mutex;
  std::exception_ptr error;
};

// One part on the external executor's thread: exceptions are kept for the caller, never thrown
// into the other runtime.
void run_external_part(void* context, std::int64_t part) {
  auto& t = *static_cast<external_task*>(context);
  const scoped_executor sequential(sequential_executor);
  {
    std::lock_guard<std::mutex> lock(t.mutex);
    if (t.error) return;
  }
  try {
    (*t.task)(part);
  } catch (...) {
    std::lock_guard<std::mutex> lock(t.mutex);
    if (!t.error) t.error = std::current_exception();
  }
}

}  // namespace

scoped_executor::scoped_executor(const external_executor& executor)
    : previous_(current_executor) {
  current_executor = &executor;
}

scoped_executor::~scoped_executor() { current_executor = previous_; }

int thread_pool::size() const {
  if (current_executor != nullptr) return std::max(1, current_executor->threads);
  return threads_;
}

thread_pool& thread_pool::instance() {
  static thread_pool pool(static_cast<int>(std::max(1U, std::thread::hardware_concurrency())));
  return pool;
}

thread_pool::thread_pool(int threads) : threads_(std::max(1, threads)) {}

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
  const bool was_started = started_;
  started_ = false;
  threads_ = std::max(1, threads);
  if (was_started && threads > 0) start_workers();  // as before the resize: running
}

void thread_pool::start_workers() {
  started_ = true;
  const std::uint64_t generation = generation_;
  try {
    for (int i = static_cast<int>(workers_.size()) + 1; i < threads_; ++i)
      workers_.emplace_back([this, generation] { work(generation); });
  } catch (const std::system_error& e) {
    // The workers that started stay: still a working pool, smaller than asked.
    const int asked = threads_;
    threads_ = static_cast<int>(workers_.size()) + 1;
    throw error("cannot start " + std::to_string(asked) + " CPU threads (" +
                std::to_string(threads_) + " running): " + e.what());
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
  if (parts <= 0) return;
  if (const external_executor* e = current_executor) {
    external_task t{&task, {}, nullptr};
    if (e->run == nullptr || parts == 1) {
      for (std::int64_t p = 0; p < parts; ++p) run_external_part(&t, p);
    } else {
      e->run(e->context, parts, run_external_part, &t);
    }
    if (t.error) std::rethrow_exception(t.error);
    return;
  }
  std::lock_guard<std::mutex> call(call_mutex_);
  if (!started_ && parts > 1 && threads_ > 1) {
    try {
      start_workers();
    } catch (const error&) {  // fewer threads than asked: the ones that started do the work
    }
  }
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
