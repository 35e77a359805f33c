#!/usr/bin/env python3
"""qsl-compress --native-int8 in ONNX Runtime: a MatMul / Gemm layer kept on ORT's operator
runs as ORT's int8 product (DynamicQuantizeLinear -> MatMulInteger on the decoded weight
requantized per output at load), which ORT folds and fuses into DynamicQuantizeMatMul. Its
outputs stay within the bound the two roundings allow of the fp32 form of the same code
(derived below); qsl-run runs the same file with float activations, equal to the fp32 form.
And qsl-compress --int8-rows: fused nodes with 8-bit activations from a row count on, within
their own derived bound of the fp32 form, and bit for bit the same in qsl-run.

    python3 tests/onnxruntime/check_int8_products.py LIBQSL_ONNXRUNTIME QSL_COMPRESS QSL_RUN \\
        WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import check, failures  # noqa: E402
from check_quantized_matmul import encodes_small_batches  # noqa: E402


def one_layer(kind, k, n, rng):
    """A MatMul on a rank-3 X [B, S, K], or a Gemm (transB = 1, a bias) on X [B, K]."""
    if kind == "matmul":
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 5, k])
        w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32) * 0.1, "w")
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="layer")]
        inits = [w]
    else:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", k])
        w = numpy_helper.from_array(rng.standard_normal((n, k)).astype(np.float32) * 0.1, "w")
        b = numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "b")
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="layer", transB=1)]
        inits = [w, b]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 5, n] if kind == "matmul" else ["B", n])
    graph = helper.make_graph(nodes, kind, [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def session(path, library, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimized=None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = level
    if optimized:
        options.optimized_model_filepath = optimized
    options.register_custom_ops_library(library)
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def compress(tool, source, out, options):
    # The float path unless a case asks for 8-bit activations (qsl-compress takes them from 16
    # rows by default).
    pinned = [] if "--int8-rows" in options else ["--int8-rows", "0"]
    subprocess.run([tool, source, "-o", out, "-q", "--json", out + ".json", "--min-weights", "1",
                    "--native-rows", "1"] + pinned + options, check=True,
                   stdout=subprocess.DEVNULL)
    with open(out + ".json") as f:
        return json.load(f)


def two_forms(compress_tool, work, name, source_model, options, extra):
    """The model compressed twice, with `options` (the fp32 form) and with `extra` added: both
    paths and the second one's runs_as lines."""
    source = os.path.join(work, name + ".onnx")
    onnx.save(source_model, source)
    fp32_form = os.path.join(work, name + ".fp32.onnx")
    other = os.path.join(work, name + ".other.onnx")
    compress(compress_tool, source, fp32_form, options)
    report = compress(compress_tool, source, other, options + extra)
    return fp32_form, other, [l["runs_as"] for l in report["layers"] if l["compressed"]]


def within_bound(what, got, reference, bound):
    """Checks |got - reference| <= bound everywhere and prints how close it came."""
    error = np.abs(got - reference)
    worst = float((error / bound).max())
    print(f"{what}: max |difference from the fp32 form| {error.max():.3g}, "
          f"{worst:.3f} of the bound")
    check(worst <= 1.0, f"{what} exceeds its bound ({worst:.3f} of it)")


def qsl_run(run_tool, work, name, model_path, x):
    """The model's output for x in qsl-run (its --npy input, --dump-outputs output)."""
    npy, dumped = os.path.join(work, name + "_x.npy"), os.path.join(work, name + "_y.npy")
    np.save(npy, x)
    subprocess.run([run_tool, model_path, "--npy", npy, "--dump-outputs", dumped], check=True,
                   stdout=subprocess.DEVNULL)
    return np.load(dumped)


def int8_bound(x, w):
    """The largest |int8 product - fp32 product| per output, for y = x W (W [K, N], decoded).
    DynamicQuantizeLinear: step sx = (max(x, 0) - min(x, 0)) / 255 over the whole tensor, zero
    point rounded, saturated: |x^ - x| <= sx (half a step of rounding, half of the zero point's).
    The weight: per output n, step sw_n = max_k |W[k, n]| / 127, |W^ - W| <= sw_n / 2. So
    |x^ W^ - x W| <= sum_k |x^_k - x_k| |W_kn| + |x^_k| |W^_kn - W_kn|
                  <= sx sum_k |W_kn| + (sw_n / 2) sum_k (|x_k| + sx),
    plus the fp32 rounding of both sums (K ulps of the largest term, a small margin here)."""
    sx = (max(float(x.max()), 0.0) - min(float(x.min()), 0.0)) / 255
    sw = np.abs(w).max(axis=0) / 127
    abs_x = np.abs(x).sum(axis=-1, keepdims=True) + sx * x.shape[-1]
    rounding = 1e-5 * (np.abs(x) @ np.abs(w))
    return sx * np.abs(w).sum(axis=0) + 0.5 * sw * abs_x + rounding + 1e-6


def ort_int8_is_exact():
    """ORT's u8 x s8 kernels (MLAS) sum pairs of products in int16 with saturation on x86 CPUs
    without VNNI, so ORT's own int8 operators are not exact there: the bound below, derived for
    exact integer sums, does not hold for them (qsl's fused operators take qsl's own integer
    loop on such CPUs instead: ort_gemm.cpp)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), None)
    except OSError:
        return True
    if flags is None or "avx2" not in flags:  # not x86 (AArch64's kernels are exact)
        return True
    return "avx512_vnni" in flags or "avx_vnni" in flags


def case(library, compress_tool, run_tool, work, kind, k, n, options):
    rng = np.random.default_rng(k * 131 + n)
    name = f"{kind}_{k}x{n}_{'_'.join(options)}"
    fp32_form, int8_form, runs = two_forms(compress_tool, work, name, one_layer(kind, k, n, rng),
                                           options, ["--native-int8"])
    check(len(runs) == 1 and "on the runtime's int8 kernel" in runs[0], f"{name}: runs as {runs}")
    # ORT folds the weight side (no decoder, no Round left) and fuses the product.
    optimized = os.path.join(work, name + ".optimized.onnx")
    session(int8_form, library, optimized=optimized)
    ops = {node.op_type for node in onnx.load(optimized).graph.node}
    check(not ops & {"BitShift", "GatherElements", "Round", "Div"},
          f"{name}: ORT left the weight's decoding unfolded: {sorted(ops)}")
    check(ops & {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"},
          f"{name}: ORT did not fuse the int8 product: {sorted(ops)}")
    # The decoded weight (and bias): the fp32 form on the identity and on zeros.
    fp32 = session(fp32_form, library)
    def rows_of(x):  # one input vector per row (MatMul: S = 5 copies of it)
        x = x.astype(np.float32)
        if kind == "gemm":
            return fp32.run(None, {"x": x})[0]
        return fp32.run(None, {"x": np.repeat(x[:, None, :], 5, axis=1)})[0][:, 0, :]
    bias = rows_of(np.zeros((1, k)))[0]
    w = rows_of(np.eye(k)) - bias
    int8 = session(int8_form, library)
    for batch in (1, 3, 64):
        x = rng.standard_normal((batch, 5, k) if kind == "matmul" else (batch, k))
        x = x.astype(np.float32)
        reference = fp32.run(None, {"x": x})[0]
        got = int8.run(None, {"x": x})[0]
        if ort_int8_is_exact():
            within_bound(f"{name} batch {batch}: the int8 product", got, reference,
                         np.broadcast_to(int8_bound(x, w), got.shape))
        elif batch == 1:
            print(f"note: {name}: ORT's int8 product not checked against its bound: this CPU "
                  "has no VNNI, and ORT's u8 x s8 kernel saturates pairs of products in int16")
        # qsl-run: float activations on qsl's kernels, as the fp32 form runs in ORT.
        ran = qsl_run(run_tool, work, name, int8_form, x).reshape(reference.shape)
        scale = max(1.0, float(np.abs(reference).max()))
        difference = float(np.abs(ran - reference).max())
        check(difference <= 1e-4 * scale, f"{name} batch {batch}: qsl-run differs from the fp32 "
                                          f"form by {difference}")


def int8_rows_bound(x, w):
    """|8-bit product - fp32 product| per output for --int8-rows (per-vector and per-row
    symmetric grids, qsl/cpu.hpp): x = sx qx + ex and w = sw qw + ew with |ex| <= sx / 2 and
    |ew| <= sw / 2 (and a few ulps of the scaled values before rounding: 0.501), so
    |x w - sx sw qx qw| <= |ex| |w| + sx |qx| |ew| <= 0.501 (sx sum |W| + sw sum (|x| + sx)),
    plus the float rounding of the sum's conversion, the two scalings and both fp32 sums."""
    sx = np.abs(x).max(axis=-1, keepdims=True) / 127
    sw = np.abs(w).max(axis=0) / 127
    abs_x = np.abs(x).sum(axis=-1, keepdims=True) + sx * x.shape[-1]
    rounding = 1e-5 * (np.abs(x) @ np.abs(w))
    return 0.501 * (sx * np.abs(w).sum(axis=0) + sw * abs_x) + rounding + 1e-6


def small_batch_bound(x, w, bits):
    """|encoded product - fp32 product| per output for small_batch_bits (each vector on its
    own grid of 2^bits levels from its minimum, qsl/activation_code.hpp): |x^ - x| <= step / 2
    (0.501: the rounding of (x - min) / step), so |x^ w - x w| <= 0.501 step sum |W|, plus the
    float steps' rounding, relative to the levels' and the minimum's products."""
    lo, hi = x.min(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
    step = (hi - lo) / (2 ** bits - 1)
    rounding = 1e-5 * ((np.abs(x) + (hi - lo) + np.abs(lo)) @ np.abs(w))
    return 0.501 * step * np.abs(w).sum(axis=0) + rounding + 1e-6


def int8_rows_case(library, compress_tool, run_tool, work, kind, k, n, options,
                   small_batch_bits=None):
    """qsl-compress --int8-rows 4: the fused node takes 8-bit activations from 4 rows per call
    on, within int8_rows_bound of the fp32 form there; below, with --small-batch-bits (8 by
    default) each vector is encoded with that many bits on CPUs with byte tables (within
    small_batch_bound, and not the float result), else (and with 0) the float result within
    float rounding; qsl-run's results equal ORT's bit for bit wherever ORT's arithmetic is
    qsl's (the 8-bit products and the encoded small batches)."""
    rng = np.random.default_rng(k * 7 + n)
    extra = [] if small_batch_bits is None else ["--small-batch-bits", str(small_batch_bits)]
    bits = 8 if small_batch_bits is None else small_batch_bits
    name = f"{kind}_{k}x{n}_int8rows_{'_'.join(options + extra)}"
    fp32_form, int8_form, runs = two_forms(compress_tool, work, name, one_layer(kind, k, n, rng),
                                           options, ["--int8-rows", "4"] + extra)
    below = f"; below, {bits}-bit where the CPU has byte tables" if bits else ""
    check(runs == [f"QuantizedMatMul (8-bit activations from 4 rows per call{below})"],
          f"{name}: runs as {runs}")
    encoded = encodes_small_batches(bits)
    fp32, int8 = session(fp32_form, library), session(int8_form, library)
    for batch in (1, 3, 64):  # Gemm: 1, 3, 64 rows per call; MatMul: 5, 15, 320
        x = rng.standard_normal((batch, 5, k) if kind == "matmul" else (batch, k))
        x[0] *= 100  # vectors of other magnitudes: each has a grid of its own
        x = x.astype(np.float32)
        reference = fp32.run(None, {"x": x})[0]
        got = int8.run(None, {"x": x})[0]
        rows = x.size // k
        scale = max(1.0, float(np.abs(reference).max()))
        w = None  # the decoded weight, from the fp32 form on the identity and on zeros
        ones = np.eye(k, dtype=np.float32)
        if kind == "gemm":
            bias = fp32.run(None, {"x": np.zeros((1, k), np.float32)})[0][0]
            w = fp32.run(None, {"x": ones})[0] - bias
        else:
            w = fp32.run(None, {"x": np.repeat(ones[:, None, :], 5, axis=1)})[0][:, 0, :]
        if rows < 4 and encoded:
            within_bound(f"{name} batch {batch}: {rows} rows, {bits}-bit activations", got,
                         reference, small_batch_bound(x, w, bits))
            # (one input: min = max, encoded exactly)
            check(k == 1 or not np.array_equal(got, reference),
                  f"{name} batch {batch}: {rows} rows gave the float result, not the encoded one")
        elif rows < 4:
            difference = float(np.abs(got - reference).max())
            check(difference <= 1e-4 * scale, f"{name} batch {batch}: {rows} rows (float "
                                              f"activations) differ from the fp32 form by {difference}")
        else:
            within_bound(f"{name} batch {batch}: 8-bit activations", got, reference,
                         int8_rows_bound(x, w))
        ran = qsl_run(run_tool, work, name, int8_form, x).reshape(reference.shape)
        if rows >= 4 or encoded:
            check(np.array_equal(ran, got), f"{name} batch {batch}: qsl-run's 8-bit products "
                                            f"differ from ORT's by {np.abs(ran - got).max()}")
        else:
            check(float(np.abs(ran - got).max()) <= 1e-4 * scale,
                  f"{name} batch {batch}: qsl-run differs from ORT")


def main(library, compress_tool, run_tool, work):
    ort.set_default_logger_severity(3)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    for kind, k, n in (("matmul", 64, 63), ("matmul", 65, 1), ("matmul", 130, 97),
                       ("gemm", 63, 64), ("gemm", 127, 37), ("gemm", 1, 5)):
        case(library, compress_tool, run_tool, work, kind, k, n, ["--bits", "2", "--group", "32"])
    case(library, compress_tool, run_tool, work, "gemm", 127, 37,
         ["--bits", "3", "--basis", "ternary", "--group", "0"])
    # float16 coefficients: Cast to float before the weight side's scaling.
    case(library, compress_tool, run_tool, work, "matmul", 130, 97,
         ["--bits", "2", "--group", "32", "--coefficients", "f16"])
    for kind, k, n in (("matmul", 64, 63), ("gemm", 65, 33), ("gemm", 1, 5)):
        int8_rows_case(library, compress_tool, run_tool, work, kind, k, n,
                       ["--bits", "2", "--group", "32"])
    int8_rows_case(library, compress_tool, run_tool, work, "matmul", 130, 97,
                   ["--bits", "3", "--basis", "ternary", "--group", "0"])
    # Float activations below --int8-rows, and fewer bits than 8 (byte tables from 2 bits on).
    int8_rows_case(library, compress_tool, run_tool, work, "gemm", 65, 33,
                   ["--bits", "2", "--group", "32"], small_batch_bits=0)
    int8_rows_case(library, compress_tool, run_tool, work, "gemm", 127, 37,
                   ["--bits", "2", "--group", "32"], small_batch_bits=6)
    print(f"{failures()} failures")
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
