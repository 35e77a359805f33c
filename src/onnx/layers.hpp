#pragma once
// Internal: finding the Gemm / MatMul / Conv layers of a graph and their constant weights,
// shared by compress (which rewrites them) and calibration (which watches their inputs).

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "onnx/proto.hpp"
#include "onnx/writer.hpp"

namespace qsl::onnx::detail {

/// The integer attribute `name` of `n`, or `fallback` when it has none.
std::int64_t int_attribute(const pb::NodeProto& n, const char* name, std::int64_t fallback);

/// The ints / string attribute `name` of `n`, or `fallback` when it has none.
std::vector<std::int64_t> ints_attribute(const pb::NodeProto& n, const char* name,
                                         std::vector<std::int64_t> fallback);
std::string string_attribute(const pb::NodeProto& n, const char* name, const char* fallback);

/// The node's name, or "OpType#index" for an unnamed node.
std::string node_label(const pb::NodeProto& n, int index);

/// Where a constant tensor lives: an initializer, or the `value` of a Constant node.
struct constant_ref {
  pb::TensorProto* tensor = nullptr;
  int initializer = -1;
  int constant_node = -1;
};

/// Every constant of the graph by name.
std::map<std::string, constant_ref> constants(pb::GraphProto& g);

/// A weight found in the graph and how the tensor relates to W (outputs x inputs).
struct candidate {
  int node = -1;
  std::string node_name, op_type, weight;
  weight_layout layout = weight_layout::as_is;
  std::vector<std::int64_t> shape;
  std::int64_t rows = 0, cols = 0;
  /// MatMul(W, X): the weight is the left operand, the input vectors are X's columns.
  bool weight_on_left = false;
};

/// The weight input of a Gemm / MatMul / Conv node `n` (the index-th of its graph), if it is a
/// constant W can be read from; `why` says why not otherwise.
bool find_weight(const pb::NodeProto& n, int index, const std::map<std::string, constant_ref>& c,
                 candidate& out, std::string& why);

}  // namespace qsl::onnx::detail
