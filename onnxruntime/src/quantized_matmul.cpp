#include "quantized_matmul.hpp"

#include <memory>
#include <string>
#include <vector>

#include "kernel_support.hpp"
#include "layer_inputs.hpp"
#include "ort_gemm.hpp"
#include "packed_cache.hpp"
#include "qsl/activation_code.hpp"
#include "qsl/cpu.hpp"
#include "qsl/error.hpp"
#include "qsl/weight_code.hpp"

namespace qsl::ort {

struct quantized_matmul_kernel {
  std::string what;
  std::int64_t in_features = 0, out_features = 0;
  // The only copy of the layer the kernel keeps, shared with the other nodes of the same
  // code (packed_cache.hpp).
  std::shared_ptr<const packed_layer> packed;
  std::vector<float> bias;
  activation_quantizer activations;
  decoded_gemm large_batches;  // ORT's Gemm on decoded blocks (float activations)
  int8_gemm int8_rows;         // ORT's MatMulInteger from int8_min_rows rows (float layers)
  // Below int8_min_rows: activations encoded per vector (small_batch_bits) where this CPU has
  // byte tables for them; bits 0 otherwise (float activations).
  activation_quantizer small_batches;

  explicit quantized_matmul_kernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) const;
};

namespace {

std::string str(std::int64_t v) { return std::to_string(v); }

}  // namespace

struct quantized_matmul : code_layer_op<quantized_matmul, quantized_matmul_kernel> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "QuantizedMatMul"; }
};

namespace {

std::int64_t int8_min_rows(const OrtKernelInfo* info) {
  const node_reader node(info, "QuantizedMatMul");
  return read_int8_min_rows(node, node.int_attribute("in_features"));
}

// small_batch_bits, checked: 0 (absent), or 1..8 with int8_min_rows. The quantizer calls below
// int8_min_rows run with: per-vector grids of that many bits where the active CPU target has
// byte tables for them (cpu_byte_tables_min_bits), float activations (bits 0) elsewhere.
activation_quantizer small_batch_quantizer(const OrtKernelInfo* info, bool int8_rows) {
  const node_reader node(info, "QuantizedMatMul");
  const std::int64_t bits = node.int_attribute("small_batch_bits", 0);
  detail::require(bits >= 0 && bits <= max_activation_bits,
                  "small_batch_bits is " + std::to_string(bits) + "; expected 0.." +
                      std::to_string(max_activation_bits));
  detail::require(bits == 0 || int8_rows, "small_batch_bits is " + std::to_string(bits) +
                                                  " without int8_min_rows; expected 0");
  activation_quantizer q;
  if (bits > 0 && bits >= cpu_byte_tables_min_bits()) q.bits = static_cast<int>(bits);
  return q;
}

}  // namespace

quantized_matmul_kernel::quantized_matmul_kernel(const OrtKernelInfo* info)
    : large_batches(info),
      int8_rows(info, int8_min_rows(info)),
      small_batches(small_batch_quantizer(info, int8_rows.enabled())) {
  const node_reader node(info, "QuantizedMatMul");
  what = node.what();
  check_format_version(node);
  in_features = node.int_attribute("in_features");
  out_features = node.int_attribute("out_features");
  code_inputs inputs(node, out_features, in_features);
  activations = read_activation_mode(node);
  // small_batches has bits only where the target has byte tables for them.
  const bool byte_tables =
      activations.bits >= cpu_byte_tables_min_bits() || small_batches.bits > 0;
  const packed_key key{inputs.signs, inputs.coefficients, inputs.masks, out_features, in_features,
                       inputs.bits,  inputs.basis,        inputs.group, byte_tables};
  packed = shared_packed(key, [&] {
    inputs.read();
    cpu_weights w = pack_for_cpu(inputs.code);  // the code (and the initializers) are not needed again
    if (byte_tables) add_encoded_layout(w);  // many activation bits: the faster kernels
    return w;
  });
  bias = read_bias(node, 4, out_features);
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
    // The grids are made by the first call that takes the 8-bit path, on the session's threads
    // (a kernel being created has none to lend), once for all the nodes of the code.
    const float* grids = int8_rows.takes(batch) ? packed->int8.scales(packed->weights).data()
                                                : nullptr;
    multiply(context, large_batches, packed->weights, activations, xp, batch, bp, yp, &int8_rows,
             grids, &small_batches);
  });
}

OrtStatusPtr quantized_matmul::CreateKernelV2(const OrtApi&, const OrtKernelInfo* info,
                                              void** kernel) const {
  return create_kernel<quantized_matmul_kernel>(info, "QuantizedMatMul", kernel);
}

OrtCustomOp* quantized_matmul_op() {
  static quantized_matmul op;
  return &op;
}

}  // namespace qsl::ort
