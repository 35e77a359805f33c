#!/usr/bin/env python3
"""qsl-compress reports a NaN or Inf weight of a layer it leaves as it is (below --min-weights,
or --skip) as a warning, in its table and in --json, and still writes the model; the same values
in a layer it compresses stay an error (exit code 2, nothing written).

    python3 tests/onnx/check_cli_warnings.py QSL_COMPRESS MODELS_DIR WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def with_value(model, name, index, value):
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            a = numpy_helper.to_array(t).copy()
            a.flat[index] = value
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(a, name))
    return model


def main(tool, models, work):
    shutil.rmtree(work, ignore_errors=True)  # fresh: the tool refuses to overwrite
    os.makedirs(work)
    model = onnx.load(os.path.join(models, "layers.onnx"))
    model = with_value(model, "tiny_w", 40 + 3, np.nan)  # tiny: 400 weights, below 420
    source = os.path.join(work, "nan_in_tiny.onnx")
    onnx.save(model, source)
    out, report = os.path.join(work, "out.onnx"), os.path.join(work, "out.json")
    r = subprocess.run([tool, source, "-o", out, "--min-weights", "420", "--json", report, "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "warning: weight 'tiny_w' has nan at row 1, col 3" in r.stdout, r.stdout
    with open(report) as f:
        layers = {l["node"]: l for l in json.load(f)["layers"]}
    assert "has nan at row 1, col 3" in layers["tiny"]["warning"], layers["tiny"]
    assert not layers["tiny"]["compressed"]
    assert "warning" not in layers["fc1"]
    assert os.path.exists(out)
    print("left as it is:", layers["tiny"]["warning"])

    refused = os.path.join(work, "refused.onnx")
    r = subprocess.run([tool, source, "-o", refused, "--min-weights", "100", "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "weight 'tiny_w' of node 'tiny': has nan at row 1, col 3" in r.stderr, r.stderr
    assert not os.path.exists(refused)
    print("compressed:", r.stderr.strip())


if __name__ == "__main__":
    main(*sys.argv[1:4])
