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
  explicit impl(int device) : device(device), workspaces(device) {}
  int device = 0, multiprocessors = 1;
  detail::packed_layer host;
  activation_quantizer activations;
  std::unique_ptr<buffer> words, coefficients, offsets, bias;
  detail::layer_view view{};
  int resident[4] = {1, 1, 1, 1};  ///< blocks per SM, by detail::kernel_kind
  mutable detail::workspace_cache workspaces;
};

namespace {
detail::kernel_kind kind_of(kernel which) {
  switch (which) {
    case kernel::wmma_gemm: return detail::kernel_kind::wmma_gemm;
    case kernel::popcount_gemv: return detail::kernel_kind::popcount_gemv;
    case kernel::decode_gemv: return detail::kernel_kind::decode_gemv;
    default: return detail::kernel_kind::lut_gemv;
  }
}
}  // namespace

quantized_dense::quantized_dense(const qsl::quantized_dense& layer, int device)
    : impl_(std::make_unique<impl>(device)) {
  const device_properties props = properties(device);
  QSL_CUDA(cudaSetDevice(device));
  impl_->multiprocessors = props.multiprocessors;
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
  for (auto kind : {detail::kernel_kind::lut_gemv, detail::kernel_kind::decode_gemv,
                    detail::kernel_kind::popcount_gemv, detail::kernel_kind::wmma_gemm})
    impl_->resident[static_cast<int>(kind)] = detail::resident_blocks(impl_->view, kind);
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

void quantized_dense::run(const void* x, element x_type, std::int64_t batch, void* y,
                          element y_type, void* stream, kernel which) const {
  const detail::layer_view& w = impl_->view;
  const activation_quantizer& q = impl_->activations;
  const bool encoded = q.bits > 0;
  // Checks that build their messages only when they fail (they run on every call).
  if (static_cast<int>(which) > static_cast<int>(kernel::decode_gemv))
    throw qsl::error("qsl::cuda::quantized_dense::forward: kernel " +
                     std::to_string(static_cast<int>(which)) + " is not a qsl::cuda::kernel");
  if (which == kernel::automatic)
    // Measured on an H200 (docs/benchmarks.md): the look-up GEMV is faster up to batch 8
    // (75 vs 89 us at 4096 x 4096), the tensor-core GEMM from batch 16 (90 vs 131 us).
    which = encoded ? kernel::popcount_gemv : batch <= 8 ? kernel::lut_gemv : kernel::wmma_gemm;
  if (encoded != (which == kernel::popcount_gemv))
    throw qsl::error(encoded ? "qsl::cuda::quantized_dense::forward: the layer encodes its "
                               "activations: use popcount_gemv"
                             : "qsl::cuda::quantized_dense::forward: the layer keeps float "
                               "activations: popcount_gemv needs activation_bits > 0");
  QSL_CUDA(cudaSetDevice(impl_->device));
  const auto s = static_cast<cudaStream_t>(stream);
  const detail::activation_io io{x, y, x_type == element::f16, y_type == element::f16};
  // Split-K partial sums and counters, and for encoded activations the bit planes and scales.
  const bool gemm = which == kernel::wmma_gemm;
  const int resident = impl_->resident[static_cast<int>(kind_of(which))];
  const detail::gemv_plan plan = gemm ? detail::plan_gemm(w, batch, impl_->multiprocessors, resident)
                                      : detail::plan_gemv(w, batch, impl_->multiprocessors, resident);
  const std::size_t split_bytes = static_cast<std::size_t>(plan.partial_floats) * sizeof(float);
  const std::size_t plane_bytes =
      encoded ? static_cast<std::size_t>(batch * q.bits * w.chunks) * 4 : 0;
  const std::size_t scale_bytes = encoded ? static_cast<std::size_t>(batch) * 2 * sizeof(float) : 0;
  const auto lease = impl_->workspaces.acquire(s, static_cast<std::size_t>(plan.counters),
                                               split_bytes + plane_bytes + scale_bytes);
  const detail::workspace ws = lease.get();
  char* data = static_cast<char*>(ws.data);
  const detail::split_args sp =
      detail::split_args_of(plan, reinterpret_cast<float*>(data), ws.counters);
  if (gemm) {
    detail::launch_wmma_gemm(w, io, batch, plan, sp, stream);
    check_launch("wmma_gemm");
    return;
  }
  if (!encoded) {
    const bool tables = which == kernel::lut_gemv;
    detail::launch_float_gemv(w, io, batch, tables, plan, sp, stream);
    check_launch(tables ? "lut_gemv" : "decode_gemv");
    return;
  }
  auto* planes = reinterpret_cast<std::uint32_t*>(data + split_bytes);
  auto* scales = reinterpret_cast<float*>(data + split_bytes + plane_bytes);
  detail::launch_encode(w, io, batch, q.bits, q.calibrated, q.step, q.minimum, planes, scales,
                        stream);
  check_launch("encode");
  detail::launch_popcount_gemv(w, planes, scales, q.bits, io, batch, plan, sp, stream);
  check_launch("popcount_gemv");
}

}  // namespace qsl::cuda
