#pragma once
// Portability macros shared by the host code and the CUDA kernels.

#if defined(__CUDACC__)
#define QSL_HOST_DEVICE __host__ __device__
#else
#define QSL_HOST_DEVICE
#endif

namespace qsl {

/// Most threads a qsl call may be asked for (options.threads, set_cpu_threads): a larger
/// request is refused with a qsl::error naming it rather than left to the system's thread
/// limit.
inline constexpr int max_threads = 1024;

}  // namespace qsl
