#pragma once
// The 8-bit products of a convolution's patches, quantized straight from the images into ORT's
// integer GEMM operand (never as float patches): QuantizedConv's product step, and with a 1 x 1
// kernel QuantizedConvTranspose's product over input pixels.
#include <cstdint>
#include <vector>

#include "ort_api.hpp"
#include "ort_gemm.hpp"
#include "qsl/cpu.hpp"
#include "qsl/quantized_conv2d.hpp"
#include "scratch.hpp"

namespace qsl::ort {

/// Where conv_products_int8 put the products of image i: position e (an output position, or an
/// "extended" one over the padded width at stride 1, qsl/quantized_conv2d.hpp) and row r at
/// out[(i * per_image + e) * w.rows + r]; output row oy starts at position oy * row_stride.
struct conv_products_layout {
  std::int64_t per_image = 0, row_stride = 0;
};

/// The patches of `images` images x (C x h x w each, one group) on their int8 grids, as
/// int8_gemm::run_transposed takes them: `vectors` of them (positions as conv_products_layout
/// says), in chunks of int8_gemm::chunk_vectors, with their scales.
struct conv_int8_operand {
  qsl::detail::scratch<std::int8_t> xt;
  std::vector<float> x_scales;
  std::int64_t vectors = 0;
  conv_products_layout layout;
};
conv_int8_operand conv_operand_int8(const conv2d_shape& s, const float* x, std::int64_t images,
                                    std::int64_t h, std::int64_t width);

/// The products of `images` images x (C x h x w each, one group) with the rows of `w` (patch
/// order: channel, ky, kx) on `gemm`, `w_scales` the rows' int8 grids, plus `bias` (may be
/// null) into `out` (resized). gemm.takes() must hold for images x the output positions.
conv_products_layout conv_products_int8(const OrtKernelContext* context, const int8_gemm& gemm,
                                        const cpu_weights& w, const float* w_scales,
                                        const conv2d_shape& s, const float* x, std::int64_t images,
                                        std::int64_t h, std::int64_t width, const float* bias,
                                        qsl::detail::scratch<float>& out);

}  // namespace qsl::ort
