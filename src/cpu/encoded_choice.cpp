// Which encoded-activation kernel cpu_forward_encoded runs. All of them give the same floats on
// one target, so the choice is a matter of speed alone, and where the winner depends on the
// micro-architecture more than on the instruction set (byte dots against byte tables: one
// vpmaddubsw against four vpshufb per 64 weights and plane, whose throughputs differ from core
// to core) it is measured once per process and target instead of guessed.
#include <array>
#include <chrono>
#include <limits>
#include <mutex>
#include <vector>

#include "cpu/kernels.hpp"
#include "qsl/cpu.hpp"

namespace qsl {
namespace detail::cpu {
namespace {

constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();

// The target's kernel for many activation bits at small batches: word tables where it has them,
// else byte tables (popcount where it has neither).
encoded_kernel table_kernel(const kernel_table& k) {
  if (k.word_rows != nullptr) return encoded_kernel::word_tables;
  return k.byte_rows != nullptr ? encoded_kernel::byte_tables : encoded_kernel::popcount;
}

// Byte dots against the target's table kernel on a synthetic layer (256 x 2048, k = 2, groups of
// 128, 8-bit activations; about 10 ms in all): the first of the batches 4, 16, 64 at which dots
// take less than 0.9x the tables' best time of three, or never. The margin keeps the tables (the
// batch-1 kernel) where timer noise alone would pick dots.
std::int64_t measure_dot_min_batch() {
  constexpr std::int64_t rows = 256, cols = 2048, most = 64;
  weight_code code = make_weight_code(rows, cols, 2, basis::binary, 128);
  std::uint64_t state = 0x9E3779B97F4A7C15ULL;  // a fixed xorshift stream: no seed to manage
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  for (auto& word : code.signs) word = next();
  for (std::int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < 2; ++j)
      code.sign_plane(r, j)[code.words_per_plane() - 1] &=
          range_mask(code.words_per_plane() - 1, 0, cols);
  for (float& a : code.coefficients) a = 0.5f;
  compute_offsets(code);
  cpu_weights w = pack_for_cpu(code);
  add_encoded_layout(w);
  const encoded_kernel tables = table_kernel(active_kernels());
  std::vector<float> x(static_cast<std::size_t>(most * cols)),
      y(static_cast<std::size_t>(most * rows));
  for (float& v : x) v = static_cast<float>(next() % 2001) / 1000.0f - 1.0f;
  auto best_time = [&](encoded_kernel kernel, std::int64_t batch) {
    double best = std::numeric_limits<double>::infinity();
    for (int round = 0; round < 3; ++round) {
      const auto start = std::chrono::steady_clock::now();
      forward_encoded(w, x.data(), batch, {8}, nullptr, y.data(), kernel);
      best = std::min(
          best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return best;
  };
  for (std::int64_t batch : {4, 16, 64})
    if (best_time(encoded_kernel::byte_dots, batch) < 0.9 * best_time(tables, batch)) return batch;
  return never;
}

}  // namespace

std::int64_t dot_min_batch() {
  const kernel_table& k = active_kernels();
  if (k.dot_rows == nullptr || table_kernel(k) == encoded_kernel::popcount) return never;
  static std::array<std::once_flag, 8> once;
  static std::array<std::int64_t, 8> measured{};
  const auto target = static_cast<std::size_t>(active_cpu_target());
  std::call_once(once.at(target),
                 [&] { measured[target] = std::max(k.dot_min_batch, measure_dot_min_batch()); });
  return measured[target];
}

encoded_kernel fastest_encoded_kernel(const cpu_weights& w, std::int64_t batch, int bits) {
  const kernel_table& k = active_kernels();
  const encoded_kernel tables = table_kernel(k);
  const bool has_layout =
      tables == encoded_kernel::word_tables ? !w.quint_words.empty() : !w.nibble_bytes.empty();
  if (tables == encoded_kernel::popcount || bits < k.byte_tables_min_bits || !has_layout)
    return encoded_kernel::popcount;
  if (k.dot_rows != nullptr && batch >= k.dot_min_batch && batch >= dot_min_batch())
    return encoded_kernel::byte_dots;
  return tables;
}

}  // namespace detail::cpu

std::int64_t cpu_byte_dots_min_batch() { return detail::cpu::dot_min_batch(); }

}  // namespace qsl
