// ONNX's strict shape inference and its version converter, run the way qsl needs them: on
// models whose weights may be hundreds of megabytes, with errors as model_error.
#include "onnx/conformance.hpp"

#include <onnx/defs/schema.h>
#include <onnx/shape_inference/implementation.h>
#include <onnx/version_converter/convert.h>

#include <string>
#include <utility>
#include <vector>

namespace qsl::onnx::detail {
namespace {

// Tensors with at least this many bytes of data lend the inference copy only their type and
// dims. Shape inference reads the values of shape-like inputs (Reshape's shape, Slice's starts,
// ...): int64 vectors far below this size.
constexpr std::size_t large_tensor_bytes = 4096;

std::size_t data_bytes(const pb::TensorProto& t) {
  return t.raw_data().size() + 4 * static_cast<std::size_t>(t.float_data_size()) +
         4 * static_cast<std::size_t>(t.int32_data_size()) +
         8 * static_cast<std::size_t>(t.int64_data_size()) +
         8 * static_cast<std::size_t>(t.double_data_size()) +
         8 * static_cast<std::size_t>(t.uint64_data_size());
}

// Moves the data of every large tensor of a model (initializers and node attributes, subgraphs
// included) aside, and back when it goes out of scope; swaps, so no data is copied.
class data_set_aside {
 public:
  explicit data_set_aside(pb::ModelProto& m) { visit(*m.mutable_graph()); }
  ~data_set_aside() {
    for (auto& [tensor, data] : moved_) swap_data(*tensor, data);
  }
  data_set_aside(const data_set_aside&) = delete;
  data_set_aside& operator=(const data_set_aside&) = delete;

 private:
  static void swap_data(pb::TensorProto& a, pb::TensorProto& b) {
    a.mutable_raw_data()->swap(*b.mutable_raw_data());
    a.mutable_float_data()->Swap(b.mutable_float_data());
    a.mutable_int32_data()->Swap(b.mutable_int32_data());
    a.mutable_int64_data()->Swap(b.mutable_int64_data());
    a.mutable_double_data()->Swap(b.mutable_double_data());
    a.mutable_uint64_data()->Swap(b.mutable_uint64_data());
  }
  void take(pb::TensorProto& t) {
    if (data_bytes(t) < large_tensor_bytes) return;
    moved_.emplace_back(&t, pb::TensorProto());
    swap_data(t, moved_.back().second);
  }
  void visit(pb::GraphProto& g) {
    for (auto& t : *g.mutable_initializer()) take(t);
    for (auto& n : *g.mutable_node())
      for (auto& a : *n.mutable_attribute()) {
        if (a.has_t()) take(*a.mutable_t());
        for (auto& t : *a.mutable_tensors()) take(t);
        if (a.has_g()) visit(*a.mutable_g());
        for (auto& sub : *a.mutable_graphs()) visit(sub);
      }
  }

  std::vector<std::pair<pb::TensorProto*, pb::TensorProto>> moved_;
};

// The opset of the default domain (0 when the model imports none).
std::int64_t default_opset(const pb::ModelProto& m) {
  for (const auto& o : m.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") return o.version();
  return 0;
}

}  // namespace

void check_shapes(pb::ModelProto& m) {
  pb::ModelProto copy;
  {
    const data_set_aside aside(m);
    copy = m;
  }
  check_shapes_of_copy(copy);
}

void check_shapes_of_copy(pb::ModelProto& copy) {
  // Types checked, strict (node-level errors throw). No data propagation: it infers more shapes
  // from computed shape tensors, and a mistake of libonnx 1.12's there would refuse a model
  // ONNX Runtime runs; a missed error is still ORT's to report.
  const ::onnx::ShapeInferenceOptions options(true, 1, false);
  try {
    ::onnx::shape_inference::InferShapes(copy, ::onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    throw model_error(std::string("ONNX shape inference: ") + e.what());
  }
}

std::map<std::string, std::vector<std::int64_t>> inferred_shapes(pb::ModelProto& m,
                                                                 shape_evidence evidence) {
  pb::ModelProto copy;
  {
    const data_set_aside aside(m);
    copy = m;
  }
  if (evidence == shape_evidence::inputs_and_initializers) {
    // A file's value_info and output shapes are what the exporter saw; ORT only warns when a
    // run disagrees with them. The inputs' declared dimensions it enforces.
    copy.mutable_graph()->clear_value_info();
    for (auto& o : *copy.mutable_graph()->mutable_output())
      if (o.type().has_tensor_type()) o.mutable_type()->mutable_tensor_type()->clear_shape();
  }
  std::map<std::string, std::vector<std::int64_t>> shapes;
  try {
    // Not strict, and with data propagation (shapes computed by Shape -> Gather -> Concat ->
    // Reshape, as exporters write them): an estimate, where a mistake costs speed, not a refusal.
    const ::onnx::ShapeInferenceOptions options(false, 0, true);
    ::onnx::shape_inference::InferShapes(copy, ::onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception&) {
    return shapes;  // what was inferred before the error is not kept: best effort
  }
  auto add = [&](const pb::ValueInfoProto& v) {
    if (!v.type().has_tensor_type() || !v.type().tensor_type().has_shape()) return;
    std::vector<std::int64_t> dims;
    for (const auto& d : v.type().tensor_type().shape().dim())
      dims.push_back(d.has_dim_value() && d.dim_value() > 0 ? d.dim_value() : -1);
    shapes[v.name()] = std::move(dims);
  };
  const pb::GraphProto& g = copy.graph();
  for (const auto& v : g.input()) add(v);
  for (const auto& v : g.value_info()) add(v);
  for (const auto& v : g.output()) add(v);
  return shapes;
}

void convert_opset(pb::ModelProto& m, std::int64_t target) {
  const std::int64_t from = default_opset(m);
  const std::string what = "converting the default-domain opset " + std::to_string(from) +
                           " to " + std::to_string(target) + " (ONNX's version converter): ";
  pb::ModelProto converted;
  try {
    converted = ::onnx::version_conversion::ConvertVersion(m, static_cast<int>(target));
  } catch (const std::exception& e) {
    throw model_error(what + e.what());
  }
  if (default_opset(converted) != target)
    throw model_error(what + "the converted model imports opset " +
                      std::to_string(default_opset(converted)));
  // What the converter does not carry over.
  converted.mutable_metadata_props()->CopyFrom(m.metadata_props());
  if (converted.doc_string().empty()) converted.set_doc_string(m.doc_string());
  m = std::move(converted);
}

}  // namespace qsl::onnx::detail
