"""Compress a real pretrained model from a PyPI wheel with qsl's Python package, calibrated on
real data, run it in ONNX Runtime and compare it with fp32 (docs/python.md).

The model is magika 1.0.3's file-type classifier (Apache-2.0; tools/fetch-test-models.sh puts it
in .deps/models/magika.onnx). Its input is the first and last 1,024 bytes of a file; the
calibration and test files are files of this machine.

    python3 examples/python/compress_magika.py [--budget 2.0] [--samples 512]
"""
import argparse
import os
import pathlib

import numpy as np
import onnxruntime as ort

import qsl
import qsl.onnx

ROOT = pathlib.Path(__file__).resolve().parents[2]


def features(path):
    """magika's input for one file: first / last 1,024 bytes, whitespace stripped, padded (256)."""
    data = pathlib.Path(path).read_bytes()
    beg, end = data.lstrip()[:1024], data.rstrip()[-1024:]
    row = np.full(2048, 256, np.int32)
    row[:len(beg)] = np.frombuffer(beg, np.uint8)
    row[2048 - len(end):] = np.frombuffer(end, np.uint8)
    return row


def files_of_this_machine(count, seed):
    found = sorted(str(p) for root in ("/usr/share/doc", "/usr/include", "/etc")
                   for p in pathlib.Path(root).rglob("*")
                   if p.is_file() and not p.is_symlink() and p.stat().st_size >= 8)
    rng = np.random.default_rng(seed)
    return [found[i] for i in rng.choice(len(found), min(count, len(found)), replace=False)]


def labels(path, x, options=None):
    session = ort.InferenceSession(str(path), options or ort.SessionOptions(),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 64]})[0].argmax(axis=1)
                           for i in range(0, len(x), 64)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / ".deps/models/magika.onnx"))
    ap.add_argument("--output", default="/tmp/magika.qsl.onnx")
    ap.add_argument("--budget", type=float, default=2.0)
    ap.add_argument("--samples", type=int, default=512)
    a = ap.parse_args()
    files = files_of_this_machine(a.samples + 500, seed=16)
    calib = np.stack([features(f) for f in files[:a.samples]])
    test = np.stack([features(f) for f in files[a.samples:]])

    report = qsl.onnx.compress(a.model, a.output, budget=a.budget, calib={"bytes": calib},
                               force=True)
    for layer in report.layers:
        if layer["compressed"]:
            error = layer.get("relative_output_error", layer["relative_error"])
            print(f"  {layer['node']:<40} {layer['bits']} bits, relative error {error:.4f}")
    agree = np.mean(labels(a.output, test, qsl.onnx.session_options()) == labels(a.model, test))
    size, original = os.path.getsize(a.output), os.path.getsize(a.model)
    print(f"{a.output}: {size:,} bytes ({100 * size / original:.1f}% of fp32's {original:,}); "
          f"agrees with fp32 on {100 * agree:.1f}% of {len(test)} files")


if __name__ == "__main__":
    main()
