// qsl::onnx::calibration_collector: statistics from layer inputs computed by any runtime. Fed
// with the executor's own tensors it gives collect_calibration's statistics; its vectors are
// those each layer multiplies, checked against references written out here for every geometry
// (X's last axis, X's columns for MatMul(W, X) and Gemm transA, and convolution patches:
// depthwise, grouped, dilated, SAME_UPPER / SAME_LOWER padding, 1-D); bad feeds are named
// errors.
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
using testing::HasSubstr;

std::vector<float> normal_values(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// The sum of v v^T over `vectors` (each `width` values).
Eigen::MatrixXd gram_of(const std::vector<std::vector<float>>& vectors, std::int64_t width) {
  Eigen::MatrixXd g = Eigen::MatrixXd::Zero(width, width);
  for (const auto& v : vectors) {
    const Eigen::VectorXd e = Eigen::Map<const Eigen::VectorXf>(v.data(), width).cast<double>();
    g += e * e.transpose();
  }
  return g;
}

// The collector's statistics of `weight` match these vectors: their count, their Gram matrix
// (float blocks of <= 256 vectors summed in double: ~256 * 2^-24 relative to the sum of
// |products|, bounded here by 1e-4 of the largest entry times the vector count's blocks) and,
// with a reservoir larger than the stream, the vectors themselves in order.
void expect_statistics(const qsl::onnx::calibration_data& stats, const std::string& weight,
                       const std::vector<std::vector<float>>& vectors) {
  SCOPED_TRACE(weight);
  ASSERT_TRUE(stats.count(weight));
  const qsl::onnx::layer_calibration& c = stats.at(weight);
  const auto width = static_cast<std::int64_t>(vectors.front().size());
  ASSERT_EQ(c.width, width);
  ASSERT_EQ(c.vectors, static_cast<std::int64_t>(vectors.size()));
  const Eigen::MatrixXd expected = gram_of(vectors, width);
  Eigen::MatrixXd magnitude = Eigen::MatrixXd::Zero(width, width);
  for (const auto& v : vectors) {
    const Eigen::VectorXd e =
        Eigen::Map<const Eigen::VectorXf>(v.data(), width).cast<double>().cwiseAbs();
    magnitude += e * e.transpose();
  }
  EXPECT_LE(((c.gram() - expected).cwiseAbs().array() / (magnitude.array() + 1e-30)).maxCoeff(),
            1e-4);
  ASSERT_EQ(c.samples().rows(), c.vectors);
  for (std::size_t r = 0; r < vectors.size(); ++r)
    for (std::int64_t k = 0; k < width; ++k)
      ASSERT_EQ(c.samples()(static_cast<Eigen::Index>(r), k), vectors[r][k]) << r << ", " << k;
}

qsl::onnx::calibration_options keep_everything() {
  qsl::onnx::calibration_options o;
  o.max_samples = 1000000;
  return o;
}

TEST(CalibrationCollector, OnTheExecutorsTensorsItGivesCollectCalibrationsStatistics) {
  const qsl::onnx::model m = qsl::onnx::model::load(QSL_BUNDLED_MODEL);
  const std::int64_t n = 3;
  const std::vector<float> x = normal_values(static_cast<std::size_t>(n * 784), 3);
  qsl::onnx::calibration_collector collector(m, keep_everything());
  ASSERT_EQ(collector.tensors().size(), 4u);  // two convolutions, two dense layers
  // The executor computes the layer inputs as graph outputs of the augmented model.
  const std::vector<std::uint8_t> bytes = qsl::onnx::serialize_with_outputs(m, collector.tensors());
  const qsl::onnx::model augmented = qsl::onnx::model::parse(bytes.data(), bytes.size());
  const qsl::onnx::session s(augmented);
  const auto outputs = s.run({{{n, 1, 28, 28}, x}});
  std::size_t fed = 0;
  for (std::size_t i = 0; i < outputs.size(); ++i)
    for (const std::string& t : collector.tensors())
      if (t == s.output_names()[i]) {
        collector.add(t, outputs[i].shape, outputs[i].data.data());
        ++fed;
      }
  // The first convolution reads the graph input, which is not an added output.
  for (const std::string& t : collector.tensors())
    if (t == s.input_names()[0]) {
      collector.add(t, {n, 1, 28, 28}, x.data());
      ++fed;
    }
  ASSERT_EQ(fed, 4u);
  const auto got = collector.finish();
  const auto expected = qsl::onnx::collect_calibration(m, x.data(), n, keep_everything());
  ASSERT_EQ(got.size(), expected.size());
  for (const auto& [weight, e] : expected) {
    SCOPED_TRACE(weight);
    const auto& g = got.at(weight);
    ASSERT_EQ(g.width, e.width);
    ASSERT_EQ(g.vectors, e.vectors);
    EXPECT_EQ(g.sample_values, e.sample_values);  // the same vectors in the same order
    const double scale = e.gram().cwiseAbs().maxCoeff();
    EXPECT_LE((g.gram() - e.gram()).cwiseAbs().maxCoeff(), 1e-4 * scale);  // other float blocks
  }
}

TEST(CalibrationCollector, MatMulWithTheWeightOnTheLeftSeesTheColumnsOfX) {
  const qsl::onnx::model m = qsl::onnx::model::load(std::string(QSL_TEST_MODELS) + "/left_weight.onnx");
  qsl::onnx::calibration_collector collector(m, keep_everything());
  ASSERT_EQ(collector.tensors(), (std::vector<std::string>{"x", "r"}));
  // x [2, 3, 40, 4]: W1 [24, 40] multiplies each of the 2 x 3 slices' 4 columns.
  const std::vector<float> x = normal_values(2 * 3 * 40 * 4, 5);
  collector.add("x", {2, 3, 40, 4}, x.data());
  std::vector<std::vector<float>> columns;
  for (int slice = 0; slice < 6; ++slice)
    for (int col = 0; col < 4; ++col) {
      std::vector<float> v(40);
      for (int k = 0; k < 40; ++k) v[k] = x[static_cast<std::size_t>((slice * 40 + k) * 4 + col)];
      columns.push_back(v);
    }
  expect_statistics(collector.finish(), "w1", columns);
}

TEST(CalibrationCollector, GemmWithTransASeesTheColumnsOfA) {
  const qsl::onnx::model m =
      qsl::onnx::model::load(std::string(QSL_TEST_MODELS) + "/gemm_variants.onnx");
  qsl::onnx::calibration_collector collector(m, keep_everything());
  // g_trans_a reads x_t [64, N] (transA: its columns are the vectors).
  const std::int64_t n = 5;
  const std::vector<float> a = normal_values(static_cast<std::size_t>(64 * n), 7);
  collector.add("x_t", {64, n}, a.data());
  std::vector<std::vector<float>> columns;
  for (std::int64_t col = 0; col < n; ++col) {
    std::vector<float> v(64);
    for (int k = 0; k < 64; ++k) v[k] = a[static_cast<std::size_t>(k * n + col)];
    columns.push_back(v);
  }
  expect_statistics(collector.finish(), "w1", columns);
}

// A convolution's patches, written out: padding begins, strides, dilations per axis.
struct conv_case {
  std::string weight;
  std::int64_t groups, channels_per_group;
  std::vector<std::int64_t> kernel, strides, dilations, pad_begin, out;
};

std::vector<std::vector<float>> patches(const std::vector<float>& x,
                                        const std::vector<std::int64_t>& shape,
                                        const conv_case& c) {
  const bool two = shape.size() == 4;
  const std::int64_t h = two ? shape[2] : 1, w = shape.back(), channels = shape[1];
  const std::int64_t kh = two ? c.kernel[0] : 1, kw = c.kernel.back();
  const std::int64_t sh = two ? c.strides[0] : 1, sw = c.strides.back();
  const std::int64_t dh = two ? c.dilations[0] : 1, dw = c.dilations.back();
  const std::int64_t ph = two ? c.pad_begin[0] : 0, pw = c.pad_begin.back();
  const std::int64_t oh = two ? c.out[0] : 1, ow = c.out.back();
  std::vector<std::vector<float>> out;
  for (std::int64_t image = 0; image < shape[0]; ++image)
    for (std::int64_t g = 0; g < c.groups; ++g)
      for (std::int64_t y = 0; y < oh; ++y)
        for (std::int64_t xo = 0; xo < ow; ++xo) {
          std::vector<float> v;
          for (std::int64_t ch = 0; ch < c.channels_per_group; ++ch)
            for (std::int64_t i = 0; i < kh; ++i)
              for (std::int64_t j = 0; j < kw; ++j) {
                const std::int64_t row = y * sh - ph + i * dh, col = xo * sw - pw + j * dw;
                const std::int64_t channel = g * c.channels_per_group + ch;
                v.push_back(row < 0 || row >= h || col < 0 || col >= w
                                ? 0.0f
                                : x[static_cast<std::size_t>(((image * channels + channel) * h + row) * w + col)]);
              }
          out.push_back(v);
        }
  return out;
}

TEST(CalibrationCollector, ConvolutionsSeeTheirPatchesInEveryGeometry) {
  const qsl::onnx::model m =
      qsl::onnx::model::load(std::string(QSL_TEST_MODELS) + "/convolutions.onnx");
  qsl::onnx::calibration_collector collector(m, keep_everything());
  ASSERT_EQ(collector.tensors(), (std::vector<std::string>{"x", "x1d"}));
  const std::vector<std::int64_t> shape = {2, 4, 9, 11}, shape_1d = {2, 6, 13};
  const std::vector<float> x = normal_values(2 * 4 * 9 * 11, 11), x1d = normal_values(2 * 6 * 13, 12);
  collector.add("x", shape, x.data());
  collector.add("x1d", shape_1d, x1d.data());
  const auto stats = collector.finish();
  // ONNX's SAME_*: output ceil(size / stride), total pad (out - 1) stride + span - size, the
  // odd one at the end (UPPER) or the beginning (LOWER).
  //   depthwise 3x3, strides [2, 1], SAME_UPPER on 9 x 11: out 5 x 11, total pads 2 and 2,
  //   one at each end.
  expect_statistics(stats, "w_dw", patches(x, shape, {"w_dw", 4, 1, {3, 3}, {2, 1}, {1, 1},
                                                      {1, 1}, {5, 11}}));
  //   grouped 2x3, dilations [2, 1], strides [1, 2], pads [1, 0, 0, 2]: out 8 x 6.
  expect_statistics(stats, "w_g2", patches(x, shape, {"w_g2", 2, 2, {2, 3}, {1, 2}, {2, 1},
                                                      {1, 0}, {8, 6}}));
  //   2x2, strides 2, SAME_LOWER on 9 x 11: out 5 x 6, total pads 1 and 1, both at the start.
  expect_statistics(stats, "w_low", patches(x, shape, {"w_low", 1, 4, {2, 2}, {2, 2}, {1, 1},
                                                       {1, 1}, {5, 6}}));
  //   1-D 3, group 2, dilation 2, pads [1, 2] on 13: out 12.
  expect_statistics(stats, "w_1d", patches(x1d, shape_1d, {"w_1d", 2, 3, {3}, {1}, {2}, {1},
                                                           {12}}));
}

TEST(CalibrationCollector, BadFeedsAreNamedErrors) {
  const qsl::onnx::model m =
      qsl::onnx::model::load(std::string(QSL_TEST_MODELS) + "/convolutions.onnx");
  qsl::onnx::calibration_collector collector(m);
  std::vector<float> x = normal_values(2 * 4 * 9 * 11, 1);
  EXPECT_THAT(error_of([&] { collector.add("y_dw", {2, 4, 9, 11}, x.data()); }),
              HasSubstr("no layer reads tensor 'y_dw'"));
  EXPECT_THAT(error_of([&] { collector.add("x", {2, 5, 9, 11}, x.data()); }),
              HasSubstr("reads a tensor of shape [2, 5, 9, 11]; expected N x 4"));
  EXPECT_THAT(error_of([&] { collector.add("x", {2, 4, 99}, x.data()); }),
              HasSubstr("layer 'depthwise' (weight 'w_dw') reads a tensor of shape [2, 4, 99]"));
  EXPECT_THAT(error_of([&] { collector.add("x", {2, -1, 9, 11}, x.data()); }),
              HasSubstr("has shape [2, -1, 9, 11]"));
  x[17] = std::numeric_limits<float>::infinity();
  EXPECT_THAT(error_of([&] { collector.add("x", {2, 4, 9, 11}, x.data()); }),
              HasSubstr("has NaN or Inf values"));
  EXPECT_THAT(error_of([&] { qsl::onnx::serialize_with_outputs(m, {"nowhere"}); }),
              HasSubstr("no node of the main graph produces 'nowhere'"));
  qsl::onnx::calibration_options o;
  o.max_width = 0;
  EXPECT_THAT(error_of([&] { qsl::onnx::calibration_collector bad(m, o); }),
              HasSubstr("options.max_width is 0"));
}

TEST(CalibrationCollector, LayersWiderThanMaxWidthGetNoStatistics) {
  const qsl::onnx::model m =
      qsl::onnx::model::load(std::string(QSL_TEST_MODELS) + "/convolutions.onnx");
  qsl::onnx::calibration_options o;
  o.max_width = 10;  // the depthwise (9 values per patch) only
  qsl::onnx::calibration_collector collector(m, o);
  const std::vector<float> x = normal_values(2 * 4 * 9 * 11, 2);
  collector.add("x", {2, 4, 9, 11}, x.data());
  const auto stats = collector.finish();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats.begin()->first, "w_dw");
}

}  // namespace
