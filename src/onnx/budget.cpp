#include "onnx/budget.hpp"

#include <algorithm>
#include <queue>
#include <string>

#include "qsl/error.hpp"

namespace qsl::onnx::detail {
namespace {

// The choices on the lower convex hull of (bytes, error), by increasing bytes: each next one
// costs more and lowers the error at a rate no better than the one before (a choice above the
// hull is never worth its bytes while the budget can still move along it).
std::vector<std::size_t> lower_hull(const budget_layer& choices) {
  std::vector<std::size_t> order(choices.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return choices[a].bytes != choices[b].bytes ? choices[a].bytes < choices[b].bytes
                                                : choices[a].error < choices[b].error;
  });
  std::vector<std::size_t> hull;
  for (std::size_t i : order) {
    if (!hull.empty() && choices[i].error >= choices[hull.back()].error) continue;  // dominated
    // Drop the last point while it lies on or above the segment from the one before it to i.
    while (hull.size() >= 2) {
      const budget_choice& a = choices[hull[hull.size() - 2]];
      const budget_choice& b = choices[hull.back()];
      const budget_choice& c = choices[i];
      const double cross =
          (static_cast<double>(b.bytes) - static_cast<double>(a.bytes)) * (c.error - a.error) -
          (b.error - a.error) * (static_cast<double>(c.bytes) - static_cast<double>(a.bytes));
      if (cross > 0) break;  // b is below the segment: it stays
      hull.pop_back();
    }
    hull.push_back(i);
  }
  return hull;
}

}  // namespace

std::vector<std::size_t> allocate_budget(const std::vector<budget_layer>& layers,
                                         std::uint64_t max_bytes) {
  std::vector<std::vector<std::size_t>> hulls;
  std::vector<std::size_t> pick(layers.size()), step(layers.size(), 0);
  std::uint64_t used = 0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    qsl::detail::require(!layers[l].empty(),
                         "allocate_budget: layer " + std::to_string(l) + " has no choices");
    hulls.push_back(lower_hull(layers[l]));
    pick[l] = hulls[l].front();
    used += layers[l][pick[l]].bytes;
  }
  if (used > max_bytes)
    throw qsl::error("the size budget is " + std::to_string(max_bytes) +
                     " bytes of codes, and the smallest codes of the layers take " +
                     std::to_string(used) + " (raise the budget, or compress fewer layers)");
  // Upgrades along the hulls, steepest error decrease per byte first.
  struct upgrade {
    double rate;
    std::size_t layer;
    bool operator<(const upgrade& o) const { return rate < o.rate; }
  };
  auto next = [&](std::size_t l, std::priority_queue<upgrade>& queue) {
    if (step[l] + 1 >= hulls[l].size()) return;
    const budget_choice& now = layers[l][hulls[l][step[l]]];
    const budget_choice& then = layers[l][hulls[l][step[l] + 1]];
    queue.push({(now.error - then.error) / static_cast<double>(then.bytes - now.bytes), l});
  };
  std::priority_queue<upgrade> queue;
  for (std::size_t l = 0; l < layers.size(); ++l) next(l, queue);
  while (!queue.empty()) {
    const std::size_t l = queue.top().layer;
    queue.pop();
    const std::uint64_t extra =
        layers[l][hulls[l][step[l] + 1]].bytes - layers[l][hulls[l][step[l]]].bytes;
    if (used + extra > max_bytes) continue;  // this layer stays; smaller upgrades may still fit
    used += extra;
    pick[l] = hulls[l][++step[l]];
    next(l, queue);
  }
  // What is left may still buy a choice off the hull (a cheaper step than the hull's next one).
  bool improved = true;
  while (improved) {
    improved = false;
    double best_gain = 0;
    std::size_t best_layer = 0, best_choice = 0;
    for (std::size_t l = 0; l < layers.size(); ++l)
      for (std::size_t i = 0; i < layers[l].size(); ++i) {
        const budget_choice& now = layers[l][pick[l]];
        const budget_choice& c = layers[l][i];
        if (c.error >= now.error) continue;
        if (c.bytes > now.bytes && used + (c.bytes - now.bytes) > max_bytes) continue;
        const double gain = now.error - c.error;
        if (gain > best_gain) {
          best_gain = gain;
          best_layer = l;
          best_choice = i;
        }
      }
    if (best_gain > 0) {
      used =
          used - layers[best_layer][pick[best_layer]].bytes + layers[best_layer][best_choice].bytes;
      pick[best_layer] = best_choice;
      improved = true;
    }
  }
  return pick;
}

}  // namespace qsl::onnx::detail
