#!/usr/bin/env python3
"""Issue 16's table per model, one harness, same run: what each way of compressing costs in size
and accuracy, how long it takes and how much memory.

    python3 bench/calibrated_compression.py LIBQSL_ONNXRUNTIME QSL_COMPRESS WORK_DIR \\
        [--models bundled,magika,crnn] [--calib-count 1024] [--layers-alone]

Rows: ORT fp32; ORT int8 `quantize_dynamic`; ORT MatMulNBits 4-bit and 2-bit (block 128,
symmetric, accuracy_level 4; RTN, the quantizer's default: its offline alternatives, HQQ and
GPTQ, are 4-bit only or need data in its own format); qsl data-free at 2, 3, 4 bits (groups of
128); qsl calibrated at 2 and 3 bits, and at 2 bits with `--sequential` (one group per layer);
qsl `--budget` 1.5, 2 and 2.5 with float16 coefficients (`--coefficients f16`; calibrated in
ONNX Runtime, so each layer weighed by its measured output change, `--sensitivity-samples` 64).
qsl files run
in ORT with libqsl_onnxruntime.so, qsl-compress's defaults otherwise (qsl format, 8-bit
activations from 16 rows per call).

Columns: file size (and % of fp32); stored bits per weight of the compressed weights (qsl: the
report's, planes and coefficients; ORT's formats: what their tensors hold per weight, scales
included, counted from the file); task accuracy on held-apart test data; compression time
(wall clock) and peak resident memory of the process that compressed (a fresh child each,
measured by GNU time).

Models and data:
* `bundled` (models/fashion_mnist_cnn.onnx): calibration on the first N Fashion-MNIST training
  images, top-1 accuracy on all 10,000 test images (Debian's dataset-fashion-mnist);
* `magika` (tools/fetch-test-models.sh): calibration on N files of this machine, accuracy =
  agreement with the fp32 model's label on 1,000 other files (magika's own labels are its
  fp32 model's; no labelled set ships with it);
* `crnn` (captcha-whisperer's CRNN: ResNet-style convolutions and a bidirectional LSTM unrolled
  into Gemm nodes): captchas drawn by the PyPI `captcha` package (BSD-3-Clause; `pip install
  captcha`; its `secrets` draws seeded here, so every run draws the same images) from random
  strings of 4-6 digits and capital letters, calibration on N of them,
  accuracy = the whole string read right (greedy CTC decoding) on 1,000 others. The model was
  trained on another captcha style, so fp32 itself reads about half of them; what the table
  compares is how much of that each compression keeps, on the same images.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnxruntime_compare as peers  # noqa: E402  (magika's features, the file sample)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = "/usr/share/datasets/fashion-mnist"


def child_cost(command):
    """(seconds, peak resident MiB) of a fresh child running `command`, from GNU time."""
    r = subprocess.run(["/usr/bin/time", "-f", "qsl-bench %e %M"] + command, capture_output=True,
                       text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({r.returncode}):\n{r.stderr}")
    line = [l for l in r.stderr.splitlines() if l.startswith("qsl-bench ")][-1]
    seconds, kib = line.split()[1:3]
    return float(seconds), int(kib) / 1024.0


ORT_QUANTIZE = r"""
import sys, onnx
kind, src, dst = sys.argv[1:4]
if kind == "int8":
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
else:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    q = MatMulNBitsQuantizer(onnx.load(src), bits=int(kind), block_size=128, is_symmetric=True,
                             accuracy_level=4)
    q.process()
    q.model.save_model_to_file(dst, use_external_data_format=False)
"""


def weight_count(path):
    """Weights of the fp32 model's Gemm / MatMul / Conv / Gather constants (what is compressed)."""
    m = onnx.load(path)
    init = {t.name: t for t in m.graph.initializer}
    seen, total = set(), 0
    for n in m.graph.node:
        slots = {"Gemm": [1], "MatMul": [0, 1], "Conv": [1], "Gather": [0]}.get(n.op_type, [])
        for i in slots:
            if i < len(n.input) and n.input[i] in init and n.input[i] not in seen:
                t = init[n.input[i]]
                if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 2:
                    seen.add(n.input[i])
                    total += int(np.prod(t.dims))
    return total


def bundled_data(count):
    train = peers.idx(os.path.join(FASHION, "train-images-idx3-ubyte.gz"))
    test = peers.idx(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"))
    labels = peers.idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))
    scale = lambda a: (a.astype(np.float32) / 255.0)[:, None]
    return {"input": scale(train[:count])}, {"input": scale(test)}, labels.astype(np.int64)


def magika_data(count):
    rng = np.random.default_rng(16)
    files = peers.sample_files(count + 1000, rng)
    return ({"bytes": peers.magika_features(files[:count])},
            {"bytes": peers.magika_features(files[count:])}, None)


SEQUENTIAL_GROUPS = {"crnn": 4}

CAPTCHA_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # the model's classes; 36 = CTC blank


def captcha_data(count):
    """(calibration, test, truth): captchas of random strings, as the model reads them (BGR,
    3 x 60 x 160, values 0..255, bilinear resize: captcha-whisperer's own preprocessing)."""
    try:
        import captcha.image
        from captcha.image import ImageCaptcha
    except ImportError:
        sys.exit("crnn: the captcha images come from the PyPI package `captcha`: pip install captcha")
    from PIL import Image
    import random

    class SeededSecrets:  # the package draws its fonts, noise and warps from `secrets`: seeded
        def __init__(self, seed):  # here, so that every run draws the same images
            self.r = random.Random(seed)

        def randbelow(self, n):
            return self.r.randrange(n)

        def randbits(self, k):
            return self.r.getrandbits(k)

        def choice(self, seq):
            return self.r.choice(seq)

    captcha.image.secrets = SeededSecrets(16)
    random.seed(16)
    rng = np.random.default_rng(16)
    draw = ImageCaptcha(width=200, height=70)
    images, texts = [], []
    for _ in range(count + 1000):
        text = "".join(rng.choice(list(CAPTCHA_ALPHABET), rng.integers(4, 7)))
        image = draw.generate_image(text).convert("RGB").resize((160, 60), Image.BILINEAR)
        images.append(np.asarray(image, np.float32)[:, :, ::-1].transpose(2, 0, 1))
        texts.append(text)
    images = np.ascontiguousarray(np.stack(images))
    return {"image": images[:count]}, {"image": images[count:]}, np.array(texts[count:])


def ctc_strings(logits):
    """Greedy CTC decoding of (time, batch, classes) logits: a string per batch entry."""
    best = logits.argmax(-1).T
    out = []
    for row in best:
        kept = [c for i, c in enumerate(row) if c != 36 and (i == 0 or c != row[i - 1])]
        out.append("".join(CAPTCHA_ALPHABET[c] for c in kept))
    return np.array(out)


def predictions(path, library, feeds, batch=64):
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    if library:
        options.register_custom_ops_library(library)
    s = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    key = next(iter(feeds))
    n = len(feeds[key])
    out = []
    for i in range(0, n, batch):
        y = s.run(None, {names[0]: feeds[key][i:i + batch]})[0]
        out.append(ctc_strings(y) if key == "image" and y.ndim == 3 else y.argmax(-1))
    return np.concatenate(out)


def run_model(name, a):
    source = (os.path.join(ROOT, "models", "fashion_mnist_cnn.onnx") if name == "bundled"
              else os.path.join(ROOT, ".deps", "models", peers.REAL[name]))
    if not os.path.exists(source):
        print(f"{name}: {source} is missing (tools/fetch-test-models.sh)")
        return
    work = os.path.join(a.work, name)
    os.makedirs(work, exist_ok=True)
    data = {"bundled": bundled_data, "magika": magika_data, "crnn": captcha_data}[name]
    calib, test, labels = data(a.calib_count)
    input_name = onnx.load(source).graph.input[0].name
    calib_path = os.path.join(work, "calib.npz")
    np.savez(calib_path, **{input_name: next(iter(calib.values()))})
    test = {input_name: next(iter(test.values()))}
    weights = weight_count(source)
    reference = predictions(source, None, test)
    truth = labels if labels is not None else reference

    rows = []

    def add(label, path, library, cost, bits):
        pred = predictions(path, library, test)
        rows.append((label, os.path.getsize(path), bits, float((pred == truth).mean()), cost))

    add("ORT fp32", source, None, None, 32.0)
    fp32_bytes = os.path.getsize(source)
    for kind, label in [("int8", "ORT int8 quantize_dynamic"), ("4", "ORT MatMulNBits 4-bit"),
                        ("2", "ORT MatMulNBits 2-bit")]:
        path = os.path.join(work, f"ort_{kind}.onnx")
        cost = child_cost([sys.executable, "-c", ORT_QUANTIZE, kind, source, path])
        # What the format holds per weight: the file's change, over the weights it holds.
        bits = 32.0 - 8.0 * (fp32_bytes - os.path.getsize(path)) / weights
        add(label, path, None, cost, bits)
    calib_args = ["--calib", calib_path]
    qsl_rows = [(f"qsl {b}-bit data-free", ["--bits", str(b)]) for b in (2, 3, 4)]
    qsl_rows += [(f"qsl {b}-bit calibrated", ["--bits", str(b)] + calib_args) for b in (2, 3)]
    # One group per layer (the tool clamps the count): GPTQ's sequential mode; the CRNN's 29
    # layers in 4 groups (each group one more calibration run: 29 would take over an hour).
    groups = SEQUENTIAL_GROUPS.get(name, 64)
    qsl_rows += [(f"qsl 2-bit calibrated --sequential {groups}",
                  ["--bits", "2", "--sequential", str(groups)] + calib_args)]
    # The budgets with float16 coefficients: the bits they save go to planes and groups.
    qsl_rows += [(f"qsl --budget {b} calibrated, f16 coefficients",
                  ["--budget", str(b), "--coefficients", "f16"] + calib_args)
                 for b in ("1.5", "2", "2.5")]
    if a.layers_alone:  # only what the per-layer rows need: fp32 and the layers' list
        qsl_rows = qsl_rows[:1]
    for label, extra in qsl_rows:
        path = os.path.join(work, label.replace(" ", "_").replace("-", "") + ".onnx")
        report = path + ".json"
        cost = child_cost([a.qsl_compress, source, "-o", path, "--group", "128", "-q", "--force",
                           "--json", report] + extra)
        with open(report) as f:
            bits = json.load(f)["totals"]["bits_per_weight"]
        add(label, path, a.library, cost, bits)

    if a.layers_alone:  # each compressed layer alone at 2/3/4 bits data-free, the rest fp32
        with open(os.path.join(work, "qsl_2bit_datafree.onnx.json")) as f:
            layers = [l["node"] for l in json.load(f)["layers"] if l["compressed"]]
        for node in layers:
            for b in (2, 3, 4):
                path = os.path.join(work, f"alone_{len(rows)}.onnx")
                skips = [x for other in layers if other != node for x in ("--skip", other)]
                cost = child_cost([a.qsl_compress, source, "-o", path, "--group", "128", "-q",
                                   "--force", "--bits", str(b), "--json", path + ".json"] + skips)
                with open(path + ".json") as f:
                    bits = json.load(f)["totals"]["bits_per_weight"]
                add(f"{node} alone, {b}-bit data-free", path, a.library, cost, bits)

    metric = ("strings read right" if name == "crnn" else
              "top-1" if labels is not None else "agreement with fp32")
    print(f"\n### {name}: {weights:,} weights; {metric} on {len(truth):,} held-apart samples; "
          f"calibration: {a.calib_count} samples\n")
    print(f"| variant | file | % of fp32 | bits/weight | {metric} | vs fp32 | compression time "
          "| compression peak |")
    print("|---|---|---|---|---|---|---|---|")
    base = rows[0][3]
    for label, size, bits, acc, cost in rows:
        time_text = "-" if cost is None else f"{cost[0]:.1f} s"
        peak_text = "-" if cost is None else f"{cost[1]:.0f} MiB"
        print(f"| {label} | {size / 2**20:.2f} MiB | {100 * size / fp32_bytes:.1f}% | {bits:.2f} "
              f"| {100 * acc:.2f}% | {100 * (acc - base):+.2f} | {time_text} | {peak_text} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("library")
    ap.add_argument("qsl_compress")
    ap.add_argument("work")
    ap.add_argument("--models", default="bundled,magika")
    ap.add_argument("--calib-count", type=int, default=1024)
    ap.add_argument("--layers-alone", action="store_true",
                    help="instead of the calibrated rows: each layer alone at 2/3/4 bits "
                         "data-free (the others fp32), where the accuracy goes")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    print(f"ONNX Runtime {ort.__version__}, {os.cpu_count()} cores")
    for name in a.models.split(","):
        run_model(name, a)


if __name__ == "__main__":
    main()
