#pragma once
// Internal: replacing a constant weight tensor by nodes that produce it from a weight code, in
// the qsl format (one ai.qsl DecodeWeights node) or the standard format (standard_decoder.cpp:
// BitShift, Mod, MatMulInteger, GatherElements, ...: opset >= 11, checked by ONNX 1.12).

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "onnx/proto.hpp"
#include "qsl/twd.hpp"

namespace qsl::onnx::detail {

/// How the ONNX tensor relates to W (outputs x inputs).
enum class weight_layout : std::uint8_t {
  as_is = 0,       ///< the tensor is W, possibly with more dims (Conv: [M, C, kh, kw])
  transposed = 1,  ///< the tensor is W^T (MatMul, Gemm with transB = 0)
};

/// Node attributes shared by both qsl-format operators.
void add_int_attribute(pb::NodeProto& n, const char* name, std::int64_t value);
/// transposed, shape and (when given) the activation quantizers.
void add_layer_attributes(pb::NodeProto& n, const std::vector<std::int64_t>& shape,
                          weight_layout layout,
                          const std::vector<activation_quantizer>& activations);

class graph_writer {
 public:
  graph_writer(pb::ModelProto& model, output_format format);

  /// Removes the constant `weight` (initializer index, or Constant node index) and adds the
  /// tensors and nodes that rebuild it from `code`. Returns the bytes of the added tensors.
  /// `activations` (empty, or one quantizer per bit count 1..8) are stored as attributes of
  /// the qsl format's node; the standard format has no place for them.
  std::uint64_t replace(const std::string& weight, const std::vector<std::int64_t>& shape,
                        weight_layout layout, const weight_code& code, int initializer,
                        int constant_node,
                        const std::vector<activation_quantizer>& activations = {});
  /// The same for a TWD layer (qsl format only: a DecodeFactorized node; the standard format
  /// throws qsl::error).
  std::uint64_t replace_factorized(const std::string& weight,
                                   const std::vector<std::int64_t>& shape, weight_layout layout,
                                   const twd_code& code, int initializer, int constant_node,
                                   const std::vector<activation_quantizer>& activations = {});
  /// Puts the new nodes before every other node (their inputs are all initializers) and adds
  /// the ai.qsl opset import when needed.
  void finish();

 private:
  void remove_constant(const std::string& weight, int initializer, int constant_node);
  std::string unique(const std::string& base);
  std::string add_tensor(pb::TensorProto t);
  std::string int64s(const std::string& base, const std::vector<std::int64_t>& values);
  pb::NodeProto& node(const std::string& op, std::vector<std::string> inputs, std::string output);
  /// A constant made once per model under `key` (the first call makes it).
  std::string shared(const std::string& key, const std::function<pb::TensorProto()>& make);
  /// The standard format's nodes (standard_decoder.cpp): `weight` from the plane tensors
  /// ([rows, k, ceil(cols / 8)] bytes) and the coefficients ([rows, groups, 1, k]).
  void decode_standard(const std::string& weight, const std::vector<std::int64_t>& shape,
                       weight_layout layout, const weight_code& code, const std::string& signs,
                       const std::string& masks, const std::string& coefficients);
  std::string unpack_bits(const std::string& packed, const weight_code& code, int channels,
                          weight_layout layout);
  std::string level_table(const weight_code& code, const std::string& coefficients, int first_plane,
                          int planes, weight_layout layout);

  pb::ModelProto& model_;
  output_format format_;
  std::set<std::string> names_;
  std::vector<pb::NodeProto> nodes_;
  std::map<std::string, std::string> shared_;
};

}  // namespace qsl::onnx::detail
