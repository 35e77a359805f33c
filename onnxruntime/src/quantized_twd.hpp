#pragma once
// ai.qsl::QuantizedTwd (since version 1): Y = X W^T + bias with W = C^T M, the shared ternary
// basis factorization (TWD, qsl/twd.hpp), as qsl::twd_dense runs it: z = M x on qsl's kernels
// (K basis vectors), then y = C^T z + bias. docs/onnxruntime.md specifies it.
//
//   inputs   X       float [..., in_features]
//            signs   uint8 [K, 1, ceil(in_features / 8)]   the basis' sign planes
//            masks   uint8, as signs                        its nonzero masks
//            mixing  float [K, out_features]                C
//            bias    float [out_features]                   optional
//   attributes  in_features, out_features, basis_vectors (K), activation_bits and the
//            quantizer attributes, format_version (1)
#include "ort_api.hpp"

namespace qsl::ort {

OrtCustomOp* quantized_twd_op();

}  // namespace qsl::ort
