#pragma once
// The contract between the CPU driver (forward.cpp) and the per-target kernels. Every target
// implements the same five functions over the same packed layout (qsl::cpu_weights); the
// portable scalar target is the schedule every SIMD target is tested against.
//
// Float activations (look-up tables). For every 4 columns (a "nibble" s) the table
//   T[s][b] = sum of x[4s + i] over the bits i set in b,  b = 0..15
// is built once per vector and shared by every row and plane; a lookup plane's inner product
// with x over a group is the sum of T[s][nibble s of the plane] over the group's nibbles. With
// A_j = that sum for sign plane j and B = the group's sum of x (binary) or the lookup of mask j
// (ternary): m_j . x = 2 A_j - B, and
//   y[n] = sum_g sum_j alpha[n,g,j] * (2 A_j - B).
//
// Encoded activations (AND + popcount). With q = sum_i 2^i t_i the level of every column:
//   m_j . q = sum_i 2^i (2 popcount(s_j AND t_i) - popcount(B_j AND t_i)),
// B_j = all columns (binary: sum_i 2^i popcount(t_i) = sum of q over the group) or mask j, and
//   z[n] = sum_g sum_j alpha[n,g,j] * (m_j . q over g);   y[n] = step * z[n] + x_min * offset[n].
// The integer parts are exact; only the float sums of alpha * integer differ in order.
//
// Encoded activations, byte tables (cpu_weights::nibble_bytes, for many activation bits). The
// table of nibble s holds the exact sums of the levels
//   Q[s][b] = sum of q[4s + i] over the bits i set in b   (0 .. 4 * 255),
// as its low seven bits and the rest (two bytes: sums of two low parts still fit a byte); A_p = sum
// over the group's nibbles of Q[s][nibble s of plane p] is the m_j . q of the popcount form (2 A_j
// - B_j), computed with the same integers and the same float steps, so on one target both forms
// give the same floats.
//
// Encoded activations, word tables (cpu_weights::quint_words, AVX-512). Per group, columns are
// cut into quints of 5, and the table of quint u holds the exact sums
//   Q[u][b] = sum of q[c_u + i] over the bits i set in b,  b = 0..31   (0 .. 5 * 255)
// as 16-bit words: one vpermw looks up a quint of 32 lanes (two planes of a 16-row tile), and the
// sums of up to 51 look-ups add in 16 bits without wrapping. A_p is again the popcount form's
// integer, with its float steps.
//
// Encoded activations, byte dots (batches). The levels q are kept as bytes, and for a tile and a
// block of columns the lookup planes are unpacked once into bytes (0 or -1); then for every
// vector of the batch a u8 x s8 multiply-add (vpmaddubsw) of q with those bytes gives -A_p for
// 16 rows and 2 columns per lane pair. The unpacking is paid once per tile and block for the
// whole batch, so from a few vectors on this beats both forms above; A_p and the float steps are
// again the popcount form's, so the floats are the same.

#include <cstdint>
#include <limits>

#include "qsl/activation_code.hpp"
#include "qsl/cpu.hpp"

namespace qsl::detail::cpu {

inline constexpr int tile_rows = cpu_weights::tile_rows;
inline constexpr int chunk_cols = cpu_weights::chunk_cols;
inline constexpr int table_entries = 16;

/// Nibbles (4-column table chunks) of a row: ceil(cols / 32) * 8, so whole chunks are covered.
inline std::int64_t nibbles(const cpu_weights& w) { return w.chunks * (chunk_cols / 4); }

/// Float activations of one vector, prepared by build_tables.
struct table_input {
  const float* tables;      ///< [nibble][16]
  const float* group_sums;  ///< [group]: sum of x over the group
};

/// Encoded activations of one vector, prepared by encode.
struct encoded_input {
  const std::uint32_t* planes;       ///< [bit i][chunk]: bit i of q, padding bits 0
  const std::int32_t* group_levels;  ///< [group]: sum of q over the group
  int bits;                          ///< kx
};

/// Encoded activations of one vector as byte tables, prepared by encode_bytes.
struct byte_table_input {
  const std::uint8_t* low;           ///< [nibble][16]: Q[s][b] & 127
  const std::uint8_t* high;          ///< [nibble][16]: Q[s][b] >> 7 (0..7)
  const std::int32_t* group_levels;  ///< [group]: sum of q over the group
};

/// Encoded activations of one vector as word tables, prepared by encode_words.
struct word_table_input {
  const std::uint16_t* tables;       ///< [group][3 * w.word_slots][32]: Q[u][b]
  const std::int32_t* group_levels;  ///< [group]: sum of q over the group
};

/// Words of one vector's word tables: 32 entries per quint slot of every group.
inline std::int64_t word_table_entries(const cpu_weights& w) {
  return w.groups * 3 * w.word_slots * 32;
}

/// Encoded activations of one vector as bytes, prepared by encode_levels.
struct level_input {
  const std::uint8_t* levels;        ///< [column]: q, w.chunks * 32 bytes (0 past w.cols)
  const std::int32_t* group_levels;  ///< [group]: sum of q over the group
};

/// Nibbles of the byte tables: the quads' (w.quads * 4), so every quad has its tables.
inline std::int64_t byte_table_nibbles(const cpu_weights& w) { return w.quads * 4; }

struct kernel_table {
  /// tables: nibbles(w) * 16 floats; group_sums: w.groups floats. Columns past w.cols are 0.
  void (*build_tables)(const cpu_weights& w, const float* x, float* tables, float* group_sums);
  /// For each of `vectors` inputs x[v]: y[v][r] for the rows of tiles [tile_begin, tile_end),
  /// r relative to the first row of tile_begin: (tile_end - tile_begin) * 16 floats, of which
  /// the padding rows past w.rows hold anything. A vector's result must not depend on the
  /// other vectors of the call (batch invariance).
  void (*lut_rows)(const cpu_weights& w, const table_input* x, int vectors, std::int64_t tile_begin,
                   std::int64_t tile_end, float* const* y);
  /// Encodes x (w.cols floats) with q = clamp(floor((x - minimum) * inv_step + 0.5f), 0,
  /// 2^bits - 1), or q = 0 everywhere when inv_step is 0. planes: bits * w.chunks words.
  void (*encode)(const cpu_weights& w, const float* x, float minimum, float inv_step, int bits,
                 std::uint32_t* planes, std::int32_t* group_levels);
  /// z[r] for one vector, laid out as one vector's y of lut_rows, from encoded activations.
  void (*popcount_rows)(const cpu_weights& w, const encoded_input& x, std::int64_t tile_begin,
                        std::int64_t tile_end, float* z);
  /// Rows [first, last) of W_hat into out ((last - first) x w.cols), planes summed in order
  /// j = 0..k-1: the same floats on every target (decode_rows.inc, vectorized per target).
  void (*decode_rows)(const cpu_weights& w, std::int64_t first, std::int64_t last, float* out);
  /// Rows [first, last) of W_hat on their int8 grids (scales: cpu_int8_row_scales), as q, or as
  /// q + 128 when `excess`, into out ((last - first) x w.cols): exactly what decode_rows and the
  /// grid's rounding give (int8_products.cpp). Null: decode_rows_int8_generic does it.
  void (*decode_rows_int8)(const cpu_weights& w, const float* scales, std::int64_t first,
                           std::int64_t last, bool excess, std::uint8_t* out) = nullptr;
  /// Encodes x by encode's rule into byte tables (low, high: byte_table_nibbles(w) * 16 bytes
  /// each; columns past w.cols have q = 0) and the group levels.
  void (*encode_bytes)(const cpu_weights& w, const float* x, float minimum, float inv_step,
                       int bits, std::uint8_t* low, std::uint8_t* high,
                       std::int32_t* group_levels) = nullptr;
  /// For each of `vectors` inputs x[v]: z[v][r] as popcount_rows gives it, from byte tables;
  /// needs w.nibble_bytes. Tiles outer, vectors inner: a tile's bytes are read from memory once
  /// per call. Null: the target has no byte-table kernel and the driver keeps AND + popcount.
  void (*byte_rows)(const cpu_weights& w, const byte_table_input* x, int vectors,
                    std::int64_t tile_begin, std::int64_t tile_end, float* const* z) = nullptr;
  /// The fewest activation bits for which the target's table kernel (word_rows where there is
  /// one, else byte_rows) beats popcount_rows on this target.
  int byte_tables_min_bits = max_activation_bits + 1;
  /// Encodes x by encode's rule into w.chunks * 32 level bytes and the group levels.
  void (*encode_levels)(const cpu_weights& w, const float* x, float minimum, float inv_step,
                        int bits, std::uint8_t* levels, std::int32_t* group_levels) = nullptr;
  /// For each of `vectors` inputs x[v]: z[v][r] as popcount_rows gives it, from the level
  /// bytes and w.words (byte dots). Null: the target has none.
  void (*dot_rows)(const cpu_weights& w, const level_input* x, int vectors, std::int64_t tile_begin,
                   std::int64_t tile_end, float* const* z) = nullptr;
  /// The fewest vectors per call for which dot_rows is worth timing against byte_rows (the
  /// unpacking is shared by the batch; dot_min_batch() measures the crossover).
  std::int64_t dot_min_batch = std::numeric_limits<std::int64_t>::max();
  /// sums[v * count + i] = the exact int32 dot product of x[v] and w[i] (rows of `cols` int8
  /// values each, cols <= cpu_int8_max_cols): the 8-bit activation path's integer step.
  /// Null: the portable loop of int8_products.cpp.
  void (*int8_sums)(const std::int8_t* x, std::int64_t batch, const std::int8_t* w,
                    std::int64_t count, std::int64_t cols, std::int32_t* sums) = nullptr;
  /// Encodes x by encode's rule into word tables (word_table_entries(w) words; columns past a
  /// group's end have q = 0) and the group levels.
  void (*encode_words)(const cpu_weights& w, const float* x, float minimum, float inv_step,
                       int bits, std::uint16_t* tables, std::int32_t* group_levels) = nullptr;
  /// For each of `vectors` inputs x[v]: z[v][r] as popcount_rows gives it, from word tables;
  /// needs w.quint_words. Tiles outer, vectors inner. Null: the target has no word-table kernel
  /// (its table kernel, if any, is byte_rows), and byte_tables_min_bits is byte_rows'.
  void (*word_rows)(const cpu_weights& w, const word_table_input* x, int vectors,
                    std::int64_t tile_begin, std::int64_t tile_end, float* const* z) = nullptr;
  /// For codes that int8_tiles_fit: sums[v * 16 + r] = the exact int32 dot product of vector v
  /// (x: the batch's int8 grids in int8_tile_vectors' layout; x_sums: each vector's sum) with
  /// row r of tile `tile` on its int8 grid (scales: cpu_int8_row_scales), the same integers as
  /// decode_rows_int8 + int8_sums, straight from the packed code. Returns false (nothing
  /// written) for other codes. Null: the target has no such kernel.
  bool (*int8_tile_sums)(const cpu_weights& w, const float* scales, std::int64_t tile,
                         const std::int32_t* x, const std::int32_t* x_sums, std::int64_t batch,
                         std::int32_t* sums) = nullptr;
};

/// The codes kernel_table::int8_tile_sums takes: at most 4 lookup planes (16 patterns per row:
/// 16 rows' tables fit one to four registers), so binary of 1-4 bits or ternary of 1-2, with
/// groups of whole 32-column chunks or one per row.
inline bool int8_tiles_fit(const cpu_weights& w) {
  return w.planes <= 4 && (w.groups == 1 || w.group_size % cpu_weights::chunk_cols == 0);
}

/// The vectors of kernel_table::int8_tile_sums: `batch` rows of `cols` int8 (q, row-major) as
/// blocks of 16 vectors, then one block each of 8, 4, 2 and 1 for the rest. The block of width
/// V from vector v0 holds, for every 4-column step s < steps (w.chunks * 8; columns past `cols`
/// are 0), vector v0 + v's 4 bytes at out[v0 * steps + s * V + v].
void int8_tile_vectors(const std::int8_t* q, std::int64_t batch, std::int64_t cols,
                       std::int64_t steps, std::int32_t* out);

/// kernel_table::int8_sums by its definition, one int32 dot product at a time: for targets
/// without a kernel (and the benchmark's baseline).
void int8_sums_portable(const std::int8_t* x, std::int64_t batch, const std::int8_t* w,
                        std::int64_t count, std::int64_t cols, std::int32_t* sums);
/// qsl::cpu_forward_int8 with the integer step `sums` (null: the portable loop) on rows decoded
/// a task at a time, or, where `tile_sums` is given and takes the code (int8_tiles_fit), with
/// it straight from the code; the same floats either way.
void forward_int8(const cpu_weights& w, const float* scales, const float* x, std::int64_t batch,
                  const float* bias, float* y, decltype(kernel_table::int8_sums) sums,
                  decltype(kernel_table::int8_tile_sums) tile_sums = nullptr);

/// decode_rows, then the grid of each row: for targets without a fused kernel.
void decode_rows_int8_generic(const cpu_weights& w, const float* scales, std::int64_t first,
                              std::int64_t last, bool excess, std::uint8_t* out);

const kernel_table& scalar_kernels();
#if defined(__x86_64__) || defined(_M_X64)
const kernel_table& avx2_kernels();
/// kernel_table::int8_sums with int16 products (int8_sums_avx2.cpp; AVX-512 targets too).
void int8_sums_avx2(const std::int8_t* x, std::int64_t batch, const std::int8_t* w,
                    std::int64_t count, std::int64_t cols, std::int32_t* sums);
/// kernel_table::int8_sums with VNNI's u8 x s8 dot products (int8_sums_avx512_vnni.cpp): the
/// AVX-512 targets' kernel on CPUs that have AVX512_VNNI.
void int8_sums_avx512_vnni(const std::int8_t* x, std::int64_t batch, const std::int8_t* w,
                           std::int64_t count, std::int64_t cols, std::int32_t* sums);
/// kernel_table::int8_tile_sums with VNNI, BITALG and VBMI (int8_tiles_avx512_vnni.cpp): the
/// AVX-512 targets' kernel on CPUs that have all three (Ice Lake, Zen 4 and later).
bool int8_tile_sums_avx512_vnni(const cpu_weights& w, const float* scales, std::int64_t tile,
                                const std::int32_t* x, const std::int32_t* x_sums,
                                std::int64_t batch, std::int32_t* sums);
/// kernel_table::encode_words and word_rows for both AVX-512 targets (word_tables_avx512.cpp).
void encode_words_avx512(const cpu_weights& w, const float* x, float minimum, float inv_step,
                         int bits, std::uint16_t* tables, std::int32_t* group_levels);
void word_rows_avx512(const cpu_weights& w, const word_table_input* x, int vectors,
                      std::int64_t tile_begin, std::int64_t tile_end, float* const* z);
const kernel_table& avx512_kernels();
const kernel_table& avx512_vpopcnt_kernels();
#endif
#if defined(__aarch64__)
const kernel_table& neon_kernels();
#endif

/// The kernels of the active target.
const kernel_table& active_kernels();

/// The two drivers behind qsl::cpu_forward_float, which picks by batch size (see
/// cpu_decode_min_batch); exposed so that tests and benchmarks can run both at any batch.
/// Look-up tables: every output row is one kernel call, whatever the batch or thread count.
void forward_float_tables(const cpu_weights& w, const float* x, std::int64_t batch,
                          const float* bias, float* y);
/// Blocks of decoded W_hat rows times blocks of vectors, each an fp32 GEMM of fixed size: the
/// result depends on the batch (as any GEMM's) but not on the thread count.
void forward_float_decoded(const cpu_weights& w, const float* x, std::int64_t batch,
                           const float* bias, float* y);
/// The encoded-activation kernels, for tests and benchmarks that run each at any batch.
/// All give the same floats on one target (the same integers and float steps).
enum class encoded_kernel : std::uint8_t {
  popcount,     ///< AND + popcount on the bit planes (every target)
  byte_tables,  ///< byte tables (needs kernel_table::byte_rows and add_byte_tables)
  byte_dots,    ///< planes unpacked to bytes, u8 x s8 dots (needs kernel_table::dot_rows)
  word_tables,  ///< word tables (needs kernel_table::word_rows and add_word_tables)
  fastest,      ///< what qsl::cpu_forward_encoded takes: fastest_encoded_kernel
};
const char* to_string(encoded_kernel kernel);
/// The kernel cpu_forward_encoded runs for this layer, batch and activation bits: AND + popcount
/// unless the layer has the layout of the target's table kernel (word tables where the target
/// has them, else byte tables) and bits >= byte_tables_min_bits; then byte dots from
/// dot_min_batch() vectors on, that table kernel below (encoded_choice.cpp).
encoded_kernel fastest_encoded_kernel(const cpu_weights& w, std::int64_t batch, int bits);
/// The batch from which byte dots beat byte tables on the active target, timed once per process
/// and target (the largest int64 where either kernel is missing or dots never win).
std::int64_t dot_min_batch();
/// cpu_forward_encoded with the given kernel; throws qsl::error when it is not available.
void forward_encoded(const cpu_weights& w, const float* x, std::int64_t batch,
                     const activation_quantizer& q, const float* bias, float* y,
                     encoded_kernel kernel);

/// Rows [first, last) of W_hat (as float, summed over planes in order j = 0..k-1) into out,
/// (last - first) x w.cols, row-major.
void decode_rows(const cpu_weights& w, std::int64_t first, std::int64_t last, float* out);

}  // namespace qsl::detail::cpu
