#pragma once
// Internal: what ONNX itself says about a model, so that qsl accepts what ONNX Runtime accepts
// and no more (ORT runs the same strict shape inference when it loads a model), and converting
// a model's opset with ONNX's own version converter.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "onnx/proto.hpp"

namespace qsl::onnx::detail {

/// Runs ONNX's shape and type inference in strict mode (node-level errors throw, types are
/// checked) on a copy of `m` whose large tensors carry no data, so
/// that checking a model does not double its memory; `m` is not modified. Throws model_error
/// with ONNX's message, which names the node ("(op_type:Gemm, node name: fc1): ...").
/// `m` is modified meanwhile (its large tensors' data is swapped out and back): the caller must
/// own it alone.
void check_shapes(pb::ModelProto& m);
/// The same check run on `copy` itself, which it fills with inferred value_info: for a copy made
/// anyway.
void check_shapes_of_copy(pb::ModelProto& copy);

/// The shapes ONNX's shape inference finds for the main graph's values (inputs, outputs and
/// value_info), by name; a dimension it cannot fix (symbolic, like a batch "N") is -1. Best
/// effort (not strict, with data propagation): a value it cannot infer is absent. `m` is
/// untouched on return (as check_shapes).
/// `evidence` says what the inference may start from: the file's value_info and output shapes
/// too (an estimate, for choices that cost speed when wrong), or only the inputs' declared
/// shapes and the initializers (what the runtime enforces: for rewrites that must be exact).
enum class shape_evidence { everything, inputs_and_initializers };
std::map<std::string, std::vector<std::int64_t>> inferred_shapes(
    pb::ModelProto& m, shape_evidence evidence = shape_evidence::everything);

/// Converts the default-domain opset of `m` to `target` with ONNX's version converter (every
/// node of the default domain through its adapters). Throws model_error naming both opsets
/// and the converter's message when it cannot.
void convert_opset(pb::ModelProto& m, std::int64_t target);

}  // namespace qsl::onnx::detail
