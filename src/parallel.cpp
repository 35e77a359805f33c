#include "parallel.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace qsl::detail {

int worker_count(int threads, std::int64_t items) {
  std::int64_t n = threads > 0 ? threads : std::max(1U, std::thread::hardware_concurrency());
  return static_cast<int>(std::max<std::int64_t>(1, std::min(n, items)));
}

void parallel_for(std::int64_t items, int threads,
                  const std::function<void(std::int64_t, int)>& body) {
  const int workers = worker_count(threads, items);
  std::atomic<std::int64_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  auto run = [&](int worker) {
    for (std::int64_t item = next++; item < items && !failed; item = next++) {
      try {
        body(item, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(workers - 1));
  for (int w = 1; w < workers; ++w) {
    try {
      pool.emplace_back(run, w);
    } catch (const std::system_error&) {
      break;  // the system's thread limit: the started workers (and the caller) do every item
    }
  }
  run(0);
  for (auto& t : pool) t.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace qsl::detail
