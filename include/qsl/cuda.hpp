#pragma once
// qsl::cuda (find_package(qsl COMPONENTS cuda), target qsl::cuda): the CUDA kernels of a
// quantized dense layer. Plain C++: no CUDA header appears here; streams are passed as void*
// (a cudaStream_t) and device arrays as plain pointers.
//
//   qsl::cuda::quantized_dense gpu(layer);        // packs and uploads once
//   gpu.forward(x_device, batch, y_device, stream);
//
// Kernels (docs/cuda.md): float activations use shared-memory look-up tables (batch <= 8) or
// fp16 tensor-core tiles decoded from the planes (batch > 8); encoded activations use AND +
// __popc after an encoder kernel; the columns are split over blocks so that one vector fills
// the GPU. On an integrated GPU (Jetson) the weights live in mapped host memory: no copies,
// one copy of the weights in memory. forward() on a stream may be captured into a CUDA graph.

#include <cstdint>
#include <memory>
#include <string>

#include "qsl/config.hpp"
#include "qsl/quantized_dense.hpp"
#include "qsl/twd_dense.hpp"

namespace qsl::cuda {

struct device_properties {
  std::string name;
  int major = 0, minor = 0;  ///< compute capability
  int multiprocessors = 0;
  bool integrated = false;   ///< shares memory with the CPU (Jetson)
  std::size_t memory_bytes = 0;
};

/// CUDA devices usable by this process; 0 when there is no driver or no device (never throws).
QSL_API int device_count();
/// Throws qsl::error for a bad index or a CUDA failure.
QSL_API device_properties properties(int device);

/// An IEEE 754 binary16 value in device memory (the bits of a CUDA __half): half-precision
/// activations. A __half* converts with reinterpret_cast.
enum class fp16 : std::uint16_t {};

/// The element type of activations in device memory.
enum class element : std::uint8_t { f32 = 0, f16 = 1 };

/// Which kernel runs a forward pass.
enum class kernel : std::uint8_t {
  automatic = 0,      ///< lut_gemv (float, batch <= 8), wmma_gemm (float), popcount_gemv (encoded)
  lut_gemv = 1,       ///< float activations, shared-memory look-up tables
  wmma_gemm = 2,      ///< float activations, fp16 tensor cores (inputs and W_hat rounded to fp16)
  popcount_gemv = 3,  ///< encoded activations (the layer's activation_bits > 0)
  decode_gemv = 4,    ///< float activations, bits decoded per warp (same results as lut_gemv)
};

/// What every qsl::cuda layer offers: its shape, where it lives, and the forward pass on device
/// pointers (asynchronous, on a stream) or on host arrays (synchronous).
class QSL_API layer {
 public:
  virtual ~layer() = default;
  virtual std::int64_t in_features() const = 0;
  virtual std::int64_t out_features() const = 0;
  virtual int device() const = 0;
  /// Bytes of everything the layer holds on the device.
  virtual std::size_t device_bytes() const = 0;

  /// y = layer(x) for a batch: x is batch x in_features, y batch x out_features, both row-major
  /// device pointers that must not overlap; asynchronous on `stream` (a cudaStream_t; null:
  /// the default stream). x must not change until the call has run on the stream.
  /// Throws qsl::error for bad arguments and CUDA failures (naming the call). Unlike the CPU
  /// path, NaN/Inf inputs are not detected on the device: their outputs are unspecified.
  void forward(const float* x, std::int64_t batch, float* y, void* stream = nullptr,
               kernel which = kernel::automatic) const;
  /// The same with half-precision activations. Inside, everything is fp32 as above: x is
  /// widened where it is read (exactly), y rounded to the nearest fp16 where it is written, so
  /// the result is the fp32 forward pass of the fp16 inputs, rounded (overflow gives +-Inf).
  /// Halves the activation traffic (wmma_gemm rounds fp32 inputs to fp16 in any case).
  void forward(const fp16* x, std::int64_t batch, fp16* y, void* stream = nullptr,
               kernel which = kernel::automatic) const;
  /// The same for host arrays, synchronously: copies x to the device, runs forward in calls of
  /// at most 65535 vectors (any batch), copies y back. For executors that keep activations on
  /// the host (qsl-run); a pipeline that stays on the device should call forward.
  void forward_host(const float* x, std::int64_t batch, float* y,
                    kernel which = kernel::automatic) const;

 protected:
  layer() = default;
  layer(layer&&) noexcept = default;
  layer& operator=(layer&&) noexcept = default;
  /// The forward pass proper, x and y of the given element types; forward has checked batch
  /// (1..65535) and the pointers.
  virtual void run(const void* x, element x_type, std::int64_t batch, void* y, element y_type,
                   void* stream, kernel which) const = 0;
  /// The class, for messages ("qsl::cuda::quantized_dense").
  virtual const char* name() const = 0;

 private:
  /// forward's argument checks, then run.
  void checked_run(const void* x, element type, std::int64_t batch, void* y, void* stream,
                   kernel which) const;
};

/// A qsl::quantized_dense on the GPU.
class QSL_API quantized_dense final : public layer {
 public:
  /// Packs the layer for the device and uploads it (or maps it, on an integrated GPU).
  explicit quantized_dense(const qsl::quantized_dense& layer, int device = 0);
  quantized_dense(quantized_dense&&) noexcept;
  quantized_dense& operator=(quantized_dense&&) noexcept;
  ~quantized_dense() override;

  std::int64_t in_features() const override;
  std::int64_t out_features() const override;
  int device() const override;
  /// The weights, coefficients, offsets and bias.
  std::size_t device_bytes() const override;

 private:
  void run(const void* x, element x_type, std::int64_t batch, void* y, element y_type,
           void* stream, kernel which) const override;
  const char* name() const override { return "qsl::cuda::quantized_dense"; }
  friend class twd_dense;  // runs its basis step with fp32 outputs whatever its inputs
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// A TWD layer (qsl/twd_dense.hpp) on the GPU: the basis step z = M^T x runs as a
/// quantized_dense of K ternary rows (any of its kernels: `which` as there), the mixing step
/// y = C^T z + b as one more kernel (mapped host memory on an integrated GPU, as there).
class QSL_API twd_dense final : public layer {
 public:
  explicit twd_dense(const qsl::twd_dense& layer, int device = 0);
  twd_dense(twd_dense&&) noexcept;
  twd_dense& operator=(twd_dense&&) noexcept;
  ~twd_dense() override;

  std::int64_t in_features() const override;
  std::int64_t out_features() const override;
  std::int64_t basis_vectors() const;
  int device() const override;
  /// The basis, C and the bias.
  std::size_t device_bytes() const override;

 private:
  void run(const void* x, element x_type, std::int64_t batch, void* y, element y_type,
           void* stream, kernel which) const override;
  const char* name() const override { return "qsl::cuda::twd_dense"; }
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace qsl::cuda
