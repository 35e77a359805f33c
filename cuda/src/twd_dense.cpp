// qsl::cuda::twd_dense: a TWD layer on the GPU. The basis step z = M^T x is a
// qsl::cuda::quantized_dense of K ternary rows with coefficient 1 (every kernel of that class,
// float or encoded), the mixing step y = C^T z + b one small kernel (launch_mix).
#include <cuda_runtime.h>

#include "device_memory.hpp"
#include "kernels.hpp"
#include "qsl/cuda.hpp"

namespace qsl::cuda {
namespace {

// The basis step as a CPU layer object (what qsl::cuda::quantized_dense is built from).
qsl::quantized_dense basis_layer(const qsl::twd_dense& layer) {
  dense_parameters p;
  p.code = layer.code().basis;
  p.activations = layer.activations();
  return qsl::quantized_dense(std::move(p));
}

}  // namespace

struct twd_dense::impl {
  explicit impl(const qsl::twd_dense& layer, int device)
      : basis(basis_layer(layer), device), device(device), workspaces(device) {}
  quantized_dense basis;
  int device = 0;
  mutable detail::workspace_cache workspaces;  // z
  std::int64_t rows = 0, k = 0;
  std::unique_ptr<detail::buffer> mixing, bias;
};

twd_dense::twd_dense(const qsl::twd_dense& layer, int device)
    : impl_(std::make_unique<impl>(layer, device)) {
  const bool mapped = properties(device).integrated;  // Jetson: the GPU reads host memory
  impl_->rows = layer.out_features();
  impl_->k = layer.basis_vectors();
  impl_->mixing = detail::upload(layer.code().mixing, mapped);
  impl_->bias = detail::upload(layer.bias(), mapped);
}

twd_dense::twd_dense(twd_dense&&) noexcept = default;
twd_dense& twd_dense::operator=(twd_dense&&) noexcept = default;
twd_dense::~twd_dense() = default;

std::int64_t twd_dense::in_features() const { return impl_->basis.in_features(); }
std::int64_t twd_dense::out_features() const { return impl_->rows; }
std::int64_t twd_dense::basis_vectors() const { return impl_->k; }
int twd_dense::device() const { return impl_->device; }
std::size_t twd_dense::device_bytes() const {
  return impl_->basis.device_bytes() + impl_->mixing->bytes() + impl_->bias->bytes();
}

void twd_dense::run(const void* x, element x_type, std::int64_t batch, void* y,
                    element y_type, void* stream, kernel which) const {
  QSL_CUDA(cudaSetDevice(impl_->device));
  const auto lease = impl_->workspaces.acquire(
      static_cast<cudaStream_t>(stream), 0, static_cast<std::size_t>(batch * impl_->k) * sizeof(float));
  auto* z = static_cast<float*>(lease.get().data);
  impl_->basis.run(x, x_type, batch, z, element::f32, stream, which);
  detail::launch_mix(z, batch, impl_->k, impl_->mixing->get<float>(),
                     impl_->bias->bytes() == 0 ? nullptr : impl_->bias->get<float>(),
                     impl_->rows, y, y_type == element::f16, stream);
  detail::check_launch("mix");
}

}  // namespace qsl::cuda
