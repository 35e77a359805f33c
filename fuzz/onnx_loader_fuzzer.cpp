// libFuzzer target for the ONNX loader: any bytes must either load as a valid model or raise a
// qsl::error (model_error), never crash, hang or leak. A model that loads is also read back
// (compressed_layers: DecodeWeights and DecodeFactorized nodes), planned by the executor
// (session: every operator and attribute check), and compressed (small, fast settings; TWD for
// every other input), so that those paths see fuzzed graphs too. Built with
// -DQSL_BUILD_FUZZERS=ON and clang; see docs/reliability.md.
#include <cstddef>
#include <cstdint>

#include "qsl/onnx.hpp"
#include "qsl/onnx_session.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    qsl::onnx::load_limits limits;
    limits.max_tensor_bytes = std::uint64_t{1} << 24;  // keep one execution fast
    qsl::onnx::model m = qsl::onnx::model::parse(data, size, limits);
    qsl::onnx::compressed_layers(m);
    try {
      const qsl::onnx::session plan(m);
    } catch (const qsl::error&) {
      // not a graph qsl-run can execute: still compress it below
    }
    qsl::onnx::compress_options options;
    options.weights.bits = 1;
    options.weights.method = qsl::method::greedy;
    options.weights.threads = 1;
    options.min_weights = 0;
    if (size % 2 == 1) {  // half the inputs take the TWD path
      options.twd_layers = {"*"};
      options.twd.basis_vectors = 1;
      options.twd.max_iterations = 2;
      options.twd.refine_iterations = 1;
      options.twd.threads = 1;
    }
    qsl::onnx::compress(m, options);
    m.serialize();
  } catch (const qsl::error&) {
    // malformed or unsupported input: the expected outcome for most fuzzed bytes
  }
  return 0;
}
