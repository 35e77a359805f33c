#pragma once
// ai.qsl::QuantizedMatMul (since version 1): Y = X W^T + bias, W a qsl weight code, on qsl's CPU
// kernels. docs/onnxruntime.md specifies it.
//
//   inputs   X             float [..., in_features] (any rank >= 1)
//            signs         uint8 [out_features, bits, ceil(in_features / 8)]  (qsl::plane_bytes)
//            coefficients  float [out_features, groups, 1, bits]
//            masks         uint8, as signs (ternary only; empty name otherwise)   optional
//            bias          float [out_features]                                  optional
//   output   Y             float [..., out_features]
//   attributes  in_features, out_features, bits, basis (0 binary, 1 ternary), group_size (0 or
//            >= in_features: one group per row),
//            activation_bits (0: float activations, default), activation_step and
//            activation_minimum (both or neither: the layer's calibrated quantizer; without them
//            each input vector is scaled by its own range), int8_min_rows (calls of that many
//            rows: 8-bit activations on an integer GEMM), small_batch_bits (fewer rows: each
//            vector encoded with that many bits where the CPU has byte tables), format_version (1)
//
// The weight inputs must be initializers: the kernel validates and packs them once, when the
// session is created.
#include "ort_api.hpp"

namespace qsl::ort {

/// The operator, to add to the ai.qsl domain; it lives as long as the library.
OrtCustomOp* quantized_matmul_op();

}  // namespace qsl::ort
