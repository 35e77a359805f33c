#pragma once
// Portability macros shared by the host code and the CUDA kernels.

#if defined(__CUDACC__)
#define QSL_HOST_DEVICE __host__ __device__
#else
#define QSL_HOST_DEVICE
#endif

// QSL_API marks what the compiled part exports. The library is built with hidden visibility
// (docs/design.md, "An ABI that does not depend on the user's flags"): everything else in it,
// its copies of Eigen's templates above all, stays private to it, so a program compiled with
// other vector flags never mixes its Eigen with qsl's.
#if defined(__GNUC__) || defined(__clang__)
#define QSL_API __attribute__((visibility("default")))
#else
#define QSL_API
#endif

namespace qsl {

/// Most threads a qsl call may be asked for (options.threads, set_cpu_threads): a larger
/// request is refused with a qsl::error naming it rather than left to the system's thread
/// limit.
inline constexpr int max_threads = 1024;

}  // namespace qsl
