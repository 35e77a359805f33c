// The per-thread cache behind qsl::detail::scratch: large blocks come back for the next request
// of their size class on the same thread, aligned; small ones and the cache's overflow are freed.
#include "scratch.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <thread>
#include <vector>

namespace {

using qsl::detail::acquire_scratch;
using qsl::detail::release_scratch;

bool aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % qsl::cache_line == 0; }

TEST(Scratch, ALargeBlockComesBackForItsSizeClass) {
  const std::size_t bytes = 300 << 10;  // class 512 KiB
  void* p = acquire_scratch(bytes);
  ASSERT_TRUE(aligned(p));
  static_cast<char*>(p)[bytes - 1] = 1;
  release_scratch(p, bytes);
  void* q = acquire_scratch(400 << 10);  // the same class
  EXPECT_EQ(q, p);
  static_cast<char*>(q)[(400 << 10) - 1] = 1;  // the whole request is usable
  void* r = acquire_scratch(300 << 10);        // the class's block is taken: a new one
  EXPECT_NE(r, q);
  release_scratch(q, 400 << 10);
  release_scratch(r, 300 << 10);
}

TEST(Scratch, ClassesDoNotMix) {
  void* p = acquire_scratch(100 << 10);  // 128 KiB
  release_scratch(p, 100 << 10);
  void* q = acquire_scratch(3 << 20);  // 4 MiB: not the 128 KiB block
  EXPECT_NE(q, p);
  void* r = acquire_scratch(120 << 10);
  EXPECT_EQ(r, p);
  release_scratch(q, 3 << 20);
  release_scratch(r, 120 << 10);
}

TEST(Scratch, TheCacheKeepsAtMostItsBlockCount) {
  const std::size_t bytes = 70 << 10, n = qsl::detail::scratch_cache_blocks + 4;
  std::vector<void*> blocks;
  for (std::size_t i = 0; i < n; ++i) blocks.push_back(acquire_scratch(bytes));
  for (void* b : blocks) release_scratch(b, bytes);  // the first 4 released are freed
  std::set<void*> returned;
  for (std::size_t i = 0; i < qsl::detail::scratch_cache_blocks; ++i)
    returned.insert(acquire_scratch(bytes));
  const std::set<void*> kept(blocks.begin() + 4, blocks.end());
  EXPECT_EQ(returned, kept);
  for (void* b : returned) release_scratch(b, bytes);
}

TEST(Scratch, SmallAndHugeBlocksAreNotKept) {
  void* small = acquire_scratch(1000);
  ASSERT_TRUE(aligned(small));
  release_scratch(small, 1000);
  const std::size_t huge = qsl::detail::scratch_cache_bytes + 1;
  void* big = acquire_scratch(huge);
  ASSERT_TRUE(aligned(big));
  release_scratch(big, huge);  // over the cache's bytes: freed, not kept
  release_scratch(nullptr, 1 << 20);
  SUCCEED();
}

TEST(Scratch, EachThreadHasItsOwnCache) {
  void* p = acquire_scratch(200 << 10);
  release_scratch(p, 200 << 10);
  void* other = nullptr;
  std::thread([&] {
    other = acquire_scratch(200 << 10);
    release_scratch(other, 200 << 10);
  }).join();
  EXPECT_NE(other, p);  // this thread's block stayed here
  void* q = acquire_scratch(200 << 10);
  EXPECT_EQ(q, p);
  release_scratch(q, 200 << 10);
}

TEST(Scratch, VectorsUseIt) {
  const float* first = nullptr;
  {
    qsl::detail::scratch<float> a(100000);
    first = a.data();
  }  // released
  qsl::detail::scratch<float> b(90000);
  EXPECT_EQ(b.data(), first);
  EXPECT_TRUE(aligned(b.data()));
}

}  // namespace
