// qsl::onnx::session's accelerator plumbing, without a GPU: a stand-in accelerator that runs
// each compressed layer with its own CPU kernels must be asked for every compressed layer,
// must run every compressed Gemm and Conv, and must give exactly the CPU backend's outputs.
// (Operators are checked against ONNX Runtime by tests/onnx/check_ops.py; qsl-run with the real
// qsl::cuda accelerator by tools/gpu-check.sh on a GPU.)
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <random>

#include "qsl/onnx_session.hpp"
#include "test_util.hpp"

namespace {

// The bundled model with 2-bit codes; with `twd`, FC1 factorized with a shared ternary basis
// of 16 vectors instead.
qsl::onnx::model compressed_bundled_model(bool twd = false) {
  qsl::onnx::model m = qsl::onnx::model::load(QSL_BUNDLED_MODEL);
  qsl::onnx::compress_options o;
  o.weights.bits = 2;
  o.weights.group_size = 128;
  o.small_batch_bits = 0;  // float activations on every CPU, as the accelerators take them
  if (twd) {
    o.twd_layers = {"/classifier/classifier.1/*"};
    o.twd.basis_vectors = 16;
    o.twd.refine_iterations = 2;
  }
  qsl::onnx::compress(m, o);
  return m;
}

qsl::onnx::tensor random_images(std::int64_t n) {
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  qsl::onnx::tensor t{{n, 1, 28, 28}, std::vector<float>(static_cast<std::size_t>(n * 784))};
  for (float& v : t.data) v = pixel(rng);
  return t;
}

TEST(OnnxSession, AcceleratorRunsEveryCompressedLayerWithTheCpuResults) {
  const qsl::onnx::model m = compressed_bundled_model();
  const qsl::onnx::session cpu(m);
  ASSERT_EQ(cpu.compressed_layers(), 3u);  // conv 2, FC 1, FC 2 (conv 1 is under min_weights)

  auto built = std::make_shared<std::atomic<int>>(0);
  auto calls = std::make_shared<std::atomic<int>>(0);
  qsl::onnx::session_options o;
  o.device = qsl::onnx::backend::cuda;
  o.accelerator = [built, calls](const qsl::quantized_dense& layer) -> qsl::onnx::layer_runner {
    ++*built;
    auto own = std::make_shared<qsl::quantized_dense>(layer);
    return [own, calls](const float* x, std::int64_t batch, float* y) {
      ++*calls;
      own->forward(x, batch, y);
    };
  };
  const qsl::onnx::session accelerated(m, o);
  EXPECT_EQ(built->load(), 3);
  const auto x = random_images(5);
  const auto expected = cpu.run({x});
  const auto got = accelerated.run({x});
  EXPECT_GE(calls->load(), 3);  // one call per layer at least (a convolution may take chunks)
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_EQ(got[0].shape, expected[0].shape);
  EXPECT_EQ(got[0].data, expected[0].data);
}

// A TWD layer hands its ternary basis step (K rows of coefficient 1) to the accelerator and
// keeps the K-deep mixing product on the CPU; the outputs equal the CPU backend's exactly.
TEST(OnnxSession, AcceleratorRunsTheBasisStepOfTwdLayers) {
  const qsl::onnx::model m = compressed_bundled_model(true);
  std::vector<std::int64_t> rows;
  qsl::onnx::session_options o;
  o.device = qsl::onnx::backend::cuda;
  o.accelerator = [&rows](const qsl::quantized_dense& layer) -> qsl::onnx::layer_runner {
    rows.push_back(layer.out_features());
    auto own = std::make_shared<qsl::quantized_dense>(layer);
    return [own](const float* x, std::int64_t batch, float* y) { own->forward(x, batch, y); };
  };
  const qsl::onnx::session accelerated(m, o);
  EXPECT_EQ(rows, (std::vector<std::int64_t>{64, 16, 10}));  // conv 2, FC1's basis, FC2
  const auto x = random_images(3);
  const auto expected = qsl::onnx::session(m).run({x});
  EXPECT_EQ(accelerated.run({x})[0].data, expected[0].data);
}

// With twd_accelerator set, a TWD layer goes to it whole (basis and mixing), with its activation
// quantizer; the other layers still go through `accelerator`.
TEST(OnnxSession, TwdAcceleratorTakesWholeTwdLayers) {
  const qsl::onnx::model m = compressed_bundled_model(true);
  std::vector<std::int64_t> rows, twd_basis;
  qsl::onnx::session_options o;
  o.device = qsl::onnx::backend::cuda;
  o.activation_bits = 4;
  o.accelerator = [&rows](const qsl::quantized_dense& layer) -> qsl::onnx::layer_runner {
    rows.push_back(layer.out_features());
    auto own = std::make_shared<qsl::quantized_dense>(layer);
    return [own](const float* x, std::int64_t batch, float* y) { own->forward(x, batch, y); };
  };
  o.twd_accelerator = [&twd_basis](const qsl::twd_dense& layer) -> qsl::onnx::layer_runner {
    twd_basis.push_back(layer.basis_vectors());
    EXPECT_EQ(layer.bias().size(), 512u);  // the fused QuantizedTwd holds the Gemm's bias
    EXPECT_EQ(layer.activations().bits, 4);
    auto own = std::make_shared<qsl::twd_dense>(layer);
    return [own](const float* x, std::int64_t batch, float* y) { own->forward(x, batch, y); };
  };
  const qsl::onnx::session accelerated(m, o);
  EXPECT_EQ(rows, (std::vector<std::int64_t>{64, 10}));  // conv 2, FC2
  EXPECT_EQ(twd_basis, (std::vector<std::int64_t>{16}));  // FC1
  qsl::onnx::session_options cpu_options;
  cpu_options.activation_bits = 4;
  const auto x = random_images(3);
  const auto expected = qsl::onnx::session(m, cpu_options).run({x})[0];
  const auto got = accelerated.run({x})[0];
  ASSERT_EQ(got.shape, expected.shape);
  // Same kernels; only the mixing GEMM's summation may differ (twd_dense vs the executor's own
  // call), so the logits agree to float rounding of a 16-term sum.
  for (std::size_t i = 0; i < got.data.size(); ++i)
    EXPECT_NEAR(got.data[i], expected.data[i], 1e-4f * (1 + std::abs(expected.data[i])));
}

TEST(OnnxSession, CudaBackendWithoutAcceleratorIsANamedError) {
  const qsl::onnx::model m = compressed_bundled_model();
  qsl::onnx::session_options o;
  o.device = qsl::onnx::backend::cuda;
  EXPECT_NE(qsl::test::error_of([&] { qsl::onnx::session s(m, o); })
                .find("the cuda backend needs session_options::accelerator"),
            std::string::npos);
}

}  // namespace
