// Eigen's fp32 GEMM built with -mavx2 -mfma (set on this file alone in src/CMakeLists.txt).
// Only qsl::detail::cpu::float_gemm_block_avx2 and templates of the renamed Eigen namespace
// may come out of this file: a shared inline function compiled here could be picked by the
// linker for a caller on a CPU without AVX2. The CTest float_gemm.no_shared_symbols checks it.
#include <cstdint>

#include "cpu/float_gemm.hpp"

#define Eigen qsl_eigen_avx2
// This file exists to vectorize: a build-wide EIGEN_DONT_VECTORIZE (a user's flags, when qsl is
// added as a subproject) must not reach its private, renamed Eigen.
#undef EIGEN_DONT_VECTORIZE
#include <Eigen/Core>
#if !defined(EIGEN_VECTORIZE_AVX2) || !defined(EIGEN_VECTORIZE_FMA)
#error "float_gemm_avx2.cpp must be compiled with -mavx2 -mfma"
#endif
#define QSL_FLOAT_GEMM_NAME float_gemm_block_avx2
#include "cpu/float_gemm_block.inc"
