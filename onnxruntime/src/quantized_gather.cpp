#include "quantized_gather.hpp"

#include <string>
#include <vector>

#include "kernel_support.hpp"
#include "layer_inputs.hpp"
#include "qsl/error.hpp"
#include "qsl/weight_code.hpp"

namespace qsl::ort {

namespace {

std::string str(std::int64_t v) { return std::to_string(v); }

}  // namespace

struct quantized_gather_kernel {
  std::string what;
  weight_code table;  // the only copy kept: k bits per weight

  explicit quantized_gather_kernel(const OrtKernelInfo* info) {
    const node_reader node(info, "QuantizedGather");
    what = node.what();
    check_format_version(node);
    const std::int64_t rows = node.int_attribute("rows"), cols = node.int_attribute("cols");
    detail::require(rows >= 1 && cols >= 1,
                    "rows " + str(rows) + " and cols " + str(cols) + "; expected >= 1");
    code_inputs inputs(node, rows, cols, 1);
    inputs.read();
    table = std::move(inputs.code);
  }

  template <class Index>
  void gather(const Index* indices, std::int64_t count, float* y) const {
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t index = static_cast<std::int64_t>(indices[i]);
      const std::int64_t row = index < 0 ? index + table.rows : index;
      detail::require(row >= 0 && row < table.rows,
                      "index " + str(index) + " (element " + str(i) +
                          " of the indices) is out of range for a table of " + str(table.rows) +
                          " rows; expected " + str(-table.rows) + ".." + str(table.rows - 1));
      reconstruct_row(table, row, y + i * table.cols);
    }
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) const {
    return guarded(what, [&] {
      Ort::KernelContext ctx(context);
      const Ort::ConstValue indices = ctx.GetInput(0);
      const auto info = indices.GetTensorTypeAndShapeInfo();
      const ONNXTensorElementDataType type = info.GetElementType();
      detail::require(type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 ||
                          type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,
                      "input indices has element type " + str(type) +
                          "; expected int64 (7) or int32 (6)");
      std::vector<std::int64_t> shape = info.GetShape();
      const auto count = static_cast<std::int64_t>(info.GetElementCount());
      shape.push_back(table.cols);
      Ort::UnownedValue y = ctx.GetOutput(0, shape);
      if (count == 0) return;
      float* out = y.GetTensorMutableData<float>();
      if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64)
        gather(indices.GetTensorData<std::int64_t>(), count, out);
      else
        gather(indices.GetTensorData<std::int32_t>(), count, out);
    });
  }
};

struct quantized_gather
    : Ort::CustomOpBase<quantized_gather, quantized_gather_kernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return create_kernel<quantized_gather_kernel>(info, "QuantizedGather", kernel);
  }
  const char* GetName() const { return "QuantizedGather"; }
  std::size_t GetInputTypeCount() const { return 4; }
  // Indices of either integer type (UNDEFINED: any type; checked per call).
  ONNXTensorElementDataType GetInputType(std::size_t index) const {
    return index == 0   ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
           : index == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED  // float or float16
                        : ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(std::size_t index) const {
    return index == 3 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
  std::size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(std::size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

OrtCustomOp* quantized_gather_op() {
  static quantized_gather op;
  return &op;
}

}  // namespace qsl::ort
