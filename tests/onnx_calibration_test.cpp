// qsl::onnx::collect_calibration and calibrated compression, on the bundled Fashion-MNIST CNN:
// the statistics are those of the inputs each layer really sees (checked against the layer
// observer and against im2col), the calibrated activation quantizers survive the qsl format,
// the executor uses them, and bad calibration input is a named error.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "qsl/onnx_calibration.hpp"
#include "qsl/onnx_session.hpp"
#include "test_util.hpp"

namespace {

using qsl::test::error_of;

std::vector<float> random_images(std::int64_t n, unsigned seed = 17) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(n * 784));
  for (float& x : v) x = pixel(rng);
  return v;
}

// The bundled model's layers as the executor feeds them: weight name -> every input vector.
std::map<std::string, std::vector<std::vector<float>>> observed_inputs(const qsl::onnx::model& m,
                                                                      const std::vector<float>& x,
                                                                      std::int64_t n) {
  std::map<std::string, std::vector<std::vector<float>>> seen;
  qsl::onnx::session_options o;
  o.observer = [&](const std::string& weight, const float* v, std::int64_t rows, std::int64_t cols) {
    for (std::int64_t r = 0; r < rows; ++r) seen[weight].emplace_back(v + r * cols, v + (r + 1) * cols);
  };
  const qsl::onnx::session s(m, o);
  s.run({{{n, 1, 28, 28}, x}});
  return seen;
}

TEST(OnnxCalibration, GramAndSamplesAreThoseOfTheObservedInputs) {
  const qsl::onnx::model m = qsl::onnx::model::load(QSL_BUNDLED_MODEL);
  const std::int64_t n = 3;
  const auto x = random_images(n);
  const auto seen = observed_inputs(m, x, n);
  qsl::onnx::calibration_options o;
  o.batch = 2;             // two runs: statistics must add up across batches
  o.max_samples = 100000;  // keep every vector
  const auto stats = qsl::onnx::collect_calibration(m, x.data(), n, o);
  ASSERT_EQ(stats.size(), 4u);  // two convolutions, two dense layers
  ASSERT_EQ(seen.size(), 4u);
  for (const auto& [weight, vectors] : seen) {
    SCOPED_TRACE(weight);
    const qsl::onnx::layer_calibration& c = stats.at(weight);
    const auto d = static_cast<std::int64_t>(vectors.front().size());
    ASSERT_EQ(c.width, d);
    ASSERT_EQ(c.vectors, static_cast<std::int64_t>(vectors.size()));
    ASSERT_EQ(c.samples().rows(), c.vectors);
    Eigen::MatrixXd gram = Eigen::MatrixXd::Zero(d, d);
    for (const auto& v : vectors) {
      const Eigen::VectorXd e = Eigen::Map<const Eigen::VectorXf>(v.data(), d).cast<double>();
      gram += e * e.transpose();
    }
    // Float blocks of <= 256 vectors, summed in double: relative error ~ 256 * 2^-24 per
    // entry against the sum of |products|, which for these non-negative inputs is the entry.
    const double scale = gram.cwiseAbs().maxCoeff();
    EXPECT_LE((c.gram() - gram).cwiseAbs().maxCoeff(), 1e-4 * scale);
    // Every vector is kept (reservoir larger than the stream), in order.
    for (std::size_t r = 0; r < vectors.size(); r += 97)
      for (std::int64_t k = 0; k < d; ++k)
        ASSERT_EQ(c.samples()(static_cast<Eigen::Index>(r), k), vectors[r][k]);
  }
}

TEST(OnnxCalibration, ReservoirKeepsAtMostMaxSamples) {
  const qsl::onnx::model m = qsl::onnx::model::load(QSL_BUNDLED_MODEL);
  const auto x = random_images(4);
  qsl::onnx::calibration_options o;
  o.max_samples = 10;
  const auto stats = qsl::onnx::collect_calibration(m, x.data(), 4, o);
  for (const auto& [weight, c] : stats) {
    SCOPED_TRACE(weight);
    EXPECT_EQ(c.samples().rows(), std::min<std::int64_t>(10, c.vectors));
    EXPECT_EQ(c.samples().cols(), c.width);
  }
  // The factor stands in for the inputs: E^T E = gram / vectors (+ a tiny ridge).
  const auto& fc = stats.rbegin()->second;
  const Eigen::MatrixXd e = fc.factor().cast<double>();
  const Eigen::MatrixXd h = fc.gram() / static_cast<double>(fc.vectors);
  EXPECT_LE((e.transpose() * e - h).cwiseAbs().maxCoeff(), 1e-3 * h.diagonal().mean());
}

TEST(OnnxCalibration, BadInputsAreNamedErrors) {
  const qsl::onnx::model m = qsl::onnx::model::load(QSL_BUNDLED_MODEL);
  auto x = random_images(2);
  EXPECT_THAT(error_of([&] { qsl::onnx::collect_calibration(m, x.data(), 0); }), testing::HasSubstr("count is 0"));
  EXPECT_THAT(error_of([&] { qsl::onnx::collect_calibration(m, nullptr, 2); }), testing::HasSubstr("inputs is null"));
  qsl::onnx::calibration_options o;
  o.batch = 0;
  EXPECT_THAT(error_of([&] { qsl::onnx::collect_calibration(m, x.data(), 2, o); }), testing::HasSubstr("options.batch is 0"));
  x[784 + 5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(error_of([&] { qsl::onnx::collect_calibration(m, x.data(), 2); }), testing::HasSubstr("input 1 has nan at position 5"));
}

TEST(OnnxCalibration, CompressedLayersCarryCalibratedQuantizersThatTheExecutorUses) {
  qsl::onnx::model m = qsl::onnx::model::load(QSL_BUNDLED_MODEL);
  const std::int64_t n = 64;
  const auto x = random_images(n, 5);
  const auto stats = qsl::onnx::collect_calibration(m, x.data(), n);
  qsl::onnx::compress_options o;
  o.weights.bits = 2;
  o.weights.group_size = 128;
  o.calibration = &stats;
  const auto report = qsl::onnx::compress(m, o);
  int calibrated = 0;
  for (const auto& l : report.layers)
    if (l.compressed) {
      EXPECT_TRUE(l.calibrated) << l.node;
      EXPECT_GT(l.relative_output_error, 0) << l.node;
      EXPECT_LT(l.relative_output_error, 1) << l.node;
      ++calibrated;
    }
  EXPECT_EQ(calibrated, 3);

  const auto layers = qsl::onnx::compressed_layers(m);
  ASSERT_EQ(layers.size(), 3u);
  for (const auto& l : layers) {
    SCOPED_TRACE(l.weight);
    ASSERT_EQ(l.activations.size(), 8u);
    for (int b = 1; b <= 8; ++b) {
      const qsl::activation_quantizer expected =
          qsl::calibrate_activations(stats.at(l.weight).samples(), b);
      const qsl::activation_quantizer& got = l.activations[static_cast<std::size_t>(b - 1)];
      EXPECT_EQ(got.bits, b);
      EXPECT_TRUE(got.calibrated);
      EXPECT_EQ(got.step, expected.step);
      EXPECT_EQ(got.minimum, expected.minimum);
    }
  }
  // With 4 activation bits the executor encodes with the stored quantizers, unless told not to.
  qsl::onnx::session_options with, without;
  with.activation_bits = without.activation_bits = 4;
  without.calibrated_activations = false;
  const qsl::onnx::tensor in{{n, 1, 28, 28}, x};
  const auto a = qsl::onnx::session(m, with).run({in});
  const auto b = qsl::onnx::session(m, without).run({in});
  EXPECT_NE(a[0].data, b[0].data);
  // Both stay close to the float run (the quantizers are sane).
  const auto f = qsl::onnx::session(m).run({in});
  double err_a = 0, err_b = 0, norm = 0;
  for (std::size_t i = 0; i < f[0].data.size(); ++i) {
    err_a += std::pow(a[0].data[i] - f[0].data[i], 2);
    err_b += std::pow(b[0].data[i] - f[0].data[i], 2);
    norm += std::pow(f[0].data[i], 2);
  }
  EXPECT_LT(err_a, 0.1 * norm);
  EXPECT_LT(err_b, 0.1 * norm);
}

}  // namespace
