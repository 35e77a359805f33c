#pragma once
// qsl::quantized_conv2d: a 2-D convolution (NCHW, stride, padding, dilation, groups = 1) whose
// weights [M, C, kh, kw] are a weight code of W = the weights reshaped to M x (C kh kw). It runs
// as im2col + quantized_dense: every output position is one input vector of C kh kw values,
// so the CPU kernels (look-up tables, or popcount with encoded activations) do the work.

#include <cstdint>
#include <string>
#include <vector>

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

/// Copies the receptive field of every output position of image `x` (C x H x W) into `patches`
/// ((OH OW) x (C kh kw), row-major; zeros where the field leaves the image).
inline void im2col(const conv2d_shape& s, const float* x, std::int64_t h, std::int64_t w,
                   float* patches) {
  const std::int64_t oh = s.out_h(h), ow = s.out_w(w);
  for (std::int64_t oy = 0; oy < oh; ++oy)
    for (std::int64_t ox = 0; ox < ow; ++ox) {
      float* row = patches + (oy * ow + ox) * s.patch();
      for (std::int64_t c = 0; c < s.in_channels; ++c)
        for (std::int64_t ky = 0; ky < s.kernel_h; ++ky) {
          const std::int64_t iy = oy * s.stride_h - s.pad_top + ky * s.dilation_h;
          for (std::int64_t kx = 0; kx < s.kernel_w; ++kx) {
            const std::int64_t ix = ox * s.stride_w - s.pad_left + kx * s.dilation_w;
            *row++ = iy >= 0 && iy < h && ix >= 0 && ix < w ? x[(c * h + iy) * w + ix] : 0.0f;
          }
        }
    }
}

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
    detail::require(n >= 0 && h >= 1 && w >= 1,
                    "quantized_conv2d::forward: input is " + std::to_string(n) + " x " +
                        std::to_string(shape_.in_channels) + " x " + std::to_string(h) + " x " +
                        std::to_string(w) + "; expected n >= 0 and h, w >= 1");
    detail::require(n == 0 || (x != nullptr && y != nullptr),
                    "quantized_conv2d::forward: x or y is null");
    const std::int64_t oh = shape_.out_h(h), ow = shape_.out_w(w), m = shape_.out_channels;
    detail::require(oh >= 1 && ow >= 1, "quantized_conv2d::forward: a " + std::to_string(h) +
                                            " x " + std::to_string(w) +
                                            " input is smaller than the kernel");
    std::vector<float> patches(static_cast<std::size_t>(oh * ow * shape_.patch()));
    std::vector<float> out(static_cast<std::size_t>(oh * ow * m));
    for (std::int64_t i = 0; i < n; ++i) {
      im2col(shape_, x + i * shape_.in_channels * h * w, h, w, patches.data());
      layer_.forward(patches.data(), oh * ow, out.data());  // (OH OW) x M
      float* yi = y + i * m * oh * ow;
      for (std::int64_t p = 0; p < oh * ow; ++p)
        for (std::int64_t c = 0; c < m; ++c) yi[c * oh * ow + p] = out[p * m + c];
    }
  }

 private:
  quantized_dense layer_;
  conv2d_shape shape_;
};

}  // namespace qsl
