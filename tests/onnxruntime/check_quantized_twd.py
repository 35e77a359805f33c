#!/usr/bin/env python3
"""ai.qsl::QuantizedTwd in PyPI onnxruntime against a numpy reference written from
docs/onnxruntime.md: y = (x M^T) C + bias with M the ternary basis (K x in_features, from the
sign and mask planes) and C the mixing matrix (K x out_features); random and edge shapes (widths
1, 63, 64, 65, 131; K 1 to 40; X of rank 1 to 3; batches 1, 3, 64; 1 and 2 threads), float
activations within gamma_m of the sum of magnitudes (m = in_features + K + 2), encoded ones
(per vector) the same bound on the decoded inputs; then every error, naming the node.

    python3 tests/onnxruntime/check_quantized_twd.py LIBQSL_ONNXRUNTIME
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import check, failures  # noqa: E402
from check_quantized_matmul import U, encode, expect_error, pack, session  # noqa: E402


def twd_model(rows, cols, signs, masks, mixing, bias, x_shape, attrs=None):
    k = signs.shape[0]
    inputs = ["x", "signs", "masks", "mixing"] + (["bias"] if bias is not None else [])
    a = dict(in_features=cols, out_features=rows, basis_vectors=k)
    a.update(attrs or {})
    node = helper.make_node("QuantizedTwd", inputs, ["y"], name="qtwd", domain="ai.qsl", **a)
    inits = [numpy_helper.from_array(pack(signs[:, None, :]), "signs"),
             numpy_helper.from_array(pack(masks[:, None, :]), "masks"),
             numpy_helper.from_array(mixing, "mixing")]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "bias"))
    g = helper.make_graph([node], "qtwd",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                               helper.make_opsetid("ai.qsl", 1)],
                             ir_version=8).SerializeToString()


def random_twd(rng, rows, cols, k):
    masks = rng.random((k, cols)) < 0.6
    signs = (rng.random((k, cols)) < 0.5) & masks  # canonical: no sign under a zero mask
    mixing = (rng.standard_normal((k, rows)) * 0.3).astype(np.float32)
    return signs, masks, mixing


def run_case(library, rng, rows, cols, k, x_shape, with_bias, threads, activation_bits=0):
    signs, masks, mixing = random_twd(rng, rows, cols, k)
    bias = rng.standard_normal(rows).astype(np.float32) if with_bias else None
    x = rng.standard_normal(x_shape).astype(np.float32)
    xs = x.reshape(-1, cols)
    if activation_bits:
        xs = encode(xs, activation_bits)
    m = np.where(signs, 1.0, -1.0) * masks  # [K, cols]
    b = 0 if bias is None else bias.astype(np.float64)
    expected = (xs.astype(np.float64) @ m.T) @ mixing.astype(np.float64) + b
    terms = cols + k + 2
    bound = terms * U / (1 - terms * U) * ((np.abs(xs) @ np.abs(m).T) @ np.abs(mixing) + np.abs(b))
    attrs = {"activation_bits": activation_bits} if activation_bits else None
    s = session(library, twd_model(rows, cols, signs, masks, mixing, bias, list(x_shape), attrs),
                threads)
    y = s.run(None, {"x": x})[0]
    label = f"{rows}x{cols} K={k} x{tuple(x_shape)} bias={with_bias} t={threads} act={activation_bits}"
    want = tuple(x_shape[:-1]) + (rows,)
    check(y.shape == want, f"{label}: output shape {y.shape}, expected {want}")
    if y.shape == want:
        error = np.abs(y.reshape(-1, rows) - expected)
        check(np.all(error <= bound + 1e-30), f"{label}: error {error.max():.3g} over the bound")


def main(library):
    rng = np.random.default_rng(17)
    for cols in (1, 63, 64, 65, 131):
        run_case(library, rng, 17, cols, 9, [3, cols], True, 1)
    for x_shape in ([40], [2, 3, 40], [64, 40]):
        run_case(library, rng, 33, 40, 12, x_shape, False, 2)
    for _ in range(15):
        rows, cols, k = int(rng.integers(1, 70)), int(rng.integers(1, 200)), int(rng.integers(1, 41))
        run_case(library, rng, rows, cols, k, [int(rng.choice([1, 3, 64])), cols],
                 bool(rng.integers(0, 2)), int(rng.integers(1, 3)))
    run_case(library, rng, 24, 100, 16, [5, 100], True, 2, activation_bits=4)

    print("bad input:")
    signs, masks, mixing = random_twd(rng, 8, 20, 4)
    good = dict(rows=8, cols=20, signs=signs, masks=masks, mixing=mixing, bias=None,
                x_shape=["N", "K"])
    expect_error(library, twd_model(**good), ["qtwd", "ending in 21", "in_features = 20"],
                 {"x": np.zeros((2, 21), np.float32)})
    expect_error(library, twd_model(**{**good, "attrs": {"basis_vectors": 0}}),
                 ["qtwd", "basis_vectors is 0"])
    expect_error(library, twd_model(**{**good, "attrs": {"format_version": 2}}),
                 ["qtwd", "format_version is 2"])
    bad = signs.copy()
    bad[0, :] = True  # sign bits under zero mask bits: not canonical
    expect_error(library, twd_model(**{**good, "signs": bad}), ["qtwd", "sign bit under a zero"])
    nan_mixing = mixing.copy()
    nan_mixing[1, 2] = np.nan
    expect_error(library, twd_model(**{**good, "mixing": nan_mixing}), ["qtwd"])
    m = onnx.load_from_string(twd_model(**good))
    m.graph.initializer[2].CopyFrom(numpy_helper.from_array(mixing[:3], "mixing"))
    expect_error(library, m.SerializeToString(), ["qtwd", "mixing", "expected float [4, 8]"])
    print(f"{failures()} failures")
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
