// The usage example of README.md, verbatim inside main(); the tests build and run it so the
// README cannot go stale.
#include <qsl/quantized_dense.hpp>

#include <cstdio>
#include <filesystem>

int main() {
  const std::filesystem::path folder = std::filesystem::temp_directory_path() / "qsl-readme";
  std::filesystem::create_directories(folder);
  std::filesystem::current_path(folder);

  Eigen::MatrixXf w = Eigen::MatrixXf::Random(1024, 4096);  // out_features x in_features
  Eigen::VectorXf b = Eigen::VectorXf::Zero(1024);

  qsl::quantized_dense_options options;
  options.weights.bits = 2;          // two binary planes per weight
  options.weights.group_size = 128;  // one coefficient per 128 inputs and plane (0: per row)
  options.activation_bits = 4;       // encode inputs as 4 bit-planes (0: keep floats)
  options.weights.calibration = Eigen::MatrixXf::Random(256, 4096);  // optional sample inputs

  auto layer = qsl::quantized_dense::compress(w, b, options);
  qsl::quantized_dense::matrix x = qsl::quantized_dense::matrix::Random(64, 4096);
  qsl::quantized_dense::matrix y = layer.forward(x);  // 64 x 1024, row-major
  std::printf("%zu bytes, %.2f bits/weight\n", layer.bytes(), layer.bits_per_weight());
  layer.save("fc1.qsl");  // atomic write; read back with qsl::quantized_dense::load("fc1.qsl")

  // What the test checks: the file reads back to the same layer and outputs.
  const auto loaded = qsl::quantized_dense::load("fc1.qsl");
  return loaded.forward(x) == y && y.allFinite() ? 0 : 1;
}
