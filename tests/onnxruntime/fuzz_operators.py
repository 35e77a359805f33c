#!/usr/bin/env python3
"""Fuzzes the checks of qsl's ONNX Runtime operators: valid QuantizedMatMul, QuantizedConv,
QuantizedConvTranspose, QuantizedTwd, QuantizedGather and DecodeWeights nodes with one thing changed at random (an attribute set to a wrong, huge, negative or
wrongly typed value; a tensor with other dims, another dtype, truncated data or random bytes;
NaN/Inf coefficients; an input removed; X of a wrong width, or ids out of range, at run time). Every case must either
run or fail with an ORT error that names the node; none may crash the process. The cases run
in a child process, which says which case it is on before each one, so that a crash (a signal)
is reported with the case that caused it.

    python3 tests/onnxruntime/fuzz_operators.py LIBQSL_ONNXRUNTIME [--cases 400] [--seed 1]
"""
import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def cases(seed, count):
    """(label, model bytes, input) for `count` mutated models."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import check_quantized_conv as qc
    import check_quantized_conv_transpose as qct
    import check_quantized_matmul as q
    import check_quantized_twd as qt

    rng = np.random.default_rng(seed)
    huge = [0, -1, -(2**40), 2**31, 2**40, 2**62, 9, 7, 1, 3]
    for i in range(count):
        rows, cols = int(rng.integers(1, 40)), int(rng.integers(1, 140))
        bits, ternary = int(rng.integers(1, 4)), bool(rng.integers(0, 2))
        group = int(rng.choice([0, 8, 16]))
        signs, masks, alpha, g = q.random_code(rng, rows, cols, bits, ternary, group)
        variant = int(rng.integers(0, 7))
        decode, conv, twd, gather = variant == 0, variant == 1, variant == 2, variant == 5
        transpose = variant == 6
        if twd:  # a TWD layer of K basis vectors on the same sizes
            k = int(rng.integers(1, 12))
            t_signs, t_masks, mixing = qt.random_twd(rng, rows, cols, k)
            m = onnx.load_from_string(qt.twd_model(
                rows, cols, t_signs, t_masks, mixing,
                rng.standard_normal(rows).astype(np.float32), ["N", cols]))
        elif conv:  # the same code as a QuantizedConv: C / group x kh x kw = cols
            kh, kw = (1, cols) if rng.integers(0, 2) else (cols, 1)
            groups = int(rng.choice([1, 2]))
            if rows % groups:
                groups = 1
            m = onnx.load_from_string(qc.conv_model(
                groups, rows, [kh, kw], groups, signs, masks, alpha,
                rng.standard_normal(rows).astype(np.float32), ["N", groups, "H", "W"],
                dict(group_size=group, pads=[0, 0, 0, 0])))
        elif transpose:  # the same code as a QuantizedConvTranspose: rows = M x taps, C = cols
            taps = int(rng.choice([t for t in range(1, rows + 1) if rows % t == 0]))
            kh, kw, out_channels = 1, taps, rows // taps
            attrs = dict(group_size=group, strides=[1, int(rng.integers(1, 3))],
                         pads=[0, 0, 0, 0])
            if rng.integers(0, 2):
                attrs["int8_min_rows"] = int(rng.integers(1, 4))
            m = onnx.load_from_string(qct.transpose_model(
                cols, out_channels, [kh, kw], signs, masks, alpha,
                rng.standard_normal(out_channels).astype(np.float32), ["N", cols, "H", "W"],
                attrs))
        else:
            bias = None if gather else rng.standard_normal(rows).astype(np.float32)
            # Half the QuantizedMatMul nodes with the activation-path attributes, so that they
            # are mutated too.
            paths = ({"int8_min_rows": int(rng.integers(1, 4)),
                      "small_batch_bits": int(rng.choice([0, 2, 8]))}
                     if not gather and not decode and rng.integers(0, 2) else None)
            m = onnx.load_from_string(q.model(rows, cols, bits, ternary, group, signs, masks,
                                              alpha, bias, ["N", cols], attrs=paths))
        node = m.graph.node[0]
        if gather:  # the same code as a table: QuantizedGather(ids, ...), rows looked up
            node.op_type, node.name = "QuantizedGather", "qgather"
            for a in node.attribute:
                a.name = {"in_features": "cols", "out_features": "rows"}.get(a.name, a.name)
            m.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
            m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 3
        if decode:  # the same code as a DecodeWeights node producing W^T for a MatMul
            attrs = dict(rows=rows, cols=cols, bits=bits, basis=int(ternary),
                         group_size=group, transposed=1, shape=[cols, rows])
            dw = helper.make_node("DecodeWeights", list(node.input[1:4 if ternary else 3]),
                                  ["w"], name="dw", domain="ai.qsl", **attrs)
            mm = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
            del m.graph.node[:]
            m.graph.node.extend([dw, mm])
            m.graph.initializer.pop()  # the bias
            node = m.graph.node[0]
        what = ("dw" if decode else "qconv" if conv else "qct" if transpose else "qtwd" if twd
                else "qgather" if gather else "qmm")
        x = rng.standard_normal((int(rng.integers(1, 5)), cols)).astype(np.float32)
        if gather:
            x = rng.integers(-rows, rows, (int(rng.integers(1, 5)), 3)).astype(np.int64)
        if conv:
            x = rng.standard_normal((int(rng.integers(1, 3)), groups, kh + int(rng.integers(0, 3)),
                                     kw + int(rng.integers(0, 3)))).astype(np.float32)
        if transpose:
            x = rng.standard_normal((int(rng.integers(1, 3)), cols, int(rng.integers(1, 4)),
                                     int(rng.integers(1, 5)))).astype(np.float32)
        kind = int(rng.integers(0, 8))  # 7: unchanged, a control that must run
        label = f"case {i}: {what} {rows}x{cols} k={bits} {'ternary' if ternary else 'binary'}"
        if kind == 0 and len(node.attribute):  # an attribute's value
            a = node.attribute[int(rng.integers(0, len(node.attribute)))]
            if a.type == onnx.AttributeProto.INT:
                a.i = int(rng.choice(huge))
            elif a.type == onnx.AttributeProto.INTS:
                a.ints[:] = [int(rng.choice(huge)) for _ in range(int(rng.integers(0, 4)))]
            label += f", attribute {a.name} changed"
        elif kind == 1 and len(node.attribute):  # an attribute of the wrong type
            a = node.attribute[int(rng.integers(0, len(node.attribute)))]
            name = a.name
            node.attribute.remove(a)
            node.attribute.append(helper.make_attribute(name, 1.5))
            label += f", attribute {name} as a float"
        elif kind == 2:  # a tensor's dims or dtype
            t = m.graph.initializer[int(rng.integers(0, len(m.graph.initializer)))]
            array = numpy_helper.to_array(t)
            if rng.integers(0, 2):
                array = array.reshape(-1)[: max(0, array.size - int(rng.integers(0, 3)))]
            else:
                array = array.astype(np.int8 if array.dtype == np.uint8 else np.float64)
            t.CopyFrom(numpy_helper.from_array(array, t.name))
            label += f", tensor {t.name} now {array.dtype} {array.shape}"
        elif kind == 3:  # random bytes in the planes
            t = m.graph.initializer[0]
            data = bytearray(t.raw_data)
            for _ in range(int(rng.integers(1, 8))):
                if data:
                    data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
            t.raw_data = bytes(data)
            label += ", random bytes in the signs"
        elif kind == 4:  # NaN / Inf coefficients (TWD: in the mixing matrix)
            t = m.graph.initializer[2 if twd else 1]
            array = numpy_helper.to_array(t).copy()
            array.reshape(-1)[int(rng.integers(0, array.size))] = rng.choice([np.nan, np.inf])
            t.CopyFrom(numpy_helper.from_array(array, t.name))
            label += ", a non-finite coefficient"
        elif kind == 5 and len(node.input) > 1:  # an input removed
            index = int(rng.integers(1, len(node.input)))
            node.input[index] = ""
            label += f", input {index} removed"
        elif kind == 7:
            label += ", unchanged (must run)"
        elif transpose:  # X of other channels, or of rank 3
            x = rng.standard_normal((1, cols + int(rng.integers(1, 3)), 2, 2)).astype(np.float32)
            if rng.integers(0, 2):
                x = x[:, :cols, 0]
                m.graph.input[0].type.tensor_type.ClearField("shape")
            else:
                m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "C"
            label += f", X of shape {list(x.shape)}"
        elif conv:  # X too small for the kernel, or of other channels
            x = rng.standard_normal((1, groups + int(rng.integers(0, 2)), max(1, kh - 1),
                                     kw)).astype(np.float32)
            m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "C"
            label += f", X of shape {list(x.shape)}"
        elif gather:  # an id out of range, or ids of another type
            x = x.copy()
            x.reshape(-1)[0] = int(rng.choice([rows, -rows - 1, 2**40, -(2**62)]))
            if rng.integers(0, 4) == 0:
                x = x.astype(np.int32 if abs(int(x.reshape(-1)[0])) < 2**31 else np.float32)
                m.graph.input[0].type.tensor_type.elem_type = (
                    TensorProto.INT32 if x.dtype == np.int32 else TensorProto.FLOAT)
            label += f", ids {x.reshape(-1)[0]} ({x.dtype})"
        else:  # X of the wrong width at run time
            x = rng.standard_normal((2, cols + int(rng.integers(1, 9)))).astype(np.float32)
            m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "K"
            label += f", X of width {x.shape[1]}"
        yield label, what, m.SerializeToString(), x


def child(library, seed, count):
    import onnxruntime as ort
    ort.set_default_logger_severity(4)
    ran = refused = 0
    bad = []
    for label, what, model, x in cases(seed, count):
        print("at", label, flush=True)
        options = ort.SessionOptions()
        options.register_custom_ops_library(library)
        options.intra_op_num_threads = 1
        try:
            s = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            s.run(None, {"x": x})
            ran += 1
        except Exception as e:  # ORT's own exception types
            text = str(e)
            refused += 1
            # Every refusal names the node: qsl's ("QuantizedMatMul node 'qmm': ...") and ORT's
            # own graph checks ("node (qmm)"; the MatMul "mm" fed by a DecodeWeights node).
            if "must run" in label or not any(n in text
                                              for n in ("qmm", "qconv", "qct", "qtwd", "qgather", "dw",
                                                        "mm")):
                bad.append(f"{label}: {text[:200]}")
    print(f"done: {ran} ran, {refused} refused")
    for b in bad:
        print("FAIL (an unchanged model refused, or an error not naming the node):", b)
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("library")
    ap.add_argument("--cases", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.library, a.seed, a.cases)
    r = subprocess.run([sys.executable, __file__, a.library, "--cases", str(a.cases), "--seed",
                        str(a.seed), "--child"], capture_output=True, text=True)
    lines = r.stdout.strip().splitlines()
    if r.returncode < 0:
        print(f"FAIL: the process died of signal {-r.returncode} {lines[-1] if lines else ''}")
        return 1
    print("\n".join(line for line in lines if not line.startswith("at ")))
    if r.stderr.strip():
        print(r.stderr.strip()[-2000:])
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
