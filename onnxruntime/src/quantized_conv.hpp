#pragma once
// ai.qsl::QuantizedConv (since version 1): ONNX Conv (1-D and 2-D, NCHW; strides, pads,
// auto_pad, dilations, group, depthwise included) whose weight [M, C / group, k...] is a qsl
// weight code of W = the weight reshaped to M x (C / group * prod k), on qsl's CPU kernels as
// im2col + the layer's product per group. docs/onnxruntime.md specifies it.
//
//   inputs   X             float [N, C, (H,) W]
//            signs, coefficients, masks (optional), bias [M] (optional): as QuantizedMatMul,
//            with out_features = M and in_features = C / group * prod(kernel_shape)
//   output   Y             float [N, M, (OH,) OW]
//   attributes  in_channels, out_channels, kernel_shape, group (1), strides, pads, dilations,
//            auto_pad (NOTSET, VALID, SAME_UPPER, SAME_LOWER), bits, basis, group_size,
//            activation_bits and the quantizer attributes, format_version (1)
#include "ort_api.hpp"

namespace qsl::ort {

OrtCustomOp* quantized_conv_op();

}  // namespace qsl::ort
