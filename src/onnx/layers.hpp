#pragma once
// Internal: finding the layers of a graph with constant weights (Gemm / MatMul / Conv
// products, Gather tables, LSTM / GRU / RNN weights), shared by compress (which rewrites them)
// and calibration (which watches their inputs).

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

/// FLOAT, DOUBLE, FLOAT16 or BFLOAT16: a weight qsl can compress.
bool floating_point(std::int32_t type);

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
  std::string output;  ///< the node's first output (found again after the graph changes)
  /// MatMul(W, X): the weight is the left operand, the input vectors are X's columns.
  bool weight_on_left = false;
  /// The node's input that holds the weight (Gather: 0; LSTM / GRU / RNN: 1 for W, 2 for R).
  int input = 1;
  /// A Gather table: W's rows are looked up by index, not multiplied.
  bool table() const { return op_type == "Gather"; }
  /// An LSTM / GRU / RNN weight, [directions, gates x hidden, inputs] as W.
  bool recurrent() const { return op_type == "LSTM" || op_type == "GRU" || op_type == "RNN"; }
  /// A ConvTranspose weight, [C, M / group, k...]: with one group read as W^T, W of M prod k
  /// rows (output channel, tap) of C inputs, the rows QuantizedConvTranspose multiplies each
  /// input pixel by; with groups, as W of C rows (one per input channel: the values each input
  /// value scatters to the output), decoded at load.
  bool transposed_conv() const { return op_type == "ConvTranspose"; }
  /// A weight qsl has no kernel for: decoded once, at load, for the runtime's own operator
  /// (a transposed convolution unless compress fuses it into a QuantizedConvTranspose).
  bool decoded_at_load() const { return recurrent() || transposed_conv(); }
};

/// How many weights a default-domain node may have qsl compresses: 1 for Gemm, MatMul, Conv,
/// ConvTranspose and Gather, 2 for LSTM / GRU / RNN (W and R), 0 for every other node.
int weight_slots(const pb::NodeProto& n);

/// Weight `slot` (0 ..< weight_slots) of node `n` (the index-th of its graph), if it is a
/// constant W can be read from; `why` says why not otherwise, and is empty when the input is
/// no weight at all (a Gather on a non-constant or non-float tensor, or of rank other than 2
/// or along another axis: shape arithmetic, not an embedding), which is not worth reporting.
bool find_weight(const pb::NodeProto& n, int index, const std::map<std::string, constant_ref>& c,
                 candidate& out, std::string& why, int slot = 0);

}  // namespace qsl::onnx::detail
