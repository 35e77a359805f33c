#include "quantized_conv_transpose.hpp"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "conv_products.hpp"
#include "cpu/thread_pool.hpp"
#include "kernel_support.hpp"
#include "layer_inputs.hpp"
#include "ort_gemm.hpp"
#include "qsl/cpu.hpp"
#include "qsl/error.hpp"
#include "qsl/quantized_conv2d.hpp"
#include "scratch.hpp"

namespace qsl::ort {

namespace {

std::string str(std::int64_t v) { return std::to_string(v); }


// Images per chunk: about 4 Mi products (pixels x rows), at least one image. The float path
// holds that many floats twice; the 8-bit path holds the chunk's pixels as bytes only.
constexpr std::int64_t products_per_chunk = std::int64_t{1} << 22;

}  // namespace

struct quantized_conv_transpose_kernel {
  std::string what;
  std::size_t dims = 2;  // spatial dimensions: 1-D runs as 1 x W
  conv_transpose2d_shape shape;
  cpu_weights packed;  // W's rows in the file's order: m taps + t
  std::vector<float> bias;
  activation_quantizer activations;
  decoded_gemm large_batches;
  std::unique_ptr<int8_gemm> int8_rows;  // null without int8_min_rows
  cpu_int8_grids int8_grids;             // made by the first 8-bit call, on the session's threads

  explicit quantized_conv_transpose_kernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) const;
  // Adds the products of `images` images' pixels (C x h x w each) with the rows to their
  // outputs y (already holding the bias).
  void scatter_products(OrtKernelContext* context, const float* x, std::int64_t images,
                        std::int64_t h, std::int64_t w, float* y) const;
};

quantized_conv_transpose_kernel::quantized_conv_transpose_kernel(const OrtKernelInfo* info)
    : large_batches(info) {
  const node_reader node(info, "QuantizedConvTranspose");
  what = node.what();
  check_format_version(node);
  activations = read_activation_mode(node);
  const std::int64_t channels = node.int_attribute("in_channels");
  const std::int64_t outputs = node.int_attribute("out_channels");
  const std::int64_t groups = node.int_attribute("group", 1);
  detail::require(groups == 1, "group is " + str(groups) + "; QuantizedConvTranspose takes 1");
  detail::require(
      channels >= 1 && outputs >= 1 && channels <= (std::int64_t{1} << 24) &&
          outputs <= (std::int64_t{1} << 24),
      "in_channels " + str(channels) + " and out_channels " + str(outputs) + "; expected 1..2^24");
  const std::vector<std::int64_t> kernel = node.ints_attribute("kernel_shape");
  dims = kernel.size();
  detail::require(dims == 1 || dims == 2,
                  "kernel_shape is " + ints_text(kernel) + "; expected 1 or 2 spatial dimensions");
  for (std::int64_t k : kernel)
    detail::require(k >= 1 && k <= 64,
                    "kernel_shape is " + ints_text(kernel) + "; expected sizes 1..64");
  const auto strides = node.ints_attribute("strides", std::vector<std::int64_t>(dims, 1));
  const auto dilations = node.ints_attribute("dilations", std::vector<std::int64_t>(dims, 1));
  const auto pads = node.ints_attribute("pads", std::vector<std::int64_t>(2 * dims, 0));
  const auto output_padding =
      node.ints_attribute("output_padding", std::vector<std::int64_t>(dims, 0));
  const std::string auto_pad = node.string_attribute("auto_pad", "NOTSET");
  detail::require(
      auto_pad == "NOTSET",
      "auto_pad is '" + auto_pad + "'; QuantizedConvTranspose takes NOTSET (explicit pads)");
  detail::require(strides.size() == dims && dilations.size() == dims && pads.size() == 2 * dims &&
                      output_padding.size() == dims,
                  "strides " + ints_text(strides) + ", dilations " + ints_text(dilations) + ", pads " +
                      ints_text(pads) + ", output_padding " + ints_text(output_padding) +
                      " do not match kernel_shape " + ints_text(kernel));
  for (std::size_t d = 0; d < dims; ++d) {
    detail::require(strides[d] >= 1 && dilations[d] >= 1 && strides[d] <= (1 << 16) &&
                        dilations[d] <= (1 << 16),
                    "strides " + ints_text(strides) + " and dilations " + ints_text(dilations) +
                        "; expected values 1..65536");
    detail::require(output_padding[d] >= 0 &&
                        (output_padding[d] < strides[d] || output_padding[d] < dilations[d]),
                    "output_padding " + ints_text(output_padding) +
                        "; expected values >= 0 below the stride or the dilation");
  }
  for (std::int64_t p : pads)
    detail::require(p >= 0 && p <= (std::int64_t{1} << 24),
                    "pads " + ints_text(pads) + "; expected values 0..2^24");
  const bool two = dims == 2;
  shape.in_channels = channels;
  shape.out_channels = outputs;
  shape.kernel_h = two ? kernel[0] : 1;
  shape.kernel_w = kernel.back();
  shape.stride_h = two ? strides[0] : 1;
  shape.stride_w = strides.back();
  shape.dilation_h = two ? dilations[0] : 1;
  shape.dilation_w = dilations.back();
  shape.pad_top = two ? pads[0] : 0;
  shape.pad_left = pads[dims - 1];
  shape.pad_bottom = two ? pads[2] : 0;
  shape.pad_right = pads[2 * dims - 1];
  shape.output_pad_h = two ? output_padding[0] : 0;
  shape.output_pad_w = output_padding.back();
  const std::int64_t taps = shape.taps();
  code_inputs inputs(node, outputs * taps, channels);
  inputs.read();
  packed = pack_for_cpu(inputs.code);
  if (activations.bits >= cpu_byte_tables_min_bits()) add_encoded_layout(packed);
  bias = read_bias(node, 4, outputs);
  if (const std::int64_t rows = read_int8_min_rows(node, channels); rows > 0)
    int8_rows = std::make_unique<int8_gemm>(info, rows);
}

void quantized_conv_transpose_kernel::scatter_products(OrtKernelContext* context, const float* x,
                                                       std::int64_t images, std::int64_t h,
                                                       std::int64_t w, float* y) const {
  auto& pool = qsl::detail::cpu::thread_pool::instance();
  const std::int64_t pixels = h * w, vectors = images * pixels, c = shape.in_channels;
  const std::int64_t m = shape.out_channels, taps = shape.taps();
  constexpr std::int64_t channels_per_task = 4;
  // Tasks of whole channels: a channel's outputs only receive its own rows.
  auto by_channels = [&](std::int64_t r0, std::int64_t r1, auto&& scatter) {
    const std::int64_t m0 = r0 / taps, m1 = (r1 + taps - 1) / taps;
    pool.run((m1 - m0 + channels_per_task - 1) / channels_per_task, [&](std::int64_t t) {
      const std::int64_t first = m0 + t * channels_per_task;
      scatter(first, std::min(m1, first + channels_per_task));
    });
  };
  if (int8_rows && int8_rows->takes(vectors) && int8_gemm::direct()) {
    // Each pixel's channels are a 1 x 1 convolution's patch: quantized straight from NCHW; the
    // integer sums are finished as they are scattered, a block of rows and chunk at a time.
    conv2d_shape pixel;
    pixel.in_channels = c;
    pixel.out_channels = packed.rows;
    pixel.kernel_h = pixel.kernel_w = 1;
    const conv_int8_operand operand = conv_operand_int8(pixel, x, images, h, w);
    const float* scales = int8_grids.scales(packed).data();
    int8_rows->run_transposed_sums(
        context, packed, scales, operand.xt.data(), vectors,
        [&](std::int64_t n0, std::int64_t count, std::int64_t v0, std::int64_t len,
            const std::int32_t* sums) {
          by_channels(n0, n0 + count, [&](std::int64_t mb, std::int64_t me) {
            qsl::detail::col2im_transposed_int8(shape, sums, n0, count, v0, len,
                                                operand.x_scales.data(), scales, h, w, mb, me, y);
          });
        });
    return;
  }
  // Elsewhere (float activations, AVX2 without VNNI): the pixels as vectors through qsl's
  // product, [vector][row], transposed to rows over the vectors for the scatter.
  qsl::detail::scratch<float> vectors_by_pixel(static_cast<std::size_t>(vectors * c));
  pool.run(images, [&](std::int64_t i) {
    qsl::detail::transpose_floats(x + i * c * pixels, pixels, c, pixels,
                                  vectors_by_pixel.data() + i * pixels * c, c);
  });
  qsl::detail::scratch<float> by_vector(static_cast<std::size_t>(vectors * packed.rows));
  const bool int8 = int8_rows && int8_rows->takes(vectors);
  multiply(context, large_batches, packed, activations, vectors_by_pixel.data(), vectors, nullptr,
           by_vector.data(), int8_rows.get(), int8 ? int8_grids.scales(packed).data() : nullptr);
  qsl::detail::scratch<float> by_row(by_vector.size());
  constexpr std::int64_t rows_per_task = 64;
  pool.run((packed.rows + rows_per_task - 1) / rows_per_task, [&](std::int64_t t) {
    const std::int64_t r0 = t * rows_per_task;
    qsl::detail::transpose_floats(by_vector.data() + r0, packed.rows, vectors,
                                  std::min(rows_per_task, packed.rows - r0),
                                  by_row.data() + r0 * vectors, vectors);
  });
  by_channels(0, m * taps, [&](std::int64_t mb, std::int64_t me) {
    qsl::detail::col2im_transposed(shape, by_row.data(), vectors, vectors, h, w, mb, me, y);
  });
}

OrtStatusPtr quantized_conv_transpose_kernel::ComputeV2(OrtKernelContext* context) const {
  return guarded(what, [&] {
    Ort::KernelContext ctx(context);
    const Ort::ConstValue x = ctx.GetInput(0);
    const std::vector<std::int64_t> in = x.GetTensorTypeAndShapeInfo().GetShape();
    const std::size_t rank = dims + 2;
    detail::require(in.size() == rank && in[1] == shape.in_channels,
                    "input X has shape " + ints_text(in) + "; expected rank " +
                        str(static_cast<std::int64_t>(rank)) + " with " + str(shape.in_channels) +
                        " channels (N x C x spatial)");
    const std::int64_t n = in[0], h = rank == 4 ? in[2] : 1, w = in.back();
    const std::int64_t oh = shape.out_h(h), ow = shape.out_w(w);
    detail::require(h >= 1 && w >= 1 && oh >= 1 && ow >= 1,
                    "input X has shape " + ints_text(in) + ": the output would be " + str(oh) + " x " +
                        str(ow) + " (the pads take it all)");
    std::vector<std::int64_t> out_shape = {n, shape.out_channels};
    if (rank == 4) out_shape.push_back(oh);
    out_shape.push_back(ow);
    Ort::UnownedValue y = ctx.GetOutput(0, out_shape);
    if (n == 0) return;
    const float* xp = x.GetTensorData<float>();
    float* yp = y.GetTensorMutableData<float>();
    const session_threads threads(context);
    auto& pool = qsl::detail::cpu::thread_pool::instance();
    const std::int64_t pixels = h * w, row_floats = packed.rows;
    const std::int64_t per_chunk = std::clamp<std::int64_t>(
        products_per_chunk / std::max<std::int64_t>(1, pixels * row_floats), 1, n);
    const std::int64_t m = shape.out_channels, plane = oh * ow;
    pool.run(n, [&](std::int64_t i) {  // the bias, which the scatter adds to
      for (std::int64_t c = 0; c < m; ++c)
        std::fill(yp + (i * m + c) * plane, yp + (i * m + c + 1) * plane,
                  bias.empty() ? 0.0f : bias[static_cast<std::size_t>(c)]);
    });
    const std::int64_t image_in = shape.in_channels * pixels;
    for (std::int64_t i0 = 0; i0 < n; i0 += per_chunk)
      scatter_products(context, xp + i0 * image_in, std::min(per_chunk, n - i0), h, w,
                       yp + i0 * m * plane);
  });
}

struct quantized_conv_transpose : code_layer_op<quantized_conv_transpose, quantized_conv_transpose_kernel> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return create_kernel<quantized_conv_transpose_kernel>(info, "QuantizedConvTranspose", kernel);
  }
  const char* GetName() const { return "QuantizedConvTranspose"; }
};

OrtCustomOp* quantized_conv_transpose_op() {
  static quantized_conv_transpose op;
  return &op;
}

}  // namespace qsl::ort
