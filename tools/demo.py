#!/usr/bin/env python3
"""The demo (tools/demo.sh runs it after the build): compresses the bundled Fashion-MNIST model
at a few settings, runs each on the 10,000 test images with qsl-run, and prints one table:
setting, size (bytes and % of fp32), bits per weight of the compressed layers, top-1 accuracy
and its drop against fp32, latency per batch of 64 and per single image (the edge case), and
speedup against the fp32 model run by qsl-run on the same machine. When onnxruntime is installed, ONNX Runtime's fp32 and quantize_dynamic
int8 versions of the model run on the same data as reference rows.

    python3 tools/demo.py [--build build] [--limit N] [--json results.json]
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "/usr/share/datasets/fashion-mnist"
MODEL = os.path.join(ROOT, "models", "fashion_mnist_cnn.onnx")

CALIB = ["--calib", os.path.join(DATA, "train-images-idx3-ubyte.gz"), "--calib-count", "1024"]

# (label, qsl-compress options, qsl-run activation bits)
SETTINGS = [
    ("3 bits, groups of 128", ["--bits", "3", "--group", "128"], 0),
    ("2 bits, groups of 128", ["--bits", "2", "--group", "128"], 0),
    ("2 bits, g128, 8-bit activations", ["--bits", "2", "--group", "128"], 8),
    ("2 bits, one group per row", ["--bits", "2", "--group", "0"], 0),
    ("ternary 1 plane, g128", ["--bits", "1", "--group", "128", "--basis", "ternary"], 0),
    ("1 bit, g64, 4-bit first/last", ["--bits", "1", "--group", "64", "--edge-bits", "4"], 0),
    # Calibrated (issue 7): statistics of 1,024 *training* images (never the test set).
    ("2 bits/row, calibrated", ["--bits", "2", "--group", "0"] + CALIB, 0),
    ("2 bits/row, calibrated, 4-bit act.", ["--bits", "2", "--group", "0"] + CALIB, 4),
    ("TWD FC1 + 4-bit rest, calibrated", ["--twd", "/classifier/classifier.1/*", "--twd-bits",
                                          "1.44", "--bits", "4", "--group", "0"] + CALIB, 0),
]


def run(command):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"demo: {' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    return result


# Single-image latency is measured on the first images only: it needs no more to be stable.
SINGLE_IMAGES = 500


def qsl_run(build, model, limit, activation_bits, workdir, batch=64):
    report = os.path.join(workdir, "run.json")
    command = [os.path.join(build, "examples", "qsl-run"), model,
               "--images", os.path.join(DATA, "t10k-images-idx3-ubyte.gz"),
               "--labels", os.path.join(DATA, "t10k-labels-idx1-ubyte.gz"),
               "--batch", str(batch), "--json", report]
    if limit:
        command += ["--limit", str(limit)]
    if activation_bits:
        command += ["--activation-bits", str(activation_bits)]
    run(command)
    with open(report) as f:
        data = json.load(f)
    os.remove(report)
    return data


def single_image_ms(build, model, limit, activation_bits, workdir):
    count = min(limit, SINGLE_IMAGES) if limit else SINGLE_IMAGES
    return qsl_run(build, model, count, activation_bits, workdir, batch=1)["latency_ms_median"]


def median_ms(latencies):
    latencies = sorted(latencies)
    return latencies[len(latencies) // 2]


def onnxruntime_rows(limit, workdir):
    """fp32 and quantize_dynamic int8 in ONNX Runtime, on the same images, batch 64 (and 1)."""
    try:
        import numpy as np
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return []
    ort.set_default_logger_severity(3)

    def idx(name):
        with gzip.open(os.path.join(DATA, name)) as f:
            data = f.read()
        dims = data[3]
        shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
        return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)

    images = idx("t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    labels = idx("t10k-labels-idx1-ubyte.gz")
    if limit:
        images, labels = images[:limit], labels[:limit]
    int8 = os.path.join(workdir, "int8.onnx")
    quantize_dynamic(MODEL, int8, weight_type=QuantType.QInt8)
    rows = []
    for label, path in [("ONNX Runtime fp32", MODEL), ("ONNX Runtime int8 (quantize_dynamic)", int8)]:
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        correct, latencies = 0, []
        start = time.perf_counter()
        for i in range(0, len(images), 64):
            t = time.perf_counter()
            out = session.run(None, {name: images[i:i + 64]})[0]
            latencies.append((time.perf_counter() - t) * 1e3)
            correct += int((out.argmax(1) == labels[i:i + 64]).sum())
        seconds = time.perf_counter() - start
        single = []
        for i in range(min(len(images), SINGLE_IMAGES)):
            t = time.perf_counter()
            session.run(None, {name: images[i:i + 1]})
            single.append((time.perf_counter() - t) * 1e3)
        latencies.sort()
        rows.append({"setting": label, "bytes": os.path.getsize(path), "bits_per_weight": None,
                     "accuracy": correct / len(images),
                     "latency_ms_median": latencies[len(latencies) // 2],
                     "latency_ms_p90": latencies[int(0.9 * (len(latencies) - 1))],
                     "images_per_s": len(images) / seconds, "single_ms": median_ms(single)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--limit", type=int, default=0, help="first N test images (0: all)")
    parser.add_argument("--json", help="write the rows as JSON")
    args = parser.parse_args()
    compress = os.path.join(args.build, "examples", "qsl-compress")
    with tempfile.TemporaryDirectory() as work:
        print("fp32 model, run by qsl-run ...", flush=True)
        fp32 = qsl_run(args.build, MODEL, args.limit, 0, work)
        fp32["single_ms"] = single_image_ms(args.build, MODEL, args.limit, 0, work)
        fp32_bytes = os.path.getsize(MODEL)
        rows = [{"setting": "fp32 (qsl-run)", "bytes": fp32_bytes, "bits_per_weight": 32.0, **fp32}]
        for label, options, bits in SETTINGS:
            print(f"{label}: compressing and running ...", flush=True)
            out = os.path.join(work, "model.onnx")
            report = os.path.join(work, "compress.json")
            # Float activations (--int8-rows 0): the demo measures qsl's own kernels. The
            # default's 8-bit path is for ONNX Runtime's integer GEMM; qsl-run multiplies it
            # with a portable one (its own 8-bit kernels are issue 17).
            run([compress, MODEL, "-o", out, "-q", "--force", "--json", report,
                 "--int8-rows", "0"] + options)
            with open(report) as f:
                compressed = json.load(f)
            result = qsl_run(args.build, out, args.limit, bits, work)
            result["single_ms"] = single_image_ms(args.build, out, args.limit, bits, work)
            rows.append({"setting": label, "bytes": os.path.getsize(out),
                         "bits_per_weight": compressed["totals"]["bits_per_weight"], **result})
        print("ONNX Runtime references ...", flush=True)
        rows += onnxruntime_rows(args.limit, work)

    header = (f"{'setting':36} {'bytes':>10} {'% fp32':>7} {'bits/w':>6} {'top-1':>7} "
              f"{'drop':>6} {'ms/b64':>7} {'speedup':>7} {'ms/img':>7} {'speedup':>7}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        bits = f"{r['bits_per_weight']:.2f}" if r["bits_per_weight"] else "-"
        drop = 100 * (fp32["accuracy"] - r["accuracy"])
        speedup = fp32["latency_ms_median"] / r["latency_ms_median"]
        single = fp32["single_ms"] / r["single_ms"]
        print(f"{r['setting']:36} {r['bytes']:>10,} {100 * r['bytes'] / fp32_bytes:>6.1f}% {bits:>6} "
              f"{100 * r['accuracy']:>6.2f}% {drop:>+5.2f} {r['latency_ms_median']:>7.2f} "
              f"{speedup:>6.2f}x {r['single_ms']:>7.3f} {single:>6.2f}x")
    print(f"\n{fp32['inputs']} test images. bits/w: stored bits per weight of the compressed layers "
          "(coefficients included). ms/b64: median latency of a batch of 64; ms/img: median latency "
          f"of one image (first {SINGLE_IMAGES}); speedup: fp32 qsl-run's latency / this row's.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
