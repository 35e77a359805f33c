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

std::string str(std::int64_t v) { return std::to_string(v); }

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
    std::int64_t elements = 1;
    for (std::int64_t d : shape) {
      detail::require(d >= 1 && elements <= w.size() / d,
                      "attribute 'shape' does not match rows x cols");
      elements *= d;
    }
    detail::require(
        elements == w.size() && !shape.empty() &&
            (transposed ? shape.size() == 2 && shape[0] == w.cols() : shape[0] == w.rows()),
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
    return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(std::size_t index) const {
    return index == 2 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
  static Eigen::MatrixXf decode(const node_reader& node) {
    const std::int64_t rows = node.int_attribute("rows"), cols = node.int_attribute("cols");
    const std::int64_t bits = node.int_attribute("bits"), basis = node.int_attribute("basis");
    const std::int64_t group = node.int_attribute("group_size");
    detail::require(bits >= 1 && bits <= max_bits && (basis == 0 || basis == 1) && group >= 0,
                    "attributes bits " + str(bits) + ", basis " + str(basis) + ", group_size " +
                        str(group) + " are out of range");
    weight_code code = make_weight_code(rows, cols, static_cast<int>(bits),
                                        static_cast<qsl::basis>(basis), group >= cols ? 0 : group);
    const std::vector<std::int64_t> plane_dims = {rows, bits, (cols + 7) / 8};
    read_plane_bytes(code, false,
                     static_cast<const std::uint8_t*>(node.constant(
                         0, "signs", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, plane_dims)),
                     "signs");
    const auto* alpha = static_cast<const float*>(node.constant(
        1, "coefficients", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, {rows, code.groups(), 1, bits}));
    code.coefficients.assign(alpha, alpha + code.coefficients.size());
    const auto* masks = static_cast<const std::uint8_t*>(
        node.constant(2, "masks", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, plane_dims, true));
    detail::require((masks != nullptr) == (code.basis == qsl::basis::ternary),
                    "masks (input 2) are needed by ternary codes and only by them");
    if (masks != nullptr) read_plane_bytes(code, true, masks, "masks");
    for (float a : code.coefficients)
      detail::require(std::isfinite(a), "a coefficient is not finite");
    compute_offsets(code);
    validate(code, "weight code");
    return reconstruct(code);
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
