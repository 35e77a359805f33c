#include "quantized_twd.hpp"

#include <string>
#include <vector>

#include "kernel_support.hpp"
#include "layer_inputs.hpp"
#include "qsl/error.hpp"
#include "qsl/twd_dense.hpp"

namespace qsl::ort {

namespace {

std::string str(std::int64_t v) { return std::to_string(v); }

}  // namespace

struct quantized_twd_kernel {
  std::string what;
  std::int64_t in_features = 0, out_features = 0;
  twd_dense layer;  // M^T packed for the kernels and C^T: the only copies kept

  explicit quantized_twd_kernel(const OrtKernelInfo* info) {
    const node_reader node(info, "QuantizedTwd");
    what = node.what();
    check_format_version(node);
    in_features = node.int_attribute("in_features");
    out_features = node.int_attribute("out_features");
    detail::require(in_features >= 1 && out_features >= 1,
                    "in_features " + str(in_features) + " and out_features " +
                        str(out_features) + "; expected >= 1");
    twd_dense_parameters p;
    p.code = read_twd_code(node, 1, out_features, in_features);
    p.bias = read_bias(node, 4, out_features);
    p.activations = read_activation_mode(node);
    layer = twd_dense(std::move(p));
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) const {
    return guarded(what, [&] {
      Ort::KernelContext ctx(context);
      const Ort::ConstValue x = ctx.GetInput(0);
      std::vector<std::int64_t> shape = x.GetTensorTypeAndShapeInfo().GetShape();
      detail::require(!shape.empty() && shape.back() == in_features,
                      "input X has shape of rank " + str(static_cast<std::int64_t>(shape.size())) +
                          (shape.empty() ? "" : " ending in " + str(shape.back())) +
                          "; expected its last dimension to be in_features = " +
                          str(in_features));
      std::int64_t batch = 1;
      for (std::size_t d = 0; d + 1 < shape.size(); ++d) batch *= shape[d];
      shape.back() = out_features;
      Ort::UnownedValue y = ctx.GetOutput(0, shape);
      if (batch == 0) return;
      const session_threads threads(context);
      layer.forward(x.GetTensorData<float>(), batch, y.GetTensorMutableData<float>());
    });
  }
};

struct quantized_twd
    : Ort::CustomOpBase<quantized_twd, quantized_twd_kernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return create_kernel<quantized_twd_kernel>(info, "QuantizedTwd", kernel);
  }
  const char* GetName() const { return "QuantizedTwd"; }
  std::size_t GetInputTypeCount() const { return 5; }
  ONNXTensorElementDataType GetInputType(std::size_t index) const {
    return index == 1 || index == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8
                                    : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(std::size_t index) const {
    return index == 4 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
  std::size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(std::size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

OrtCustomOp* quantized_twd_op() {
  static quantized_twd op;
  return &op;
}

}  // namespace qsl::ort
