#!/usr/bin/env python3
"""ai.qsl::QuantizedConv in PyPI onnxruntime against a numpy reference written from
docs/onnxruntime.md: 1-D and 2-D convolutions with random shapes (odd sizes, 1x1 and wide
kernels), strides, dilations, explicit pads and every auto_pad mode, groups (1, 2, 3, and
depthwise), binary and ternary codes of 1 to 3 planes per row or grouped, with and without a
bias, batches 1, 3 and 64, 1 and 2 threads; float activations within gamma_m of the sum of
magnitudes (m = patch x bits + 2 bits + 4), encoded ones (per vector and calibrated) the same
bound on the decoded inputs; then every error, naming the node.

    python3 tests/onnxruntime/check_quantized_conv.py LIBQSL_ONNXRUNTIME
(QSL_ORT_GEMM_MIN_ROWS picks the path: CTest runs it as is and with every product on the tables)
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import check, failures  # noqa: E402
from check_quantized_matmul import (U, dense, encode, expect_error, model,  # noqa: E402
                                    pack, random_code, session)



def conv_model(c, m, kernel, groups, signs, masks, alpha, bias, x_shape, attrs):
    patch = c // groups * int(np.prod(kernel))
    bits = signs.shape[1]
    inputs = ["x", "signs", "coefficients", "masks" if masks is not None else "",
              "bias" if bias is not None else ""]
    while inputs[-1] == "":
        inputs.pop()
    a = dict(in_channels=c, out_channels=m, kernel_shape=list(kernel), group=groups, bits=bits,
             basis=1 if masks is not None else 0, group_size=0)
    a.update(attrs)
    node = helper.make_node("QuantizedConv", inputs, ["y"], name="qconv", domain="ai.qsl", **a)
    inits = [numpy_helper.from_array(pack(signs), "signs"),
             numpy_helper.from_array(alpha.reshape(m, alpha.shape[1], 1, bits), "coefficients")]
    if masks is not None:
        inits.append(numpy_helper.from_array(pack(masks), "masks"))
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "bias"))
    assert signs.shape[2] == patch
    g = helper.make_graph([node], "qconv",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                               helper.make_opsetid("ai.qsl", 1)],
                             ir_version=8).SerializeToString()


def pads_for(sizes, kernel, strides, dilations, pads, auto_pad):
    d = len(kernel)
    if auto_pad == "NOTSET":
        return pads[:d], pads[d:]
    if auto_pad == "VALID":
        return [0] * d, [0] * d
    begin, end = [], []
    for size, k, s, dl in zip(sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + dl * (k - 1) + 1 - size)
        b = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        begin.append(b)
        end.append(total - b)
    return begin, end


def patches_of(x, kernel, strides, dilations, begin, end, groups):
    """[N, groups, positions, C / groups * prod k] in (channel, k...) order, and the out dims."""
    n, c = x.shape[:2]
    d = len(kernel)
    padded = np.pad(x, [(0, 0), (0, 0)] + [(b, e) for b, e in zip(begin, end)])
    outs = [(padded.shape[2 + i] - (dilations[i] * (kernel[i] - 1) + 1)) // strides[i] + 1
            for i in range(d)]
    if min(outs) < 1:
        return None, outs
    cols = []
    for offsets in np.ndindex(*kernel):
        index = [slice(None), slice(None)]
        for i in range(d):
            start = offsets[i] * dilations[i]
            index.append(slice(start, start + strides[i] * (outs[i] - 1) + 1, strides[i]))
        cols.append(padded[tuple(index)])  # [N, C, out...]
    stacked = np.stack(cols, axis=2)  # [N, C, prod k, out...]
    positions = int(np.prod(outs))
    stacked = stacked.reshape(n, groups, c // groups, len(cols), positions)
    return stacked.transpose(0, 1, 4, 2, 3).reshape(n, groups, positions, -1), outs


def run_case(library, rng, dims, c, m, groups, kernel, strides, dilations, pads, auto_pad,
             batch, bits, ternary, group_size, with_bias, threads, activation=None):
    patch = c // groups * int(np.prod(kernel))
    signs, masks, alpha, g = random_code(rng, m, patch, bits, ternary, group_size)
    bias = rng.standard_normal(m).astype(np.float32) if with_bias else None
    sizes = [int(rng.integers(max(1, k * dl - 3), k * dl + 9)) for k, dl in zip(kernel, dilations)]
    x = rng.standard_normal([batch, c] + sizes).astype(np.float32)
    attrs = dict(strides=strides, dilations=dilations, auto_pad=auto_pad, group_size=group_size)
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
    if activation:
        attrs.update(activation)
    begin, end = pads_for(sizes, kernel, strides, dilations, pads, auto_pad)
    label = (f"{dims}-D C={c} M={m} group={groups} k={kernel} s={strides} d={dilations} "
             f"pads={begin}+{end} {auto_pad} x={list(x.shape)} bits={bits} "
             f"{'ternary' if ternary else 'binary'} g={group_size} bias={with_bias} "
             f"threads={threads} act={activation}")
    cols, outs = patches_of(x, kernel, strides, dilations, begin, end, groups)
    if min(outs) < 1:
        return  # the kernel does not fit: an error case, tested below
    w, w_abs = dense(signs, masks, alpha, g)  # [M, patch]
    per = m // groups
    expected = np.zeros((batch, m, int(np.prod(outs))))
    bound = np.zeros_like(expected)
    m_terms = patch * bits + 2 * bits + 4
    for gi in range(groups):
        xs = cols[:, gi].reshape(-1, patch)
        if activation:
            step = activation.get("activation_step")
            xs = encode(xs, activation["activation_bits"],
                        None if step is None else np.float32(step),
                        None if step is None else np.float32(activation["activation_minimum"]))
        wg, wa = w[gi * per:(gi + 1) * per], w_abs[gi * per:(gi + 1) * per]
        bg = 0 if bias is None else bias[gi * per:(gi + 1) * per].astype(np.float64)
        e = xs.astype(np.float64) @ wg.T + bg
        b = m_terms * U / (1 - m_terms * U) * (np.abs(xs) @ wa.T + np.abs(bg))
        expected[:, gi * per:(gi + 1) * per] = e.reshape(batch, -1, per).transpose(0, 2, 1)
        bound[:, gi * per:(gi + 1) * per] = b.reshape(batch, -1, per).transpose(0, 2, 1)
    s = session(library, conv_model(c, m, kernel, groups, signs, masks, alpha, bias,
                                    [batch, c] + sizes, attrs), threads)
    y = s.run(None, {"x": x})[0]
    want = (batch, m, *outs)
    check(y.shape == want, f"{label}: output shape {y.shape}, expected {want}")
    if y.shape != want:
        return
    error = np.abs(y.reshape(batch, m, -1) - expected)
    check(np.all(error <= bound + 1e-30),
          f"{label}: error {error.max():.3g} over the bound {bound.reshape(-1)[np.argmax(error)]:.3g}")


def run_int8_case(library, rng, dims, c, m, kernel, strides, dilations, pads, batch, bits,
                  ternary, group_size, with_bias, threads, nan_at=None):
    """int8_min_rows: the patches quantized straight from the image (over the padded image at
    stride 1) give QuantizedMatMul's 8-bit results on numpy's im2col patches of the same code,
    bit for bit; a NaN inside a patch is an error naming the pixel."""
    patch = c * int(np.prod(kernel))
    signs, masks, alpha, g = random_code(rng, m, patch, bits, ternary, group_size)
    bias = rng.standard_normal(m).astype(np.float32) if with_bias else None
    sizes = [int(rng.integers(max(1, k * dl - 1), k * dl + 12)) for k, dl in zip(kernel, dilations)]
    x = rng.standard_normal([batch, c] + sizes).astype(np.float32)
    x[x < -1.5] = 0  # exact zeros too
    attrs = dict(strides=strides, dilations=dilations, pads=pads, group_size=group_size,
                 int8_min_rows=1)
    label = (f"8-bit {dims}-D C={c} M={m} k={kernel} s={strides} d={dilations} pads={pads} "
             f"x={list(x.shape)} bits={bits} {'ternary' if ternary else 'binary'} "
             f"g={group_size} bias={with_bias} threads={threads}")
    begin, end = pads[:dims], pads[dims:]
    cols, outs = patches_of(x, kernel, strides, dilations, begin, end, 1)
    conv = session(library, conv_model(c, m, kernel, 1, signs, masks, alpha, bias,
                                       [batch, c] + sizes, attrs), threads)
    if nan_at is not None:
        x[nan_at] = np.nan
        expect_error(library, conv_model(c, m, kernel, 1, signs, masks, alpha, bias,
                                         [batch, c] + sizes, attrs),
                     ["qconv", "x has nan at channel %d" % nan_at[1]], {"x": x})
        return
    y = conv.run(None, {"x": x})[0]
    positions = int(np.prod(outs))
    mm = session(library, model(m, patch, bits, ternary, group_size, signs, masks, alpha, bias,
                                ["N", patch], attrs={"int8_min_rows": 1}))
    rows = mm.run(None, {"x": np.ascontiguousarray(cols[:, 0].reshape(-1, patch))})[0]
    want = rows.reshape(batch, positions, m).transpose(0, 2, 1).reshape(batch, m, *outs)
    check(y.shape == want.shape and np.array_equal(y, want),
          f"{label}: differs from QuantizedMatMul's 8-bit product of the patches by "
          f"{np.abs(y - want).max() if y.shape == want.shape else y.shape}")


def main(library):
    rng = np.random.default_rng(16)
    # With one intra-op thread, creating and running a QuantizedConv on 8-bit activations (its
    # rows' grids are made by the first call) starts no thread of qsl's own.
    before = len(os.listdir("/proc/self/task"))
    signs, masks, alpha, g = random_code(rng, 32, 8 * 3, 2, False, 0)
    s = session(library, conv_model(8, 32, [3], 1, signs, None, alpha, None, [2, 8, 300],
                                    dict(int8_min_rows=1, pads=[1, 1])), 1)
    s.run(None, {"x": np.ones((2, 8, 300), np.float32)})
    after = len(os.listdir("/proc/self/task"))
    check(after == before, f"one intra-op thread: the process went from {before} to {after} threads")
    del s
    modes = ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]
    cases = 0
    for dims in (2, 1):
        for _ in range(40):
            groups = int(rng.choice([1, 1, 2, 3, 0]))  # 0: depthwise
            c = int(rng.integers(1, 7)) * (groups or 1)
            if groups == 0:
                groups, m = c, c * int(rng.choice([1, 2]))
            else:
                m = int(rng.integers(1, 6)) * groups
            kernel = [int(rng.choice([1, 2, 3, 5])) for _ in range(dims)]
            strides = [int(rng.integers(1, 3)) for _ in range(dims)]
            dilations = [int(rng.integers(1, 3)) for _ in range(dims)]
            pads = [int(rng.integers(0, 3)) for _ in range(2 * dims)]
            auto_pad = str(rng.choice(modes))
            patch = c // groups * int(np.prod(kernel))
            group_size = int(rng.choice([0, 8])) if patch > 8 else 0
            batch = int(rng.choice([1, 3, 64])) if dims == 1 else int(rng.choice([1, 3]))
            run_case(library, rng, dims, c, m, groups, kernel, strides, dilations, pads, auto_pad,
                     batch, int(rng.integers(1, 4)), bool(rng.integers(0, 2)), group_size,
                     bool(rng.integers(0, 2)), int(rng.integers(1, 3)))
            cases += 1
    # a wider layer (tiles of 16 rows and more, chunks of 32 columns) and encoded activations
    run_case(library, rng, 2, 24, 40, 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], "NOTSET", 3, 2,
             False, 72, True, 2)
    run_case(library, rng, 2, 8, 16, 8, [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], "SAME_UPPER", 2,
             2, True, 0, True, 1)  # depthwise, multiplier 2
    run_case(library, rng, 2, 6, 12, 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], "NOTSET", 2, 2,
             False, 0, True, 1, {"activation_bits": 4})
    run_case(library, rng, 1, 6, 12, 2, [5], [1], [2], [2, 2], "NOTSET", 3, 3, True, 0, False,
             2, {"activation_bits": 3, "activation_step": 0.05, "activation_minimum": -2.0})
    # 8-bit activations (int8_min_rows): stride 1 (the padded image) and strided, 1-D and 2-D,
    # dilated, 1 and 2 threads, more positions than one chunk of the integer GEMM (256).
    for dims, c, m, kernel, strides, dilations, pads, batch in (
            (2, 8, 32, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 2),
            (2, 5, 20, [3, 2], [2, 1], [1, 2], [0, 1, 2, 0], 3),
            (2, 3, 17, [1, 1], [1, 1], [1, 1], [0, 0, 0, 0], 1),
            (1, 16, 48, [5], [1], [1], [2, 2], 2),
            (1, 6, 33, [3], [2], [3], [1, 0], 3),
            (2, 4, 64, [5, 1], [1, 1], [1, 1], [2, 0, 2, 0], 1)):
        for threads in (1, 2):
            run_int8_case(library, rng, dims, c, m, kernel, strides, dilations, pads, batch,
                          int(rng.integers(1, 4)), bool(rng.integers(0, 2)),
                          int(rng.choice([0, 32])) if c * int(np.prod(kernel)) > 32 else 0,
                          bool(rng.integers(0, 2)), threads)
    run_int8_case(library, rng, 2, 4, 16, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 2, 2, False, 0,
                  True, 1, nan_at=(1, 3, 2, 4))
    print(f"{cases + 4 + 13} cases")

    print("bad input:")
    signs, masks, alpha, g = random_code(rng, 4, 2 * 9, 2, False, 0)
    good = dict(c=4, m=4, kernel=[3, 3], groups=2, signs=signs, masks=None, alpha=alpha,
                bias=None, x_shape=["N", "C", "H", "W"], attrs={})
    ok = conv_model(**good)
    x = np.zeros((1, 4, 5, 5), np.float32)
    check(session(library, ok).run(None, {"x": x})[0].shape == (1, 4, 3, 3), "the good model")
    expect_error(library, ok, ["qconv", "shape [1, 3, 5, 5]", "4 channels"],
                 {"x": np.zeros((1, 3, 5, 5), np.float32)})
    expect_error(library, ok, ["qconv", "does not fit"], {"x": np.zeros((1, 4, 2, 5), np.float32)})
    expect_error(library, conv_model(**{**good, "x_shape": None}), ["qconv", "expected rank 4"],
                 {"x": np.zeros((1, 4, 5), np.float32)})
    expect_error(library, conv_model(**{**good, "attrs": {"auto_pad": "SAME"}}),
                 ["qconv", "auto_pad is 'SAME'"])
    expect_error(library, conv_model(**{**good, "c": 5}), ["qconv", "group 2"])
    expect_error(library, conv_model(**{**good, "attrs": {"strides": [1]}}),
                 ["qconv", "do not match kernel_shape"])
    expect_error(library, conv_model(**{**good, "attrs": {"dilations": [0, 1]}}),
                 ["qconv", "dilations [0, 1]"])
    expect_error(library, conv_model(**{**good, "attrs": {"pads": [-1, 0, 0, 0]}}),
                 ["qconv", "pads [-1, 0, 0, 0]"])
    expect_error(library, conv_model(**{**good, "attrs": {"format_version": 2}}),
                 ["qconv", "format_version is 2"])
    m = onnx.load_from_string(ok)
    for a in m.graph.node[0].attribute:
        if a.name == "kernel_shape":
            a.ints[:] = [3, 3, 3]
    expect_error(library, m.SerializeToString(), ["qconv", "kernel_shape is [3, 3, 3]"])
    nan_alpha = alpha.copy()
    nan_alpha[1, 0, 0] = np.inf
    expect_error(library, conv_model(**{**good, "alpha": nan_alpha}),
                 ["qconv", "coefficient 2 is inf"])
    print(f"{failures()} failures")
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
