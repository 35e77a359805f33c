// Uses qsl::qsl through its one public header: compress, forward, compare with W_hat x + b.
#include <qsl/quantized_dense.hpp>
#ifdef QSL_CONSUMER_ONNX
#include <qsl/onnx.hpp>
#endif

#include <cmath>
#include <cstdio>
#include <exception>

int main() {
  try {
    const Eigen::MatrixXf w = Eigen::MatrixXf::Random(32, 40);
    const Eigen::VectorXf bias = Eigen::VectorXf::Random(32);
    qsl::quantized_dense_options options;
    options.weights.bits = 2;
    const qsl::quantized_dense layer = qsl::quantized_dense::compress(w, bias, options);

    const qsl::quantized_dense::matrix x = qsl::quantized_dense::matrix::Random(3, 40);
    const qsl::quantized_dense::matrix y = layer.forward(x);
    if (y.rows() != 3 || y.cols() != 32 || !y.allFinite()) {
      std::fprintf(stderr, "qsl consumer: bad output (%ld x %ld)\n", static_cast<long>(y.rows()),
                   static_cast<long>(y.cols()));
      return 1;
    }
    // Same product in a different summation order: float rounding only.
    const Eigen::MatrixXf expected =
        (x * qsl::reconstruct(layer.code()).transpose()).rowwise() + bias.transpose();
    const float error = (y - expected).cwiseAbs().maxCoeff();
    const float tolerance = 1e-4f * (1.0f + expected.cwiseAbs().maxCoeff());
    if (!(error <= tolerance)) {
      std::fprintf(stderr, "qsl consumer: forward differs from W_hat x + b by %g (tolerance %g)\n",
                   error, tolerance);
      return 1;
    }
#ifdef QSL_CONSUMER_ONNX
    // The onnx component links and refuses bytes that are not a model with its own error.
    const std::uint8_t garbage[] = {0xFF, 0x01, 0x02, 0x03};
    try {
      qsl::onnx::model::parse(garbage, sizeof garbage);
      std::fprintf(stderr, "qsl consumer: garbage parsed as an ONNX model\n");
      return 1;
    } catch (const qsl::onnx::model_error&) {
    }
#endif
    std::printf("qsl consumer ok %d.%d.%d\n", qsl::version_major, qsl::version_minor,
                qsl::version_patch);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qsl consumer: %s\n", e.what());
    return 1;
  }
}
