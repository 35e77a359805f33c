#pragma once
// Internal: the glue operators of qsl::onnx::session on float tensors (NCHW where it matters).
// Each throws qsl::error naming `what` (the node) on shapes it cannot take.

#include <cstdint>
#include <string>
#include <vector>

#include "qsl/onnx_session.hpp"

namespace qsl::onnx::ops {

using dims = std::vector<std::int64_t>;

std::string shape_text(const dims& s);

enum class binary { add, sub, mul, div };
/// Numpy (multidirectional) broadcasting.
tensor elementwise(const tensor& a, const tensor& b, binary op, const std::string& what);

enum class unary { relu, sigmoid, tanh };
tensor apply(const tensor& x, unary op);

struct pool_attributes {
  dims kernel, strides, pads, dilations;  ///< 2-D: kernel/strides/dilations 2, pads 4 (t, l, b, r)
  bool ceil_mode = false, count_include_pad = false;
};
tensor max_pool(const tensor& x, const pool_attributes& a, const std::string& what);
tensor average_pool(const tensor& x, const pool_attributes& a, const std::string& what);
tensor global_average_pool(const tensor& x, const std::string& what);

tensor flatten(const tensor& x, std::int64_t axis, const std::string& what);
tensor reshape(const tensor& x, const dims& shape, const std::string& what);
tensor transpose(const tensor& x, const dims& perm, const std::string& what);
/// opset >= 13: along `axis`; before: over the flattened dims from `axis` on.
tensor softmax(const tensor& x, std::int64_t axis, std::int64_t opset, const std::string& what);
tensor batch_norm(const tensor& x, const tensor& scale, const tensor& bias, const tensor& mean,
                  const tensor& var, float epsilon, const std::string& what);
tensor concat(const std::vector<const tensor*>& parts, std::int64_t axis, const std::string& what);

}  // namespace qsl::onnx::ops
