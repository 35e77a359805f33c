#pragma once
// The CPU backend: which SIMD target runs the kernels, how many threads, and the packed weight
// layout they read (produced from a weight_code by pack_for_cpu).
//
// Targets are chosen once at run time from cpuid (the best one the CPU supports); the
// environment variable QSL_CPU_TARGET=scalar|avx2|avx512|avx512_vpopcnt|neon forces one (it must
// be supported), and set_cpu_target() changes it from code (tests run every kernel on every
// supported target this way).

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "qsl/aligned_allocator.hpp"
#include "qsl/config.hpp"
#include "qsl/weight_code.hpp"

namespace qsl {

enum class cpu_target : std::uint8_t {
  scalar = 0,          ///< portable C++: any CPU
  avx2 = 1,            ///< x86-64 AVX2 + FMA + BMI2 + POPCNT
  avx512 = 2,          ///< AVX-512 F/BW/DQ/VL
  avx512_vpopcnt = 3,  ///< AVX-512 plus VPOPCNTDQ (Ice Lake, Zen 4 and later)
  neon = 4,            ///< AArch64 Advanced SIMD (Jetson's Carmel cores)
};

/// "scalar", "avx2", ...
QSL_API const char* to_string(cpu_target target);
/// The targets this build has kernels for and this CPU runs, worst to best.
QSL_API std::vector<cpu_target> supported_cpu_targets();
/// The target the kernels use now.
QSL_API cpu_target active_cpu_target();
/// Makes `target` the active one. Throws qsl::error if it is not supported.
QSL_API void set_cpu_target(cpu_target target);
/// Parses a target name ("avx2"); throws qsl::error naming the value and the choices.
QSL_API cpu_target parse_cpu_target(const std::string& name);

/// Worker threads the CPU kernels use (default: all hardware threads). Results do not depend
/// on it: every output row is computed by one thread in a fixed order.
QSL_API int cpu_threads();
/// Sets the thread count; 0 means all hardware threads. Throws qsl::error for n < 0 or
/// n > max_threads, and when the system cannot start the threads (the pool keeps those it has).
QSL_API void set_cpu_threads(int n);

/// The weight layout of the CPU kernels. Rows are cut into tiles of 16 (the last tile padded
/// with rows whose coefficients are 0), columns into 32-bit chunks (padded with 0 bits). For
/// every tile and chunk, the "lookup planes" of the 16 rows lie side by side: 64 bytes per
/// plane, one SIMD register on AVX-512. Lookup planes are the k sign planes (binary), or the k
/// sign planes followed by the k masks (ternary).
struct cpu_weights {
  static constexpr int tile_rows = 16;
  static constexpr int chunk_cols = 32;

  std::int64_t rows = 0, cols = 0;
  int bits = 0;                  ///< k
  qsl::basis basis = qsl::basis::binary;
  std::int64_t group_size = 0;   ///< as in the weight code (a multiple of 8, or cols)
  std::int64_t groups = 0;
  std::int64_t tiles = 0;        ///< ceil(rows / 16)
  std::int64_t chunks = 0;       ///< ceil(cols / 32)
  int planes = 0;                ///< lookup planes: k (binary) or 2k (ternary)

  /// [tile][chunk][plane][16 rows]: bit b of a word is column chunk * 32 + b.
  std::vector<std::uint32_t, aligned_allocator<std::uint32_t>> words;
  /// [tile][group][k][16 rows]: alpha, 0 for padding rows.
  std::vector<float, aligned_allocator<float>> coefficients;
  /// Per row: the weight code's offset term (sum of W_hat over the row).
  std::vector<float> offsets;

  /// The byte-table layout of the encoded-activation kernels for many activation bits (see
  /// cpu_byte_tables_min_bits()); empty unless add_byte_tables() made it. Columns are cut into
  /// quads of 16 (padded with 0 bits); for every tile, quad and lookup plane, 32 bytes: byte
  /// h * 16 + b holds, for row r of the tile (b = 2r for r < 8, 2(r - 8) + 1 otherwise), nibble
  /// 4 * quad + h of the plane in its low four bits and nibble 4 * quad + 2 + h in its high four
  /// (h = 0, 1; nibble s = columns 4s..4s+3). So one byte shuffle looks up one nibble of 16
  /// rows in each 16-byte half of a register, and each 16-bit lane holds rows i and 8 + i.
  std::int64_t quads = 0;  ///< ceil(cols / 16), once the layout is made
  std::vector<std::uint8_t, aligned_allocator<std::uint8_t>> nibble_bytes;

  /// The word-table layout of the AVX-512 encoded-activation kernel for many activation bits;
  /// empty unless add_word_tables() made it. Each group's columns are cut into "quints" of 5
  /// (the last one of a group shorter, padded with 0 bits), three quints to a 16-bit word: bits
  /// 0-4, 5-9 and 10-14 hold quints 3s, 3s + 1 and 3s + 2 of a lookup plane (bit i of a quint is
  /// its column i; bit 15 is 0). For every tile, group, word slot s and lookup plane, 16 words,
  /// one per row: so two planes of a tile are one 512-bit register, and one vpermw looks up a
  /// quint of both against a 32-entry table of 16-bit sums.
  std::int64_t word_slots = 0;  ///< words per row, group and plane: ceil(ceil(group_size / 5) / 3)
  std::vector<std::uint16_t, aligned_allocator<std::uint16_t>> quint_words;

  const std::uint32_t* chunk_bits(std::int64_t tile, std::int64_t chunk) const {
    return words.data() + (tile * chunks + chunk) * planes * tile_rows;
  }
  const float* tile_coefficients(std::int64_t tile, std::int64_t group) const {
    return coefficients.data() + (tile * groups + group) * bits * tile_rows;
  }
  const std::uint8_t* quad_bytes(std::int64_t tile, std::int64_t quad) const {
    return nibble_bytes.data() + (tile * quads + quad) * planes * 2 * tile_rows;
  }
  const std::uint16_t* group_words(std::int64_t tile, std::int64_t group) const {
    return quint_words.data() + (tile * groups + group) * word_slots * planes * tile_rows;
  }
  /// Bytes of the packed arrays.
  std::size_t bytes() const {
    return words.size() * sizeof(std::uint32_t) + coefficients.size() * sizeof(float) +
           offsets.size() * sizeof(float) + nibble_bytes.size() +
           quint_words.size() * sizeof(std::uint16_t);
  }
};

/// The explicit packing step: weight code -> CPU layout. Validates the code first.
QSL_API cpu_weights pack_for_cpu(const weight_code& code);

/// Adds the byte-table layout (cpu_weights::nibble_bytes, made from w.words: the same code) so
/// that cpu_forward_encoded runs the byte-table kernels for activations of
/// cpu_byte_tables_min_bits() bits or more. It adds one more bit per weight and lookup plane to
/// the resident size. Idempotent.
QSL_API void add_byte_tables(cpu_weights& w);

/// Adds the word-table layout (cpu_weights::quint_words, made from w.words: the same code) that
/// the AVX-512 targets' table kernel reads: about 1.1 more bits per weight and lookup plane
/// (groups of 128: 9 words of 16 bits per 128 columns). Idempotent.
QSL_API void add_word_tables(cpu_weights& w);

/// Adds the layout of the active target's table kernel for many activation bits: word tables on
/// the AVX-512 targets, byte tables on AVX2 and NEON, nothing on the scalar target, which keeps
/// AND + popcount. What the layers call when their activations have
/// cpu_byte_tables_min_bits() bits or more. A layer packed under one target and run under
/// another gives the same results, on AND + popcount if the layout it has is not the target's.
QSL_API void add_encoded_layout(cpu_weights& w);

/// From this many activation bits on, cpu_forward_encoded takes the active target's table
/// kernel when its layout is there (add_encoded_layout): per 4 columns the byte tables (AVX2,
/// NEON) look up the exact sum of the levels q (up to 4 * 255, split in two bytes) once per
/// plane, per 5 columns the word tables (AVX-512) look it up as one 16-bit entry, where AND +
/// popcount costs one popcount per activation bit. max_activation_bits + 1 where the target has
/// none (scalar). Measured by bench/cpu_kernels_bench (BM_EncodedPaths, docs/benchmarks.md) on
/// x86; NEON's 3 is an instruction-count estimate (docs/design.md).
QSL_API int cpu_byte_tables_min_bits();

/// From this many vectors per call on, cpu_forward_encoded runs the byte-dot kernels where it
/// would run the byte tables: for every 16-row tile and block of columns they unpack the packed
/// planes into bytes once, then multiply-add them with each vector's levels (u8 x s8 pairs,
/// exact), so the unpacking is shared by the batch. Whether that beats the tables depends on
/// the core (multiply-add against byte-shuffle throughput), so the crossover (4, 16, 64 or
/// never) is timed once per process and target on a synthetic layer (about 10 ms, at the first
/// call that could use it). The integers and float steps are the other kernels', so results
/// never depend on the choice. The largest int64 where the target has no such kernel (scalar,
/// NEON) or dots never win.
QSL_API std::int64_t cpu_byte_dots_min_batch();

}  // namespace qsl

#include "qsl/activation_code.hpp"

namespace qsl {

/// From this many vectors on, and for layers of at most cpu_decode_max_rows rows,
/// cpu_forward_float decodes W_hat block by block and runs an fp32 GEMM instead of the look-up
/// tables. Per vector the tables cost 4 floats per input value to build, which only many rows
/// repay: on a convolution's im2col rows (64..512 output channels, thousands of vectors) the GEMM
/// is 2-5x faster, while on wide layers (4096 rows) the tables stay ahead at every batch.
/// Decoding costs rows x cols once per call. Both crossovers were measured by
/// bench/cpu_kernels_bench (BM_FloatPath, docs/benchmarks.md).
inline constexpr std::int64_t cpu_decode_min_batch = 128;
inline constexpr std::int64_t cpu_decode_max_rows = 512;

/// y = W_hat x + bias for a batch of float activations (x: batch x cols, y: batch x rows,
/// row-major), on the active target and cpu_threads() threads. `bias` may be null. Equals the
/// reference (qsl::reference::forward_float) up to float summation order. On the
/// look-up path a vector's result does not depend on the batch it is in; at any batch
/// it does not depend on the thread count.
QSL_API void cpu_forward_float(const cpu_weights& w, const float* x, std::int64_t batch,
                               const float* bias, float* y);

/// Rows [first, last) of W_hat as floats (summed over planes in order j = 0..k-1) into `out`,
/// (last - first) x w.cols, row-major, on cpu_threads() threads. For callers that hand the
/// decoded rows to another GEMM (qsl's ONNX Runtime operator gives large batches to ORT's own
/// Gemm this way) one block at a time, so the fp32 weights never exist whole. Throws
/// qsl::error unless 0 <= first <= last <= w.rows.
QSL_API void cpu_decode_rows(const cpu_weights& w, std::int64_t first, std::int64_t last,
                             float* out);

/// 8-bit activations for many vectors per call (docs/design.md, "8-bit activation products"):
/// every row n of W_hat and every vector v of x is put on a symmetric int8 grid of its own,
///   s = max |values| / 127 (0 for an all-zero row), q = clamp(rint(value * (1 / s)), -127, 127),
/// the products are exact int32 sums, and y[v][n] = (float(sum_c qx[v][c] qw[n][c]) * sx[v]) *
/// sw[n] + bias[n], rounded in that order. The integer part is what an int8 GEMM (ONNX
/// Runtime's MatMulInteger) computes, so qsl's own loop and the runtime's agree bit for bit.
/// Rows with at most cpu_int8_max_cols columns: the int32 sums cannot overflow.
inline constexpr std::int64_t cpu_int8_max_cols = 133143;  // 127 * 127 * cols < 2^31

/// sw: the int8 scale of every row of W_hat (w.rows values), computed from the decoded rows.
QSL_API std::vector<float> cpu_int8_row_scales(const cpu_weights& w);

/// cpu_int8_row_scales, computed on first use (once, whichever thread asks first), for layers
/// whose calls take 8-bit products only from some row count on.
class cpu_int8_grids {
 public:
  const std::vector<float>& scales(const cpu_weights& w) const {
    std::call_once(once_, [&] { scales_ = cpu_int8_row_scales(w); });
    return scales_;
  }

 private:
  mutable std::once_flag once_;
  mutable std::vector<float> scales_;
};

/// Rows [first, last) of W_hat on their int8 grids (`scales`: cpu_int8_row_scales(w)), row-major
/// into `out` ((last - first) x w.cols), on cpu_threads() threads. Throws qsl::error unless
/// 0 <= first <= last <= w.rows.
QSL_API void cpu_decode_rows_int8(const cpu_weights& w, const float* scales, std::int64_t first,
                                  std::int64_t last, std::int8_t* out);

/// The same as q + 128 in a byte: the unsigned operand of u8 x s8 GEMMs (MLAS's VNNI/AMX
/// kernels), whose zero point 128 takes the 128 back out exactly.
QSL_API void cpu_decode_rows_excess128(const cpu_weights& w, const float* scales,
                                       std::int64_t first, std::int64_t last, std::uint8_t* out);

/// Every vector of x (batch x cols) on its int8 grid: q (batch x cols) and its scale sx (batch
/// values). Throws qsl::error naming the row and column of a NaN or infinite value.
QSL_API void quantize_vectors_int8(const float* x, std::int64_t batch, std::int64_t cols,
                                   std::int8_t* q, float* scales);

/// The same with q transposed: q_t is cols x batch (column v is vector v), the operand layout of
/// a GEMM whose other side is the layer's rows.
QSL_API void quantize_vectors_int8_transposed(const float* x, std::int64_t batch,
                                              std::int64_t cols, std::int8_t* q_t, float* scales);

/// The same into columns of a wider matrix: vector v's value c at q_t[c * q_stride + v]
/// (q_stride >= batch), so that tasks can fill the column blocks of one operand.
QSL_API void quantize_vectors_int8_transposed(const float* x, std::int64_t batch, std::int64_t cols,
                                              std::int8_t* q_t, std::int64_t q_stride,
                                              float* scales);

/// The float step: y[v * y_stride + n0 + i] = (float(sums[v * v_stride + i * n_stride]) *
/// x_scales[v]) * w_scales[n0 + i] + bias[n0 + i] (no bias term when bias is null) for v < batch,
/// i < count.
QSL_API void finish_int8_products(const std::int32_t* sums, std::int64_t v_stride,
                                  std::int64_t n_stride, const float* x_scales, std::int64_t batch,
                                  const float* w_scales, std::int64_t n0, std::int64_t count,
                                  const float* bias, float* y, std::int64_t y_stride);

/// The whole product on qsl's own integer loop: y (batch x w.rows) for x (batch x w.cols).
/// Throws qsl::error when w.cols > cpu_int8_max_cols or x holds NaN/Inf. Where
/// cpu_int8_from_code(w), the integer step reads the packed code directly (no decoded rows).
QSL_API void cpu_forward_int8(const cpu_weights& w, const float* scales, const float* x,
                              std::int64_t batch, const float* bias, float* y);

/// Whether cpu_forward_int8 multiplies this layer straight from its packed code on the active
/// target: AVX-512 with VNNI, BITALG and VBMI (Ice Lake, Zen 4 and later), binary codes of 1-4
/// bits and ternary codes of 1-2 (at most 4 lookup planes), with groups of whole 32-column
/// chunks or one group per row. A 16-row x 4-column block of the
/// rows' int8 grid bytes is made in one register and shared by up to 16 vectors; the integers
/// and floats are those of the decode-then-multiply form, so results never depend on it.
QSL_API bool cpu_int8_from_code(const cpu_weights& w);

/// The same with activations encoded by `quantizer` (bits >= 1, per vector or calibrated):
/// equals qsl::reference::forward_encoded with exact integer parts. Throws qsl::error for
/// NaN/Inf in x, like encode_activations.
QSL_API void cpu_forward_encoded(const cpu_weights& w, const float* x, std::int64_t batch,
                                 const activation_quantizer& quantizer, const float* bias,
                                 float* y);

}  // namespace qsl
