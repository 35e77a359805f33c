#pragma once
// Launchers of the CUDA kernels (host-callable, declared without CUDA types so that plain C++
// can include this header). `stream` is a cudaStream_t.

#include <cstddef>
#include <cstdint>

#include "layer_view.hpp"

namespace qsl::cuda::detail {

/// How a GEMV or GEMM spreads over the GPU: row_blocks x (vectors or vector tiles) blocks, and
/// the columns cut into `splits` ranges of split_chunks chunks (split-K), one block each. One
/// vector of a 4096 x 4096 layer is only 16 row blocks of 256 rows; without splits most of a
/// large GPU idles and each warp waits on one load after another (measured on an H200: 60 to
/// 100 us, slower than cuBLAS SGEMV). Splits are at least 8 chunks (256 columns) long, so a
/// block's partial sums stay small beside the weights it reads.
struct gemv_plan {
  std::int64_t row_blocks = 1, splits = 1, split_chunks = 1;
  std::int64_t partial_floats = 0, counters = 0;  ///< scratch, none with one split
  std::size_t scratch_bytes() const {
    return static_cast<std::size_t>(partial_floats + counters) * 4;
  }
};

inline constexpr std::int64_t min_split_chunks = 8;
inline constexpr int gemm_rows = 64, gemm_batch = 64;  ///< the tile of one GEMM block

/// The kernels, for resident_blocks.
enum class kernel_kind : std::uint8_t { lut_gemv, decode_gemv, popcount_gemv, wmma_gemm };

/// Splits for `blocks` blocks per split: as many as one wave of the GPU holds (`resident`
/// blocks per multiprocessor, from resident_blocks), fewer where the columns run out, at least
/// one. One wave, not more: a second, partly filled wave would cost a whole block's latency
/// for a few blocks' work (the first plans aimed at 4 blocks per SM, where wmma_gemm fits 2).
inline void split_columns(std::int64_t chunks, std::int64_t blocks, int multiprocessors,
                          int resident, gemv_plan& plan) {
  const std::int64_t wanted =
      std::int64_t{resident > 0 ? resident : 1} * (multiprocessors > 0 ? multiprocessors : 1);
  // Each split at least min_split_chunks long (or the whole row).
  const std::int64_t most = chunks >= 2 * min_split_chunks ? chunks / min_split_chunks : 1;
  std::int64_t splits = wanted / blocks;
  splits = splits < 1 ? 1 : splits > most ? most : splits;
  plan.split_chunks = (chunks + splits - 1) / splits;
  plan.splits = (chunks + plan.split_chunks - 1) / plan.split_chunks;
}

/// The GEMVs: blocks of 8 tiles (256 rows) per vector; partial sums [split][vector][row].
inline gemv_plan plan_gemv(const layer_view& w, std::int64_t batch, int multiprocessors,
                           int resident) {
  gemv_plan plan;
  plan.row_blocks = (w.tiles + 7) / 8;
  split_columns(w.chunks, plan.row_blocks * batch, multiprocessors, resident, plan);
  if (plan.splits > 1) {
    plan.partial_floats = plan.splits * batch * w.tiles * warp_rows;
    plan.counters = batch * plan.row_blocks;
  }
  return plan;
}

/// The tensor-core GEMM: blocks of gemm_rows x gemm_batch outputs; partial sums
/// [split][block][gemm_batch x gemm_rows].
inline gemv_plan plan_gemm(const layer_view& w, std::int64_t batch, int multiprocessors,
                           int resident) {
  gemv_plan plan;
  plan.row_blocks = (w.rows + gemm_rows - 1) / gemm_rows;
  const std::int64_t blocks = plan.row_blocks * ((batch + gemm_batch - 1) / gemm_batch);
  split_columns(w.chunks, blocks, multiprocessors, resident, plan);
  if (plan.splits > 1) {
    plan.partial_floats = plan.splits * blocks * gemm_rows * gemm_batch;
    plan.counters = blocks;
  }
  return plan;
}

/// The plan as the kernels see it, with the scratch memory laid out.
struct split_args {
  std::int64_t split_chunks;
  unsigned splits;
  float* partials;     ///< [split][vector][padded row] (null with one split)
  unsigned* counters;  ///< [vector][row block]: zero when the kernel starts, and when it ends
};

inline split_args split_args_of(const gemv_plan& plan, float* partials, unsigned* counters) {
  const bool split = plan.splits > 1;
  return {plan.split_chunks, static_cast<unsigned>(plan.splits), split ? partials : nullptr,
          split ? counters : nullptr};
}

/// A call's activations in device memory: x (read) and y (written), each fp32 or IEEE fp16.
/// Inside, everything is fp32: fp16 inputs are widened (exactly) where they are read, results
/// rounded to nearest where they are written.
struct activation_io {
  const void* x;
  void* y;
  bool x_half, y_half;
};

/// Float activations: y[v][n] = sum_g sum_j alpha S_j + bias, S_j from 16-entry tables of
/// signed (or subset) sums per 4 columns in shared memory (`tables`), or from the staged inputs
/// (warp-level decode).
void launch_float_gemv(const layer_view& w, const activation_io& io, std::int64_t batch,
                       bool tables, const gemv_plan& plan, const split_args& sp, void* stream);

/// Per vector: the quantizer's minimum and step (per-vector min/max when !calibrated) and the
/// activation bit planes [v][bit][chunk]. Reads io.x.
void launch_encode(const layer_view& w, const activation_io& io, std::int64_t batch, int bits,
                   bool calibrated, float step, float minimum, std::uint32_t* planes,
                   float* scales /* [v][2]: minimum, step */, void* stream);

/// Encoded activations: y[v][n] = step * z + minimum * offset[n] + bias[n]. Writes io.y.
void launch_popcount_gemv(const layer_view& w, const std::uint32_t* planes, const float* scales,
                          int bits, const activation_io& io, std::int64_t batch,
                          const gemv_plan& plan, const split_args& sp, void* stream);

/// Float activations, any batch: W_hat decoded to fp16 tiles in shared memory, tensor-core
/// (wmma) products with fp32 accumulation; `plan` from plan_gemm.
void launch_wmma_gemm(const layer_view& w, const activation_io& io, std::int64_t batch,
                      const gemv_plan& plan, const split_args& sp, void* stream);

/// The mixing step of a TWD layer: y[v][n] = sum_k z[v][k] c[k][n] + bias[n] (c: K x N
/// row-major; bias may be null), batch <= 65535; y fp32 or fp16 (y_half).
void launch_mix(const float* z, std::int64_t batch, std::int64_t k, const float* c,
                const float* bias, std::int64_t n, void* y, bool y_half, void* stream);

/// Blocks of `kind` for this layer's plane count that fit on one multiprocessor of the current
/// device at once (CUDA's occupancy calculator: registers, shared memory, threads); at least 1.
int resident_blocks(const layer_view& w, kernel_kind kind);

/// The error of the last launch, as a message ("" when none).
const char* last_launch_error();

}  // namespace qsl::cuda::detail
