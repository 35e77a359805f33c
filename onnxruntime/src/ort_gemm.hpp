#pragma once
// Large batches on ONNX Runtime's own fp32 GEMM (MLAS): the layer's rows are decoded a block at
// a time into a buffer of about 1 MiB and multiplied by the whole batch with ORT's Gemm
// (OrtApi::InvokeOp), so the fp32 weights never exist whole. From a few dozen rows on, MLAS
// multiplies a decoded block faster than qsl's look-up tables run (docs/onnxruntime.md,
// "Which path a batch takes", measured by bench/onnxruntime_compare.py --shapes).
#include <cstdint>
#include <functional>

#include "ort_api.hpp"
#include "qsl/activation_code.hpp"
#include "qsl/cpu.hpp"

namespace qsl::ort {

/// Batches of at least this many rows take the decoded-block path (float activations only;
/// encoded activations always run on qsl's kernels, which define their arithmetic). Overridden
/// per process by QSL_ORT_GEMM_MIN_ROWS (tests run both paths at every batch).
std::int64_t gemm_min_rows();

class decoded_gemm {
 public:
  explicit decoded_gemm(const OrtKernelInfo* info);

  /// y (batch x w.rows) = x (batch x w.cols) W_hat^T + bias (may be null).
  void run(const OrtKernelContext* context, const cpu_weights& w, const float* x,
           std::int64_t batch, const float* bias, float* y) const;

 private:
  mutable Ort::Op gemm_{nullptr};  // Gemm(A, B) with transB = 1 (Invoke is not const)
};

/// 8-bit activations on ONNX Runtime's integer GEMM (MatMulInteger, MLAS's u8 x s8 kernels):
/// the vectors are put on their int8 grids and transposed once per call, the layer's rows are
/// decoded onto theirs a block of about 1 MiB at a time (excess-128 bytes, zero point 128, the
/// operand MLAS's VNNI kernels take), and qsl finishes the exact int32 sums with the scales
/// (qsl/cpu.hpp, cpu_forward_int8: the same results bit for bit).
class int8_gemm {
 public:
  /// `min_rows`: calls of at least this many rows take this path; 0: none do.
  int8_gemm(const OrtKernelInfo* info, std::int64_t min_rows);

  bool takes(std::int64_t rows) const { return enabled() && rows >= min_rows_; }
  bool enabled() const { return min_rows_ > 0; }
  /// y (rows x w.rows) = x (rows x w.cols) W_hat^T + bias (may be null), `scales` the rows'
  /// int8 grids (cpu_int8_row_scales).
  void run(const OrtKernelContext* context, const cpu_weights& w, const float* scales,
           const float* x, std::int64_t rows, const float* bias, float* y) const;

  /// Vectors per integer product: their int32 sums with a block's rows stay within a few MiB.
  static constexpr std::int64_t chunk_vectors = 256;
  /// Whether run_transposed may run here: ORT's integer GEMM is exact on this CPU (else run()
  /// takes qsl's own int8 kernels).
  static bool direct();
  /// The same product from vectors already on their grids (`x_scales`), transposed a chunk at a
  /// time: the chunk of vectors [v0, v0 + len), len = min(chunk_vectors, rows - v0), is a
  /// k x len byte matrix at xt + v0 * k (column j: vector v0 + j).
  void run_transposed(const OrtKernelContext* context, const cpu_weights& w, const float* scales,
                      const std::int8_t* xt, const float* x_scales, std::int64_t rows,
                      const float* bias, float* y) const;

  /// The integer step of run_transposed alone: for each block of the layer's rows [n0, n0 +
  /// count) and chunk of vectors [v0, v0 + len), `consume(n0, count, v0, len, sums)` with the
  /// int32 sum of row r and vector v at sums[(r - n0) * len + v - v0], valid during the call
  /// (run_transposed's consumer applies the float step; a fused consumer can do more with it).
  using sums_consumer = std::function<void(std::int64_t n0, std::int64_t count, std::int64_t v0,
                                           std::int64_t len, const std::int32_t* sums)>;
  void run_transposed_sums(const OrtKernelContext* context, const cpu_weights& w,
                           const float* scales, const std::int8_t* xt, std::int64_t rows,
                           const sums_consumer& consume) const;

 private:
  std::int64_t min_rows_ = 0;
  mutable Ort::Op matmul_{nullptr};  // MatMulInteger(A u8, B s8, a_zero_point)
};

/// y = x W_hat^T + bias for `rows` vectors on the path for that many: encoded activations
/// (quantizer.bits > 0) on qsl's encoded kernels; float ones that `int8` (may be null) takes on
/// its integer GEMM, with the rows' grids `int8_scales`; float ones `int8` does not take with
/// `small_batches` (may be null; bits 0: none) encoded per vector when it has bits; the rest on
/// qsl's tables below gemm_min_rows() and on `large` (decoded blocks + ORT's Gemm) from there.
void multiply(const OrtKernelContext* context, const decoded_gemm& large, const cpu_weights& w,
              const activation_quantizer& quantizer, const float* x, std::int64_t rows,
              const float* bias, float* y, const int8_gemm* int8 = nullptr,
              const float* int8_scales = nullptr,
              const activation_quantizer* small_batches = nullptr);

}  // namespace qsl::ort
