#!/usr/bin/env python3
"""ai.qsl::QuantizedConvTranspose in PyPI onnxruntime against a numpy reference written from
docs/onnxruntime.md: 1-D and 2-D transposed convolutions with random shapes (odd sizes, 1 x 1 and
wide kernels), strides, dilations, pads and output_padding, binary and ternary codes of 1 to 3
planes per row or grouped, with and without a bias, batches 1, 3 and 64, 1 and 2 threads.
Float activations: within gamma_m of the products' magnitudes (m = C x bits + 2 bits + 4) plus
gamma_{taps + 1} for the scatter's sums. 8-bit activations (int8_min_rows): QuantizedMatMul's
8-bit products of the input pixels (the same integer sums; each float within 4 ulp, its two
scales multiplied in the other order) scattered, within gamma_{taps + 6} of the magnitudes.
Then every error, naming the node.

    python3 tests/onnxruntime/check_quantized_conv_transpose.py LIBQSL_ONNXRUNTIME
(QSL_ORT_GEMM_MIN_ROWS picks the float path: CTest runs it as is and on the tables)
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import check, failures  # noqa: E402
from check_quantized_matmul import (U, dense, expect_error, model, pack,  # noqa: E402
                                    random_code, session)


def transpose_model(c, m, kernel, signs, masks, alpha, bias, x_shape, attrs):
    bits = signs.shape[1]
    rows = m * int(np.prod(kernel))
    inputs = ["x", "signs", "coefficients", "masks" if masks is not None else "",
              "bias" if bias is not None else ""]
    while inputs[-1] == "":
        inputs.pop()
    a = dict(in_channels=c, out_channels=m, kernel_shape=list(kernel), bits=bits,
             basis=1 if masks is not None else 0, group_size=0)
    a.update(attrs)
    node = helper.make_node("QuantizedConvTranspose", inputs, ["y"], name="qct", domain="ai.qsl",
                            **a)
    inits = [numpy_helper.from_array(pack(signs), "signs"),
             numpy_helper.from_array(alpha.reshape(rows, alpha.shape[1], 1, bits), "coefficients")]
    if masks is not None:
        inits.append(numpy_helper.from_array(pack(masks), "masks"))
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "bias"))
    assert signs.shape[0] == rows and signs.shape[2] == c
    g = helper.make_graph([node], "qct",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                               helper.make_opsetid("ai.qsl", 1)],
                             ir_version=8).SerializeToString()


def geometry(kernel, strides, dilations, pads, output_padding, sizes):
    """Per axis: (k, s, d, pad begin, output size) and whether the output is empty."""
    d = len(kernel)
    axes = []
    for i in range(d):
        out = (strides[i] * (sizes[i] - 1) + output_padding[i] + dilations[i] * (kernel[i] - 1) +
               1 - pads[i] - pads[d + i])
        axes.append((kernel[i], strides[i], dilations[i], pads[i], out))
    return axes, min(a[4] for a in axes) < 1


def scatter(products, axes, sizes, m, bias, dtype):
    """products [N, pixels, M prod k] (rows m prod k + t) scattered onto [N, M, out...] (bias
    first, then every product that lands there), in `dtype`."""
    n = products.shape[0]
    if len(axes) == 1:
        axes = [(1, 1, 1, 0, 1)] + axes
        sizes = [1] + list(sizes)
    (kh, sh, dh, ph, oh), (kw, sw, dw, pw, ow) = axes
    h, w = sizes
    taps = kh * kw
    y = np.zeros((n, m, oh, ow), dtype)
    if bias is not None:
        y += bias.astype(dtype)[None, :, None, None]
    iy = np.arange(h)
    for ky in range(kh):
        oy = iy * sh - ph + ky * dh
        inside = (oy >= 0) & (oy < oh)
        for ix in range(w):
            for kx in range(kw):
                ox = ix * sw - pw + kx * dw
                if ox < 0 or ox >= ow or not inside.any():
                    continue
                t = ky * kw + kx
                p = products[:, iy[inside] * w + ix, t::taps]  # [N, rows inside, M]
                y[:, :, oy[inside], ox] += p.transpose(0, 2, 1).astype(dtype)
    return y


def draw(rng, dims):
    kernel = [int(rng.choice([1, 2, 3, 4])) for _ in range(dims)]
    strides = [int(rng.integers(1, 4)) for _ in range(dims)]
    dilations = [int(rng.choice([1, 1, 2])) for _ in range(dims)]
    pads = [int(rng.integers(0, 3)) for _ in range(2 * dims)]
    output_padding = [int(rng.integers(0, max(s, d))) for s, d in zip(strides, dilations)]
    sizes = [int(rng.choice([1, 2, 5, 7, 9])) for _ in range(dims)]
    return kernel, strides, dilations, pads, output_padding, sizes


def label_of(dims, c, m, kernel, strides, dilations, pads, output_padding, x, bits, ternary,
             group, bias, threads, int8):
    return (f"{'8-bit ' if int8 else ''}{dims}-D C={c} M={m} k={kernel} s={strides} "
            f"d={dilations} pads={pads} out_pad={output_padding} x={list(x.shape)} bits={bits} "
            f"{'ternary' if ternary else 'binary'} g={group} bias={bias is not None} "
            f"threads={threads}")


def run_case(library, rng, dims, c, m, batch, bits, ternary, group, with_bias, threads, int8):
    while True:
        kernel, strides, dilations, pads, output_padding, sizes = draw(rng, dims)
        axes, empty = geometry(kernel, strides, dilations, pads, output_padding, sizes)
        if not empty:
            break
    taps = int(np.prod(kernel))
    rows = m * taps
    signs, masks, alpha, g = random_code(rng, rows, c, bits, ternary, group)
    bias = rng.standard_normal(m).astype(np.float32) if with_bias else None
    x = rng.standard_normal([batch, c] + sizes).astype(np.float32)
    x[x < -1.5] = 0  # exact zeros too
    attrs = dict(strides=strides, dilations=dilations, pads=pads, output_padding=output_padding,
                 group_size=group)
    if int8:
        attrs["int8_min_rows"] = 1
    label = label_of(dims, c, m, kernel, strides, dilations, pads, output_padding, x, bits,
                     ternary, group, bias, threads, int8)
    s = session(library, transpose_model(c, m, kernel, signs, masks, alpha, bias,
                                         [batch, c] + sizes, attrs), threads)
    y = s.run(None, {"x": x})[0]
    want_shape = (batch, m, *[a[4] for a in axes])
    check(y.shape == want_shape, f"{label}: output shape {y.shape}, expected {want_shape}")
    if y.shape != want_shape:
        return
    pixels = np.ascontiguousarray(x.reshape(batch, c, -1).transpose(0, 2, 1))  # [N, HW, C]
    if int8:
        mm = session(library, model(rows, c, bits, ternary, group, signs, masks, alpha, None,
                                    ["N", c], attrs={"int8_min_rows": 1}))
        products = mm.run(None, {"x": pixels.reshape(-1, c)})[0].reshape(batch, -1, rows)
        want = scatter(products.astype(np.float64), axes, sizes, m, bias,
                       np.float64).reshape(y.shape)
        size = scatter(np.abs(products).astype(np.float64), axes, sizes, m,
                       None if bias is None else np.abs(bias), np.float64).reshape(y.shape)
        # Each product within 4u of QuantizedMatMul's (the two scales multiplied in the other
        # order), then a float sum of at most taps + 1 terms: gamma_{taps + 6} of the magnitudes.
        n = taps + 6
        error = np.abs(y - want)
        check(np.all(error <= n * U / (1 - n * U) * size + 1e-30),
              f"{label}: differs from QuantizedMatMul's 8-bit products scattered by "
              f"{error.max():.3g}, over the bound")
        return
    w, w_abs = dense(signs, masks, alpha, g)  # [rows, C] float64
    products = pixels.astype(np.float64) @ w.T
    magnitudes = np.abs(pixels).astype(np.float64) @ w_abs.T
    expected = scatter(products, axes, sizes, m, bias, np.float64).reshape(y.shape)
    size = scatter(magnitudes, axes, sizes, m, None if bias is None else np.abs(bias),
                   np.float64).reshape(y.shape)
    m_terms, s_terms = c * bits + 2 * bits + 4, taps + 1
    bound = (m_terms * U / (1 - m_terms * U) + s_terms * U / (1 - s_terms * U)) * size * 1.01
    error = np.abs(y - expected)
    check(np.all(error <= bound + 1e-30),
          f"{label}: error {error.max():.3g} over the bound {bound.reshape(-1)[np.argmax(error)]:.3g}")


def bad_inputs(library, rng):
    print("bad input:")
    signs, masks, alpha, g = random_code(rng, 4 * 9, 4, 2, False, 0)
    good = dict(c=4, m=4, kernel=[3, 3], signs=signs, masks=None, alpha=alpha, bias=None,
                x_shape=["N", "C", "H", "W"], attrs=dict(strides=[2, 2], pads=[1, 1, 1, 1]))
    ok = transpose_model(**good)
    x = np.zeros((1, 4, 5, 5), np.float32)
    check(session(library, ok).run(None, {"x": x})[0].shape == (1, 4, 9, 9), "the good model")
    expect_error(library, ok, ["qct", "shape [1, 3, 5, 5]", "4 channels"],
                 {"x": np.zeros((1, 3, 5, 5), np.float32)})
    expect_error(library, transpose_model(**{**good, "x_shape": None}), ["qct", "expected rank 4"],
                 {"x": np.zeros((1, 4, 5), np.float32)})
    big_pads = dict(strides=[1, 1], pads=[3, 3, 0, 0])
    expect_error(library, transpose_model(**{**good, "attrs": big_pads}),
                 ["qct", "the pads take it all"], {"x": np.zeros((1, 4, 1, 5), np.float32)})
    for attrs, fragment in ((dict(group=2), "group is 2"),
                            (dict(auto_pad="SAME_UPPER"), "auto_pad is 'SAME_UPPER'"),
                            (dict(strides=[2, 2], output_padding=[2, 0]), "output_padding [2, 0]"),
                            (dict(strides=[1]), "do not match kernel_shape"),
                            (dict(dilations=[0, 1]), "dilations [0, 1]"),
                            (dict(pads=[-1, 0, 0, 0]), "pads [-1, 0, 0, 0]"),
                            (dict(format_version=2), "format_version is 2"),
                            (dict(int8_min_rows=1, activation_bits=4), "int8_min_rows is 1")):
        expect_error(library, transpose_model(**{**good, "attrs": attrs}), ["qct", fragment])
    m = onnx.load_from_string(ok)
    for a in m.graph.node[0].attribute:
        if a.name == "kernel_shape":
            a.ints[:] = [3, 3, 3]
    expect_error(library, m.SerializeToString(), ["qct", "kernel_shape is [3, 3, 3]"])
    # The code's rows are out_channels x taps: a code of other rows is refused.
    m = onnx.load_from_string(ok)
    for a in m.graph.node[0].attribute:
        if a.name == "out_channels":
            a.i = 5
    expect_error(library, m.SerializeToString(), ["qct", "signs"])
    nan_alpha = alpha.copy()
    nan_alpha[1, 0, 0] = np.inf
    expect_error(library, transpose_model(**{**good, "alpha": nan_alpha}),
                 ["qct", "coefficient 2 is inf"])
    # On 8-bit activations a NaN input is an error naming the pixel.
    nan_x = np.zeros((1, 4, 5, 5), np.float32)
    nan_x[0, 2, 1, 3] = np.nan
    expect_error(library, transpose_model(**{**good, "attrs": {**good["attrs"],
                                                               "int8_min_rows": 1}}),
                 ["qct", "x has nan at channel 2, row 1, col 3"], {"x": nan_x})


def main(library):
    rng = np.random.default_rng(17)
    cases = 0
    for dims in (2, 1):
        for _ in range(30):
            c = int(rng.choice([1, 3, 8, 33, 64]))
            m = int(rng.choice([1, 2, 5, 16]))
            batch = int(rng.choice([1, 1, 3, 64])) if c * m <= 128 else 1
            bits = int(rng.integers(1, 4))
            ternary = bool(rng.integers(0, 2))
            group = int(rng.choice([0, 8])) if c > 8 else 0
            for int8 in (False, True):
                run_case(library, rng, dims, c, m, batch, bits, ternary, group,
                         bool(rng.integers(0, 2)), int(rng.choice([1, 2])), int8)
                cases += 1
    print(f"{cases} cases")
    bad_inputs(library, rng)
    print(f"{failures()} failures")
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
