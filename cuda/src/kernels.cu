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
constexpr int table_nibbles = block_threads;               // one table per thread to build
constexpr int table_entries = 16;
constexpr unsigned full_mask = 0xFFFFFFFFU;

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

__device__ std::int64_t smaller(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

__device__ std::int64_t last_nibble(const layer_view& w, std::int64_t g) {
  return (w.group_end(g) + 3) / 4;
}

// ---- float activations: look-up tables in shared memory ------------------------------------

template <int P, bool Ternary>
__global__ void __launch_bounds__(block_threads) lut_gemv(layer_view w, const float* x, float* y) {
  __shared__ float table[table_nibbles * table_entries];
  const int lane = threadIdx.x % 32;
  const std::int64_t tile = static_cast<std::int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / 32;
  const std::int64_t v = blockIdx.y;
  const float* xv = x + v * w.cols;
  const std::int64_t nibbles = (w.cols + 3) / 4;

  float acc[P];
  for (int p = 0; p < P; ++p) acc[p] = 0;
  float group_sum = 0, out = 0;
  std::int64_t g = 0;
  for (std::int64_t t0 = 0; t0 < nibbles; t0 += table_nibbles) {
    const std::int64_t t1 = smaller(nibbles, t0 + table_nibbles);
    __syncthreads();  // the previous column tile's table is no longer read
    const std::int64_t s = t0 + threadIdx.x;
    if (s < t1) {
      float values[4];
      for (int i = 0; i < 4; ++i) values[i] = 4 * s + i < w.cols ? xv[4 * s + i] : 0.0f;
      for (int b = 0; b < table_entries; ++b) {
        float sum = 0;  // the order of the CPU targets: x0 + x1 + x2 + x3
        for (int i = 0; i < 4; ++i)
          if ((b >> i) & 1) sum += values[i];
        table[threadIdx.x * table_entries + b] = sum;
      }
    }
    __syncthreads();
    if (tile >= w.tiles) continue;  // no early return: every thread takes part in the syncs
    const auto lookup = [&](std::int64_t nibble, std::uint32_t entry) {
      return table[(nibble - t0) * table_entries + entry];
    };
    for (std::int64_t a = t0; a < t1;) {  // the part of each group inside this column tile
      const std::int64_t group_end = last_nibble(w, g);
      const std::int64_t b = smaller(t1, group_end);
      lookup_nibbles<P>(w, tile, lane, a, b, lookup, acc);
      if (!Ternary)
        for (std::int64_t n = a; n < b; ++n) group_sum += lookup(n, 15);  // sum of x
      if (b == group_end) {
        out += finish_float_group<P, Ternary>(w, tile, g, lane, acc, group_sum);
        for (int p = 0; p < P; ++p) acc[p] = 0;
        group_sum = 0;
        ++g;
      }
      a = b;
    }
  }
  const std::int64_t row = tile * 32 + lane;
  if (tile < w.tiles && row < w.rows)
    y[v * w.rows + row] = w.bias == nullptr ? out : out + w.bias[row];
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

__global__ void __launch_bounds__(block_threads)
    encode(layer_view w, const float* x, int bits, bool calibrated, float fixed_step,
           float fixed_minimum, std::uint32_t* planes, std::int32_t* levels, float* scales) {
  __shared__ float lo_part[warps_per_block], hi_part[warps_per_block];
  __shared__ float minimum_shared, step_shared;
  const std::int64_t v = blockIdx.x;
  const float* xv = x + v * w.cols;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int top = (1 << bits) - 1;
  if (!calibrated) {  // the same arithmetic as encode_activations: min, (max - min) / top
    float lo = INFINITY, hi = -INFINITY;
    for (std::int64_t c = threadIdx.x; c < w.cols; c += block_threads) {
      lo = fminf(lo, xv[c]);
      hi = fmaxf(hi, xv[c]);
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
  if (threadIdx.x == 0) {
    scales[2 * v] = minimum;
    scales[2 * v + 1] = step;
  }
  std::uint32_t* planes_v = planes + v * bits * w.chunks;
  std::int32_t* levels_v = levels + v * w.groups;
  for (std::int64_t c = warp; c < w.chunks; c += warps_per_block) {
    const std::int64_t col = c * 32 + lane;
    const std::uint32_t q =
        col < w.cols ? encode_level(xv[col], minimum, inv_step, static_cast<float>(top)) : 0U;
    for (int i = 0; i < bits; ++i) {
      const std::uint32_t word = __ballot_sync(full_mask, (q >> i) & 1U);
      if (lane == 0) planes_v[i * w.chunks + c] = word;
    }
    // Group level sums: one atomic per chunk when the chunk lies in one group.
    const std::int64_t g = (col < w.cols ? col : w.cols - 1) / w.group_size;
    const std::int64_t g_first = __shfl_sync(full_mask, g, 0), g_last = __shfl_sync(full_mask, g, 31);
    if (g_first == g_last) {
      std::int32_t sum = static_cast<std::int32_t>(q);
      for (int o = 16; o > 0; o /= 2) sum += __shfl_down_sync(full_mask, sum, o);
      if (lane == 0) atomicAdd(&levels_v[g], sum);
    } else if (q != 0) {
      atomicAdd(&levels_v[g], static_cast<std::int32_t>(q));
    }
  }
}

// ---- encoded activations: AND + popcount ------------------------------------------------------

template <int P, bool Ternary>
__global__ void __launch_bounds__(block_threads)
    popcount_gemv(layer_view w, const std::uint32_t* planes, const std::int32_t* levels,
                  const float* scales, int bits, float* y) {
  const int lane = threadIdx.x % 32;
  const std::int64_t tile = static_cast<std::int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / 32;
  const std::int64_t v = blockIdx.y;
  if (tile >= w.tiles) return;
  const std::uint32_t* act = planes + v * bits * w.chunks;  // the same words for every lane
  float z = 0;
  for (std::int64_t g = 0; g < w.groups; ++g) {
    std::int64_t acc[P];
    for (int p = 0; p < P; ++p) acc[p] = 0;
    count_group<P>(w, tile, lane, g, act, bits, acc);
    z += finish_encoded_group<P, Ternary>(w, tile, g, lane, acc, levels[v * w.groups + g]);
  }
  const std::int64_t row = tile * 32 + lane;
  if (row < w.rows) {
    const float value = scales[2 * v + 1] * z + scales[2 * v] * w.offsets[row];
    y[v * w.rows + row] = w.bias == nullptr ? value : value + w.bias[row];
  }
}

// ---- GEMM on tensor cores ---------------------------------------------------------------------

constexpr int gemm_rows = 64, gemm_batch = 64, gemm_k = 32;

__global__ void __launch_bounds__(block_threads)
    wmma_gemm(layer_view w, const float* x, std::int64_t batch, float* y) {
  using namespace nvcuda;
  // wmma loads and stores need 256-bit aligned pointers.
  __shared__ __align__(32) __half weights[gemm_rows * gemm_k];  // [row][k]: W_hat^T column-major
  __shared__ __align__(32) __half inputs[gemm_batch * gemm_k];  // [batch][k], row-major
  __shared__ __align__(32) float out[gemm_batch * gemm_rows];
  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.x) * gemm_rows;
  const std::int64_t b0 = static_cast<std::int64_t>(blockIdx.y) * gemm_batch;
  const int warp = threadIdx.x / 32;
  const int frag_b = warp / 2, frag_n = (warp % 2) * 2;  // 4 x 4 fragments of 16 x 16, 2 per warp
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
  for (auto& a : acc) wmma::fill_fragment(a, 0.0f);
  for (std::int64_t k0 = 0; k0 < w.cols; k0 += gemm_k) {
    __syncthreads();
    for (int i = threadIdx.x; i < gemm_rows * gemm_k; i += block_threads) {
      const std::int64_t r = row0 + i / gemm_k, c = k0 + i % gemm_k;
      weights[i] = __float2half(r < w.rows && c < w.cols ? decode_weight(w, r, c) : 0.0f);
    }
    for (int i = threadIdx.x; i < gemm_batch * gemm_k; i += block_threads) {
      const std::int64_t b = b0 + i / gemm_k, c = k0 + i % gemm_k;
      inputs[i] = __float2half(b < batch && c < w.cols ? x[b * w.cols + c] : 0.0f);
    }
    __syncthreads();
    for (int kk = 0; kk < gemm_k; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
      wmma::load_matrix_sync(a, inputs + frag_b * 16 * gemm_k + kk, gemm_k);
      for (int f = 0; f < 2; ++f) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
        wmma::load_matrix_sync(b, weights + (frag_n + f) * 16 * gemm_k + kk, gemm_k);
        wmma::mma_sync(acc[f], a, b, acc[f]);
      }
    }
  }
  for (int f = 0; f < 2; ++f)
    wmma::store_matrix_sync(out + frag_b * 16 * gemm_rows + (frag_n + f) * 16, acc[f], gemm_rows,
                            wmma::mem_row_major);
  __syncthreads();
  for (int i = threadIdx.x; i < gemm_batch * gemm_rows; i += block_threads) {
    const std::int64_t b = b0 + i / gemm_rows, r = row0 + i % gemm_rows;
    if (b < batch && r < w.rows)
      y[b * w.rows + r] = w.bias == nullptr ? out[i] : out[i] + w.bias[r];
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

template <int P, bool T>
struct lut_launch {
  static void run(const layer_view& w, const float* x, std::int64_t batch, float* y,
                  cudaStream_t s) {
    const dim3 grid(static_cast<unsigned>((w.tiles + warps_per_block - 1) / warps_per_block),
                    static_cast<unsigned>(batch));
    lut_gemv<P, T><<<grid, block_threads, 0, s>>>(w, x, y);
  }
};
template <int P, bool T>
struct popcount_launch {
  static void run(const layer_view& w, const std::uint32_t* planes, const std::int32_t* levels,
                  const float* scales, int bits, std::int64_t batch, float* y, cudaStream_t s) {
    const dim3 grid(static_cast<unsigned>((w.tiles + warps_per_block - 1) / warps_per_block),
                    static_cast<unsigned>(batch));
    popcount_gemv<P, T><<<grid, block_threads, 0, s>>>(w, planes, levels, scales, bits, y);
  }
};

}  // namespace

void launch_lut_gemv(const layer_view& w, const float* x, std::int64_t batch, float* y,
                     void* stream) {
  by_planes<lut_launch>(w, x, batch, y, as_stream(stream));
}

void launch_encode(const layer_view& w, const float* x, std::int64_t batch, int bits,
                   bool calibrated, float step, float minimum, std::uint32_t* planes,
                   std::int32_t* levels, float* scales, void* stream) {
  cudaMemsetAsync(levels, 0, static_cast<std::size_t>(batch * w.groups) * sizeof(std::int32_t),
                  as_stream(stream));
  encode<<<static_cast<unsigned>(batch), block_threads, 0, as_stream(stream)>>>(
      w, x, bits, calibrated, step, minimum, planes, levels, scales);
}

void launch_popcount_gemv(const layer_view& w, const std::uint32_t* planes,
                          const std::int32_t* levels, const float* scales, int bits,
                          std::int64_t batch, float* y, void* stream) {
  by_planes<popcount_launch>(w, planes, levels, scales, bits, batch, y, as_stream(stream));
}

void launch_wmma_gemm(const layer_view& w, const float* x, std::int64_t batch, float* y,
                      void* stream) {
  const dim3 grid(static_cast<unsigned>((w.rows + gemm_rows - 1) / gemm_rows),
                  static_cast<unsigned>((batch + gemm_batch - 1) / gemm_batch));
  wmma_gemm<<<grid, block_threads, 0, as_stream(stream)>>>(w, x, batch, y);
}

// TWD mixing: one thread per output column and vector; the vector's K values of z pass through
// shared memory in chunks, and the reads of C are coalesced along n.
constexpr int mix_threads = 256;
constexpr int mix_chunk = 2048;  // floats of z per pass: 8 KiB of shared memory

__global__ void __launch_bounds__(mix_threads)
    mix(const float* z, std::int64_t k, const float* c, const float* bias, std::int64_t n,
        float* y) {
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
  if (col < n) y[v * n + col] = sum + (bias != nullptr ? bias[col] : 0.0f);
}

void launch_mix(const float* z, std::int64_t batch, std::int64_t k, const float* c,
                const float* bias, std::int64_t n, float* y, void* stream) {
  const dim3 grid(static_cast<unsigned>((n + mix_threads - 1) / mix_threads),
                  static_cast<unsigned>(batch));
  mix<<<grid, mix_threads, 0, as_stream(stream)>>>(z, k, c, bias, n, y);
}

const char* last_launch_error() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : cudaGetErrorString(e);
}

}  // namespace qsl::cuda::detail
