// The CPU driver: prepares every vector once (tables or bit planes), then splits the rows over
// the thread pool. Every row is computed by one kernel call in a fixed order, so the result
// does not depend on the thread count or on how rows are split.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cpu/kernels.hpp"
#include "cpu/thread_pool.hpp"
#include "qsl/error.hpp"

namespace qsl {
namespace {

using namespace detail::cpu;

// Tiles per task: enough tasks to balance the threads, few enough to amortize a call.
std::int64_t tiles_per_task(const cpu_weights& w, int threads) {
  const std::int64_t tasks = std::max<std::int64_t>(1, 4 * threads);
  return std::max<std::int64_t>(1, (w.tiles + tasks - 1) / tasks);
}

void check_finite(const float* x, std::int64_t batch, std::int64_t cols) {
  for (std::int64_t v = 0; v < batch; ++v)
    for (std::int64_t c = 0; c < cols; ++c)
      if (!std::isfinite(x[v * cols + c]))
        throw error("encode_activations: x has " + std::to_string(x[v * cols + c]) + " at row " +
                    std::to_string(v) + ", col " + std::to_string(c) + "; expected finite values");
}

// Runs kernel(v, tile_begin, tile_end, out) for every vector and tile range in parallel and
// finishes each output row with finish(v, row, value).
template <class Kernel, class Finish>
void for_all_rows(const cpu_weights& w, std::int64_t batch, const Kernel& kernel,
                  const Finish& finish) {
  thread_pool& pool = thread_pool::instance();
  const std::int64_t step = tiles_per_task(w, pool.size());
  const std::int64_t tasks = (w.tiles + step - 1) / step;
  pool.run(tasks, [&](std::int64_t task) {
    const std::int64_t t0 = task * step, t1 = std::min(w.tiles, t0 + step);
    std::vector<float> out(static_cast<std::size_t>((t1 - t0) * tile_rows));
    for (std::int64_t v = 0; v < batch; ++v) {
      kernel(v, t0, t1, out.data());
      const std::int64_t first_row = t0 * tile_rows;
      const std::int64_t last_row = std::min(w.rows, t1 * tile_rows);
      for (std::int64_t n = first_row; n < last_row; ++n) finish(v, n, out[n - first_row]);
    }
  });
}

}  // namespace

void cpu_forward_float(const cpu_weights& w, const float* x, std::int64_t batch,
                       const float* bias, float* y) {
  if (batch <= 0) return;
  const kernel_table& k = active_kernels();
  const std::int64_t table_floats = nibbles(w) * table_entries;
  std::vector<float, aligned_allocator<float>> tables(
      static_cast<std::size_t>(batch * table_floats));
  std::vector<float> sums(static_cast<std::size_t>(batch * w.groups));
  thread_pool::instance().run(batch, [&](std::int64_t v) {
    k.build_tables(w, x + v * w.cols, tables.data() + v * table_floats, sums.data() + v * w.groups);
  });
  for_all_rows(
      w, batch,
      [&](std::int64_t v, std::int64_t t0, std::int64_t t1, float* out) {
        k.lut_rows(w, {tables.data() + v * table_floats, sums.data() + v * w.groups}, t0, t1, out);
      },
      [&](std::int64_t v, std::int64_t n, float value) {
        y[v * w.rows + n] = bias == nullptr ? value : value + bias[n];
      });
}

void cpu_forward_encoded(const cpu_weights& w, const float* x, std::int64_t batch,
                         const activation_quantizer& q, const float* bias, float* y) {
  if (batch <= 0) return;
  detail::require(q.bits >= 1 && q.bits <= max_activation_bits,
                  "cpu_forward_encoded: activation bits is " + std::to_string(q.bits) +
                      "; expected 1.." + std::to_string(max_activation_bits));
  check_finite(x, batch, w.cols);
  const kernel_table& k = active_kernels();
  const int top = (1 << q.bits) - 1;
  std::vector<float> minimum(static_cast<std::size_t>(batch)), step(minimum.size());
  std::vector<std::uint32_t, aligned_allocator<std::uint32_t>> planes(
      static_cast<std::size_t>(batch * q.bits * w.chunks));
  std::vector<std::int32_t> levels(static_cast<std::size_t>(batch * w.groups));
  thread_pool::instance().run(batch, [&](std::int64_t v) {
    const float* xv = x + v * w.cols;
    float lo = q.minimum, s = q.step;
    if (!q.calibrated) {  // the same arithmetic as encode_activations
      const auto [min_it, max_it] = std::minmax_element(xv, xv + w.cols);
      lo = *min_it;
      s = (*max_it - *min_it) / static_cast<float>(top);
      detail::require(std::isfinite(s), "encode_activations: row " + std::to_string(v) +
                                            " spans more than the float range");
    }
    minimum[v] = lo;
    step[v] = s;
    k.encode(w, xv, lo, s == 0 ? 0.0f : 1.0f / s, q.bits, planes.data() + v * q.bits * w.chunks,
             levels.data() + v * w.groups);
  });
  for_all_rows(
      w, batch,
      [&](std::int64_t v, std::int64_t t0, std::int64_t t1, float* out) {
        k.popcount_rows(w, {planes.data() + v * q.bits * w.chunks, levels.data() + v * w.groups,
                            q.bits},
                        t0, t1, out);
      },
      [&](std::int64_t v, std::int64_t n, float z) {
        const float value = step[v] * z + minimum[v] * w.offsets[n];
        y[v * w.rows + n] = bias == nullptr ? value : value + bias[n];
      });
}

}  // namespace qsl
