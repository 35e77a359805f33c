#pragma once
// Scratch buffers for the online path: 64-byte aligned and left uninitialized. A std::vector
// zero-fills what it allocates, and for the look-up tables and im2col patches, which the next
// step overwrites completely, that fill alone cost a tenth of a CNN's run time. Use it only for
// buffers whose every element is written before it is read.

#include <new>
#include <utility>
#include <vector>

#include "qsl/aligned_allocator.hpp"

namespace qsl::detail {

template <class T>
struct scratch_allocator : aligned_allocator<T> {
  template <class U>
  struct rebind {
    using other = scratch_allocator<U>;
  };
  scratch_allocator() = default;
  template <class U>
  scratch_allocator(const scratch_allocator<U>&) noexcept {}
  /// value-initialization (zeros) becomes default-initialization (nothing, for numbers).
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

template <class T>
using scratch = std::vector<T, scratch_allocator<T>>;

}  // namespace qsl::detail
