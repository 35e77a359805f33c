// The per-thread cache of large scratch blocks (scratch.hpp). Size classes are powers of two,
// so a buffer that varies a little between calls (the last chunk of a batch) still finds its
// block; the rounding costs address space, and pages only once they are touched.
#include "scratch.hpp"

#include <cstdlib>
#include <deque>
#include <utility>

namespace qsl::detail {

namespace {

std::size_t size_class(std::size_t bytes) {
  std::size_t c = scratch_cache_min_bytes;
  while (c < bytes) c *= 2;
  return c;
}

void* allocate_aligned(std::size_t bytes) {
  const std::size_t rounded = (bytes + cache_line - 1) / cache_line * cache_line;
  void* p = std::aligned_alloc(cache_line, rounded == 0 ? cache_line : rounded);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

struct block_cache {
  std::deque<std::pair<void*, std::size_t>> blocks;  // oldest first: (block, size class)
  std::size_t bytes = 0;
  ~block_cache() {
    for (auto& [p, size] : blocks) std::free(p);
  }
};

block_cache& cache() {
  thread_local block_cache c;
  return c;
}

}  // namespace

void* acquire_scratch(std::size_t bytes) {
  if (bytes < scratch_cache_min_bytes) return allocate_aligned(bytes);
  const std::size_t size = size_class(bytes);
  block_cache& c = cache();
  for (auto it = c.blocks.rbegin(); it != c.blocks.rend(); ++it)  // the newest of its class
    if (it->second == size) {
      void* p = it->first;
      c.bytes -= size;
      c.blocks.erase(std::next(it).base());
      return p;
    }
  return allocate_aligned(size);
}

void release_scratch(void* p, std::size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes < scratch_cache_min_bytes) {
    std::free(p);
    return;
  }
  const std::size_t size = size_class(bytes);
  if (size > scratch_cache_bytes) {
    std::free(p);
    return;
  }
  block_cache& c = cache();
  try {
    c.blocks.emplace_back(p, size);
  } catch (...) {  // no room to remember it: give it back
    std::free(p);
    return;
  }
  c.bytes += size;
  while (c.blocks.size() > scratch_cache_blocks || c.bytes > scratch_cache_bytes) {
    std::free(c.blocks.front().first);
    c.bytes -= c.blocks.front().second;
    c.blocks.pop_front();
  }
}

}  // namespace qsl::detail
