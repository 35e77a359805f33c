#include "quantized_conv.hpp"

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "conv_products.hpp"
#include "cpu/thread_pool.hpp"
#include "kernel_support.hpp"
#include "layer_inputs.hpp"
#include "ort_gemm.hpp"
#include "qsl/cpu.hpp"
#include "qsl/error.hpp"
#include "qsl/quantized_conv2d.hpp"
#include "qsl/weight_code.hpp"
#include "scratch.hpp"

namespace qsl::ort {

namespace {

std::string str(std::int64_t v) { return std::to_string(v); }


}  // namespace

// The geometry (channels, outputs, groups, kernel, strides, dilations, pads, auto_pad) is the
// node's attributes, checked here.
struct quantized_conv_kernel : onnx_conv_attributes {
  std::string what;
  std::vector<cpu_weights> packed;  // one per group: its outputs x (C / group * prod kernel)
  std::vector<float> bias;
  activation_quantizer activations;
  decoded_gemm large_batches;
  // 8-bit activations from int8_min_rows patches per call (float layers), on each group's
  // int8 row grids, made by the first call that needs them, on the session's threads (a kernel
  // being created has none to lend, and qsl's own pool must not start threads then).
  std::unique_ptr<int8_gemm> int8_rows;
  std::unique_ptr<cpu_int8_grids[]> int8_grids;
  const float* int8_scales(std::size_t g) const { return int8_grids[g].scales(packed[g]).data(); }

  explicit quantized_conv_kernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) const;
  // The 2-D shape of one group for an input of `h` x `w` (a 1-D input is 1 x w).
  conv2d_shape group_shape(std::int64_t h, std::int64_t w) const;
  // One group's convolution of n images on 8-bit activations from the image: each chunk of
  // images (conv2d_by_gemm's) of at least int8_min_rows positions has its patches quantized
  // straight into the integer GEMM's operand, never as floats; smaller chunks take the float
  // patches and multiply()'s choice, as conv2d_by_gemm would.
  void convolve_int8(OrtKernelContext* context, const conv2d_shape& s, const float* x,
                     std::int64_t n, std::int64_t h, std::int64_t w, float* y) const;
};

quantized_conv_kernel::quantized_conv_kernel(const OrtKernelInfo* info) : large_batches(info) {
  const node_reader node(info, "QuantizedConv");
  what = node.what();
  check_format_version(node);
  activations = read_activation_mode(node);
  channels = node.int_attribute("in_channels");
  outputs = node.int_attribute("out_channels");
  groups = node.int_attribute("group", 1);
  kernel = node.ints_attribute("kernel_shape");
  const std::size_t dims = kernel.size();
  detail::require(dims == 1 || dims == 2, "kernel_shape is " + ints_text(kernel) +
                                              "; expected 1 or 2 spatial dimensions");
  for (std::int64_t k : kernel)
    detail::require(k >= 1 && k <= (std::int64_t{1} << 16),
                    "kernel_shape is " + ints_text(kernel) + "; expected sizes 1..65536");
  detail::require(groups >= 1 && channels >= 1 && outputs >= 1 && channels % groups == 0 &&
                      outputs % groups == 0 && channels <= (std::int64_t{1} << 24) &&
                      outputs <= (std::int64_t{1} << 24),
                  "in_channels " + str(channels) + ", out_channels " + str(outputs) +
                      " and group " + str(groups) +
                      ": expected channels >= 1 that the group count divides");
  strides = node.ints_attribute("strides", std::vector<std::int64_t>(dims, 1));
  dilations = node.ints_attribute("dilations", std::vector<std::int64_t>(dims, 1));
  pads = node.ints_attribute("pads", std::vector<std::int64_t>(2 * dims, 0));
  auto_pad = node.string_attribute("auto_pad", "NOTSET");
  detail::require(strides.size() == dims && dilations.size() == dims && pads.size() == 2 * dims,
                  "strides " + ints_text(strides) + ", dilations " + ints_text(dilations) + ", pads " +
                      ints_text(pads) + " do not match kernel_shape " + ints_text(kernel));
  for (std::size_t d = 0; d < dims; ++d)
    detail::require(strides[d] >= 1 && dilations[d] >= 1 && strides[d] <= (1 << 16) &&
                        dilations[d] <= (1 << 16),
                    "strides " + ints_text(strides) + " and dilations " + ints_text(dilations) +
                        "; expected values 1..65536");
  for (std::int64_t p : pads)
    detail::require(p >= 0 && p <= (std::int64_t{1} << 24),
                    "pads " + ints_text(pads) + "; expected values 0..2^24");
  detail::require(auto_pad == "NOTSET" || auto_pad == "VALID" || auto_pad == "SAME_UPPER" ||
                      auto_pad == "SAME_LOWER",
                  "auto_pad is '" + auto_pad + "'; expected NOTSET, VALID, SAME_UPPER or SAME_LOWER");
  std::int64_t patch = channels / groups;
  for (std::int64_t k : kernel) patch *= k;
  code_inputs inputs(node, outputs, patch);
  inputs.read();  // the whole code checked once
  // One code per group: its rows of the plane and coefficient tensors are contiguous.
  const std::int64_t per_group = outputs / groups, plane_row = inputs.bits * ((patch + 7) / 8);
  const std::int64_t alpha_row = inputs.code.groups() * inputs.bits;
  for (std::int64_t g = 0; g < groups; ++g) {
    const std::int64_t group_size = inputs.code.group_size >= patch ? 0 : inputs.code.group_size;
    weight_code part =
        make_weight_code(per_group, patch, inputs.code.bits, inputs.code.basis, group_size);
    read_plane_bytes(part, false, inputs.signs + g * per_group * plane_row, "signs");
    if (inputs.masks != nullptr)
      read_plane_bytes(part, true, inputs.masks + g * per_group * plane_row, "masks");
    const auto alpha = inputs.code.coefficients.begin() + g * per_group * alpha_row;
    part.coefficients.assign(alpha, alpha + per_group * alpha_row);
    compute_offsets(part);
    packed.push_back(pack_for_cpu(part));
    if (activations.bits >= cpu_byte_tables_min_bits()) add_encoded_layout(packed.back());
  }
  bias = read_bias(node, 4, outputs);
  if (const std::int64_t rows = read_int8_min_rows(node, patch); rows > 0) {
    int8_rows = std::make_unique<int8_gemm>(info, rows);
    int8_grids = std::make_unique<cpu_int8_grids[]>(packed.size());
  }
}

conv2d_shape quantized_conv_kernel::group_shape(std::int64_t h, std::int64_t w) const {
  return qsl::group_shape(*this, h, w);
}

void quantized_conv_kernel::convolve_int8(OrtKernelContext* context, const conv2d_shape& s,
                                          const float* x, std::int64_t n, std::int64_t h,
                                          std::int64_t w, float* y) const {
  const std::int64_t oh = s.out_h(h), ow = s.out_w(w), positions = oh * ow;
  const std::int64_t m = s.out_channels, image = s.in_channels * h * w;
  const cpu_weights& part = packed.front();
  const float* b = bias.empty() ? nullptr : bias.data();
  const std::int64_t per_chunk = qsl::detail::conv_images_per_chunk(s, positions, n);
  auto& pool = qsl::detail::cpu::thread_pool::instance();
  for (std::int64_t i0 = 0; i0 < n; i0 += per_chunk) {
    const std::int64_t images = std::min(per_chunk, n - i0), rows = images * positions;
    if (!int8_rows->takes(rows)) {
      const qsl::detail::patch_gemm gemm = [&](const float* patches, std::int64_t count,
                                               float* out) {
        multiply(context, large_batches, part, activations, patches, count, b, out, int8_rows.get(),
                 int8_scales(0));
      };
      qsl::detail::conv2d_by_gemm(s, x + i0 * image, images, h, w, y + i0 * m * positions, gemm,
                                  what.c_str());
      continue;
    }
    qsl::detail::scratch<float> out;
    const conv_products_layout at = conv_products_int8(context, *int8_rows, part, int8_scales(0), s,
                                                       x + i0 * image, images, h, w, b, out);
    const std::int64_t per_image = at.per_image, row_stride = at.row_stride;
    // Each output row's ow results (of wp extended ones) to the image's channels.
    constexpr std::int64_t channels_per_task = 64;
    const std::int64_t channel_tasks = (m + channels_per_task - 1) / channels_per_task;
    pool.run(images * channel_tasks, [&](std::int64_t t) {
      const std::int64_t i = t / channel_tasks, c0 = t % channel_tasks * channels_per_task;
      for (std::int64_t oy = 0; oy < oh; ++oy)
        qsl::detail::transpose_floats(out.data() + (i * per_image + oy * row_stride) * m + c0, m,
                                      ow, std::min(channels_per_task, m - c0),
                                      y + ((i0 + i) * m + c0) * positions + oy * ow, positions);
    });
  }
}

OrtStatusPtr quantized_conv_kernel::ComputeV2(OrtKernelContext* context) const {
  return guarded(what, [&] {
    Ort::KernelContext ctx(context);
    const Ort::ConstValue x = ctx.GetInput(0);
    const std::vector<std::int64_t> shape = x.GetTensorTypeAndShapeInfo().GetShape();
    const std::size_t rank = kernel.size() + 2;
    detail::require(shape.size() == rank && shape[1] == channels,
                    "input X has shape " + ints_text(shape) + "; expected rank " +
                        str(static_cast<std::int64_t>(rank)) + " with " + str(channels) +
                        " channels (N x C x spatial)");
    const std::int64_t n = shape[0], h = rank == 4 ? shape[2] : 1, w = shape.back();
    const conv2d_shape s = group_shape(h, w);
    const std::int64_t oh = s.out_h(h), ow = s.out_w(w);
    detail::require(oh >= 1 && ow >= 1 && h >= 1 && w >= 1,
                    "input X has shape " + ints_text(shape) + ": the kernel " + ints_text(kernel) +
                        " (dilated, after padding) does not fit");
    std::vector<std::int64_t> y_shape = {n, outputs};
    if (rank == 4) y_shape.push_back(oh);
    y_shape.push_back(ow);
    Ort::UnownedValue y = ctx.GetOutput(0, y_shape);
    if (n == 0) return;
    const float* xp = x.GetTensorData<float>();
    float* yp = y.GetTensorMutableData<float>();
    const session_threads threads(context);
    if (groups == 1 && int8_rows && int8_gemm::direct()) {
      convolve_int8(context, s, xp, n, h, w, yp);
      return;
    }
    const std::int64_t per_group = outputs / groups, cg = channels / groups;
    for (std::int64_t g = 0; g < groups; ++g) {
      const float* b = bias.empty() ? nullptr : bias.data() + g * per_group;
      const cpu_weights& part = packed[static_cast<std::size_t>(g)];
      const qsl::detail::patch_gemm gemm = [&](const float* patches, std::int64_t rows,
                                               float* out) {
        multiply(context, large_batches, part, activations, patches, rows, b, out, int8_rows.get(),
                 int8_rows ? int8_scales(static_cast<std::size_t>(g)) : nullptr);
      };
      if (groups == 1) {  // every image in one call: the inputs and outputs are contiguous
        qsl::detail::conv2d_by_gemm(s, xp, n, h, w, yp, gemm, what.c_str());
        continue;
      }
      for (std::int64_t i = 0; i < n; ++i)
        qsl::detail::conv2d_by_gemm(s, xp + (i * channels + g * cg) * h * w, 1, h, w,
                                    yp + (i * outputs + g * per_group) * oh * ow, gemm,
                                    what.c_str());
    }
  });
}

struct quantized_conv : code_layer_op<quantized_conv, quantized_conv_kernel> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    return create_kernel<quantized_conv_kernel>(info, "QuantizedConv", kernel);
  }
  const char* GetName() const { return "QuantizedConv"; }
};

OrtCustomOp* quantized_conv_op() {
  static quantized_conv op;
  return &op;
}

}  // namespace qsl::ort
