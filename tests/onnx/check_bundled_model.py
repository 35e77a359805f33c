#!/usr/bin/env python3
"""End to end on the bundled model: qsl-run on the uncompressed model matches ONNX Runtime's
logits within 1e-4 (relative), and a 2-bit compressed model keeps its accuracy.

    python3 tests/onnx/check_bundled_model.py QSL_RUN QSL_COMPRESS MODEL WORK_DIR [LIMIT]

Uses the first LIMIT (default 1000) Fashion-MNIST test images from Debian's
dataset-fashion-mnist.
"""
import gzip
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort

DATA = "/usr/share/datasets/fashion-mnist"
IMAGES = os.path.join(DATA, "t10k-images-idx3-ubyte.gz")
LABELS = os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def qsl_logits(qsl_run, model, limit, out):
    subprocess.run([qsl_run, model, "--images", IMAGES, "--labels", LABELS, "--limit", str(limit),
                    "--dump-outputs", out], check=True, capture_output=True, text=True)
    return np.load(out)


def main(qsl_run, qsl_compress, model, work, limit=1000):
    limit = int(limit)
    os.makedirs(work, exist_ok=True)
    ort.set_default_logger_severity(3)
    images = idx(IMAGES)[:limit].astype(np.float32)[:, None] / 255.0
    labels = idx(LABELS)[:limit]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: images})[0]
    got = qsl_logits(qsl_run, model, limit, os.path.join(work, "fp32.npy"))
    difference = np.max(np.abs(got - expected) / np.maximum(1.0, np.abs(expected)))
    fp32_accuracy = float((expected.argmax(1) == labels).mean())
    print(f"fp32: qsl-run vs ONNX Runtime, max relative difference {difference:.2g}; "
          f"accuracy {fp32_accuracy:.4f} (ORT) / {(got.argmax(1) == labels).mean():.4f} (qsl)")
    failures = difference > 1e-4
    compressed = os.path.join(work, "2bit.onnx")
    subprocess.run([qsl_compress, model, "-o", compressed, "--bits", "2", "--group", "128", "-q",
                    "--force"], check=True, capture_output=True)
    accuracy = float((qsl_logits(qsl_run, compressed, limit, os.path.join(work, "2bit.npy"))
                      .argmax(1) == labels).mean())
    print(f"2 bits, groups of 128: accuracy {accuracy:.4f} (fp32 {fp32_accuracy:.4f})")
    failures |= accuracy < fp32_accuracy - 0.03
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
