// Finding the Gemm / MatMul / Conv layers of a graph and their constant weights.
#include "onnx/layers.hpp"

#include <utility>

namespace qsl::onnx::detail {

std::int64_t int_attribute(const pb::NodeProto& n, const char* name, std::int64_t fallback) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.i();
  return fallback;
}

std::vector<std::int64_t> ints_attribute(const pb::NodeProto& n, const char* name,
                                         std::vector<std::int64_t> fallback) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return {a.ints().begin(), a.ints().end()};
  return fallback;
}

std::string string_attribute(const pb::NodeProto& n, const char* name, const char* fallback) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.s();
  return fallback;
}

std::map<std::string, constant_ref> constants(pb::GraphProto& g) {
  std::map<std::string, constant_ref> out;
  for (int i = 0; i < g.initializer_size(); ++i)
    out[g.initializer(i).name()] = {g.mutable_initializer(i), i, -1};
  for (int i = 0; i < g.node_size(); ++i) {
    pb::NodeProto& n = *g.mutable_node(i);
    if (n.op_type() != "Constant" || !n.domain().empty() || n.output_size() != 1) continue;
    for (auto& a : *n.mutable_attribute())
      if (a.name() == "value" && a.has_t()) out[n.output(0)] = {a.mutable_t(), -1, i};
  }
  return out;
}

std::string node_label(const pb::NodeProto& n, int index) {
  return n.name().empty() ? n.op_type() + "#" + std::to_string(index) : n.name();
}

bool floating_point(std::int32_t type) {
  return type == pb::TensorProto::FLOAT || type == pb::TensorProto::DOUBLE ||
         type == pb::TensorProto::FLOAT16 || type == pb::TensorProto::BFLOAT16;
}

int weight_slots(const pb::NodeProto& n) {
  if (!n.domain().empty() && n.domain() != "ai.onnx") return 0;
  const std::string& op = n.op_type();
  if (op == "Gemm" || op == "MatMul" || op == "Conv" || op == "ConvTranspose" || op == "Gather")
    return 1;
  return op == "LSTM" || op == "GRU" || op == "RNN" ? 2 : 0;
}

namespace {

// Gather(data, indices) along axis 0 of a constant float [V, H] table: W = the table.
bool find_table(const pb::NodeProto& n, const std::map<std::string, constant_ref>& c,
                candidate& out, std::string& why) {
  why.clear();
  if (n.input_size() != 2) return false;
  const auto it = c.find(n.input(0));
  if (it == c.end() || !floating_point(it->second.tensor->data_type()) ||
      it->second.tensor->dims_size() != 2)
    return false;
  const std::int64_t axis = int_attribute(n, "axis", 0);
  if (axis != 0 && axis != -2) return false;
  out.input = 0;
  out.weight = n.input(0);
  out.shape.assign(it->second.tensor->dims().begin(), it->second.tensor->dims().end());
  out.layout = weight_layout::as_is;
  out.rows = out.shape[0];
  out.cols = out.shape[1];
  return true;
}

// LSTM / GRU / RNN: W [directions, gates x hidden, inputs] (slot 0) or R [..., hidden]
// (slot 1), both read as W with directions x gates x hidden rows.
bool find_recurrent(const pb::NodeProto& n, const std::map<std::string, constant_ref>& c,
                    int slot, candidate& out, std::string& why) {
  out.input = 1 + slot;
  if (n.input_size() <= out.input || n.input(out.input).empty())
    return why = std::string(slot == 0 ? "no W" : "no R") + " input", false;
  out.weight = n.input(out.input);
  const auto it = c.find(out.weight);
  if (it == c.end()) return why = "the weight is not a constant", false;
  out.shape.assign(it->second.tensor->dims().begin(), it->second.tensor->dims().end());
  if (out.shape.size() != 3)
    return why = "a weight of rank " + std::to_string(out.shape.size()), false;
  out.layout = weight_layout::as_is;
  out.rows = out.shape[0] * out.shape[1];
  out.cols = out.shape[2];
  return true;
}

}  // namespace

bool find_weight(const pb::NodeProto& n, int index, const std::map<std::string, constant_ref>& c,
                 candidate& out, std::string& why, int slot) {
  out = {};
  out.node = index;
  out.node_name = node_label(n, index);
  out.op_type = n.op_type();
  if (n.output_size() > 0) out.output = n.output(0);
  if (out.table()) return find_table(n, c, out, why);
  if (out.recurrent()) return find_recurrent(n, c, slot, out, why);
  if (n.input_size() < 2) return why = "fewer than 2 inputs", false;
  out.weight = n.input(1);
  // MatMul(W, X) with a constant W [N, K]: Y = W X, the weight on the left as the model has it.
  const bool left = n.op_type() == "MatMul" && !c.count(n.input(1)) && c.count(n.input(0));
  if (left) out.weight = n.input(0);
  const auto it = c.find(out.weight);
  if (it == c.end()) return why = "the weight is not a constant", false;
  const pb::TensorProto& t = *it->second.tensor;
  out.shape.assign(t.dims().begin(), t.dims().end());
  if (n.op_type() == "Conv" || n.op_type() == "ConvTranspose") {
    if (out.shape.size() < 3) return why = "a " + n.op_type() + " weight of rank < 3", false;
    out.rows = out.shape[0];
    out.cols = 1;
    for (std::size_t i = 1; i < out.shape.size(); ++i) out.cols *= out.shape[i];
    out.layout = weight_layout::as_is;
    if (out.transposed_conv() && int_attribute(n, "group", 1) == 1) {
      // [C, M, k...] is W^T for W of one row per output channel and tap, C inputs each: the
      // rows QuantizedConvTranspose multiplies every input pixel by.
      std::swap(out.rows, out.cols);
      out.layout = weight_layout::transposed;
    }
    return true;
  }
  if (out.shape.size() != 2)
    return why = "a weight of rank " + std::to_string(out.shape.size()), false;
  if (left) {  // W itself: rows are the outputs
    out.weight_on_left = true;
    out.layout = weight_layout::as_is;
    out.rows = out.shape[0];
    out.cols = out.shape[1];
    return true;
  }
  const bool rows_first = n.op_type() == "Gemm" && int_attribute(n, "transB", 0) != 0;
  out.layout = rows_first ? weight_layout::as_is : weight_layout::transposed;
  out.rows = rows_first ? out.shape[0] : out.shape[1];
  out.cols = rows_first ? out.shape[1] : out.shape[0];
  return true;
}

}  // namespace qsl::onnx::detail
