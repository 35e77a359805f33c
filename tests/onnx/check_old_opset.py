#!/usr/bin/env python3
"""A model exported at opset 9 compresses to the standard format (converted to opset 11 by ONNX's
version converter, which the report says), ONNX Runtime runs that file unchanged, and its outputs
are the qsl format's (run by qsl-run) within float rounding: both decode the same codes. A model
the converter cannot convert is refused with exit code 2 and a named error, writing nothing.

    python3 tests/onnx/check_old_opset.py QSL_COMPRESS QSL_RUN MODELS_DIR WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort


def compress(tool, model, out, fmt, work):
    report = os.path.join(work, os.path.basename(out) + ".json")
    # Float activations in the qsl format (--int8-rows 0): the arithmetic the standard format's
    # decoded weights define.
    subprocess.run([tool, model, "-o", out, "--format", fmt, "--bits", "2", "--group", "64",
                    "--min-weights", "100", "-q", "--json", report, "--int8-rows", "0"],
                   check=True,
                   stdout=subprocess.DEVNULL)
    with open(report) as f:
        return json.load(f)


def main(compress_tool, run_tool, models, work):
    shutil.rmtree(work, ignore_errors=True)  # fresh: the tool refuses to overwrite
    os.makedirs(work)
    source = os.path.join(models, "old_opset.onnx")
    assert onnx.load(source).opset_import[0].version == 9
    standard = os.path.join(work, "old_opset.standard.onnx")
    qsl = os.path.join(work, "old_opset.qsl.onnx")
    report = compress(compress_tool, source, standard, "standard", work)
    assert report["opset"] == {"before": 9, "after": 11}, report["opset"]
    assert [l["node"] for l in report["layers"] if l["compressed"]] == ["conv1", "fc1", "fc2"]
    report = compress(compress_tool, source, qsl, "qsl", work)
    assert report["opset"] == {"before": 9, "after": 9}, report["opset"]  # left as it was
    converted = onnx.load(standard)
    assert [o.version for o in converted.opset_import if o.domain in ("", "ai.onnx")] == [11]
    assert not any(n.domain for n in converted.graph.node), "standard operators only"

    x = np.load(os.path.join(models, "layers_input.npy"))
    ours = ort.InferenceSession(standard, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    dumped = os.path.join(work, "qsl_outputs.npy")
    subprocess.run([run_tool, qsl, "--npy", os.path.join(models, "layers_input.npy"),
                    "--dump-outputs", dumped], check=True, stdout=subprocess.DEVNULL)
    theirs = np.load(dumped)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = np.abs(theirs).max()
    error = np.abs(ours - theirs).max()
    print(f"opset 9 -> 11: standard format in ONNX Runtime vs qsl format in qsl-run: "
          f"max |difference| {error:.3g} (outputs up to {scale:.3g})")
    assert error <= 1e-4 * (1 + scale), error
    # The original fp32 model, for scale: compression changed the outputs far more than that.
    fp32 = ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(fp32 - theirs).max() > 10 * error

    refused = os.path.join(work, "pad.standard.onnx")
    r = subprocess.run([compress_tool, os.path.join(models, "pad_opset10.onnx"), "-o", refused,
                        "--format", "standard", "--min-weights", "100", "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "version converter" in r.stderr and "use the qsl format" in r.stderr, r.stderr
    assert not os.path.exists(refused)
    print("pad_opset10.onnx:", r.stderr.strip())


if __name__ == "__main__":
    main(*sys.argv[1:5])
