#pragma once
// Scratch buffers for the online path: 64-byte aligned and left uninitialized. A std::vector
// zero-fills what it allocates, and for the look-up tables and im2col patches, which the next
// step overwrites completely, that fill alone cost a tenth of a CNN's run time. Use it only for
// buffers whose every element is written before it is read.
//
// Large buffers come from a per-thread cache of freed blocks (scratch.cpp): a call's buffers
// are the same sizes every call, and glibc may map and unmap each one afresh (its mmap threshold
// moves with the process's history), so that every call touched its megabytes as new pages (the
// ViT at batch 1 on two threads: 20,000 page faults a run, 76 ms against 42 ms without).

#include <cstddef>
#include <new>
#include <utility>
#include <vector>

#include "qsl/aligned_allocator.hpp"
#include "qsl/config.hpp"

namespace qsl::detail {

/// `bytes` (64-byte aligned) from this thread's cache of released blocks of its size class, or
/// new; throws std::bad_alloc. Blocks below scratch_cache_min_bytes are plain allocations.
QSL_API void* acquire_scratch(std::size_t bytes);
/// Gives back a block acquire_scratch returned for `bytes`: kept in this thread's cache (at
/// most scratch_cache_blocks blocks and scratch_cache_bytes bytes; the oldest is freed first)
/// or freed.
QSL_API void release_scratch(void* p, std::size_t bytes) noexcept;
inline constexpr std::size_t scratch_cache_min_bytes = std::size_t{64} << 10;
inline constexpr std::size_t scratch_cache_blocks = 16;
inline constexpr std::size_t scratch_cache_bytes = std::size_t{64} << 20;

template <class T>
struct scratch_allocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = scratch_allocator<U>;
  };
  scratch_allocator() = default;
  template <class U>
  scratch_allocator(const scratch_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T) / 2) throw std::bad_alloc();
    return static_cast<T*>(acquire_scratch(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept { release_scratch(p, n * sizeof(T)); }
  /// value-initialization (zeros) becomes default-initialization (nothing, for numbers).
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const scratch_allocator<U>&) const noexcept {
    return true;
  }
  template <class U>
  bool operator!=(const scratch_allocator<U>&) const noexcept {
    return false;
  }
};

template <class T>
using scratch = std::vector<T, scratch_allocator<T>>;

}  // namespace qsl::detail
