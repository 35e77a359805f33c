// Ends a region opened by target_pragma_begin.hpp.
#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#undef QSL_GCC_TARGET
#undef QSL_PRAGMA
#endif
#undef QSL_TARGET_FEATURES
