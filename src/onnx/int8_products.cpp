// The int8 form of a layer kept on the runtime's operator (compress_options::native_int8):
// standard operators only, laid out as onnxruntime.quantization.quantize_dynamic lays out a
// per-channel MatMul, so that ONNX Runtime folds the weight side into one int8 constant and
// fuses the rest into its DynamicQuantizeMatMul.

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "onnx/writer.hpp"
#include "qsl/weight_code.hpp"

namespace qsl::onnx::detail {

std::string int8_why_not(const fused_layer& f) {
  if (f.weight_left) return "the weight is MatMul's left operand";
  if (f.transpose_x) return "Gemm transA = 1";
  if (f.alpha != 1.0f) return "Gemm alpha != 1";
  if (!f.added.empty()) return "Gemm's C is not a per-output bias";
  return {};
}

namespace {

// Per output n: the largest |W[n, k]| / 127, so that the decoded weight divided by it rounds
// into [-127, 127] (symmetric: zero point 0, as quantize_dynamic's weights). An all-zero row
// gets 1 (any scale represents it; 0 would divide by zero).
std::vector<float> output_scales(const weight_code& code) {
  const Eigen::MatrixXf w = reconstruct(code);  // [rows = N outputs, cols = K]
  std::vector<float> scales(static_cast<std::size_t>(code.rows));
  for (std::int64_t r = 0; r < code.rows; ++r) {
    const float largest = code.cols > 0 ? w.row(r).cwiseAbs().maxCoeff() : 0.0f;
    scales[static_cast<std::size_t>(r)] = largest > 0.0f ? largest / 127.0f : 1.0f;
  }
  return scales;
}

}  // namespace

std::pair<std::string, std::string> graph_writer::add_int8_products(
    const weight_code& code, const std::string& signs,
    const std::string& masks, const std::string& coefficients,
    const std::vector<fused_layer>& users) {
  pb::GraphProto& g = *model_.mutable_graph();
  // Generated names only: the metadata entry lists them separated by ','.
  const std::string base = unique("qsl_int8");
  // The weight side, from initializers only (placed first by finish(); the runtime folds it).
  // The coefficients are divided by their output's scale before decoding, so that the decoder
  // yields W^T / scale [K, N] directly and one QuantizeLinear (scale 1) rounds and saturates it:
  // no Transpose, Div or Round intermediate of the weight's size at load (ORT keeps each folded
  // tensor until the whole graph is folded).
  const std::vector<float> scale_values = output_scales(code);
  std::vector<float> inverse(scale_values.size());
  for (std::size_t r = 0; r < inverse.size(); ++r) inverse[r] = 1.0f / scale_values[r];
  const std::string inverse_scales =
      add_tensor(make_float_tensor(base + "_inverse_scale", {code.rows, 1, 1, 1}, inverse.data()));
  const std::string scaled =
      node("Mul", {float_coefficients(coefficients), inverse_scales}, unique(base + "_coefficients"))
          .output(0);
  const std::string decoded = unique(base + "_decoded");
  decode_standard(decoded, {code.cols, code.rows}, weight_layout::transposed, code, signs, masks,
                  scaled);
  const float one = 1.0f;
  const std::int8_t zero = 0;
  const std::string int8_weight =
      node("QuantizeLinear",
           {decoded, add_tensor(make_float_tensor(base + "_one", {}, &one)),
            add_tensor(make_int8_tensor(base + "_zero", {}, &zero))},
           unique(base + "_weight"))
          .output(0);
  const std::string scales =
      add_tensor(make_float_tensor(base + "_scale", {code.rows}, scale_values.data()));
  const std::vector<std::int8_t> zeros(static_cast<std::size_t>(code.rows), 0);
  const std::string zero_points =
      add_tensor(make_int8_tensor(base + "_zero_point", {code.rows}, zeros.data()));

  std::string firsts, lasts;
  for (std::size_t u = 0; u < users.size(); ++u) {
    const fused_layer& f = users[u];
    const int index = node_producing(g, f.output);
    const std::string stem = unique(base + "_" + std::to_string(u));
    std::vector<pb::NodeProto> steps;
    auto step = [&](const char* op, std::vector<std::string> inputs,
                    std::vector<std::string> outputs) -> pb::NodeProto& {
      pb::NodeProto& s = steps.emplace_back();
      s.set_name(unique(stem + "_" + op));
      s.set_op_type(op);
      for (auto& i : inputs) s.add_input(std::move(i));
      for (auto& o : outputs) s.add_output(std::move(o));
      return s;
    };
    const std::string xq = unique(stem + "_x"), xs = unique(stem + "_x_scale"),
                      xz = unique(stem + "_x_zero_point");
    const std::string first = step("DynamicQuantizeLinear", {f.x}, {xq, xs, xz}).name();
    const std::string acc = unique(stem + "_acc");
    step("MatMulInteger", {xq, int8_weight, xz, zero_points}, {acc});
    const std::string accf = unique(stem + "_acc_float");
    add_int_attribute(step("Cast", {acc}, {accf}), "to", pb::TensorProto::FLOAT);
    const std::string scale = unique(stem + "_scale");
    step("Mul", {xs, scales}, {scale});
    const std::string product = f.bias.empty() ? f.output : unique(stem + "_product");
    std::string last = step("Mul", {accf, scale}, {product}).name();
    if (!f.bias.empty()) last = step("Add", {product, f.bias}, {f.output}).name();
    firsts += (u ? "," : "") + first;
    lasts += (u ? "," : "") + last;
    // The reader's node becomes these, in place (the graph stays sorted).
    google::protobuf::RepeatedPtrField<pb::NodeProto> nodes;
    for (int i = 0; i < g.node_size(); ++i) {
      if (i != index) {
        *nodes.Add() = std::move(*g.mutable_node(i));
        continue;
      }
      for (auto& s : steps) *nodes.Add() = std::move(s);
    }
    g.mutable_node()->Swap(&nodes);
  }
  return {firsts, lasts};
}

}  // namespace qsl::onnx::detail
