#!/usr/bin/env python3
"""The shape errors qsl's loader refuses (ONNX's strict shape inference) are ones ONNX Runtime
refuses too: each of these models of the bad-model corpus fails to load in ONNX Runtime, while
the valid test models load. (tests/onnx/check_bad_models.sh checks qsl's side.)

    python3 tests/onnx/check_ort_agrees.py CORPUS_DIR MODELS_DIR
"""
import os
import sys

import onnxruntime as ort

SHAPE_ERRORS = ["gemm_weight_rank3.onnx", "matmul_inner_mismatch.onnx"]
VALID = ["layers.onnx", "old_opset.onnx", "pad_opset10.onnx", "subgraph.onnx"]


def loads(path):
    try:
        ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return True, ""
    except Exception as e:  # ORT raises its own exception types
        return False, str(e).splitlines()[0]


def main(corpus, models):
    failures = 0
    for name in SHAPE_ERRORS:
        ok, message = loads(os.path.join(corpus, name))
        print(f"{name}: ONNX Runtime {'loads it' if ok else 'refuses it: ' + message}")
        failures += ok
    for name in VALID:
        ok, message = loads(os.path.join(models, name))
        print(f"{name}: ONNX Runtime {'loads it' if ok else 'refuses it: ' + message}")
        failures += not ok
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
