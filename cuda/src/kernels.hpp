#pragma once
// Launchers of the CUDA kernels (host-callable, declared without CUDA types so that plain C++
// can include this header). `stream` is a cudaStream_t.

#include <cstdint>

#include "layer_view.hpp"

namespace qsl::cuda::detail {

/// Float activations, batch < 8: y[v][n] = sum_g sum_j alpha (2 A - B) + bias. Tables of 16
/// subset sums per 4 columns are built in shared memory per block and column tile.
void launch_lut_gemv(const layer_view& w, const float* x, std::int64_t batch, float* y,
                     void* stream);

/// Per vector: the quantizer's minimum and step (per-vector min/max when !calibrated), the
/// activation bit planes [v][bit][chunk] and the group level sums [v][group] (zeroed here).
void launch_encode(const layer_view& w, const float* x, std::int64_t batch, int bits,
                   bool calibrated, float step, float minimum, std::uint32_t* planes,
                   std::int32_t* levels, float* scales /* [v][2]: minimum, step */, void* stream);

/// Encoded activations: y[v][n] = step * z + minimum * offset[n] + bias[n].
void launch_popcount_gemv(const layer_view& w, const std::uint32_t* planes,
                          const std::int32_t* levels, const float* scales, int bits,
                          std::int64_t batch, float* y, void* stream);

/// Float activations, any batch: W_hat decoded to fp16 tiles in shared memory, tensor-core
/// (wmma) products with fp32 accumulation.
void launch_wmma_gemm(const layer_view& w, const float* x, std::int64_t batch, float* y,
                      void* stream);

/// The mixing step of a TWD layer: y[v][n] = sum_k z[v][k] c[k][n] + bias[n] (c: K x N
/// row-major; bias may be null), batch <= 65535.
void launch_mix(const float* z, std::int64_t batch, std::int64_t k, const float* c,
                const float* bias, std::int64_t n, float* y, void* stream);

/// The error of the last launch, as a message ("" when none).
const char* last_launch_error();

}  // namespace qsl::cuda::detail
