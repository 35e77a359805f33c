#!/usr/bin/env python3
"""The standard-format model runs unchanged in ONNX Runtime and gives the outputs of the
original graph with the reconstructed weights.

    python3 tests/onnx/check_standard_format.py QSL_MODEL STANDARD_MODEL INPUT_NPY [MAX_TOTAL]

QSL_MODEL and STANDARD_MODEL were compressed with the same settings (the codes are
deterministic). The weights are decoded from QSL_MODEL's DecodeWeights nodes by an independent
numpy decoder (the layout of docs/design.md); a reference model with those weights as plain
initializers and STANDARD_MODEL are run in ONNX Runtime on the same inputs, and must agree
within float tolerance. It also checks what a runtime that folds the decoding into constants
(ONNX Runtime keeps every folded tensor until the whole graph is folded) has to hold: no tensor
the decoding makes is larger than the fp32 weight it rebuilds, and all of them together stay
within MAX_TOTAL times the fp32 weights (round_trip.sh derives it per configuration). Exit status
0 on success.
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def attributes(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def decode(node, inits):
    """W (or its tensor's layout) from a DecodeWeights, QuantizedMatMul or QuantizedConv node."""
    a = attributes(node)
    conv = node.op_type == "QuantizedConv"
    fused = node.op_type == "QuantizedMatMul" or conv
    if conv:
        rows = a["out_channels"]
        cols = a["in_channels"] // a.get("group", 1) * int(np.prod(a["kernel_shape"]))
    else:
        rows, cols = (a["out_features"], a["in_features"]) if fused else (a["rows"], a["cols"])
    bits, basis = a["bits"], a["basis"]
    group = a["group_size"] or cols
    first = 1 if fused else 0  # the planes' input
    planes = inits[node.input[first]]                         # uint8 [rows, bits, ceil(cols/8)]
    alpha = inits[node.input[first + 1]].reshape(rows, -1, bits)  # [rows, groups, bits]
    signs = np.unpackbits(planes, axis=2, bitorder="little")[:, :, :cols].astype(np.float32)
    values = 2 * signs - 1
    if basis == 1:
        masks = np.unpackbits(inits[node.input[first + 2]], axis=2, bitorder="little")[:, :, :cols]
        values = values * masks
    group_of = np.arange(cols) // group
    w = np.einsum("rjc,rcj->rc", values, alpha[:, group_of, :])
    if conv:
        return w.reshape(a["shape"])
    if fused:
        return w
    return w.T if a["transposed"] else w.reshape(a["shape"])


def reference_model(qsl_model):
    model = onnx.load(qsl_model)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    kept, decoded, used = [], [], set()
    for node in model.graph.node:
        if node.domain == "ai.qsl" and node.op_type == "DecodeWeights":
            decoded.append(numpy_helper.from_array(decode(node, inits).astype(np.float32),
                                                   node.output[0]))
            used.update(node.input)
        elif node.domain == "ai.qsl" and node.op_type == "QuantizedConv":
            # the original Conv on the decoded weight
            a = attributes(node)
            w = node.output[0] + "_reference_w"
            decoded.append(numpy_helper.from_array(decode(node, inits).astype(np.float32), w))
            used.update(node.input[1:4])
            keep = {k: v for k, v in a.items()
                    if k in ("group", "strides", "pads", "dilations", "auto_pad")}
            inputs = [node.input[0], w] + ([node.input[4]] if len(node.input) > 4 else [])
            kept.append(helper.make_node("Conv", inputs, [node.output[0]], **keep))
        elif node.domain == "ai.qsl" and node.op_type == "QuantizedMatMul":
            # Y = X W^T + bias, as plain MatMul (and Add) on the decoded W
            w_t = node.output[0] + "_reference_wt"
            decoded.append(numpy_helper.from_array(decode(node, inits).T.astype(np.float32), w_t))
            used.update(node.input[1:4])
            bias = node.input[4] if len(node.input) > 4 and node.input[4] else None
            product = node.output[0] + "_reference_product" if bias else node.output[0]
            kept.append(helper.make_node("MatMul", [node.input[0], w_t], [product]))
            if bias:
                kept.append(helper.make_node("Add", [product, bias], [node.output[0]]))
        else:
            kept.append(node)
    remaining = [t for t in model.graph.initializer if t.name not in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(remaining + decoded)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    keep = [o for o in model.opset_import if o.domain != "ai.qsl"]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    return model


ELEMENT_BYTES = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.UINT8: 1, onnx.TensorProto.INT32: 4,
                 onnx.TensorProto.INT64: 8}


def decoder_memory(standard_model, qsl_model):
    """(largest decoder tensor / its weight, sum of decoder tensors / the weights)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(standard_model), strict_mode=True)
    qsl_nodes = onnx.load(qsl_model).graph.node
    # the model's own tensors: every output but a DecodeWeights node's (a fused node's output is
    # the original MatMul's)
    original = {n.output[0] for n in qsl_nodes if n.op_type != "DecodeWeights"}
    weights = {}  # weight tensor name -> bytes of its fp32 W
    for n in qsl_nodes:
        a = attributes(n)
        if n.domain == "ai.qsl" and n.op_type == "DecodeWeights":
            weights[n.output[0]] = 4 * a["rows"] * a["cols"]
        elif n.domain == "ai.qsl" and n.op_type == "QuantizedMatMul":
            weights[a["weight_name"].decode()] = 4 * a["out_features"] * a["in_features"]
        elif n.domain == "ai.qsl" and n.op_type == "QuantizedConv":
            weights[a["weight_name"].decode()] = 4 * int(np.prod(a["shape"]))
    info = {v.name: v.type.tensor_type
            for v in list(model.graph.value_info) + list(model.graph.output)}
    worst, total = 0.0, 0
    for n in model.graph.node:
        out = n.output[0]
        if out in original and out not in weights:
            continue  # the model's own node
        t = info.get(out)
        if t is None or t.elem_type not in ELEMENT_BYTES:
            raise AssertionError(f"decoder tensor {out} has no inferred type")
        size = ELEMENT_BYTES[t.elem_type]
        for d in t.shape.dim:
            size *= d.dim_value
        # the weight this node belongs to: its name starts with the weight's
        owner = max((w for w in weights if out.startswith(w)), key=len, default=None)
        if owner is None:
            raise AssertionError(f"decoder tensor {out} belongs to no weight")
        worst = max(worst, size / weights[owner])
        total += size
    return worst, total / sum(weights.values())


def run(model_bytes, x):
    ort.set_default_logger_severity(3)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: x})[0]


def main(qsl_model, standard_model, input_npy, max_total="inf"):
    x = np.load(input_npy)
    expected = run(reference_model(qsl_model).SerializeToString(), x)
    with open(standard_model, "rb") as f:
        got = run(f.read(), x)
    error = np.max(np.abs(got - expected))
    scale = np.max(np.abs(expected))
    print(f"max |standard - reference| = {error:.3g} (outputs up to {scale:.3g})")
    if not np.isfinite(got).all() or error > 1e-5 * max(1.0, scale):
        print("FAIL: the standard-format model disagrees with the reconstructed weights")
        return 1
    worst, total = decoder_memory(standard_model, qsl_model)
    print(f"decoder tensors: largest {worst:.2f}x its fp32 weight (bound 1), all {total:.2f}x "
          f"the fp32 weights (bound {max_total})")
    if worst > 1.0 or total > float(max_total):
        print("FAIL: the decoding holds more than the weights it rebuilds allow")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
