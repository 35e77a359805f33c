// GCC 12 warns about the "undefined" pass-through operand inside its own AVX-512 intrinsics
// (_mm512_srl_epi32, _mm512_permutexvar_ps, ...): a known false positive of the headers. Include
// it in a translation unit of AVX-512 kernels (the diagnostic pragmas hold for the rest of the
// unit; target_pragma_*.hpp do not save or restore them). No include guard: meant once per unit.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
