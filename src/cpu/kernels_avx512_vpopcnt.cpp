// The AVX-512 kernels again, with VPOPCNTDQ for the popcount (see kernels_avx512.cpp).
#define QSL_AVX512_VPOPCNT 1
#include "cpu/kernels_avx512.cpp"  // NOLINT(bugprone-suspicious-include): one source, two targets
