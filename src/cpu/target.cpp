// Which kernels run: detection once from cpuid, QSL_CPU_TARGET to force one, set_cpu_target
// for tests.
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>

#include "cpu/kernels.hpp"
#include "cpu/thread_pool.hpp"
#include "qsl/error.hpp"

namespace qsl {
namespace {

using detail::cpu::kernel_table;

constexpr cpu_target all_targets[] = {cpu_target::scalar, cpu_target::avx2, cpu_target::avx512,
                                      cpu_target::avx512_vpopcnt, cpu_target::neon};

bool runs_here(cpu_target t) {
  switch (t) {
    case cpu_target::scalar:
      return true;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    case cpu_target::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
    case cpu_target::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
    case cpu_target::avx512_vpopcnt:
      return runs_here(cpu_target::avx512) && __builtin_cpu_supports("avx512vpopcntdq");
#endif
#if defined(__aarch64__)
    case cpu_target::neon:
      return true;  // Advanced SIMD is mandatory on AArch64
#endif
    default:
      return false;
  }
}

const kernel_table& table_of(cpu_target t) {
  switch (t) {
#if defined(__x86_64__)
    case cpu_target::avx2:
      return detail::cpu::avx2_kernels();
    case cpu_target::avx512:
      return detail::cpu::avx512_kernels();
    case cpu_target::avx512_vpopcnt:
      return detail::cpu::avx512_vpopcnt_kernels();
#endif
#if defined(__aarch64__)
    case cpu_target::neon:
      return detail::cpu::neon_kernels();
#endif
    default:
      return detail::cpu::scalar_kernels();
  }
}

cpu_target best_target() {
  cpu_target best = cpu_target::scalar;
  for (cpu_target t : all_targets)
    if (runs_here(t)) best = t;  // listed worst to best
  return best;
}

struct active_state {
  std::atomic<cpu_target> target;
  std::atomic<const kernel_table*> kernels;
  active_state() {
    cpu_target t = best_target();
    if (const char* forced = std::getenv("QSL_CPU_TARGET"); forced != nullptr && *forced != 0) {
      t = parse_cpu_target(forced);
      detail::require(runs_here(t), std::string("QSL_CPU_TARGET=") + forced +
                                        ": this CPU or build does not support it");
    }
    target = t;
    kernels = &table_of(t);
  }
};

active_state& state() {
  static active_state s;
  return s;
}

}  // namespace

const char* to_string(cpu_target target) {
  switch (target) {
    case cpu_target::scalar:
      return "scalar";
    case cpu_target::avx2:
      return "avx2";
    case cpu_target::avx512:
      return "avx512";
    case cpu_target::avx512_vpopcnt:
      return "avx512_vpopcnt";
    case cpu_target::neon:
      return "neon";
  }
  return "unknown";
}

cpu_target parse_cpu_target(const std::string& name) {
  for (cpu_target t : all_targets)
    if (name == to_string(t)) return t;
  throw error("cpu target '" + name +
              "' is unknown; expected scalar, avx2, avx512, avx512_vpopcnt or neon");
}

std::vector<cpu_target> supported_cpu_targets() {
  std::vector<cpu_target> out;
  for (cpu_target t : all_targets)
    if (runs_here(t)) out.push_back(t);
  return out;
}

cpu_target active_cpu_target() { return state().target; }

void set_cpu_target(cpu_target target) {
  detail::require(runs_here(target), std::string("set_cpu_target: ") + to_string(target) +
                                         " is not supported by this CPU or build");
  state().kernels = &table_of(target);
  state().target = target;
}

int cpu_threads() { return detail::cpu::thread_pool::instance().size(); }

void set_cpu_threads(int n) {
  detail::require(n >= 0 && n <= max_threads,
                  "set_cpu_threads: n is " + std::to_string(n) +
                      "; expected 0 (all hardware threads) to " + std::to_string(max_threads));
  const int threads =
      n > 0 ? n : static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
  detail::cpu::thread_pool::instance().resize(threads);
}

namespace detail::cpu {
const kernel_table& active_kernels() { return *state().kernels; }
}  // namespace detail::cpu

int cpu_byte_tables_min_bits() {
  const detail::cpu::kernel_table& k = detail::cpu::active_kernels();
  return k.byte_rows == nullptr ? max_activation_bits + 1 : k.byte_tables_min_bits;
}

}  // namespace qsl
