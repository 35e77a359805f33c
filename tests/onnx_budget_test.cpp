// The size budget's allocation (src/onnx/budget.hpp): each layer takes one of its measured
// (bytes, error) choices, the bytes within the limit and the summed error small. Checked on
// hand-made tables whose best answer is worked out here, and against brute force on random
// tables: never over the limit, and within one layer's error step of the optimum (a greedy
// along convex hulls can miss the optimum of the integer problem by at most that).
#include "onnx/budget.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "test_util.hpp"

namespace {

using qsl::onnx::detail::allocate_budget;
using qsl::onnx::detail::budget_layer;
using testing::HasSubstr;

std::uint64_t bytes_of(const std::vector<budget_layer>& t, const std::vector<std::size_t>& pick) {
  std::uint64_t b = 0;
  for (std::size_t l = 0; l < t.size(); ++l) b += t[l][pick[l]].bytes;
  return b;
}

double error_of(const std::vector<budget_layer>& t, const std::vector<std::size_t>& pick) {
  double e = 0;
  for (std::size_t l = 0; l < t.size(); ++l) e += t[l][pick[l]].error;
  return e;
}

// The smallest summed error within `limit`, by trying every combination.
double brute_force(const std::vector<budget_layer>& t, std::uint64_t limit) {
  std::vector<std::size_t> pick(t.size(), 0);
  double best = 1e300;
  for (;;) {
    if (bytes_of(t, pick) <= limit) best = std::min(best, error_of(t, pick));
    std::size_t l = 0;
    while (l < t.size() && ++pick[l] == t[l].size()) pick[l++] = 0;
    if (l == t.size()) return best;
  }
}

TEST(Budget, HandMadeTablesGetTheirBestChoices) {
  // B's middle choice lies above its hull: the greedy skips it while it can move along the
  // hull, and takes it when only 10 bytes are left.
  const std::vector<budget_layer> t = {{{10, 1.0}, {20, 0.3}, {40, 0.1}},
                                       {{10, 0.5}, {20, 0.45}, {30, 0.1}}};
  EXPECT_EQ(allocate_budget(t, 50), (std::vector<std::size_t>{1, 2}));  // 0.3 + 0.1
  EXPECT_EQ(allocate_budget(t, 40), (std::vector<std::size_t>{1, 1}));  // 0.3 + 0.45
  EXPECT_EQ(allocate_budget(t, 20), (std::vector<std::size_t>{0, 0}));
  EXPECT_EQ(allocate_budget(t, 1000), (std::vector<std::size_t>{2, 2}));
  // A dominated choice (more bytes, more error) is never taken.
  const std::vector<budget_layer> dominated = {{{10, 0.5}, {30, 0.6}, {20, 0.2}}};
  EXPECT_EQ(allocate_budget(dominated, 100), (std::vector<std::size_t>{2}));
}

TEST(Budget, TooSmallALimitIsANamedError) {
  const std::vector<budget_layer> t = {{{10, 1.0}, {20, 0.3}}, {{15, 0.5}}};
  EXPECT_THAT(qsl::test::error_of([&] { allocate_budget(t, 24); }),
              HasSubstr("the smallest codes of the layers take 25"));
  EXPECT_THAT(qsl::test::error_of([&] { allocate_budget({{}}, 24); }), HasSubstr("no choices"));
}

TEST(Budget, RandomTablesStayWithinTheLimitAndNearTheOptimum) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int layers = 1 + static_cast<int>(rng() % 5);
    std::vector<budget_layer> t(static_cast<std::size_t>(layers));
    std::uint64_t smallest = 0, largest = 0;
    double largest_step = 0;
    for (auto& choices : t) {
      const int n = 1 + static_cast<int>(rng() % 5);
      std::uint64_t least = ~std::uint64_t{0}, most = 0;
      double high = 0, low = 1e300;
      for (int i = 0; i < n; ++i) {
        const std::uint64_t bytes = 1 + rng() % 100;
        const double error = static_cast<double>(rng() % 1000) / 1000.0;
        choices.push_back({bytes, error});
        least = std::min(least, bytes);
        most = std::max(most, bytes);
        high = std::max(high, error);
        low = std::min(low, error);
      }
      smallest += least;
      largest += most;
      largest_step = std::max(largest_step, high - low);
    }
    for (std::uint64_t limit : {smallest, (smallest + largest) / 2, largest}) {
      SCOPED_TRACE("trial " + std::to_string(trial) + ", limit " + std::to_string(limit));
      const auto pick = allocate_budget(t, limit);
      ASSERT_LE(bytes_of(t, pick), limit);
      EXPECT_LE(error_of(t, pick), brute_force(t, limit) + largest_step + 1e-12);
    }
  }
}

}  // namespace
