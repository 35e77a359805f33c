#!/usr/bin/env python3
"""The standard-format model runs unchanged in ONNX Runtime and gives the outputs of the
original graph with the reconstructed weights.

    python3 tests/onnx/check_standard_format.py QSL_MODEL STANDARD_MODEL INPUT_NPY

QSL_MODEL and STANDARD_MODEL were compressed with the same settings (the codes are
deterministic). The weights are decoded from QSL_MODEL's DecodeWeights nodes by an independent
numpy decoder (the layout of docs/design.md); a reference model with those weights as plain
initializers and STANDARD_MODEL are run in ONNX Runtime on the same inputs, and must agree
within float tolerance. Exit status 0 on success.
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def attributes(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def decode(node, inits):
    a = attributes(node)
    rows, cols, bits = a["rows"], a["cols"], a["bits"]
    group, basis = a["group_size"], a["basis"]
    planes = inits[node.input[0]]                       # uint8 [rows, bits, ceil(cols/8)]
    alpha = inits[node.input[1]].reshape(rows, -1, bits)  # [rows, groups, bits]
    signs = np.unpackbits(planes, axis=2, bitorder="little")[:, :, :cols].astype(np.float32)
    values = 2 * signs - 1
    if basis == 1:
        masks = np.unpackbits(inits[node.input[2]], axis=2, bitorder="little")[:, :, :cols]
        values = values * masks
    group_of = np.arange(cols) // group
    w = np.einsum("rjc,rcj->rc", values, alpha[:, group_of, :])
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


def run(model_bytes, x):
    ort.set_default_logger_severity(3)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: x})[0]


def main(qsl_model, standard_model, input_npy):
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
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
