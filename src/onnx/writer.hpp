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

/// How a compressed MatMul / Gemm node becomes one QuantizedMatMul node (fusion.cpp).
/// Gemm's other attributes around the fused node: Y = alpha (op(A) W^T) + beta C becomes
/// [Transpose A] -> QuantizedMatMul -> [Mul alpha] -> [Add (C, or Mul(C, beta))], unless C is a
/// per-output float initializer and alpha = beta = 1, which is the fused node's bias.
struct fused_layer {
  std::string output;  ///< the node's output, which the fused nodes keep
  std::string x;       ///< its activation input
  std::string bias;    ///< Gemm's C (a float initializer of one value per output), or empty
  bool bias_needs_reshape = false;  ///< C is [1, N]: the fused node gets a [N] copy
  bool transpose_x = false;         ///< Gemm transA = 1
  float alpha = 1.0f, beta = 1.0f;  ///< Gemm's scales
  std::string added;                ///< Gemm's C when it is added by a node (not a bias)
  /// MatMul(W, X): Y = W X, fused as Transpose(X) -> QuantizedMatMul -> Transpose, swapping
  /// X's last two dimensions (x_rank of them; compress fills it from shape inference).
  bool weight_left = false;
  int x_rank = 0;
  std::int64_t group = 1;           ///< a Conv's group attribute
  std::string why_not;              ///< non-empty: the layer is not fused, and why
};

/// How often `name` is read: node inputs (subgraphs included) and graph outputs.
int uses(const pb::GraphProto& g, const std::string& name);

/// Whether node `n`, whose right operand is the compressed `weight` (`rows` outputs), can be
/// fused: a MatMul, or a Gemm (any transA, alpha, beta; C any float tensor).
fused_layer plan_fusion(const pb::GraphProto& g, const pb::NodeProto& n, const std::string& weight,
                        std::int64_t rows);

/// Whether Conv node `n` with the compressed `weight` (`rows` output channels) can become a
/// QuantizedConv: a 1-D or 2-D float weight read by nothing else, a bias that is a float
/// initializer of one value per output channel (or none).
fused_layer plan_conv_fusion(const pb::GraphProto& g, const pb::NodeProto& n,
                             const std::string& weight, std::int64_t rows);

/// Every node that reads `weight`, fused (one QuantizedMatMul each, all on the same code
/// tensors: an unrolled LSTM's time steps); empty users and why_not set when one of them
/// cannot be, reads it in another layout than `layout`, or the weight is read elsewhere
/// (a subgraph, a graph output, another operand).
struct fusion_plan {
  std::vector<fused_layer> users;
  std::string why_not;
};
fusion_plan plan_fusions(const pb::GraphProto& g, const std::string& weight, std::int64_t rows,
                         weight_layout layout);

/// The index of the node whose single output is `output`; throws qsl::error when none is.
int node_producing(const pb::GraphProto& g, const std::string& output);

/// Why a fused reader cannot run as the runtime's int8 product (compress_options::native_int8),
/// or empty: the weight on the left, Gemm's transA, alpha != 1 or a C added by a node.
std::string int8_why_not(const fused_layer& f);

class graph_writer {
 public:
  graph_writer(pb::ModelProto& model, output_format format,
               coefficient_storage coefficients = coefficient_storage::float32);

  /// Removes the constant `weight` (initializer index, or Constant node index) and adds the
  /// tensors and nodes that rebuild it from `code`. Returns the bytes of the added tensors.
  /// `activations` (empty, or one quantizer per bit count 1..8) are stored as attributes of
  /// the qsl format's node; the standard format has no place for them.
  std::uint64_t replace(const std::string& weight, const std::vector<std::int64_t>& shape,
                        weight_layout layout, const weight_code& code, int initializer,
                        int constant_node,
                        const std::vector<activation_quantizer>& activations = {});
  /// qsl format: the standard format's decoding for this one layer (the runtime folds it into
  /// a constant), and a metadata entry (decoded_weight_key) saying where its code is, so that
  /// qsl reads the layer back. Returns the bytes of the added tensors.
  /// With `int8_users` (every reader of the weight, none with weight_left, transpose_x, alpha
  /// or an added C: int8_why_not), each reader's node becomes the runtime's int8 product on
  /// the decoded weight requantized per output (compress_options::native_int8; the entry
  /// names the first and last node of each, for the reader).
  std::uint64_t replace_standard(const std::string& weight, const std::vector<std::int64_t>& shape,
                                 weight_layout layout, const weight_code& code, int initializer,
                                 int constant_node,
                                 const std::vector<activation_quantizer>& activations = {},
                                 const std::vector<fused_layer>& int8_users = {});
  /// Removes the constant `weight` and turns each user's node (the one producing its output)
  /// into a QuantizedMatMul of `code` (docs/onnxruntime.md), all reading one set of code
  /// tensors, with activation mode `activation_bits` (and, when > 0 with float activations,
  /// `int8_min_rows` and `small_batch_bits`). Returns the bytes of the added tensors.
  std::uint64_t replace_fused(const std::string& weight, const std::vector<std::int64_t>& shape,
                              weight_layout layout, const weight_code& code, int initializer,
                              int constant_node, const std::vector<fused_layer>& users,
                              int activation_bits, std::int64_t int8_min_rows = 0,
                              int small_batch_bits = 0,
                              const std::vector<activation_quantizer>& activations = {});
  /// Removes the constant `weight` (a Conv's [M, C / group, k...]) and turns the Conv node
  /// producing `f.output` into a QuantizedConv of `code`, keeping its attributes.
  std::uint64_t replace_conv(const std::string& weight, const std::vector<std::int64_t>& shape,
                             const weight_code& code, int initializer, int constant_node,
                             const fused_layer& f, int activation_bits,
                             const std::vector<activation_quantizer>& activations = {},
                             std::int64_t int8_min_rows = 0);
  /// Removes the constant table `weight` ([rows, cols] floats) and turns the Gather node
  /// producing `output` (along axis 0) into a QuantizedGather of `code`: only the gathered
  /// rows are decoded, per call (docs/onnxruntime.md).
  std::uint64_t replace_gather(const std::string& weight, const weight_code& code,
                               int initializer, int constant_node, const std::string& output);
  /// The same for a TWD layer (qsl format only; the standard format throws qsl::error): a
  /// DecodeFactorized node feeding the original operator, or with `fused` (one reader, a plain
  /// product with at most a bias) its node turned into a QuantizedTwd.
  std::uint64_t replace_factorized(const std::string& weight,
                                   const std::vector<std::int64_t>& shape, weight_layout layout,
                                   const twd_code& code, int initializer, int constant_node,
                                   const std::vector<activation_quantizer>& activations = {},
                                   const fused_layer* fused = nullptr, int activation_bits = 0);
  /// Puts the new nodes before every other node (their inputs are all initializers) and adds
  /// the ai.qsl opset import when needed.
  void finish();

 private:
  /// Folds the bias Add after a QuantizedMatMul into the node's bias input (fusion.cpp).
  void absorb_bias_adds();
  struct code_tensors {
    std::string signs, masks, coefficients;  // masks: empty for binary codes
    std::uint64_t bytes = 0;
  };
  /// The code's tensors, named after `base`.
  code_tensors add_code_tensors(const std::string& base, const weight_code& code);
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
  /// int8 products (int8_products.cpp): the code decoded as W^T [K, N] divided by one scale per
  /// output and quantized to int8 (folded at load), then each user's node replaced in place by
  /// DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul (-> Add bias). Returns the
  /// products' first and last node names, comma-separated.
  std::pair<std::string, std::string> add_int8_products(const weight_code& code,
                                                        const std::string& signs,
                                                        const std::string& masks,
                                                        const std::string& coefficients,
                                                        const std::vector<fused_layer>& users);
  std::string unpack_bits(const std::string& packed, const weight_code& code, int channels,
                          weight_layout layout);
  std::string level_table(const weight_code& code, const std::string& coefficients, int first_plane,
                          int planes, weight_layout layout);
  /// `coefficients` as a float tensor for the standard operators: itself, or for a float16
  /// one the output of a Cast to float (one per tensor).
  std::string float_coefficients(const std::string& coefficients);

  pb::ModelProto& model_;
  output_format format_;
  coefficient_storage coefficients_;
  std::map<std::string, std::string> float_of_half_;  // float16 coefficients -> their Cast
  std::set<std::string> names_;
  std::vector<pb::NodeProto> nodes_;
  std::map<std::string, std::string> shared_;
  int decoded_weights_ = 0;  // metadata entries written by replace_standard
};

}  // namespace qsl::onnx::detail
