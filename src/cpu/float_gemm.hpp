#pragma once
// Plain fp32 GEMM for the layers qsl leaves uncompressed (the executor's fp32 path and its
// baselines): Eigen's GEMM, built once per x86 vector width and picked with the active CPU
// target (see float_gemm.cpp for why), split over the CPU thread pool.

#include <cstdint>

#include "qsl/config.hpp"

namespace qsl::detail::cpu {

/// Exported (QSL_API) for qsl::onnx's executor; not API.
/// c (m x n, row-major) = a (m x k, row-major) * b^T (b is n x k, row-major) + bias (n values,
/// or null). Nothing may alias c.
QSL_API void float_gemm_bt(const float* a, std::int64_t m, std::int64_t k, const float* b,
                           std::int64_t n, const float* bias, float* c);

using float_gemm_block_fn = void (*)(const float*, std::int64_t, std::int64_t, std::int64_t,
                                     const float*, std::int64_t, std::int64_t, float*,
                                     std::int64_t);
/// The block function of the active CPU target (one thread; see below).
float_gemm_block_fn active_float_gemm_block();

// One block of the product, as each build of Eigen computes it: c (m x n, leading dimension
// ldc) = a (m x k, lda) * b^T (n x k, ldb).
#define QSL_FLOAT_GEMM_BLOCK(name)                                                          \
  void name(const float* a, std::int64_t m, std::int64_t k, std::int64_t lda, const float* b, \
            std::int64_t n, std::int64_t ldb, float* c, std::int64_t ldc)
QSL_FLOAT_GEMM_BLOCK(float_gemm_block_baseline);
QSL_FLOAT_GEMM_BLOCK(float_gemm_block_avx2);
QSL_FLOAT_GEMM_BLOCK(float_gemm_block_avx512);

}  // namespace qsl::detail::cpu
