// Which compressed MatMul / Gemm layers become one ai.qsl::QuantizedMatMul node (the layer on
// qsl's kernels, in ONNX Runtime and in qsl-run) rather than a DecodeWeights node feeding the
// original operator.
#include <functional>
#include <string>
#include <vector>

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
  if (n.op_type() == "MatMul" && n.input(0) == weight && n.input(1) != weight) {
    f.weight_left = true;
    f.x = n.input(1);
    return f;
  }
  if (n.input(1) != weight || n.input(0) == weight)
    return no("the weight is not the right operand");
  if (n.op_type() == "Gemm") {
    const auto* trans_a = attribute(n, "transA");
    const auto* alpha = attribute(n, "alpha");
    const auto* beta = attribute(n, "beta");
    f.transpose_x = trans_a != nullptr && trans_a->i() != 0;
    f.alpha = alpha != nullptr ? alpha->f() : 1.0f;
    f.beta = beta != nullptr ? beta->f() : 1.0f;
    if (n.input_size() > 2 && !n.input(2).empty()) {
      const pb::TensorProto* c = initializer(g, n.input(2));
      const bool vector = c != nullptr && c->dims_size() == 1 && c->dims(0) == rows;
      const bool row = c != nullptr && c->dims_size() == 2 && c->dims(0) == 1 && c->dims(1) == rows;
      if (c != nullptr && c->data_type() == pb::TensorProto::FLOAT && (vector || row) &&
          f.alpha == 1.0f && f.beta == 1.0f) {
        f.bias = c->name();
        f.bias_needs_reshape = row;
      } else if (f.beta != 0.0f) {
        f.added = n.input(2);  // added after the product (Gemm broadcasts C to [M, N])
      }
    }
  }
  return f;
}

fused_layer plan_conv_fusion(const pb::GraphProto& g, const pb::NodeProto& n,
                             const std::string& weight, std::int64_t rows) {
  fused_layer f;
  f.output = n.output_size() == 1 ? n.output(0) : "";
  f.x = n.input_size() > 0 ? n.input(0) : "";
  auto no = [&](std::string why) {
    f.why_not = std::move(why);
    return f;
  };
  if (f.output.empty() || f.x.empty()) return no("not one input and one output");
  if (n.input_size() < 2 || n.input(1) != weight || n.input(0) == weight)
    return no("the weight is not the right operand");
  if (uses(g, weight) != 1) return no("the weight has other users");
  if (const auto* group = attribute(n, "group"); group != nullptr) f.group = group->i();
  const pb::TensorProto* w = initializer(g, weight);
  if (w != nullptr && w->data_type() != pb::TensorProto::FLOAT)
    return no("a " + type_name(w->data_type()) + " weight (qsl's convolutions are float)");
  if (w != nullptr && w->dims_size() != 3 && w->dims_size() != 4)
    return no("a " + std::to_string(w->dims_size() - 2) + "-D convolution");
  if (n.input_size() > 2 && !n.input(2).empty()) {
    const pb::TensorProto* b = initializer(g, n.input(2));
    if (b == nullptr || b->data_type() != pb::TensorProto::FLOAT || b->dims_size() != 1 ||
        b->dims(0) != rows)
      return no("a bias that is not a float initializer of one value per output");
    f.bias = b->name();
  }
  return f;
}

fusion_plan plan_fusions(const pb::GraphProto& g, const std::string& weight, std::int64_t rows,
                         weight_layout layout) {
  fusion_plan plan;
  const pb::TensorProto* w = initializer(g, weight);
  if (w != nullptr && w->data_type() != pb::TensorProto::FLOAT) {
    plan.why_not = "a " + type_name(w->data_type()) + " weight (QuantizedMatMul is float)";
    return plan;
  }
  int reads = 0;  // inputs of top-level nodes that name the weight
  for (const auto& n : g.node()) {
    int here = 0;
    for (const auto& i : n.input()) here += i == weight;
    if (here == 0) continue;
    reads += here;
    fused_layer f = plan_fusion(g, n, weight, rows);
    if (f.why_not.empty()) {
      const bool rows_first = n.op_type() == "Gemm" && [&] {
        const auto* t = attribute(n, "transB");
        return t != nullptr && t->i() != 0;
      }();
      const weight_layout read_as = f.weight_left || rows_first ? weight_layout::as_is
                                                                 : weight_layout::transposed;
      if (read_as != layout)
        f.why_not = "the weight's users read it transposed differently";
    }
    if (!f.why_not.empty()) {
      plan.why_not = f.why_not;
      plan.users.clear();
      return plan;
    }
    plan.users.push_back(f);
  }
  if (reads != uses(g, weight) || plan.users.empty()) {
    plan.users.clear();
    plan.why_not = "the weight has other users";
  }
  return plan;
}

namespace {

// Whether `name` is a graph input (an initializer of that name is only its default).
bool is_graph_input(const pb::GraphProto& g, const std::string& name) {
  for (const auto& i : g.input())
    if (i.name() == name) return true;
  return false;
}

// A float initializer of `count` values shaped [count] (rank 1) or [1, count] (rank 2): added
// to a product of rank >= 2 it broadcasts along the last axis without changing the shape.
const pb::TensorProto* bias_vector(const pb::GraphProto& g, const std::string& name,
                                   std::int64_t count) {
  if (is_graph_input(g, name)) return nullptr;
  const pb::TensorProto* t = initializer(g, name);
  if (t == nullptr || t->data_type() != pb::TensorProto::FLOAT) return nullptr;
  const bool vector = t->dims_size() == 1 && t->dims(0) == count;
  const bool row = t->dims_size() == 2 && t->dims(0) == 1 && t->dims(1) == count;
  return vector || row ? t : nullptr;
}

}  // namespace

// A MatMul followed by Add(bias) (a Linear layer as PyTorch exports it) becomes one
// QuantizedMatMul with the bias as its input: the product's output is then written once, not
// written, read and written again by the Add (71 of a ViT-S's 97 Adds, ~3% of its time).
// Only where the product feeds that Add alone; the result is the same float addition.
void graph_writer::absorb_bias_adds() {
  pb::GraphProto& g = *model_.mutable_graph();
  for (int i = 0; i < g.node_size(); ++i) {
    const pb::NodeProto& n = g.node(i);
    if (n.domain() != qsl_domain || n.op_type() != quantized_matmul_op) continue;
    if (n.input_size() > 4 || n.output_size() != 1) continue;  // has a bias already
    const auto* outputs = attribute(n, "out_features");
    if (outputs == nullptr || uses(g, n.output(0)) != 1) continue;
    int add = -1;
    for (int j = i + 1; j < g.node_size() && add < 0; ++j)
      for (const auto& in : g.node(j).input())
        if (in == n.output(0)) add = j;
    if (add < 0) continue;  // read by a subgraph or a graph output
    const pb::NodeProto& a = g.node(add);
    if (a.op_type() != "Add" || !a.domain().empty() || a.input_size() != 2 ||
        a.output_size() != 1 || a.input(0) == a.input(1))
      continue;
    const std::string other = a.input(0) == n.output(0) ? a.input(1) : a.input(0);
    const pb::TensorProto* b = bias_vector(g, other, outputs->i());
    if (b == nullptr) continue;
    std::string bias = b->name();
    if (b->dims_size() == 2) {  // [1, N]: a [N] copy, the original left to its other users
      pb::TensorProto copy = *b;
      copy.set_name(bias + "_qsl_bias");
      copy.clear_dims();
      copy.add_dims(outputs->i());
      bias = add_tensor(std::move(copy));
    }
    const std::string output = a.output(0);
    pb::NodeProto& fused = *g.mutable_node(i);
    while (fused.input_size() < 4) fused.add_input("");  // masks: none for a binary code
    fused.add_input(bias);
    fused.set_output(0, output);
    g.mutable_node()->DeleteSubrange(add, 1);
    if (bias != other && uses(g, other) == 0)
      for (int t = 0; t < g.initializer_size(); ++t)
        if (g.initializer(t).name() == other) {
          g.mutable_initializer()->DeleteSubrange(t, 1);
          break;
        }
  }
}

}  // namespace qsl::onnx::detail
