// qsl::onnx::collect_calibration: runs the model with a layer observer and accumulates, per
// layer, the Gram matrix of its inputs and a reservoir sample of them.
#include "qsl/onnx_calibration.hpp"

#include <Eigen/Cholesky>
#include <cmath>
#include <random>
#include <set>

#include "onnx/conformance.hpp"
#include "onnx/layers.hpp"
#include "onnx/ops.hpp"
#include "qsl/onnx_session.hpp"
#include "qsl/quantized_conv2d.hpp"

namespace qsl::onnx {
namespace {

// Rows are summed into the double Gram matrix in float blocks of this many vectors: a float
// GEMM is several times faster, and a block this short keeps its relative rounding near
// 256 * 2^-24 before the double sum takes over. Only the lower triangles are summed (a rank
// update: half a GEMM's work; a convolution's patches make this most of calibration's time),
// and finish() mirrors it.
constexpr std::int64_t gram_block_rows = 256;
constexpr std::uint64_t reservoir_seed = 0x9e3779b97f4a7c15ULL;

using row_map = Eigen::Map<const row_matrix_f>;

struct accumulator {
  layer_calibration stats;  // width and vectors; the values are below until finish()
  Eigen::MatrixXd gram;
  row_matrix_f samples;
  std::mt19937_64 rng{reservoir_seed};
  Eigen::MatrixXf block_gram;
  bool skipped = false;  // wider than max_width

  void add(const float* x, std::int64_t rows, std::int64_t cols, std::int64_t max_samples,
           const std::string& weight) {
    if (stats.width == 0) {
      stats.width = cols;
      gram.setZero(cols, cols);
      samples.resize(std::min<std::int64_t>(max_samples, 1024), cols);
    }
    if (cols != stats.width)
      throw model_error("calibration: layer '" + weight + "' saw inputs of " +
                        std::to_string(cols) + " and " + std::to_string(stats.width) +
                        " values (the same weight used at two widths)");
    const row_map all(x, rows, cols);
    if (!all.allFinite())
      throw model_error("calibration: the input of layer '" + weight +
                        "' has NaN or Inf values (the model overflows on the calibration data)");
    for (std::int64_t r0 = 0; r0 < rows; r0 += gram_block_rows) {
      const std::int64_t n = std::min(gram_block_rows, rows - r0);
      block_gram.setZero(cols, cols);
      block_gram.selfadjointView<Eigen::Lower>().rankUpdate(all.middleRows(r0, n).transpose());
      gram.triangularView<Eigen::Lower>() += block_gram.cast<double>();
    }
    // Reservoir sampling (Algorithm R): every vector seen so far is kept with equal chance.
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t seen = stats.vectors + r;
      if (seen < max_samples) {
        if (seen >= samples.rows())  // grow geometrically, up to max_samples rows
          samples.conservativeResize(std::min(max_samples, 2 * samples.rows()), cols);
        samples.row(seen) = all.row(r);
      } else {
        const auto j = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(seen + 1));
        if (j < max_samples) samples.row(j) = all.row(r);
      }
    }
    stats.vectors += rows;
  }

  // Moves the statistics into stats: the kept samples (the first min(vectors, max_samples)
  // rows) and the Gram matrix.
  layer_calibration finish(std::int64_t max_samples) {
    stats.sample_count = std::min(stats.vectors, max_samples);
    gram.triangularView<Eigen::StrictlyUpper>() = gram.transpose();
    stats.gram_values.assign(gram.data(), gram.data() + gram.size());
    stats.sample_values.assign(samples.data(), samples.data() + stats.sample_count * stats.width);
    return std::move(stats);
  }
};

// How a layer turns the tensor it reads into input vectors.
enum class vectors_of : std::uint8_t {
  last_axis,  // X [..., K]: MatMul X W, Gemm
  columns,    // X [..., K, M]: MatMul W X, Gemm with transA (X [K, M])
  patches,    // X [N, C, (H,) W]: a convolution's im2col patches, every group's
};

struct probe {
  std::string weight, node;
  vectors_of kind = vectors_of::last_axis;
  std::int64_t width = 0;     // values per vector (the weight's columns)
  onnx_conv_attributes conv;  // patches
};

using ops::shape_text;

// The probe of a layer found by find_weight; false for a convolution of more than 2 spatial
// dimensions and for Gather tables (no statistics: they are decomposed without calibration; a
// table's rows are read, not multiplied by inputs), for an R whose node has no Y output, and for
// a ConvTranspose weight (its rows are input channels, each scattered over the output: no
// vectors a row is multiplied by, so no Gram matrix; fitted to the weight, as tables are).
bool make_probe(const pb::NodeProto& n, const detail::candidate& c, probe& p, std::string& x) {
  p.weight = c.weight;
  p.node = c.node_name;
  p.width = c.cols;
  if (c.table() || c.transposed_conv()) return false;
  if (c.recurrent()) {
    // W multiplies X [seq, batch, inputs] (layout 1: [batch, seq, inputs]). R multiplies the
    // previous hidden state at every step: the initial one (usually zeros), then the first
    // T - 1 of the T states Y [seq, directions, batch, hidden] holds; Y stands in for them (one
    // step of T differs). The directions of a bidirectional layer add to one statistic, as a
    // grouped convolution's groups do.
    p.kind = vectors_of::last_axis;
    x = c.input == 1 ? n.input(0) : n.output_size() > 0 ? n.output(0) : "";
    return !x.empty();
  }
  if (c.op_type == "Conv") {
    const std::size_t dims = c.shape.size() - 2;
    if (dims < 1 || dims > 2) return false;
    p.kind = vectors_of::patches;
    p.conv.groups = detail::int_attribute(n, "group", 1);
    p.conv.outputs = c.shape[0];
    p.conv.channels = c.shape[1] * p.conv.groups;
    p.conv.kernel =
        detail::ints_attribute(n, "kernel_shape", {c.shape.begin() + 2, c.shape.end()});
    p.conv.strides = detail::ints_attribute(n, "strides", std::vector<std::int64_t>(dims, 1));
    p.conv.dilations = detail::ints_attribute(n, "dilations", std::vector<std::int64_t>(dims, 1));
    p.conv.pads = detail::ints_attribute(n, "pads", std::vector<std::int64_t>(2 * dims, 0));
    p.conv.auto_pad = detail::string_attribute(n, "auto_pad", "NOTSET");
    x = n.input(0);
    return true;
  }
  const bool transposed_x =
      c.weight_on_left || (c.op_type == "Gemm" && detail::int_attribute(n, "transA", 0) != 0);
  p.kind = transposed_x ? vectors_of::columns : vectors_of::last_axis;
  x = c.weight_on_left ? n.input(1) : n.input(0);
  return true;
}

}  // namespace

struct calibration_collector::impl {
  calibration_options options;
  std::vector<std::string> tensors;
  std::multimap<std::string, probe> probes;  // by the tensor they read
  std::map<std::string, accumulator> layers;  // by weight
  std::vector<float> scratch;

  void add(const probe& p, const std::vector<std::int64_t>& shape, const float* x);
};

calibration_collector::calibration_collector(const model& m, const calibration_options& o)
    : impl_(std::make_unique<impl>()) {
  const std::string where = "calibration_collector: ";
  qsl::detail::require(o.max_samples >= 1, where + "options.max_samples is " +
                                               std::to_string(o.max_samples) + "; expected >= 1");
  qsl::detail::require(o.max_width >= 1, where + "options.max_width is " +
                                             std::to_string(o.max_width) + "; expected >= 1");
  impl_->options = o;
  // Read only: constants() hands out mutable references for compress's rewriting.
  auto& g = const_cast<pb::GraphProto&>(m.internals().proto.graph());
  const auto consts = detail::constants(g);
  for (int i = 0; i < g.node_size(); ++i) {
    const pb::NodeProto& n = g.node(i);
    for (int slot = 0; slot < detail::weight_slots(n); ++slot) {
      detail::candidate c;
      std::string why, x;
      probe p;
      if (!detail::find_weight(n, i, consts, c, why, slot) || !make_probe(n, c, p, x)) continue;
      if (impl_->probes.count(x) == 0) impl_->tensors.push_back(x);
      impl_->probes.emplace(x, std::move(p));
    }
  }
}

calibration_collector::~calibration_collector() = default;
calibration_collector::calibration_collector(calibration_collector&&) noexcept = default;
calibration_collector& calibration_collector::operator=(calibration_collector&&) noexcept = default;

const std::vector<std::string>& calibration_collector::tensors() const { return impl_->tensors; }

void calibration_collector::add(const std::string& tensor, const std::vector<std::int64_t>& shape,
                                const float* values) {
  const auto [first, last] = impl_->probes.equal_range(tensor);
  qsl::detail::require(first != last, "calibration_collector::add: no layer reads tensor '" +
                                          tensor + "'");
  std::uint64_t count = 1;
  for (std::int64_t d : shape) {
    qsl::detail::require(d >= 0, "calibration_collector::add: tensor '" + tensor +
                                     "' has shape " + shape_text(shape));
    count *= static_cast<std::uint64_t>(d);
  }
  if (count == 0) return;
  qsl::detail::require(values != nullptr,
                       "calibration_collector::add: the values of '" + tensor + "' are null");
  for (auto it = first; it != last; ++it) impl_->add(it->second, shape, values);
}

void calibration_collector::impl::add(const probe& p, const std::vector<std::int64_t>& shape,
                                      const float* x) {
  accumulator& a = layers[p.weight];
  if (a.skipped || p.width > options.max_width) {
    a.skipped = true;
    return;
  }
  const std::string what = "calibration: layer '" + p.node + "' (weight '" + p.weight + "')";
  const auto fail = [&](const std::string& expected) {
    throw model_error(what + " reads a tensor of shape " + shape_text(shape) + "; expected " +
                      expected);
  };
  const std::string width = std::to_string(p.width);
  const std::size_t rank = shape.size();
  if (p.kind == vectors_of::last_axis) {
    if (rank < 1 || shape.back() != p.width) fail("[..., " + width + "]");
    std::int64_t rows = 1;
    for (std::size_t d = 0; d + 1 < rank; ++d) rows *= shape[d];
    a.add(x, rows, p.width, options.max_samples, p.weight);
    return;
  }
  if (p.kind == vectors_of::columns) {  // each [K, M] slice's columns, as rows
    if (rank < 2 || shape[rank - 2] != p.width) fail("[..., " + width + ", M]");
    const std::int64_t m = shape[rank - 1];
    std::int64_t slices = 1;
    for (std::size_t d = 0; d + 2 < rank; ++d) slices *= shape[d];
    scratch.resize(static_cast<std::size_t>(m * p.width));
    for (std::int64_t s = 0; s < slices; ++s) {
      Eigen::Map<row_matrix_f>(scratch.data(), m, p.width) =
          Eigen::Map<const row_matrix_f>(x + s * m * p.width, p.width, m).transpose();
      a.add(scratch.data(), m, p.width, options.max_samples, p.weight);
    }
    return;
  }
  const std::size_t dims = p.conv.kernel.size();
  if (rank != dims + 2 || shape[1] != p.conv.channels)
    fail("N x " + std::to_string(p.conv.channels) + " x " + std::to_string(dims) +
         " spatial dimensions");
  const std::int64_t h = dims == 2 ? shape[2] : 1, w = shape.back();
  conv2d_shape s;
  try {
    s = group_shape(p.conv, h, w);
    validate(s, what.c_str());
  } catch (const qsl::error& e) {
    throw model_error(e.what());
  }
  const std::int64_t rows = s.out_h(h) * s.out_w(w);
  if (rows == 0) fail("a size the kernel fits");
  if (s.patch() != p.width) fail("patches of " + width + " values");
  scratch.resize(static_cast<std::size_t>(rows * p.width));
  const std::int64_t per_group = s.in_channels * h * w;
  for (std::int64_t image = 0; image < shape[0]; ++image)
    for (std::int64_t g = 0; g < p.conv.groups; ++g) {
      im2col(s, x + (image * p.conv.groups + g) * per_group, h, w, scratch.data());
      a.add(scratch.data(), rows, p.width, options.max_samples, p.weight);
    }
}

calibration_data calibration_collector::finish() {
  calibration_data out;
  for (auto& [weight, a] : impl_->layers)
    if (!a.skipped && a.stats.vectors > 0) out[weight] = a.finish(impl_->options.max_samples);
  impl_->layers.clear();
  return out;
}

std::vector<std::uint8_t> serialize_with_outputs(const model& m,
                                                 const std::vector<std::string>& tensors) {
  pb::ModelProto proto = m.internals().proto;
  // Each output's rank (and the sizes shape inference knows): ONNX's checker wants a shape.
  const auto shapes = detail::inferred_shapes(proto);
  pb::GraphProto& g = *proto.mutable_graph();
  std::set<std::string> present, produced;
  for (const auto& o : g.output()) present.insert(o.name());
  for (const auto& i : g.input()) present.insert(i.name());
  for (const auto& n : g.node())
    for (const auto& o : n.output()) produced.insert(o);
  for (const std::string& t : tensors) {
    if (present.count(t)) continue;
    qsl::detail::require(produced.count(t) != 0, "serialize_with_outputs: no node of the main "
                                                 "graph produces '" + t + "'");
    pb::ValueInfoProto& out = *g.add_output();
    out.set_name(t);
    auto& type = *out.mutable_type()->mutable_tensor_type();
    type.set_elem_type(pb::TensorProto::FLOAT);
    if (const auto it = shapes.find(t); it != shapes.end())
      for (std::int64_t d : it->second) {
        auto& dim = *type.mutable_shape()->add_dim();
        if (d > 0) dim.set_dim_value(d);  // else unknown: neither a value nor a name
      }
    present.insert(t);
  }
  std::vector<std::uint8_t> bytes(proto.ByteSizeLong());
  qsl::detail::require(proto.SerializeToArray(bytes.data(), static_cast<int>(bytes.size())),
                       "serialize_with_outputs: the model does not serialize (over 2 GiB?)");
  return bytes;
}

std::vector<std::uint8_t> serialize_with_constant(const model& m, const std::string& name,
                                                  const std::vector<float>& values) {
  pb::ModelProto proto = m.internals().proto;
  const auto consts = detail::constants(*proto.mutable_graph());
  const auto it = consts.find(name);
  qsl::detail::require(it != consts.end(), "serialize_with_constant: the model has no constant '" +
                                               name + "'");
  pb::TensorProto& t = *it->second.tensor;
  qsl::detail::require(detail::floating_point(t.data_type()),
                       "serialize_with_constant: '" + name + "' is " +
                           detail::type_name(t.data_type()) +
                           "; expected FLOAT, DOUBLE, FLOAT16 or BFLOAT16");
  std::uint64_t count = 1;
  for (std::int64_t d : t.dims()) count *= static_cast<std::uint64_t>(d);
  qsl::detail::require(count == values.size(),
                       "serialize_with_constant: '" + name + "' holds " + std::to_string(count) +
                           " values; " + std::to_string(values.size()) + " given");
  const std::vector<std::int64_t> dims(t.dims().begin(), t.dims().end());
  t = detail::make_floating_tensor(t.name(), dims, t.data_type(), values.data());
  std::vector<std::uint8_t> bytes(proto.ByteSizeLong());
  qsl::detail::require(proto.SerializeToArray(bytes.data(), static_cast<int>(bytes.size())),
                       "serialize_with_constant: the model does not serialize (over 2 GiB?)");
  return bytes;
}

void layer_calibration::factor(Eigen::Ref<Eigen::MatrixXf> out) const {
  qsl::detail::require(
      vectors > 0 && width > 0 && gram_values.size() == static_cast<std::size_t>(width * width),
      "layer_calibration::factor: no statistics (0 vectors)");
  qsl::detail::require(out.rows() == width && out.cols() == width,
                       "layer_calibration::factor: out is " + std::to_string(out.rows()) + " x " +
                           std::to_string(out.cols()) + "; expected " + std::to_string(width) +
                           " x " + std::to_string(width));
  const Eigen::MatrixXd h = gram() / static_cast<double>(vectors);
  const double mean = std::max(h.diagonal().mean(), 1e-30);
  // Fewer vectors than D (or dead inputs) make H singular, and the float blocks of the sum
  // leave it indefinite by ~1e-7 of its largest eigenvalue: a ridge, the smallest that lets
  // the Cholesky factorization through, starting at 1e-4 of the mean diagonal.
  for (double ridge = 1e-4; ridge <= 1.0; ridge *= 10) {
    Eigen::MatrixXd damped = h;
    damped.diagonal().array() += ridge * mean;
    const Eigen::LLT<Eigen::MatrixXd> llt(damped);
    if (llt.info() == Eigen::Success) {
      out = Eigen::MatrixXd(llt.matrixU()).cast<float>();
      return;
    }
  }
  throw error("layer_calibration::factor: the Gram matrix is not positive semi-definite "
              "(non-finite statistics)");
}

calibration_data collect_calibration(const model& m, const float* inputs, std::int64_t count,
                                     const calibration_options& o) {
  const std::string where = "collect_calibration: ";
  qsl::detail::require(count >= 1, where + "count is " + std::to_string(count) +
                                       "; expected at least one input");
  qsl::detail::require(inputs != nullptr, where + "inputs is null");
  qsl::detail::require(o.batch >= 1, where + "options.batch is " + std::to_string(o.batch) +
                                         "; expected >= 1");
  qsl::detail::require(o.max_samples >= 1, where + "options.max_samples is " +
                                               std::to_string(o.max_samples) + "; expected >= 1");
  qsl::detail::require(o.max_width >= 1, where + "options.max_width is " +
                                             std::to_string(o.max_width) + "; expected >= 1");

  std::map<std::string, accumulator> layers;
  session_options so;
  so.observer = [&](const std::string& weight, const float* x, std::int64_t rows,
                    std::int64_t cols) {
    accumulator& a = layers[weight];
    if (a.skipped || cols > o.max_width) {
      a.skipped = true;
      return;
    }
    a.add(x, rows, cols, o.max_samples, weight);
  };
  const session s(m, so);
  qsl::detail::require(s.input_names().size() == 1,
                       where + "the model has " + std::to_string(s.input_names().size()) +
                           " inputs; calibration feeds models with one");
  std::vector<std::int64_t> shape = s.input_shape(0);
  qsl::detail::require(!shape.empty(), where + "the model's input has no shape");
  std::int64_t per_input = 1;
  for (std::size_t d = 1; d < shape.size(); ++d) {
    qsl::detail::require(shape[d] > 0, where + "the model's input has a dynamic dimension "
                                               "besides the batch");
    per_input *= shape[d];
  }
  for (std::int64_t i = 0; i < count * per_input; ++i)
    if (!std::isfinite(inputs[i]))
      throw error(where + "input " + std::to_string(i / per_input) + " has " +
                  std::to_string(inputs[i]) + " at position " + std::to_string(i % per_input) +
                  "; expected finite values");

  for (std::int64_t first = 0; first < count; first += o.batch) {
    const std::int64_t n = std::min(o.batch, count - first);
    tensor t;
    t.shape = shape;
    t.shape[0] = n;
    t.data.assign(inputs + first * per_input, inputs + (first + n) * per_input);
    s.run({t});
    if (o.progress) o.progress(first + n, count);
  }
  calibration_data out;
  for (auto& [weight, a] : layers)
    if (!a.skipped && a.stats.vectors > 0) out[weight] = a.finish(o.max_samples);
  return out;
}

}  // namespace qsl::onnx
