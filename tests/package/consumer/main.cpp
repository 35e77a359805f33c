// Uses qsl the way a user would, through its public headers: compress, forward, decompose,
// reconstruct, save, load and twd_dense, each checked against plain Eigen. The package tests build
// it with many sets of compiler flags (-march=native, -O0, EIGEN_DONT_VECTORIZE, ...), under ASan
// where the compiler has it: every Eigen object below is made on one side of qsl's compiled
// boundary and read, resized or freed on the other, so an ABI that depended on the flags would
// fail here (docs/design.md, "An ABI that does not depend on the user's flags").
#include <qsl/decompose.hpp>
#include <qsl/quantized_dense.hpp>
#include <qsl/twd_dense.hpp>
#ifdef QSL_CONSUMER_ONNX
#include <qsl/onnx.hpp>
#endif

#ifdef QSL_ONNXRUNTIME_LIBRARY
#include <dlfcn.h>
#endif

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace {

struct failure {
  std::string what;
};

void check(bool condition, const std::string& what) {
  if (!condition) throw failure{what};
}

// |a - b| within a relative tolerance: the same sums in another order, float rounding only.
void check_close(const Eigen::MatrixXf& a, const Eigen::MatrixXf& b, const std::string& what) {
  check(a.rows() == b.rows() && a.cols() == b.cols(), what + ": shapes differ");
  const float error = (a - b).cwiseAbs().maxCoeff();
  const float tolerance = 1e-4f * (1.0f + b.cwiseAbs().maxCoeff());
  check(error <= tolerance, what + ": differs by " + std::to_string(error) + " (tolerance " +
                                std::to_string(tolerance) + ")");
}

std::string temporary_path(const char* name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/" + name;
}

void dense_layer() {
  const Eigen::MatrixXf w = Eigen::MatrixXf::Random(32, 72);
  const Eigen::VectorXf bias = Eigen::VectorXf::Random(32);
  qsl::quantized_dense_options options;
  options.weights.bits = 2;
  options.weights.group_size = 24;
  options.weights.calibration = Eigen::MatrixXf::Random(48, 72);  // made here, read by qsl
  const qsl::quantized_dense layer = qsl::quantized_dense::compress(w, bias, options);

  const qsl::quantized_dense::matrix x = qsl::quantized_dense::matrix::Random(5, 72);
  qsl::quantized_dense::matrix y = layer.forward(x);
  const Eigen::MatrixXf w_hat = qsl::reconstruct(layer.code());  // made by qsl's inline code
  const Eigen::MatrixXf expected = (x * w_hat.transpose()).rowwise() + bias.transpose();
  check_close(y, expected, "quantized_dense::forward");
  y.resize(7, 3);  // a matrix qsl returned, resized and freed here

  const std::string path = temporary_path("qsl_consumer_dense.qsl");
  layer.save(path);
  const qsl::quantized_dense loaded = qsl::quantized_dense::load(path);
  std::remove(path.c_str());
  check(loaded.serialize() == layer.serialize(), "quantized_dense::load: not what was saved");
  check_close(loaded.forward(x), expected, "loaded quantized_dense::forward");

  // Encoded activations (4 bit planes, per vector): within the quantizer's rounding.
  qsl::quantized_dense_options encoded = options;
  encoded.activation_bits = 4;
  encoded.weights.calibration.resize(0, 0);  // a copy qsl never saw, freed here
  const qsl::quantized_dense layer4 = qsl::quantized_dense::compress(w, bias, encoded);
  check(layer4.forward(x).allFinite(), "quantized_dense::forward (4-bit activations)");
}

void decomposition() {
  const Eigen::MatrixXf w = Eigen::MatrixXf::Random(40, 65);
  qsl::decompose_options options;
  options.bits = 3;
  qsl::weight_code code = qsl::decompose(w, options);
  Eigen::MatrixXf w_hat = qsl::reconstruct(code);
  const double relative = (w - w_hat).norm() / w.norm();
  check(relative < 0.25, "decompose: relative error " + std::to_string(relative));
  w_hat = Eigen::MatrixXf::Zero(3, 3);  // reassigned: qsl's storage freed by this program
  Eigen::MatrixXf into(code.rows, code.cols);
  qsl::reconstruct(code, into);
  check_close(into, qsl::reconstruct(code), "reconstruct into a matrix");

  bool refused = false;
  try {
    options.bits = 0;
    qsl::decompose(w, options);
  } catch (const qsl::error&) {  // thrown inside the library, caught here
    refused = true;
  }
  check(refused, "decompose: bits = 0 was not refused with qsl::error");
}

void twd_layer() {
  const Eigen::MatrixXf w = Eigen::MatrixXf::Random(24, 64);
  const Eigen::VectorXf bias = Eigen::VectorXf::Random(24);
  qsl::twd_dense_options options;
  options.factorization.basis_vectors = 16;
  const qsl::twd_dense layer = qsl::twd_dense::compress(w, bias, options);
  const qsl::twd_dense::matrix x = qsl::twd_dense::matrix::Random(3, 64);
  const qsl::twd_dense::matrix y = layer.forward(x);
  const Eigen::MatrixXf expected =
      (x * qsl::reconstruct(layer.code()).transpose()).rowwise() + bias.transpose();
  check_close(y, expected, "twd_dense::forward");

  const std::string path = temporary_path("qsl_consumer_twd.qsl");
  layer.save(path);
  const qsl::twd_dense loaded = qsl::twd_dense::load(path);
  std::remove(path.c_str());
  check_close(loaded.forward(x), y, "loaded twd_dense::forward");
}

void activations() {
  const qsl::row_matrix_f x = qsl::row_matrix_f::Random(4, 70);
  qsl::activation_quantizer quantizer;
  quantizer.bits = 8;
  const qsl::activation_code code = qsl::encode_activations(x, quantizer);
  qsl::row_matrix_f decoded = qsl::decode_activations(code);
  const float error = (decoded - x).cwiseAbs().maxCoeff();
  check(error <= 2.0f / 255.0f, "decode_activations: error " + std::to_string(error));
  decoded.resize(1, 1);
}

}  // namespace

int main() {
  try {
    dense_layer();
    decomposition();
    twd_layer();
    activations();
#ifdef QSL_CONSUMER_ONNX
    // The onnx component links and refuses bytes that are not a model with its own error.
    const std::uint8_t garbage[] = {0xFF, 0x01, 0x02, 0x03};
    bool refused = false;
    try {
      qsl::onnx::model::parse(garbage, sizeof garbage);
    } catch (const qsl::onnx::model_error&) {
      refused = true;
    }
    check(refused, "qsl::onnx: garbage parsed as an ONNX model");
#endif
#ifdef QSL_ONNXRUNTIME_LIBRARY
    // The installed operator library loads by path (finding libqsl.so beside it) and is this qsl.
    void* ops = dlopen(QSL_ONNXRUNTIME_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (ops == nullptr)
      throw failure{std::string("dlopen ") + QSL_ONNXRUNTIME_LIBRARY + ": " + dlerror()};
    using version_fn = const char* (*)();
    const auto version = reinterpret_cast<version_fn>(dlsym(ops, "qsl_onnxruntime_version"));
    check(version != nullptr && dlsym(ops, "RegisterCustomOps") != nullptr,
          "libqsl_onnxruntime exports no RegisterCustomOps / qsl_onnxruntime_version");
    const std::string expected = std::to_string(qsl::version_major) + "." +
                                 std::to_string(qsl::version_minor) + "." +
                                 std::to_string(qsl::version_patch);
    check(version() == expected, std::string("libqsl_onnxruntime is ") + version());
    dlclose(ops);
#endif
    std::printf("qsl consumer ok %d.%d.%d\n", qsl::version_major, qsl::version_minor,
                qsl::version_patch);
    return 0;
  } catch (const failure& f) {
    std::fprintf(stderr, "qsl consumer: %s\n", f.what.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qsl consumer: %s\n", e.what());
  }
  return 1;
}
