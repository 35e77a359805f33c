#!/usr/bin/env python3
"""The qsl format runs in ONNX Runtime with libqsl_onnxruntime.so: the same file gives qsl-run's
outputs, and the standard format's (decoding the same codes with standard operators in ORT),
within float tolerance. MatMul and Gemm layers are fused QuantizedMatMul nodes (the report says
which layers run how); layers with many rows per call (--native-rows) stay on ORT's own
operators, their weights decoded by standard operators that ORT folds into constants at load;
other convolutions and TWD layers are DecodeWeights / DecodeFactorized nodes.

    python3 tests/onnxruntime/check_qsl_format.py LIBQSL_ONNXRUNTIME QSL_COMPRESS QSL_RUN \\
        MODELS_DIR BUNDLED_MODEL WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import check, failures  # noqa: E402



def ort_run(path, x, library=None, threads=1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if library:
        options.register_custom_ops_library(library)
    s = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def compress(tool, source, out, fmt, options, work):
    # Float activations at every row count (--int8-rows 0): this file checks the float path
    # against the standard format; the 8-bit one, qsl-compress's default from 16 rows per call,
    # is checked against its bound in check_int8_products.py and check_real_models.py.
    report = out + ".json"
    pinned = [] if "--int8-rows" in options else ["--int8-rows", "0"]
    subprocess.run([tool, source, "-o", out, "--format", fmt, "-q", "--json", report] + pinned +
                   options, check=True, stdout=subprocess.DEVNULL)
    with open(report) as f:
        return json.load(f)


DECODER_OPS = {"BitShift", "MatMulInteger", "GatherElements"}


def folded_by_ort(path, library, work):
    """The op types left after ORT's basic optimizations (constant folding) of the session."""
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = os.path.join(work, os.path.basename(path) + ".optimized")
    ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}


def case(library, compress_tool, run_tool, name, source, x, options, work, fused_expected,
         standard_format=True, run_options=(), native_expected=(), convs_expected=(),
         twd_expected=(), thread_invariant=True, qsl_run=True):
    npy = os.path.join(work, name + "_x.npy")
    np.save(npy, x)
    qsl = os.path.join(work, name + ".qsl.onnx")
    standard = os.path.join(work, name + ".standard.onnx")
    report = compress(compress_tool, source, qsl, "qsl", options, work)
    if standard_format:
        compress(compress_tool, source, standard, "standard", options, work)
    if "--coefficients" in options:  # f16: every code's coefficients are FLOAT16 tensors
        for path in [qsl] + ([standard] if standard_format else []):
            types = {t.data_type for t in onnx.load(path).graph.initializer
                     if t.name.endswith("_coefficients")}
            check(types == {onnx.TensorProto.FLOAT16},
                  f"{name}: {os.path.basename(path)} holds coefficient tensors of types {types}")
    runs = {l["node"]: l.get("runs_as", "") for l in report["layers"] if l["compressed"]}
    fused = sorted(n for n, r in runs.items() if r.startswith("QuantizedMatMul"))
    check(fused == sorted(fused_expected), f"{name}: fused layers {fused}, expected "
                                           f"{sorted(fused_expected)} ({runs})")
    twd = sorted(n for n, r in runs.items() if r == "QuantizedTwd")
    check(twd == sorted(twd_expected), f"{name}: QuantizedTwd layers {twd}, expected "
                                       f"{sorted(twd_expected)} ({runs})")
    convs = sorted(n for n, r in runs.items() if r.startswith("QuantizedConv"))
    check(convs == sorted(convs_expected), f"{name}: QuantizedConv layers {convs}, expected "
                                           f"{sorted(convs_expected)} ({runs})")
    # Layers with many rows per call stay on ORT's operator; ORT folds their decoding away.
    native = sorted(n for n, r in runs.items() if "on the runtime's kernel" in r)
    check(native == sorted(native_expected), f"{name}: layers on ORT's kernel {native}, "
                                             f"expected {sorted(native_expected)} ({runs})")
    if native:
        left = folded_by_ort(qsl, library, work) & DECODER_OPS
        check(not left, f"{name}: ORT did not fold the decoding of {native}: {left} remain")
    in_ort = ort_run(qsl, x, library)
    in_ort2 = ort_run(qsl, x, library, threads=2)
    dumped = os.path.join(work, name + "_qsl_run.npy")
    if qsl_run:
        subprocess.run([run_tool, qsl, "--npy", npy, "--dump-outputs", dumped, *run_options],
                       check=True, stdout=subprocess.DEVNULL)
        in_qsl_run = np.load(dumped)
    else:  # an operator qsl-run lacks (MatMul with a weight on the left): it must say so
        r = subprocess.run([run_tool, qsl, "--npy", npy], capture_output=True, text=True)
        check(r.returncode == 2 and "is not supported by qsl-run" in r.stderr,
              f"{name}: qsl-run exit code {r.returncode}: {r.stderr.strip()[-200:]}")
        in_qsl_run = None
    # TWD layers have no standard format: then qsl-run is the reference.
    reference = ort_run(standard, x) if standard_format else in_qsl_run.reshape(in_ort.shape)
    against = "the standard format in ORT" if standard_format else "qsl-run"
    scale = max(1.0, float(np.abs(reference).max()))
    for label, y in (("ORT + qsl", in_ort), ("ORT + qsl, 2 threads", in_ort2),
                     ("qsl-run", in_qsl_run)):
        if y is None:
            continue
        error = float(np.abs(y.reshape(reference.shape) - reference).max())
        print(f"{name} {' '.join(options)}: {label} vs {against}: max |difference| "
              f"{error:.3g} (outputs up to {scale:.3g})")
        check(error <= 1e-4 * scale, f"{name}: {label} differs by {error}")
    # qsl's kernels give the same bits on any thread count (ORT's Gemm on a run-time weight,
    # as DecodeWeights feeds it, need not).
    if thread_invariant:
        check(np.array_equal(in_ort, in_ort2), f"{name}: 1 and 2 threads differ in ORT")


def decoder(library, compress_tool, run_tool, models, work):
    """A ViT-like decoder: its position embedding's Resize reads the input's static height and
    width at run time (made constants: ORT folds the Resize at load, and the batch stays
    free), then transposed convolutions: QuantizedConvTranspose on 8-bit activations where one
    group and the sizes allow, ORT's ConvTranspose on the decoded weight elsewhere."""
    source = os.path.join(models, "decoder.onnx")
    xd = np.random.default_rng(24).standard_normal((3, 64, 6, 6)).astype(np.float32)
    # Float activations (--int8-rows 0): every ConvTranspose on ORT's kernel, the same outputs
    # as the standard format and qsl-run's refusal of the Resize by name.
    case(library, compress_tool, run_tool, "decoder", source, xd,
         ["--bits", "2", "--min-weights", "100"], work, [], qsl_run=False,
         native_expected=["ct1", "ct2", "ct3"], thread_invariant=False)
    qsl = os.path.join(work, "decoder.qsl.onnx")
    g = onnx.load(qsl).graph
    read = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    unread = ([t.name for t in g.initializer if t.name not in read] +
              [n.output[0] for n in g.node if n.output[0] not in read])
    check(not unread, f"decoder: the folding left values nothing reads (ORT warns): {unread}")
    left = folded_by_ort(qsl, library, work)
    check("Resize" not in left and "Shape" not in left,
          f"decoder: ORT did not fold the position embedding's Resize: {sorted(left)}")
    # The default: 8-bit activations in the two one-group layers, within the activations'
    # rounding of the float file (each pixel's channels on a grid of 255 levels of its largest
    # magnitude: a relative error of a few 1/255 per product; measured 0.8% here).
    eight = os.path.join(work, "decoder.int8.onnx")
    report = compress(compress_tool, source, eight, "qsl",
                      ["--bits", "2", "--min-weights", "100", "--int8-rows", "16"], work)
    check(report["shape_reads_folded"] == 2,
          f"decoder: {report['shape_reads_folded']} shape reads folded, expected 2 (Gather, Slice)")
    runs = {l["node"]: l.get("runs_as", "") for l in report["layers"] if l["compressed"]}
    check(runs["ct1"].startswith("QuantizedConvTranspose") and
          runs["ct2"].startswith("QuantizedConvTranspose") and
          "grouped transposed convolution" in runs["ct3"], f"decoder: runs as {runs}")
    reference = ort_run(qsl, xd, library)
    for batch in (3, 1):
        y = ort_run(eight, xd[:batch], library)
        y2 = ort_run(eight, xd[:batch], library, threads=2)
        error = float(np.abs(y - reference[:batch]).max() / np.abs(reference).max())
        print(f"decoder, 8-bit, batch {batch}: max |difference| {error:.3g} of the largest output")
        check(error <= 0.02, f"decoder: 8-bit activations move the output by {error:.3g}")
        check(np.array_equal(y, y2), "decoder: 1 and 2 threads differ on 8-bit activations")
    unfolded = os.path.join(work, "decoder.unfolded.onnx")
    report = compress(compress_tool, source, unfolded, "qsl",
                      ["--bits", "2", "--min-weights", "100", "--no-fold-shapes"], work)
    check(report["shape_reads_folded"] == 0 and
          "Resize" in {n.op_type for n in onnx.load(unfolded).graph.node},
          "decoder: --no-fold-shapes folded shape reads")
    check(np.array_equal(ort_run(unfolded, xd, library), reference),
          "decoder: the folded and unfolded files differ")


def main(library, compress_tool, run_tool, models, bundled, work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    x = np.load(os.path.join(models, "layers_input.npy"))
    # layers.onnx: Conv (a Constant weight), Gemm transB=1 with bias, MatMul, Gemm transB=0.
    # conv1 has 36 output pixels per image: it stays on ORT's Conv (--native-rows 16).
    case(library, compress_tool, run_tool, "layers", os.path.join(models, "layers.onnx"), x,
         ["--bits", "2", "--group", "64", "--min-weights", "100"], work,
         ["fc1", "mm", "fc2", "tiny"], native_expected=["conv1"])
    case(library, compress_tool, run_tool, "layers_ternary", os.path.join(models, "layers.onnx"),
         x, ["--bits", "2", "--group", "0", "--basis", "ternary", "--min-weights", "100"], work,
         ["fc1", "mm", "fc2", "tiny"], native_expected=["conv1"])
    # Half-precision coefficients: the fused layers read them as float16 inputs, the Conv on
    # ORT's operator through a Cast in its decoder; then a ternary code, and a QuantizedConv.
    case(library, compress_tool, run_tool, "layers_f16", os.path.join(models, "layers.onnx"), x,
         ["--bits", "2", "--group", "64", "--min-weights", "100", "--coefficients", "f16"], work,
         ["fc1", "mm", "fc2", "tiny"], native_expected=["conv1"])
    case(library, compress_tool, run_tool, "layers_ternary_f16",
         os.path.join(models, "layers.onnx"), x,
         ["--bits", "3", "--group", "32", "--basis", "ternary", "--min-weights", "100",
          "--native-rows", "0", "--coefficients", "f16"], work,
         ["fc1", "mm", "fc2", "tiny"], convs_expected=["conv1"])
    # Every layer on ORT's operators (Gemm with transB 1 and 0 and a bias, MatMul, Conv), and
    # none (the Conv a DecodeWeights node).
    case(library, compress_tool, run_tool, "layers_native", os.path.join(models, "layers.onnx"),
         x, ["--bits", "3", "--group", "32", "--min-weights", "100", "--native-rows", "1"], work,
         [], native_expected=["conv1", "fc1", "mm", "fc2", "tiny"])
    case(library, compress_tool, run_tool, "layers_no_native",
         os.path.join(models, "layers.onnx"), x,
         ["--bits", "2", "--group", "64", "--min-weights", "100", "--native-rows", "0"], work,
         ["fc1", "mm", "fc2", "tiny"], convs_expected=["conv1"])
    # MatMul -> Add(bias) (opset 9): the Add folded into the fused node's bias input, so ORT,
    # qsl-run and the standard format (which keeps the Add) agree on the folded file.
    case(library, compress_tool, run_tool, "matmul_add", os.path.join(models, "old_opset.onnx"),
         x, ["--bits", "2", "--group", "64", "--min-weights", "100"], work, ["fc1", "fc2"],
         convs_expected=["conv1"])
    folded = onnx.load(os.path.join(work, "matmul_add.qsl.onnx")).graph
    fc1 = [n for n in folded.node if n.name == "fc1"]
    check(len(fc1) == 1 and fc1[0].op_type == "QuantizedMatMul" and len(fc1[0].input) == 5 and
          fc1[0].input[4] == "fc1_b" and list(fc1[0].output) == ["a1"],
          f"matmul_add: fc1 is not one QuantizedMatMul with the bias folded in: {fc1}")
    check(not any(n.op_type == "Add" for n in folded.node),
          "matmul_add: an Add is left after the fused fc1")
    # Convolutions of 128 outputs along one axis take 8-bit activations quantized straight from
    # the image (over the padded image at stride 1, by output positions at stride 2): ORT runs
    # what qsl-run runs on the float patches, and 1 and 2 threads give the same bits.
    xw = np.random.default_rng(22).standard_normal((3, 16, 9, 9)).astype(np.float32)
    case(library, compress_tool, run_tool, "wide_conv", os.path.join(models, "wide_conv.onnx"),
         xw, ["--bits", "2", "--group", "64", "--int8-rows", "16"], work, [],
         standard_format=False, convs_expected=["wide1", "wide2"])
    report = compress(compress_tool, os.path.join(models, "wide_conv.onnx"),
                      os.path.join(work, "wide_conv.again.onnx"), "qsl",
                      ["--bits", "2", "--group", "64", "--int8-rows", "16"], work)
    runs = [l.get("runs_as", "") for l in report["layers"] if l["compressed"]]
    check(all("8-bit activations" in r for r in runs), f"wide_conv: runs as {runs}")
    decoder(library, compress_tool, run_tool, models, work)
    # Gemm with transA, alpha, beta and a computed C (nodes around the fused one), and one
    # weight read by three nodes (three QuantizedMatMul nodes on one code, packed once).
    xg = np.load(os.path.join(models, "gemm_variants_input.npy"))
    case(library, compress_tool, run_tool, "gemm_variants",
         os.path.join(models, "gemm_variants.onnx"), xg,
         ["--bits", "3", "--group", "16", "--min-weights", "100"], work,
         ["g_trans_a", "g_beta", "step1", "MatMul#2"])
    # MatMul(W, X): the weight on the left (Transposes around the fused node, which qsl-run runs
    # too); with --native-rows 0 --no-fuse, a DecodeWeights feeding MatMul(W, X), which qsl-run
    # refuses by name (its MatMul takes a constant right operand only).
    xl = np.load(os.path.join(models, "left_weight_input.npy"))
    case(library, compress_tool, run_tool, "left_weight", os.path.join(models, "left_weight.onnx"),
         xl, ["--bits", "2", "--group", "8", "--min-weights", "100"], work, ["left1", "left2"])
    case(library, compress_tool, run_tool, "left_weight_unfused",
         os.path.join(models, "left_weight.onnx"), xl,
         ["--bits", "2", "--group", "8", "--min-weights", "100", "--no-fuse", "--native-rows", "0"],
         work, [], qsl_run=False, thread_invariant=False)
    # TWD on fc1 (a fused QuantizedTwd) beside fused layers; then TWD with fusion off
    # (DecodeFactorized + Gemm), and TWD on every layer, with calibrated 4-bit activations.
    case(library, compress_tool, run_tool, "layers_twd", os.path.join(models, "layers.onnx"), x,
         ["--bits", "3", "--group", "128", "--min-weights", "100", "--twd", "fc1", "--twd-k",
          "24"], work, ["mm", "fc2", "tiny"], standard_format=False, native_expected=["conv1"],
         twd_expected=["fc1"])
    case(library, compress_tool, run_tool, "layers_twd_unfused",
         os.path.join(models, "layers.onnx"), x,
         ["--bits", "3", "--group", "128", "--min-weights", "100", "--twd", "fc1", "--twd-k",
          "24", "--no-fuse"], work, [], standard_format=False, native_expected=["conv1"],
         thread_invariant=False)
    case(library, compress_tool, run_tool, "layers_twd_act4",
         os.path.join(models, "layers.onnx"), x,
         ["--min-weights", "100", "--scheme", "twd", "--twd-bits", "2", "--skip", "conv1",
          "--calib", os.path.join(models, "layers_input.npy"), "--activation-bits", "4"], work,
         [], standard_format=False, twd_expected=["fc1", "mm", "fc2", "tiny"],
         run_options=("--activation-bits", "4"))
    # Calibrated 4-bit activations in the fused layers (the file's mode): ORT runs what qsl-run
    # runs with --activation-bits 4, the same integer kernels on the same quantizers (the Conv,
    # a DecodeWeights layer in ORT, runs on float activations there: left out).
    case(library, compress_tool, run_tool, "layers_act4", os.path.join(models, "layers.onnx"), x,
         ["--bits", "2", "--group", "64", "--min-weights", "100", "--calib",
          os.path.join(models, "layers_input.npy"), "--activation-bits", "4", "--skip", "conv1"],
         work,
         ["fc1", "mm", "fc2", "tiny"], standard_format=False,
         run_options=("--activation-bits", "4"))
    # The bundled CNN on 16 test images (random pixels: what matters is agreement).
    images = np.random.default_rng(3).random((16, 1, 28, 28)).astype(np.float32)
    case(library, compress_tool, run_tool, "bundled", bundled, images,
         ["--bits", "2", "--group", "128"], work,
         ["/classifier/classifier.1/Gemm", "/classifier/classifier.4/Gemm"],
         native_expected=["/features/features.3/Conv"])
    # The same with every layer on qsl's operators (the convolution a QuantizedConv).
    case(library, compress_tool, run_tool, "bundled_qsl_operators", bundled, images,
         ["--bits", "2", "--group", "128", "--native-rows", "0"], work,
         ["/classifier/classifier.1/Gemm", "/classifier/classifier.4/Gemm"],
         convs_expected=["/features/features.3/Conv"])
    print(f"{failures()} failures")
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:7]))
