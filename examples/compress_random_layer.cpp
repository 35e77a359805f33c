// qsl-demo: compresses a random 1024 x 4096 dense layer at a few settings and prints, for each,
// its size, its error and the time of one forward pass beside the fp32 layer. Run it first:
//
//   build/examples/qsl-demo
//
// The forward timed here is the scalar reference (plain loops, one thread): the oracle that the
// fast kernels are tested against, not a fast path, so it is expected to be slower than Eigen's
// fp32 GEMM. The SIMD CPU kernels and the CUDA kernels come later; the sizes and errors printed
// here are already those of the final code, since every backend computes the same numbers.

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "qsl/quantized_dense.hpp"

namespace {

using steady = std::chrono::steady_clock;

double ms_since(steady::time_point start) {
  return std::chrono::duration<double, std::milli>(steady::now() - start).count();
}

// i.i.d. N(0, 1), reproducible from the seed. Trained layers are not Gaussian, but a Gaussian
// row is the case whose best possible error is known (the Lloyd-Max floor), so the numbers
// below can be checked: weight nmse 0.363 at k = 1, 0.117 at 2, 0.035 at 3.
Eigen::MatrixXf gaussian(std::int64_t rows, std::int64_t cols, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Eigen::MatrixXf m(rows, cols);
  for (Eigen::Index c = 0; c < m.cols(); ++c)
    for (Eigen::Index r = 0; r < m.rows(); ++r) m(r, c) = normal(rng);
  return m;
}

struct setting {
  std::string name;
  int bits;                 // k: planes per weight
  qsl::basis basis;         // binary {-1,+1} or ternary {-1,0,+1}
  std::int64_t group_size;  // 0: one group (one set of coefficients) per row
  int activation_bits;      // kx: 0 keeps float activations
};

}  // namespace

int main() {
  constexpr std::int64_t kOut = 1024, kIn = 4096, kBatch = 64;
  constexpr double kFp32Bytes = 4.0 * kOut * kIn;
  const Eigen::MatrixXf w = gaussian(kOut, kIn, 1);
  // Inputs the outputs are compared on, and a separate sample to calibrate the activation
  // quantizer with: calibrating on the test inputs would flatter the result.
  const qsl::row_matrix_f x = gaussian(kBatch, kIn, 2);
  const Eigen::MatrixXf calibration = gaussian(256, kIn, 3);

  // The fp32 layer: its outputs are the target, its GEMM time the baseline. One Eigen thread,
  // since the reference forward uses one; best of 5 runs, so the first-touch cost is not counted.
  Eigen::setNbThreads(1);
  qsl::row_matrix_f y_fp32(kBatch, kOut);
  double fp32_ms = 1e300;
  for (int run = 0; run < 5; ++run) {
    const steady::time_point start = steady::now();
    y_fp32.noalias() = x * w.transpose();
    fp32_ms = std::min(fp32_ms, ms_since(start));
  }

  const std::vector<setting> settings = {
      {"k=1", 1, qsl::basis::binary, 0, 0},
      {"k=2", 2, qsl::basis::binary, 0, 0},
      {"k=3", 3, qsl::basis::binary, 0, 0},
      {"k=2 g=128", 2, qsl::basis::binary, 128, 0},
      {"ternary k=1", 1, qsl::basis::ternary, 0, 0},
      {"k=2 kx=4 calibrated", 2, qsl::basis::binary, 0, 4},
  };

  std::printf("qsl %d.%d.%d: a random %lld x %lld layer, batch %lld\n\n", qsl::version_major,
              qsl::version_minor, qsl::version_patch, static_cast<long long>(kOut),
              static_cast<long long>(kIn), static_cast<long long>(kBatch));
  std::vector<std::string> rows;
  for (const setting& s : settings) {
    std::printf("compressing %s ...", s.name.c_str());
    std::fflush(stdout);
    const steady::time_point start = steady::now();

    qsl::quantized_dense_options options;
    options.weights.bits = s.bits;
    options.weights.basis = s.basis;
    options.weights.group_size = s.group_size;
    options.weights.method = qsl::method::multi_start;
    options.activation_bits = s.activation_bits;
    if (s.activation_bits > 0) {
      // Fixes the activation step offline; the same inputs also make the weight fit
      // data-aware (it minimizes the output error on them instead of the weight error).
      options.weights.calibration = calibration;
      options.scaling = qsl::activation_scaling::calibrated;
    }
    const qsl::quantized_dense layer = qsl::quantized_dense::compress(w, options);
    const double compress_s = ms_since(start) / 1000;

    qsl::row_matrix_f y(kBatch, kOut);
    const steady::time_point forward_start = steady::now();
    layer.forward(x.data(), kBatch, y.data());
    const double forward_ms = ms_since(forward_start);
    std::printf(" %.1f s to compress, %.1f s to run\n", compress_s, forward_ms / 1000);

    const double weight_nmse = qsl::normalized_error(w, layer.code());
    const double output_error = (y - y_fp32).norm() / y_fp32.norm();
    char line[160];
    std::snprintf(line, sizeof line, "%-20s %10zu %7.2f%% %7.3f %8.4f %10.4f %11.1f %11.2f",
                  s.name.c_str(), layer.bytes(),
                  100.0 * static_cast<double>(layer.bytes()) / kFp32Bytes, layer.bits_per_weight(),
                  weight_nmse, output_error, forward_ms, fp32_ms);
    rows.push_back(line);
  }

  std::printf("\n%-20s %10s %8s %7s %8s %10s %11s %11s\n", "setting", "bytes", "% fp32", "bits/w",
              "w nmse", "y rel.err", "qsl ms/64", "fp32 ms/64");
  std::printf("%-20s %10.0f %7.2f%% %7.3f %8.4f %10.4f %11s %11.2f\n", "fp32 (Eigen)", kFp32Bytes,
              100.0, 32.0, 0.0, 0.0, "-", fp32_ms);
  for (const std::string& row : rows) std::printf("%s\n", row.c_str());
  std::printf(
      "\nw nmse    = ||W - W_hat||^2 / ||W||^2\n"
      "y rel.err = ||y - y_fp32|| / ||y_fp32|| on %lld random inputs\n"
      "qsl ms/64 = the scalar reference forward of the batch (one thread); fp32 ms/64 = Eigen "
      "GEMM (one thread)\n",
      static_cast<long long>(kBatch));
  return 0;
}
