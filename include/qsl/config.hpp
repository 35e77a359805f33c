#pragma once
// Portability macros shared by the host code and the CUDA kernels.

#if defined(__CUDACC__)
#define QSL_HOST_DEVICE __host__ __device__
#else
#define QSL_HOST_DEVICE
#endif
