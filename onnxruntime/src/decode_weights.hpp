#pragma once
// ai.qsl::DecodeWeights and ai.qsl::DecodeFactorized in ONNX Runtime: the qsl format's layers
// that are not fused (convolutions, TWD layers, weights with other users) rebuild their weight
// tensor from its code, once, when the session is created; each run hands out that tensor.
// Attributes and inputs as qsl-compress writes them (docs/design.md, "The two output formats").
#include "ort_api.hpp"

namespace qsl::ort {

OrtCustomOp* decode_weights_op();
OrtCustomOp* decode_factorized_op();

}  // namespace qsl::ort
