// qsl::onnx::session: plans a graph once (every operator, attribute and constant checked), then
// runs it step by step on float tensors.
#include "qsl/onnx_session.hpp"

#include <Eigen/Core>
#include <functional>
#include <map>
#include <set>

#include "cpu/float_gemm.hpp"
#include "onnx/ops.hpp"
#include "onnx/proto.hpp"
#include "scratch.hpp"
#include "qsl/quantized_conv2d.hpp"

namespace qsl::onnx {
namespace {

using ops::dims;
using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

// Attribute readers with defaults.
const pb::AttributeProto* attribute(const pb::NodeProto& n, const char* name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}
std::int64_t int_attr(const pb::NodeProto& n, const char* name, std::int64_t fallback) {
  const auto* a = attribute(n, name);
  return a != nullptr ? a->i() : fallback;
}
float float_attr(const pb::NodeProto& n, const char* name, float fallback) {
  const auto* a = attribute(n, name);
  return a != nullptr ? a->f() : fallback;
}
dims ints_attr(const pb::NodeProto& n, const char* name, dims fallback) {
  const auto* a = attribute(n, name);
  return a != nullptr ? dims(a->ints().begin(), a->ints().end()) : fallback;
}
std::string string_attr(const pb::NodeProto& n, const char* name, const std::string& fallback) {
  const auto* a = attribute(n, name);
  return a != nullptr ? a->s() : fallback;
}

// A constant as a float tensor (float types) and, for integer types, its int64 values too.
struct constant {
  tensor value;
  dims ints;
};

constant read_tensor(const pb::TensorProto& t, const std::string& what) {
  constant c;
  c.value.shape.assign(t.dims().begin(), t.dims().end());
  if (t.data_type() == pb::TensorProto::INT64 || t.data_type() == pb::TensorProto::INT32) {
    c.ints = detail::read_integers(t, what);
    for (std::int64_t v : c.ints) c.value.data.push_back(static_cast<float>(v));
  } else {
    c.value.data = detail::read_floats(t, what);
  }
  return c;
}

// y (m x n) = x (m x k) * W^T with W row-major n x k.
tensor dense_plain(const tensor& x, const row_major& w) {
  const std::int64_t k = w.cols(), m = x.elements() / k;
  tensor y{{m, w.rows()}, std::vector<float>(static_cast<std::size_t>(m * w.rows()))};
  qsl::detail::cpu::float_gemm_bt(x.data.data(), m, k, w.data(), w.rows(), nullptr, y.data.data());
  return y;
}

}  // namespace

struct session::impl {
  std::vector<std::string> inputs, outputs;
  std::vector<dims> input_shapes;
  std::map<std::string, int> slots;  // value name -> slot
  std::vector<tensor> constants;     // slots [0, constants.size()) hold constants
  int slot_count = 0;
  std::vector<std::function<void(std::vector<tensor>&)>> steps;
  std::size_t compressed = 0;
  std::int64_t opset = 0;

  int slot(const std::string& name) {
    const auto it = slots.find(name);
    if (it != slots.end()) return it->second;
    return slots[name] = slot_count++;
  }
  int existing(const std::string& name, const std::string& what) const {
    const auto it = slots.find(name);
    if (it == slots.end()) throw model_error(what + ": input " + in_quotes(name) + " is unknown");
    return it->second;
  }
};

session::session(const model& m, const session_options& options) : impl_(std::make_unique<impl>()) {
  qsl::detail::require(options.activation_bits >= 0 && options.activation_bits <= max_activation_bits,
                       "session: activation bits is " + std::to_string(options.activation_bits) +
                           "; expected 0.." + std::to_string(max_activation_bits));
  qsl::detail::require(options.device == backend::cpu || options.accelerator,
                       "session: the cuda backend needs session_options::accelerator (qsl-run "
                       "sets it when built with qsl::cuda)");
  impl& s = *impl_;
  const pb::GraphProto& g = m.internals().proto.graph();
  s.opset = m.opset();

  // Constants: initializers and Constant nodes; compressed weights come from DecodeWeights.
  std::map<std::string, constant> consts;
  // Float and integer initializers; others (the UINT8 planes of compressed layers) are read by
  // compressed_layers and are no inputs of the operators qsl-run runs.
  for (const auto& t : g.initializer()) {
    const auto type = t.data_type();
    if (type == pb::TensorProto::FLOAT || type == pb::TensorProto::DOUBLE ||
        type == pb::TensorProto::FLOAT16 || type == pb::TensorProto::BFLOAT16 ||
        type == pb::TensorProto::INT64 || type == pb::TensorProto::INT32)
      consts[t.name()] = read_tensor(t, "initializer " + in_quotes(t.name()));
  }
  // Weights rebuilt by DecodeWeights nodes (or metadata entries), by weight name; fused
  // QuantizedMatMul layers by their node's output (several may share one weight's code).
  std::map<std::string, compressed_layer> coded, fused_layers;
  for (auto& layer : qsl::onnx::compressed_layers(m)) {
    if (layer.output.empty())
      coded[layer.weight] = std::move(layer);
    else
      fused_layers[layer.output] = std::move(layer);
  }
  std::set<std::string> initializer_names;
  for (const auto& t : g.initializer()) initializer_names.insert(t.name());
  for (const auto& v : g.input())
    if (!initializer_names.count(v.name())) {
      s.inputs.push_back(v.name());
      dims shape;
      for (const auto& d : v.type().tensor_type().shape().dim())
        shape.push_back(d.has_dim_value() ? d.dim_value() : -1);
      s.input_shapes.push_back(shape);
      s.slot(v.name());
    }
  for (const auto& v : g.output()) s.outputs.push_back(v.name());

  auto constant_of = [&](const std::string& name) -> const constant* {
    const auto it = consts.find(name);
    return it == consts.end() ? nullptr : &it->second;
  };
  auto weight_matrix = [&](const constant& c, bool transposed, std::int64_t rows,
                           std::int64_t cols) {
    row_major w(rows, cols);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t k = 0; k < cols; ++k)
        w(r, k) = transposed ? c.value.data[static_cast<std::size_t>(k * rows + r)]
                             : c.value.data[static_cast<std::size_t>(r * cols + k)];
    return w;
  };
  // The activation quantizer of a compressed layer: its calibrated one for the requested bits
  // when it has one (and the options allow it), else a per-vector scale.
  auto activations_of = [&](const compressed_layer& l) {
    activation_quantizer q;
    q.bits = options.activation_bits;
    if (options.activation_bits > 0 && options.calibrated_activations && !l.activations.empty())
      q = l.activations[static_cast<std::size_t>(options.activation_bits - 1)];
    return q;
  };
  // `activations`: the layer's own quantizer (activations_of) unless given.
  auto qsl_layer = [&](const weight_code& code, const compressed_layer& l, const float* bias,
                       const activation_quantizer* activations = nullptr) {
    dense_parameters p;
    p.code = code;
    if (bias != nullptr) p.bias.assign(bias, bias + code.rows);
    p.activations = activations != nullptr ? *activations : activations_of(l);
    return std::make_shared<quantized_dense>(std::move(p));
  };
  // Where a compressed layer runs: its own CPU kernels, or the accelerator's runner.
  auto runner_of = [&](const std::shared_ptr<quantized_dense>& layer) -> layer_runner {
    if (options.device == backend::cpu)
      return [layer](const float* x, std::int64_t batch, float* y) { layer->forward(x, batch, y); };
    return options.accelerator(*layer);
  };
  // The product of a compressed layer: per-row codes run as one quantized_dense; a TWD layer as
  // z = M^T x (a quantized_dense of K ternary rows with coefficient 1, on the same kernels or
  // accelerator) followed by y = C^T z + b (a K-deep fp32 GEMM on the CPU).
  auto compressed_runner = [&](const compressed_layer& l, const float* bias) -> layer_runner {
    if (!l.factorized && l.int8_min_rows > 0 && options.activation_bits == 0 &&
        options.device == backend::cpu) {
      // As the runtime's operator runs it: 8-bit activations from int8_min_rows rows on, and
      // below, where the CPU has byte tables for them, small_batch_bits per vector.
      const activation_quantizer per_vector{l.small_batch_bits, false, 0.0f, 0.0f};
      const bool encoded_below =
          l.small_batch_bits > 0 && l.small_batch_bits >= cpu_byte_tables_min_bits();
      const auto layer = qsl_layer(l.code, l, bias, encoded_below ? &per_vector : nullptr);
      return [layer, from = l.int8_min_rows](const float* x, std::int64_t batch, float* y) {
        if (batch >= from)
          layer->forward_int8(x, batch, y);
        else
          layer->forward(x, batch, y);
      };
    }
    if (!l.factorized) return runner_of(qsl_layer(l.code, l, bias));
    if (options.device != backend::cpu && options.twd_accelerator) {
      twd_dense_parameters p;
      p.code = l.twd;
      if (bias != nullptr) p.bias.assign(bias, bias + l.twd.rows);
      p.activations = activations_of(l);
      return options.twd_accelerator(twd_dense(std::move(p)));
    }
    const layer_runner basis = runner_of(qsl_layer(l.twd.basis, l, nullptr));
    const std::int64_t k = l.twd.basis_vectors(), n = l.twd.rows;
    auto mixing_t = std::make_shared<row_major>(
        Eigen::Map<const row_major>(l.twd.mixing.data(), k, n).transpose());
    auto b = std::make_shared<std::vector<float>>();
    if (bias != nullptr) b->assign(bias, bias + n);
    return [basis, mixing_t, b, k, n](const float* x, std::int64_t batch, float* y) {
      qsl::detail::scratch<float> z(static_cast<std::size_t>(batch * k));  // fully written next
      basis(x, batch, z.data());
      qsl::detail::cpu::float_gemm_bt(z.data(), batch, k, mixing_t->data(), n,
                                      b->empty() ? nullptr : b->data(), y);
    };
  };
  auto layer_shape = [](const compressed_layer& l) {  // {rows, cols} of W
    return l.factorized ? std::pair{l.twd.rows, l.twd.cols} : std::pair{l.code.rows, l.code.cols};
  };

  // Nodes no graph output depends on are not run: the standard-operator decoders of weights
  // the qsl format keeps on the runtime's operator (their codes are in `coded`, read directly).
  std::vector<bool> live(static_cast<std::size_t>(g.node_size()), false);
  {
    std::set<std::string> needed;
    for (const auto& o : g.output()) needed.insert(o.name());
    for (int index = g.node_size() - 1; index >= 0; --index) {
      const pb::NodeProto& n = g.node(index);
      bool used = false;
      for (const auto& o : n.output()) used = used || needed.count(o) > 0;
      if (!used) continue;
      live[static_cast<std::size_t>(index)] = true;
      // The last node of an int8 product (native_int8): the layer runs from its X.
      const auto product = n.output_size() == 1 ? fused_layers.find(n.output(0)) : fused_layers.end();
      if (product != fused_layers.end() && !product->second.input.empty()) {
        needed.insert(product->second.input);
        continue;
      }
      for (const auto& i : n.input())
        if (!i.empty() && !coded.count(i)) needed.insert(i);
    }
  }

  for (int index = 0; index < g.node_size(); ++index) {
    if (!live[static_cast<std::size_t>(index)]) continue;
    const pb::NodeProto& n = g.node(index);
    const std::string what = "node " + in_quotes(n.name().empty() ? "#" + std::to_string(index) : n.name()) +
                             " (" + n.op_type() + ")";
    const std::string& op = n.op_type();
    if (n.domain() == qsl_domain && (op == decode_op || op == decode_factorized_op))
      continue;  // read by compressed_layers
    const bool quantized_conv = n.domain() == qsl_domain && op == quantized_conv_op;
    const auto int8 = n.output_size() == 1 ? fused_layers.find(n.output(0)) : fused_layers.end();
    const bool int8_product = int8 != fused_layers.end() && !int8->second.input.empty();
    const bool fused_product =
        int8_product ||
        (n.domain() == qsl_domain && (op == quantized_matmul_op || op == quantized_twd_op));
    const bool fused = fused_product || quantized_conv;
    if (!fused && !n.domain().empty() && n.domain() != "ai.onnx")
      throw model_error(what + ": operator " + in_quotes(n.domain() + "::" + op) +
                        " is not supported by qsl-run");
    auto in = [&](int i) { return s.existing(n.input(i), what); };
    const int out = n.output_size() > 0 ? s.slot(n.output(0)) : -1;
    auto needs = [&](int count) {
      if (n.input_size() < count)
        throw model_error(what + ": expected at least " + std::to_string(count) + " inputs");
    };
    if (fused_product) {  // Y = X W^T + bias, fused (a weight code, or TWD)
      const auto found = fused_layers.find(n.output(0));
      if (found == fused_layers.end()) throw model_error(what + ": not read as a compressed layer");
      const compressed_layer* layer = &found->second;
      const int x = int8_product ? s.existing(layer->input, what) : in(0);
      const std::int64_t rows = layer_shape(*layer).first, cols = layer_shape(*layer).second;
      const layer_runner run =
          compressed_runner(*layer, layer->bias.empty() ? nullptr : layer->bias.data());
      ++s.compressed;
      s.steps.push_back(
          [=, observer = options.observer, weight = layer->weight](std::vector<tensor>& v) {
            const tensor& a = v[x];
            qsl::detail::require(!a.shape.empty() && a.shape.back() == cols,
                                 what + ": input is " + ops::shape_text(a.shape) +
                                     "; the last dimension must be " + std::to_string(cols));
            const std::int64_t m = a.elements() / cols;
            if (observer) observer(weight, a.data.data(), m, cols);
            dims shape(a.shape.begin(), a.shape.end() - 1);
            shape.push_back(rows);
            tensor y{shape, std::vector<float>(static_cast<std::size_t>(m * rows))};
            if (m > 0) run(a.data.data(), m, y.data.data());
            v[out] = std::move(y);
          });
      continue;
    }
    if (op == "Constant") {
      const auto* value = attribute(n, "value");
      if (value == nullptr || !value->has_t())
        throw model_error(what + ": only Constant with a tensor 'value' is supported");
      consts[n.output(0)] = read_tensor(value->t(), what);
      const tensor t = consts[n.output(0)].value;
      s.steps.push_back([out, t](std::vector<tensor>& v) { v[out] = t; });
      continue;
    }
    // Inputs that are constants get a slot filled once per run (cheap copies of small tensors;
    // big weights are consumed at plan time and never copied).
    for (int i = 0; i < (quantized_conv ? 1 : n.input_size()); ++i) {  // its code: read already
      const std::string& name = n.input(i);
      if (name.empty() || s.slots.count(name)) continue;
      if (const constant* c = constant_of(name)) {
        const int slot = s.slot(name);
        const bool weight = i == 1 && (op == "Gemm" || op == "MatMul" || op == "Conv");
        if (!weight) s.steps.push_back([slot, t = c->value](std::vector<tensor>& v) { v[slot] = t; });
      } else if (!coded.count(name)) {
        throw model_error(what + ": input " + in_quotes(name) + " is unknown");
      } else if (i != 1 || (op != "Gemm" && op != "MatMul" && op != "Conv")) {
        throw model_error(what + ": the compressed weight " + in_quotes(name) + " as input " +
                          std::to_string(i) + " is not supported by qsl-run (only as a Gemm, "
                          "MatMul or Conv's weight operand)");
      }
    }
    if (op == "Gemm" || op == "MatMul") {
      needs(2);
      const std::string& weight = n.input(1);
      const bool gemm = op == "Gemm";
      if (gemm && int_attr(n, "transA", 0) != 0)
        throw model_error(what + ": transA = 1 is not supported");
      const float alpha = gemm ? float_attr(n, "alpha", 1) : 1, beta = gemm ? float_attr(n, "beta", 1) : 1;
      const int x = in(0);
      const int c = gemm && n.input_size() > 2 && !n.input(2).empty() ? in(2) : -1;
      std::function<tensor(const tensor&)> product;
      if (auto it = coded.find(weight); it != coded.end()) {
        ++s.compressed;
        const auto [rows, cols] = layer_shape(it->second);
        product = [rows = rows, cols = cols, run = compressed_runner(it->second, nullptr)](const tensor& a) {
          const std::int64_t m = a.elements() / cols;
          tensor y{{m, rows}, std::vector<float>(static_cast<std::size_t>(m * rows))};
          run(a.data.data(), m, y.data.data());
          return y;
        };
      } else if (const constant* wc = constant_of(weight); wc != nullptr && wc->value.shape.size() == 2) {
        const bool rows_first = gemm && int_attr(n, "transB", 0) != 0;
        const std::int64_t rows = rows_first ? wc->value.shape[0] : wc->value.shape[1];
        const std::int64_t cols = rows_first ? wc->value.shape[1] : wc->value.shape[0];
        auto w = std::make_shared<row_major>(weight_matrix(*wc, !rows_first, rows, cols));
        product = [w](const tensor& a) { return dense_plain(a, *w); };
      } else {
        throw model_error(what + ": the right operand must be a constant 2-D weight");
      }
      if (options.observer)
        product = [product, observer = options.observer, weight](const tensor& a) {
          const std::int64_t cols = a.shape.back();
          observer(weight, a.data.data(), a.elements() / cols, cols);
          return product(a);
        };
      const std::int64_t k = coded.count(weight) ? layer_shape(coded.at(weight)).second
                                                 : (gemm && int_attr(n, "transB", 0) ? constant_of(weight)->value.shape[1]
                                                                                    : constant_of(weight)->value.shape[0]);
      s.steps.push_back([=](std::vector<tensor>& v) {
        const tensor& a = v[x];
        qsl::detail::require(!a.shape.empty() && a.shape.back() == k,
                             what + ": input is " + ops::shape_text(a.shape) + "; the last dimension must be " + std::to_string(k));
        tensor y = product(a);
        if (!gemm && a.shape.size() != 2) {  // MatMul keeps the leading dimensions
          dims shape(a.shape.begin(), a.shape.end() - 1);
          shape.push_back(y.shape[1]);
          y.shape = shape;
        }
        if (alpha != 1)
          for (float& e : y.data) e *= alpha;
        if (c >= 0) {
          tensor bias = v[c];
          if (beta != 1)
            for (float& e : bias.data) e *= beta;
          y = ops::elementwise(y, bias, ops::binary::add, what);
        }
        v[out] = std::move(y);
      });
      continue;
    }
    if (op == "Conv" || quantized_conv) {
      needs(quantized_conv ? 3 : 2);
      const compressed_layer* fused_conv = nullptr;
      if (quantized_conv) {
        const auto found = fused_layers.find(n.output(0));
        if (found == fused_layers.end())
          throw model_error(what + ": not read as a compressed layer");
        fused_conv = &found->second;
      }
      if (int_attr(n, "group", 1) != 1) throw model_error(what + ": group != 1 is not supported");
      const std::string pad_mode = string_attr(n, "auto_pad", "NOTSET");
      if (pad_mode != "NOTSET" && pad_mode != "VALID")
        throw model_error(what + ": auto_pad " + pad_mode + " is not supported");
      const std::string& weight = fused_conv != nullptr ? fused_conv->weight : n.input(1);
      dims wshape;
      if (fused_conv != nullptr) wshape = fused_conv->shape;
      else if (coded.count(weight)) wshape = coded.at(weight).shape;
      else if (const constant* wc = constant_of(weight)) wshape = wc->value.shape;
      else throw model_error(what + ": the weight must be a constant");
      if (wshape.size() != 4) throw model_error(what + ": only 2-D convolutions (4-D weights) are supported");
      conv2d_shape shape;
      shape.out_channels = wshape[0];
      shape.in_channels = wshape[1];
      shape.kernel_h = wshape[2];
      shape.kernel_w = wshape[3];
      const dims strides = ints_attr(n, "strides", {1, 1}), dilations = ints_attr(n, "dilations", {1, 1});
      const dims pads = ints_attr(n, "pads", {0, 0, 0, 0});
      if (strides.size() != 2 || dilations.size() != 2 || pads.size() != 4)
        throw model_error(what + ": strides, dilations and pads must describe 2 spatial dims");
      shape.stride_h = strides[0];
      shape.stride_w = strides[1];
      shape.dilation_h = dilations[0];
      shape.dilation_w = dilations[1];
      shape.pad_top = pads[0];
      shape.pad_left = pads[1];
      shape.pad_bottom = pads[2];
      shape.pad_right = pads[3];
      try {
        validate(shape, what.c_str());
      } catch (const qsl::error& e) {
        throw model_error(e.what());
      }
      const float* bias = nullptr;
      if (fused_conv != nullptr) {
        if (!fused_conv->bias.empty()) bias = fused_conv->bias.data();
      } else if (n.input_size() > 2 && !n.input(2).empty()) {
        const constant* b = constant_of(n.input(2));
        if (b == nullptr || b->value.elements() != shape.out_channels)
          throw model_error(what + ": the bias must be a constant of " + std::to_string(shape.out_channels) + " values");
        bias = b->value.data.data();
      }
      // The product of a chunk of im2col patches with the weights: a compressed layer's runner
      // (CPU kernels or accelerator), or the fp32 GEMM.
      qsl::detail::patch_gemm gemm;
      if (fused_conv != nullptr) {
        gemm = compressed_runner(*fused_conv, bias);
        ++s.compressed;
      } else if (auto it = coded.find(weight); it != coded.end()) {
        gemm = compressed_runner(it->second, bias);
        ++s.compressed;
      } else {
        auto plain = std::make_shared<row_major>(weight_matrix(*constant_of(weight), false, shape.out_channels, shape.patch()));
        auto plain_bias = std::make_shared<std::vector<float>>();
        if (bias != nullptr) plain_bias->assign(bias, bias + shape.out_channels);
        gemm = [plain, plain_bias, shape](const float* patches, std::int64_t rows, float* result) {
          qsl::detail::cpu::float_gemm_bt(patches, rows, shape.patch(), plain->data(), shape.out_channels,
                                          plain_bias->empty() ? nullptr : plain_bias->data(), result);
        };
      }
      if (options.observer)
        gemm = [gemm, observer = options.observer, weight, patch = shape.patch()](
                   const float* patches, std::int64_t rows, float* result) {
          observer(weight, patches, rows, patch);
          gemm(patches, rows, result);
        };
      const int x = in(0);
      s.steps.push_back([=](std::vector<tensor>& v) {
        const tensor& a = v[x];
        qsl::detail::require(a.shape.size() == 4 && a.shape[1] == shape.in_channels,
                             what + ": input is " + ops::shape_text(a.shape) + "; expected N x " +
                                 std::to_string(shape.in_channels) + " x H x W");
        const std::int64_t batch = a.shape[0], h = a.shape[2], w = a.shape[3];
        const std::int64_t oh = shape.out_h(h), ow = shape.out_w(w);
        qsl::detail::require(oh >= 1 && ow >= 1, what + ": the input is smaller than the kernel");
        tensor y{{batch, shape.out_channels, oh, ow},
                 std::vector<float>(static_cast<std::size_t>(batch * shape.out_channels * oh * ow))};
        qsl::detail::conv2d_by_gemm(shape, a.data.data(), batch, h, w, y.data.data(), gemm, what.c_str());
        v[out] = std::move(y);
      });
      continue;
    }
    if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
      needs(2);
      const auto kind = op == "Add" ? ops::binary::add : op == "Sub" ? ops::binary::sub
                        : op == "Mul" ? ops::binary::mul : ops::binary::div;
      const int a = in(0), b = in(1);
      s.steps.push_back([=](std::vector<tensor>& v) { v[out] = ops::elementwise(v[a], v[b], kind, what); });
      continue;
    }
    if (op == "Relu" || op == "Sigmoid" || op == "Tanh") {
      needs(1);
      const auto kind = op == "Relu" ? ops::unary::relu : op == "Sigmoid" ? ops::unary::sigmoid : ops::unary::tanh;
      const int a = in(0);
      s.steps.push_back([=](std::vector<tensor>& v) { v[out] = ops::apply(v[a], kind); });
      continue;
    }
    if (op == "Identity" || op == "Dropout") {
      needs(1);
      const int a = in(0);
      s.steps.push_back([=](std::vector<tensor>& v) { v[out] = v[a]; });
      continue;
    }
    if (op == "MaxPool" || op == "AveragePool") {
      needs(1);
      const std::string pad_mode = string_attr(n, "auto_pad", "NOTSET");
      if (pad_mode != "NOTSET" && pad_mode != "VALID")
        throw model_error(what + ": auto_pad " + pad_mode + " is not supported");
      ops::pool_attributes a;
      a.kernel = ints_attr(n, "kernel_shape", {});
      a.strides = ints_attr(n, "strides", {1, 1});
      a.pads = ints_attr(n, "pads", {0, 0, 0, 0});
      a.dilations = ints_attr(n, "dilations", {1, 1});
      a.ceil_mode = int_attr(n, "ceil_mode", 0) != 0;
      a.count_include_pad = int_attr(n, "count_include_pad", 0) != 0;
      if (n.output_size() > 1 && !n.output(1).empty())
        throw model_error(what + ": the Indices output is not supported");
      if (a.kernel.size() != 2 || a.strides.size() != 2 || a.pads.size() != 4 || a.dilations.size() != 2)
        throw model_error(what + ": only 2-D pooling (kernel_shape of 2) is supported");
      for (std::int64_t d : a.kernel) if (d < 1) throw model_error(what + ": kernel_shape must be >= 1");
      for (std::int64_t d : a.strides) if (d < 1) throw model_error(what + ": strides must be >= 1");
      for (std::int64_t d : a.dilations) if (d < 1) throw model_error(what + ": dilations must be >= 1");
      for (std::int64_t d : a.pads) if (d < 0) throw model_error(what + ": pads must be >= 0");
      if (op == "AveragePool" && (a.dilations[0] != 1 || a.dilations[1] != 1))
        throw model_error(what + ": dilations are not supported for AveragePool");
      const int x = in(0);
      const bool max = op == "MaxPool";
      s.steps.push_back([=](std::vector<tensor>& v) {
        v[out] = max ? ops::max_pool(v[x], a, what) : ops::average_pool(v[x], a, what);
      });
      continue;
    }
    if (op == "GlobalAveragePool") {
      needs(1);
      const int x = in(0);
      s.steps.push_back([=](std::vector<tensor>& v) { v[out] = ops::global_average_pool(v[x], what); });
      continue;
    }
    if (op == "Flatten") {
      needs(1);
      const int x = in(0);
      const std::int64_t axis = int_attr(n, "axis", 1);
      s.steps.push_back([=](std::vector<tensor>& v) { v[out] = ops::flatten(v[x], axis, what); });
      continue;
    }
    if (op == "Reshape") {
      needs(2);
      const constant* shape = constant_of(n.input(1));
      if (shape == nullptr || shape->ints.size() != static_cast<std::size_t>(shape->value.elements()))
        throw model_error(what + ": the shape must be a constant integer tensor");
      if (int_attr(n, "allowzero", 0) != 0) throw model_error(what + ": allowzero = 1 is not supported");
      const int x = in(0);
      const dims target = shape->ints;
      s.steps.push_back([=](std::vector<tensor>& v) { v[out] = ops::reshape(v[x], target, what); });
      continue;
    }
    if (op == "Transpose") {
      needs(1);
      const int x = in(0);
      const dims perm = ints_attr(n, "perm", {});
      s.steps.push_back([=](std::vector<tensor>& v) { v[out] = ops::transpose(v[x], perm, what); });
      continue;
    }
    if (op == "Softmax") {
      needs(1);
      const int x = in(0);
      const std::int64_t axis = int_attr(n, "axis", s.opset >= 13 ? -1 : 1), opset = s.opset;
      s.steps.push_back([=](std::vector<tensor>& v) { v[out] = ops::softmax(v[x], axis, opset, what); });
      continue;
    }
    if (op == "BatchNormalization") {
      needs(5);
      if (int_attr(n, "training_mode", 0) != 0 || (n.output_size() > 1))
        throw model_error(what + ": only inference BatchNormalization (one output) is supported");
      const float eps = float_attr(n, "epsilon", 1e-5f);
      const int x = in(0), sc = in(1), b = in(2), mean = in(3), var = in(4);
      s.steps.push_back([=](std::vector<tensor>& v) {
        v[out] = ops::batch_norm(v[x], v[sc], v[b], v[mean], v[var], eps, what);
      });
      continue;
    }
    if (op == "Concat") {
      needs(1);
      std::vector<int> parts;
      for (int i = 0; i < n.input_size(); ++i) parts.push_back(in(i));
      const std::int64_t axis = int_attr(n, "axis", 0);
      if (attribute(n, "axis") == nullptr) throw model_error(what + ": attribute 'axis' is required");
      s.steps.push_back([=](std::vector<tensor>& v) {
        std::vector<const tensor*> ts;
        for (int p : parts) ts.push_back(&v[p]);
        v[out] = ops::concat(ts, axis, what);
      });
      continue;
    }
    throw model_error(what + ": operator " + in_quotes(op) + " is not supported by qsl-run");
  }
  for (const auto& name : s.outputs) s.existing(name, "graph output");
}

session::session(session&&) noexcept = default;
session& session::operator=(session&&) noexcept = default;
session::~session() = default;

const std::vector<std::string>& session::input_names() const { return impl_->inputs; }
const std::vector<std::string>& session::output_names() const { return impl_->outputs; }
const std::vector<std::int64_t>& session::input_shape(std::size_t i) const { return impl_->input_shapes.at(i); }
std::size_t session::compressed_layers() const { return impl_->compressed; }

std::vector<tensor> session::run(const std::vector<tensor>& inputs) const {
  const impl& s = *impl_;
  qsl::detail::require(inputs.size() == s.inputs.size(),
                       "run: " + std::to_string(inputs.size()) + " inputs given; the model takes " +
                           std::to_string(s.inputs.size()));
  std::vector<tensor> values(static_cast<std::size_t>(s.slot_count));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const dims& declared = s.input_shapes[i];
    bool ok = inputs[i].shape.size() == declared.size() &&
              inputs[i].elements() == static_cast<std::int64_t>(inputs[i].data.size());
    for (std::size_t d = 0; ok && d < declared.size(); ++d)
      ok = declared[d] < 0 || declared[d] == inputs[i].shape[d];
    qsl::detail::require(ok, "run: input " + in_quotes(s.inputs[i]) + " is " +
                                 ops::shape_text(inputs[i].shape) + "; the model expects " +
                                 ops::shape_text(declared) + " (-1: any)");
    values[static_cast<std::size_t>(s.slots.at(s.inputs[i]))] = inputs[i];
  }
  for (const auto& step : s.steps) step(values);
  std::vector<tensor> out;
  for (const auto& name : s.outputs) out.push_back(values[static_cast<std::size_t>(s.slots.at(name))]);
  return out;
}

}  // namespace qsl::onnx
