// The CPU driver: prepares every vector once (tables or bit planes), then splits the rows over
// the thread pool. Every row is computed by one kernel call in a fixed order, so the result
// does not depend on the thread count or on how rows are split.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cpu/float_gemm.hpp"
#include "cpu/kernels.hpp"
#include "cpu/thread_pool.hpp"
#include "qsl/error.hpp"
#include "scratch.hpp"

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
    detail::scratch<float> out(static_cast<std::size_t>(batch * span));
    kernel(t0, t1, out.data());
    const std::int64_t first_row = t0 * tile_rows;
    const std::int64_t last_row = std::min(w.rows, t1 * tile_rows);
    for (std::int64_t v = 0; v < batch; ++v)
      for (std::int64_t n = first_row; n < last_row; ++n)
        finish(v, n, out[v * span + n - first_row]);
  });
}

// for_all_rows for kernels that take a block of vectors per call (they share the weight loads
// across them): kernel(w, inputs + v0, count, t0, t1, outputs) for blocks of up to PerCall
// vectors, the output pointers on the stack.
template <int PerCall, class Input, class Kernel, class Finish>
void for_all_rows_by_blocks(const cpu_weights& w, const std::vector<Input>& inputs,
                            const Kernel& kernel, const Finish& finish) {
  const auto batch = static_cast<std::int64_t>(inputs.size());
  for_all_rows(
      w, batch,
      [&](std::int64_t t0, std::int64_t t1, float* out) {
        const std::int64_t span = (t1 - t0) * tile_rows;
        float* rows[PerCall];
        for (std::int64_t v0 = 0; v0 < batch; v0 += PerCall) {
          const int count = static_cast<int>(std::min<std::int64_t>(PerCall, batch - v0));
          for (int i = 0; i < count; ++i) rows[i] = out + (v0 + i) * span;
          kernel(w, inputs.data() + v0, count, t0, t1, rows);
        }
      },
      finish);
}

}  // namespace

void cpu_forward_float(const cpu_weights& w, const float* x, std::int64_t batch, const float* bias,
                       float* y) {
  if (batch >= cpu_decode_min_batch && w.rows <= cpu_decode_max_rows)
    forward_float_decoded(w, x, batch, bias, y);
  else
    forward_float_tables(w, x, batch, bias, y);
}

void cpu_decode_rows(const cpu_weights& w, std::int64_t first, std::int64_t last, float* out) {
  detail::require(first >= 0 && first <= last && last <= w.rows,
                  "cpu_decode_rows: rows [" + std::to_string(first) + ", " + std::to_string(last) +
                      ") are not within the layer's " + std::to_string(w.rows) + " rows");
  constexpr std::int64_t rows_per_task = 16;
  const std::int64_t tasks = (last - first + rows_per_task - 1) / rows_per_task;
  thread_pool::instance().run(tasks, [&](std::int64_t t) {
    const std::int64_t n0 = first + t * rows_per_task;
    decode_rows(w, n0, std::min(last, n0 + rows_per_task), out + (n0 - first) * w.cols);
  });
}

namespace detail::cpu {

void decode_rows(const cpu_weights& w, std::int64_t first, std::int64_t last, float* out) {
  active_kernels().decode_rows(w, first, last, out);
}

// Fixed block sizes (not derived from the thread count), so that every output is computed by
// the same GEMM call whatever the number of threads. 64 rows x 256 vectors: the decoded block
// (64 x cols floats) stays in L2 while Eigen streams the vectors past it.
constexpr std::int64_t decoded_rows_per_block = 64;
constexpr std::int64_t vectors_per_block = 256;
// Layers up to this many weights are decoded whole, once per call (4 MiB of floats); larger
// ones one row block per task, so the transient memory stays far below the fp32 weights (a
// large layer has enough row blocks to keep every thread busy).
constexpr std::int64_t decode_whole_max_weights = std::int64_t{1} << 20;

void forward_float_decoded(const cpu_weights& w, const float* x, std::int64_t batch,
                           const float* bias, float* y) {
  if (batch <= 0) return;
  const float_gemm_block_fn gemm = active_float_gemm_block();
  thread_pool& pool = thread_pool::instance();
  const std::int64_t row_blocks = (w.rows + decoded_rows_per_block - 1) / decoded_rows_per_block;
  const std::int64_t vector_blocks = (batch + vectors_per_block - 1) / vectors_per_block;
  // One GEMM: vectors [v0, v1) times decoded rows [n0, n0 + count) at w_hat.
  auto multiply = [&](const float* w_hat, std::int64_t n0, std::int64_t count, std::int64_t v0) {
    const std::int64_t v1 = std::min(batch, v0 + vectors_per_block);
    float* out = y + v0 * w.rows + n0;
    gemm(x + v0 * w.cols, v1 - v0, w.cols, w.cols, w_hat, count, w.cols, out, w.rows);
    if (bias != nullptr)
      for (std::int64_t v = 0; v < v1 - v0; ++v)
        for (std::int64_t n = 0; n < count; ++n) out[v * w.rows + n] += bias[n0 + n];
  };
  if (w.rows * w.cols <= decode_whole_max_weights) {
    // Small layer: decode it whole (in parallel), then spread the GEMMs over the threads.
    detail::scratch<float> decoded(static_cast<std::size_t>(w.rows * w.cols));
    pool.run(row_blocks, [&](std::int64_t rb) {
      const std::int64_t n0 = rb * decoded_rows_per_block;
      decode_rows(w, n0, std::min(w.rows, n0 + decoded_rows_per_block),
                  decoded.data() + n0 * w.cols);
    });
    pool.run(row_blocks * vector_blocks, [&](std::int64_t task) {
      const std::int64_t n0 = task / vector_blocks * decoded_rows_per_block;
      multiply(decoded.data() + n0 * w.cols, n0, std::min(decoded_rows_per_block, w.rows - n0),
               task % vector_blocks * vectors_per_block);
    });
    return;
  }
  // Large layer (many row blocks): each task decodes one row block once and runs it against
  // every block of vectors.
  pool.run(row_blocks, [&](std::int64_t rb) {
    const std::int64_t n0 = rb * decoded_rows_per_block;
    const std::int64_t count = std::min(decoded_rows_per_block, w.rows - n0);
    detail::scratch<float> block(static_cast<std::size_t>(count * w.cols));
    decode_rows(w, n0, n0 + count, block.data());
    for (std::int64_t vb = 0; vb < vector_blocks; ++vb)
      multiply(block.data(), n0, count, vb * vectors_per_block);
  });
}

namespace {

// Vectors whose tables are built and used together: the kernel shares weight loads across
// them, and 64 vectors' tables (64 x 4 x cols floats) still fit in L2 on wide layers, where a
// whole large batch's tables would be streamed from memory once per block of rows.
constexpr std::int64_t vectors_per_table_block = 64;

void tables_block(const cpu_weights& w, const float* x, std::int64_t batch, const float* bias,
                  float* y) {
  const kernel_table& k = active_kernels();
  const std::int64_t table_floats = nibbles(w) * table_entries;
  detail::scratch<float> tables(static_cast<std::size_t>(batch * table_floats));
  detail::scratch<float> sums(static_cast<std::size_t>(batch * w.groups));
  thread_pool::instance().run(batch, [&](std::int64_t v) {
    k.build_tables(w, x + v * w.cols, tables.data() + v * table_floats, sums.data() + v * w.groups);
  });
  std::vector<table_input> inputs(static_cast<std::size_t>(batch));
  for (std::int64_t v = 0; v < batch; ++v)
    inputs[v] = {tables.data() + v * table_floats, sums.data() + v * w.groups};
  // The kernel sees every vector at once (it may share weight loads across them).
  for_all_rows_by_blocks<static_cast<int>(vectors_per_table_block)>(
      w, inputs, k.lut_rows, [&](std::int64_t v, std::int64_t n, float value) {
        y[v * w.rows + n] = bias == nullptr ? value : value + bias[n];
      });
}

}  // namespace

void forward_float_tables(const cpu_weights& w, const float* x, std::int64_t batch,
                          const float* bias, float* y) {
  for (std::int64_t v0 = 0; v0 < batch; v0 += vectors_per_table_block)
    tables_block(w, x + v0 * w.cols, std::min(vectors_per_table_block, batch - v0), bias,
                 y + v0 * w.rows);
}

}  // namespace detail::cpu

void cpu_forward_encoded(const cpu_weights& w, const float* x, std::int64_t batch,
                         const activation_quantizer& q, const float* bias, float* y) {
  detail::cpu::forward_encoded(w, x, batch, q, bias, y, detail::cpu::encoded_kernel::fastest);
}

namespace detail::cpu {

const char* to_string(encoded_kernel kernel) {
  switch (kernel) {
    case encoded_kernel::popcount:
      return "AND + popcount";
    case encoded_kernel::byte_tables:
      return "byte tables";
    case encoded_kernel::byte_dots:
      return "byte dots";
    case encoded_kernel::word_tables:
      return "word tables";
    case encoded_kernel::fastest:
      break;
  }
  return "the fastest";
}

void forward_encoded(const cpu_weights& w, const float* x, std::int64_t batch,
                     const activation_quantizer& q, const float* bias, float* y,
                     encoded_kernel kernel) {
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
  // The step and minimum of vector v (per vector: the same arithmetic as encode_activations).
  auto scale = [&](std::int64_t v, const float* xv) {
    float lo = q.minimum, s = q.step;
    if (!q.calibrated) {
      const auto [min_it, max_it] = std::minmax_element(xv, xv + w.cols);
      lo = *min_it;
      s = (*max_it - *min_it) / static_cast<float>(top);
      detail::require(std::isfinite(s), "encode_activations: row " + std::to_string(v) +
                                            " spans more than the float range");
    }
    minimum[v] = lo;
    step[v] = s;
  };
  auto finish = [&](std::int64_t v, std::int64_t n, float z) {
    const float value = step[v] * z + minimum[v] * w.offsets[n];
    y[v * w.rows + n] = bias == nullptr ? value : value + bias[n];
  };
  std::vector<std::int32_t> levels(static_cast<std::size_t>(batch * w.groups));
  // Kernels that take blocks of vectors (byte dots, byte tables) see 64 at a time: a vector's
  // input takes up to 8 bytes per column (the popcount path's planes one), so a large batch (a
  // convolution's im2col rows) is never held whole, and a tile's weights are read once per
  // block. encode(xv, v, bytes) prepares vector v in `bytes_per_vector` bytes, input_of(bytes, v)
  // describes them to the kernel.
  auto by_vector_blocks = [&](std::int64_t bytes_per_vector, auto encode, auto input_of,
                              auto kernel) {
    constexpr std::int64_t block = 64;
    // Not zero-filled: each encoder writes every byte of its vector's part.
    detail::scratch<std::uint8_t> bytes(
        static_cast<std::size_t>(std::min(block, batch) * bytes_per_vector));
    std::vector<decltype(input_of(bytes.data(), 0))> inputs;
    for (std::int64_t v0 = 0; v0 < batch; v0 += block) {
      const std::int64_t count = std::min(block, batch - v0);
      thread_pool::instance().run(count, [&](std::int64_t i) {
        const float* xv = x + (v0 + i) * w.cols;
        scale(v0 + i, xv);
        encode(xv, v0 + i, bytes.data() + i * bytes_per_vector);
      });
      inputs.resize(static_cast<std::size_t>(count));
      for (std::int64_t i = 0; i < count; ++i)
        inputs[i] = input_of(bytes.data() + i * bytes_per_vector, v0 + i);
      for_all_rows_by_blocks<block>(
          w, inputs, kernel,
          [&](std::int64_t i, std::int64_t n, float z) { finish(v0 + i, n, z); });
    }
  };
  auto inv_step = [&](std::int64_t v) { return step[v] == 0 ? 0.0f : 1.0f / step[v]; };
  if (kernel == encoded_kernel::fastest) kernel = fastest_encoded_kernel(w, batch, q.bits);
  const bool available =
      kernel == encoded_kernel::popcount ||
      (kernel == encoded_kernel::byte_dots && k.dot_rows != nullptr) ||
      (kernel == encoded_kernel::byte_tables && k.byte_rows != nullptr &&
       !w.nibble_bytes.empty()) ||
      (kernel == encoded_kernel::word_tables && k.word_rows != nullptr && !w.quint_words.empty());
  detail::require(
      available,
      std::string("cpu_forward_encoded: the ") + to_string(kernel) +
          " kernel is not available on " + qsl::to_string(active_cpu_target()) +
          (kernel == encoded_kernel::byte_tables   ? " (or the layer has no byte-table layout)"
           : kernel == encoded_kernel::word_tables ? " (or the layer has no word-table layout)"
                                                   : ""));
  if (kernel == encoded_kernel::byte_dots) {
    by_vector_blocks(
        w.chunks * chunk_cols,
        [&](const float* xv, std::int64_t v, std::uint8_t* out) {
          k.encode_levels(w, xv, minimum[v], inv_step(v), q.bits, out,
                          levels.data() + v * w.groups);
        },
        [&](const std::uint8_t* in, std::int64_t v) {
          return level_input{in, levels.data() + v * w.groups};
        },
        k.dot_rows);
    return;
  }
  if (kernel == encoded_kernel::word_tables) {
    const std::int64_t table_words = word_table_entries(w);
    by_vector_blocks(
        table_words * static_cast<std::int64_t>(sizeof(std::uint16_t)),
        [&](const float* xv, std::int64_t v, std::uint8_t* out) {
          k.encode_words(w, xv, minimum[v], inv_step(v), q.bits,
                         reinterpret_cast<std::uint16_t*>(out), levels.data() + v * w.groups);
        },
        [&](const std::uint8_t* in, std::int64_t v) {
          return word_table_input{reinterpret_cast<const std::uint16_t*>(in),
                                  levels.data() + v * w.groups};
        },
        k.word_rows);
    return;
  }
  if (kernel == encoded_kernel::byte_tables) {
    const std::int64_t table_bytes = byte_table_nibbles(w) * table_entries;
    by_vector_blocks(
        2 * table_bytes,
        [&](const float* xv, std::int64_t v, std::uint8_t* out) {
          k.encode_bytes(w, xv, minimum[v], inv_step(v), q.bits, out, out + table_bytes,
                         levels.data() + v * w.groups);
        },
        [&](const std::uint8_t* in, std::int64_t v) {
          return byte_table_input{in, in + table_bytes, levels.data() + v * w.groups};
        },
        k.byte_rows);
    return;
  }
  std::vector<std::uint32_t, aligned_allocator<std::uint32_t>> planes(
      static_cast<std::size_t>(batch * q.bits * w.chunks));
  thread_pool::instance().run(batch, [&](std::int64_t v) {
    const float* xv = x + v * w.cols;
    scale(v, xv);
    k.encode(w, xv, minimum[v], inv_step(v), q.bits, planes.data() + v * q.bits * w.chunks,
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
      finish);
}

}  // namespace detail::cpu
}  // namespace qsl
