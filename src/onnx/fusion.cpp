// Which compressed MatMul / Gemm layers become one ai.qsl::QuantizedMatMul node (the layer on
// qsl's kernels, in ONNX Runtime and in qsl-run) rather than a DecodeWeights node feeding the
// original operator.
#include <functional>

#include "onnx/writer.hpp"

namespace qsl::onnx::detail {
int uses(const pb::GraphProto& g, const std::string& name) {
  int count = 0;
  for (const auto& o : g.output()) count += o.name() == name;
  for (const auto& n : g.node()) {
    for (const auto& i : n.input()) count += i == name;
    for (const auto& a : n.attribute()) {
      if (a.has_g()) count += uses(a.g(), name);
      for (const auto& sub : a.graphs()) count += uses(sub, name);
    }
  }
  return count;
}

namespace {

const pb::AttributeProto* attribute(const pb::NodeProto& n, const char* name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

const pb::TensorProto* initializer(const pb::GraphProto& g, const std::string& name) {
  for (const auto& t : g.initializer())
    if (t.name() == name) return &t;
  return nullptr;
}

}  // namespace

fused_layer plan_fusion(const pb::GraphProto& g, const pb::NodeProto& n, const std::string& weight,
                        std::int64_t rows) {
  fused_layer f;
  f.output = n.output_size() == 1 ? n.output(0) : "";
  f.x = n.input_size() > 0 ? n.input(0) : "";
  auto no = [&](const char* why) {
    f.why_not = why;
    return f;
  };
  if (f.output.empty() || f.x.empty()) return no("not one input and one output");
  if (n.op_type() != "MatMul" && n.op_type() != "Gemm") return no("a Conv");
  if (n.input(1) != weight) return no("the weight is not the right operand");
  if (uses(g, weight) != 1) return no("the weight has other users");
  if (n.op_type() == "Gemm") {
    const auto* trans_a = attribute(n, "transA");
    if (trans_a != nullptr && trans_a->i() != 0) return no("Gemm with transA = 1");
    const auto* alpha = attribute(n, "alpha");
    const auto* beta = attribute(n, "beta");
    if (alpha != nullptr && alpha->f() != 1.0f) return no("Gemm with alpha != 1");
    if (n.input_size() > 2 && !n.input(2).empty()) {
      if (beta != nullptr && beta->f() != 1.0f) return no("Gemm with beta != 1");
      const pb::TensorProto* c = initializer(g, n.input(2));
      if (c == nullptr || c->data_type() != pb::TensorProto::FLOAT)
        return no("Gemm whose C is not a float initializer");
      const bool vector = c->dims_size() == 1 && c->dims(0) == rows;
      const bool row = c->dims_size() == 2 && c->dims(0) == 1 && c->dims(1) == rows;
      if (!vector && !row) return no("Gemm whose C is not one value per output");
      f.bias = c->name();
      f.bias_needs_reshape = row;
    }
  }
  return f;
}

}  // namespace qsl::onnx::detail
