#include "decode_weights.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernel_support.hpp"
#include "layer_inputs.hpp"
#include "qsl/error.hpp"
#include "qsl/twd.hpp"
#include "qsl/weight_code.hpp"

namespace qsl::ort {
namespace {

// The rebuilt tensor: W (rows x cols) as the node's `shape`, or W^T when `transposed`.
struct decoded_kernel {
  std::string what;
  std::vector<std::int64_t> shape;
  std::vector<float> values;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) const {
    return guarded(what, [&] {
      Ort::KernelContext ctx(context);
      Ort::UnownedValue y = ctx.GetOutput(0, shape);
      std::copy(values.begin(), values.end(), y.GetTensorMutableData<float>());
    });
  }

  // Lays W out as the tensor: the shape's dims must hold rows x cols.
  void set(const node_reader& node, const Eigen::MatrixXf& w) {
    const bool transposed = node.int_attribute("transposed") != 0;
    shape = node.ints_attribute("shape");
    detail::require(shape_holds_w(shape, w.rows(), w.cols(), transposed),
                    "attribute 'shape' does not match rows x cols");
    values.resize(static_cast<std::size_t>(w.size()));
    // Eigen is column-major: W^T's row-major layout is W's column-major one, and vice versa.
    if (transposed)
      Eigen::Map<Eigen::MatrixXf>(values.data(), w.rows(), w.cols()) = w;
    else
      Eigen::Map<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
          values.data(), w.rows(), w.cols()) = w;
  }
};

template <class Derived>
struct decode_op_base : Ort::CustomOpBase<Derived, decoded_kernel, /*WithStatus=*/true> {
  std::size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(std::size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    *kernel = nullptr;
    std::string what = Derived::name;
    try {
      what = node_reader(info, Derived::name).what();
    } catch (...) {
    }
    return guarded(what, [&] {
      const node_reader node(info, Derived::name);
      auto k = std::make_unique<decoded_kernel>();
      k->what = node.what();
      k->set(node, Derived::decode(node));
      *kernel = k.release();
    });
  }
};

struct decode_weights : decode_op_base<decode_weights> {
  static constexpr const char* name = "DecodeWeights";
  const char* GetName() const { return name; }
  std::size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(std::size_t index) const {
    // The coefficients float or float16 (UNDEFINED: any type; checked at load).
    return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
                      : ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(std::size_t index) const {
    return index == 2 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
  static Eigen::MatrixXf decode(const node_reader& node) {
    code_inputs inputs(node, node.int_attribute("rows"), node.int_attribute("cols"), 0);
    inputs.read();
    return reconstruct(inputs.code);
  }
};

struct decode_factorized : decode_op_base<decode_factorized> {
  static constexpr const char* name = "DecodeFactorized";
  const char* GetName() const { return name; }
  std::size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(std::size_t index) const {
    return index == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  }
  static Eigen::MatrixXf decode(const node_reader& node) {
    return reconstruct(
        read_twd_code(node, 0, node.int_attribute("rows"), node.int_attribute("cols")));
  }
};

}  // namespace

OrtCustomOp* decode_weights_op() {
  static decode_weights op;
  return &op;
}

OrtCustomOp* decode_factorized_op() {
  static decode_factorized op;
  return &op;
}

}  // namespace qsl::ort
