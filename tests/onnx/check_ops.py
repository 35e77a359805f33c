#!/usr/bin/env python3
"""qsl-run against ONNX Runtime, one small model per supported operator (and attribute
variants), plus its named errors.

    python3 tests/onnx/check_ops.py QSL_RUN WORK_DIR

For each case: build the model (opset 17 unless the case says otherwise, IR 8), run ONNX
Runtime on a random batch, run `qsl-run --npy --dump-outputs`, and compare: |qsl - ort| <=
1e-4 * max(1, |ort|). Then: an unsupported operator exits with 2 naming it; a wrong input
shape and a missing file exit with 1; --backend cuda runs or is a named error. Exit status 0 when
every case passes.
"""
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def model(nodes, x_shape, y_name="y", inits=(), opset=17, out_rank=None):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"] + list(x_shape))
    rank = out_rank if out_rank is not None else len(x_shape) + 1
    y = helper.make_tensor_value_info(y_name, TensorProto.FLOAT, [f"d{i}" for i in range(rank)])
    graph = helper.make_graph(nodes, "op", [x], [y], list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(m)
    return m


def n(op, inputs, **attrs):
    return helper.make_node(op, inputs, ["y"], name=op.lower(), **attrs)


def cases():
    w = rng.standard_normal((6, 10)).astype(np.float32)
    c = []
    c.append(("add_broadcast", model([n("Add", ["x", "b"])], [3, 4], inits=[const("b", rng.standard_normal((4,)).astype(np.float32))]), [3, 4]))
    c.append(("sub", model([n("Sub", ["b", "x"])], [3, 4], inits=[const("b", rng.standard_normal((3, 1)).astype(np.float32))]), [3, 4]))
    c.append(("mul", model([n("Mul", ["x", "x"])], [5], inits=[]), [5]))
    c.append(("div", model([n("Div", ["x", "b"])], [2, 3], inits=[const("b", np.float32(1.7))]), [2, 3]))
    for op in ["Relu", "Sigmoid", "Tanh", "Identity"]:
        c.append((op.lower(), model([n(op, ["x"])], [7]), [7]))
    c.append(("dropout", model([n("Dropout", ["x"])], [7]), [7]))
    c.append(("maxpool", model([n("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], [2, 9, 9]), [2, 9, 9]))
    # 2 x 2 stride 2 (qsl's fast path): odd sizes drop the last row/column; ceil_mode on even
    # sizes stays on the fast path, on odd sizes it takes the general one.
    c.append(("maxpool_2x2_odd", model([n("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])], [3, 7, 9]), [3, 7, 9]))
    c.append(("maxpool_2x2_ceil_even", model([n("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)], [3, 6, 8]), [3, 6, 8]))
    c.append(("maxpool_2x2_ceil_odd", model([n("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)], [3, 7, 5]), [3, 7, 5]))
    c.append(("maxpool_ceil_dilated", model([n("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, dilations=[1, 2])], [2, 7, 8]), [2, 7, 8]))
    c.append(("averagepool", model([n("AveragePool", ["x"], kernel_shape=[3, 2], strides=[1, 2], pads=[1, 0, 1, 1])], [3, 6, 7]), [3, 6, 7]))
    c.append(("averagepool_count_pad", model([n("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)], [2, 5, 5]), [2, 5, 5]))
    c.append(("globalaveragepool", model([n("GlobalAveragePool", ["x"])], [4, 5, 3]), [4, 5, 3]))
    c.append(("flatten", model([n("Flatten", ["x"], axis=2)], [3, 4, 5], out_rank=2), [3, 4, 5]))
    c.append(("reshape", model([n("Reshape", ["x", "s"])], [3, 4, 5], inits=[const("s", np.array([0, -1, 5], np.int64))], out_rank=3), [3, 4, 5]))
    c.append(("transpose", model([n("Transpose", ["x"], perm=[0, 3, 1, 2])], [3, 4, 5]), [3, 4, 5]))
    c.append(("softmax13", model([n("Softmax", ["x"], axis=1)], [4, 6]), [4, 6]))
    c.append(("softmax11", model([n("Softmax", ["x"], axis=1)], [3, 4], opset=11), [3, 4]))
    bn = [const(k, v) for k, v in [("s", rng.standard_normal(3).astype(np.float32)), ("b", rng.standard_normal(3).astype(np.float32)),
                                   ("m", rng.standard_normal(3).astype(np.float32)), ("v", np.abs(rng.standard_normal(3)).astype(np.float32) + 0.1)]]
    c.append(("batchnorm", model([n("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)], [3, 4, 4], inits=bn), [3, 4, 4]))
    c.append(("constant_add", model([helper.make_node("Constant", [], ["k"], value=const("kv", rng.standard_normal((1, 2)).astype(np.float32))),
                                     n("Add", ["x", "k"])], [2]), [2]))
    c.append(("concat", model([n("Concat", ["x", "x"], axis=1)], [2, 3]), [2, 3]))
    c.append(("gemm_transB", model([n("Gemm", ["x", "w", "bias"], transB=1, alpha=0.5, beta=2.0)], [10],
                                   inits=[const("w", w), const("bias", rng.standard_normal(6).astype(np.float32))]), [10]))
    c.append(("gemm", model([n("Gemm", ["x", "w"])], [6], inits=[const("w", w)]), [6]))
    c.append(("matmul_3d", model([n("MatMul", ["x", "w"])], [4, 6], inits=[const("w", w)]), [4, 6]))
    conv_w = rng.standard_normal((5, 3, 3, 2)).astype(np.float32)
    c.append(("conv", model([n("Conv", ["x", "cw", "cb"], strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2])], [3, 9, 8],
                            inits=[const("cw", conv_w), const("cb", rng.standard_normal(5).astype(np.float32))]), [3, 9, 8]))
    return c


def run_qsl(qsl_run, model_path, x_path, out_path):
    return subprocess.run([qsl_run, model_path, "--npy", x_path, "--dump-outputs", out_path, "--batch", "2"],
                          capture_output=True, text=True)


def main(qsl_run, work):
    os.makedirs(work, exist_ok=True)
    ort.set_default_logger_severity(3)
    failures = 0
    for name, m, shape in cases():
        path = os.path.join(work, name + ".onnx")
        onnx.save(m, path)
        x = rng.standard_normal([3] + shape).astype(np.float32)
        x_path = os.path.join(work, name + "_x.npy")
        np.save(x_path, x)
        expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        out_path = os.path.join(work, name + "_y.npy")
        result = run_qsl(qsl_run, path, x_path, out_path)
        if result.returncode != 0:
            print(f"FAIL {name}: qsl-run exited with {result.returncode}: {result.stderr.strip()}")
            failures += 1
            continue
        got = np.load(out_path)
        error = np.max(np.abs(got - expected) / np.maximum(1.0, np.abs(expected))) if got.shape == expected.shape else np.inf
        status = "ok  " if error <= 1e-4 else "FAIL"
        failures += status == "FAIL"
        print(f"{status} {name}: shape {list(expected.shape)}, max relative difference {error:.2g}")

    # Named errors and exit codes.
    x2 = os.path.join(work, "x2.npy")
    np.save(x2, rng.standard_normal((2, 7)).astype(np.float32))
    unsupported = model([n("Erf", ["x"])], [7])
    onnx.save(unsupported, os.path.join(work, "erf.onnx"))
    checks = [
        ("unsupported operator", [qsl_run, os.path.join(work, "erf.onnx"), "--npy", x2], 2, "operator 'Erf' is not supported"),
        ("wrong input shape", [qsl_run, os.path.join(work, "relu.onnx"), "--npy", os.path.join(work, "add_broadcast_x.npy")], 1,
         "the model's input takes 7"),
        ("missing file", [qsl_run, os.path.join(work, "missing.onnx"), "--random", "2"], 1, "not a regular file"),
        ("no inputs", [qsl_run, os.path.join(work, "relu.onnx")], 1, "no inputs"),
    ]
    for label, command, code, fragment in checks:
        result = subprocess.run(command, capture_output=True, text=True)
        ok = result.returncode == code and fragment in result.stderr
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {label}: exit {result.returncode}, {result.stderr.strip()}")
    # --backend cuda: runs where qsl-run has qsl::cuda and a GPU (tools/gpu-check.sh checks the
    # numbers there); anywhere else it must be a named error with exit 1, not a crash.
    result = subprocess.run([qsl_run, os.path.join(work, "relu.onnx"), "--random", "2", "--backend", "cuda"],
                            capture_output=True, text=True)
    ok = result.returncode == 0 or (result.returncode == 1 and "--backend cuda: " in result.stderr)
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} backend cuda: exit {result.returncode}, {result.stderr.strip()}")
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
