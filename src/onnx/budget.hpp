#pragma once
// Internal: choosing each layer's code under a size budget (compress_options::budget_bits,
// max_model_bytes). Each layer offers choices of measured (stored bytes, error); the allocation
// minimizes the sum of the chosen errors with the bytes within a limit: a multiple-choice
// knapsack, solved greedily along each layer's lower convex hull (the Lagrangian relaxation's
// path), then with whatever smaller upgrades still fit.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qsl::onnx::detail {

struct budget_choice {
  std::uint64_t bytes = 0;  ///< stored bytes of the layer's code
  double error = 0;         ///< its measured error (squared relative output or weight error)
};

/// One layer's choices (at least one).
using budget_layer = std::vector<budget_choice>;

/// The index of the chosen choice per layer: the total bytes at most `max_bytes`, the summed
/// error as small as the greedy finds. Throws qsl::error when even the smallest choices of all
/// layers exceed `max_bytes` (the message gives the smallest total).
std::vector<std::size_t> allocate_budget(const std::vector<budget_layer>& layers,
                                         std::uint64_t max_bytes);

}  // namespace qsl::onnx::detail
