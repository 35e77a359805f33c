// Sequential calibration (compress_options::sequential_passes): each later group of layers is
// decomposed against the statistics of the model with the layers before it compressed. On the
// bundled CNN: what recalibrate is handed is the fp32 model with exactly the earlier layers'
// decoded codes in place, each code is the decomposition against statistics collected
// independently from such a model, one layer is the plain compression, and a budget keeps its
// allocation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "qsl/onnx.hpp"
#include "qsl/onnx_calibration.hpp"
#include "test_util.hpp"

namespace {

using qsl::test::error_of;
using testing::HasSubstr;

// The compressed layers; the 512 x 3136 classifier.1 stays fp32 (its error feedback alone
// takes seconds) between them.
const std::vector<std::string> weights = {"features.0.weight", "onnx::Conv_26",
                                          "classifier.4.weight"};

std::vector<float> random_images(std::int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(n * 784));
  for (float& x : v) x = pixel(rng);
  return v;
}

qsl::onnx::model bundled() { return qsl::onnx::model::load(QSL_BUNDLED_MODEL); }

qsl::onnx::compress_options options(const qsl::onnx::calibration_data& stats) {
  qsl::onnx::compress_options o;
  o.weights.bits = 2;
  o.weights.group_size = 64;
  o.weights.method = qsl::method::greedy;  // quick; any method's codes are deterministic
  o.weights.error_feedback = true;
  o.min_weights = 0;  // the 288-weight convolution too
  o.skip = {"classifier.1.weight"};
  o.calibration = &stats;
  return o;
}

// The layer's decoded code laid out as its tensor (row-major in the tensor's own shape).
std::vector<float> decoded_tensor(const qsl::onnx::compressed_layer& l) {
  const Eigen::MatrixXf w = qsl::reconstruct(l.code);
  std::vector<float> out(static_cast<std::size_t>(w.size()));
  for (Eigen::Index r = 0; r < w.rows(); ++r)
    for (Eigen::Index c = 0; c < w.cols(); ++c)
      out[static_cast<std::size_t>(l.transposed ? c * w.rows() + r : r * w.cols() + c)] = w(r, c);
  return out;
}

std::map<std::string, qsl::onnx::compressed_layer> layers_of(const qsl::onnx::model& m) {
  std::map<std::string, qsl::onnx::compressed_layer> out;
  for (auto& l : qsl::onnx::compressed_layers(m)) out[l.weight] = l;
  return out;
}

// The model with `replaced`'s weights holding the given values.
qsl::onnx::model with_constants(const std::map<std::string, std::vector<float>>& replaced) {
  qsl::onnx::model m = bundled();
  for (const auto& [name, values] : replaced) {
    const auto bytes = qsl::onnx::serialize_with_constant(m, name, values);
    m = qsl::onnx::model::parse(bytes.data(), bytes.size());
  }
  return m;
}

TEST(OnnxSequential, LaterGroupsAreCalibratedOnTheModelCompressedSoFar) {
  const std::int64_t n = 24;
  const auto x = random_images(n, 5);
  const qsl::onnx::model original = bundled();
  const auto plain = qsl::onnx::collect_calibration(original, x.data(), n);
  auto o = options(plain);
  o.sequential_passes = 3;  // one layer per group
  std::vector<std::map<std::string, std::vector<float>>> handed;  // per call: every weight
  o.recalibrate = [&](const qsl::onnx::model& shadow) {
    handed.emplace_back();
    for (const auto& w : weights) handed.back()[w] = qsl::onnx::read_constant(shadow, w).values;
    return qsl::onnx::collect_calibration(shadow, x.data(), n);
  };
  qsl::onnx::model m = bundled();
  const auto report = qsl::onnx::compress(m, o);
  ASSERT_EQ(handed.size(), 2u);  // before the 2nd and the 3rd layer
  const auto codes = layers_of(m);
  ASSERT_EQ(codes.size(), 3u);
  for (std::size_t call = 0; call < handed.size(); ++call)
    for (std::size_t k = 0; k < weights.size(); ++k) {  // classifier.1 never changes
      SCOPED_TRACE("call " + std::to_string(call) + ", " + weights[k]);
      const std::vector<float> expected = k <= call
                                              ? decoded_tensor(codes.at(weights[k]))
                                              : qsl::onnx::read_constant(original, weights[k]).values;
      EXPECT_EQ(handed[call].at(weights[k]), expected);
    }
  // Each code is the decomposition against statistics collected here from the fp32 model
  // with the earlier layers' codes in place (the first against the plain statistics).
  std::map<std::string, std::vector<float>> earlier;
  for (std::size_t k = 0; k < weights.size(); ++k) {
    SCOPED_TRACE(weights[k]);
    const auto stats = qsl::onnx::collect_calibration(with_constants(earlier), x.data(), n);
    const qsl::onnx::compressed_layer& l = codes.at(weights[k]);
    const auto t = qsl::onnx::read_constant(original, weights[k]);
    Eigen::MatrixXf w(l.code.rows, l.code.cols);
    for (Eigen::Index r = 0; r < w.rows(); ++r)
      for (Eigen::Index c = 0; c < w.cols(); ++c)
        w(r, c) = t.values[static_cast<std::size_t>(l.transposed ? c * w.rows() + r
                                                                  : r * w.cols() + c)];
    qsl::decompose_options d = o.weights;
    d.calibration = stats.at(weights[k]).factor();
    EXPECT_EQ(qsl::reconstruct(l.code), qsl::reconstruct(qsl::decompose(w, d)));
    earlier[weights[k]] = decoded_tensor(l);
  }
  for (const auto& l : report.layers) {
    if (l.compressed) {
      EXPECT_TRUE(l.calibrated) << l.weight;
    }
  }
}

TEST(OnnxSequential, OneLayerIsThePlainCompression) {
  const std::int64_t n = 16;
  const auto x = random_images(n, 6);
  const auto plain = qsl::onnx::collect_calibration(bundled(), x.data(), n);
  auto o = options(plain);
  o.skip = {"features.0.weight", "classifier.1.weight", "classifier.4.weight"};
  qsl::onnx::model reference = bundled();
  qsl::onnx::compress(reference, o);
  int calls = 0;
  o.sequential_passes = 8;
  o.recalibrate = [&](const qsl::onnx::model& shadow) {
    ++calls;
    return qsl::onnx::collect_calibration(shadow, x.data(), n);
  };
  qsl::onnx::model m = bundled();
  qsl::onnx::compress(m, o);
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(m.serialize(), reference.serialize());
}

TEST(OnnxSequential, BudgetKeepsItsAllocation) {
  const std::int64_t n = 16;
  const auto x = random_images(n, 7);
  const auto plain = qsl::onnx::collect_calibration(bundled(), x.data(), n);
  auto o = options(plain);
  o.budget_bits = 2.25;
  o.budget_choices = {1, 2, 3};
  qsl::onnx::model reference = bundled();
  const auto expected = qsl::onnx::compress(reference, o);
  o.sequential_passes = 2;
  int calls = 0;
  o.recalibrate = [&](const qsl::onnx::model& shadow) {
    ++calls;
    return qsl::onnx::collect_calibration(shadow, x.data(), n);
  };
  qsl::onnx::model m = bundled();
  const auto got = qsl::onnx::compress(m, o);
  EXPECT_EQ(calls, 1);
  ASSERT_EQ(got.layers.size(), expected.layers.size());
  for (std::size_t i = 0; i < got.layers.size(); ++i) {
    SCOPED_TRACE(got.layers[i].weight);
    EXPECT_EQ(got.layers[i].bits, expected.layers[i].bits);
    EXPECT_EQ(got.layers[i].group_size, expected.layers[i].group_size);
    EXPECT_EQ(got.layers[i].bytes_after, expected.layers[i].bytes_after);
  }
  EXPECT_EQ(got.weight_bytes_after, expected.weight_bytes_after);
  // The second group's codes were decomposed anew: against other statistics, other codes.
  const auto a = layers_of(m), b = layers_of(reference);
  EXPECT_EQ(qsl::reconstruct(a.at(weights[0]).code), qsl::reconstruct(b.at(weights[0]).code));
  EXPECT_NE(qsl::reconstruct(a.at(weights[2]).code), qsl::reconstruct(b.at(weights[2]).code));
}

TEST(OnnxSequential, BadSettingsAndFailingRecalibrationsAreNamedErrors) {
  const std::int64_t n = 4;
  const auto x = random_images(n, 8);
  const auto plain = qsl::onnx::collect_calibration(bundled(), x.data(), n);
  auto o = options(plain);
  o.sequential_passes = -1;
  qsl::onnx::model m = bundled();
  EXPECT_THAT(error_of([&] { qsl::onnx::compress(m, o); }),
              HasSubstr("sequential_passes is -1; expected >= 0"));
  o.sequential_passes = 2;
  EXPECT_THAT(error_of([&] { qsl::onnx::compress(m, o); }),
              HasSubstr("needs calibration statistics and a recalibrate callback"));
  o.recalibrate = [](const qsl::onnx::model&) -> qsl::onnx::calibration_data {
    throw qsl::error("the runtime is gone");
  };
  const std::string failed = error_of([&] { qsl::onnx::compress(m, o); });
  EXPECT_THAT(failed, HasSubstr("recalibrating (pass 2 of 2, from weight 'classifier.4.weight'"));
  EXPECT_THAT(failed, HasSubstr("the runtime is gone"));
  o.recalibrate = [](const qsl::onnx::model&) -> qsl::onnx::calibration_data {
    throw qsl::onnx::model_error("a layer input is NaN");
  };
  m = bundled();
  EXPECT_THROW(qsl::onnx::compress(m, o), qsl::onnx::model_error);
}

}  // namespace
