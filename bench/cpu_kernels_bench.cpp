// The CPU kernels against Eigen's float GEMV/GEMM, in one binary and one run.
//
//   build/bench/cpu_kernels_bench --benchmark_out=cpu.json --benchmark_out_format=json
//   python3 tools/plot_cpu_bench.py cpu.json docs/cpu_weights_per_s.png
//
// Shapes N x D = 4096 x 4096 and 4096 x 14336, batch 1 and 64, k = 1, 2, 3 binary planes with
// groups of 128, activations float (kx = 0, look-up tables) or 4-bit (kx = 4, AND + popcount),
// one thread and all threads. Every qsl case reports
//   weights_per_s  N * D * batch / time
//   weight_GBps    bytes of the packed weights read per second (one pass per call)
// BM_FloatPath runs the two float-activation drivers (look-up tables, decoded W_hat + GEMM) at
// batches 8..1024 on two convolution-like (64 x 288, 256 x 2304), an FC-like (512 x 3136) and a large
// (4096 x 4096) layer, k = 2, all threads, beside BM_EigenBatch (fp32 GEMM, same shapes): where
// the decoded driver overtakes the tables is qsl::cpu_decode_min_batch.
// BM_EncodedPaths runs the two encoded-activation kernels (AND + popcount; byte tables, which
// cost the same at any kx) on one packed code at kx = 2..8, one thread; BM_EncodedStreaming the
// same on 12 matrices used in turn (more than the L3: every call reads its weights from memory).
// BM_Int8Products runs the 8-bit activation product with the target's integer kernel and with
// the portable loop, beside BM_EigenInt8Shapes (fp32 GEMM, one thread, same shapes).
// The BM_Eigen cases give Eigen's rate for the same shape, batch and threads; the ratios in
// docs/benchmarks.md divide the medians of one run (tools/plot_cpu_bench.py prints them).

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bench_util.hpp"
#include "cpu/kernels.hpp"  // both float drivers, to place qsl::cpu_decode_min_batch
#include "qsl/cpu.hpp"
#include "qsl/quantized_dense.hpp"

namespace {

using qsl::bench::all_threads;
using qsl::bench::row_matrix;
using qsl::bench::threads_of;

constexpr std::uint32_t kWeightSeed = 1, kInputSeed = 3;
constexpr std::int64_t kGroup = 128;

const row_matrix& weights(std::int64_t n, std::int64_t d) {
  return qsl::bench::gaussian_rows(n, d, kWeightSeed);
}
const row_matrix& inputs(std::int64_t batch, std::int64_t d) {
  return qsl::bench::gaussian_rows(batch, d, kInputSeed);
}

// The packed layer. Speed does not depend on how the planes were chosen, so random codes stand
// in for a decomposition (which would take seconds per shape at start-up).
const qsl::cpu_weights& packed(std::int64_t n, std::int64_t d, int k) {
  static std::map<std::tuple<std::int64_t, std::int64_t, int>, qsl::cpu_weights> cache;
  auto it = cache.find({n, d, k});
  if (it == cache.end()) {
    qsl::weight_code code = qsl::make_weight_code(n, d, k, qsl::basis::binary, kGroup);
    std::mt19937_64 rng(kWeightSeed + k);
    for (auto& word : code.signs) word = rng();
    for (std::int64_t r = 0; r < n; ++r)
      for (int j = 0; j < k; ++j) {  // padding rule: zero bits past the last column
        qsl::word* plane = code.sign_plane(r, j);
        plane[code.words_per_plane() - 1] &= qsl::range_mask(code.words_per_plane() - 1, 0, d);
      }
    for (std::size_t i = 0; i < code.coefficients.size(); ++i)
      code.coefficients[i] = 1.0f / static_cast<float>(1 + i % (static_cast<std::size_t>(k) + 1));
    qsl::compute_offsets(code);
    it = cache.emplace(std::make_tuple(n, d, k), qsl::pack_for_cpu(code)).first;
  }
  return it->second;
}

void set_rates(benchmark::State& state, std::int64_t n, std::int64_t d, std::int64_t batch,
               double bytes_per_call) {
  state.counters["weights_per_s"] = benchmark::Counter(
      static_cast<double>(n * d * batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_GBps"] =
      benchmark::Counter(bytes_per_call / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

// Arguments: N, D, batch, threads (0: all).
void BM_Eigen(benchmark::State& state) {
  const std::int64_t n = state.range(0), d = state.range(1), batch = state.range(2);
  Eigen::setNbThreads(threads_of(state.range(3)));
  qsl::bench::time_eigen_forward(state, weights(n, d), inputs(batch, d));
  set_rates(state, n, d, batch, static_cast<double>(n * d) * sizeof(float));
}

// Arguments: N, D, batch, threads (0: all), k, kx.
void BM_Qsl(benchmark::State& state) {
  const std::int64_t n = state.range(0), d = state.range(1), batch = state.range(2);
  const int threads = threads_of(state.range(3));
  const int k = static_cast<int>(state.range(4)), kx = static_cast<int>(state.range(5));
  qsl::set_cpu_threads(threads);
  const qsl::cpu_weights& w = packed(n, d, k);
  const row_matrix& x = inputs(batch, d);
  row_matrix y(batch, n);
  for (auto _ : state) {
    if (kx == 0)
      qsl::cpu_forward_float(w, x.data(), batch, nullptr, y.data());
    else
      qsl::cpu_forward_encoded(w, x.data(), batch, {kx}, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  set_rates(state, n, d, batch, static_cast<double>(w.bytes()));
  state.SetLabel(qsl::to_string(qsl::active_cpu_target()));
}

// 8-bit activations (cpu_forward_int8: grids of x, exact int32 sums, the float step) with the
// code decoded to int8 a task at a time and the target's integer kernel (1) or the portable
// loop it replaced (0), or with the target's tile kernel straight from the code (2: AVX-512
// VNNI + BITALG + VBMI, int8_tiles_avx512_vnni.cpp; cpu_forward_int8's choice where there is one).
// Arguments: N, D, batch, kernel, k (binary planes; 2 on every shape, 3 and 4 at 4096 x 4096 x
// 16); groups of 128, one thread. Beside BM_EigenInt8Shapes: Eigen's fp32 GEMM on the same
// shapes.
void BM_Int8Products(benchmark::State& state) {
  const std::int64_t n = state.range(0), d = state.range(1), batch = state.range(2);
  qsl::set_cpu_threads(1);
  const qsl::cpu_weights& w = packed(n, d, static_cast<int>(state.range(4)));
  const std::vector<float> scales = qsl::cpu_int8_row_scales(w);
  const row_matrix& x = inputs(batch, d);
  row_matrix y(batch, n);
  const auto& k = qsl::detail::cpu::active_kernels();
  const auto sums = state.range(3) == 0 ? qsl::detail::cpu::int8_sums_portable : k.int8_sums;
  const auto tiles = state.range(3) == 2 ? k.int8_tile_sums : nullptr;
  if (state.range(3) == 2 && tiles == nullptr) {
    state.SkipWithError("this target (or CPU) has no int8_tile_sums kernel");
    return;
  }
  for (auto _ : state) {
    qsl::detail::cpu::forward_int8(w, scales.data(), x.data(), batch, nullptr, y.data(), sums,
                                   tiles);
    benchmark::DoNotOptimize(y.data());
  }
  set_rates(state, n, d, batch, static_cast<double>(w.bytes()));
  state.SetLabel(std::string(qsl::to_string(qsl::active_cpu_target())) +
                 (tiles != nullptr                         ? " tiles"
                  : state.range(3) == 0 || sums == nullptr ? " loop"
                                                           : " kernel"));
}

// Layers of real models by rows per call: magika's 64 x 257 MatMul (2048 rows per sample), a
// ViT-S's 384 x 384 and 1536 x 384 (257 tokens), an MLP's 2048 x 2048 at batch 32, a 4096 x 4096
// layer at 16 and 64 rows.
void int8_shapes(benchmark::internal::Benchmark* b, bool qsl) {
  for (auto [n, d, batch] :
       {std::tuple{64, 257, 2048}, std::tuple{384, 384, 257}, std::tuple{1536, 384, 257},
        std::tuple{384, 1536, 257}, std::tuple{2048, 2048, 32}, std::tuple{4096, 4096, 16},
        std::tuple{4096, 4096, 64}}) {
    if (!qsl) {
      b->Args({n, d, batch, 1});
      continue;
    }
    for (std::int64_t kernel : {0, 1, 2}) b->Args({n, d, batch, kernel, 2});
  }
  if (qsl)
    for (std::int64_t planes : {3, 4})
      for (std::int64_t kernel : {1, 2}) b->Args({4096, 4096, 16, kernel, planes});
}

void shapes(benchmark::internal::Benchmark* b, bool qsl) {
  for (std::int64_t d : {4096, 14336})
    for (std::int64_t batch : {1, 64})
      for (std::int64_t threads : {1, 0}) {
        if (!qsl) {
          b->Args({4096, d, batch, threads});
          continue;
        }
        for (std::int64_t kx : {0, 4})
          for (std::int64_t k : {1, 2, 3}) b->Args({4096, d, batch, threads, k, kx});
      }
}

// Arguments: N, D, batch, driver (0: look-up tables, 1: decoded + GEMM); k = 2, all threads.
void BM_FloatPath(benchmark::State& state) {
  const std::int64_t n = state.range(0), d = state.range(1), batch = state.range(2);
  qsl::set_cpu_threads(all_threads());
  const qsl::cpu_weights& w = packed(n, d, 2);
  const row_matrix& x = inputs(batch, d);
  row_matrix y(batch, n);
  const auto driver = state.range(3) == 0 ? qsl::detail::cpu::forward_float_tables
                                          : qsl::detail::cpu::forward_float_decoded;
  for (auto _ : state) {
    driver(w, x.data(), batch, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  set_rates(state, n, d, batch, static_cast<double>(w.bytes()));
  state.SetLabel(state.range(3) == 0 ? "tables" : "decoded");
}

// The three encoded-activation kernels on one packed code, each forced whatever the batch:
// AND + popcount (one popcount per activation bit and plane), byte tables (one exact table
// look-up per 4 columns and plane, whatever kx) and byte dots (the planes unpacked to bytes once
// per tile for the whole batch, then u8 x s8 multiply-adds). Arguments: N, D, batch, k, kx,
// kernel (0 popcount, 1 byte tables, 2 byte dots, 3 word tables); one thread.
// The bytes of the plane layout that `kernel` reads.
std::size_t layout_bytes(const qsl::cpu_weights& w, qsl::detail::cpu::encoded_kernel kernel) {
  using qsl::detail::cpu::encoded_kernel;
  if (kernel == encoded_kernel::byte_tables) return w.nibble_bytes.size();
  if (kernel == encoded_kernel::word_tables) return w.quint_words.size() * sizeof(std::uint16_t);
  return w.words.size() * sizeof(std::uint32_t);
}

double fastest(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

void BM_EncodedPaths(benchmark::State& state) {
  using qsl::detail::cpu::encoded_kernel;
  const std::int64_t n = state.range(0), d = state.range(1), batch = state.range(2);
  const int k = static_cast<int>(state.range(3)), kx = static_cast<int>(state.range(4));
  constexpr encoded_kernel by_number[] = {encoded_kernel::popcount, encoded_kernel::byte_tables,
                                          encoded_kernel::byte_dots, encoded_kernel::word_tables};
  const encoded_kernel kernel = by_number[state.range(5)];
  qsl::set_cpu_threads(1);
  // One copy of each layer per table layout (byte tables 1, word tables 3).
  static std::map<std::tuple<std::int64_t, std::int64_t, int, std::int64_t>, qsl::cpu_weights>
      with_layout;
  const qsl::cpu_weights* w = &packed(n, d, k);
  const bool bytes = kernel == encoded_kernel::byte_tables;
  const bool words = kernel == encoded_kernel::word_tables;
  if (bytes || words) {
    auto it = with_layout.find({n, d, k, state.range(5)});
    if (it == with_layout.end()) {
      it = with_layout.emplace(std::make_tuple(n, d, k, state.range(5)), *w).first;
      if (bytes)
        qsl::add_byte_tables(it->second);
      else
        qsl::add_word_tables(it->second);
    }
    w = &it->second;
  }
  const auto& kernels = qsl::detail::cpu::active_kernels();
  if ((bytes && kernels.byte_rows == nullptr) || (words && kernels.word_rows == nullptr) ||
      (kernel == encoded_kernel::byte_dots && kernels.dot_rows == nullptr)) {
    state.SkipWithError("this target has no such kernel");
    return;
  }
  const row_matrix& x = inputs(batch, d);
  row_matrix y(batch, n);
  for (auto _ : state) {
    qsl::detail::cpu::forward_encoded(*w, x.data(), batch, {kx}, nullptr, y.data(), kernel);
    benchmark::DoNotOptimize(y.data());
  }
  // The bytes one path reads: its layout of the planes, plus the coefficients.
  const double read =
      static_cast<double>(layout_bytes(*w, kernel) + w->coefficients.size() * sizeof(float));
  set_rates(state, n, d, batch, read);
  state.SetLabel(std::string(qsl::to_string(qsl::active_cpu_target())) + " " +
                 qsl::detail::cpu::to_string(kernel));
}

// Thread scaling of what cpu_forward_encoded runs for a layer with the table layout (as
// quantized_dense and the ONNX Runtime operators make it): the target's table kernel at batch 1.
// Arguments: N, D, batch, k, kx, threads (0: all hardware threads).
void BM_EncodedThreads(benchmark::State& state) {
  const std::int64_t n = state.range(0), d = state.range(1), batch = state.range(2);
  const int k = static_cast<int>(state.range(3)), kx = static_cast<int>(state.range(4));
  qsl::set_cpu_threads(threads_of(state.range(5)));
  static std::map<std::tuple<std::int64_t, std::int64_t, int>, qsl::cpu_weights> with_bytes;
  auto it = with_bytes.find({n, d, k});
  if (it == with_bytes.end()) {
    it = with_bytes.emplace(std::make_tuple(n, d, k), packed(n, d, k)).first;
    qsl::add_encoded_layout(it->second);
  }
  const qsl::cpu_weights& w = it->second;
  const row_matrix& x = inputs(batch, d);
  row_matrix y(batch, n);
  for (auto _ : state) {
    qsl::cpu_forward_encoded(w, x.data(), batch, {kx}, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  set_rates(state, n, d, batch, static_cast<double>(w.bytes()));
  state.SetLabel(std::string(qsl::to_string(qsl::active_cpu_target())) + ", " +
                 std::to_string(qsl::cpu_threads()) + " threads, " +
                 qsl::detail::cpu::to_string(
                     qsl::detail::cpu::fastest_encoded_kernel(w, batch, kx)));
}

// Streaming: `matrices` copies of the packed layer used in turn, more bytes than the L3 holds
// (as a model's layers are), so every call reads its weights from memory. Arguments: N, D, k,
// kx, matrices, table layout (0/1: the target's, add_encoded_layout); batch 1, one thread.
void BM_EncodedStreaming(benchmark::State& state) {
  const std::int64_t n = state.range(0), d = state.range(1);
  const int k = static_cast<int>(state.range(2)), kx = static_cast<int>(state.range(3));
  const auto matrices = static_cast<std::size_t>(state.range(4));
  const bool bytes = state.range(5) != 0;
  qsl::set_cpu_threads(1);
  if (bytes && kx < qsl::cpu_byte_tables_min_bits()) {
    state.SkipWithError("this target runs byte tables from cpu_byte_tables_min_bits() on");
    return;
  }
  std::vector<qsl::cpu_weights> layers(matrices, packed(n, d, k));
  if (bytes)
    for (auto& w : layers) qsl::add_encoded_layout(w);
  const row_matrix& x = inputs(1, d);
  row_matrix y(1, n);
  std::size_t next = 0;
  for (auto _ : state) {
    qsl::cpu_forward_encoded(layers[next], x.data(), 1, {kx}, nullptr, y.data());
    next = (next + 1) % matrices;
    benchmark::DoNotOptimize(y.data());
  }
  const qsl::cpu_weights& w = layers.front();
  const auto kernel = qsl::detail::cpu::fastest_encoded_kernel(w, 1, kx);
  set_rates(state, n, d, 1,
            static_cast<double>(layout_bytes(w, kernel) + w.coefficients.size() * sizeof(float)));
  state.SetLabel(std::string(qsl::to_string(qsl::active_cpu_target())) + " " +
                 qsl::detail::cpu::to_string(kernel) + ", " + std::to_string(matrices) +
                 " matrices");
}

void batch_shapes(benchmark::internal::Benchmark* b, bool qsl) {
  for (auto [n, d] : {std::pair<std::int64_t, std::int64_t>{64, 288}, {256, 2304}, {512, 3136}, {4096, 4096}})
    for (std::int64_t batch : {8, 32, 64, 128, 256, 1024}) {
      if (!qsl) {
        b->Args({n, d, batch, 0});
        continue;
      }
      for (std::int64_t driver : {0, 1}) b->Args({n, d, batch, driver});
    }
}

BENCHMARK(BM_FloatPath)
    ->Apply([](auto* b) { batch_shapes(b, true); })
    ->ArgNames({"N", "D", "batch", "decoded"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Eigen)
    ->Name("BM_EigenBatch")
    ->Apply([](auto* b) { batch_shapes(b, false); })
    ->ArgNames({"N", "D", "batch", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

BENCHMARK(BM_Int8Products)
    ->Apply([](auto* b) { int8_shapes(b, true); })
    ->ArgNames({"N", "D", "batch", "kernel", "k"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Eigen)
    ->Name("BM_EigenInt8Shapes")
    ->Apply([](auto* b) { int8_shapes(b, false); })
    ->ArgNames({"N", "D", "batch", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

BENCHMARK(BM_EncodedPaths)
    ->Apply([](auto* b) {
      for (std::int64_t d : {4096, 14336})
        for (std::int64_t batch : {1, 16})
          for (std::int64_t k : {1, 2, 3})
            for (std::int64_t kx : {2, 4, 6, 8})
              for (std::int64_t kernel : {0, 1, 3}) b->Args({4096, d, batch, k, kx, kernel});
      // Where byte dots could take over: the three kernels by batch (k = 2; kx = 8 and 2; the
      // cases above are not registered twice), and dots on the shapes above at batch 16.
      for (std::int64_t batch : {1, 2, 4, 8, 16, 32, 64})
        for (std::int64_t kx : {2, 8})
          for (std::int64_t kernel : {0, 1, 2, 3})
            if (kernel == 2 || (batch != 1 && batch != 16))
              b->Args({4096, 4096, batch, 2, kx, kernel});
      for (std::int64_t d : {4096, 14336})
        for (std::int64_t k : {1, 2, 3})
          if (d != 4096 || k != 2) b->Args({4096, d, 16, k, 8, 2});
    })
    ->ArgNames({"N", "D", "batch", "k", "kx", "kernel"})
    ->UseRealTime()
    // With --benchmark_repetitions: the fastest repetition's time, the steadiest figure on a
    // shared machine whose neighbours only ever slow a run down (the rate counters' "min" is
    // the slowest rate; read the time).
    ->ComputeStatistics("min", fastest)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EncodedThreads)
    ->Apply([](auto* b) {
      for (std::int64_t d : {4096, 14336})
        for (std::int64_t threads : {1, 0}) b->Args({4096, d, 1, 2, 8, threads});
    })
    ->ArgNames({"N", "D", "batch", "k", "kx", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EncodedStreaming)
    ->Args({4096, 4096, 2, 8, 12, 1})
    ->Args({4096, 4096, 2, 8, 12, 0})
    ->ArgNames({"N", "D", "k", "kx", "matrices", "bytes"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Eigen)
    ->Apply([](auto* b) { shapes(b, false); })
    ->ArgNames({"N", "D", "batch", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Qsl)
    ->Apply([](auto* b) { shapes(b, true); })
    ->ArgNames({"N", "D", "batch", "threads", "k", "kx"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) { return qsl::bench::run_benchmarks(argc, argv); }
