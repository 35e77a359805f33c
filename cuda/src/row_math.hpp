#pragma once
// The per-lane (per-row) math of the CUDA kernels, as QSL_HOST_DEVICE functions: the kernels
// call them on the device, and tests/cuda_row_math_test.cpp runs the same code on the host,
// lane by lane, against the scalar reference, so the arithmetic, the layout and the group
// handling are tested on machines without a GPU. What only a GPU can test is the glue around
// them (shared memory, synchronization, launch shapes, tensor cores).

#include <cmath>
#include <cstdint>

#include "layer_view.hpp"
#include "qsl/bit_planes.hpp"

// Full unrolling where the loop indexes a register array (dynamic indexes would put the array in
// local memory); the host compiler needs no hint.
#if defined(__CUDA_ARCH__)
#define QSL_UNROLL _Pragma("unroll")
#else
#define QSL_UNROLL
#endif

namespace qsl::cuda::detail {

/// The encoding rule of qsl/activation_code.hpp, bit for bit: the multiply and the add are
/// rounded separately (no FMA contraction on the device), and NaN encodes as 0.
QSL_HOST_DEVICE inline std::uint32_t encode_level(float x, float minimum, float inv_step,
                                                  float top) {
#if defined(__CUDA_ARCH__)
  const float scaled = floorf(__fadd_rn(__fmul_rn(__fsub_rn(x, minimum), inv_step), 0.5f));
#else
  const float scaled = std::floor((x - minimum) * inv_step + 0.5f);
#endif
  return static_cast<std::uint32_t>(!(scaled > 0) ? 0.0f : scaled >= top ? top : scaled);
}

/// Bits of chunk `c` that belong to group g.
QSL_HOST_DEVICE inline std::uint32_t group_chunk_mask(const layer_view& w, std::int64_t g,
                                                      std::int64_t c) {
  const std::int64_t lo = c * chunk_cols;
  const std::int64_t b = w.group_begin(g) > lo ? w.group_begin(g) - lo : 0;
  const std::int64_t e = w.group_end(g) < lo + chunk_cols ? w.group_end(g) - lo : chunk_cols;
  if (e <= b) return 0;
  const std::uint32_t upper = e == chunk_cols ? ~0U : ((1U << e) - 1);
  return upper & ~((1U << b) - 1);
}

/// *p, loaded where the call is: on the device an asm volatile load, which the compiler may
/// neither sink into the branch that uses its value nor drop. With plain loads (and a select
/// for the chunks past the end) the compiler moved each chunk's loads down to the chunk's
/// processing (seen in the sm_90 SASS): one chunk in flight per lane, not 16.
QSL_HOST_DEVICE inline std::uint32_t load_here(const std::uint32_t* p) {
#if defined(__CUDA_ARCH__)
  std::uint32_t value;
  asm volatile("ld.global.nc.u32 %0, [%1];" : "=r"(value) : "l"(p));
  return value;
#else
  return *p;
#endif
}

/// Words of one lane prefetched per step of the walks below: the loads of several chunks are
/// issued before any is used, so each lane has up to 16 loads in flight (memory-level
/// parallelism is what a GEMV needs; one load at a time leaves it latency-bound).
template <int P>
inline constexpr int prefetch_chunks = P >= 16 ? 1 : 16 / P;

/// Calls fn(c, words) for the chunks c in [c_begin, c_end) of one lane, words[p] the lane's
/// word of plane p, loading prefetch_chunks<P> chunks' words before using any (past c_end the
/// last chunk again, so that every load is unconditional).
template <int P, class Fn>
QSL_HOST_DEVICE void for_each_chunk(const layer_view& w, std::int64_t tile, int lane,
                                    std::int64_t c_begin, std::int64_t c_end, Fn&& fn) {
  constexpr int D = prefetch_chunks<P>;
  const int count = static_cast<int>(c_end - c_begin);  // 32-bit loop arithmetic (max_cols)
  for (int d0 = 0; d0 < count; d0 += D) {
    std::uint32_t words[D][P];
    QSL_UNROLL for (int d = 0; d < D; ++d)
      QSL_UNROLL for (int p = 0; p < P; ++p)
        words[d][p] = load_here(w.word_at(tile, c_begin + (d0 + d < count ? d0 + d : count - 1), p, lane));
    QSL_UNROLL for (int d = 0; d < D; ++d) {
      if (d0 + d >= count) break;
      fn(static_cast<int>(c_begin) + d0 + d, words[d]);
    }
  }
}

/// What one lane (row) carries along its walk over a range of columns: the open group's
/// sums and coefficients, the finished groups' total, and which group is open (none at first:
/// a walk may start anywhere, and moves to the group of its first column). Any column range may be walked
/// (a split of the columns, in column tiles): a group cut by the range's end is finished with
/// the sums of its part, which is exact because alpha (2 A - B) is linear in A and B.
template <int P, class Sum>
struct row_walk {
  Sum acc[P] = {};
  Sum group_sum = 0;   ///< binary encoded: B of the open group's part (its levels)
  float alpha[P] = {};  ///< the group's coefficients (the first K), loaded when it starts
  float out = 0;       ///< sum over finished groups
  std::int64_t group = -1;  ///< -1: none yet (group_end(-1) = 0, so any column starts one)
  bool open = false;   ///< the open group has columns in the sums
};

/// The group of column col for a walk that left group `previous` (-1: none) at or before col:
/// walks move forward, so it is usually the next one, found without a division.
QSL_HOST_DEVICE inline std::int64_t next_group(const layer_view& w, int col, std::int64_t previous) {
  return col < w.group_end(previous + 1) ? previous + 1 : col / static_cast<int>(w.group_size);
}

/// Makes g the walk's group and loads its coefficients now: they are used when the group ends,
/// at least a chunk of loads and look-ups later for groups of 32 columns or more, so the load
/// is hidden (loaded at the end, each group waited a full memory latency).
template <int P, bool Ternary, class Sum>
QSL_HOST_DEVICE void start_group(const layer_view& w, std::int64_t tile, int lane, std::int64_t g,
                                 row_walk<P, Sum>& r) {
  constexpr int K = Ternary ? P / 2 : P;
  r.group = g;
  QSL_UNROLL for (int j = 0; j < K; ++j) r.alpha[j] = w.alpha(tile, g, j, lane);
}

/// Adds the open group's alpha_j S_j to out and clears its sums: S_j = acc[j] where the walk
/// summed signed values (binary float activations), else 2 A_j - B_j with B the group sum
/// (binary) or the mask sums acc[K + j] (ternary).
template <int P, bool Ternary, bool Signed, class Sum>
QSL_HOST_DEVICE void finish_group(row_walk<P, Sum>& r) {
  constexpr int K = Ternary ? P / 2 : P;
  if (r.open)
    QSL_UNROLL for (int j = 0; j < K; ++j) {
      const Sum other = Ternary ? r.acc[K + j] : r.group_sum;
      const Sum sum = Signed ? r.acc[j] : 2 * r.acc[j] - other;
      r.out += r.alpha[j] * static_cast<float>(sum);
    }
  QSL_UNROLL for (int p = 0; p < P; ++p) r.acc[p] = 0;
  r.group_sum = 0;
  r.open = false;
}

/// The end of a float walk (binary tables hold signed sums, see walk_float).
template <int P, bool Ternary>
QSL_HOST_DEVICE void finish_float(row_walk<P, float>& r) {
  finish_group<P, Ternary, !Ternary>(r);
}

/// The end of an encoded walk.
template <int P, bool Ternary>
QSL_HOST_DEVICE void finish_encoded(row_walk<P, std::int64_t>& r) {
  finish_group<P, Ternary, false>(r);
}

/// The table entry of 4 inputs x[0..4) (zero past the last column) for the bits of v, added
/// in the order x0, x1, x2, x3 (the look-up and the decode kernels add the same numbers in the
/// same order, so they give the same bits). Binary: the signed sum sum_i (v_i ? x_i : -x_i),
/// which is 2 A - B for these four, so the walk needs no sum of x per group (one look-up per
/// nibble and plane, not k + 1). Ternary: the sum of x_i over the bits of v (sign and mask
/// planes are looked up alike).
template <bool Ternary>
QSL_HOST_DEVICE inline float table_entry(const float* x, std::uint32_t v) {
  float sum = 0;
  for (int i = 0; i < 4; ++i) {
    if (Ternary) {
      if ((v >> i) & 1U) sum += x[i];
    } else {
      sum += ((v >> i) & 1U) ? x[i] : -x[i];
    }
  }
  return sum;
}

/// Byte k (0..3) of x.
QSL_HOST_DEVICE inline std::uint32_t byte_of(std::uint32_t x, int k) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, 0U, 0x4440U | static_cast<unsigned>(k));  // one PRMT
#else
  return (x >> (8 * k)) & 0xFFU;
#endif
}

/// The 16-entry tables of a column tile in memory (shared memory on the device): the table of
/// nibble s at tables + 16 (s - s0). chunk(s) gives the tables of nibbles s, s + 1, ... and
/// looks up nibble q of a word in them. The look-up adds the byte offset 4 v to the table's
/// address with v taken from the word by one byte permute: v's of the even nibbles are spread
/// over the bytes of (word << 2) & 0x3C3C3C3C, those of the odd ones of (word >> 2) & ..., two
/// shifts and masks per word for 8 look-ups. In the sm_90 SASS (tools/sass.sh) a look-up is a
/// PRMT, an LDS [R + UR + imm] and an FADD; extracting (word >> 4 q) & 15, scaling it and
/// adding the tile offset took about 6 instructions.
struct lut_tables {
  const float* tables;
  std::int64_t s0;

  struct row {
    const float* tables;
    QSL_HOST_DEVICE float operator()(std::uint32_t word, int q) const {
      const std::uint32_t spread = q % 2 == 0 ? (word << 2) & 0x3C3C3C3CU : (word >> 2) & 0x3C3C3C3CU;
      const char* table = reinterpret_cast<const char*>(tables + 16 * q);
      return *reinterpret_cast<const float*>(table + byte_of(spread, q / 2));
    }
  };
  QSL_HOST_DEVICE row chunk(std::int64_t s) const {
    return {tables + 16 * static_cast<int>(s - s0)};  // a tile's offsets fit an int
  }
};

/// The same entries computed from the inputs (warp-level decode): x holds the inputs of nibble
/// s0 on, and entry (s, v) is table_entry<Ternary>(x + 4 (s - s0), v), the same additions in
/// the same order as the tables hold.
template <bool Ternary>
struct decoded_tables {
  const float* x;
  std::int64_t s0;

  struct row {
    const float* x;
    QSL_HOST_DEVICE float operator()(std::uint32_t word, int q) const {
      return table_entry<Ternary>(x + 4 * q, (word >> (4 * q)) & 15U);
    }
  };
  QSL_HOST_DEVICE row chunk(std::int64_t s) const { return {x + 4 * static_cast<int>(s - s0)}; }
};

/// Float activations over chunks [c_begin, c_end) of one lane: acc[p] += table(s, nibble s of
/// plane p) for every nibble s of the chunks inside the layer, where table(s, v) is
/// table_entry<Ternary>(x + 4 s, v) (Table: lut_tables or decoded_tables). Groups are
/// multiples of 8 columns, so a group boundary never cuts a nibble.
template <int P, bool Ternary, class Table>
QSL_HOST_DEVICE void walk_float(const layer_view& w, std::int64_t tile, int lane,
                                std::int64_t c_begin, std::int64_t c_end, const Table& table,
                                row_walk<P, float>& r) {
  // Nibble and column positions in 32 bits (layers have at most max_cols columns): 64-bit
  // compares and selects were a fifth of the instructions per chunk in the sm_90 SASS.
  const int nibbles = static_cast<int>((w.cols + 3) / 4);
  int group_end = static_cast<int>(w.group_end(r.group));
  for_each_chunk<P>(w, tile, lane, c_begin, c_end, [&](int c, const std::uint32_t(&words)[P]) {
    const int s_begin = c * 8;
    const int s_end = s_begin + 8 < nibbles ? s_begin + 8 : nibbles;
    if (4 * s_begin >= group_end) {  // a new group starts with this chunk
      finish_float<P, Ternary>(r);
      start_group<P, Ternary>(w, tile, lane, next_group(w, 4 * s_begin, r.group), r);
      group_end = static_cast<int>(w.group_end(r.group));
    }
    const auto row = table.chunk(s_begin);
    if (s_end == s_begin + 8 && 4 * s_end <= group_end) {
      // The common case: a whole chunk inside one group. No group checks, constant nibble
      // indexes; the same additions in the same order as the general loop below.
      QSL_UNROLL for (int q = 0; q < 8; ++q)
        QSL_UNROLL for (int p = 0; p < P; ++p) r.acc[p] += row(words[p], q);
      r.open = true;
      return;
    }
    for (int s = s_begin; s < s_end; ++s) {
      if (4 * s >= group_end) {  // a new group starts at this nibble
        finish_float<P, Ternary>(r);
        start_group<P, Ternary>(w, tile, lane, next_group(w, 4 * s, r.group), r);
        group_end = static_cast<int>(w.group_end(r.group));
      }
      const int q = s - s_begin;
      QSL_UNROLL for (int p = 0; p < P; ++p) r.acc[p] += row(words[p], q);
      r.open = true;
    }
  });
}

/// Encoded activations over chunks [c_begin, c_end) of one lane: acc[p] += sum_i 2^i
/// popcount(m_p AND t_i) with act[i * chunks + c] the activation bit planes (zero past the last
/// column); binary B adds sum_i 2^i popcount(t_i) over the same columns (the group's levels).
template <int P, bool Ternary>
QSL_HOST_DEVICE void walk_encoded(const layer_view& w, std::int64_t tile, int lane,
                                  std::int64_t c_begin, std::int64_t c_end,
                                  const std::uint32_t* act, int kx,
                                  row_walk<P, std::int64_t>& r) {
  constexpr int max_kx = 8;
  const int cols = static_cast<int>(w.cols);  // 32-bit positions, as in walk_float
  int group_begin = static_cast<int>(w.group_begin(r.group));
  int group_end = static_cast<int>(w.group_end(r.group));
  // The activation words of chunk c (zero past kx). Each chunk's are loaded while the chunk
  // before is worked on: loaded at their chunk, every chunk waited for them.
  std::uint32_t t_next[max_kx];
  const auto load_activations = [&](std::int64_t c) {
    QSL_UNROLL for (int i = 0; i < max_kx; ++i) t_next[i] = i < kx ? load_here(act + i * w.chunks + c) : 0U;
  };
  if (c_begin < c_end) load_activations(c_begin);
  for_each_chunk<P>(w, tile, lane, c_begin, c_end, [&](int c, const std::uint32_t(&words)[P]) {
    const int lo = c * chunk_cols;
    std::uint32_t t[max_kx];  // this chunk's activation words, once for every plane
    QSL_UNROLL for (int i = 0; i < max_kx; ++i) t[i] = t_next[i];
    if (c + 1 < c_end) load_activations(c + 1);
    const auto move_to = [&](std::int64_t g) {
      start_group<P, Ternary>(w, tile, lane, g, r);
      group_begin = static_cast<int>(w.group_begin(g));
      group_end = static_cast<int>(w.group_end(g));
    };
    for (;;) {  // the groups inside this chunk
      if (lo >= group_end) {  // the open group ended before this chunk
        finish_encoded<P, Ternary>(r);
        move_to(next_group(w, lo, r.group));
      }
      // A chunk inside one group (the common case) needs no mask.
      const bool whole = lo >= group_begin && lo + chunk_cols <= group_end;
      const std::uint32_t mask = whole ? ~0U : group_chunk_mask(w, r.group, c);
      // Horner over the activation bits, from the top. The bit is the outer loop, so that
      // the bits at or above kx (the same for every lane) are skipped by one branch each; with
      // the planes outside, the compiler predicated every AND and popcount of all 8 bits.
      int h[P] = {}, levels = 0;
      QSL_UNROLL for (int i = max_kx - 1; i >= 0; --i) {
        if (i >= kx) continue;
        QSL_UNROLL for (int p = 0; p < P; ++p) h[p] = 2 * h[p] + qsl::popcount(words[p] & mask & t[i]);
        if (!Ternary) levels = 2 * levels + qsl::popcount(mask & t[i]);
      }
      QSL_UNROLL for (int p = 0; p < P; ++p) r.acc[p] += h[p];
      if (!Ternary) r.group_sum += levels;
      r.open = true;
      if (group_end >= lo + chunk_cols || group_end >= cols) break;
      finish_encoded<P, Ternary>(r);  // the group ends inside this chunk
      move_to(r.group + 1);
    }
  });
}

/// What eight reconstructed weights W_hat[row, col8 .. col8 + 8) are made of (col8 a multiple
/// of 8): the row's words of the chunk, one per plane, and its k coefficients of the group
/// (groups are multiples of 8 columns, so the eight share one). The GEMM loads these for its
/// next step (load_byte) while the tensor cores work on this one, and decodes them
/// (decode_loaded) once they have arrived.
template <int P, bool Ternary>
struct byte_source {
  static constexpr int K = Ternary ? P / 2 : P;
  std::uint32_t words[P];  ///< k sign planes, then k mask planes (ternary)
  float alpha[K];
};

template <int P, bool Ternary>
QSL_HOST_DEVICE void load_byte(const layer_view& w, std::int64_t row, std::int64_t col8,
                               byte_source<P, Ternary>& b) {
  // Outside the layer the first row and chunk stand in (any address in the arrays would do):
  // the loads stay unconditional, and decode_loaded gives zeros there.
  const bool inside = row < w.rows && col8 < w.cols;
  const std::int64_t r = inside ? row : 0, c8 = inside ? col8 : 0;
  const std::int64_t tile = r / warp_rows, c = c8 / chunk_cols, g = c8 / w.group_size;
  const int lane = static_cast<int>(r % warp_rows);
  QSL_UNROLL for (int p = 0; p < P; ++p) b.words[p] = load_here(w.word_at(tile, c, p, lane));
  QSL_UNROLL for (int j = 0; j < byte_source<P, Ternary>::K; ++j) b.alpha[j] = w.alpha(tile, g, j, lane);
}

/// The eight weights (zero past the last row or column), summed over the planes in order, as
/// qsl::reconstruct does.
template <int P, bool Ternary>
QSL_HOST_DEVICE void decode_loaded(const layer_view& w, std::int64_t row, std::int64_t col8,
                                   const byte_source<P, Ternary>& b, float (&out)[8]) {
  constexpr int K = byte_source<P, Ternary>::K;
  const int shift = static_cast<int>(col8 % chunk_cols);
  QSL_UNROLL for (int i = 0; i < 8; ++i) out[i] = 0;
  QSL_UNROLL for (int j = 0; j < K; ++j) {
    const std::uint32_t signs = b.words[j] >> shift;
    const std::uint32_t nonzero = Ternary ? b.words[K + j] >> shift : ~0U;
    QSL_UNROLL for (int i = 0; i < 8; ++i)
      if ((nonzero >> i) & 1U) out[i] += ((signs >> i) & 1U) ? b.alpha[j] : -b.alpha[j];
  }
  QSL_UNROLL for (int i = 0; i < 8; ++i)
    if (row >= w.rows || col8 + i >= w.cols) out[i] = 0;
}

}  // namespace qsl::cuda::detail
