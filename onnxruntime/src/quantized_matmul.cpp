#include "quantized_matmul.hpp"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "kernel_support.hpp"
#include "ort_gemm.hpp"
#include "packed_cache.hpp"
#include "qsl/activation_code.hpp"
#include "qsl/cpu.hpp"
#include "qsl/error.hpp"
#include "qsl/weight_code.hpp"

namespace qsl::ort {

// The version of the operators' inputs and attributes this library reads.
constexpr std::int64_t format_version = 1;

struct quantized_matmul_kernel {
  std::string what;
  std::int64_t in_features = 0, out_features = 0;
  // The only copy of the layer the kernel keeps, shared with the other nodes of the same
  // code (packed_cache.hpp).
  std::shared_ptr<const cpu_weights> packed;
  std::vector<float> bias;
  activation_quantizer activations;
  decoded_gemm large_batches;  // ORT's Gemm on decoded blocks (float activations)

  explicit quantized_matmul_kernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) const;
};

namespace {

std::string str(std::int64_t v) { return std::to_string(v); }

}  // namespace

struct quantized_matmul
    : Ort::CustomOpBase<quantized_matmul, quantized_matmul_kernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "QuantizedMatMul"; }
  std::size_t GetInputTypeCount() const { return 5; }
  ONNXTensorElementDataType GetInputType(std::size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(std::size_t index) const;
  std::size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(std::size_t) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
};

quantized_matmul_kernel::quantized_matmul_kernel(const OrtKernelInfo* info)
    : large_batches(info) {
  const node_reader node(info, "QuantizedMatMul");
  what = node.what();
  const std::int64_t version = node.int_attribute("format_version", format_version);
  detail::require(version == format_version, "format_version is " + str(version) +
                                                 "; this library reads " + str(format_version) +
                                                 " (compress the model again with this qsl)");
  in_features = node.int_attribute("in_features");
  out_features = node.int_attribute("out_features");
  const std::int64_t bits = node.int_attribute("bits");
  const std::int64_t basis = node.int_attribute("basis");
  const std::int64_t group = node.int_attribute("group_size");
  detail::require(bits >= 1 && bits <= max_bits,
                  "bits is " + str(bits) + "; expected 1.." + str(max_bits));
  detail::require(basis == 0 || basis == 1, "basis is " + str(basis) + "; expected 0 or 1");
  detail::require(group >= 0, "group_size is " + str(group) + "; expected >= 0 (0: one per row)");
  weight_code code = make_weight_code(out_features, in_features, static_cast<int>(bits),
                                      static_cast<qsl::basis>(basis),
                                      group >= in_features ? 0 : group);  // 0: per row
  const std::vector<std::int64_t> plane_dims = {out_features, bits, (in_features + 7) / 8};
  const auto* signs = static_cast<const std::uint8_t*>(
      node.constant(1, "signs", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, plane_dims));
  const auto* alpha = static_cast<const float*>(
      node.constant(2, "coefficients", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                    {out_features, code.groups(), 1, bits}));
  const auto* masks = static_cast<const std::uint8_t*>(
      node.constant(3, "masks", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, plane_dims, true));
  const auto* b = static_cast<const float*>(
      node.constant(4, "bias", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, {out_features}, true));
  detail::require((masks != nullptr) == (code.basis == qsl::basis::ternary),
                  code.basis == qsl::basis::ternary ? "a ternary code needs input 3 (masks)"
                                                    : "a binary code takes no masks (input 3)");
  const packed_key key{signs, alpha, masks, out_features, in_features, bits, basis, group};
  packed = shared_packed(key, [&] {
    read_plane_bytes(code, false, signs, "signs");
    if (masks != nullptr) read_plane_bytes(code, true, masks, "masks");
    code.coefficients.assign(alpha, alpha + code.coefficients.size());
    for (std::size_t i = 0; i < code.coefficients.size(); ++i)
      detail::require(std::isfinite(code.coefficients[i]),
                      "coefficient " + str(static_cast<std::int64_t>(i)) + " is " +
                          std::to_string(code.coefficients[i]) + "; expected a finite value");
    compute_offsets(code);
    validate(code, "weight code");
    return pack_for_cpu(code);  // `code` (and the session's initializers) are not needed again
  });
  if (b != nullptr) {
    bias.assign(b, b + out_features);
    for (std::int64_t n = 0; n < out_features; ++n)
      detail::require(std::isfinite(bias[static_cast<std::size_t>(n)]),
                      "bias " + str(n) + " is " +
                          std::to_string(bias[static_cast<std::size_t>(n)]) +
                          "; expected a finite value");
  }
  activations.bits = static_cast<int>(node.int_attribute("activation_bits", 0));
  detail::require(
      activations.bits >= 0 && activations.bits <= max_activation_bits,
      "activation_bits is " + str(activations.bits) + "; expected 0.." + str(max_activation_bits));
  const bool step = node.has_attribute("activation_step");
  const bool minimum = node.has_attribute("activation_minimum");
  detail::require(step == minimum,
                  "activation_step and activation_minimum come together (a calibrated quantizer)");
  // The quantizers qsl-compress fits with calibration: one per bit count 1..8.
  const std::vector<float> steps = node.floats_attribute("activation_steps");
  const std::vector<float> minimums = node.floats_attribute("activation_minimums");
  detail::require(
      steps.size() == minimums.size() &&
          (steps.empty() || steps.size() == static_cast<std::size_t>(max_activation_bits)),
      "activation_steps and activation_minimums must both hold " + str(max_activation_bits) +
          " values (or neither be given)");
  if (!step && !steps.empty() && activations.bits > 0) {
    activations.calibrated = true;
    activations.step = steps[static_cast<std::size_t>(activations.bits - 1)];
    activations.minimum = minimums[static_cast<std::size_t>(activations.bits - 1)];
    detail::require(std::isfinite(activations.step) && activations.step >= 0 &&
                        std::isfinite(activations.minimum),
                    "the calibrated quantizer for " + str(activations.bits) +
                        " bits is not finite (or has a negative step)");
  }
  if (step && activations.bits > 0) {
    activations.calibrated = true;
    activations.step = node.float_attribute("activation_step");
    activations.minimum = node.float_attribute("activation_minimum");
    detail::require(std::isfinite(activations.step) && activations.step >= 0 &&
                        std::isfinite(activations.minimum),
                    "activation_step " + std::to_string(activations.step) + " and minimum " +
                        std::to_string(activations.minimum) + " must be finite, step >= 0");
  }
}

OrtStatusPtr quantized_matmul_kernel::ComputeV2(OrtKernelContext* context) const {
  return guarded(what, [&] {
    Ort::KernelContext ctx(context);
    const Ort::ConstValue x = ctx.GetInput(0);
    const auto info = x.GetTensorTypeAndShapeInfo();
    std::vector<std::int64_t> shape = info.GetShape();
    detail::require(!shape.empty() && shape.back() == in_features,
                    "input X has shape of rank " + str(static_cast<std::int64_t>(shape.size())) +
                        (shape.empty() ? "" : " ending in " + str(shape.back())) +
                        "; expected its last dimension to be in_features = " + str(in_features));
    std::int64_t batch = 1;
    for (std::size_t d = 0; d + 1 < shape.size(); ++d) batch *= shape[d];
    shape.back() = out_features;
    Ort::UnownedValue y = ctx.GetOutput(0, shape);
    if (batch == 0) return;
    const float* xp = x.GetTensorData<float>();
    float* yp = y.GetTensorMutableData<float>();
    const float* bp = bias.empty() ? nullptr : bias.data();
    const session_threads threads(context);
    if (activations.bits == 0 && batch >= gemm_min_rows())
      large_batches.run(context, *packed, xp, batch, bp, yp);
    else if (activations.bits == 0)
      cpu_forward_float(*packed, xp, batch, bp, yp);
    else
      cpu_forward_encoded(*packed, xp, batch, activations, bp, yp);
  });
}

OrtStatusPtr quantized_matmul::CreateKernelV2(const OrtApi&, const OrtKernelInfo* info,
                                              void** kernel) const {
  *kernel = nullptr;
  std::string what = "QuantizedMatMul node";
  try {
    what = node_reader(info, "QuantizedMatMul").what();
  } catch (...) {
  }
  return guarded(what, [&] { *kernel = new quantized_matmul_kernel(info); });
}

ONNXTensorElementDataType quantized_matmul::GetInputType(std::size_t index) const {
  return index == 1 || index == 3 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8
                                  : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

OrtCustomOpInputOutputCharacteristic quantized_matmul::GetInputCharacteristic(
    std::size_t index) const {
  return index >= 3 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                    : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
}

OrtCustomOp* quantized_matmul_op() {
  static quantized_matmul op;
  return &op;
}

}  // namespace qsl::ort
