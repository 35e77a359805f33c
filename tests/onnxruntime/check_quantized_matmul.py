#!/usr/bin/env python3
"""ai.qsl::QuantizedMatMul in ONNX Runtime, with libqsl_onnxruntime.so registered, against a numpy
reference written from the operator's definition (docs/onnxruntime.md), not from qsl's code:

    python3 tests/onnxruntime/check_quantized_matmul.py LIBQSL_ONNXRUNTIME

* Random codes (binary and ternary, 1..4 planes, per-row and grouped coefficients), random and
  edge widths (1, 7, 63, 64, 65, 127, a prime), inputs of rank 1 to 4 and batches 1, 3 and 64,
  with and without bias, on 1 and 2 intra-op threads (and with one, no thread but the
  caller's): float activations within the derived float bound; encoded activations (per
  vector and calibrated) equal to the same weights applied to the decoded activations, up to
  the same bound.
* Bad input: a wrong X width at run time, corrupt tensors (a set padding bit, a NaN
  coefficient, wrong dims, masks on a binary code), a weight that is not an initializer and a
  newer format_version each give an ONNX Runtime error naming the node and the value; the
  process never crashes.
"""
import os
import platform
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import check, failures  # noqa: E402

U = np.finfo(np.float32).eps / 2  # unit roundoff of float32


def random_code(rng, rows, cols, bits, ternary, group):
    """Planes (bool [rows, bits, cols]), masks (or None) and coefficients [rows, groups, bits]."""
    g = cols if group == 0 else group
    groups = -(-cols // g)
    signs = rng.random((rows, bits, cols)) < 0.5
    masks = rng.random((rows, bits, cols)) < 0.7 if ternary else None
    if ternary:
        signs &= masks  # canonical: no sign bit where the mask is 0
    alpha = np.sort(rng.random((rows, groups, bits)).astype(np.float32) + 0.05, axis=2)[:, :, ::-1]
    return signs, masks, np.ascontiguousarray(alpha), g


def pack(planes):
    """[rows, bits, cols] bools -> uint8 [rows, bits, ceil(cols / 8)], column c = bit c % 8."""
    return np.packbits(planes, axis=2, bitorder="little")


def dense(signs, masks, alpha, g):
    """W_hat [rows, cols] in float64: sum_j alpha[n, c // g, j] * m_j[n, c]."""
    values = np.where(signs, 1.0, -1.0)
    if masks is not None:
        values = values * masks
    cols = signs.shape[2]
    a = alpha[:, np.arange(cols) // g, :].astype(np.float64)  # [rows, cols, bits]
    return np.einsum("rjc,rcj->rc", values, a), np.einsum("rjc,rcj->rc", np.abs(values), a)


def model(rows, cols, bits, ternary, group, signs, masks, alpha, bias, x_shape,
          activation=None, attrs=None, weights_as_input=False):
    inputs = ["x", "signs", "coefficients", "masks" if ternary else "",
              "bias" if bias is not None else ""]
    while inputs and inputs[-1] == "":
        inputs.pop()
    a = dict(in_features=cols, out_features=rows, bits=bits, basis=1 if ternary else 0,
             group_size=group)
    if activation:
        a.update(activation)
    a.update(attrs or {})
    node = helper.make_node("QuantizedMatMul", inputs, ["y"], name="qmm", domain="ai.qsl", **a)
    inits = [numpy_helper.from_array(pack(signs), "signs"),
             numpy_helper.from_array(alpha.reshape(rows, alpha.shape[1], 1, bits), "coefficients")]
    if ternary:
        inits.append(numpy_helper.from_array(pack(masks), "masks"))
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "bias"))
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    if weights_as_input:  # the signs arrive at run time: refused, they must be initializers
        graph_inputs.append(helper.make_tensor_value_info("signs", TensorProto.UINT8,
                                                          list(pack(signs).shape)))
        inits = inits[1:]
    g = helper.make_graph([node], "qmm", graph_inputs,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("ai.qsl", 1)], ir_version=8)
    return m.SerializeToString()


def session(library, model_bytes, threads=1):
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def encode(x, bits, step=None, minimum=None):
    """The encoding rule of docs/design.md in float32: x_min + step * q per vector (rows of x)."""
    x = x.astype(np.float32)
    if step is None:
        lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
        step = ((hi - lo) / np.float32(2 ** bits - 1)).astype(np.float32)
        minimum = lo
    else:
        step = np.full((x.shape[0], 1), step, np.float32)
        minimum = np.full((x.shape[0], 1), minimum, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(step > 0, np.float32(1) / step, np.float32(0)).astype(np.float32)
    q = np.floor((x - minimum) * inv + np.float32(0.5))
    q = np.where(step > 0, np.clip(q, 0, 2 ** bits - 1), 0)
    return (minimum.astype(np.float64) + step.astype(np.float64) * q)




def run_case(library, rng, rows, cols, bits, ternary, group, x_shape, with_bias, threads,
             activation_bits=0, calibrated=False):
    signs, masks, alpha, g = random_code(rng, rows, cols, bits, ternary, group)
    bias = rng.standard_normal(rows).astype(np.float32) if with_bias else None
    x = rng.standard_normal(x_shape).astype(np.float32)
    activation, xs = None, x.reshape(-1, cols)
    if activation_bits:
        activation = {"activation_bits": activation_bits}
        if calibrated:
            step, minimum = np.float32(0.05), np.float32(-2.0)
            activation.update(activation_step=float(step), activation_minimum=float(minimum))
            xs = encode(xs, activation_bits, step, minimum)
        else:
            xs = encode(xs, activation_bits)
    w, w_abs = dense(signs, masks, alpha, g)
    expected = xs.astype(np.float64) @ w.T + (0 if bias is None else bias.astype(np.float64))
    s = session(library, model(rows, cols, bits, ternary, group, signs, masks, alpha, bias,
                               list(x_shape), activation), threads)
    y = s.run(None, {"x": x})[0]
    want_shape = tuple(x_shape[:-1]) + (rows,)
    label = (f"{rows}x{cols} k={bits} {'ternary' if ternary else 'binary'} g={group} "
             f"x{tuple(x_shape)} bias={with_bias} threads={threads} act={activation_bits}"
             f"{' calibrated' if calibrated else ''}")
    check(y.shape == want_shape, f"{label}: output shape {y.shape}, expected {want_shape}")
    if y.shape != want_shape:
        return
    # Float sums of cols * bits products and the bias, in any order: gamma_(m) of the sum of
    # magnitudes (activation codes: the same bound on the decoded inputs, whose rounding qsl's
    # integer path does not add).
    m = cols * bits + 2 * bits + 4
    bound = m * U / (1 - m * U) * (np.abs(xs) @ w_abs.T + (0 if bias is None else np.abs(bias)))
    error = np.abs(y.reshape(-1, rows) - expected)
    check(np.all(error <= bound + 1e-30), f"{label}: error {error.max():.3g} over the bound "
                                          f"{bound.reshape(-1)[np.argmax(error)]:.3g}")


def dense32(signs, masks, alpha, g):
    """W_hat in float32 summed over planes j = 0..k-1 in order, as qsl decodes it."""
    values = np.where(signs, np.float32(1), np.float32(-1))
    if masks is not None:
        values = values * masks
    a = alpha[:, np.arange(signs.shape[2]) // g, :]
    w = np.zeros(signs.shape[::2], np.float32)
    for j in range(signs.shape[1]):
        w = (w + a[:, :, j] * values[:, j, :]).astype(np.float32)
    return w


def int8_grid(v):
    """Rows of v on their symmetric int8 grids (docs/design.md): q and the scales."""
    scale = (np.abs(v).max(axis=1) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inverse = (np.float32(1) / scale).astype(np.float32)
    ok = (scale > 0) & np.isfinite(inverse)
    scale = np.where(ok, scale, np.float32(0)).astype(np.float32)
    inverse = np.where(ok, inverse, np.float32(0)).astype(np.float32)
    q = np.rint(np.clip((v * inverse[:, None]).astype(np.float32), -127, 127))
    return q.astype(np.int64), scale


def table_min_bits():
    """qsl's cpu_byte_tables_min_bits() for the target the library picks here (QSL_CPU_TARGET,
    else the best this CPU runs): the fewest bits small_batch_bits encodes with. The values of
    the kernel tables (src/cpu/kernels_avx2.cpp, kernels_avx512.cpp, kernels_neon.cpp): AVX2 and
    AVX-512 2, AVX-512 with VPOPCNTDQ 5 (AND + popcount is faster below), NEON 3; none on the
    scalar target."""
    if platform.machine() in ("aarch64", "arm64"):
        return None if os.environ.get("QSL_CPU_TARGET") == "scalar" else 3
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    avx512 = all(f in flags for f in ("avx512f", "avx512bw", "avx512dq", "avx512vl"))
    best = ("avx512_vpopcnt" if avx512 and "avx512_vpopcntdq" in flags else
            "avx512" if avx512 else "avx2" if "avx2" in flags else "scalar")
    target = os.environ.get("QSL_CPU_TARGET", best)
    return {"avx2": 2, "avx512": 2, "avx512_vpopcnt": 5}.get(target)


def encodes_small_batches(bits):
    """Whether small_batch_bits = bits encodes the calls below int8_min_rows on this CPU (where
    it does not, they take the float path)."""
    least = table_min_bits()
    return bits > 0 and least is not None and bits >= least


def run_int8_case(library, rng, rows, cols, bits, ternary, group, batch, with_bias, threads,
                  min_rows, small_bits=0):
    """int8_min_rows: from min_rows rows on, 8-bit activations with exactly the defined
    arithmetic (integer sums exact, the float steps in their order: bit for bit); below, the
    float path within its bound, or with small_batch_bits (where the CPU has byte tables) each
    vector encoded with that many bits, within the same bound of the encoded inputs."""
    signs, masks, alpha, g = random_code(rng, rows, cols, bits, ternary, group)
    bias = rng.standard_normal(rows).astype(np.float32) if with_bias else None
    x = rng.standard_normal((batch, cols)).astype(np.float32)
    x[0, :] *= 1e3  # a vector of another magnitude: every vector has a grid of its own
    attrs = {"int8_min_rows": min_rows}
    if small_bits:
        attrs["small_batch_bits"] = small_bits
    s = session(library, model(rows, cols, bits, ternary, group, signs, masks, alpha, bias,
                               [batch, cols], attrs=attrs), threads)
    y = s.run(None, {"x": x})[0]
    label = (f"int8_min_rows {min_rows}, small_batch_bits {small_bits}: {rows}x{cols} k={bits} "
             f"{'ternary' if ternary else 'binary'} g={group} batch {batch} threads={threads}")
    w = dense32(signs, masks, alpha, g)
    if batch < min_rows:
        encoded = encodes_small_batches(small_bits)
        xs = encode(x, small_bits) if encoded else x
        w64, w_abs = dense(signs, masks, alpha, g)
        expected = xs.astype(np.float64) @ w64.T + (0 if bias is None else bias)
        m = cols * bits + 2 * bits + 4
        bound = m * U / (1 - m * U) * (np.abs(xs) @ w_abs.T + (0 if bias is None else np.abs(bias)))
        check(np.all(np.abs(y - expected) <= bound + 1e-30),
              f"{label}: the {'encoded' if encoded else 'float'} path is off by "
              f"{np.abs(y - expected).max():.3g}")
        return
    qw, sw = int8_grid(w)
    qx, sx = int8_grid(x)
    sums = (qx @ qw.T).astype(np.float32)
    expected = ((sums * sx[:, None]).astype(np.float32) * sw[None, :]).astype(np.float32)
    if bias is not None:
        expected = (expected + bias).astype(np.float32)
    check(np.array_equal(y, expected), f"{label}: differs from the 8-bit definition by "
                                       f"{np.abs(y - expected).max():.3g}")


def expect_error(library, model_bytes, fragments, feed=None):
    try:
        s = session(library, model_bytes)
        if feed is not None:
            s.run(None, feed)
    except Exception as e:  # ORT raises its own exception types
        text = str(e)
        for f in fragments:
            check(f in text, f"error lacks {f!r}: {text}")
        print("  refused:", text.splitlines()[0][:200])
        return
    check(False, f"no error, expected one with {fragments}")


SHARED_CHILD = """
import sys, numpy as np, onnx, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
nodes, n = int(sys.argv[2]), 4096
signs = numpy_helper.from_array(np.random.default_rng(1).integers(0, 256, (n, 2, n // 8))
                                .astype(np.uint8), "signs")
alpha = numpy_helper.from_array(np.full((n, 1, 1, 2), 0.01, np.float32), "coefficients")
graph = [helper.make_node("QuantizedMatMul", [f"h{i}", "signs", "coefficients"], [f"h{i + 1}"],
                          name=f"step{i}", domain="ai.qsl", in_features=n, out_features=n,
                          bits=2, basis=0, group_size=0) for i in range(nodes)]
g = helper.make_graph(graph, "steps", [helper.make_tensor_value_info("h0", TensorProto.FLOAT,
                                                                      [1, n])],
                      [helper.make_tensor_value_info(f"h{nodes}", TensorProto.FLOAT, None)],
                      [signs, alpha])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                        helper.make_opsetid("ai.qsl", 1)], ir_version=8)
o = ort.SessionOptions()
o.register_custom_ops_library(sys.argv[1])
o.intra_op_num_threads = 1
s = ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"])
s.run(None, {"h0": np.ones((1, n), np.float32)})
print([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS")][0])
"""


def shared_code_rss_growth(library):
    """MiB of resident memory 24 nodes on one code add over 1 node (separate processes)."""
    import subprocess
    rss = [float(subprocess.run([sys.executable, "-c", SHARED_CHILD, library, str(k)],
                                check=True, capture_output=True, text=True).stdout.split()[-1])
           for k in (1, 24)]
    return (rss[1] - rss[0]) / 1024


def threads_of_this_process():
    return len(os.listdir("/proc/self/task"))


def main(library):
    rng = np.random.default_rng(15)
    # A session with one intra-op thread runs qsl's kernels on its calling thread: qsl starts no
    # threads of its own (its pool is never used inside ONNX Runtime).
    before = threads_of_this_process()
    signs, masks, alpha, g = random_code(rng, 256, 512, 2, False, 64)
    s = session(library, model(256, 512, 2, False, 64, signs, None, alpha, None, [64, 512]), 1)
    s.run(None, {"x": np.ones((64, 512), np.float32)})
    check(threads_of_this_process() == before,
          f"one intra-op thread: the process went from {before} to "
          f"{threads_of_this_process()} threads")
    del s
    widths = [1, 7, 63, 64, 65, 127, 131]
    for cols in widths:
        for bits, ternary, group in ((1, False, 0), (2, False, 8), (3, True, 0), (4, False, 64)):
            run_case(library, rng, 17, cols, bits, ternary, group, [3, cols], True, 1)
    for x_shape in ([65], [1, 65], [64, 65], [2, 3, 65], [2, 2, 4, 65]):
        run_case(library, rng, 33, 65, 2, False, 16, x_shape, False, 2)
    for _ in range(20):  # random shapes
        rows, cols = int(rng.integers(1, 70)), int(rng.integers(1, 300))
        bits, ternary = int(rng.integers(1, 5)), bool(rng.integers(0, 2))
        group = int(rng.choice([0, 8, 16, 32, 128]))
        batch = int(rng.choice([1, 3, 64]))
        run_case(library, rng, rows, cols, bits, ternary, group, [batch, cols],
                 bool(rng.integers(0, 2)), int(rng.integers(1, 3)))
    for act in (1, 4, 8):
        run_case(library, rng, 40, 129, 2, False, 32, [5, 129], True, 2, act, False)
        run_case(library, rng, 40, 129, 2, True, 0, [3, 129], False, 1, act, True)

    # 8-bit activations from int8_min_rows on: group sizes that are and are not multiples of
    # 32 (the AVX-512 decoder's fused path and the generic one), edge widths, both bases.
    for cols in (1, 31, 64, 65, 131, 1024):
        for bits, ternary, group in ((1, False, 0), (2, False, 32), (3, True, 0), (2, False, 8),
                                     (4, True, 128)):
            run_int8_case(library, rng, 37, cols, bits, ternary, group, 5, True, 2, 3)
    for batch in (1, 2, 3, 64, 300):  # below and from the threshold; two chunks of vectors
        run_int8_case(library, rng, 300, 257, 2, False, 128, batch, batch % 2 == 0, 1, 3)
    # Below int8_min_rows, small_batch_bits: vectors encoded per vector (byte tables on AVX2).
    for cols in (1, 63, 64, 65, 257):
        for bits, ternary, group, small in ((2, False, 32, 8), (3, True, 0, 8), (1, False, 0, 4),
                                            (4, False, 128, 2)):
            for batch in (1, 3):
                run_int8_case(library, rng, 37, cols, bits, ternary, group, batch, True,
                              1 + batch % 2, 4, small)

    # Nodes that read one code (an unrolled recurrence) share one packed copy.
    grown = shared_code_rss_growth(library)
    check(grown < 40, f"24 nodes on one 4096 x 4096 code grew the process by {grown:.0f} MiB "
                      "more than 1 node (one packed copy each would be ~120 MiB)")
    print(f"24 nodes on one code: {grown:.0f} MiB more resident than 1 node")

    print("bad input:")
    signs, masks, alpha, g = random_code(rng, 8, 20, 2, False, 0)
    good = dict(rows=8, cols=20, bits=2, ternary=False, group=0, signs=signs, masks=None,
                alpha=alpha, bias=None, x_shape=[2, 20])
    ok = model(**good)
    # A width the graph leaves open ("K"), wrong at run time: the operator's own check.
    expect_error(library, model(**{**good, "x_shape": ["N", "K"]}),
                 ["qmm", "ending in 21", "in_features = 20"], {"x": np.zeros((2, 21), np.float32)})
    bad = signs.copy()
    padded = np.concatenate([bad, np.ones((8, 2, 4), bool)], axis=2)  # bits past column 19
    m = onnx.load_from_string(ok)
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(pack(padded), "signs"))
    expect_error(library, m.SerializeToString(), ["qmm", "has bits set past column 19"])
    nan_alpha = alpha.copy()
    nan_alpha[3, 0, 1] = np.nan
    expect_error(library, model(**{**good, "alpha": nan_alpha}), ["qmm", "coefficient 7", "nan"])
    m = onnx.load_from_string(ok)
    m.graph.initializer[1].CopyFrom(numpy_helper.from_array(alpha.reshape(8, 1, 2), "coefficients"))
    expect_error(library, m.SerializeToString(),
                 ["qmm", "coefficients", "expected float or float16 [8, 1, 1, 2]"])
    m = onnx.load_from_string(ok)  # another type than float / float16 is refused by name
    wrong_type = alpha.reshape(8, 1, 1, 2).astype(np.int32)
    m.graph.initializer[1].CopyFrom(numpy_helper.from_array(wrong_type, "coefficients"))
    expect_error(library, m.SerializeToString(),
                 ["qmm", "coefficients", "is int32 [8, 1, 1, 2]; expected float or float16"])
    m = onnx.load_from_string(ok)
    m.graph.node[0].input.append("masks")
    m.graph.initializer.append(numpy_helper.from_array(pack(signs), "masks"))
    expect_error(library, m.SerializeToString(), ["qmm", "binary code takes no masks"])
    expect_error(library, model(**good, weights_as_input=True), ["qmm", "must be an initializer"])
    expect_error(library, model(**good, attrs={"format_version": 2}),
                 ["qmm", "format_version is 2", "reads 1"])
    expect_error(library, model(**good, attrs={"bits": 9}), ["qmm", "bits is 9"])
    expect_error(library, model(**good, attrs={"int8_min_rows": -1}),
                 ["qmm", "int8_min_rows is -1", "expected >= 0"])
    expect_error(library, model(**good, activation={"activation_bits": 4},
                                attrs={"int8_min_rows": 2}),
                 ["qmm", "int8_min_rows is 2", "encodes its activations"])
    expect_error(library, model(**good, attrs={"int8_min_rows": 2, "small_batch_bits": 9}),
                 ["qmm", "small_batch_bits is 9", "expected 0..8"])
    expect_error(library, model(**good, attrs={"small_batch_bits": 8}),
                 ["qmm", "small_batch_bits is 8 without int8_min_rows"])
    nan_x = np.zeros((2, 20), np.float32)
    nan_x[1, 7] = np.nan
    expect_error(library, model(**good, attrs={"int8_min_rows": 2}),
                 ["qmm", "8-bit activations", "nan at row 1, col 7"], {"x": nan_x})
    print(f"{failures()} failures")
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
