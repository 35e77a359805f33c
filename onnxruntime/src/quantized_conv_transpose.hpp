#pragma once
// ai.qsl::QuantizedConvTranspose (since version 1): ONNX ConvTranspose (1-D and 2-D, NCHW, one
// group; strides, pads, dilations, output_padding) whose weight [C, M, k...] is a qsl weight
// code of W = the weight's transpose, (M x prod k) x C (row m prod k + t: output channel m,
// tap t), run as the product of every input pixel's C channels with those rows, then a scatter
// of each pixel's products onto the output (col2im). docs/onnxruntime.md specifies it.
//
//   inputs   X             float [N, C, (H,) W]
//            signs, coefficients, masks (optional): as QuantizedMatMul, with
//            out_features = M prod(kernel_shape) and in_features = C; bias [M] (optional)
//   output   Y             float [N, M, (OH,) OW], OH = sh (H - 1) + output_padding +
//            dh (kh - 1) + 1 - pads (both ends)
//   attributes  in_channels, out_channels, kernel_shape, group (1), strides, pads, dilations,
//            output_padding, auto_pad (NOTSET only), bits, basis, group_size, activation_bits
//            and the quantizer attributes, int8_min_rows, format_version (1)
#include "ort_api.hpp"

namespace qsl::ort {

OrtCustomOp* quantized_conv_transpose_op();

}  // namespace qsl::ort
