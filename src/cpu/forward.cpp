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

// Splits the row tiles over the pool; kernel(t0, t1, out) fills out[v * span + r] for every
// vector v and the rows r of tiles [t0, t1) (span = (t1 - t0) * 16), and finish(v, row, value)
// completes each output.
template <class Kernel, class Finish>
void for_all_rows(const cpu_weights& w, std::int64_t batch, const Kernel& kernel,
                  const Finish& finish) {
  thread_pool& pool = thread_pool::instance();
  const std::int64_t step = tiles_per_task(w, pool.size());
  const std::int64_t tasks = (w.tiles + step - 1) / step;
  pool.run(tasks, [&](std::int64_t task) {
    const std::int64_t t0 = task * step, t1 = std::min(w.tiles, t0 + step);
    const std::int64_t span = (t1 - t0) * tile_rows;
    std::vector<float> out(static_cast<std::size_t>(batch * span));
    kernel(t0, t1, out.data());
    const std::int64_t first_row = t0 * tile_rows;
    const std::int64_t last_row = std::min(w.rows, t1 * tile_rows);
    for (std::int64_t v = 0; v < batch; ++v)
      for (std::int64_t n = first_row; n < last_row; ++n)
        finish(v, n, out[v * span + n - first_row]);
  });
}

}  // namespace

void cpu_forward_float(const cpu_weights& w, const float* x, std::int64_t batch, const float* bias,
                       float* y) {
  if (batch <= 0) return;
  const kernel_table& k = active_kernels();
  const std::int64_t table_floats = nibbles(w) * table_entries;
  std::vector<float, aligned_allocator<float>> tables(
      static_cast<std::size_t>(batch * table_floats));
  std::vector<float> sums(static_cast<std::size_t>(batch * w.groups));
  thread_pool::instance().run(batch, [&](std::int64_t v) {
    k.build_tables(w, x + v * w.cols, tables.data() + v * table_floats, sums.data() + v * w.groups);
  });
  std::vector<table_input> inputs(static_cast<std::size_t>(batch));
  for (std::int64_t v = 0; v < batch; ++v)
    inputs[v] = {tables.data() + v * table_floats, sums.data() + v * w.groups};
  // The kernel sees every vector at once (it may share weight loads across them), in chunks
  // that keep the output pointers on the stack.
  constexpr int vectors_per_call = 64;
  for_all_rows(
      w, batch,
      [&](std::int64_t t0, std::int64_t t1, float* out) {
        const std::int64_t span = (t1 - t0) * tile_rows;
        float* rows[vectors_per_call];
        for (std::int64_t v0 = 0; v0 < batch; v0 += vectors_per_call) {
          const int count = static_cast<int>(std::min<std::int64_t>(vectors_per_call, batch - v0));
          for (int i = 0; i < count; ++i) rows[i] = out + (v0 + i) * span;
          k.lut_rows(w, inputs.data() + v0, count, t0, t1, rows);
        }
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
  if (q.calibrated)
    detail::require(std::isfinite(q.step) && q.step >= 0 && std::isfinite(q.minimum),
                    "cpu_forward_encoded: calibrated step " + std::to_string(q.step) +
                        " and minimum " + std::to_string(q.minimum) +
                        "; expected a finite step >= 0 and a finite minimum");
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
      [&](std::int64_t t0, std::int64_t t1, float* out) {
        const std::int64_t span = (t1 - t0) * tile_rows;
        for (std::int64_t v = 0; v < batch; ++v)
          k.popcount_rows(
              w, {planes.data() + v * q.bits * w.chunks, levels.data() + v * w.groups, q.bits}, t0,
              t1, out + v * span);
      },
      [&](std::int64_t v, std::int64_t n, float z) {
        const float value = step[v] * z + minimum[v] * w.offsets[n];
        y[v * w.rows + n] = bias == nullptr ? value : value + bias[n];
      });
}

}  // namespace qsl
