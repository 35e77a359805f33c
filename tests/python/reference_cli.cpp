// qsl-python-reference: the C++ side of the Python tests' bit-for-bit checks. The same layer
// file and .npy input go through the C++ API here and through qsl's Python module there, and
// the tests compare the bytes.
//   qsl-python-reference forward dense|twd LAYER X.npy Y.npy   y = layer(x), float32 .npy
//   qsl-python-reference compress W.npy BITS GROUP binary|ternary ACTIVATION_BITS OUT
//       quantized_dense::compress (default method, one group per row when GROUP is 0)
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "data_files.hpp"
#include "qsl/quantized_dense.hpp"
#include "qsl/twd_dense.hpp"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: qsl-python-reference forward dense|twd LAYER X.npy Y.npy\n"
               "       qsl-python-reference compress W.npy BITS GROUP binary|ternary KX OUT\n");
  return 2;
}

template <class Layer>
void forward(const std::string& layer_path, const std::string& x_path, const std::string& y_path) {
  const Layer layer = Layer::load(layer_path);
  const qsl::tools::array x = qsl::tools::read_npy(x_path);
  qsl::detail::require(x.shape.size() == 2 && x.shape[1] == layer.in_features(),
                       x_path + ": expected (batch, in_features)");
  std::vector<float> y(static_cast<std::size_t>(x.shape[0] * layer.out_features()));
  layer.forward(x.floats.data(), x.shape[0], y.data());
  qsl::tools::write_npy(y_path, {x.shape[0], layer.out_features()}, y);
}

}  // namespace

int main(int argc, char** argv) try {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 5 && args[0] == "forward") {
    if (args[1] == "dense")
      forward<qsl::quantized_dense>(args[2], args[3], args[4]);
    else if (args[1] == "twd")
      forward<qsl::twd_dense>(args[2], args[3], args[4]);
    else
      return usage();
    return 0;
  }
  if (args.size() == 7 && args[0] == "compress") {
    const qsl::tools::array w = qsl::tools::read_npy(args[1]);
    qsl::detail::require(w.shape.size() == 2, args[1] + ": expected a matrix");
    qsl::quantized_dense_options o;
    o.weights.bits = std::stoi(args[2]);
    o.weights.group_size = std::stoll(args[3]);
    o.weights.basis = args[4] == "ternary" ? qsl::basis::ternary : qsl::basis::binary;
    o.activation_bits = std::stoi(args[5]);
    qsl::quantized_dense::compress(w.floats.data(), w.shape[0], w.shape[1], nullptr, o)
        .save(args[6]);
    return 0;
  }
  return usage();
} catch (const std::exception& e) {
  std::fprintf(stderr, "qsl-python-reference: %s\n", e.what());
  return 1;
}
