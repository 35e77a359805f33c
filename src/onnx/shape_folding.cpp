// Exporters write shape arithmetic as nodes: Shape -> Gather -> Div -> Concat -> Resize, to
// interpolate a ViT's position embeddings to the image size, runs on every call although the
// image size is fixed by the model's input. ONNX Runtime folds a node into a constant only when
// all its inputs are constants, and a Shape of a tensor with a symbolic batch is not one, so the
// whole chain (a cubic Resize of 384 x 37 x 37 values, 15% of that ViT's time) stays per run.
// Making the reads of static dimensions constants lets the runtime fold the rest itself.
#include "onnx/shape_folding.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "onnx/conformance.hpp"
#include "onnx/layers.hpp"
#include "onnx/writer.hpp"

namespace qsl::onnx::detail {
namespace {

using dims = std::vector<std::int64_t>;

bool default_domain(const pb::NodeProto& n) {
  return n.domain().empty() || n.domain() == "ai.onnx";
}

// The dimensions a Shape node outputs (its start / end attributes, opset 15, applied), each -1
// where unknown; nullopt where the input's rank is unknown.
std::optional<dims> shape_output(const pb::NodeProto& shape,
                                 const std::map<std::string, dims>& shapes) {
  const auto it = shapes.find(shape.input(0));
  if (it == shapes.end()) return std::nullopt;
  const dims& all = it->second;
  const auto rank = static_cast<std::int64_t>(all.size());
  auto clamp = [&](std::int64_t v) {
    if (v < 0) v += rank;
    return std::clamp<std::int64_t>(v, 0, rank);
  };
  const std::int64_t start = clamp(int_attribute(shape, "start", 0));
  const std::int64_t end = clamp(int_attribute(shape, "end", rank));
  if (start >= end) return dims{};
  return dims(all.begin() + start, all.begin() + end);
}

bool all_static(const dims& d) {
  return std::all_of(d.begin(), d.end(), [](std::int64_t v) { return v > 0; });
}

// The values of the constant `name` (an INT32/INT64 initializer or Constant node), with its
// dims; nullopt where it is not one.
struct integer_constant {
  dims shape, values;
};
std::optional<integer_constant> integer_value(const std::map<std::string, constant_ref>& consts,
                                              const std::string& name) {
  const auto it = consts.find(name);
  if (it == consts.end()) return std::nullopt;
  const pb::TensorProto& t = *it->second.tensor;
  if (t.data_type() != pb::TensorProto::INT64 && t.data_type() != pb::TensorProto::INT32)
    return std::nullopt;
  return integer_constant{dims(t.dims().begin(), t.dims().end()), read_integers(t, name)};
}

// Gather(shape, indices) on axis 0: the selected dimensions in the indices' shape.
std::optional<integer_constant> gathered(const pb::NodeProto& n, const dims& from,
                                         const std::map<std::string, constant_ref>& consts) {
  const std::int64_t axis = int_attribute(n, "axis", 0);
  if (axis != 0 && axis != -1) return std::nullopt;
  auto indices = integer_value(consts, n.input(1));
  if (!indices || indices->shape.size() > 1) return std::nullopt;
  const auto size = static_cast<std::int64_t>(from.size());
  for (std::int64_t& i : indices->values) {
    if (i < -size || i >= size) return std::nullopt;  // ORT's error to report, at run time
    i = from[static_cast<std::size_t>(i < 0 ? i + size : i)];
  }
  if (!all_static(indices->values)) return std::nullopt;
  return indices;
}

// Slice(shape, starts, ends[, axes[, steps]]) (opset >= 10: inputs, not attributes).
std::optional<integer_constant> sliced(const pb::NodeProto& n, const dims& from,
                                       const std::map<std::string, constant_ref>& consts) {
  if (n.input_size() < 3) return std::nullopt;
  auto one = [&](int input, std::int64_t fallback) -> std::optional<std::int64_t> {
    if (input >= n.input_size() || n.input(input).empty()) return fallback;
    const auto v = integer_value(consts, n.input(input));
    if (!v || v->values.size() != 1) return std::nullopt;
    return v->values[0];
  };
  const auto start = one(1, 0), end = one(2, 0), axis = one(3, 0), step = one(4, 1);
  if (!start || !end || !axis || !step || (*axis != 0 && *axis != -1) || *step == 0)
    return std::nullopt;
  // ONNX's Slice rules for one axis of length n: negatives count from the end, then clamp.
  const auto size = static_cast<std::int64_t>(from.size());
  std::int64_t s = *start < 0 ? *start + size : *start;
  std::int64_t e = *end < 0 ? *end + size : *end;
  if (*step > 0) {
    s = std::clamp<std::int64_t>(s, 0, size);
    e = std::clamp<std::int64_t>(e, 0, size);
  } else {
    s = std::clamp<std::int64_t>(s, 0, size - 1);
    e = std::clamp<std::int64_t>(e, -1, size - 1);
  }
  integer_constant out;
  for (std::int64_t i = s; *step > 0 ? i < e : i > e; i += *step)
    out.values.push_back(from[static_cast<std::size_t>(i)]);
  out.shape = {static_cast<std::int64_t>(out.values.size())};
  if (!all_static(out.values)) return std::nullopt;
  return out;
}

pb::NodeProto constant_node(const pb::NodeProto& replaced, const integer_constant& c) {
  pb::NodeProto n;
  n.set_op_type("Constant");
  n.set_name(replaced.name());
  n.add_output(replaced.output(0));
  pb::AttributeProto& a = *n.add_attribute();
  a.set_name("value");
  a.set_type(pb::AttributeProto::TENSOR);
  *a.mutable_t() = make_int64_tensor(replaced.output(0), c.shape, c.values.data());
  return n;
}

}  // namespace

int fold_static_shape_reads(pb::ModelProto& m) {
  const std::map<std::string, dims> shapes =
      inferred_shapes(m, shape_evidence::inputs_and_initializers);
  pb::GraphProto& g = *m.mutable_graph();
  const auto consts = constants(g);
  std::map<std::string, int> shape_nodes;  // a Shape node's output -> its index
  for (int i = 0; i < g.node_size(); ++i) {
    const pb::NodeProto& n = g.node(i);
    if (default_domain(n) && n.op_type() == "Shape" && n.input_size() == 1 && n.output_size() == 1)
      shape_nodes[n.output(0)] = i;
  }
  std::map<int, pb::NodeProto> replacements;
  for (int i = 0; i < g.node_size(); ++i) {
    const pb::NodeProto& n = g.node(i);
    if (!default_domain(n) || n.output_size() != 1 || n.input_size() < 1) continue;
    if (n.op_type() == "Shape" && shape_nodes.count(n.output(0))) {
      const auto d = shape_output(n, shapes);
      if (d && all_static(*d))
        replacements[i] = constant_node(n, {{static_cast<std::int64_t>(d->size())}, *d});
      continue;
    }
    if (n.op_type() != "Gather" && n.op_type() != "Slice") continue;
    const auto source = shape_nodes.find(n.input(0));
    if (source == shape_nodes.end()) continue;
    const auto from = shape_output(g.node(source->second), shapes);
    if (!from) continue;
    const auto value =
        n.op_type() == "Gather" ? gathered(n, *from, consts) : sliced(n, *from, consts);
    if (value) replacements[i] = constant_node(n, *value);
  }
  std::set<std::string> read;  // what the replaced nodes read: indices, Shape outputs
  for (auto& [i, node] : replacements) {
    for (const auto& input : g.node(i).input()) read.insert(input);
    *g.mutable_node(i) = std::move(node);
  }
  // Shape nodes, and Constant nodes and initializers, that only the replaced nodes read (ORT
  // would warn about each unused initializer when it loads the file).
  // Decided on the whole graph before anything moves.
  auto unread = [&](const std::string& name) { return read.count(name) && uses(g, name) == 0; };
  std::vector<bool> dead(static_cast<std::size_t>(g.node_size()));
  for (int i = 0; i < g.node_size(); ++i) {
    const pb::NodeProto& n = g.node(i);
    dead[static_cast<std::size_t>(i)] =
        default_domain(n) && (n.op_type() == "Shape" || n.op_type() == "Constant") &&
        n.output_size() == 1 && unread(n.output(0));
  }
  std::vector<bool> dead_initializer(static_cast<std::size_t>(g.initializer_size()));
  for (int i = 0; i < g.initializer_size(); ++i)
    dead_initializer[static_cast<std::size_t>(i)] = unread(g.initializer(i).name());
  google::protobuf::RepeatedPtrField<pb::NodeProto> kept;
  for (int i = 0; i < g.node_size(); ++i)
    if (!dead[static_cast<std::size_t>(i)]) *kept.Add() = std::move(*g.mutable_node(i));
  g.mutable_node()->Swap(&kept);
  for (int i = g.initializer_size() - 1; i >= 0; --i) {
    const std::string name = g.initializer(i).name();
    if (!dead_initializer[static_cast<std::size_t>(i)]) continue;
    g.mutable_initializer()->DeleteSubrange(i, 1);
    for (int j = g.input_size() - 1; j >= 0; --j)  // IR < 4 lists initializers as inputs too
      if (g.input(j).name() == name) g.mutable_input()->DeleteSubrange(j, 1);
  }
  return static_cast<int>(replacements.size());
}

}  // namespace qsl::onnx::detail
