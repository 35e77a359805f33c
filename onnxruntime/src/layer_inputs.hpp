#pragma once
// The inputs and attributes every qsl layer operator shares: the weight code (attributes bits,
// basis, group_size; inputs signs, coefficients, masks), the bias and the activation mode,
// read with the node's named errors (docs/onnxruntime.md).
#include <cstdint>
#include <memory>
#include <vector>

#include "kernel_support.hpp"
#include "qsl/activation_code.hpp"
#include "qsl/cpu.hpp"
#include "qsl/twd.hpp"
#include "qsl/weight_code.hpp"

namespace qsl::ort {

/// The inputs and output of the operators of one weight code (QuantizedMatMul, QuantizedConv,
/// QuantizedConvTranspose): 0 X (float), 1 signs and 3 masks (uint8; masks optional), 2
/// coefficients (float or float16: any type here, checked at load), 4 bias (float, optional);
/// one float output. `Op` adds CreateKernelV2 and GetName.
template <class Op, class Kernel>
struct code_layer_op : Ort::CustomOpBase<Op, Kernel, /*WithStatus=*/true> {
  std::size_t GetInputTypeCount() const { return 5; }
  ONNXTensorElementDataType GetInputType(std::size_t index) const {
    return index == 1 || index == 3 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8
           : index == 2             ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
                                    : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(std::size_t index) const {
    return index >= 3 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
  std::size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(std::size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

/// Throws unless the node's format_version (default 1) is the one this library reads.
void check_format_version(const node_reader& node);

/// A code of `rows` x `cols` from inputs `first` (signs), `first` + 1 (coefficients) and
/// `first` + 2 (masks, ternary only), checked: planes uint8 [rows, bits, ceil(cols / 8)],
/// coefficients float or float16 [rows, groups, 1, bits], finite, canonical. The fused
/// operators' inputs start at 1 (after X), DecodeWeights' at 0.
struct code_inputs {
  weight_code code;  ///< shape only until read() fills it
  const std::uint8_t* signs = nullptr;
  const void* coefficients = nullptr;  ///< float or float16 data (also the packed cache's key)
  ONNXTensorElementDataType coefficient_type = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  const std::uint8_t* masks = nullptr;
  std::int64_t bits = 0, basis = 0, group = 0;

  code_inputs(const node_reader& node, std::int64_t rows, std::int64_t cols,
              std::size_t first = 1);
  /// Fills `code` from the tensors (float16 coefficients widened exactly) and validates it.
  void read();
};

/// A TWD code of `rows` x `cols` (attribute basis_vectors K) from inputs `first` (signs),
/// `first` + 1 (masks), both uint8 [K, 1, ceil(cols / 8)], and `first` + 2 (mixing, float
/// [K, rows]), validated.
twd_code read_twd_code(const node_reader& node, std::size_t first, std::int64_t rows,
                       std::int64_t cols);

/// Input `index`, a float bias of `count` finite values, or empty when absent.
std::vector<float> read_bias(const node_reader& node, std::size_t index, std::int64_t count);

/// activation_bits and the calibrated quantizer attributes (activation_step / _minimum, or
/// activation_steps / _minimums for 1..8 bits).
activation_quantizer read_activation_mode(const node_reader& node);

/// int8_min_rows, checked: 0 (absent) or a row count; only float layers (activation_bits 0) of
/// at most cpu_int8_max_cols inputs (`cols`: a product's inputs) take 8-bit products.
std::int64_t read_int8_min_rows(const node_reader& node, std::int64_t cols);

}  // namespace qsl::ort
