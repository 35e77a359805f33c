// Why Eigen three times: the library is built for the baseline ISA (it must load on any x86-64
// CPU), so a plain Eigen GEMM in it would use SSE2 only, a third or less of what the CPU can do,
// and every "speedup over fp32" measured against it would flatter qsl. Eigen picks its vector
// width at compile time, so float_gemm_avx2.cpp and float_gemm_avx512.cpp compile it again with
// -m flags under a renamed namespace, and the active CPU target (the same run-time choice as the
// qsl kernels, QSL_CPU_TARGET included) picks the copy. Threads come from the CPU pool: Eigen
// only parallelizes with OpenMP, which would fight the pool for the cores.
#include "cpu/float_gemm.hpp"

#include <Eigen/Core>
#include <algorithm>

#include "cpu/thread_pool.hpp"
#include "qsl/cpu.hpp"

#define QSL_FLOAT_GEMM_NAME float_gemm_block_baseline
#include "cpu/float_gemm_block.inc"

namespace qsl::detail::cpu {
namespace {

using block_fn = float_gemm_block_fn;

block_fn block_for(cpu_target target) {
#if defined(__x86_64__)
  if (target == cpu_target::avx512 || target == cpu_target::avx512_vpopcnt)
    return float_gemm_block_avx512;
  if (target == cpu_target::avx2) return float_gemm_block_avx2;
#endif
  (void)target;
  return float_gemm_block_baseline;
}

// Smallest blocks worth a task: Eigen's micro-kernel covers 8-24 rows of c times 4-16 columns,
// and a task costs a few microseconds to hand out.
constexpr std::int64_t min_rows_per_task = 16;
constexpr std::int64_t min_cols_per_task = 64;

}  // namespace

float_gemm_block_fn active_float_gemm_block() { return block_for(active_cpu_target()); }

void float_gemm_bt(const float* a, std::int64_t m, std::int64_t k, const float* b, std::int64_t n,
                   const float* bias, float* c) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // an empty sum
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) c[i * n + j] = bias == nullptr ? 0.0f : bias[j];
    return;
  }
  const block_fn block = block_for(active_cpu_target());
  thread_pool& pool = thread_pool::instance();
  // Split the larger side of c: rows of a (a batch of inputs) or rows of b (output features).
  const bool split_rows = m * min_cols_per_task >= n * min_rows_per_task;
  const std::int64_t extent = split_rows ? m : n;
  const std::int64_t unit = split_rows ? min_rows_per_task : min_cols_per_task;
  const std::int64_t tasks =
      std::clamp<std::int64_t>(extent / unit, 1, static_cast<std::int64_t>(pool.size()));
  const std::int64_t step = (extent + tasks - 1) / tasks;
  auto task = [&](std::int64_t t) {
    const std::int64_t lo = t * step, hi = std::min(extent, lo + step);
    if (lo >= hi) return;
    const std::int64_t rows = split_rows ? hi - lo : m, cols = split_rows ? n : hi - lo;
    float* out = split_rows ? c + lo * n : c + lo;
    block(split_rows ? a + lo * k : a, rows, k, k, split_rows ? b : b + lo * k, cols, k, out, n);
    if (bias != nullptr)
      for (std::int64_t i = 0; i < rows; ++i)
        for (std::int64_t j = 0; j < cols; ++j) out[i * n + j] += bias[split_rows ? j : lo + j];
  };
  if (tasks == 1)
    task(0);
  else
    pool.run(tasks, task);
}

}  // namespace qsl::detail::cpu
