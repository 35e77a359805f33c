#include "conv_products.hpp"

#include <algorithm>
#include <utility>
#include <vector>

#include "cpu/thread_pool.hpp"

namespace qsl::ort {

conv_int8_operand conv_operand_int8(const conv2d_shape& s, const float* x, std::int64_t images,
                                    std::int64_t h, std::int64_t w) {
  const std::int64_t positions = s.out_h(h) * s.out_w(w), rows = images * positions;
  const std::int64_t k = s.patch(), image = s.in_channels * h * w;
  auto& pool = qsl::detail::cpu::thread_pool::instance();
  // Stride 1: "extended" positions over the padded image (qsl/quantized_conv2d.hpp), one
  // contiguous slice per patch value; else the output positions themselves.
  const bool extended = s.stride_h == 1 && s.stride_w == 1;
  const std::int64_t per_image =
      extended ? qsl::detail::conv_extended_positions(s, h, w) : positions;
  const std::int64_t vectors = images * per_image;
  const std::int64_t hp = h + s.pad_top + s.pad_bottom, wp = w + s.pad_left + s.pad_right;
  const std::int64_t padded_size = extended ? s.in_channels * hp * wp : 0;
  conv_int8_operand operand;
  operand.vectors = vectors;
  operand.layout = {per_image, extended ? wp : s.out_w(w)};
  auto& xt = operand.xt;
  auto& x_scales = operand.x_scales;
  xt.resize(static_cast<std::size_t>(vectors * k));
  x_scales.resize(static_cast<std::size_t>(vectors));
  std::vector<float> scales, inverse;
  qsl::detail::scratch<float> padded(static_cast<std::size_t>(images * padded_size));
  if (extended) {
    scales.resize(static_cast<std::size_t>(rows));
    inverse.resize(static_cast<std::size_t>(vectors));
  }
  pool.run(images, [&](std::int64_t i) {
    const float* xi = x + i * image;
    if (!extended) {
      qsl::detail::conv_patch_scales(s, xi, h, w, x_scales.data() + i * positions);
      return;
    }
    qsl::detail::conv_patch_scales(s, xi, h, w, scales.data() + i * positions);
    qsl::detail::conv_extended_scales(s, h, w, scales.data() + i * positions,
                                      x_scales.data() + i * per_image,
                                      inverse.data() + i * per_image);
    qsl::detail::pad_image(s, xi, h, w, padded.data() + i * padded_size);
  });
  // Pieces of at most 128 vectors, each within one image and one chunk of the GEMM's operand.
  constexpr std::int64_t piece = 128;
  const std::int64_t chunk = int8_gemm::chunk_vectors;
  std::vector<std::pair<std::int64_t, std::int64_t>> pieces;  // first vector, count
  for (std::int64_t v = 0; v < vectors;) {
    const std::int64_t end =
        std::min({v + piece, (v / per_image + 1) * per_image, (v / chunk + 1) * chunk});
    pieces.emplace_back(v, end - v);
    v = end;
  }
  pool.run(static_cast<std::int64_t>(pieces.size()), [&](std::int64_t t) {
    const auto [v, count] = pieces[static_cast<std::size_t>(t)];
    const std::int64_t i = v / per_image, v0 = v / chunk * chunk;
    std::int8_t* q_t = xt.data() + v0 * k + (v - v0);
    const std::int64_t len = std::min(chunk, vectors - v0);
    if (extended)
      qsl::detail::im2col_int8_padded(s, padded.data() + i * padded_size, h, w,
                                      inverse.data() + i * per_image, v % per_image, count, q_t,
                                      len);
    else
      qsl::detail::im2col_int8_transposed(s, x + i * image, h, w, x_scales.data() + i * positions,
                                          v % positions, count, q_t, len);
  });
  return operand;
}

conv_products_layout conv_products_int8(const OrtKernelContext* context, const int8_gemm& gemm,
                                        const cpu_weights& wt, const float* w_scales,
                                        const conv2d_shape& s, const float* x, std::int64_t images,
                                        std::int64_t h, std::int64_t w, const float* bias,
                                        qsl::detail::scratch<float>& out) {
  const conv_int8_operand operand = conv_operand_int8(s, x, images, h, w);
  out.resize(static_cast<std::size_t>(operand.vectors * wt.rows));
  gemm.run_transposed(context, wt, w_scales, operand.xt.data(), operand.x_scales.data(),
                      operand.vectors, bias, out.data());
  return operand.layout;
}

}  // namespace qsl::ort
