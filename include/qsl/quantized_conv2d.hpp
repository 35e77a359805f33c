#pragma once
// qsl::quantized_conv2d: a 2-D convolution (NCHW, stride, padding, dilation, groups = 1) whose
// weights [M, C, kh, kw] are a weight code of W = the weights reshaped to M x (C kh kw). It runs
// as im2col + quantized_dense: every output position is one input vector of C kh kw values,
// so the CPU kernels (look-up tables, or popcount with encoded activations) do the work.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qsl/config.hpp"
#include "qsl/quantized_dense.hpp"

namespace qsl {

struct conv2d_shape {
  std::int64_t in_channels = 0, out_channels = 0, kernel_h = 0, kernel_w = 0;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  std::int64_t dilation_h = 1, dilation_w = 1;

  std::int64_t patch() const { return in_channels * kernel_h * kernel_w; }
  /// Output height for an input height h (0 when the kernel does not fit).
  std::int64_t out_h(std::int64_t h) const {
    const std::int64_t span = dilation_h * (kernel_h - 1) + 1, padded = h + pad_top + pad_bottom;
    return padded < span ? 0 : (padded - span) / stride_h + 1;
  }
  std::int64_t out_w(std::int64_t w) const {
    const std::int64_t span = dilation_w * (kernel_w - 1) + 1, padded = w + pad_left + pad_right;
    return padded < span ? 0 : (padded - span) / stride_w + 1;
  }
};

/// An ONNX ConvTranspose's geometry in 2-D (a 1-D one is 1 x k), one group: input pixel
/// (iy, ix) adds W[c][m][ky][kx] x[c][iy][ix] at output (m, iy sh - pt + ky dh, ix sw - pl +
/// kx dw) where that lies inside the output.
struct conv_transpose2d_shape {
  std::int64_t in_channels = 0, out_channels = 0, kernel_h = 0, kernel_w = 0;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  std::int64_t dilation_h = 1, dilation_w = 1;
  std::int64_t output_pad_h = 0, output_pad_w = 0;  ///< ONNX's output_padding

  std::int64_t taps() const { return kernel_h * kernel_w; }
  /// The rows of its product over input pixels: one per tap and output channel.
  std::int64_t product_rows() const { return taps() * out_channels; }
  /// ONNX's output size for an input height h (< 1 when the pads take it all).
  std::int64_t out_h(std::int64_t h) const {
    return stride_h * (h - 1) + output_pad_h + dilation_h * (kernel_h - 1) + 1 - pad_top -
           pad_bottom;
  }
  std::int64_t out_w(std::int64_t w) const {
    return stride_w * (w - 1) + output_pad_w + dilation_w * (kernel_w - 1) + 1 - pad_left -
           pad_right;
  }
};

/// Throws qsl::error unless every size is >= 1 (pads >= 0).
inline void validate(const conv2d_shape& s, const char* what = "conv2d") {
  const std::string where = std::string(what) + ": ";
  detail::require(s.in_channels >= 1 && s.out_channels >= 1 && s.kernel_h >= 1 && s.kernel_w >= 1,
                  where + "channels and kernel sizes must be >= 1");
  detail::require(s.stride_h >= 1 && s.stride_w >= 1 && s.dilation_h >= 1 && s.dilation_w >= 1,
                  where + "strides and dilations must be >= 1");
  detail::require(s.pad_top >= 0 && s.pad_left >= 0 && s.pad_bottom >= 0 && s.pad_right >= 0,
                  where + "pads must be >= 0");
}

/// An ONNX Conv node's geometry (1 or 2 spatial dimensions) as its attributes give it.
struct onnx_conv_attributes {
  std::int64_t channels = 0, outputs = 0, groups = 1;
  std::vector<std::int64_t> kernel, strides, dilations;
  std::vector<std::int64_t> pads;  ///< begins, then ends
  std::string auto_pad = "NOTSET";  ///< NOTSET (pads), VALID, SAME_UPPER or SAME_LOWER
};

/// The 2-D shape of one group of `a` (channels / groups inputs and outputs) for an input of
/// h x w (a 1-D input is 1 x w), its pads resolved from auto_pad. Throws qsl::error unless the
/// attributes have 1 or 2 spatial dimensions of consistent sizes and `groups` divides both
/// channel counts.
QSL_API conv2d_shape group_shape(const onnx_conv_attributes& a, std::int64_t h, std::int64_t w);

/// Copies the receptive field of every output position of image `x` (C x H x W) into `patches`
/// ((OH OW) x (C kh kw), row-major; zeros where the field leaves the image).
QSL_API void im2col(const conv2d_shape& s, const float* x, std::int64_t h, std::int64_t w,
                    float* patches);

/// The same for output rows [first_row, last_row) only (0 <= first_row <= last_row <= OH): their
/// patches, at their places in `patches`, so that tasks can share one image.
QSL_API void im2col(const conv2d_shape& s, const float* x, std::int64_t h, std::int64_t w,
                    std::int64_t first_row, std::int64_t last_row, float* patches);

namespace detail {
/// Computes `out` (rows x M, row-major) from `patches` (rows x C kh kw, row-major).
using patch_gemm = std::function<void(const float* patches, std::int64_t rows, float* out)>;
/// A convolution as im2col + `gemm`: y (n x M x OH x OW) from x (n x C x h x w). Images go
/// through in chunks (bounded scratch memory, one large GEMM per chunk), with im2col and the
/// transposition to NCHW spread over the CPU threads; `gemm` runs outside the thread pool, so
/// it may use the pool itself. Throws qsl::error on bad sizes.
QSL_API void conv2d_by_gemm(const conv2d_shape& s, const float* x, std::int64_t n, std::int64_t h,
                            std::int64_t w, float* y, const patch_gemm& gemm, const char* what);

/// Images per chunk of conv2d_by_gemm for n images of `positions` outputs each: the same chunks
/// give the same rows per product, wherever the convolution runs.
QSL_API std::int64_t conv_images_per_chunk(const conv2d_shape& s, std::int64_t positions,
                                           std::int64_t n);

/// out[c * out_stride + r] = in[r * in_stride + c] for r < rows, c < cols (4 x 4 blocks in
/// registers): a GEMM's positions x M result into the image's M x positions.
QSL_API void transpose_floats(const float* in, std::int64_t in_stride, std::int64_t rows,
                              std::int64_t cols, float* out, std::int64_t out_stride);

/// 8-bit activations of a convolution without float patches (conv_int8.cpp). For image x
/// (C x h x w): each output position's patch grid as quantize_vectors_int8 gives it for the
/// im2col patch (scale = largest |value| / 127). Throws qsl::error naming the channel and pixel of
/// a NaN or infinite input.
QSL_API void conv_patch_scales(const conv2d_shape& s, const float* x, std::int64_t h,
                               std::int64_t w, float* scales);
/// Positions [first, first + count) of image x on their grids (`scales`: conv_patch_scales),
/// transposed: patch value p of position first + j at q_t[p * q_stride + j], the bytes
/// quantize_vectors_int8 gives the im2col patches.
QSL_API void im2col_int8_transposed(const conv2d_shape& s, const float* x, std::int64_t h,
                                    std::int64_t w, const float* scales, std::int64_t first,
                                    std::int64_t count, std::int8_t* q_t, std::int64_t q_stride);

/// Stride-1 convolutions without per-value bounds: over the zero-padded image (C x Hp x Wp), the
/// "extended" position e = oy Wp + ox (ox < Wp, e < conv_extended_positions) reads patch value
/// (c, ky, kx) at padded[c Hp Wp + e + ky dh Wp + kx dw], so one patch value of a run of
/// positions is one contiguous slice. Positions with ox >= OW are not outputs (their products
/// are computed and dropped); the others are im2col's. (OH - 1) Wp + OW of them, 0 when the
/// kernel does not fit.
QSL_API std::int64_t conv_extended_positions(const conv2d_shape& s, std::int64_t h, std::int64_t w);
/// The grid scales of the extended positions (conv_patch_scales' `scales` at the outputs, 0
/// elsewhere) and their inverses (0 for 0).
QSL_API void conv_extended_scales(const conv2d_shape& s, std::int64_t h, std::int64_t w,
                                  const float* scales, float* extended, float* inverse);
/// x (C x h x w) with the shape's pads around it, zeros there: C x Hp x Wp.
QSL_API void pad_image(const conv2d_shape& s, const float* x, std::int64_t h, std::int64_t w,
                       float* padded);
/// Extended positions [first, first + count) of a padded image on their grids (inverse[e]: the
/// inverse of position e's grid scale, 0 for the positions that are not outputs), transposed as
/// im2col_int8_transposed writes them. Stride 1 only; throws qsl::error otherwise.
QSL_API void im2col_int8_padded(const conv2d_shape& s, const float* padded, std::int64_t h,
                                std::int64_t w, const float* inverse, std::int64_t first,
                                std::int64_t count, std::int8_t* q_t, std::int64_t q_stride);

/// A transposed convolution as a GEMM over input pixels, then this scatter (conv_transpose.cpp).
/// Vector v is pixel v % (h w) = iy w + ix of image v / (h w); product row r = m taps + t
/// (output channel m, tap t = ky kw + kx), W's order. Adds product row r's value for vector v
/// at output (m, iy sh - pt + ky dh, ix sw - pl + kx dw) of image v / (h w) in y (the images'
/// outputs, out_channels x OH x OW each, already holding the bias) where that lies inside, for
/// the rows of output channels [m_begin, m_end) (tasks may split the channels: a channel's
/// outputs only receive its own rows).
/// Float products: row r's value for vector v at products[r * row_stride + v], v < vectors.
QSL_API void col2im_transposed(const conv_transpose2d_shape& s, const float* products,
                               std::int64_t row_stride, std::int64_t vectors, std::int64_t h,
                               std::int64_t w, std::int64_t m_begin, std::int64_t m_end, float* y);
/// 8-bit products, the float step fused in: rows [n0, n0 + count) with vectors [v0, v0 + len),
/// the int32 sum of row r and vector v at sums[(r - n0) * len + v - v0], adding
/// (float(sum) x_scales[v]) w_scales[r] (finish_int8_products' value) without a float copy of
/// the products.
QSL_API void col2im_transposed_int8(const conv_transpose2d_shape& s, const std::int32_t* sums,
                                    std::int64_t n0, std::int64_t count, std::int64_t v0,
                                    std::int64_t len, const float* x_scales, const float* w_scales,
                                    std::int64_t h, std::int64_t w, std::int64_t m_begin,
                                    std::int64_t m_end, float* y);
}  // namespace detail

class quantized_conv2d {
 public:
  quantized_conv2d() = default;
  /// A compressed dense layer of out_channels x (in_channels kh kw) and the shape around it.
  quantized_conv2d(quantized_dense layer, const conv2d_shape& shape)
      : layer_(std::move(layer)), shape_(shape) {
    validate(shape_, "quantized_conv2d");
    detail::require(layer_.out_features() == shape_.out_channels &&
                        layer_.in_features() == shape_.patch(),
                    "quantized_conv2d: the layer is " + std::to_string(layer_.out_features()) +
                        " x " + std::to_string(layer_.in_features()) + "; the shape needs " +
                        std::to_string(shape_.out_channels) + " x " +
                        std::to_string(shape_.patch()));
  }
  /// Compresses weights [M][C][kh][kw] (row-major) and an optional bias (M values or null).
  static quantized_conv2d compress(const float* weights, const conv2d_shape& shape,
                                   const float* bias, const quantized_dense_options& options = {}) {
    validate(shape, "quantized_conv2d::compress");
    detail::require(weights != nullptr, "quantized_conv2d::compress: weights is null");
    return {quantized_dense::compress(weights, shape.out_channels, shape.patch(), bias, options),
            shape};
  }

  const conv2d_shape& shape() const { return shape_; }
  const quantized_dense& layer() const { return layer_; }
  std::size_t bytes() const { return layer_.bytes(); }

  /// y (n x M x OH x OW) from x (n x C x h x w), both NCHW row-major.
  void forward(const float* x, std::int64_t n, std::int64_t h, std::int64_t w, float* y) const {
    detail::conv2d_by_gemm(
        shape_, x, n, h, w, y,
        [this](const float* patches, std::int64_t rows, float* out) {
          layer_.forward(patches, rows, out);
        },
        "quantized_conv2d::forward");
  }

 private:
  quantized_dense layer_;
  conv2d_shape shape_;
};

}  // namespace qsl
