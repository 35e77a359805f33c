#pragma once
// Internal: static dimensions read at run time (Shape, Gather / Slice of a Shape) made constants,
// so that the runtime's constant folding does the shape arithmetic once, at load.

#include "onnx/proto.hpp"

namespace qsl::onnx::detail {

/// Rewrites, in the main graph of `m`, each Shape node, and each Gather or Slice (constant
/// indices) of a Shape node's output, whose selected dimensions ONNX's shape inference fixes
/// from the inputs' declared shapes and the initializers alone, into a Constant node of the
/// same output; Shape nodes left without a reader are removed. Returns the rewritten count.
/// A symbolic dimension is never folded. Subgraphs are left as they are.
int fold_static_shape_reads(pb::ModelProto& m);

}  // namespace qsl::onnx::detail
