// The CUDA kernels. sm_72-clean: fp16 wmma (sm_70+), __popc, __ballot_sync, shared memory;
// nothing that needs sm_75+ (no ldmatrix, b1/int4 MMA, cp.async).
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>

#include "kernels.hpp"
#include "row_math.hpp"

namespace qsl::cuda::detail {
namespace {

constexpr int block_threads = 256;                         // 8 warps
constexpr int warps_per_block = block_threads / 32;
constexpr int tile_chunks = 16;                            // columns per shared-memory tile: 512
constexpr int tile_nibbles = tile_chunks * 8;              // 128 tables, two threads each
constexpr int table_entries = 16;                          // 8 KiB of tables per block
static_assert(2 * tile_nibbles == block_threads, "two threads build each table");
constexpr unsigned full_mask = 0xFFFFFFFFU;

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

__device__ std::int64_t smaller(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

// The bits of x[i] (fp16 bits zero-extended), by an asm volatile load: issued where it is
// written, so a loop of these puts every load in flight before the first is used (the compiler
// had paired each load with its use, one memory round trip per element).
__device__ std::uint32_t load_x_bits(const activation_io& io, std::int64_t i) {
  std::uint32_t bits;
  if (io.x_half) {
    unsigned short h;
    asm volatile("ld.global.nc.u16 %0, [%1];" : "=h"(h) : "l"(static_cast<const __half*>(io.x) + i));
    bits = h;
  } else {
    asm volatile("ld.global.nc.u32 %0, [%1];" : "=r"(bits) : "l"(static_cast<const float*>(io.x) + i));
  }
  return bits;
}

// The value of bits from load_x_bits, widened to fp32.
__device__ float x_value(const activation_io& io, std::uint32_t bits) {
  return io.x_half ? __half2float(__ushort_as_half(static_cast<unsigned short>(bits)))
                   : __uint_as_float(bits);
}

// Element i of x, widened to fp32 (exact for fp16). The branch is the same for every thread.
__device__ float load_x(const activation_io& io, std::int64_t i) {
  return x_value(io, load_x_bits(io, i));
}

// x[index(n)] widened to fp32 for n < N, 0 where index(n) < 0 (outside x): all N loads first
// (index 0, always in x, stands in for the ones outside), then the conversions.
template <int N, class Index>
__device__ void load_x_values(const activation_io& io, Index index, float (&out)[N]) {
  std::uint32_t bits[N];
  bool valid[N];
  QSL_UNROLL for (int n = 0; n < N; ++n) {
    const std::int64_t i = index(n);
    valid[n] = i >= 0;
    bits[n] = load_x_bits(io, valid[n] ? i : 0);
  }
  QSL_UNROLL for (int n = 0; n < N; ++n) out[n] = valid[n] ? x_value(io, bits[n]) : 0.0f;
}

// y[i] = value, rounded to the nearest fp16 for fp16 outputs.
__device__ void store_y(const activation_io& io, std::int64_t i, float value) {
  if (io.y_half)
    static_cast<__half*>(io.y)[i] = __float2half_rn(value);
  else
    static_cast<float*>(io.y)[i] = value;
}

// Asks L2 for the 128-byte line at p without waiting for it (sm_20+; a hint: never faults).
__device__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// Prefetches the words of one warp's rows (a tile) in chunks [c0, c1): one 128-byte line per
// chunk and plane, the lines spread over the lanes.
template <int P>
__device__ void prefetch_words(const layer_view& w, std::int64_t tile, int lane, std::int64_t c0,
                               std::int64_t c1) {
  const std::uint32_t* first = w.words + (tile * w.chunks + c0) * P * warp_rows;
  for (std::int64_t line = lane; line < (c1 - c0) * P; line += 32)
    prefetch_l2(first + line * warp_rows);
}

// ---- split-K ------------------------------------------------------------------------------------

// sum_{s < splits} part(s), added in split order (so the result does not depend on timing),
// with up to 8 loads in flight: one at a time, 16 parts in L2 cost 16 round trips (~2 us).
template <class Part>
__device__ float sum_in_split_order(unsigned splits, Part part) {
  constexpr unsigned in_flight = 8;
  float sum = 0;
  for (unsigned s0 = 0; s0 < splits; s0 += in_flight) {
    float parts[in_flight];
    QSL_UNROLL for (unsigned i = 0; i < in_flight; ++i)
      parts[i] = s0 + i < splits ? part(s0 + i) : 0.0f;
    QSL_UNROLL for (unsigned i = 0; i < in_flight; ++i)
      if (s0 + i < splits) sum += parts[i];
  }
  return sum;
}

// Called by every thread of a block after it stored its part: true in the block that arrives
// last at `counter` (one of `splits`), which may then read every part. The fences make each
// part visible device-wide before the counter moves, and the parts visible to the last block.
// The last block puts the counter back to zero: no other block of this launch touches it
// again, and the next launch on the stream finds it cleared (workspace_cache reuses it).
__device__ bool arrived_last(unsigned* counter, unsigned splits) {
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(counter, 1U) == splits - 1U;
    if (last) *counter = 0;
  }
  __syncthreads();
  if (last) __threadfence();
  return last;
}

// Ends a GEMV block. With one split it writes epilogue(row, z) itself. Otherwise it stores its
// part of z; the block that finishes last for its row block and vector (a counter per pair,
// zero when the launch starts) sums the parts in split order, so results do not depend on block
// timing, and writes epilogue(row, sum). Every thread of the block must call it.
template <class Epilogue>
__device__ void finish_rows(const layer_view& w, const split_args& sp, std::int64_t tile, int lane,
                            float z, Epilogue epilogue) {
  const std::int64_t v = blockIdx.z, batch = gridDim.z;
  const std::int64_t row = tile * warp_rows + lane, padded = w.tiles * warp_rows;
  const bool live = tile < w.tiles;
  if (sp.splits > 1) {
    if (live) sp.partials[(blockIdx.y * batch + v) * padded + row] = z;
    if (!arrived_last(&sp.counters[v * gridDim.x + blockIdx.x], sp.splits)) return;
    if (live)
      z = sum_in_split_order(sp.splits, [&](unsigned s) {  // from L2, not a stale L1 line
        return __ldcg(&sp.partials[(s * batch + v) * padded + row]);
      });
  }
  if (live && row < w.rows) epilogue(row, z);
}

// ---- float activations: look-up tables (or the staged inputs) in shared memory -------------------

// One block: 8 warps of 32 rows, the columns of split blockIdx.y in tiles of 512, vector
// blockIdx.z. Tables: per tile, the 16 table_entry values of every 4 inputs (two threads per
// table); without tables the inputs themselves are staged and each lookup computes its entry
// (warp-level decode; the same additions in the same order, so both give the same bits).
template <int P, bool Ternary, bool Tables>
__global__ void __launch_bounds__(block_threads)
    float_gemv(layer_view w, activation_io io, split_args sp) {
  constexpr int staged = Tables ? tile_nibbles * table_entries : tile_chunks * chunk_cols;
  __shared__ float stage[staged];
  const int lane = threadIdx.x % 32;
  const std::int64_t tile = static_cast<std::int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / 32;
  const std::int64_t x0 = static_cast<std::int64_t>(blockIdx.z) * w.cols;  // the vector's x
  const std::int64_t c_begin = static_cast<std::int64_t>(blockIdx.y) * sp.split_chunks;
  const std::int64_t c_end = smaller(c_begin + sp.split_chunks, w.chunks);
  row_walk<P, float> r;
  // The weights of the first column tile are on their way while the tables are built, those
  // of the next while this tile is walked.
  if (tile < w.tiles) prefetch_words<P>(w, tile, lane, c_begin, smaller(c_begin + tile_chunks, c_end));
  for (std::int64_t t0 = c_begin; t0 < c_end; t0 += tile_chunks) {
    const std::int64_t t1 = smaller(t0 + tile_chunks, c_end), s0 = t0 * 8;
    if (tile < w.tiles && t1 < c_end)
      prefetch_words<P>(w, tile, lane, t1, smaller(t1 + tile_chunks, c_end));
    __syncthreads();  // the previous tile is no longer read
    if (Tables) {
      const std::int64_t s = s0 + threadIdx.x / 2;
      float values[4];
      load_x_values(io, [&](int i) { return 4 * s + i < w.cols ? x0 + 4 * s + i : -1; }, values);
      for (int b = 8 * (threadIdx.x % 2); b < 8 * (threadIdx.x % 2) + 8; ++b)
        stage[(threadIdx.x / 2) * table_entries + b] = table_entry<Ternary>(values, b);
    } else {
      constexpr int per_thread = staged / block_threads;
      static_assert(per_thread * block_threads == staged, "the staged inputs split evenly");
      float values[per_thread];
      load_x_values(io, [&](int n) {
        const std::int64_t col = t0 * chunk_cols + threadIdx.x + n * block_threads;
        return col < w.cols ? x0 + col : -1;
      }, values);
      QSL_UNROLL for (int n = 0; n < per_thread; ++n) stage[threadIdx.x + n * block_threads] = values[n];
    }
    __syncthreads();
    if (tile >= w.tiles) continue;  // no early return: every thread takes part in the syncs
    static_assert(table_entries == 16, "lut_tables: 16 entries per nibble");
    if (Tables)
      walk_float<P, Ternary>(w, tile, lane, t0, t1, lut_tables{stage, s0}, r);
    else
      walk_float<P, Ternary>(w, tile, lane, t0, t1, decoded_tables<Ternary>{stage, s0}, r);
  }
  if (tile < w.tiles) finish_float<P, Ternary>(r);
  const std::int64_t y0 = static_cast<std::int64_t>(blockIdx.z) * w.rows;
  finish_rows(w, sp, tile, lane, r.out, [&](std::int64_t row, float z) {
    store_y(io, y0 + row, w.bias == nullptr ? z : z + w.bias[row]);
  });
}

// ---- encoding -----------------------------------------------------------------------------------

__device__ float warp_min(float v) {
  for (int o = 16; o > 0; o /= 2) v = fminf(v, __shfl_down_sync(full_mask, v, o));
  return v;
}
__device__ float warp_max(float v) {
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_down_sync(full_mask, v, o));
  return v;
}

// One block per vector and encode_chunks chunks: a single block per vector (as first written)
// encoded 8192 columns in 32 rounds of load, encode and ballots, one after another.
constexpr int encode_chunks = 32;

__global__ void __launch_bounds__(block_threads)
    encode(layer_view w, activation_io io, int bits, bool calibrated, float fixed_step,
           float fixed_minimum, std::uint32_t* planes, float* scales) {
  __shared__ float lo_part[warps_per_block], hi_part[warps_per_block];
  __shared__ float minimum_shared, step_shared;
  const std::int64_t v = blockIdx.y;
  const std::int64_t x0 = v * w.cols;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int top = (1 << bits) - 1;
  if (!calibrated) {  // the same arithmetic as encode_activations: min, (max - min) / top
    // Every block of the vector finds the same minimum and maximum (the same reads and
    // reductions; min and max do not depend on the order), then encodes its own chunks.
    float lo = INFINITY, hi = -INFINITY;
#pragma unroll 8
    for (std::int64_t c = threadIdx.x; c < w.cols; c += block_threads) {
      const float value = load_x(io, x0 + c);
      lo = fminf(lo, value);
      hi = fmaxf(hi, value);
    }
    lo = warp_min(lo);
    hi = warp_max(hi);
    if (lane == 0) {
      lo_part[warp] = lo;
      hi_part[warp] = hi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      lo = lo_part[0];
      hi = hi_part[0];
      for (int i = 1; i < warps_per_block; ++i) {
        lo = fminf(lo, lo_part[i]);
        hi = fmaxf(hi, hi_part[i]);
      }
      minimum_shared = lo;
      step_shared = (hi - lo) / static_cast<float>(top);
    }
  } else if (threadIdx.x == 0) {
    minimum_shared = fixed_minimum;
    step_shared = fixed_step;
  }
  __syncthreads();
  const float minimum = minimum_shared, step = step_shared;
  const float inv_step = step == 0 ? 0.0f : 1.0f / step;  // IEEE division, as on the host
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    scales[2 * v] = minimum;
    scales[2 * v + 1] = step;
  }
  std::uint32_t* planes_v = planes + v * bits * w.chunks;
  const std::int64_t c_end = smaller((blockIdx.x + 1) * std::int64_t{encode_chunks}, w.chunks);
  for (std::int64_t c = blockIdx.x * std::int64_t{encode_chunks} + warp; c < c_end;
       c += warps_per_block) {
    const std::int64_t col = c * 32 + lane;
    const std::uint32_t q =
        col < w.cols ? encode_level(load_x(io, x0 + col), minimum, inv_step, static_cast<float>(top)) : 0U;
    for (int i = 0; i < bits; ++i) {
      const std::uint32_t word = __ballot_sync(full_mask, (q >> i) & 1U);
      if (lane == 0) planes_v[i * w.chunks + c] = word;
    }
  }
}

// ---- encoded activations: AND + popcount ------------------------------------------------------

template <int P, bool Ternary>
__global__ void __launch_bounds__(block_threads)
    popcount_gemv(layer_view w, const std::uint32_t* planes, const float* scales, int bits,
                  activation_io io, split_args sp) {
  const int lane = threadIdx.x % 32;
  const std::int64_t tile = static_cast<std::int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / 32;
  const std::int64_t v = blockIdx.z;
  const std::int64_t c_begin = static_cast<std::int64_t>(blockIdx.y) * sp.split_chunks;
  const std::int64_t c_end = smaller(c_begin + sp.split_chunks, w.chunks);
  row_walk<P, std::int64_t> r;
  if (tile < w.tiles) {
    walk_encoded<P, Ternary>(w, tile, lane, c_begin, c_end, planes + v * bits * w.chunks, bits, r);
    finish_encoded<P, Ternary>(r);
  }
  const float minimum = scales[2 * v], step = scales[2 * v + 1];
  finish_rows(w, sp, tile, lane, r.out, [&](std::int64_t row, float z) {
    const float value = step * z + minimum * w.offsets[row];
    store_y(io, v * w.rows + row, w.bias == nullptr ? value : value + w.bias[row]);
  });
}

// ---- GEMM on tensor cores ---------------------------------------------------------------------

constexpr int gemm_k = chunk_cols;  // one chunk per step
static_assert(gemm_rows * gemm_k / 8 == block_threads, "one thread decodes 8 weights");
constexpr int gemm_prefetch_steps = 4;  // steps between a prefetch and the loads it serves
static_assert(gemm_rows / warp_rows * 16 * 2 <= block_threads - gemm_batch,
              "a thread per line of a step: inputs, then words and coefficients of 16 planes");

// Prefetches what the GEMM step at column k0 reads (the step's loads then wait on L2, not
// DRAM): one line per input vector (threads 0..63), and per row tile the chunk's planes and the
// group's coefficients (threads 64 on), each thread one line.
__device__ void prefetch_gemm_step(const layer_view& w, const activation_io& io,
                                   std::int64_t batch, std::int64_t row0, std::int64_t b0,
                                   std::int64_t k0) {
  const int t = threadIdx.x;
  if (t < gemm_batch) {
    const std::int64_t b = b0 + t;
    if (b < batch) {
      const std::int64_t i = b * w.cols + k0;
      prefetch_l2(io.x_half ? static_cast<const void*>(static_cast<const __half*>(io.x) + i)
                            : static_cast<const void*>(static_cast<const float*>(io.x) + i));
    }
    return;
  }
  const int line = t - gemm_batch, per_tile = w.planes + w.bits;
  const std::int64_t tile = row0 / warp_rows + line / per_tile;
  if (line >= (gemm_rows / warp_rows) * per_tile || tile >= w.tiles) return;
  const int which = line % per_tile;
  const std::int64_t c = k0 / chunk_cols, g = k0 / w.group_size;
  if (which < w.planes)
    prefetch_l2(&w.words[((tile * w.chunks + c) * w.planes + which) * warp_rows]);
  else
    prefetch_l2(&w.coefficients[((tile * w.groups + g) * w.bits + which - w.planes) * warp_rows]);
}

// Double-buffered: while the tensor cores multiply the step in one stage of shared memory, the
// words, coefficients and inputs of the next step are on their way into registers (load_byte,
// load_x_bits); they are decoded into the other stage after the multiplies, and one barrier per
// step separates the two. (First written with one stage, two barriers per step and the loads
// after the first barrier: every step waited for its loads, 93 us at batch 64 on an H200.)
// At most 80 registers (3 blocks of 256 threads per SM); 16 KiB of shared memory (the two
// stages, reused for the results after the last step).
template <int P, bool Ternary>
__global__ void __launch_bounds__(block_threads, 3)
    wmma_gemm(layer_view w, activation_io io, std::int64_t batch, split_args sp) {
  using namespace nvcuda;
  constexpr int stage_halves = (gemm_rows + gemm_batch) * gemm_k;  // weights, then inputs
  constexpr int items = gemm_batch * gemm_rows;
  static_assert(2 * stage_halves * sizeof(__half) == items * sizeof(float), "results reuse stages");
  // wmma loads and stores need 256-bit aligned pointers. Stage: weights [row][k] (W_hat^T
  // column-major), then inputs [batch][k] (row-major).
  __shared__ __align__(32) float shared[items];
  __half* const stages = reinterpret_cast<__half*>(shared);
  float* const out = shared;
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * gemm_rows;
  const std::int64_t b0 = static_cast<std::int64_t>(blockIdx.y) * gemm_batch;
  const int warp = threadIdx.x / 32;
  const int frag_b = warp / 2, frag_n = (warp % 2) * 2;  // 4 x 4 fragments of 16 x 16, 2 per warp
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
  for (auto& a : acc) wmma::fill_fragment(a, 0.0f);
  const std::int64_t k_begin = static_cast<std::int64_t>(blockIdx.z) * sp.split_chunks * gemm_k;
  const std::int64_t k_end = smaller(k_begin + sp.split_chunks * gemm_k, w.cols);
  const int steps = static_cast<int>((k_end - k_begin + gemm_k - 1) / gemm_k);

  // This thread's share of a step: 8 weights of one row, and inputs of 8 vectors in one column.
  const int byte_row = threadIdx.x / (gemm_k / 8), byte_col = 8 * (threadIdx.x % (gemm_k / 8));
  constexpr int per_thread = gemm_batch * gemm_k / block_threads;
  constexpr int rows_apart = block_threads / gemm_k;  // vectors between a thread's inputs
  const std::int64_t first_vector = b0 + threadIdx.x / gemm_k;
  const int input_col = threadIdx.x % gemm_k;
  // Vectors of this thread's column inside the batch (0..64), and where its inputs start: few
  // live 64-bit values, so that the step's loads fit in registers beside the accumulators.
  const int vectors_here = static_cast<int>(
      batch - first_vector < 0 ? 0 : batch - first_vector > gemm_batch ? gemm_batch : batch - first_vector);
  const std::int64_t input_base = first_vector * w.cols + input_col;
  byte_source<P, Ternary> weight_bits;
  std::uint32_t input_bits[per_thread];
  const auto input_index = [&](std::int64_t k0, int n) -> std::int64_t {
    return n * rows_apart < vectors_here && k0 + input_col < w.cols
               ? input_base + n * rows_apart * w.cols + k0
               : -1;
  };
  const auto load_step = [&](std::int64_t k0) {
    load_byte<P, Ternary>(w, row0 + byte_row, k0 + byte_col, weight_bits);
    QSL_UNROLL for (int n = 0; n < per_thread; ++n) {
      const std::int64_t i = input_index(k0, n);
      input_bits[n] = load_x_bits(io, i >= 0 ? i : 0);  // index 0 stands in; zeroed below
    }
  };
  const auto store_step = [&](std::int64_t k0, __half* stage) {
    float decoded[8];
    decode_loaded<P, Ternary>(w, row0 + byte_row, k0 + byte_col, weight_bits, decoded);
    QSL_UNROLL for (int i = 0; i < 8; ++i)
      stage[byte_row * gemm_k + byte_col + i] = __float2half(decoded[i]);
    __half* inputs = stage + gemm_rows * gemm_k;
    QSL_UNROLL for (int n = 0; n < per_thread; ++n) {
      const float value = x_value(io, input_bits[n]);  // unconditional: a select, no branch
      inputs[threadIdx.x + n * block_threads] = __float2half(input_index(k0, n) >= 0 ? value : 0.0f);
    }
  };

  for (int i = 0; i < gemm_prefetch_steps && i < steps; ++i)
    prefetch_gemm_step(w, io, batch, row0, b0, k_begin + i * gemm_k);
  if (steps > 0) {
    load_step(k_begin);
    store_step(k_begin, stages);
  }
  __syncthreads();
  for (int step = 0; step < steps; ++step) {
    const std::int64_t k0 = k_begin + static_cast<std::int64_t>(step) * gemm_k;
    const bool next = step + 1 < steps;
    if (step + gemm_prefetch_steps < steps)
      prefetch_gemm_step(w, io, batch, row0, b0, k0 + gemm_prefetch_steps * gemm_k);
    if (next) load_step(k0 + gemm_k);  // in flight during the multiplies
    const __half* weights = stages + (step % 2) * stage_halves;
    const __half* inputs = weights + gemm_rows * gemm_k;
    for (int kk = 0; kk < gemm_k; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
      wmma::load_matrix_sync(a, inputs + frag_b * 16 * gemm_k + kk, gemm_k);
      for (int f = 0; f < 2; ++f) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
        wmma::load_matrix_sync(b, weights + (frag_n + f) * 16 * gemm_k + kk, gemm_k);
        wmma::mma_sync(acc[f], a, b, acc[f]);
      }
    }
    // The other stage was last read in the previous step, before the barrier that ended it.
    if (next) store_step(k0 + gemm_k, stages + ((step + 1) % 2) * stage_halves);
    __syncthreads();
  }
  for (int f = 0; f < 2; ++f)
    wmma::store_matrix_sync(out + frag_b * 16 * gemm_rows + (frag_n + f) * 16, acc[f], gemm_rows,
                            wmma::mem_row_major);
  __syncthreads();
  if (sp.splits > 1) {  // as finish_rows: parts stored, the last block sums them in split order
    const std::int64_t block = static_cast<std::int64_t>(blockIdx.y) * gridDim.x + blockIdx.x;
    const std::int64_t blocks = static_cast<std::int64_t>(gridDim.x) * gridDim.y;
    float* part = sp.partials + (blockIdx.z * blocks + block) * items;
    for (int i = threadIdx.x; i < items; i += block_threads) part[i] = out[i];
    if (!arrived_last(&sp.counters[block], sp.splits)) return;
    for (int i = threadIdx.x; i < items; i += block_threads)  // the same i as the loop below
      out[i] = sum_in_split_order(sp.splits, [&](unsigned s) {
        return __ldcg(&sp.partials[(s * blocks + block) * items + i]);
      });
  }
  for (int i = threadIdx.x; i < items; i += block_threads) {
    const std::int64_t b = b0 + i / gemm_rows, r = row0 + i % gemm_rows;
    if (b < batch && r < w.rows)
      store_y(io, b * w.rows + r, w.bias == nullptr ? out[i] : out[i] + w.bias[r]);
  }
}

// Calls F<P, ternary> for the layer's plane count (P = k or 2k).
template <template <int, bool> class F, class... Args>
void by_planes(const layer_view& w, Args... args) {
  switch (w.planes) {
#define QSL_P(p)                                              \
  case p:                                                     \
    if (w.ternary) {                                          \
      if constexpr (p % 2 == 0) F<p, true>::run(w, args...); \
    } else {                                                  \
      if constexpr (p <= 8) F<p, false>::run(w, args...);    \
    }                                                         \
    return;
    QSL_P(1) QSL_P(2) QSL_P(3) QSL_P(4) QSL_P(5) QSL_P(6) QSL_P(7) QSL_P(8)
    QSL_P(10) QSL_P(12) QSL_P(14) QSL_P(16)
#undef QSL_P
  }
}

dim3 grid_of(const gemv_plan& plan, std::int64_t batch) {
  return dim3(static_cast<unsigned>(plan.row_blocks), static_cast<unsigned>(plan.splits),
              static_cast<unsigned>(batch));
}

template <int P, bool T>
struct float_launch {
  static void run(const layer_view& w, const activation_io& io, std::int64_t batch, bool tables,
                  const gemv_plan& plan, const split_args& sp, cudaStream_t s) {
    if (tables)
      float_gemv<P, T, true><<<grid_of(plan, batch), block_threads, 0, s>>>(w, io, sp);
    else
      float_gemv<P, T, false><<<grid_of(plan, batch), block_threads, 0, s>>>(w, io, sp);
  }
};
template <int P, bool T>
struct popcount_launch {
  static void run(const layer_view& w, const std::uint32_t* planes, const float* scales, int bits,
                  const activation_io& io, std::int64_t batch, const gemv_plan& plan,
                  const split_args& sp, cudaStream_t s) {
    popcount_gemv<P, T><<<grid_of(plan, batch), block_threads, 0, s>>>(w, planes, scales, bits, io, sp);
  }
};

template <int P, bool T>
struct wmma_launch {
  static void run(const layer_view& w, const activation_io& io, std::int64_t batch,
                  const gemv_plan& plan, const split_args& sp, cudaStream_t s) {
    const dim3 grid(static_cast<unsigned>(plan.row_blocks),
                    static_cast<unsigned>((batch + gemm_batch - 1) / gemm_batch),
                    static_cast<unsigned>(plan.splits));
    wmma_gemm<P, T><<<grid, block_threads, 0, s>>>(w, io, batch, sp);
  }
};

template <int P, bool T>
struct resident_query {
  static void run(const layer_view&, kernel_kind kind, int* blocks) {
    switch (kind) {
      case kernel_kind::lut_gemv:
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, float_gemv<P, T, true>, block_threads, 0);
        break;
      case kernel_kind::decode_gemv:
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, float_gemv<P, T, false>, block_threads, 0);
        break;
      case kernel_kind::popcount_gemv:
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, popcount_gemv<P, T>, block_threads, 0);
        break;
      case kernel_kind::wmma_gemm:
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, wmma_gemm<P, T>, block_threads, 0);
        break;
    }
  }
};

}  // namespace

int resident_blocks(const layer_view& w, kernel_kind kind) {
  int blocks = 0;
  by_planes<resident_query>(w, kind, &blocks);
  cudaGetLastError();  // a failed query (no device yet) only means the fallback below
  return blocks > 0 ? blocks : 1;
}

void launch_float_gemv(const layer_view& w, const activation_io& io, std::int64_t batch,
                       bool tables, const gemv_plan& plan, const split_args& sp, void* stream) {
  by_planes<float_launch>(w, io, batch, tables, plan, sp, as_stream(stream));
}

void launch_encode(const layer_view& w, const activation_io& io, std::int64_t batch, int bits,
                   bool calibrated, float step, float minimum, std::uint32_t* planes,
                   float* scales, void* stream) {
  const dim3 grid(static_cast<unsigned>((w.chunks + encode_chunks - 1) / encode_chunks),
                  static_cast<unsigned>(batch));
  encode<<<grid, block_threads, 0, as_stream(stream)>>>(
      w, io, bits, calibrated, step, minimum, planes, scales);
}

void launch_popcount_gemv(const layer_view& w, const std::uint32_t* planes, const float* scales,
                          int bits, const activation_io& io, std::int64_t batch,
                          const gemv_plan& plan, const split_args& sp, void* stream) {
  by_planes<popcount_launch>(w, planes, scales, bits, io, batch, plan, sp, as_stream(stream));
}

void launch_wmma_gemm(const layer_view& w, const activation_io& io, std::int64_t batch,
                      const gemv_plan& plan, const split_args& sp, void* stream) {
  by_planes<wmma_launch>(w, io, batch, plan, sp, as_stream(stream));
}

// TWD mixing: one thread per output column and vector; the vector's K values of z pass through
// shared memory in chunks, and the reads of C are coalesced along n.
constexpr int mix_threads = 256;
constexpr int mix_chunk = 2048;  // floats of z per pass: 8 KiB of shared memory

__global__ void __launch_bounds__(mix_threads)
    mix(const float* z, std::int64_t k, const float* c, const float* bias, std::int64_t n,
        activation_io io) {
  __shared__ float zs[mix_chunk];
  const std::int64_t v = blockIdx.y;
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * mix_threads + threadIdx.x;
  const float* zv = z + v * k;
  float sum = 0;
  for (std::int64_t k0 = 0; k0 < k; k0 += mix_chunk) {
    const int len = static_cast<int>(k - k0 < mix_chunk ? k - k0 : mix_chunk);
    __syncthreads();
    for (int i = threadIdx.x; i < len; i += mix_threads) zs[i] = zv[k0 + i];
    __syncthreads();
    if (col < n)
      for (int i = 0; i < len; ++i) sum += zs[i] * c[(k0 + i) * n + col];
  }
  if (col < n) store_y(io, v * n + col, sum + (bias != nullptr ? bias[col] : 0.0f));
}

void launch_mix(const float* z, std::int64_t batch, std::int64_t k, const float* c,
                const float* bias, std::int64_t n, void* y, bool y_half, void* stream) {
  const dim3 grid(static_cast<unsigned>((n + mix_threads - 1) / mix_threads),
                  static_cast<unsigned>(batch));
  const activation_io io{nullptr, y, false, y_half};
  mix<<<grid, mix_threads, 0, as_stream(stream)>>>(z, k, c, bias, n, io);
}

const char* last_launch_error() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : cudaGetErrorString(e);
}

}  // namespace qsl::cuda::detail
