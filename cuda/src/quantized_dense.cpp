// qsl::cuda::quantized_dense: packing, upload (or zero-copy mapping), kernel choice, errors.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "device_memory.hpp"
#include "kernels.hpp"
#include "pack.hpp"
#include "qsl/cuda.hpp"

namespace qsl::cuda {

using detail::buffer;
using detail::check_launch;
using detail::scratch_buffer;
using detail::upload;

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: not an error for the caller
    return 0;
  }
  return count;
}

device_properties properties(int device) {
  const int count = device_count();
  qsl::detail::require(device >= 0 && device < count,
                       "qsl::cuda: device " + std::to_string(device) + " does not exist (" +
                           std::to_string(count) + " CUDA devices)");
  cudaDeviceProp p{};
  QSL_CUDA(cudaGetDeviceProperties(&p, device));
  return {p.name, p.major, p.minor, p.multiProcessorCount, p.integrated != 0, p.totalGlobalMem};
}

struct quantized_dense::impl {
  int device = 0;
  detail::packed_layer host;
  activation_quantizer activations;
  std::unique_ptr<buffer> words, coefficients, offsets, bias;
  detail::layer_view view{};
};

quantized_dense::quantized_dense(const qsl::quantized_dense& layer, int device)
    : impl_(std::make_unique<impl>()) {
  const device_properties props = properties(device);
  QSL_CUDA(cudaSetDevice(device));
  impl_->device = device;
  impl_->activations = layer.activations();
  impl_->host = detail::pack(layer.code(), layer.bias());
  const bool mapped = props.integrated;  // Jetson: no copy, the GPU reads host memory
  impl_->words = upload(impl_->host.words, mapped);
  impl_->coefficients = upload(impl_->host.coefficients, mapped);
  impl_->offsets = upload(impl_->host.offsets, mapped);
  impl_->bias = upload(impl_->host.bias, mapped);
  impl_->view = impl_->host.view();
  impl_->view.words = impl_->words->get<std::uint32_t>();
  impl_->view.coefficients = impl_->coefficients->get<float>();
  impl_->view.offsets = impl_->offsets->get<float>();
  impl_->view.bias = impl_->host.bias.empty() ? nullptr : impl_->bias->get<float>();
  // The host copies are only needed for the shapes once uploaded.
  impl_->host.words.clear();
  impl_->host.words.shrink_to_fit();
  impl_->host.coefficients.clear();
  impl_->host.coefficients.shrink_to_fit();
}

quantized_dense::quantized_dense(quantized_dense&&) noexcept = default;
quantized_dense& quantized_dense::operator=(quantized_dense&&) noexcept = default;
quantized_dense::~quantized_dense() = default;

std::int64_t quantized_dense::in_features() const { return impl_->view.cols; }
std::int64_t quantized_dense::out_features() const { return impl_->view.rows; }
int quantized_dense::device() const { return impl_->device; }
std::size_t quantized_dense::device_bytes() const {
  return impl_->words->bytes() + impl_->coefficients->bytes() + impl_->offsets->bytes() +
         impl_->bias->bytes();
}

void quantized_dense::run(const float* x, std::int64_t batch, float* y, void* stream,
                          kernel which) const {
  const detail::layer_view& w = impl_->view;
  const activation_quantizer& q = impl_->activations;
  const bool encoded = q.bits > 0;
  if (which == kernel::automatic)
    which = encoded ? kernel::popcount_gemv : batch < 8 ? kernel::lut_gemv : kernel::wmma_gemm;
  qsl::detail::require(encoded == (which == kernel::popcount_gemv),
                       std::string("qsl::cuda::quantized_dense::forward: ") +
                           (encoded ? "the layer encodes its activations: use popcount_gemv"
                                    : "the layer keeps float activations: popcount_gemv needs "
                                      "activation_bits > 0"));
  QSL_CUDA(cudaSetDevice(impl_->device));
  const auto s = static_cast<cudaStream_t>(stream);
  switch (which) {
    case kernel::lut_gemv:
      detail::launch_lut_gemv(w, x, batch, y, stream);
      check_launch("lut_gemv");
      return;
    case kernel::wmma_gemm:
      detail::launch_wmma_gemm(w, x, batch, y, stream);
      check_launch("wmma_gemm");
      return;
    default:
      break;
  }
  // Encoded: scratch for the bit planes, level sums and scales, ordered on the stream.
  const std::size_t plane_bytes = static_cast<std::size_t>(batch * q.bits * w.chunks) * 4;
  const std::size_t level_bytes = static_cast<std::size_t>(batch * w.groups) * 4;
  const std::size_t scale_bytes = static_cast<std::size_t>(batch) * 2 * sizeof(float);
  scratch_buffer scratch(impl_->device, plane_bytes + level_bytes + scale_bytes, s);
  auto* planes = static_cast<std::uint32_t*>(scratch.get());
  auto* levels = reinterpret_cast<std::int32_t*>(static_cast<char*>(scratch.get()) + plane_bytes);
  auto* scales =
      reinterpret_cast<float*>(static_cast<char*>(scratch.get()) + plane_bytes + level_bytes);
  detail::launch_encode(w, x, batch, q.bits, q.calibrated, q.step, q.minimum, planes, levels,
                        scales, stream);
  check_launch("encode");
  detail::launch_popcount_gemv(w, planes, levels, scales, q.bits, batch, y, stream);
  check_launch("popcount_gemv");
}

}  // namespace qsl::cuda
