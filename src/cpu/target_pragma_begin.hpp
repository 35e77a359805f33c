// Compiles the functions that follow for the features in QSL_TARGET_FEATURES (a string such as
// "avx2,fma"), without compiling the whole file with -m flags. Include it after every other
// header: inline functions and templates from headers (std::min, cpu_weights accessors, ...)
// then keep their baseline code, so the linker can never pick an AVX-512 copy of a shared
// inline function for a caller on a CPU without AVX-512. End the region with
// target_pragma_end.hpp. (No include guard: it is meant to be included once per region.)
#if !defined(QSL_TARGET_FEATURES)
#error "define QSL_TARGET_FEATURES before including target_pragma_begin.hpp"
#endif
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target(QSL_TARGET_FEATURES))), apply_to = function)
#elif defined(__GNUC__)
// GCC does not expand macros inside #pragma GCC target; _Pragma of a stringized argument does.
#define QSL_PRAGMA(x) _Pragma(#x)
#define QSL_GCC_TARGET(features) QSL_PRAGMA(GCC target(features))
#pragma GCC push_options
QSL_GCC_TARGET(QSL_TARGET_FEATURES)
#endif
