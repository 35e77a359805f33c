#pragma once
// ai.qsl::QuantizedGather (since version 1): ONNX Gather along axis 0 of a table stored as a
// weight code (an embedding: rows = vocabulary, cols = width). Only the rows looked up are
// decoded, per call, into Y; the table never exists in fp32. docs/onnxruntime.md specifies it.
//
//   inputs   indices       int64 or int32, any shape; each in [-rows, rows - 1]
//            signs         uint8 [rows, bits, ceil(cols / 8)]
//            coefficients  float [rows, groups, 1, bits]
//            masks         uint8, as signs (ternary codes only)
//   output   Y             float, indices' shape + [cols]: row i of W_hat per index i
//   attributes  rows, cols, bits, basis, group_size, format_version (1), weight_name
#include "ort_api.hpp"

namespace qsl::ort {

OrtCustomOp* quantized_gather_op();

}  // namespace qsl::ort
