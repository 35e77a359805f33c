#include "ort_gemm.hpp"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <string>
#include <vector>

#include "cpu/int8_grid.hpp"
#include "cpu/thread_pool.hpp"
#include "qsl/error.hpp"
#include "scratch.hpp"

namespace qsl::ort {

namespace {

// MLAS multiplies u8 x s8 with vpmaddubsw on x86 CPUs without VNNI (AVX2 ones, AVX-512 before
// Cascade Lake): a pair of products is summed in int16 with saturation (255 * 127 * 2 > 2^15),
// so its MatMulInteger is not exact there (measured on an AMD Zen 3: off by up to 15914 on 64
// random columns). Where it is not, qsl's own integer loop computes the same definition.
bool runtime_int8_is_exact() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool exact =
      __builtin_cpu_supports("avx512vnni") != 0 || __builtin_cpu_supports("avxvnni") != 0;
  return exact;
#else
  return true;  // AArch64: MLAS's int8 kernels (sdot/udot, or widening multiplies) are exact
#endif
}

// Crossover measured on one AVX-512 core (bench/onnxruntime_compare.py --shapes, 2 bits,
// layers of 512 x 512 to 512 x 2048): below 64 rows qsl's tables are faster than decoding
// plus MLAS, from 64 rows on the decoded blocks are (docs/benchmarks.md).
constexpr std::int64_t default_gemm_min_rows = 64;
// A decoded block of at most this many floats (1 MiB) stays in L2 while MLAS streams the batch.
constexpr std::int64_t block_floats = std::int64_t{1} << 18;
// A row count from the environment variable `name` (a whole number >= `least`), or `fallback`.
std::int64_t rows_from_environment(const char* name, std::int64_t fallback, std::int64_t least) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const long long value = std::strtoll(text, &end, 10);
  if (*end != '\0' || value < least)
    throw error(std::string(name) + " is '" + text +
                "'; expected a whole number >= " + std::to_string(least));
  return value;
}

// Up to this many rows per call the 8-bit path runs qsl's VNNI tile kernel where it takes the
// code (int8_tiles_avx512_vnni.cpp: no decoded copy, 16 vectors per weight register), from
// there MLAS's packed GEMM on decoded blocks (measured: bench/onnxruntime_compare.py --shapes,
// docs/benchmarks.md).
constexpr std::int64_t default_int8_tile_max_rows = 128;

std::int64_t int8_tile_max_rows() {
  static const std::int64_t rows =
      rows_from_environment("QSL_ORT_INT8_TILE_MAX_ROWS", default_int8_tile_max_rows, 0);
  return rows;
}

}  // namespace

std::int64_t gemm_min_rows() {
  static const std::int64_t rows =
      rows_from_environment("QSL_ORT_GEMM_MIN_ROWS", default_gemm_min_rows, 1);
  return rows;
}

decoded_gemm::decoded_gemm(const OrtKernelInfo* info) {
  const char* type_names[] = {"T"};
  const ONNXTensorElementDataType types[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
  // An operator made this way gets no default attributes: all four are given.
  const std::int64_t zero = 0, one = 1;
  const float unit = 1.0f;
  const std::array<Ort::OpAttr, 4> attributes = {
      Ort::OpAttr("transA", &zero, 1, OrtOpAttrType::ORT_OP_ATTR_INT),
      Ort::OpAttr("transB", &one, 1, OrtOpAttrType::ORT_OP_ATTR_INT),
      Ort::OpAttr("alpha", &unit, 1, OrtOpAttrType::ORT_OP_ATTR_FLOAT),
      Ort::OpAttr("beta", &unit, 1, OrtOpAttrType::ORT_OP_ATTR_FLOAT)};
  gemm_ = Ort::Op::Create(info, "Gemm", "", 13, type_names, types, 1, attributes.data(),
                          attributes.size(), 2, 1);
}

void decoded_gemm::run(const OrtKernelContext* context, const cpu_weights& w, const float* x,
                       std::int64_t batch, const float* bias, float* y) const {
  const std::int64_t rows_per_block = std::min(
      w.rows, std::max<std::int64_t>(16, block_floats / std::max<std::int64_t>(1, w.cols)));
  const Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeCPU);
  const std::array<std::int64_t, 2> x_dims = {batch, w.cols};
  std::array<Ort::Value, 2> inputs = {
      Ort::Value::CreateTensor<float>(memory, const_cast<float*>(x),
                                      static_cast<std::size_t>(batch * w.cols), x_dims.data(), 2),
      Ort::Value(nullptr)};
  // Uninitialized (scratch.hpp): every float is written before it is read.
  qsl::detail::scratch<float> decoded(static_cast<std::size_t>(rows_per_block * w.cols));
  // One block covering every row writes y directly; otherwise each block's product is copied
  // into its columns of y.
  const bool direct = rows_per_block == w.rows;
  qsl::detail::scratch<float> product(direct ? 0
                                             : static_cast<std::size_t>(batch * rows_per_block));
  for (std::int64_t n0 = 0; n0 < w.rows; n0 += rows_per_block) {
    const std::int64_t count = std::min(rows_per_block, w.rows - n0);
    cpu_decode_rows(w, n0, n0 + count, decoded.data());
    const std::array<std::int64_t, 2> w_dims = {count, w.cols}, y_dims = {batch, count};
    inputs[1] = Ort::Value::CreateTensor<float>(
        memory, decoded.data(), static_cast<std::size_t>(count * w.cols), w_dims.data(), 2);
    float* out = direct ? y : product.data();
    Ort::Value output = Ort::Value::CreateTensor<float>(
        memory, out, static_cast<std::size_t>(batch * count), y_dims.data(), 2);
    gemm_.Invoke(context, inputs.data(), inputs.size(), &output, 1);
    for (std::int64_t v = 0; v < batch; ++v) {
      float* dst = y + v * w.rows + n0;
      const float* src = out + v * count;
      if (!direct) std::copy(src, src + count, dst);
      if (bias != nullptr)
        for (std::int64_t n = 0; n < count; ++n) dst[n] += bias[n0 + n];
    }
  }
}

int8_gemm::int8_gemm(const OrtKernelInfo* info, std::int64_t min_rows) : min_rows_(min_rows) {
  if (min_rows_ <= 0) return;
  const char* type_names[] = {"T1", "T2", "T3"};
  const ONNXTensorElementDataType types[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8,
                                             ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8,
                                             ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32};
  matmul_ = Ort::Op::Create(info, "MatMulInteger", "", 10, type_names, types, 3, nullptr, 0, 3, 1);
}

void int8_gemm::run(const OrtKernelContext* context, const cpu_weights& w, const float* scales,
                    const float* x, std::int64_t rows, const float* bias, float* y) const {
  if (!runtime_int8_is_exact() || (rows <= int8_tile_max_rows() && cpu_int8_from_code(w))) {
    cpu_forward_int8(w, scales, x, rows, bias, y);  // the same integers and floats as below
    return;
  }
  const std::int64_t k = w.cols;
  // The vectors on their grids, transposed a chunk at a time: B = X^T (k x chunk), so that the
  // product's rows are the layer's (A, a decoded block) and MLAS packs only the small operand.
  qsl::detail::scratch<std::int8_t> xt(static_cast<std::size_t>(rows * k));
  std::vector<float> x_scales(static_cast<std::size_t>(rows));
  // Tasks of vectors (a chunk's columns), and below the float step in blocks of the layer's
  // rows, so that a second thread shares these steps too, not only MLAS's.
  auto& pool = qsl::detail::cpu::thread_pool::instance();
  const std::int64_t vectors_per_task = qsl::detail::int8_vectors_per_task(k);
  pool.run((rows + vectors_per_task - 1) / vectors_per_task, [&](std::int64_t t) {
    const std::int64_t v = t * vectors_per_task;
    const std::int64_t v0 = v / chunk_vectors * chunk_vectors;
    const std::int64_t len = std::min(chunk_vectors, rows - v0);
    quantize_vectors_int8_transposed(x + v * k, std::min(vectors_per_task, rows - v), k,
                                     xt.data() + v0 * k + (v - v0), len, x_scales.data() + v);
  });
  run_transposed(context, w, scales, xt.data(), x_scales.data(), rows, bias, y);
}

bool int8_gemm::direct() { return runtime_int8_is_exact(); }

void int8_gemm::run_transposed(const OrtKernelContext* context, const cpu_weights& w,
                               const float* scales, const std::int8_t* xt, const float* x_scales,
                               std::int64_t rows, const float* bias, float* y) const {
  auto& pool = qsl::detail::cpu::thread_pool::instance();
  run_transposed_sums(
      context, w, scales, xt, rows,
      [&](std::int64_t n0, std::int64_t count, std::int64_t v0, std::int64_t len,
          const std::int32_t* sums) {
        // sums[i][v] for row n0 + i and vector v0 + v.
        // At least 64 outputs and 16K sums a task (a short last chunk stays on one thread).
        const std::int64_t outputs_per_task =
            std::max<std::int64_t>(64, ((std::int64_t{1} << 14) + len - 1) / len);
        pool.run((count + outputs_per_task - 1) / outputs_per_task, [&](std::int64_t t) {
          const std::int64_t i0 = t * outputs_per_task;
          finish_int8_products(sums + i0 * len, 1, len, x_scales + v0, len, scales, n0 + i0,
                               std::min(outputs_per_task, count - i0), bias, y + v0 * w.rows,
                               w.rows);
        });
      });
}

void int8_gemm::run_transposed_sums(const OrtKernelContext* context, const cpu_weights& w,
                                    const float* scales, const std::int8_t* xt, std::int64_t rows,
                                    const sums_consumer& consume) const {
  const std::int64_t k = w.cols;
  const std::int64_t rows_per_block =
      std::min(w.rows, std::max<std::int64_t>(16, 4 * block_floats / std::max<std::int64_t>(1, k)));
  const Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeCPU);
  std::uint8_t excess = 128;
  const std::array<std::int64_t, 1> scalar_dims = {1};
  std::array<Ort::Value, 3> inputs = {
      Ort::Value(nullptr), Ort::Value(nullptr),
      Ort::Value::CreateTensor<std::uint8_t>(memory, &excess, 1, scalar_dims.data(), 0)};
  qsl::detail::scratch<std::uint8_t> decoded(static_cast<std::size_t>(rows_per_block * k));
  qsl::detail::scratch<std::int32_t> sums(
      static_cast<std::size_t>(rows_per_block * std::min(rows, chunk_vectors)));
  for (std::int64_t n0 = 0; n0 < w.rows; n0 += rows_per_block) {
    const std::int64_t count = std::min(rows_per_block, w.rows - n0);
    // q + 128 as a byte: MLAS's fast kernels multiply unsigned A by signed B.
    cpu_decode_rows_excess128(w, scales, n0, n0 + count, decoded.data());
    const std::array<std::int64_t, 2> a_dims = {count, k};
    inputs[0] = Ort::Value::CreateTensor<std::uint8_t>(
        memory, decoded.data(), static_cast<std::size_t>(count * k), a_dims.data(), 2);
    for (std::int64_t v0 = 0; v0 < rows; v0 += chunk_vectors) {
      const std::int64_t len = std::min(chunk_vectors, rows - v0);
      const std::array<std::int64_t, 2> b_dims = {k, len}, y_dims = {count, len};
      inputs[1] = Ort::Value::CreateTensor<std::int8_t>(
          memory, const_cast<std::int8_t*>(xt + v0 * k), static_cast<std::size_t>(k * len),
          b_dims.data(), 2);
      Ort::Value output = Ort::Value::CreateTensor<std::int32_t>(
          memory, sums.data(), static_cast<std::size_t>(count * len), y_dims.data(), 2);
      matmul_.Invoke(context, inputs.data(), inputs.size(), &output, 1);
      consume(n0, count, v0, len, sums.data());
    }
  }
}

void multiply(const OrtKernelContext* context, const decoded_gemm& large, const cpu_weights& w,
              const activation_quantizer& quantizer, const float* x, std::int64_t rows,
              const float* bias, float* y, const int8_gemm* int8, const float* int8_scales,
              const activation_quantizer* small_batches) {
  if (quantizer.bits > 0)
    cpu_forward_encoded(w, x, rows, quantizer, bias, y);
  else if (int8 != nullptr && int8->takes(rows))
    int8->run(context, w, int8_scales, x, rows, bias, y);
  else if (small_batches != nullptr && small_batches->bits > 0)
    cpu_forward_encoded(w, x, rows, *small_batches, bias, y);
  else if (rows >= gemm_min_rows())
    large.run(context, w, x, rows, bias, y);
  else
    cpu_forward_float(w, x, rows, bias, y);
}

}  // namespace qsl::ort
