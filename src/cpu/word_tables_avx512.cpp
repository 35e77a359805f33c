// AVX-512 word tables: the encoded-activation kernel for many activation bits on AVX-512BW
// (kernels.hpp, "Encoded activations, word tables"). Both AVX-512 targets use it.
//
// Why words and vpermw, not the AVX2 byte tables widened to 512 bits: a nibble's exact sum
// (up to 4 * 255) does not fit a byte, so the byte tables look up two bytes per nibble and
// spend more operations widening them than looking up. vpermw looks up 32 16-bit entries, so a
// quint of 5 columns (up to 5 * 255 = 1275) is one look-up, and up to 51 of them add in 16 bits
// before a widening. Per word of weights (three quints of two planes, 16 rows: 480 weights x
// planes) that is one load, two shifts, three vpermw and three adds.
#include <immintrin.h>

#include <algorithm>

#include "cpu/kernel_common.hpp"
#include "scratch.hpp"

#define QSL_TARGET_FEATURES "avx512f,avx512bw,avx512dq,avx512vl,bmi2,popcnt,fma"
#include "cpu/avx512_intrinsic_warnings.hpp"  // GCC 12's false warnings
#include "cpu/target_pragma_begin.hpp"

namespace qsl::detail::cpu {
namespace {

constexpr int quint_cols = 5;
constexpr int quints_per_word = 3;
constexpr int word_entries = 32;
// The three look-up sums of a register are added in 16 bits, then widened: 17 word slots are 51
// look-ups of at most 1275, 65025 < 2^16.
constexpr std::int64_t slots_per_flush = 17;

// A loaded register the compiler must keep: without it GCC folds the load into every instruction
// that reads the value (three per weight word, one per tile per table), and this kernel is bound
// by loads (about one 64-byte load per 1.5 cycles on Zen 4, measured), so that doubled its time.
[[gnu::always_inline]] inline __m512i keep(__m512i v) {
  asm("" : "+v"(v));
  return v;
}

// The levels of columns [first, first + 16) by the encoding rule (kernel_common.hpp), 0 past
// w.cols: the AVX-512 popcount encoder's arithmetic, so both kernels see the same q.
inline __m512i levels16(const cpu_weights& w, const float* x, std::int64_t first, __m512 lo,
                        __m512 inv, __m512 top) {
  const std::int64_t valid = std::clamp<std::int64_t>(w.cols - first, 0, 16);
  const auto m = static_cast<__mmask16>((1U << valid) - 1);
  const __m512 v = _mm512_maskz_loadu_ps(m, x + std::min(first, w.cols));
  const __m512 scaled = _mm512_roundscale_ps(
      _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, lo), inv), _mm512_set1_ps(0.5f)),
      _MM_FROUND_TO_NEG_INF);
  const __m512i q =
      _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(scaled, _mm512_setzero_ps()), top));
  return _mm512_maskz_mov_epi32(m, q);
}

// The 32-bit sums A_p of every lookup plane p of T tiles over one group (sum[tile][p]: 16 rows),
// from the group's word slots (words[tile], P * 16 per slot) and tables (3 * 32 entries per
// slot): each table load serves T * ceil(P / 2) look-ups. Planes 2i and 2i + 1 are one register
// (lanes 0-15 and 16-31); an odd last plane is a register of its own with its upper half zero
// (look-ups of index 0 add Q = 0). The three look-ups of a word are added together before they
// join the register's running sum, so that chain grows by one add per slot.
template <int P, int T>
[[gnu::always_inline]] inline void group_plane_sums(const std::uint16_t* tables,
                                                    const std::uint16_t* const (&words)[T],
                                                    std::int64_t slots, __m512i (&sum)[T][P]) {
  constexpr int pairs = P / 2;
  constexpr int regs = pairs + P % 2;
  for (auto& tile : sum)
    for (auto& v : tile) v = _mm512_setzero_si512();
  for (std::int64_t s0 = 0; s0 < slots; s0 += slots_per_flush) {
    const std::int64_t s1 = std::min(slots, s0 + slots_per_flush);
    __m512i acc[T][regs];
    for (auto& tile : acc)
      for (auto& v : tile) v = _mm512_setzero_si512();
    for (std::int64_t s = s0; s < s1; ++s) {
      const std::uint16_t* table = tables + s * quints_per_word * word_entries;
      const __m512i t0 = keep(_mm512_loadu_si512(table));
      const __m512i t1 = keep(_mm512_loadu_si512(table + word_entries));
      const __m512i t2 = keep(_mm512_loadu_si512(table + 2 * word_entries));
      for (int tile = 0; tile < T; ++tile) {
        const std::uint16_t* slot = words[tile] + s * P * tile_rows;
        for (int i = 0; i < regs; ++i) {
          const __m512i v =
              keep(i < pairs ? _mm512_loadu_si512(slot + 2 * i * tile_rows)
                             : _mm512_zextsi256_si512(_mm256_loadu_si256(
                                   reinterpret_cast<const __m256i*>(slot + 2 * i * tile_rows))));
          const __m512i three = _mm512_add_epi16(
              _mm512_add_epi16(_mm512_permutexvar_epi16(v, t0),
                               _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 5), t1)),
              _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 10), t2));
          acc[tile][i] = _mm512_add_epi16(acc[tile][i], three);
        }
      }
    }
    for (int tile = 0; tile < T; ++tile)
      for (int i = 0; i < regs; ++i) {
        const __m512i a = acc[tile][i];
        sum[tile][2 * i] =
            _mm512_add_epi32(sum[tile][2 * i], _mm512_cvtepu16_epi32(_mm512_castsi512_si256(a)));
        if (2 * i + 1 < P)
          sum[tile][2 * i + 1] = _mm512_add_epi32(
              sum[tile][2 * i + 1], _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(a, 1)));
      }
  }
}

// z for T tiles from t (16 floats each) and one vector: the AVX-512 popcount kernel's float
// steps, in its order, for each tile.
template <int P, bool Ternary, int T>
void word_tiles(const cpu_weights& w, const word_table_input& x, std::int64_t t, float* z) {
  constexpr int K = Ternary ? P / 2 : P;
  const std::int64_t per_group = quints_per_word * w.word_slots * word_entries;
  __m512 out[T];
  for (auto& o : out) o = _mm512_setzero_ps();
  for (std::int64_t g = 0; g < w.groups; ++g) {
    __m512i sum[T][P];
    const std::uint16_t* words[T];
    for (int i = 0; i < T; ++i) words[i] = w.group_words(t + i, g);
    group_plane_sums<P, T>(x.tables + g * per_group, words, w.word_slots, sum);
    const __m512i levels = _mm512_set1_epi32(x.group_levels[g]);
    for (int i = 0; i < T; ++i) {
      const float* alpha = w.tile_coefficients(t + i, g);
      for (int j = 0; j < K; ++j) {
        const __m512i other = Ternary ? sum[i][K + j] : levels;
        const __m512i dot = _mm512_sub_epi32(_mm512_add_epi32(sum[i][j], sum[i][j]), other);
        out[i] =
            _mm512_fmadd_ps(_mm512_load_ps(alpha + j * tile_rows), _mm512_cvtepi32_ps(dot), out[i]);
      }
    }
  }
  for (int i = 0; i < T; ++i) _mm512_storeu_ps(z + i * tile_rows, out[i]);
}

// Several tiles per pass, so that each table load serves more look-ups: four while their
// accumulators (T * ceil(P / 2)) and the tables fit the 32 registers with room, else two; the
// rest of the range in smaller steps.
template <int P, bool Ternary>
struct word_call {
  template <int T>
  static std::int64_t steps(const cpu_weights& w, const word_table_input* x, int vectors,
                            std::int64_t t, std::int64_t t0, std::int64_t t1, float* const* z) {
    for (; t + T <= t1; t += T)
      for (int v = 0; v < vectors; ++v)
        word_tiles<P, Ternary, T>(w, x[v], t, z[v] + (t - t0) * tile_rows);
    return t;
  }
  static void run(const cpu_weights& w, const word_table_input* x, int vectors, std::int64_t t0,
                  std::int64_t t1, float* const* z) {
    std::int64_t t = t0;
    if constexpr (P <= 4) t = steps<4>(w, x, vectors, t, t0, t1, z);
    t = steps<2>(w, x, vectors, t, t0, t1, z);
    steps<1>(w, x, vectors, t, t0, t1, z);
  }
};

}  // namespace

void encode_words_avx512(const cpu_weights& w, const float* x, float minimum, float inv_step,
                         int bits, std::uint16_t* tables, std::int32_t* group_levels) {
  const __m512 lo = _mm512_set1_ps(minimum), inv = _mm512_set1_ps(inv_step);
  const __m512 top = _mm512_set1_ps(static_cast<float>((1 << bits) - 1));
  const std::int64_t padded = (w.cols + 15) / 16 * 16;
  scratch<std::int32_t> q(static_cast<std::size_t>(padded));
  for (std::int64_t c = 0; c < padded; c += 16)
    _mm512_storeu_si512(q.data() + c, levels16(w, x, c, lo, inv, top));
  // Entry b of a quint's table is the sum of the levels of its columns i whose bit is set in b:
  // five masked adds of broadcasts (lane b of select[i] is bit i of b).
  constexpr __mmask32 select[quint_cols] = {0xAAAAAAAAU, 0xCCCCCCCCU, 0xF0F0F0F0U, 0xFF00FF00U,
                                            0xFFFF0000U};
  const std::int64_t quints = quints_per_word * w.word_slots;
  for (std::int64_t g = 0; g < w.groups; ++g) {
    const std::int64_t begin = group_begin(w, g), end = group_end(w, g);
    std::int32_t sum = 0;
    for (std::int64_t c = begin; c < end; ++c) sum += q[c];
    group_levels[g] = sum;
    for (std::int64_t u = 0; u < quints; ++u) {
      __m512i table = _mm512_setzero_si512();
      for (int i = 0; i < quint_cols; ++i) {
        const std::int64_t c = begin + u * quint_cols + i;
        if (c < end)
          table = _mm512_mask_add_epi16(table, select[i], table,
                                        _mm512_set1_epi16(static_cast<std::int16_t>(q[c])));
      }
      _mm512_storeu_si512(tables + (g * quints + u) * word_entries, table);
    }
  }
}

void word_rows_avx512(const cpu_weights& w, const word_table_input* x, int vectors, std::int64_t t0,
                      std::int64_t t1, float* const* z) {
  by_planes<word_call>(w, x, vectors, t0, t1, z);
}

}  // namespace qsl::detail::cpu

#include "cpu/target_pragma_end.hpp"
