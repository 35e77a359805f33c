// Reading qsl-format layers back into weight codes (qsl::onnx::compressed_layers).
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>

#include "onnx/proto.hpp"

namespace qsl::onnx {
namespace {

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

const pb::AttributeProto* find_attribute(const pb::NodeProto& n, const char* name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

std::int64_t required_int(const pb::NodeProto& n, const char* name, const std::string& what) {
  const pb::AttributeProto* a = find_attribute(n, name);
  if (a == nullptr || a->type() != pb::AttributeProto::INT)
    throw model_error(what + ": integer attribute " + in_quotes(name) + " is missing");
  return a->i();
}

// Input `index` of `n`, an initializer of one of `types` and exactly `dims`.
const pb::TensorProto& input_tensor(const pb::NodeProto& n, int index,
                                    const std::map<std::string, const pb::TensorProto*>& init,
                                    const std::vector<std::int32_t>& types,
                                    const std::vector<std::int64_t>& dims,
                                    const std::string& what) {
  if (n.input_size() <= index)
    throw model_error(what + ": input " + std::to_string(index) + " is missing");
  const auto it = init.find(n.input(index));
  if (it == init.end())
    throw model_error(what + ": input " + in_quotes(n.input(index)) + " is not an initializer");
  const pb::TensorProto& t = *it->second;
  std::vector<std::int64_t> have(t.dims().begin(), t.dims().end());
  if (std::find(types.begin(), types.end(), t.data_type()) == types.end() || have != dims) {
    std::string expected, type_names;
    for (std::int64_t d : dims) expected += (expected.empty() ? "" : " x ") + std::to_string(d);
    for (std::int32_t type : types)
      type_names += (type_names.empty() ? "" : " or ") + detail::type_name(type);
    throw model_error(what + ": input " + in_quotes(n.input(index)) + " must be " + type_names +
                      " " + expected);
  }
  return t;
}

const pb::TensorProto& input_tensor(const pb::NodeProto& n, int index,
                                    const std::map<std::string, const pb::TensorProto*>& init,
                                    std::int32_t type, const std::vector<std::int64_t>& dims,
                                    const std::string& what) {
  return input_tensor(n, index, init, std::vector<std::int32_t>{type}, dims, what);
}

// The planes of a DecodeWeights / DecodeFactorized input, read into `code` (the layout of
// qsl::plane_bytes); set padding bits are a model_error.
void unpack(const pb::TensorProto& t, weight_code& code, bool masks, const std::string& what) {
  if (!t.has_raw_data() && t.int32_data_size() > 0)
    throw model_error(what + ": planes must be stored as raw_data");
  try {
    read_plane_bytes(code, masks, reinterpret_cast<const std::uint8_t*>(t.raw_data().data()),
                     what.c_str());
  } catch (const qsl::error& e) {
    throw model_error(e.what());
  }
}

}  // namespace

float_tensor read_constant(const model& m, const std::string& name) {
  const pb::GraphProto& g = m.internals().proto.graph();
  const pb::TensorProto* found = nullptr;
  for (const auto& t : g.initializer())
    if (t.name() == name) found = &t;
  for (const auto& n : g.node())
    if (found == nullptr && n.op_type() == "Constant" && n.domain().empty() &&
        n.output_size() == 1 && n.output(0) == name)
      for (const auto& a : n.attribute())
        if (a.name() == "value" && a.has_t()) found = &a.t();
  if (found == nullptr) throw qsl::error("read_constant: the model has no constant " + in_quotes(name));
  float_tensor out;
  out.shape.assign(found->dims().begin(), found->dims().end());
  out.values = detail::read_floats(*found, "constant " + in_quotes(name));
  return out;
}

namespace {

// The optional calibrated activation quantizers: one step and minimum per bit count 1..8.
std::vector<activation_quantizer> activation_quantizers(const pb::NodeProto& n,
                                                        const std::string& what) {
  const pb::AttributeProto* steps = find_attribute(n, "activation_steps");
  const pb::AttributeProto* minimums = find_attribute(n, "activation_minimums");
  if (steps == nullptr && minimums == nullptr) return {};
  const auto count = static_cast<int>(max_activation_bits);
  if (steps == nullptr || minimums == nullptr || steps->type() != pb::AttributeProto::FLOATS ||
      minimums->type() != pb::AttributeProto::FLOATS || steps->floats_size() != count ||
      minimums->floats_size() != count)
    throw model_error(what + ": attributes 'activation_steps' and 'activation_minimums' must "
                             "both be lists of " + std::to_string(count) + " floats");
  std::vector<activation_quantizer> out;
  for (int b = 1; b <= count; ++b) {
    const float step = steps->floats(b - 1), minimum = minimums->floats(b - 1);
    if (!std::isfinite(step) || !std::isfinite(minimum) || step < 0)
      throw model_error(what + ": activation quantizer for " + std::to_string(b) +
                        " bits has step " + std::to_string(step) + " and minimum " +
                        std::to_string(minimum) + "; expected finite values and step >= 0");
    out.push_back({b, true, step, minimum});
  }
  return out;
}


// transposed and shape: how the rebuilt tensor relates to W (rows x cols).
void read_layout(const pb::NodeProto& n, std::int64_t rows, std::int64_t cols,
                 const std::string& what, compressed_layer& layer) {
  layer.transposed = required_int(n, "transposed", what) != 0;
  const pb::AttributeProto* shape = find_attribute(n, "shape");
  if (shape == nullptr || shape->type() != pb::AttributeProto::INTS)
    throw model_error(what + ": ints attribute 'shape' is missing");
  layer.shape.assign(shape->ints().begin(), shape->ints().end());
  if (!shape_holds_w(layer.shape, rows, cols, layer.transposed))
    throw model_error(what + ": attribute 'shape' does not match rows x cols");
}

void check_code(weight_code& code, const std::string& what) {
  for (float a : code.coefficients)
    if (!std::isfinite(a)) throw model_error(what + ": a coefficient is not finite");
  compute_offsets(code);
  try {
    validate(code, what.c_str());
  } catch (const qsl::error& e) {
    throw model_error(e.what());
  }
}

// A weight code from a node's attributes (`rows` and `cols` named as the operator names them)
// and its plane and coefficient inputs; `attributes_read(code)` runs between the two (the
// node's other attribute checks come before its tensors').
weight_code read_code(const pb::NodeProto& n,
                      const std::map<std::string, const pb::TensorProto*>& init,
                      const char* rows_name, const char* cols_name, int signs, int coefficients,
                      int masks, const std::string& what,
                      const std::function<void(const weight_code&)>& attributes_read) {
  const std::int64_t rows = required_int(n, rows_name, what);
  const std::int64_t cols = required_int(n, cols_name, what);
  const std::int64_t bits = required_int(n, "bits", what);
  const std::int64_t basis = required_int(n, "basis", what);
  std::int64_t group = required_int(n, "group_size", what);
  if (group == 0) group = cols;  // QuantizedMatMul: 0 is one group per row
  if (bits < 1 || bits > max_bits || (basis != 0 && basis != 1) || rows < 1 || cols < 1 ||
      group < 1 || group > cols)
    throw model_error(what + ": attributes " + rows_name + " " + std::to_string(rows) + ", " +
                      cols_name + " " + std::to_string(cols) + ", bits " + std::to_string(bits) +
                      ", basis " + std::to_string(basis) + ", group_size " + std::to_string(group) +
                      " are out of range");
  weight_code code;
  try {
    code = make_weight_code(rows, cols, static_cast<int>(bits), static_cast<qsl::basis>(basis),
                            group == cols ? 0 : group);
  } catch (const qsl::error& e) {
    throw model_error(what + ": " + e.what());
  }
  attributes_read(code);
  const std::vector<std::int64_t> plane_dims = {rows, bits, (cols + 7) / 8};
  unpack(input_tensor(n, signs, init, pb::TensorProto::UINT8, plane_dims, what), code, false, what);
  const pb::TensorProto& alpha =
      input_tensor(n, coefficients, init, {pb::TensorProto::FLOAT, pb::TensorProto::FLOAT16},
                   {rows, code.groups(), 1, bits}, what);
  code.coefficients = detail::read_floats(alpha, what);
  if (code.basis == qsl::basis::ternary)
    unpack(input_tensor(n, masks, init, pb::TensorProto::UINT8, plane_dims, what), code, true,
           what);
  else if (n.input_size() > masks && !n.input(masks).empty())
    throw model_error(what + ": a binary code takes no masks (input " + std::to_string(masks) +
                      ")");
  check_code(code, what);
  return code;
}

compressed_layer read_decode_weights(const pb::NodeProto& n,
                                     const std::map<std::string, const pb::TensorProto*>& init,
                                     const std::string& what) {
  compressed_layer layer;
  layer.weight = n.output(0);
  layer.code = read_code(n, init, "rows", "cols", 0, 1, 2, what, [&](const weight_code& c) {
    read_layout(n, c.rows, c.cols, what, layer);
  });
  return layer;
}

// What both fused operators share after the code: the weight they replaced, the bias
// (input 4), the format's version.
void read_fused_node(const pb::NodeProto& n,
                     const std::map<std::string, const pb::TensorProto*>& init,
                     const std::string& what, std::int64_t rows, compressed_layer& layer) {
  const pb::AttributeProto* name = find_attribute(n, "weight_name");
  layer.weight =
      name != nullptr && name->type() == pb::AttributeProto::STRING ? name->s() : n.output(0);
  if (n.input_size() > 4 && !n.input(4).empty()) {
    layer.bias = detail::read_floats(
        input_tensor(n, 4, init, pb::TensorProto::FLOAT, {rows}, what), what);
    for (float b : layer.bias)
      if (!std::isfinite(b)) throw model_error(what + ": a bias value is not finite");
  }
  const std::int64_t version =
      find_attribute(n, "format_version") != nullptr ? required_int(n, "format_version", what) : 1;
  if (version != 1)
    throw model_error(what + ": format_version is " + std::to_string(version) +
                      "; this qsl reads 1 (compress the model again with this qsl)");
}

// int8_min_rows (QuantizedMatMul, QuantizedConv): 0 or absent, never; else 8-bit activations
// from that many rows per call.
void read_int8_min_rows(const pb::NodeProto& n, const std::string& what, compressed_layer& layer) {
  if (find_attribute(n, "int8_min_rows") == nullptr) return;
  layer.int8_min_rows = required_int(n, "int8_min_rows", what);
  if (layer.int8_min_rows < 0)
    throw model_error(what + ": int8_min_rows is " + std::to_string(layer.int8_min_rows) +
                      "; expected >= 0 (0: never)");
}

compressed_layer read_quantized_matmul(const pb::NodeProto& n,
                                       const std::map<std::string, const pb::TensorProto*>& init,
                                       const std::string& what) {
  compressed_layer layer;
  layer.node = n.name();
  layer.output = n.output(0);
  layer.code =
      read_code(n, init, "out_features", "in_features", 1, 2, 3, what, [&](const weight_code& c) {
        if (find_attribute(n, "shape") != nullptr) {
          read_layout(n, c.rows, c.cols, what, layer);
        } else {  // written by hand: the weight a MatMul would have, [in, out]
          layer.transposed = true;
          layer.shape = {c.cols, c.rows};
        }
      });
  read_fused_node(n, init, what, layer.code.rows, layer);
  read_int8_min_rows(n, what, layer);
  if (find_attribute(n, "small_batch_bits") != nullptr) {
    const std::int64_t bits = required_int(n, "small_batch_bits", what);
    if (bits < 0 || bits > 8 || (bits > 0 && layer.int8_min_rows == 0))
      throw model_error(what + ": small_batch_bits is " + std::to_string(bits) +
                        "; expected 0..8, and 0 without int8_min_rows");
    layer.small_batch_bits = static_cast<int>(bits);
  }
  return layer;
}

// A QuantizedGather: the table [rows, cols] as W; inputs indices, signs, coefficients, masks.
compressed_layer read_quantized_gather(const pb::NodeProto& n,
                                       const std::map<std::string, const pb::TensorProto*>& init,
                                       const std::string& what) {
  compressed_layer layer;
  layer.node = n.name();
  layer.output = n.output(0);
  layer.table = true;
  layer.code = read_code(n, init, "rows", "cols", 1, 2, 3, what, [&](const weight_code& c) {
    layer.shape = {c.rows, c.cols};
  });
  read_fused_node(n, init, what, layer.code.rows, layer);
  return layer;
}

// A QuantizedConv: the code of W = the weight [M, C / group, k...] as M x (C / group * prod k);
// a QuantizedConvTranspose (one group): of W = the weight [C, M, k...] transposed, (M prod k) x C.
compressed_layer read_quantized_conv(const pb::NodeProto& n,
                                     const std::map<std::string, const pb::TensorProto*>& init,
                                     const std::string& what, bool transposed) {
  const std::int64_t channels = required_int(n, "in_channels", what);
  const std::int64_t outputs = required_int(n, "out_channels", what);
  const pb::AttributeProto* group_attribute = find_attribute(n, "group");
  const std::int64_t group = group_attribute != nullptr ? group_attribute->i() : 1;
  const pb::AttributeProto* kernel = find_attribute(n, "kernel_shape");
  if (kernel == nullptr || kernel->type() != pb::AttributeProto::INTS ||
      (kernel->ints_size() != 1 && kernel->ints_size() != 2))
    throw model_error(what + ": ints attribute 'kernel_shape' of 1 or 2 sizes is missing");
  std::int64_t cols = group >= 1 && channels % group == 0 ? channels / group : -1;
  for (std::int64_t k : kernel->ints())
    cols = k < 1 || cols < 1 || cols > (std::int64_t{1} << 40) / k ? -1 : cols * k;
  if (cols < 1 || outputs < 1 || outputs % group != 0 || (transposed && group != 1))
    throw model_error(what + ": in_channels " + std::to_string(channels) + ", out_channels " +
                      std::to_string(outputs) + ", group " + std::to_string(group) +
                      " and kernel_shape do not describe a convolution" +
                      (transposed ? " of one group" : ""));
  std::int64_t rows = outputs;
  if (transposed) {  // rows: an output channel's taps; cols: the input channels
    rows = outputs > (std::int64_t{1} << 40) / (cols / channels) ? -1 : outputs * (cols / channels);
    cols = channels;
    if (rows < 1) throw model_error(what + ": out_channels x kernel_shape overflows");
  }
  pb::NodeProto sized = n;  // the code's rows and cols, as read_code reads them
  for (const auto& [name, value] : {std::pair{"rows", rows}, std::pair{"cols", cols}}) {
    auto* a = sized.add_attribute();
    a->set_name(name);
    a->set_type(pb::AttributeProto::INT);
    a->set_i(value);
  }
  compressed_layer layer;
  layer.node = n.name();
  layer.output = n.output(0);
  layer.code = read_code(sized, init, "rows", "cols", 1, 2, 3, what, [&](const weight_code& c) {
    read_layout(sized, c.rows, c.cols, what, layer);
  });
  read_fused_node(n, init, what, layer.code.rows, layer);
  read_int8_min_rows(n, what, layer);
  return layer;
}

// A TWD code: DecodeFactorized (attributes rows, cols; inputs from 0) or QuantizedTwd
// (out_features, in_features; inputs from 1, bias 4).
compressed_layer read_decode_factorized(const pb::NodeProto& n,
                                        const std::map<std::string, const pb::TensorProto*>& init,
                                        const std::string& what, bool fused = false) {
  compressed_layer layer;
  layer.weight = n.output(0);
  layer.factorized = true;
  const std::int64_t rows = required_int(n, fused ? "out_features" : "rows", what);
  const std::int64_t cols = required_int(n, fused ? "in_features" : "cols", what);
  const int first = fused ? 1 : 0;
  const std::int64_t k = required_int(n, "basis_vectors", what);
  if (rows < 1 || cols < 1 || k < 1 || k > (std::int64_t{1} << 16))
    throw model_error(what + ": attributes rows " + std::to_string(rows) + ", cols " +
                      std::to_string(cols) + ", basis_vectors " + std::to_string(k) +
                      " are out of range");
  read_layout(n, rows, cols, what, layer);
  twd_code& t = layer.twd;
  t.rows = rows;
  t.cols = cols;
  try {
    t.basis = make_weight_code(k, cols, 1, qsl::basis::ternary, 0);
  } catch (const qsl::error& e) {
    throw model_error(what + ": " + e.what());
  }
  const std::vector<std::int64_t> plane_dims = {k, 1, (cols + 7) / 8};
  unpack(input_tensor(n, first, init, pb::TensorProto::UINT8, plane_dims, what), t.basis, false,
         what);
  unpack(input_tensor(n, first + 1, init, pb::TensorProto::UINT8, plane_dims, what), t.basis,
         true, what);
  std::fill(t.basis.coefficients.begin(), t.basis.coefficients.end(), 1.0f);
  check_code(t.basis, what);
  t.mixing = detail::read_floats(
      input_tensor(n, first + 2, init, pb::TensorProto::FLOAT, {k, rows}, what), what);
  try {
    validate(t, what.c_str());
  } catch (const qsl::error& e) {
    throw model_error(e.what());
  }
  if (fused) {
    layer.node = n.name();
    layer.output = n.output(0);
    read_fused_node(n, init, what, rows, layer);
  }
  return layer;
}

// "a,b,,c" -> {"a", "b", "", "c"}: the values of a metadata field.
std::vector<std::string> comma_list(const std::string& text) {
  std::vector<std::string> out;
  std::size_t p = 0;
  while (p <= text.size()) {
    std::size_t q = text.find(',', p);
    if (q == std::string::npos) q = text.size();
    out.push_back(text.substr(p, q - p));
    p = q + 1;
  }
  return out;
}

// A metadata entry of replace_standard (writer.cpp): "format_version=1 rows=R ... weight=NAME",
// the weight's name taking the rest of the line. Read as the DecodeWeights node it describes.
compressed_layer read_decoded_weight(const std::string& key, const std::string& value,
                                     const std::map<std::string, const pb::TensorProto*>& init,
                                     std::vector<std::string>& int8_first,
                                     std::vector<std::string>& int8_last) {
  const std::string what = "metadata entry " + in_quotes(key);
  const std::size_t at = value.find(" weight=");
  if (at == std::string::npos || at + 8 >= value.size())
    throw model_error(what + ": no weight name (expected '... weight=NAME' at the end)");
  pb::NodeProto n;
  n.set_op_type(decode_op);
  n.add_output(value.substr(at + 8));
  std::string signs, coefficients, masks;
  std::int64_t version = 0;
  std::size_t begin = 0;
  const std::string fields = value.substr(0, at);
  while (begin < fields.size()) {
    std::size_t end = fields.find(' ', begin);
    if (end == std::string::npos) end = fields.size();
    const std::string field = fields.substr(begin, end - begin);
    begin = end + 1;
    if (field.empty()) continue;
    const std::size_t eq = field.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == field.size())
      throw model_error(what + ": field " + in_quotes(field) + " is not name=value");
    const std::string name = field.substr(0, eq), text = field.substr(eq + 1);
    if (name == "int8_first" || name == "int8_last") {
      (name == "int8_first" ? int8_first : int8_last) = comma_list(text);
    } else if (name == "signs") {
      signs = text;
    } else if (name == "coefficients") {
      coefficients = text;
    } else if (name == "masks") {
      masks = text;
    } else if (name == "activation_steps" || name == "activation_minimums") {
      pb::AttributeProto* a = n.add_attribute();
      a->set_name(name);
      a->set_type(pb::AttributeProto::FLOATS);
      for (const std::string& number : comma_list(text)) {
        char* stop = nullptr;
        const float v = number.empty() ? 0.0f : std::strtof(number.c_str(), &stop);
        if (number.empty() || *stop != '\0')
          throw model_error(what + ": field " + in_quotes(name) + " is " + in_quotes(text) +
                            "; expected numbers");
        a->add_floats(v);
      }
    } else {
      std::vector<std::int64_t> numbers;
      for (const std::string& number : comma_list(text)) {
        char* stop = nullptr;
        errno = 0;
        const long long v = number.empty() ? 0 : std::strtoll(number.c_str(), &stop, 10);
        if (number.empty() || *stop != '\0' || errno == ERANGE)
          throw model_error(what + ": field " + in_quotes(name) + " is " + in_quotes(text) +
                            "; expected whole numbers");
        numbers.push_back(v);
      }
      if (name == "format_version") {
        version = numbers.front();
        continue;
      }
      if (name != "rows" && name != "cols" && name != "bits" && name != "basis" &&
          name != "group_size" && name != "transposed" && name != "shape")
        throw model_error(what + ": unknown field " + in_quotes(name));
      pb::AttributeProto* a = n.add_attribute();
      a->set_name(name);
      if (name == "shape") {
        a->set_type(pb::AttributeProto::INTS);
        for (std::int64_t v : numbers) a->add_ints(v);
      } else {
        if (numbers.size() != 1)
          throw model_error(what + ": field " + in_quotes(name) + " is " + in_quotes(text) +
                            "; expected one number");
        a->set_type(pb::AttributeProto::INT);
        a->set_i(numbers.front());
      }
    }
  }
  if (version != 1)
    throw model_error(what + ": format_version is " + std::to_string(version) +
                      "; this qsl reads 1 (compress the model again with this qsl)");
  if (signs.empty() || coefficients.empty())
    throw model_error(what + ": the signs and coefficients tensors are not named");
  n.add_input(signs);
  n.add_input(coefficients);
  if (!masks.empty()) n.add_input(masks);
  const std::string layer_what = what + " (weight " + in_quotes(n.output(0)) + ")";
  compressed_layer layer = read_decode_weights(n, init, layer_what);
  layer.activations = activation_quantizers(n, layer_what);
  return layer;
}

// The runtime's int8 products of a decoded weight (writer: add_int8_products), each from its
// DynamicQuantizeLinear node (X: its input) to its last node (Y: its output; an Add's second
// input is the bias), read as fused layers of the weight's code.
std::vector<compressed_layer> int8_products(
    const pb::GraphProto& g, const std::map<std::string, const pb::TensorProto*>& init,
    const std::string& key, const compressed_layer& weight, const std::vector<std::string>& firsts,
    const std::vector<std::string>& lasts) {
  const std::string what = "metadata entry " + in_quotes(key);
  if (firsts.size() != lasts.size())
    throw model_error(what + ": int8_first names " + std::to_string(firsts.size()) +
                      " nodes and int8_last " + std::to_string(lasts.size()));
  auto find = [&](const std::string& name) -> const pb::NodeProto& {
    for (const auto& n : g.node())
      if (n.name() == name) return n;
    throw model_error(what + ": no node " + in_quotes(name) + " in the graph");
  };
  std::vector<compressed_layer> out;
  for (std::size_t u = 0; u < firsts.size(); ++u) {
    const pb::NodeProto& first = find(firsts[u]);
    const pb::NodeProto& last = find(lasts[u]);
    if (first.op_type() != "DynamicQuantizeLinear" || first.input_size() != 1)
      throw model_error(what + ": node " + in_quotes(firsts[u]) + " is " +
                        in_quotes(first.op_type()) + ", not a one-input DynamicQuantizeLinear");
    if ((last.op_type() != "Mul" && last.op_type() != "Add") || last.input_size() != 2 ||
        last.output_size() != 1)
      throw model_error(what + ": node " + in_quotes(lasts[u]) + " is " +
                        in_quotes(last.op_type()) + ", not the product's Mul or bias Add");
    compressed_layer product = weight;
    product.input = first.input(0);
    product.output = last.output(0);
    product.node = last.name();
    if (last.op_type() == "Add") {  // Gemm's C: [N], or [1, N]
      const auto c = init.find(last.input(1));
      const bool row = c != init.end() && c->second->dims_size() == 2;
      const std::string bias_what = what + " (node " + in_quotes(lasts[u]) + ")";
      product.bias = detail::read_floats(
          input_tensor(last, 1, init, pb::TensorProto::FLOAT,
                       row ? std::vector<std::int64_t>{1, weight.code.rows}
                           : std::vector<std::int64_t>{weight.code.rows},
                       bias_what),
          bias_what);
      for (float b : product.bias)
        if (!std::isfinite(b)) throw model_error(bias_what + ": a bias value is not finite");
    }
    out.push_back(std::move(product));
  }
  return out;
}

}  // namespace

std::vector<compressed_layer> compressed_layers(const model& m) {
  const pb::GraphProto& g = m.internals().proto.graph();
  std::map<std::string, const pb::TensorProto*> init;
  for (const auto& t : g.initializer()) init[t.name()] = &t;
  std::vector<compressed_layer> out;
  for (int i = 0; i < g.node_size(); ++i) {
    const pb::NodeProto& n = g.node(i);
    const bool bcq = n.op_type() == decode_op, twd = n.op_type() == decode_factorized_op;
    const bool fused = n.op_type() == quantized_matmul_op;
    const bool conv_transpose = n.op_type() == quantized_conv_transpose_op;
    const bool conv = n.op_type() == quantized_conv_op || conv_transpose;
    const bool fused_twd = n.op_type() == quantized_twd_op;
    const bool gather = n.op_type() == quantized_gather_op;
    if (n.domain() != qsl_domain || (!bcq && !twd && !fused && !conv && !fused_twd && !gather))
      continue;
    const std::string what = n.op_type() + " node " +
                             in_quotes(n.name().empty() ? "#" + std::to_string(i) : n.name());
    if (n.output_size() != 1) throw model_error(what + ": expected one output");
    compressed_layer layer = gather      ? read_quantized_gather(n, init, what)
                             : fused_twd ? read_decode_factorized(n, init, what, true)
                             : conv      ? read_quantized_conv(n, init, what, conv_transpose)
                             : fused     ? read_quantized_matmul(n, init, what)
                             : bcq       ? read_decode_weights(n, init, what)
                                         : read_decode_factorized(n, init, what);
    layer.activations = activation_quantizers(n, what);
    out.push_back(std::move(layer));
  }
  for (const auto& p : m.internals().proto.metadata_props()) {
    if (p.key().rfind(decoded_weight_key, 0) != 0) continue;
    std::vector<std::string> firsts, lasts;
    out.push_back(read_decoded_weight(p.key(), p.value(), init, firsts, lasts));
    for (compressed_layer& product : int8_products(g, init, p.key(), out.back(), firsts, lasts))
      out.push_back(std::move(product));
  }
  return out;
}

}  // namespace qsl::onnx
