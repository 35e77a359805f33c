#pragma once
// A standard allocator with 64-byte (cache line, AVX-512 register) alignment, for the packed
// layouts the SIMD kernels read.

#include <cstddef>
#include <cstdlib>
#include <new>

namespace qsl {

inline constexpr std::size_t cache_line = 64;

template <class T>
struct aligned_allocator {
  using value_type = T;
  aligned_allocator() = default;
  template <class U>
  aligned_allocator(const aligned_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T) - cache_line) throw std::bad_alloc();
    const std::size_t bytes = (n * sizeof(T) + cache_line - 1) / cache_line * cache_line;
    void* p = std::aligned_alloc(cache_line, bytes == 0 ? cache_line : bytes);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) noexcept { std::free(p); }
  template <class U>
  bool operator==(const aligned_allocator<U>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const aligned_allocator<U>&) const noexcept {
    return false;
  }
};

}  // namespace qsl
