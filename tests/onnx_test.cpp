// qsl::onnx: loading, compressing in both formats, reading qsl layers back, refusing bad input.
// The models come from tests/onnx/make_models.py (a CTest fixture writes them to
// QSL_TEST_MODELS); the ONNX Runtime check of the standard format is tests/onnx/round_trip.sh.
#include "qsl/cpu.hpp"
#include "qsl/onnx.hpp"
#include "qsl/onnx_calibration.hpp"
#include "qsl/onnx_session.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "onnx/proto.hpp"  // to craft malformed models
#include "test_util.hpp"

namespace {

namespace fs = std::filesystem;
using qsl::test::error_of;
using testing::HasSubstr;

const std::string models = QSL_TEST_MODELS;

// A fresh folder per test under the system temp directory, removed afterwards.
class Onnx : public testing::Test {
 protected:
  void SetUp() override {
    folder_ = fs::temp_directory_path() /
              ("qsl-onnx-" + std::to_string(::getpid()) + "-" +
               testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(folder_);
    fs::create_directories(folder_);
  }
  void TearDown() override { fs::remove_all(folder_); }
  std::string path(const std::string& name) const { return (folder_ / name).string(); }

 private:
  fs::path folder_;
};

qsl::onnx::compress_options options(int bits, std::int64_t group) {
  qsl::onnx::compress_options o;
  o.weights.bits = bits;
  o.weights.group_size = group;
  o.min_weights = 420;  // the Conv (432 weights) too, not the last Gemm (400)
  o.int8_min_rows = 0;  // float activations: the tests of 8-bit ones set it
  return o;
}

// W (outputs x inputs) of a layer from the original model's constant.
Eigen::MatrixXf original_w(const qsl::onnx::model& m, const qsl::onnx::compressed_layer& l) {
  const auto t = qsl::onnx::read_constant(m, l.weight);
  const std::int64_t rows = l.code.rows, cols = l.code.cols;
  Eigen::MatrixXf w(rows, cols);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      w(r, c) = l.transposed ? t.values[static_cast<std::size_t>(c * rows + r)]
                             : t.values[static_cast<std::size_t>(r * cols + c)];
  return w;
}

std::string error_text(const std::function<void()>& f, bool& was_model_error) {
  was_model_error = false;
  try {
    f();
  } catch (const qsl::onnx::model_error& e) {
    was_model_error = true;
    return e.what();
  } catch (const qsl::error& e) {
    return e.what();
  }
  return "no error";
}

TEST_F(Onnx, LoadsTheTestModel) {
  const auto m = qsl::onnx::model::load(models + "/layers.onnx");
  EXPECT_EQ(m.ir_version(), 8);
  EXPECT_EQ(m.opset(), 17);
  EXPECT_EQ(m.node_count(), 11u);
}

TEST_F(Onnx, QslFormatRoundTripGivesTheDecomposition) {
  const auto original = qsl::onnx::model::load(models + "/layers.onnx");
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  const auto o = options(2, 64);
  const auto report = qsl::onnx::compress(m, o);
  m.save(path("out.onnx"));
  const auto reloaded = qsl::onnx::model::load(path("out.onnx"));
  const auto layers = qsl::onnx::compressed_layers(reloaded);
  ASSERT_EQ(layers.size(), 4u);  // conv1, fc1, mm, fc2 (tiny stays below min_weights)
  std::set<std::string> names;
  for (const auto& l : layers) {
    names.insert(l.weight);
    const Eigen::MatrixXf w = original_w(original, l);
    const qsl::weight_code expected = qsl::decompose(w, o.weights);
    EXPECT_EQ(qsl::reconstruct(l.code), qsl::reconstruct(expected)) << l.weight;
    EXPECT_EQ(l.shape, qsl::onnx::read_constant(original, l.weight).shape) << l.weight;
  }
  EXPECT_EQ(names, (std::set<std::string>{"conv_w", "fc1_w", "mm_w", "fc2_w"}));
  EXPECT_LT(report.size_ratio(), 0.2);
  EXPECT_GT(report.bits_per_weight(), 2.0);
  EXPECT_LT(report.bits_per_weight(), 4.0);
  for (const auto& l : report.layers)
    if (l.compressed) {
      EXPECT_GT(l.relative_error, 0.1) << l.node;  // 2 bits on Gaussian weights: ~0.34
      EXPECT_LT(l.relative_error, 0.5) << l.node;
    }
}

// Embedding tables (Gather along axis 0), LSTM / GRU weights (W and R, [directions,
// gates x hidden, inputs] read as W) and ConvTranspose weights ([C, M, k...] read as W^T, M k
// rows of C inputs, with one group; as W of C rows with groups) are compressed like products: each
// code read back is the decomposition of its weight. --edge-bits goes to the first and last
// product, not to a table.
TEST_F(Onnx, TablesAndRecurrentWeightsRoundTripAsTheirDecompositions) {
  const auto original = qsl::onnx::model::load(models + "/weight_kinds.onnx");
  auto m = qsl::onnx::model::load(models + "/weight_kinds.onnx");
  auto o = options(2, 8);
  o.min_weights = 0;
  o.edge_bits = 3;
  const auto report = qsl::onnx::compress(m, o);
  std::map<std::string, std::string> runs;  // by weight
  for (const auto& l : report.layers) {
    EXPECT_TRUE(l.compressed) << l.weight;
    runs[l.weight] = l.runs_as;
  }
  ASSERT_EQ(runs.size(), 9u);  // the shape Gather is no layer; the head shares 'tied'
  EXPECT_EQ(runs["emb"], "QuantizedGather");
  EXPECT_EQ(runs["emb32"], "QuantizedGather");
  EXPECT_THAT(runs["tied"], HasSubstr("the table is read by 2 nodes"));
  EXPECT_THAT(runs["lstm_r"], HasSubstr("qsl has no recurrent kernel; R decoded at load"));
  // Float activations here (int8_min_rows 0): no QuantizedConvTranspose; and one of two groups.
  EXPECT_EQ(runs["ct1_w"],
            "ConvTranspose on the runtime's kernel (qsl's transposed convolution runs on 8-bit "
            "activations only (int8_min_rows > 0, float layers); weight decoded at load)");
  EXPECT_EQ(runs["ct2_w"],
            "ConvTranspose on the runtime's kernel (a grouped transposed convolution; weight "
            "decoded at load)");
  m.save(path("out.onnx"));
  const auto reloaded = qsl::onnx::model::load(path("out.onnx"));
  std::map<std::string, int> bits;
  for (const auto& l : qsl::onnx::compressed_layers(reloaded)) {
    SCOPED_TRACE(l.weight);
    bits[l.weight] = l.code.bits;
    EXPECT_EQ(l.table, l.weight == "emb" || l.weight == "emb32");
    auto layer_options = o.weights;
    layer_options.bits = l.code.bits;
    EXPECT_EQ(qsl::reconstruct(l.code),
              qsl::reconstruct(qsl::decompose(original_w(original, l), layer_options)));
    EXPECT_EQ(l.shape, qsl::onnx::read_constant(original, l.weight).shape);
  }
  EXPECT_EQ(bits, (std::map<std::string, int>{{"emb", 2},
                                              {"emb32", 2},
                                              {"tied", 2},
                                              {"lstm_w", 3},
                                              {"lstm_r", 2},
                                              {"gru_w", 2},
                                              {"gru_r", 3},
                                              {"ct1_w", 2},
                                              {"ct2_w", 2}}));
}

// The budget's options here: the greedy decomposition and bit counts 1..4 (fast; the
// allocation does not depend on the method).
qsl::onnx::compress_options budget_options() {
  auto o = options(2, 64);
  o.weights.method = qsl::method::greedy;
  o.budget_choices = {1, 2, 3, 4};
  return o;
}

// compress_options::coefficients = float16: the file holds FLOAT16 coefficient tensors, each
// the half nearest the float32 decomposition's coefficient, and qsl reads back exactly those
// values; the report counts 2 bytes per coefficient and measures the error of the stored code;
// a budget counts them so too. A coefficient beyond half's range is a named error.
TEST_F(Onnx, HalfCoefficientsAreStoredRoundedAndReadBack) {
  const auto original = qsl::onnx::model::load(models + "/layers.onnx");
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  auto o = options(2, 64);
  o.coefficients = qsl::onnx::coefficient_storage::float16;
  const auto report = qsl::onnx::compress(m, o);
  int halves = 0;
  for (const auto& t : m.internals().proto.graph().initializer())
    if (t.name().size() > 13 && t.name().compare(t.name().size() - 13, 13, "_coefficients") == 0) {
      EXPECT_EQ(t.data_type(), ::onnx::TensorProto::FLOAT16) << t.name();
      ++halves;
    }
  EXPECT_EQ(halves, 4);
  m.save(path("half.onnx"));
  const auto layers = qsl::onnx::compressed_layers(qsl::onnx::model::load(path("half.onnx")));
  ASSERT_EQ(layers.size(), 4u);
  for (const auto& l : layers) {
    const Eigen::MatrixXf w = original_w(original, l);
    qsl::weight_code expected = qsl::decompose(w, o.weights);
    bool moved = false;
    for (float& alpha : expected.coefficients) {
      const float half = static_cast<float>(Eigen::half(alpha));
      moved = moved || half != alpha;
      EXPECT_LE(std::abs(half - alpha), std::ldexp(std::abs(alpha), -11)) << l.weight;
      alpha = half;
    }
    EXPECT_TRUE(moved) << l.weight << ": no coefficient was rounded (the test would not see it)";
    EXPECT_EQ(l.code.coefficients, expected.coefficients) << l.weight;
    for (const auto& r : report.layers)
      if (r.weight == l.weight) {
        const std::uint64_t planes = static_cast<std::uint64_t>(l.code.rows * l.code.bits) *
                                     static_cast<std::uint64_t>((l.code.cols + 7) / 8);
        EXPECT_EQ(r.bytes_after, planes + 2 * expected.coefficients.size()) << l.weight;
        const double error = std::sqrt(qsl::normalized_error(w, expected));
        EXPECT_DOUBLE_EQ(r.relative_error, error) << l.weight;  // the same computation
      }
  }
  {  // A budget counts the halves: what it measured is what the file holds, within the limit.
    auto b = qsl::onnx::model::load(models + "/layers.onnx");
    auto ob = budget_options();
    ob.coefficients = qsl::onnx::coefficient_storage::float16;
    ob.budget_bits = 2.5;
    std::uint64_t stored = 0, weights = 0;
    for (const auto& l : qsl::onnx::compress(b, ob).layers) {
      if (!l.compressed) continue;
      std::uint64_t count = 1;
      for (std::int64_t d : l.shape) count *= static_cast<std::uint64_t>(d);
      weights += count;
      stored += l.bytes_after;
      for (const auto& measured : l.budget_measurements)
        if (measured.bits == l.bits && measured.group_size == l.group_size) {
          EXPECT_EQ(measured.bytes, l.bytes_after) << l.weight;
        }
    }
    EXPECT_LE(8 * stored, static_cast<std::uint64_t>(2.5 * static_cast<double>(weights)));
  }
  auto big = qsl::onnx::model::load(models + "/layers.onnx");
  for (auto& t : *big.internals().proto.mutable_graph()->mutable_initializer())
    if (t.name() == "fc1_w") {
      auto* values = reinterpret_cast<float*>(&(*t.mutable_raw_data())[0]);
      for (std::size_t i = 0; i < t.raw_data().size() / 4; ++i) values[i] *= 1e6f;
    }
  EXPECT_THAT(error_of([&] { qsl::onnx::compress(big, o); }),
              testing::AllOf(HasSubstr("weight 'fc1_w' of node 'fc1'"),
                             HasSubstr("beyond float16's range (65504)")));
}

// A size budget: the stored bits of the codes (planes, masks, coefficients) are within it,
// each layer's code is one it measured, a tighter budget costs error, an override pins a layer,
// and a budget nothing fits is a named error. max_model_bytes bounds the file written.
TEST_F(Onnx, SizeBudgetIsRespectedAndSpentOnMeasuredCodes) {
  std::uint64_t weights = 0;
  double previous_error = -1;
  for (double budget : {4.0, 2.5, 1.5}) {
    SCOPED_TRACE(budget);
    auto m = qsl::onnx::model::load(models + "/layers.onnx");
    auto o = budget_options();
    o.budget_bits = budget;
    const auto report = qsl::onnx::compress(m, o);
    std::uint64_t stored = 0;
    double error = 0;
    weights = 0;
    for (const auto& l : report.layers) {
      if (!l.compressed) continue;
      std::uint64_t count = 1;
      for (std::int64_t d : l.shape) count *= static_cast<std::uint64_t>(d);
      weights += count;
      stored += l.bytes_after;
      error += l.relative_error * l.relative_error;
      ASSERT_FALSE(l.budget_measurements.empty()) << l.weight;
      bool found = false;
      for (const auto& measured : l.budget_measurements)
        found = found || (measured.bits == l.bits && measured.group_size == l.group_size &&
                          measured.bytes == l.bytes_after &&
                          std::abs(measured.relative_error - l.relative_error) < 1e-6);
      EXPECT_TRUE(found) << l.weight << ": its code is none of those measured";
      // Rows wider than the groups of 64 (a per-row code's group is the row): measured per
      // row and in groups of 32 too.
      std::set<std::int64_t> groups;
      for (const auto& measured : l.budget_measurements) groups.insert(measured.group_size);
      if (*groups.rbegin() > 64) {
        EXPECT_EQ(groups, (std::set<std::int64_t>{32, 64, *groups.rbegin()})) << l.weight;
      }
    }
    EXPECT_LE(8 * stored, static_cast<std::uint64_t>(budget * static_cast<double>(weights)));
    EXPECT_EQ(report.budget_code_bytes,
              static_cast<std::uint64_t>(budget * static_cast<double>(weights) / 8));
    EXPECT_EQ(stored, report.weight_bytes_after);
    if (previous_error >= 0) {
      EXPECT_GT(error, previous_error);  // less room, more error
    }
    previous_error = error;
    // What was measured is what the file holds.
    m.save(path("budget.onnx"), true);
    for (const auto& l : qsl::onnx::compressed_layers(qsl::onnx::model::load(path("budget.onnx"))))
      for (const auto& r : report.layers) {
        if (r.weight == l.weight) {
          EXPECT_EQ(l.code.bits, r.bits) << l.weight;
        }
      }
  }
  {  // An override keeps its layer's bits; the others share what is left.
    auto m = qsl::onnx::model::load(models + "/layers.onnx");
    auto o = budget_options();
    o.budget_bits = 3;
    qsl::onnx::layer_override pin;
    pin.pattern = "fc1";
    pin.options = o.weights;
    pin.options.bits = 1;
    o.overrides.push_back(pin);
    for (const auto& l : qsl::onnx::compress(m, o).layers)
      if (l.node == "fc1") {
        EXPECT_EQ(l.bits, 1);
        EXPECT_EQ(l.budget_measurements.size(), 1u);
      }
  }
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  auto o = budget_options();
  o.budget_bits = 0.5;  // below one plane per weight
  EXPECT_THAT(error_of([&] { qsl::onnx::compress(m, o); }),
              HasSubstr("the smallest codes of the layers take"));
  o.budget_bits = 2;
  o.edge_bits = 4;
  EXPECT_THAT(error_of([&] { qsl::onnx::compress(m, o); }), HasSubstr("leave edge_bits 0"));
  o.edge_bits = 0;
  o.budget_choices = {0};
  EXPECT_THAT(error_of([&] { qsl::onnx::compress(m, o); }),
              HasSubstr("budget_choices holds 0; expected 1..8"));
  o.budget_choices = {1, 2};
  o.budget_bits = -1;
  EXPECT_THAT(error_of([&] { qsl::onnx::compress(m, o); }), HasSubstr("budget_bits is -1"));
}

// compress_options::sensitivity: each layer is measured once, with its reference code laid out
// as its tensor; a layer whose measured output change is large gets more of the budget than
// the plain errors would give it. serialize_with_constant gives the model to run.
TEST_F(Onnx, MeasuredSensitivityWeighsTheBudget) {
  const auto bits_with = [&](double loud_change) {  // mm_w's change; the others 1
    auto m = qsl::onnx::model::load(models + "/layers.onnx");
    auto o = budget_options();
    o.budget_bits = 2.5;
    std::map<std::string, std::size_t> seen;  // weight -> values handed over
    o.sensitivity = [&](const std::string& weight, const std::vector<float>& values) {
      seen[weight] = values.size();
      // Each replacement makes a model of the same size as the original.
      const auto base = qsl::onnx::serialize_with_constant(
          qsl::onnx::model::load(models + "/layers.onnx"), weight, values);
      EXPECT_FALSE(base.empty());
      return weight == "mm_w" ? loud_change : 1.0;
    };
    std::map<std::string, int> bits;
    for (const auto& l : qsl::onnx::compress(m, o).layers)
      if (l.compressed) {
        bits[l.weight] = l.bits;
        EXPECT_EQ(l.sensitivity, l.weight == "mm_w" ? loud_change : 1.0) << l.weight;
        EXPECT_EQ(seen[l.weight], static_cast<std::size_t>(l.bytes_before / 4)) << l.weight;
      }
    return bits;
  };
  const auto quiet = bits_with(1e-4), loud = bits_with(1e4);
  EXPECT_GT(loud.at("mm_w"), quiet.at("mm_w"));
  const auto m = qsl::onnx::model::load(models + "/layers.onnx");
  EXPECT_THAT(error_of([&] { qsl::onnx::serialize_with_constant(m, "fc2_w", {1.0f}); }),
              HasSubstr("'fc2_w' holds 5440 values; 1 given"));
  EXPECT_THAT(error_of([&] { qsl::onnx::serialize_with_constant(m, "nope", {}); }),
              HasSubstr("no constant 'nope'"));
}

// A replaced constant keeps its own type: a FLOAT16 weight gets the values rounded to half.
TEST_F(Onnx, SerializeWithConstantKeepsAHalfWeightHalf) {
  const auto m = qsl::onnx::model::load(models + "/half_weight.onnx");
  std::vector<float> values(16 * 8);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = 0.1f * static_cast<float>(i) - 3.0f;
  const auto bytes = qsl::onnx::serialize_with_constant(m, "w16", values);
  const auto replaced = qsl::onnx::model::parse(bytes.data(), bytes.size());
  const auto t = qsl::onnx::read_constant(replaced, "w16");
  EXPECT_EQ(t.shape, (std::vector<std::int64_t>{16, 8}));
  for (std::size_t i = 0; i < values.size(); ++i)  // half's spacing below 8: 2^-8 .. 2^-7
    EXPECT_NEAR(t.values[i], values[i], std::ldexp(std::abs(values[i]), -11)) << i;
  EXPECT_NE(t.values[1], values[1]);  // -2.9 is no half: it was rounded
}

TEST_F(Onnx, MaxModelBytesBoundsTheFileWritten) {
  const auto size_of = [&](std::uint64_t max_bytes) {
    auto m = qsl::onnx::model::load(models + "/layers.onnx");
    auto o = budget_options();
    o.max_model_bytes = max_bytes;
    const auto report = qsl::onnx::compress(m, o);
    m.save(path("sized.onnx"), true);
    const auto bytes = static_cast<std::uint64_t>(fs::file_size(path("sized.onnx")));
    EXPECT_EQ(bytes, report.model_bytes_after);
    return bytes;
  };
  const std::uint64_t loose = size_of(10'000'000);  // every layer at its best measured code
  for (std::uint64_t limit : {loose / 2, loose / 4}) {
    SCOPED_TRACE(limit);
    const std::uint64_t bytes = size_of(limit);
    EXPECT_LE(bytes, limit);
    EXPECT_GT(bytes, limit * 3 / 4);  // the room is used, not left over
  }
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  auto o = budget_options();
  o.max_model_bytes = 1000;  // less than the model without its weights
  EXPECT_THAT(error_of([&] { qsl::onnx::compress(m, o); }),
              HasSubstr("max_model_bytes is 1000; the model without the weights"));
}

TEST_F(Onnx, StandardFormatUsesOnlyStandardOperators) {
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  auto o = options(2, 64);
  o.weights.basis = qsl::basis::ternary;
  o.format = qsl::onnx::output_format::standard;
  qsl::onnx::compress(m, o);
  m.save(path("standard.onnx"));
  const auto reloaded = qsl::onnx::model::load(path("standard.onnx"));  // passes the checker
  EXPECT_TRUE(qsl::onnx::compressed_layers(reloaded).empty());
  // The model's own operators, then the decoder's (standard_decoder.cpp).
  const std::set<std::string> allowed = {"Constant", "Conv",           "BatchNormalization",
                                         "Relu",     "Flatten",        "Gemm",
                                         "MatMul",   "Softmax",        "Reshape",
                                         "Concat",   "Transpose",      "BitShift",
                                         "Mod",      "Slice",          "MatMulInteger",
                                         "Add",      "GatherElements", "Sum"};
  for (const auto& n : reloaded.internals().proto.graph().node()) {
    EXPECT_TRUE(n.domain().empty()) << n.name();
    EXPECT_TRUE(allowed.count(n.op_type())) << n.op_type();
  }
  for (const auto& o : reloaded.internals().proto.opset_import())
    EXPECT_NE(o.domain(), qsl::onnx::qsl_domain);
}

TEST_F(Onnx, OverridesSkipsAndEdgeBits) {
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  auto o = options(2, 0);
  o.overrides.push_back({"fc1", o.weights});
  o.overrides.back().options.bits = 3;
  o.skip = {"m?"};  // the MatMul node "mm"
  o.edge_bits = 4;
  const auto report = qsl::onnx::compress(m, o);
  std::map<std::string, const qsl::onnx::layer_report*> by_node;
  for (const auto& l : report.layers) by_node[l.node] = &l;
  EXPECT_EQ(by_node.at("conv1")->bits, 4);  // first compressed layer
  EXPECT_EQ(by_node.at("fc1")->bits, 3);    // override
  EXPECT_FALSE(by_node.at("mm")->compressed);
  EXPECT_EQ(by_node.at("mm")->note, "skipped by request");
  EXPECT_EQ(by_node.at("fc2")->bits, 4);  // last compressed layer
  EXPECT_FALSE(by_node.at("tiny")->compressed);
  EXPECT_THAT(by_node.at("tiny")->note, HasSubstr("below 420 weights"));
}

// Grouped convolutions of rows narrower than min_grouped_row_width stay fp32 (the depthwise
// 3x3's rows of 9, the group-2 ones' of 12 and 9), an ungrouped one of as narrow rows does not
// (the 2x2 over 4 channels: 16), an override compresses one anyway, and 0 compresses them all.
TEST_F(Onnx, NarrowGroupedConvolutionsAreLeftUnlessAsked) {
  const auto compressed = [&](std::int64_t width, const std::string& override_pattern) {
    auto m = qsl::onnx::model::load(models + "/convolutions.onnx");
    auto o = options(2, 0);
    o.min_weights = 0;
    o.min_grouped_row_width = width;
    if (!override_pattern.empty()) o.overrides.push_back({override_pattern, o.weights});
    std::map<std::string, std::string> out;  // node -> "" compressed, else the note
    for (const auto& l : qsl::onnx::compress(m, o).layers)
      out[l.node] = l.compressed ? "" : l.note;
    return out;
  };
  const auto by_default = compressed(32, "");
  EXPECT_EQ(by_default.at("depthwise"),
            "a grouped convolution of rows of 9 inputs (below 32): left as it is");
  EXPECT_THAT(by_default.at("grouped"), HasSubstr("rows of 12 inputs (below 32)"));
  EXPECT_THAT(by_default.at("conv1d"), HasSubstr("rows of 9 inputs (below 32)"));
  EXPECT_EQ(by_default.at("same_lower"), "");  // group 1, rows of 16
  EXPECT_EQ(compressed(32, "depthwise").at("depthwise"), "");
  for (const auto& [node, note] : compressed(0, "")) EXPECT_EQ(note, "") << node;
  auto m = qsl::onnx::model::load(models + "/convolutions.onnx");
  auto o = options(2, 0);
  o.min_grouped_row_width = -1;
  EXPECT_THAT(error_of([&] { qsl::onnx::compress(m, o); }),
              HasSubstr("min_grouped_row_width is -1; expected >= 0"));
}

TEST_F(Onnx, SubgraphLayersAreReportedAndLeftAlone) {
  auto m = qsl::onnx::model::load(models + "/subgraph.onnx");
  const auto report = qsl::onnx::compress(m, options(2, 0));
  ASSERT_EQ(report.layers.size(), 1u);
  EXPECT_FALSE(report.layers[0].compressed);
  EXPECT_THAT(report.layers[0].note, HasSubstr("inside a subgraph"));
  EXPECT_EQ(report.layers[0].node, "branch/inner_fc");
  m.save(path("subgraph.onnx"));  // still a valid model
}

TEST_F(Onnx, SaveNeverOverwritesTheInputOrAnExistingFile) {
  const std::string input = path("in.onnx");
  fs::copy_file(models + "/layers.onnx", input);
  auto m = qsl::onnx::model::load(input);
  qsl::onnx::compress(m, options(2, 0));
  bool model_error = true;
  EXPECT_THAT(error_text([&] { m.save(input, true); }, model_error), HasSubstr("is the input"));
  EXPECT_FALSE(model_error);
  fs::copy_file(models + "/layers.onnx", path("exists.onnx"));
  EXPECT_THAT(error_text([&] { m.save(path("exists.onnx")); }, model_error),
              HasSubstr("refusing to overwrite"));
  EXPECT_NO_THROW(m.save(path("exists.onnx"), true));
  for (const auto& entry : fs::directory_iterator(path("")))
    EXPECT_THAT(entry.path().filename().string(), testing::Not(HasSubstr(".tmp")));
  EXPECT_EQ(qsl::onnx::compressed_layers(qsl::onnx::model::load(path("exists.onnx"))).size(), 4u);
}

TEST_F(Onnx, NanWeightIsAModelErrorNamingTheTensor) {
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  for (auto& t : *m.internals().proto.mutable_graph()->mutable_initializer())
    if (t.name() == "fc1_w") {
      const float nan = std::numeric_limits<float>::quiet_NaN();
      std::memcpy(&(*t.mutable_raw_data())[4 * 5], &nan, 4);
    }
  bool model_error = false;
  EXPECT_THAT(error_text([&] { qsl::onnx::compress(m, options(2, 0)); }, model_error),
              HasSubstr("weight 'fc1_w' of node 'fc1': has nan at row 0, col 5"));
  EXPECT_TRUE(model_error);
}

TEST_F(Onnx, BadOptionsAreUserErrors) {
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  bool model_error = true;
  auto o = options(2, 0);
  o.edge_bits = 9;
  EXPECT_THAT(error_text([&] { qsl::onnx::compress(m, o); }, model_error),
              HasSubstr("edge_bits is 9"));
  EXPECT_FALSE(model_error);
  o = options(2, 12);
  EXPECT_THAT(error_text([&] { qsl::onnx::compress(m, o); }, model_error),
              HasSubstr("group_size is 12"));
  o = options(2, 64);
  o.native_min_rows = -1;
  EXPECT_THAT(error_text([&] { qsl::onnx::compress(m, o); }, model_error),
              HasSubstr("native_min_rows is -1"));
  EXPECT_FALSE(model_error);
  EXPECT_THAT(error_text([&] { qsl::onnx::model::load(path("missing.onnx")); }, model_error),
              HasSubstr("not a regular file"));
  EXPECT_FALSE(model_error);
}

// Layers with many rows per call keep the runtime's operator, their weight rebuilt by standard
// operators (folded by ONNX Runtime: tests/onnxruntime/check_qsl_format.py); the report says
// so, the code is read back from the metadata entry, and qsl's executor runs the file (the
// decoder nodes are not run) as it runs the fused form.
TEST_F(Onnx, LayersWithManyRowsPerCallStayOnTheRuntimesOperator) {
  const auto original = qsl::onnx::model::load(models + "/layers.onnx");
  auto fused = qsl::onnx::model::load(models + "/layers.onnx");
  auto o = options(2, 64);
  o.native_min_rows = 0;
  qsl::onnx::compress(fused, o);
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  o.native_min_rows = 1;  // every layer
  const auto report = qsl::onnx::compress(m, o);
  std::map<std::string, const qsl::onnx::layer_report*> by_node;
  for (const auto& l : report.layers) by_node[l.node] = &l;
  EXPECT_EQ(by_node.at("conv1")->rows_per_call, 36);  // 6 x 6 output pixels
  EXPECT_EQ(by_node.at("fc1")->rows_per_call, 1);     // [N, 576]: N counts as 1
  for (const char* node : {"conv1", "fc1", "mm", "fc2"})
    EXPECT_THAT(by_node.at(node)->runs_as, HasSubstr("on the runtime's kernel")) << node;
  for (const auto& n : m.internals().proto.graph().node())
    EXPECT_NE(n.domain(), qsl::onnx::qsl_domain) << n.op_type();
  m.save(path("native.onnx"));
  const auto reloaded = qsl::onnx::model::load(path("native.onnx"));
  const auto layers = qsl::onnx::compressed_layers(reloaded);
  ASSERT_EQ(layers.size(), 4u);
  for (const auto& l : layers) {
    const qsl::weight_code expected = qsl::decompose(original_w(original, l), o.weights);
    EXPECT_EQ(qsl::reconstruct(l.code), qsl::reconstruct(expected)) << l.weight;
    EXPECT_EQ(l.shape, qsl::onnx::read_constant(original, l.weight).shape) << l.weight;
  }
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  qsl::onnx::tensor x{{2, 3, 12, 12}, std::vector<float>(2 * 3 * 12 * 12)};
  for (float& v : x.data) v = normal(rng);
  const auto got = qsl::onnx::session(reloaded).run({x})[0];
  const auto expected = qsl::onnx::session(fused).run({x})[0];
  ASSERT_EQ(got.shape, expected.shape);
  for (std::size_t i = 0; i < got.data.size(); ++i)
    EXPECT_EQ(got.data[i], expected.data[i]) << i;  // the same codes on the same kernels

  // The default (16 rows) keeps only the convolution (36 pixels) on the runtime's operator;
  // the fused MatMul / Gemm layers take 8-bit activations from 16 rows per call on.
  auto by_default = qsl::onnx::model::load(models + "/layers.onnx");
  o.native_min_rows = qsl::onnx::compress_options{}.native_min_rows;
  o.int8_min_rows = qsl::onnx::compress_options{}.int8_min_rows;
  EXPECT_EQ(o.int8_min_rows, 16);
  for (const auto& l : qsl::onnx::compress(by_default, o).layers) {
    if (!l.compressed) continue;
    EXPECT_EQ(l.runs_as.find("on the runtime's kernel") != std::string::npos, l.node == "conv1")
        << l.node << ": " << l.runs_as;
    if (l.node != "conv1" && l.node != "tiny") {
      EXPECT_THAT(l.runs_as, HasSubstr("8-bit activations from 16 rows per call")) << l.node;
    }
  }
}

TEST_F(Onnx, Int8ProductsRunInQslRunAsTheFloatLayersDo) {
  // native_int8: the products ORT runs in int8 are read back as layers of their codes, so that
  // qsl's executor runs the file with float activations, as it runs the fp32 form.
  auto fp32_form = qsl::onnx::model::load(models + "/layers.onnx");
  auto o = options(2, 64);
  o.native_min_rows = 1;
  qsl::onnx::compress(fp32_form, o);
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  o.native_int8 = true;
  const auto report = qsl::onnx::compress(m, o);
  for (const auto& l : report.layers) {
    if (!l.compressed) continue;
    EXPECT_THAT(l.runs_as, HasSubstr(l.node == "conv1" ? "not int8: a convolution"
                                                       : "on the runtime's int8 kernel"))
        << l.node;
  }
  std::multiset<std::string> ops;
  for (const auto& n : m.internals().proto.graph().node()) ops.insert(n.op_type());
  EXPECT_EQ(ops.count("DynamicQuantizeLinear"), 3u);  // fc1, mm, fc2
  EXPECT_EQ(ops.count("Gemm"), 1u);  // tiny (400 weights) stays as it is
  EXPECT_NO_THROW(m.check());
  m.save(path("int8.onnx"));
  const auto reloaded = qsl::onnx::model::load(path("int8.onnx"));
  std::map<std::string, std::string> input_of;  // product output -> its X
  std::size_t weights = 0;
  for (const auto& l : qsl::onnx::compressed_layers(reloaded)) {
    if (l.input.empty()) {
      ++weights;
      continue;
    }
    input_of[l.output] = l.input;
    EXPECT_EQ(l.bias.empty(), l.weight != "fc1_w") << l.weight;  // fc1's C is its bias
  }
  EXPECT_EQ(weights, 4u);
  EXPECT_EQ(input_of, (std::map<std::string, std::string>{{"g1", "f1"}, {"m1", "r2"}, {"g2", "m1"}}));
  std::mt19937 rng(6);
  std::normal_distribution<float> normal;
  qsl::onnx::tensor x{{3, 3, 12, 12}, std::vector<float>(3 * 3 * 12 * 12)};
  for (float& v : x.data) v = normal(rng);
  const auto got = qsl::onnx::session(reloaded).run({x})[0];
  const auto expected = qsl::onnx::session(fp32_form).run({x})[0];
  ASSERT_EQ(got.shape, expected.shape);
  for (std::size_t i = 0; i < got.data.size(); ++i)
    EXPECT_EQ(got.data[i], expected.data[i]) << i;  // the same codes on the same kernels
}

TEST_F(Onnx, Int8RowsFuseEveryMatMulAndQslRunTakesTheirEightBitPath) {
  // int8_min_rows: MatMul / Gemm layers are fused even where native_min_rows would keep them on
  // the runtime's operator; convolutions still follow native_min_rows.
  auto o = options(2, 64);
  o.native_min_rows = 1;
  o.small_batch_bits = 0;  // below int8_min_rows: float activations (the next test: encoded)
  auto compressed = [&](std::int64_t int8_rows) {
    auto m = qsl::onnx::model::load(models + "/layers.onnx");
    o.int8_min_rows = int8_rows;
    const auto report = qsl::onnx::compress(m, o);
    for (const auto& l : report.layers) {
      if (!l.compressed || l.node == "tiny") continue;
      EXPECT_THAT(l.runs_as, HasSubstr(l.node == "conv1"
                                           ? "on the runtime's kernel"
                                           : "8-bit activations from " + std::to_string(int8_rows) +
                                                 " rows per call"))
          << l.node << ": " << l.runs_as;
    }
    const std::string file = path("int8_rows_" + std::to_string(int8_rows) + ".onnx");
    m.save(file);
    return qsl::onnx::model::load(file);
  };
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  qsl::onnx::tensor x{{3, 3, 12, 12}, std::vector<float>(3 * 3 * 12 * 12)};
  for (float& v : x.data) v = normal(rng);
  const auto never = compressed(1000000);  // the attribute, never reached: the float path
  std::size_t fused = 0;
  for (const auto& l : qsl::onnx::compressed_layers(never))
    if (!l.output.empty()) {
      EXPECT_EQ(l.int8_min_rows, 1000000) << l.weight;
      ++fused;
    }
  EXPECT_EQ(fused, 3u);  // fc1, mm, fc2
  auto float_form = qsl::onnx::model::load(models + "/layers.onnx");
  o.int8_min_rows = 0;
  o.native_min_rows = 0;
  qsl::onnx::compress(float_form, o);
  const auto float_y = qsl::onnx::session(float_form).run({x})[0];
  const auto never_y = qsl::onnx::session(never).run({x})[0];
  ASSERT_EQ(never_y.shape, float_y.shape);
  for (std::size_t i = 0; i < float_y.data.size(); ++i)
    EXPECT_EQ(never_y.data[i], float_y.data[i]) << i;
  o.native_min_rows = 1;
  const auto always_y = qsl::onnx::session(compressed(1)).run({x})[0];
  double difference = 0, norm = 0;
  for (std::size_t i = 0; i < float_y.data.size(); ++i) {
    difference += std::pow(always_y.data[i] - float_y.data[i], 2);
    norm += std::pow(float_y.data[i], 2);
  }
  EXPECT_GT(difference, 0.0);                         // the 8-bit path ran
  EXPECT_LT(std::sqrt(difference / norm), 0.05);      // and rounds activations only
  o.int8_min_rows = -1;
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  EXPECT_NE(qsl::test::error_of([&] { qsl::onnx::compress(m, o); })
                .find("int8_min_rows is -1; expected >= 0"),
            std::string::npos);
}

// small_batch_bits: below int8_min_rows, qsl-run encodes each vector with that many bits where
// the CPU has byte tables (its results then differ from the float form by the activations'
// rounding only), float activations elsewhere; the attribute is read back and checked.
TEST_F(Onnx, SmallBatchBitsEncodeFewRowsWhereTheCpuHasByteTables) {
  auto o = options(2, 64);
  o.native_min_rows = 1;
  o.int8_min_rows = 1000000;  // never reached: every call is a small batch
  auto compress_with = [&](int bits) {
    auto m = qsl::onnx::model::load(models + "/layers.onnx");
    o.small_batch_bits = bits;
    qsl::onnx::compress(m, o);
    return m;
  };
  const auto encoded = compress_with(8);
  const auto plain = compress_with(0);
  std::size_t fused = 0;
  for (const auto& l : qsl::onnx::compressed_layers(encoded))
    if (!l.output.empty()) {
      EXPECT_EQ(l.small_batch_bits, 8) << l.weight;
      ++fused;
    }
  EXPECT_EQ(fused, 3u);  // fc1, mm, fc2
  for (const auto& l : qsl::onnx::compressed_layers(plain)) EXPECT_EQ(l.small_batch_bits, 0);
  std::mt19937 rng(9);
  std::normal_distribution<float> normal;
  qsl::onnx::tensor x{{3, 3, 12, 12}, std::vector<float>(3 * 3 * 12 * 12)};
  for (float& v : x.data) v = normal(rng);
  const auto float_y = qsl::onnx::session(plain).run({x})[0];
  const auto encoded_y = qsl::onnx::session(encoded).run({x})[0];
  ASSERT_EQ(encoded_y.shape, float_y.shape);
  double difference = 0, norm = 0;
  for (std::size_t i = 0; i < float_y.data.size(); ++i) {
    difference += std::pow(encoded_y.data[i] - float_y.data[i], 2);
    norm += std::pow(float_y.data[i], 2);
  }
  if (qsl::cpu_byte_tables_min_bits() <= 8)
    EXPECT_GT(difference, 0.0) << "the encoded path did not run";
  else
    EXPECT_EQ(difference, 0.0) << "float activations expected on this CPU";
  EXPECT_LT(std::sqrt(difference / norm), 0.02);  // 256 levels per vector
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  o.small_batch_bits = 9;
  EXPECT_NE(qsl::test::error_of([&] { qsl::onnx::compress(m, o); })
                .find("small_batch_bits is 9; expected 0..8"),
            std::string::npos);
  // A node whose attribute is out of range is a model error naming it.
  auto bad = compress_with(8);
  for (auto& n : *bad.internals().proto.mutable_graph()->mutable_node())
    for (auto& a : *n.mutable_attribute())
      if (a.name() == "small_batch_bits") a.set_i(12);
  bool model_error = false;
  const std::string text = error_text([&] { qsl::onnx::compressed_layers(bad); }, model_error);
  EXPECT_TRUE(model_error) << text;
  EXPECT_THAT(text, HasSubstr("small_batch_bits is 12; expected 0..8"));
}

TEST_F(Onnx, MalformedInt8ProductEntriesAreModelErrors) {
  auto error_after = [](const std::function<void(qsl::onnx::model&)>& edit) {
    auto m = qsl::onnx::model::load(models + "/layers.onnx");
    auto o = options(2, 64);
    o.native_min_rows = 1;
    o.native_int8 = true;
    qsl::onnx::compress(m, o);
    edit(m);
    bool model_error = false;
    const std::string text = error_text([&] { qsl::onnx::compressed_layers(m); }, model_error);
    return model_error ? text : "not a model_error: " + text;
  };
  auto fc1_entry = [](qsl::onnx::model& m) -> std::string& {
    for (auto& p : *m.internals().proto.mutable_metadata_props())
      if (p.value().find("weight=fc1_w") != std::string::npos) return *p.mutable_value();
    throw std::runtime_error("no entry for fc1_w");
  };
  auto edit_entry = [&](const std::string& from, const std::string& to) {
    return error_after([&](qsl::onnx::model& m) {
      std::string& v = fc1_entry(m);
      const std::size_t at = v.find(from);
      if (at == std::string::npos) throw std::runtime_error("no '" + from + "' in " + v);
      v.replace(at, from.size(), to);
    });
  };
  EXPECT_THAT(edit_entry("int8_first=", "int8_first=nowhere,"), HasSubstr("int8_first names 2"));
  EXPECT_THAT(edit_entry("int8_last=", "int8_last=nowhere"), HasSubstr("no node 'nowhere"));
  EXPECT_THAT(error_after([](qsl::onnx::model& m) {
                for (auto& n : *m.internals().proto.mutable_graph()->mutable_node())
                  if (n.op_type() == "DynamicQuantizeLinear") n.set_op_type("Identity");
              }),
              HasSubstr("not a one-input DynamicQuantizeLinear"));
  EXPECT_THAT(error_after([](qsl::onnx::model& m) {
                for (auto& t : *m.internals().proto.mutable_graph()->mutable_initializer())
                  if (t.name() == "fc1_b") t.mutable_dims()->Set(0, 199);
              }),
              HasSubstr("must be FLOAT 200"));
}

// A metadata entry of a layer on the runtime's operator, changed by `edit`.
std::string decoded_weight_error(const std::function<void(std::string&)>& edit) {
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  auto o = options(2, 64);
  o.native_min_rows = 1;
  qsl::onnx::compress(m, o);
  for (auto& p : *m.internals().proto.mutable_metadata_props())
    if (p.value().find("weight=fc1_w") != std::string::npos) edit(*p.mutable_value());
  bool model_error = false;
  const std::string text = error_text([&] { qsl::onnx::compressed_layers(m); }, model_error);
  return model_error ? text : "not a model_error: " + text;
}

TEST_F(Onnx, MalformedDecodedWeightEntriesAreModelErrors) {
  auto replace = [](const std::string& from, const std::string& to) {
    return [from, to](std::string& v) {
      const std::size_t at = v.find(from);
      ASSERT_NE(at, std::string::npos) << v;
      v.replace(at, from.size(), to);
    };
  };
  EXPECT_THAT(decoded_weight_error(replace("format_version=1", "format_version=2")),
              HasSubstr("format_version is 2; this qsl reads 1"));
  EXPECT_THAT(decoded_weight_error(replace(" weight=fc1_w", "")),
              HasSubstr("no weight name"));
  EXPECT_THAT(decoded_weight_error(replace("bits=2", "bits=two")),
              HasSubstr("field 'bits' is 'two'; expected whole numbers"));
  EXPECT_THAT(decoded_weight_error(replace("bits=2", "bits=99999999999999999999")),
              HasSubstr("expected whole numbers"));
  EXPECT_THAT(decoded_weight_error(replace("bits=2", "bits=9")), HasSubstr("out of range"));
  EXPECT_THAT(decoded_weight_error(replace("bits=2", "colour=2")),
              HasSubstr("unknown field 'colour'"));
  EXPECT_THAT(decoded_weight_error(replace("rows=200", "rows=201")),
              HasSubstr("does not match rows x cols"));
  EXPECT_THAT(decoded_weight_error(replace("signs=", "signs=x")),
              HasSubstr("is not an initializer"));
  EXPECT_THAT(decoded_weight_error(replace("transposed=", "transposed")),
              HasSubstr("is not name=value"));
  EXPECT_THAT(decoded_weight_error([](std::string& v) { v = "format_version=1 weight=fc1_w"; }),
              HasSubstr("signs and coefficients tensors are not named"));
}

TEST_F(Onnx, StandardFormatConvertsOlderOpsetsAndSaysSo) {
  auto m = qsl::onnx::model::load(models + "/old_opset.onnx");
  ASSERT_EQ(m.opset(), 9);
  auto o = options(2, 0);
  o.min_weights = 100;
  o.format = qsl::onnx::output_format::standard;
  const auto report = qsl::onnx::compress(m, o);
  EXPECT_EQ(report.opset_before, 9);
  EXPECT_EQ(report.opset_after, qsl::onnx::min_standard_opset);
  EXPECT_EQ(m.opset(), qsl::onnx::min_standard_opset);
  EXPECT_NO_THROW(m.check());
  m.save(path("converted.onnx"));
  EXPECT_EQ(qsl::onnx::model::load(path("converted.onnx")).opset(), 11);

  // The qsl format needs no conversion: the opset stays as it was.
  auto q = qsl::onnx::model::load(models + "/old_opset.onnx");
  o.format = qsl::onnx::output_format::qsl;
  const auto qsl_report = qsl::onnx::compress(q, o);
  EXPECT_EQ(qsl_report.opset_after, 9);
  EXPECT_EQ(q.opset(), 9);
}

TEST_F(Onnx, StandardFormatRefusesAModelTheConverterCannotConvert) {
  auto m = qsl::onnx::model::load(models + "/pad_opset10.onnx");
  auto o = options(2, 0);
  o.min_weights = 100;
  o.format = qsl::onnx::output_format::standard;
  bool model_error = false;
  const std::string text = error_text([&] { qsl::onnx::compress(m, o); }, model_error);
  EXPECT_TRUE(model_error) << text;
  EXPECT_THAT(text, HasSubstr("needs opset >= 11"));
  EXPECT_THAT(text, HasSubstr("converting the default-domain opset 10 to 11"));
  EXPECT_THAT(text, HasSubstr("use the qsl format"));
  EXPECT_EQ(m.opset(), 10);  // nothing was changed
}

// ONNX Runtime refuses a Gemm whose weight has rank 3 (tests/onnx/check_ort_agrees.py shows
// it); so does the loader, with ONNX's message and the node's name, and so does check().
TEST_F(Onnx, ShapeInferenceRefusesWhatOnnxRuntimeRefuses) {
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  for (auto& t : *m.internals().proto.mutable_graph()->mutable_initializer())
    if (t.name() == "fc1_w") {
      t.clear_dims();
      for (std::int64_t d : {200, 288, 2}) t.add_dims(d);
    }
  bool model_error = false;
  std::string text = error_text([&] { m.check(); }, model_error);
  EXPECT_TRUE(model_error) << text;
  EXPECT_THAT(text, HasSubstr("ONNX shape inference"));
  EXPECT_THAT(text, HasSubstr("node name: fc1"));
  const std::vector<std::uint8_t> bytes = m.serialize();
  text = error_text([&] { qsl::onnx::model::parse(bytes.data(), bytes.size()); }, model_error);
  EXPECT_TRUE(model_error) << text;
  EXPECT_THAT(text, HasSubstr("node name: fc1"));
  EXPECT_THAT(text, HasSubstr("rank 2"));
}

// The loader's check sets the large tensors' data aside and puts it back: nothing changes.
TEST_F(Onnx, LoadingLeavesTheWeightsAsTheyWere) {
  const auto bytes = qsl::read_file(models + "/layers.onnx", 1 << 24);
  const auto m = qsl::onnx::model::parse(bytes.data(), bytes.size());
  EXPECT_EQ(m.serialize(), bytes);
  m.check();
  EXPECT_EQ(m.serialize(), bytes);
}

TEST_F(Onnx, NonFiniteWeightsOfLayersLeftAsTheyAreAreWarnings) {
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (auto& t : *m.internals().proto.mutable_graph()->mutable_initializer()) {
    if (t.name() == "tiny_w") std::memcpy(&(*t.mutable_raw_data())[4 * (40 + 3)], &nan, 4);
    if (t.name() == "mm_w") std::memcpy(&(*t.mutable_raw_data())[4 * 2], &inf, 4);
  }
  auto o = options(2, 0);  // tiny (400 weights) is below min_weights
  o.skip = {"mm"};         // and mm is skipped by request
  const auto report = qsl::onnx::compress(m, o);
  std::map<std::string, const qsl::onnx::layer_report*> by_node;
  for (const auto& l : report.layers) by_node[l.node] = &l;
  ASSERT_EQ(by_node.count("tiny"), 1u);
  EXPECT_FALSE(by_node["tiny"]->compressed);
  EXPECT_THAT(by_node["tiny"]->warning, HasSubstr("weight 'tiny_w' has nan at row 1, col 3"));
  // mm_w is W^T (MatMul): value 2 of its first row is W's row 2, column 0.
  EXPECT_THAT(by_node["mm"]->warning, HasSubstr("weight 'mm_w' has inf at row 2, col 0"));
  EXPECT_TRUE(by_node["fc1"]->compressed);
  EXPECT_TRUE(by_node["fc1"]->warning.empty());
}

// A qsl-format model whose DecodeWeights node or tensors are changed by `edit`.
template <class Edit>
std::string decode_error(const std::string& file, Edit edit) {
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  auto o = options(2, 64);
  o.fuse = false;  // DecodeWeights nodes for every layer
  qsl::onnx::compress(m, o);
  for (auto& n : *m.internals().proto.mutable_graph()->mutable_node())
    if (n.op_type() == qsl::onnx::decode_op && n.output(0) == "fc1_w") edit(m, n);
  (void)file;
  bool model_error = false;
  const std::string text = error_text([&] { qsl::onnx::compressed_layers(m); }, model_error);
  return model_error ? text : "not a model_error: " + text;
}

TEST_F(Onnx, MalformedDecodeNodesAreModelErrors) {
  EXPECT_THAT(decode_error("bits", [](auto&, pb::NodeProto& n) {
                for (auto& a : *n.mutable_attribute())
                  if (a.name() == "bits") a.set_i(9);
              }),
              HasSubstr("out of range"));
  EXPECT_THAT(decode_error("rows", [](auto&, pb::NodeProto& n) {
                for (auto& a : *n.mutable_attribute())
                  if (a.name() == "rows") a.set_i(201);
              }),
              HasSubstr("does not match rows x cols"));
  EXPECT_THAT(decode_error("dtype", [](qsl::onnx::model& m, pb::NodeProto& n) {
                for (auto& t : *m.internals().proto.mutable_graph()->mutable_initializer())
                  if (t.name() == n.input(0)) t.set_data_type(pb::TensorProto::INT8);
              }),
              HasSubstr("must be UINT8 200 x 2 x 72"));
  EXPECT_THAT(decode_error("input", [](auto&, pb::NodeProto& n) { n.set_input(1, "nowhere"); }),
              HasSubstr("'nowhere' is not an initializer"));
  EXPECT_THAT(decode_error("missing", [](auto&, pb::NodeProto& n) {
                n.mutable_attribute()->RemoveLast();  // 'shape'
              }),
              HasSubstr("'shape' is missing"));
  EXPECT_THAT(decode_error("padding", [](qsl::onnx::model& m, pb::NodeProto& n) {
                for (auto& t : *m.internals().proto.mutable_graph()->mutable_initializer())
                  if (t.name() == n.input(0)) (*t.mutable_raw_data())[71] = '\xff';  // 576 cols = 72 bytes
              }),
              testing::AnyOf(HasSubstr("bits set past column"), HasSubstr("no error")));
  EXPECT_THAT(decode_error("nan", [](qsl::onnx::model& m, pb::NodeProto& n) {
                for (auto& t : *m.internals().proto.mutable_graph()->mutable_initializer())
                  if (t.name() == n.input(1)) {
                    const float nan = std::numeric_limits<float>::quiet_NaN();
                    std::memcpy(&(*t.mutable_raw_data())[0], &nan, 4);
                  }
              }),
              HasSubstr("not finite"));
}

TEST_F(Onnx, ParsedModelsRefuseExternalData) {
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  for (auto& t : *m.internals().proto.mutable_graph()->mutable_initializer())
    if (t.name() == "fc1_w") {
      t.clear_raw_data();
      t.set_data_location(pb::TensorProto::EXTERNAL);
      auto* e = t.add_external_data();
      e->set_key("location");
      e->set_value("weights.bin");
    }
  const auto bytes = m.serialize();
  bool model_error = false;
  EXPECT_THAT(error_text([&] { qsl::onnx::model::parse(bytes.data(), bytes.size()); }, model_error),
              HasSubstr("external data is not allowed"));
  EXPECT_TRUE(model_error);
}


// ---- TWD layers (ai.qsl::DecodeFactorized) ----

qsl::onnx::compress_options twd_options(int k) {
  qsl::onnx::compress_options o = options(2, 64);
  o.twd_layers = {"*"};
  o.twd.basis_vectors = k;
  o.twd.threads = 1;
  return o;
}

// W (outputs x inputs) of a layer of the original model, TWD or not.
Eigen::MatrixXf original_w_of(const qsl::onnx::model& m, const qsl::onnx::compressed_layer& l) {
  if (!l.factorized) return original_w(m, l);
  qsl::onnx::compressed_layer shaped = l;
  shaped.code.rows = l.twd.rows;
  shaped.code.cols = l.twd.cols;
  return original_w(m, shaped);
}

// Overwrites the float constant `name` (initializer or Constant node) with W in its layout.
void set_weight(qsl::onnx::model& m, const std::string& name, const Eigen::MatrixXf& w,
                bool transposed) {
  std::string raw;
  for (Eigen::Index i = 0; i < (transposed ? w.cols() : w.rows()); ++i)
    for (Eigen::Index j = 0; j < (transposed ? w.rows() : w.cols()); ++j) {
      const float v = transposed ? w(j, i) : w(i, j);
      raw.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
  auto put = [&](pb::TensorProto& t) {
    t.clear_float_data();
    t.set_raw_data(raw);
  };
  auto& g = *m.internals().proto.mutable_graph();
  for (auto& t : *g.mutable_initializer())
    if (t.name() == name) put(t);
  for (auto& n : *g.mutable_node())
    if (n.op_type() == "Constant" && n.output(0) == name)
      for (auto& a : *n.mutable_attribute())
        if (a.name() == "value") put(*a.mutable_t());
}

TEST_F(Onnx, TwdRoundTripGivesTheFactorization) {
  const auto original = qsl::onnx::model::load(models + "/layers.onnx");
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  const auto o = twd_options(8);
  const auto report = qsl::onnx::compress(m, o);
  for (const auto& l : report.layers)
    if (l.compressed) {
      EXPECT_TRUE(l.factorized) << l.node;
      EXPECT_EQ(l.basis_vectors, 8) << l.node;
    }
  m.save(path("twd.onnx"));
  const auto layers = qsl::onnx::compressed_layers(qsl::onnx::model::load(path("twd.onnx")));
  ASSERT_EQ(layers.size(), 4u);
  for (const auto& l : layers) {
    SCOPED_TRACE(l.weight);
    ASSERT_TRUE(l.factorized);
    EXPECT_TRUE(l.code.signs.empty());
    const qsl::twd_code expected = qsl::factorize_ternary(original_w_of(original, l), o.twd);
    EXPECT_EQ(l.twd.basis.signs, expected.basis.signs);
    EXPECT_EQ(l.twd.basis.masks, expected.basis.masks);
    EXPECT_EQ(l.twd.mixing, expected.mixing);
  }
}

TEST_F(Onnx, ExecutorRunsTwdLayersAsTheirReconstruction) {
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  qsl::onnx::compress(m, twd_options(6));
  // The same graph with every compressed weight replaced by its W_hat, run as plain fp32.
  auto dense = qsl::onnx::model::load(models + "/layers.onnx");
  for (const auto& l : qsl::onnx::compressed_layers(m))
    set_weight(dense, l.weight, qsl::reconstruct(l.twd), l.transposed);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  qsl::onnx::tensor x{{3, 3, 12, 12}, std::vector<float>(3 * 3 * 12 * 12)};
  for (float& v : x.data) v = normal(rng);
  const auto got = qsl::onnx::session(m).run({x})[0];
  const auto expected = qsl::onnx::session(dense).run({x})[0];
  ASSERT_EQ(got.shape, expected.shape);
  // Softmax outputs in [0, 1]: the two differ only by float summation order through four
  // layers (W_hat x vs C^T (M^T x)); 1e-4 absolute is ~1000x that rounding.
  for (std::size_t i = 0; i < got.data.size(); ++i)
    EXPECT_NEAR(got.data[i], expected.data[i], 1e-4f) << i;
  // And the check can see a wrong layer: the original weights give clearly different outputs.
  const auto original = qsl::onnx::session(qsl::onnx::model::load(models + "/layers.onnx")).run({x})[0];
  float largest = 0;
  for (std::size_t i = 0; i < got.data.size(); ++i)
    largest = std::max(largest, std::abs(got.data[i] - original.data[i]));
  EXPECT_GT(largest, 1e-2f);
}

TEST_F(Onnx, TwdNeedsTheQslFormat) {
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  auto o = twd_options(4);
  o.format = qsl::onnx::output_format::standard;
  bool model_error = true;
  EXPECT_THAT(error_text([&] { qsl::onnx::compress(m, o); }, model_error),
              HasSubstr("no standard-format encoding"));
  EXPECT_FALSE(model_error);
}

// A TWD model whose DecodeFactorized node for fc1_w is changed by `edit`.
template <class Edit>
std::string factorized_error(Edit edit) {
  auto m = qsl::onnx::model::load(models + "/layers.onnx");
  auto o = twd_options(5);
  o.fuse = false;  // DecodeFactorized nodes, not QuantizedTwd
  qsl::onnx::compress(m, o);
  for (auto& n : *m.internals().proto.mutable_graph()->mutable_node())
    if (n.op_type() == qsl::onnx::decode_factorized_op && n.output(0) == "fc1_w") edit(m, n);
  bool model_error = false;
  const std::string text = error_text([&] { qsl::onnx::compressed_layers(m); }, model_error);
  return model_error ? text : "not a model_error: " + text;
}

TEST_F(Onnx, MalformedFactorizedNodesAreModelErrors) {
  EXPECT_THAT(factorized_error([](auto&, pb::NodeProto& n) {
                for (auto& a : *n.mutable_attribute())
                  if (a.name() == "basis_vectors") a.set_i(0);
              }),
              HasSubstr("basis_vectors 0 are out of range"));
  EXPECT_THAT(factorized_error([](auto&, pb::NodeProto& n) {
                for (auto& a : *n.mutable_attribute())
                  if (a.name() == "basis_vectors") a.set_i(6);
              }),
              HasSubstr("must be UINT8 6 x 1 x 72"));
  EXPECT_THAT(factorized_error([](qsl::onnx::model& m, pb::NodeProto& n) {
                for (auto& t : *m.internals().proto.mutable_graph()->mutable_initializer())
                  if (t.name() == n.input(2)) {
                    const float inf = std::numeric_limits<float>::infinity();
                    std::memcpy(&(*t.mutable_raw_data())[4], &inf, 4);
                  }
              }),
              HasSubstr("fc1_w"));
  EXPECT_THAT(factorized_error([](auto&, pb::NodeProto& n) {
                auto* a = n.add_attribute();
                a->set_name("activation_steps");
                a->set_type(pb::AttributeProto::FLOATS);
                a->add_floats(1.0f);
              }),
              HasSubstr("must both be lists of 8 floats"));
}

}  // namespace
