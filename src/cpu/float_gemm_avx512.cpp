// Eigen's fp32 GEMM built with -mavx512f -mavx512dq -mavx512vl -mavx512bw -mfma (set on this
// file alone in src/CMakeLists.txt). As in float_gemm_avx2.cpp, nothing but this function and
// the renamed Eigen namespace may come out of it (checked by CTest float_gemm.no_shared_symbols).
#include <cstdint>

#include "cpu/float_gemm.hpp"

#define Eigen qsl_eigen_avx512
// This file exists to vectorize: a build-wide EIGEN_DONT_VECTORIZE (a user's flags, when qsl is
// added as a subproject) must not reach its private, renamed Eigen.
#undef EIGEN_DONT_VECTORIZE
#include <Eigen/Core>
#if !defined(EIGEN_VECTORIZE_AVX512)
#error "float_gemm_avx512.cpp must be compiled with -mavx512f -mavx512dq -mavx512vl -mavx512bw"
#endif
#define QSL_FLOAT_GEMM_NAME float_gemm_block_avx512
#include "cpu/float_gemm_block.inc"
