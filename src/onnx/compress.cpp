// Finding the weights of Gemm / MatMul / Conv nodes, compressing them, and rewriting the graph
// in the qsl or the standard format; reading qsl-format layers back (qsl::onnx::compress,
// qsl::onnx::compressed_layers).
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "onnx/budget.hpp"
#include "onnx/conformance.hpp"
#include "onnx/layer_weights.hpp"
#include "onnx/layers.hpp"
#include "onnx/proto.hpp"
#include "onnx/sequential.hpp"
#include "onnx/shape_folding.hpp"
#include "onnx/writer.hpp"
#include "qsl/cpu.hpp"
#include "qsl/onnx_calibration.hpp"

namespace qsl::onnx {
namespace {

using detail::candidate;
using detail::constant_ref;
using detail::constants;
using detail::element_size;
using detail::find_weight;
using detail::floating_point;
using detail::int_attribute;
using detail::node_label;
using detail::read_floats;

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

// Rows the layer multiplies per call at batch 1: MatMul / Gemm, the rows of X (its leading
// dimensions, the first one, the batch, counted as 1 when symbolic); Conv, the output pixels.
// many_rows (-1) where a size that multiplies the rows is unknown: a sequence length after the
// batch, or a convolution's output size (exporters leave both symbolic; they are rarely small).
// 0 when nothing is known (a MatMul whose input shape inference did not find).
constexpr std::int64_t many_rows = -1;

std::int64_t rows_per_call(const pb::NodeProto& n, const std::string& weight,
                           const std::map<std::string, std::vector<std::int64_t>>& shapes) {
  auto dims_of = [&](const std::string& name) -> const std::vector<std::int64_t>* {
    const auto it = shapes.find(name);
    return it == shapes.end() ? nullptr : &it->second;
  };
  auto product = [](const std::vector<std::int64_t>& d, std::size_t first,
                    std::size_t last) -> std::int64_t {
    std::int64_t p = 1;
    for (std::size_t i = first; i < last; ++i) {
      if (d[i] < 0) return many_rows;
      p = std::min(p * d[i], std::int64_t{1} << 40);
    }
    return p;
  };
  if (n.op_type() == "Conv") {
    const auto* y = n.output_size() > 0 ? dims_of(n.output(0)) : nullptr;
    return y == nullptr || y->size() < 3 ? many_rows : product(*y, 2, y->size());
  }
  if (n.op_type() == "MatMul" && n.input_size() > 1 && n.input(0) == weight) {  // W X
    const auto* x = dims_of(n.input(1));  // [..., K, M]
    if (x == nullptr || x->size() < 2) return 0;
    const std::int64_t columns = x->back() < 0 ? many_rows : x->back();
    const std::int64_t batch = x->size() == 2 ? 1 : product(*x, 1, x->size() - 2);
    if (columns == many_rows || batch == many_rows) return many_rows;
    return std::min(columns * batch * (x->size() > 2 && x->front() > 0 ? x->front() : 1),
                    std::int64_t{1} << 40);
  }
  const auto* x = n.input_size() > 0 ? dims_of(n.input(0)) : nullptr;
  if (x == nullptr || x->empty()) return 0;
  if (n.op_type() == "Gemm") {
    bool trans_a = false;
    for (const auto& a : n.attribute()) trans_a = trans_a || (a.name() == "transA" && a.i() != 0);
    if (x->size() != 2) return 0;
    const std::int64_t rows = (*x)[trans_a ? 1 : 0];
    return rows < 0 ? 1 : rows;  // the batch
  }
  if (x->size() == 1) return 1;
  const std::int64_t batch = x->front() < 0 ? 1 : x->front();
  const std::int64_t rest = product(*x, 1, x->size() - 1);
  return rest == many_rows ? many_rows : std::min(batch * rest, std::int64_t{1} << 40);
}

// Subgraph layers are reported and left as they are.
void report_subgraph_layers(const pb::GraphProto& g, const std::string& where,
                            std::vector<layer_report>& out) {
  for (int i = 0; i < g.node_size(); ++i) {
    const pb::NodeProto& n = g.node(i);
    if (n.op_type() == "Gemm" || n.op_type() == "MatMul" || n.op_type() == "Conv") {
      layer_report r;
      r.node = where + "/" + node_label(n, i);
      r.op_type = n.op_type();
      r.weight = n.input_size() > 1 ? n.input(1) : "";
      r.note = "inside a subgraph (If/Loop/Scan): left as it is";
      out.push_back(r);
    }
    for (const auto& a : n.attribute()) {
      if (a.has_g()) report_subgraph_layers(a.g(), where + "/" + node_label(n, i), out);
      for (const auto& sub : a.graphs()) report_subgraph_layers(sub, where + "/" + node_label(n, i), out);
    }
  }
}

// Whether a convolution QuantizedConv can fuse takes 8-bit activations from int8_min_rows
// patches per call (its patches quantized straight from the image into ORT's integer GEMM)
// rather than ORT's fp32 Conv on the weight decoded at load: one group, at least 128 outputs,
// patches of at least 32 values, and a kernel along one axis (a 1-D convolution, or k x 1 /
// 1 x k with k > 1), where ORT's fp32 Conv has no direct 2-D kernel to run. Measured on whole
// models (docs/benchmarks.md, "Convolutions on 8-bit activations"): magika's 512-output 5 x 1
// convolution 1.7x faster than ORT's; the CRNN's 3 x 3 and 1 x 1 ones slower at batch 32,
// where ORT's direct kernel needs no patches and fuses the residual Add and Relu.
bool int8_conv(const candidate& c, const detail::fusion_plan& f) {
  if (!f.why_not.empty() || f.users.size() != 1 || f.users.front().group != 1 || c.rows < 128 ||
      c.cols < 32)
    return false;
  if (c.shape.size() == 3) return true;  // [M, C, k]
  return c.shape.size() == 4 && (c.shape[2] == 1) != (c.shape[3] == 1);
}

// Why a ConvTranspose is not a QuantizedConvTranspose (empty: it is). qsl multiplies each input
// pixel by the rows (output channel, tap) on 8-bit activations, ORT's integer GEMM, and
// scatters the products; on float activations qsl's kernels would be slower than ORT's fp32
// ConvTranspose, so without int8_min_rows the layer keeps ORT's operator. The same sizes as
// int8_conv: at least 128 rows and 32 input channels (measured on the ViT's decoder,
// docs/benchmarks.md).
std::string conv_transpose_why_not(const pb::GraphProto& g, const pb::NodeProto& n,
                                   const candidate& c, const compress_options& o) {
  if (!o.fuse) return "fusion off";
  if (c.layout != detail::weight_layout::transposed) return "a grouped transposed convolution";
  if (c.shape.size() != 3 && c.shape.size() != 4)
    return "a " + std::to_string(c.shape.size() - 2) + "-D transposed convolution";
  if (detail::string_attribute(n, "auto_pad", "NOTSET") != std::string("NOTSET"))
    return "auto_pad " + detail::string_attribute(n, "auto_pad", "");
  for (const auto& a : n.attribute())
    if (a.name() == "output_shape") return "output_shape given (pads left to the runtime)";
  if (o.int8_min_rows == 0 || o.activation_bits != 0)
    return "qsl's transposed convolution runs on 8-bit activations only (int8_min_rows > 0, "
           "float layers)";
  if (c.rows < 128 || c.cols < 32)
    return std::to_string(c.rows) + " rows of " + std::to_string(c.cols) +
           " inputs (below 128 of 32: ORT's ConvTranspose is as fast)";
  if (c.cols > cpu_int8_max_cols) return "more inputs than 8-bit products take";
  // The weight read by this node alone, a float bias of one value per output channel.
  return detail::plan_conv_fusion(g, n, c.weight, c.shape[1]).why_not;
}

// A Gather table, an LSTM / GRU / RNN weight or a ConvTranspose weight, rewritten; `runs_as`
// says how it runs. Tables: a QuantizedGather when the Gather alone reads them (qsl format),
// decoding only the rows looked up. The others, and tables read elsewhere: the standard decoder,
// which ONNX Runtime folds into a constant at load (qsl format: with the metadata entry qsl reads
// the code from), or a DecodeWeights node where the opset has no BitShift.
std::uint64_t rewrite_table_or_decoded(detail::graph_writer& writer, const candidate& c,
                                       const weight_code& code, const constant_ref& ref,
                                       const detail::fusion_plan& f,
                                       const std::vector<activation_quantizer>& quantizers,
                                       output_format format, bool can_decode_standard,
                                       std::string& runs_as) {
  if (format == output_format::standard) {
    runs_as = "standard";
    return writer.replace(c.weight, c.shape, c.layout, code, ref.initializer, ref.constant_node);
  }
  if (c.table() && f.why_not.empty()) {
    runs_as = quantized_gather_op;
    return writer.replace_gather(c.weight, code, ref.initializer, ref.constant_node,
                                 c.output);
  }
  if (!can_decode_standard) {
    runs_as = std::string(decode_op) + " + " + c.op_type + " (" + f.why_not +
              "; opset < 11: decoded by qsl's operator)";
    return writer.replace(c.weight, c.shape, c.layout, code, ref.initializer, ref.constant_node,
                          quantizers);
  }
  runs_as = c.op_type + " on the runtime's kernel (" + f.why_not + "; " +
            (c.table()        ? ""
             : !c.recurrent() ? "weight "
             : c.input == 1   ? "W "
                              : "R ") +
            "decoded at load)";
  return writer.replace_standard(c.weight, c.shape, c.layout, code, ref.initializer,
                                 ref.constant_node, quantizers);
}

}  // namespace

double compress_report::bits_per_weight() const {
  std::uint64_t weights = 0, bytes = 0;
  for (const auto& l : layers)
    if (l.compressed) {
      std::uint64_t count = 1;
      for (std::int64_t d : l.shape) count *= static_cast<std::uint64_t>(d);
      weights += count;
      bytes += l.bytes_after;
    }
  return weights == 0 ? 0 : 8.0 * static_cast<double>(bytes) / static_cast<double>(weights);
}

compress_report compress(model& m, const compress_options& o) {
  qsl::detail::require(o.activation_bits >= 0 && o.activation_bits <= max_activation_bits,
                       "compress: activation_bits is " + std::to_string(o.activation_bits) +
                           "; expected 0.." + std::to_string(max_activation_bits));
  qsl::detail::require(o.native_min_rows >= 0, "compress: native_min_rows is " +
                                              std::to_string(o.native_min_rows) +
                                              "; expected >= 0 (0: never)");
  qsl::detail::require(o.int8_min_rows >= 0, "compress: int8_min_rows is " +
                                            std::to_string(o.int8_min_rows) +
                                            "; expected >= 0 (0: never)");
  qsl::detail::require(o.small_batch_bits >= 0 && o.small_batch_bits <= max_activation_bits,
                       "compress: small_batch_bits is " + std::to_string(o.small_batch_bits) +
                           "; expected 0.." + std::to_string(max_activation_bits));
  qsl::detail::require(o.min_weights >= 0, "compress: min_weights is " +
                                          std::to_string(o.min_weights) + "; expected >= 0");
  qsl::detail::require(o.min_grouped_row_width >= 0,
                       "compress: min_grouped_row_width is " +
                           std::to_string(o.min_grouped_row_width) + "; expected >= 0");
  qsl::detail::require(o.edge_bits >= 0 && o.edge_bits <= max_bits,
                  "compress: edge_bits is " + std::to_string(o.edge_bits) + "; expected 0.." +
                      std::to_string(max_bits));
  qsl::detail::require(o.format == output_format::qsl || o.format == output_format::standard,
                  "compress: unknown output format " + std::to_string(static_cast<int>(o.format)));
  qsl::detail::require(std::isfinite(o.budget_bits) && o.budget_bits >= 0,
                       "compress: budget_bits is " + std::to_string(o.budget_bits) +
                           "; expected a finite number >= 0 (0: no budget)");
  const bool budgeted = o.budget_bits > 0 || o.max_model_bytes > 0;
  if (budgeted) {
    qsl::detail::require(o.edge_bits == 0, "compress: edge_bits is " +
                                               std::to_string(o.edge_bits) +
                                               " with a size budget, which chooses every "
                                               "layer's bits; leave edge_bits 0");
    qsl::detail::require(!o.budget_choices.empty(), "compress: budget_choices is empty");
    for (int b : o.budget_choices)
      qsl::detail::require(b >= 1 && b <= max_bits, "compress: budget_choices holds " +
                                                        std::to_string(b) + "; expected 1.." +
                                                        std::to_string(max_bits));
  }
  pb::ModelProto& proto = m.internals().proto;
  compress_report report;
  report.opset_before = report.opset_after = m.opset();
  report.model_bytes_before = proto.ByteSizeLong();
  if (o.format == output_format::standard && m.opset() < min_standard_opset) {
    try {
      detail::convert_opset(proto, min_standard_opset);
    } catch (const model_error& e) {
      throw model_error("compress: the standard format needs opset >= " +
                        std::to_string(min_standard_opset) + " (BitShift), and " + e.what() +
                        " (use the qsl format, or re-export the model)");
    }
    report.opset_after = m.opset();
  }
  if (o.fold_shapes) report.shape_reads_folded = detail::fold_static_shape_reads(proto);
  pb::GraphProto& g = *proto.mutable_graph();

  // 1. The layers, in graph order; a weight shared by several nodes is compressed once.
  const auto consts = constants(g);
  std::vector<candidate> chosen;
  std::vector<decompose_options> chosen_options;
  std::set<std::string> seen;
  for (int i = 0; i < g.node_size(); ++i)
   for (int slot = 0; slot < detail::weight_slots(g.node(i)); ++slot) {
    const pb::NodeProto& n = g.node(i);
    candidate c;
    std::string why;
    layer_report r;
    const bool found = find_weight(n, i, consts, c, why, slot);
    if (!found && why.empty()) continue;  // a Gather on no table: not a layer
    r.node = c.node_name;
    r.op_type = c.op_type;
    r.weight = c.weight;
    r.shape = c.shape;
    if (found && seen.count(c.weight)) continue;  // shared weight: compressed with its first user
    if (!found) {
      r.note = why + ": left as it is";
    } else if (std::any_of(o.skip.begin(), o.skip.end(), [&](const std::string& p) {
                 return detail::glob(p, c.node_name) || detail::glob(p, c.weight);
               })) {
      r.note = "skipped by request";
    } else if (c.rows * c.cols < o.min_weights) {
      r.note = "below " + std::to_string(o.min_weights) + " weights: left as it is";
    } else if (c.op_type == "Conv" && detail::int_attribute(n, "group", 1) > 1 &&
               c.cols < o.min_grouped_row_width && detail::override_for(o, c) == nullptr) {
      r.note = "a grouped convolution of rows of " + std::to_string(c.cols) +
               " inputs (below " + std::to_string(o.min_grouped_row_width) + "): left as it is";
    } else if (!floating_point(consts.at(c.weight).tensor->data_type())) {
      r.note = "a " + detail::type_name(consts.at(c.weight).tensor->data_type()) +
               " weight: left as it is";
    } else {
      seen.insert(c.weight);
      chosen.push_back(c);
      chosen_options.push_back(detail::options_for(o, c));
      r.compressed = true;
    }
    // A weight left as it is is the runtime's to judge; a non-finite one is worth a warning.
    if (found && !r.compressed && floating_point(consts.at(c.weight).tensor->data_type())) {
      const std::string non_finite =
          detail::first_non_finite(c, read_floats(*consts.at(c.weight).tensor, c.weight));
      if (!non_finite.empty()) r.warning = "weight " + in_quotes(c.weight) + " " + non_finite;
    }
    report.layers.push_back(r);
   }
  for (int i = 0; i < g.node_size(); ++i)
    for (const auto& a : g.node(i).attribute()) {
      if (a.has_g()) report_subgraph_layers(a.g(), node_label(g.node(i), i), report.layers);
      for (const auto& sub : a.graphs())
        report_subgraph_layers(sub, node_label(g.node(i), i), report.layers);
    }
  std::vector<bool> twd;  // per chosen layer: factorized with TWD
  for (const candidate& c : chosen)  // products only: a table or a recurrent weight keeps BCQ
    twd.push_back(!c.table() && !c.decoded_at_load() &&
                  std::any_of(o.twd_layers.begin(), o.twd_layers.end(), [&](const std::string& p) {
                    return detail::glob(p, c.node_name) || detail::glob(p, c.weight);
                  }));
  if (o.format == output_format::standard && std::find(twd.begin(), twd.end(), true) != twd.end())
    throw qsl::error("compress: TWD layers have no standard-format encoding yet; use the qsl "
                     "format (or leave them out of twd_layers)");
  if (budgeted && std::find(twd.begin(), twd.end(), true) != twd.end())
    throw qsl::error("compress: a size budget chooses per-row codes only; TWD layers cannot be "
                     "budgeted yet (leave them out of twd_layers, or give no budget)");
  // Layers kept on the runtime's own operator (qsl format): many rows per call at batch 1.
  std::vector<std::int64_t> rows(chosen.size(), 0);
  std::map<std::string, std::vector<std::int64_t>> shapes;
  if (o.format == output_format::qsl) {
    shapes = detail::inferred_shapes(proto);
    for (std::size_t l = 0; l < chosen.size(); ++l)
      if (!chosen[l].table() && !chosen[l].decoded_at_load())
        rows[l] = rows_per_call(g.node(chosen[l].node), chosen[l].weight, shapes);
  }
  // Fused layers (qsl format): decided on the graph as it is, before any rewriting.
  std::vector<detail::fusion_plan> fusion(chosen.size());
  for (std::size_t l = 0; l < chosen.size(); ++l) {
    if (o.format != output_format::qsl) continue;
    const candidate& layer = chosen[l];
    if (layer.recurrent()) {
      fusion[l].why_not = "qsl has no recurrent kernel";
    } else if (layer.transposed_conv()) {
      const pb::NodeProto& n = g.node(layer.node);
      fusion[l].why_not = conv_transpose_why_not(g, n, layer, o);
      if (fusion[l].why_not.empty())
        fusion[l].users = {detail::plan_conv_fusion(g, n, layer.weight, layer.shape[1])};
    } else if (layer.table()) {  // QuantizedGather: the table read by this Gather alone
      const int readers = detail::uses(g, layer.weight);
      const auto type = consts.at(layer.weight).tensor->data_type();
      if (!o.fuse)
        fusion[l].why_not = "fusion off";
      else if (readers != 1)
        fusion[l].why_not = "the table is read by " + std::to_string(readers) + " nodes";
      else if (type != pb::TensorProto::FLOAT)
        fusion[l].why_not = "a " + detail::type_name(type) + " table (QuantizedGather is float)";
    } else if (!o.fuse) {
      fusion[l].why_not = "fusion off";
    } else if (twd[l]) {  // QuantizedTwd: one reader, a MatMul or a Gemm with at most a bias
      const candidate& c = chosen[l];
      fusion[l] = c.op_type == "Conv"
                      ? detail::fusion_plan{{}, "a Conv"}
                      : detail::plan_fusions(g, c.weight, c.rows, c.layout);
      if (fusion[l].why_not.empty()) {
        const detail::fused_layer& f = fusion[l].users.front();
        if (fusion[l].users.size() != 1) fusion[l].why_not = "TWD with several readers";
        else if (f.transpose_x || f.alpha != 1.0f || !f.added.empty())
          fusion[l].why_not = "TWD in a Gemm with transA, alpha or C beyond a bias";
      }
      if (!fusion[l].why_not.empty()) fusion[l].users.clear();
    } else {
      const candidate& c = chosen[l];
      if (c.op_type == "Conv") {
        detail::fused_layer f = detail::plan_conv_fusion(g, g.node(c.node), c.weight, c.rows);
        if (f.why_not.empty() && c.shape.size() != 3 && c.shape.size() != 4)
          f.why_not = "a " + std::to_string(c.shape.size() - 2) + "-D convolution";
        fusion[l].why_not = f.why_not;
        if (f.why_not.empty()) fusion[l].users = {f};
      } else {
        fusion[l] = detail::plan_fusions(g, c.weight, c.rows, c.layout);
        for (detail::fused_layer& f : fusion[l].users) {  // W X: X's rank for the Transposes
          if (!f.weight_left) continue;
          const auto it = shapes.find(f.x);
          f.x_rank = it == shapes.end() ? 0 : static_cast<int>(it->second.size());
          if (f.x_rank < 2) fusion[l].why_not = "MatMul(W, X) with X of unknown rank";
        }
        if (!fusion[l].why_not.empty()) fusion[l].users.clear();
      }
    }
  }
  const bool can_decode_standard = m.opset() >= min_standard_opset;
  // The first and last layers are the products at the graph's ends: an embedding table is
  // looked up, not multiplied, and its error does not grow through a product.
  std::vector<std::size_t> products;
  for (std::size_t l = 0; l < chosen.size(); ++l)
    if (!chosen[l].table()) products.push_back(l);
  if (o.edge_bits > 0 && !products.empty()) {
    chosen_options[products.front()].bits = o.edge_bits;
    chosen_options[products.back()].bits = o.edge_bits;
  }

  // 2. Under a size budget: every layer decomposed at each bit count it may take, measured,
  // and the bits allocated (budget.hpp); the codes are kept for the rewrite.
  detail::budget_measurements budget;
  if (budgeted) budget = detail::measure_budget(o, chosen, chosen_options, consts,
                                                report.model_bytes_before);
  std::vector<std::vector<weight_code>>& measured = budget.codes;
  std::vector<detail::budget_layer>& choices = budget.choices;
  std::uint64_t code_limit = budget.code_limit;
  // max_model_bytes: the rewrite starts again from the original with a smaller code limit
  // when the written file exceeds it (the nodes' overhead was guessed short).
  pb::ModelProto original;
  if (o.max_model_bytes > 0) original = proto;

  for (int attempt = 0;; ++attempt) {
    std::vector<std::size_t> picks;
    if (budgeted) {
      try {
        picks = detail::allocate_budget(choices, code_limit);
      } catch (const qsl::error& e) {
        throw qsl::error(std::string("compress: ") + e.what());
      }
      report.budget_code_bytes = code_limit;
    }
    report.weight_bytes_before = report.weight_bytes_after = 0;
    pb::GraphProto& g = *proto.mutable_graph();  // anew: the proto may have been restored
    // 3. Decompose (or take the measured code) and rewrite, one layer at a time; with
    // sequential calibration, the later groups against the model as compressed so far.
    detail::sequential_calibration sequential(m, o, chosen);
    detail::graph_writer writer(proto, o.format, o.coefficients);
    std::size_t done = 0;
    for (std::size_t l = 0; l < chosen.size(); ++l) {
      const candidate& c = chosen[l];
      if (o.progress) o.progress(done, chosen.size(), c.node_name);
      const constant_ref ref = constants(g).at(c.weight);  // indices move as the graph changes
      const std::string what = detail::what_of(c);
      const Eigen::MatrixXf w = detail::read_w(c, *ref.tensor, what);
      // With calibration statistics: the activation quantizers of every bit count, fitted
      // offline.
      const layer_calibration* stats = sequential.statistics(l);
      // Under a budget the measured code is taken, unless its statistics have changed since:
      // then the chosen bits and group are decomposed anew.
      const bool measured_code = budgeted && !sequential.recalibrated(l);
      decompose_options layer_options =
          measured_code ? decompose_options{} : detail::layer_options_of(chosen_options[l], stats);
      if (budgeted && !measured_code) {
        const weight_code& pick = measured[l][picks[l]];
        layer_options.bits = pick.bits;
        layer_options.group_size = pick.group_size >= c.cols ? 0 : pick.group_size;
      }
      std::vector<activation_quantizer> quantizers;
      if (stats != nullptr && o.format == output_format::qsl)
        for (int b = 1; b <= max_activation_bits; ++b)
          quantizers.push_back(calibrate_activations(stats->samples(), b));
      const std::uint64_t before =
          static_cast<std::uint64_t>(w.size()) * element_size(ref.tensor->data_type());
      layer_report result;
      try {
        if (twd[l]) {
          twd_options factorization = o.twd;
          factorization.calibration = layer_options.calibration;
          const twd_code code = factorize_ternary(w, factorization);
          sequential.compressed(l, code);
          result.factorized = true;
          const detail::fusion_plan& f = fusion[l];
          result.runs_as = f.users.empty() ? std::string(decode_factorized_op) + " + " + c.op_type +
                                                 " (" + f.why_not + ")"
                                           : std::string(quantized_twd_op);
          result.basis_vectors = code.basis_vectors();
          result.basis = basis::ternary;
          result.bytes_after = writer.replace_factorized(
              c.weight, c.shape, c.layout, code, ref.initializer, ref.constant_node, quantizers,
              f.users.empty() ? nullptr : &f.users.front(), o.activation_bits);
          result.relative_error = std::sqrt(normalized_error(w, code));
          if (stats != nullptr)
            result.relative_output_error =
                std::sqrt(normalized_output_error(w, code, layer_options.calibration));
        } else {
          weight_code code = measured_code ? measured[l][picks[l]] : decompose(w, layer_options);
          if (!measured_code) detail::store_coefficients(code, o.coefficients);
          sequential.compressed(l, code);
          result.bits = code.bits;
          result.basis = code.basis;
          result.group_size = code.group_size;
          const detail::fusion_plan& f = fusion[l];
          // On the runtime's operator: layers of many rows, and (unless fusion is off) layers
          // that cannot be fused, whose DecodeWeights output ORT could not prepack anyway.
          // MatMul / Gemm layers with 8-bit activations for many rows stay fused at any size
          // (inputs up to cpu_int8_max_cols: their int32 sums cannot overflow).
          const bool int8_rows =
              o.format == output_format::qsl && o.int8_min_rows > 0 && o.activation_bits == 0 &&
              (c.op_type != "Conv" || int8_conv(c, f)) && code.cols <= cpu_int8_max_cols;
          const bool many = !int8_rows && (rows[l] == many_rows || rows[l] >= o.native_min_rows);
          const bool unfusable = o.fuse && !f.why_not.empty();
          const bool native = o.format == output_format::qsl && o.native_min_rows > 0 &&
                              (many || unfusable) && can_decode_standard;
          if (o.format == output_format::qsl && c.transposed_conv() && f.why_not.empty()) {
            result.bytes_after =
                writer.replace_conv(c.weight, c.shape, code, ref.initializer, ref.constant_node,
                                    f.users.front(), 0, quantizers, o.int8_min_rows);
            result.runs_as = std::string(quantized_conv_transpose_op) +
                             " (8-bit activations from " + std::to_string(o.int8_min_rows) +
                             " pixels per call)";
          } else if (c.table() || c.decoded_at_load()) {
            result.bytes_after = rewrite_table_or_decoded(
                writer, c, code, ref, f, quantizers, o.format, can_decode_standard, result.runs_as);
          } else if (native) {
            // The int8 form where asked for and every reader can take it (else fp32).
            std::string int8_not;
            if (o.native_int8) {
              int8_not = !f.why_not.empty()    ? f.why_not
                         : c.op_type == "Conv" ? "a convolution"
                                               : "";
              for (const detail::fused_layer& u : f.users)
                if (int8_not.empty()) int8_not = detail::int8_why_not(u);
            }
            const bool int8 = o.native_int8 && int8_not.empty();
            result.bytes_after = writer.replace_standard(
                c.weight, c.shape, c.layout, code, ref.initializer, ref.constant_node, quantizers,
                int8 ? f.users : std::vector<detail::fused_layer>{});
            const std::string rows_text =
                !many ? "not fused: " + f.why_not
                : rows[l] == many_rows
                    ? std::string(c.op_type == "Conv" ? "output size" : "sequence length") +
                          " unknown, counted as many rows"
                    : std::to_string(rows[l]) +
                          " rows per call >= " + std::to_string(o.native_min_rows);
            result.runs_as =
                int8 ? c.op_type + " on the runtime's int8 kernel (" + rows_text +
                           "; weight decoded and requantized to int8 at load, activations per call)"
                     : c.op_type + " on the runtime's kernel (" + rows_text +
                           "; weight decoded at load" +
                           (o.native_int8 ? "; fp32, not int8: " + int8_not : std::string()) + ")";
          } else if (o.format == output_format::qsl && f.why_not.empty() && c.op_type == "Conv") {
            result.bytes_after = writer.replace_conv(
                c.weight, c.shape, code, ref.initializer, ref.constant_node, f.users.front(),
                o.activation_bits, quantizers, int8_rows ? o.int8_min_rows : 0);
            result.runs_as = quantized_conv_op;
            if (int8_rows)
              result.runs_as +=
                  " (8-bit activations from " + std::to_string(o.int8_min_rows) + " rows per call)";
          } else if (o.format == output_format::qsl && f.why_not.empty()) {
            result.bytes_after = writer.replace_fused(
                c.weight, c.shape, c.layout, code, ref.initializer, ref.constant_node, f.users,
                o.activation_bits, int8_rows ? o.int8_min_rows : 0,
                int8_rows ? o.small_batch_bits : 0, quantizers);
            result.runs_as = quantized_matmul_op;
            if (int8_rows)
              result.runs_as +=
                  " (8-bit activations from " + std::to_string(o.int8_min_rows) + " rows per call" +
                  (o.small_batch_bits > 0 ? "; below, " + std::to_string(o.small_batch_bits) +
                                                "-bit where the CPU has byte tables"
                                          : std::string()) +
                  ")";
            if (f.users.size() > 1)
              result.runs_as += " (" + std::to_string(f.users.size()) + " nodes on one code)";
          } else {
            result.bytes_after = writer.replace(c.weight, c.shape, c.layout, code, ref.initializer,
                                                ref.constant_node, quantizers);
            result.runs_as =
                o.format == output_format::standard
                    ? "standard"
                    : std::string(decode_op) + " + " + c.op_type + " (" + f.why_not + ")";
          }
          result.relative_error = std::sqrt(normalized_error(w, code));
          if (stats != nullptr)
            result.relative_output_error =
                std::sqrt(measured_code
                              ? budget.relative_errors[l][picks[l]]
                              : normalized_output_error(w, code, layer_options.calibration));
        }
      } catch (const model_error&) {
        throw;
      } catch (const qsl::error& e) {  // an option that does not suit this layer: name the layer
        throw qsl::error(what + ": " + e.what());
      }
      const std::uint64_t after = result.bytes_after;
      for (auto& r : report.layers)
        if (r.compressed && r.weight == c.weight) {
          r.factorized = result.factorized;
          r.basis_vectors = result.basis_vectors;
          r.bits = result.bits;
          r.basis = result.basis;
          r.group_size = result.group_size;
          r.bytes_before = before;
          r.bytes_after = after;
          r.bits_per_weight =
              8.0 * static_cast<double>(after) / static_cast<double>(c.rows * c.cols);
          r.relative_error = result.relative_error;
          r.calibrated = stats != nullptr;
          r.relative_output_error = result.relative_output_error;
          if (stats != nullptr) {
            r.calibration_vectors = stats->vectors;
            if (stats->vectors < c.cols)
              r.warning = "calibration saw " + std::to_string(stats->vectors) +
                          " input vectors for " + std::to_string(c.cols) +
                          " inputs: its statistics are rank-deficient (give more samples)";
          }
          r.runs_as = result.runs_as;
          r.rows_per_call = rows[l];
          r.budget_measurements.clear();
          const bool weighed = budgeted && o.sensitivity;
          for (std::size_t i = 0; budgeted && i < measured[l].size(); ++i)
            r.budget_measurements.push_back({measured[l][i].bits, measured[l][i].group_size,
                                             choices[l][i].bytes,
                                             std::sqrt(budget.relative_errors[l][i]),
                                             weighed ? std::sqrt(choices[l][i].error) : 0.0,
                                             weighed && budget.reference[l] == i});
          r.sensitivity = budgeted ? budget.sensitivity[l] : 0.0;
        }
      report.weight_bytes_before += before;
      report.weight_bytes_after += after;
      ++done;
    }
    writer.finish();
    if (o.progress && !chosen.empty()) o.progress(done, chosen.size(), "");
    report.model_bytes_after = proto.ByteSizeLong();
    if (o.max_model_bytes == 0 || report.model_bytes_after <= o.max_model_bytes) break;
    const std::uint64_t excess = report.model_bytes_after - o.max_model_bytes;
    if (attempt == 3 || excess >= code_limit)
      throw qsl::error("compress: the file would take " + std::to_string(report.model_bytes_after) +
                       " bytes, over max_model_bytes " + std::to_string(o.max_model_bytes) +
                       " even with the codes cut to " + std::to_string(code_limit) + " bytes");
    code_limit -= excess + excess / 8 + 64;
    proto = original;
  }
  return report;
}

}  // namespace qsl::onnx
