#include <cstdio>
#include "onnx/writer.hpp"

#include <functional>
#include <map>

namespace qsl::onnx::detail {

graph_writer::graph_writer(pb::ModelProto& model, output_format format,
                           coefficient_storage coefficients)
    : model_(model), format_(format), coefficients_(coefficients) {
  const pb::GraphProto& g = model.graph();
  for (const auto& t : g.initializer()) names_.insert(t.name());
  for (const auto& v : g.input()) names_.insert(v.name());
  for (const auto& v : g.output()) names_.insert(v.name());
  for (const auto& v : g.value_info()) names_.insert(v.name());
  for (const auto& n : g.node()) {
    names_.insert(n.name());
    for (const auto& o : n.output()) names_.insert(o);
  }
}

std::string graph_writer::unique(const std::string& base) {
  std::string name = base;
  for (int i = 1; names_.count(name); ++i) name = base + "_" + std::to_string(i);
  names_.insert(name);
  return name;
}

std::string graph_writer::add_tensor(pb::TensorProto t) {
  t.set_name(unique(t.name()));
  const std::string name = t.name();
  *model_.mutable_graph()->add_initializer() = std::move(t);
  return name;
}

std::string graph_writer::int64s(const std::string& base, const std::vector<std::int64_t>& v) {
  return add_tensor(make_int64_tensor(base, {static_cast<std::int64_t>(v.size())}, v.data()));
}

pb::NodeProto& graph_writer::node(const std::string& op, std::vector<std::string> inputs,
                                  std::string output) {
  pb::NodeProto n;
  n.set_op_type(op);
  n.set_name(unique(output + "_" + op));
  for (auto& i : inputs) n.add_input(i);
  n.add_output(output);
  nodes_.push_back(std::move(n));
  return nodes_.back();
}

std::string graph_writer::shared(const std::string& key,
                                 const std::function<pb::TensorProto()>& make) {
  auto it = shared_.find(key);
  if (it != shared_.end()) return it->second;
  return shared_[key] = add_tensor(make());
}

std::uint64_t graph_writer::replace(const std::string& weight,
                                    const std::vector<std::int64_t>& shape, weight_layout layout,
                                    const weight_code& code, int initializer, int constant_node,
                                    const std::vector<activation_quantizer>& activations) {
  remove_constant(weight, initializer, constant_node);
  const code_tensors t = add_code_tensors(weight + "_qsl", code);
  if (format_ == output_format::qsl) {
    pb::NodeProto& n = node(decode_op, {t.signs, t.coefficients}, weight);
    n.set_domain(qsl_domain);
    if (!t.masks.empty()) n.add_input(t.masks);
    add_int_attribute(n, "rows", code.rows);
    add_int_attribute(n, "cols", code.cols);
    add_int_attribute(n, "bits", code.bits);
    add_int_attribute(n, "basis", static_cast<std::int64_t>(code.basis));
    add_int_attribute(n, "group_size", code.group_size);
    add_layer_attributes(n, shape, layout, activations);
  } else {
    decode_standard(weight, shape, layout, code, t.signs, t.masks, t.coefficients);
  }
  return t.bytes;
}

std::uint64_t graph_writer::replace_standard(const std::string& weight,
                                             const std::vector<std::int64_t>& shape,
                                             weight_layout layout, const weight_code& code,
                                             int initializer, int constant_node,
                                             const std::vector<activation_quantizer>& activations,
                                             const std::vector<fused_layer>& int8_users) {
  remove_constant(weight, initializer, constant_node);
  // Generated names (no spaces or '='), so that the metadata line parses whatever the
  // weight's name; the weight's name comes last and takes the rest of the line.
  auto taken = [&](int i) {  // a model compressed before may hold entries already
    for (const auto& p : model_.metadata_props())
      if (p.key() == decoded_weight_key + std::to_string(i)) return true;
    return false;
  };
  while (taken(decoded_weights_)) ++decoded_weights_;
  const int index = decoded_weights_++;
  const code_tensors t = add_code_tensors("qsl_decoded_" + std::to_string(index), code);
  std::pair<std::string, std::string> int8_ends;  // the products' first and last nodes
  if (int8_users.empty())
    decode_standard(weight, shape, layout, code, t.signs, t.masks, t.coefficients);
  else
    int8_ends = add_int8_products(code, t.signs, t.masks, t.coefficients, int8_users);
  std::string entry = "format_version=1 rows=" + std::to_string(code.rows) +
                      " cols=" + std::to_string(code.cols) + " bits=" + std::to_string(code.bits) +
                      " basis=" + std::to_string(static_cast<int>(code.basis)) +
                      " group_size=" + std::to_string(code.group_size) +
                      " transposed=" + (layout == weight_layout::transposed ? "1" : "0") +
                      " shape=";
  for (std::size_t d = 0; d < shape.size(); ++d)
    entry += (d ? "," : "") + std::to_string(shape[d]);
  entry += " signs=" + t.signs + " coefficients=" + t.coefficients;
  if (!t.masks.empty()) entry += " masks=" + t.masks;
  // Quantizers as hexadecimal floats ("%a"): read back to the same bits.
  auto hex = [](float v) {
    char text[32];
    std::snprintf(text, sizeof text, "%a", static_cast<double>(v));
    return std::string(text);
  };
  if (!activations.empty()) {
    std::string steps, minimums;
    for (const activation_quantizer& q : activations) {
      steps += (steps.empty() ? "" : ",") + hex(q.step);
      minimums += (minimums.empty() ? "" : ",") + hex(q.minimum);
    }
    entry += " activation_steps=" + steps + " activation_minimums=" + minimums;
  }
  if (!int8_users.empty())
    entry += " int8_first=" + int8_ends.first + " int8_last=" + int8_ends.second;
  entry += " weight=" + weight;
  auto* prop = model_.add_metadata_props();
  prop->set_key(decoded_weight_key + std::to_string(index));
  prop->set_value(entry);
  return t.bytes;
}

// The planes (uint8 [rows, k, ceil(cols/8)]: qsl::plane_bytes), the ternary masks and the
// coefficients ([rows, groups, 1, k]: the layout the standard decoder's level-table MatMul takes;
// the qsl operators read the same numbers, [row][group][plane]).
graph_writer::code_tensors graph_writer::add_code_tensors(const std::string& base,
                                                          const weight_code& code) {
  code_tensors t;
  const std::vector<std::int64_t> plane_dims = {code.rows, code.bits, (code.cols + 7) / 8};
  const auto signs_data = plane_bytes(code, false);
  t.signs = add_tensor(make_uint8_tensor(base + "_signs", plane_dims, signs_data.data()));
  t.bytes = signs_data.size();
  if (code.basis == qsl::basis::ternary) {
    const auto mask_data = plane_bytes(code, true);
    t.masks = add_tensor(make_uint8_tensor(base + "_masks", plane_dims, mask_data.data()));
    t.bytes += mask_data.size();
  }
  const bool half = coefficients_ == coefficient_storage::float16;
  t.coefficients = add_tensor(make_floating_tensor(
      base + "_coefficients", {code.rows, code.groups(), 1, code.bits},
      half ? pb::TensorProto::FLOAT16 : pb::TensorProto::FLOAT, code.coefficients.data()));
  if (half) float_of_half_[t.coefficients] = "";
  t.bytes += code.coefficients.size() * (half ? 2 : sizeof(float));
  return t;
}

std::string graph_writer::float_coefficients(const std::string& coefficients) {
  const auto it = float_of_half_.find(coefficients);
  if (it == float_of_half_.end()) return coefficients;
  if (it->second.empty()) {
    it->second = unique(coefficients + "_float");
    add_int_attribute(node("Cast", {coefficients}, it->second), "to", pb::TensorProto::FLOAT);
  }
  return it->second;
}

int node_producing(const pb::GraphProto& g, const std::string& output) {
  int index = -1;  // the last one, as the writers always took
  for (int i = 0; i < g.node_size(); ++i)
    if (g.node(i).output_size() == 1 && g.node(i).output(0) == output) index = i;
  if (index < 0) throw qsl::error("compress: no node produces '" + output + "'");
  return index;
}

namespace {

// The attributes every fused operator has: the activation mode, the format's version and the
// weight the node replaced, with its layout.
void add_fused_attributes(pb::NodeProto& fused, const std::string& weight,
                          const std::vector<std::int64_t>& shape, weight_layout layout,
                          int activation_bits,
                          const std::vector<activation_quantizer>& activations) {
  add_int_attribute(fused, "activation_bits", activation_bits);
  add_int_attribute(fused, "format_version", 1);
  auto* source = fused.add_attribute();
  source->set_name("weight_name");
  source->set_type(pb::AttributeProto::STRING);
  source->set_s(weight);
  add_layer_attributes(fused, shape, layout, activations);
}

// ... and those of a weight code's (QuantizedMatMul, QuantizedConv).
void add_fused_attributes(pb::NodeProto& fused, const std::string& weight,
                          const std::vector<std::int64_t>& shape, weight_layout layout,
                          const weight_code& code, int activation_bits,
                          const std::vector<activation_quantizer>& activations) {
  add_int_attribute(fused, "bits", code.bits);
  add_int_attribute(fused, "basis", static_cast<std::int64_t>(code.basis));
  add_int_attribute(fused, "group_size", code.group_size);
  add_fused_attributes(fused, weight, shape, layout, activation_bits, activations);
}

}  // namespace

std::uint64_t graph_writer::replace_fused(const std::string& weight,
                                          const std::vector<std::int64_t>& shape,
                                          weight_layout layout, const weight_code& code,
                                          int initializer, int constant_node,
                                          const std::vector<fused_layer>& users,
                                          int activation_bits, std::int64_t int8_min_rows,
                                          int small_batch_bits,
                                          const std::vector<activation_quantizer>& activations) {
  pb::GraphProto& g = *model_.mutable_graph();
  // Gemm's C [1, N] becomes a [N] copy for the bias input (one per user that has one).
  std::vector<std::string> biases;
  for (const fused_layer& f : users) {
    std::string bias = f.bias;
    if (!bias.empty() && f.bias_needs_reshape)
      for (const auto& t : g.initializer())
        if (t.name() == f.bias) {
          pb::TensorProto copy = t;
          copy.set_name(f.bias + "_qsl_bias");
          copy.clear_dims();
          copy.add_dims(code.rows);
          bias = add_tensor(std::move(copy));
          break;
        }
    biases.push_back(bias);
  }
  remove_constant(weight, initializer, constant_node);  // may move nodes: find ours after it
  const code_tensors t = add_code_tensors(weight + "_qsl", code);
  for (std::size_t u = 0; u < users.size(); ++u) {
    const fused_layer& f = users[u];
    const int index = node_producing(g, f.output);
    const pb::NodeProto& n = g.node(index);
    const std::string name = n.name().empty() ? f.output + "_QuantizedMatMul" : n.name();
    // Gemm's transA, alpha and a C that is not the bias: nodes around the fused one.
    std::vector<pb::NodeProto> before, after;
    auto step = [&](std::vector<pb::NodeProto>& where, const char* op,
                    std::vector<std::string> inputs, const std::string& output) {
      pb::NodeProto& s = where.emplace_back();
      s.set_name(unique(name + "_" + op));
      s.set_op_type(op);
      for (auto& i : inputs) s.add_input(std::move(i));
      s.add_output(output);
      return &s;
    };
    auto scalar = [&](float v, const std::string& base) {
      return add_tensor(make_float_tensor(base, {}, &v));
    };
    std::string x = f.x;
    if (f.transpose_x) {
      x = unique(name + "_a_t");
      step(before, "Transpose", {f.x}, x);
    }
    std::string product = f.output;
    if (f.alpha != 1.0f || !f.added.empty()) product = unique(name + "_product");
    if (f.weight_left) {  // Y = W X = (X^T W^T)^T over the last two dimensions
      auto swap_last_two = [&](pb::NodeProto* t) {
        auto* perm = t->add_attribute();
        perm->set_name("perm");
        perm->set_type(pb::AttributeProto::INTS);
        for (int d = 0; d < f.x_rank; ++d)
          perm->add_ints(d < f.x_rank - 2 ? d : d == f.x_rank - 2 ? f.x_rank - 1 : f.x_rank - 2);
      };
      x = unique(name + "_x_t");
      swap_last_two(step(before, "Transpose", {f.x}, x));
      const std::string y_t = unique(name + "_y_t");
      swap_last_two(step(after, "Transpose", {y_t}, f.output));
      product = y_t;
    }
    std::string scaled = product;
    if (f.alpha != 1.0f) {
      scaled = f.added.empty() ? f.output : unique(name + "_scaled");
      step(after, "Mul", {product, scalar(f.alpha, name + "_alpha")}, scaled);
    }
    if (!f.added.empty()) {
      std::string c = f.added;
      if (f.beta != 1.0f) {
        c = unique(name + "_beta_c");
        step(after, "Mul", {f.added, scalar(f.beta, name + "_beta")}, c);
      }
      step(after, "Add", {scaled, c}, f.output);
    }
    pb::NodeProto fused;
    fused.set_name(name);
    fused.set_op_type(quantized_matmul_op);
    fused.set_domain(qsl_domain);
    for (const std::string& input : {x, t.signs, t.coefficients, t.masks, biases[u]})
      fused.add_input(input);
    while (fused.input_size() > 0 && fused.input(fused.input_size() - 1).empty())
      fused.mutable_input()->RemoveLast();
    fused.add_output(product);
    add_int_attribute(fused, "in_features", code.cols);
    add_int_attribute(fused, "out_features", code.rows);
    add_fused_attributes(fused, weight, shape, layout, code, activation_bits, activations);
    if (int8_min_rows > 0 && activation_bits == 0) {
      add_int_attribute(fused, "int8_min_rows", int8_min_rows);
      if (small_batch_bits > 0) add_int_attribute(fused, "small_batch_bits", small_batch_bits);
    }
    // The node becomes [before..., fused, after...], in place (the graph stays sorted).
    google::protobuf::RepeatedPtrField<pb::NodeProto> nodes;
    for (int i = 0; i < g.node_size(); ++i) {
      if (i != index) {
        *nodes.Add() = std::move(*g.mutable_node(i));
        continue;
      }
      for (auto& b : before) *nodes.Add() = std::move(b);
      *nodes.Add() = std::move(fused);
      for (auto& a : after) *nodes.Add() = std::move(a);
    }
    g.mutable_node()->Swap(&nodes);
  }
  for (std::size_t u = 0; u < users.size(); ++u) {
    const std::string& c = users[u].bias;
    if (biases[u] != c && uses(g, c) == 0)  // C [1, N], replaced by its [N] copy
      for (int i = 0; i < g.initializer_size(); ++i)
        if (g.initializer(i).name() == c) {
          g.mutable_initializer()->DeleteSubrange(i, 1);
          break;
        }
  }
  return t.bytes;
}

std::uint64_t graph_writer::replace_conv(
    const std::string& weight, const std::vector<std::int64_t>& shape, const weight_code& code,
    int initializer, int constant_node, const fused_layer& f, int activation_bits,
    const std::vector<activation_quantizer>& activations, std::int64_t int8_min_rows) {
  pb::GraphProto& g = *model_.mutable_graph();
  remove_constant(weight, initializer, constant_node);  // may move nodes: find ours after it
  pb::NodeProto* n = g.mutable_node(node_producing(g, f.output));
  const code_tensors t = add_code_tensors(weight + "_qsl", code);
  // ConvTranspose: the weight [C, M, k...] is W^T, W's rows one per output channel and tap.
  const bool transposed = n->op_type() == "ConvTranspose";
  const char* op = transposed ? quantized_conv_transpose_op : quantized_conv_op;
  pb::NodeProto fused;
  fused.set_name(n->name().empty() ? f.output + "_" + op : n->name());
  fused.set_op_type(op);
  fused.set_domain(qsl_domain);
  for (const std::string& input : {f.x, t.signs, t.coefficients, t.masks, f.bias})
    fused.add_input(input);
  while (fused.input_size() > 0 && fused.input(fused.input_size() - 1).empty())
    fused.mutable_input()->RemoveLast();
  fused.add_output(f.output);
  std::int64_t group = 1;
  for (const auto& a : n->attribute()) {  // Conv's own attributes, as they are
    if (a.name() == "group") group = a.i();
    if (a.name() == "group" || a.name() == "strides" || a.name() == "pads" ||
        a.name() == "dilations" || a.name() == "auto_pad" ||
        (transposed && a.name() == "output_padding"))
      *fused.add_attribute() = a;
  }
  add_int_attribute(fused, "in_channels", transposed ? shape[0] : shape[1] * group);
  add_int_attribute(fused, "out_channels", transposed ? shape[1] * group : shape[0]);
  auto* kernel = fused.add_attribute();
  kernel->set_name("kernel_shape");
  kernel->set_type(pb::AttributeProto::INTS);
  for (std::size_t d = 2; d < shape.size(); ++d) kernel->add_ints(shape[d]);
  add_fused_attributes(fused, weight, shape,
                       transposed ? weight_layout::transposed : weight_layout::as_is, code,
                       activation_bits, activations);
  if (int8_min_rows > 0 && activation_bits == 0)
    add_int_attribute(fused, "int8_min_rows", int8_min_rows);
  *n = std::move(fused);
  return t.bytes;
}

std::uint64_t graph_writer::replace_gather(const std::string& weight, const weight_code& code,
                                           int initializer, int constant_node,
                                           const std::string& output) {
  pb::GraphProto& g = *model_.mutable_graph();
  remove_constant(weight, initializer, constant_node);  // may move nodes: find ours after it
  pb::NodeProto* n = g.mutable_node(node_producing(g, output));
  const code_tensors t = add_code_tensors(weight + "_qsl", code);
  pb::NodeProto gather;
  gather.set_name(n->name().empty() ? output + "_QuantizedGather" : n->name());
  gather.set_op_type(quantized_gather_op);
  gather.set_domain(qsl_domain);
  for (const std::string& input : {n->input(1), t.signs, t.coefficients, t.masks})
    gather.add_input(input);
  if (t.masks.empty()) gather.mutable_input()->RemoveLast();
  gather.add_output(output);
  add_int_attribute(gather, "rows", code.rows);
  add_int_attribute(gather, "cols", code.cols);
  add_int_attribute(gather, "bits", code.bits);
  add_int_attribute(gather, "basis", static_cast<std::int64_t>(code.basis));
  add_int_attribute(gather, "group_size", code.group_size);
  add_int_attribute(gather, "format_version", 1);
  auto* source = gather.add_attribute();
  source->set_name("weight_name");
  source->set_type(pb::AttributeProto::STRING);
  source->set_s(weight);
  *n = std::move(gather);
  return t.bytes;
}

std::uint64_t graph_writer::replace_factorized(const std::string& weight,
                                               const std::vector<std::int64_t>& shape,
                                               weight_layout layout, const twd_code& code,
                                               int initializer, int constant_node,
                                               const std::vector<activation_quantizer>& activations,
                                               const fused_layer* fused, int activation_bits) {
  if (format_ != output_format::qsl)
    throw qsl::error("compress: weight '" + weight + "': TWD layers have no standard-format "
                     "encoding yet; use the qsl format");
  remove_constant(weight, initializer, constant_node);
  const weight_code& basis = code.basis;
  const std::int64_t bytes = (basis.cols + 7) / 8;
  const std::vector<std::int64_t> plane_dims = {basis.rows, 1, bytes};
  const std::string base = weight + "_qsl";
  const auto signs_data = plane_bytes(basis, false);
  const auto mask_data = plane_bytes(basis, true);
  const std::string signs = add_tensor(make_uint8_tensor(base + "_signs", plane_dims, signs_data.data()));
  const std::string masks = add_tensor(make_uint8_tensor(base + "_masks", plane_dims, mask_data.data()));
  const std::string mixing = add_tensor(
      make_float_tensor(base + "_mixing", {basis.rows, code.rows}, code.mixing.data()));
  const std::uint64_t bytes_added =
      signs_data.size() + mask_data.size() + code.mixing.size() * sizeof(float);
  if (fused != nullptr) {  // the node producing fused->output becomes a QuantizedTwd
    pb::GraphProto& g = *model_.mutable_graph();
    pb::NodeProto* n = g.mutable_node(node_producing(g, fused->output));
    pb::NodeProto twd;
    twd.set_name(n->name().empty() ? fused->output + "_QuantizedTwd" : n->name());
    twd.set_op_type(quantized_twd_op);
    twd.set_domain(qsl_domain);
    for (const std::string& input : {fused->x, signs, masks, mixing, fused->bias})
      twd.add_input(input);
    if (twd.input(4).empty()) twd.mutable_input()->RemoveLast();
    twd.add_output(fused->output);
    add_int_attribute(twd, "in_features", code.cols);
    add_int_attribute(twd, "out_features", code.rows);
    add_int_attribute(twd, "basis_vectors", basis.rows);
    add_fused_attributes(twd, weight, shape, layout, activation_bits, activations);
    *n = std::move(twd);
    return bytes_added;
  }
  pb::NodeProto& n = node(decode_factorized_op, {signs, masks, mixing}, weight);
  n.set_domain(qsl_domain);
  add_int_attribute(n, "rows", code.rows);
  add_int_attribute(n, "cols", code.cols);
  add_int_attribute(n, "basis_vectors", basis.rows);
  add_layer_attributes(n, shape, layout, activations);
  return bytes_added;
}

void graph_writer::remove_constant(const std::string& weight, int initializer,
                                   int constant_node) {
  pb::GraphProto& g = *model_.mutable_graph();
  if (initializer >= 0) g.mutable_initializer()->DeleteSubrange(initializer, 1);
  if (constant_node >= 0) g.mutable_node()->DeleteSubrange(constant_node, 1);
  for (int i = g.input_size() - 1; i >= 0; --i)  // IR < 4 lists initializers as inputs too
    if (g.input(i).name() == weight) g.mutable_input()->DeleteSubrange(i, 1);
}

void add_int_attribute(pb::NodeProto& n, const char* name, std::int64_t value) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(pb::AttributeProto::INT);
  a->set_i(value);
}

void add_layer_attributes(pb::NodeProto& n, const std::vector<std::int64_t>& shape,
                          weight_layout layout,
                          const std::vector<activation_quantizer>& activations) {
  add_int_attribute(n, "transposed", layout == weight_layout::transposed ? 1 : 0);
  auto* s = n.add_attribute();
  s->set_name("shape");
  s->set_type(pb::AttributeProto::INTS);
  for (std::int64_t d : shape) s->add_ints(d);
  if (activations.empty()) return;
  auto floats = [&](const char* name, auto value) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(pb::AttributeProto::FLOATS);
    for (const auto& q : activations) a->add_floats(value(q));
  };
  floats("activation_steps", [](const activation_quantizer& q) { return q.step; });
  floats("activation_minimums", [](const activation_quantizer& q) { return q.minimum; });
}

void graph_writer::finish() {
  pb::GraphProto& g = *model_.mutable_graph();
  google::protobuf::RepeatedPtrField<pb::NodeProto> all;
  for (auto& n : nodes_) *all.Add() = std::move(n);
  for (auto& n : *g.mutable_node()) *all.Add() = std::move(n);
  g.mutable_node()->Swap(&all);
  nodes_.clear();
  if (format_ == output_format::qsl) {
    bool has = false;
    for (const auto& o : model_.opset_import()) has = has || o.domain() == qsl_domain;
    if (!has) {
      auto* o = model_.add_opset_import();
      o->set_domain(qsl_domain);
      o->set_version(1);
    }
    absorb_bias_adds();
  }
}

}  // namespace qsl::onnx::detail
