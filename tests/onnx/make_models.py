#!/usr/bin/env python3
"""Builds the small ONNX models the ONNX tests use (opset 17, IR 8: what Debian's libonnx 1.12
checks). Deterministic: the same files every run.

    python3 tests/onnx/make_models.py OUTDIR
writes OUTDIR/layers.onnx: Conv (weight from a Constant node) -> BatchNormalization -> Relu ->
Flatten -> Gemm (transB=1) -> Relu -> MatMul -> Gemm (transB=0) -> Softmax, plus a small Gemm
that stays below the size threshold; OUTDIR/layers_input.npy, a batch of inputs; and
OUTDIR/subgraph.onnx, an If whose branch holds a Gemm; OUTDIR/old_opset.onnx, a CNN exported at
opset 9 (IR 4): Conv -> BatchNormalization -> Relu -> Reshape -> MatMul -> Add -> Relu -> Gemm,
for the standard format's opset conversion (its input is layers_input.npy); and
OUTDIR/pad_opset10.onnx, a Pad -> Flatten -> MatMul model at opset 10 that Debian's libonnx 1.12
version converter cannot convert (its Pad 10 -> 11 adapter needs a 'value' attribute); and
OUTDIR/gemm_variants.onnx (+ _input.npy): Gemm with transA, alpha, beta and a computed C, and a
weight that three nodes read (an unrolled recurrence), for fusion; OUTDIR/left_weight.onnx
(+ _input.npy): MatMul(W, X) with the weight on the left; OUTDIR/convolutions.onnx:
depthwise, grouped, SAME_LOWER and 1-D convolutions on two inputs, for calibration's patches;
OUTDIR/weight_kinds.onnx (+ _input.npz): token ids through embedding tables (Gather on int64
and int32 ids, one table also read by the output Gemm: tied), a bidirectional LSTM and a GRU;
OUTDIR/half_weight.onnx: a FLOAT16 weight cast to float before its MatMul; OUTDIR/wide_conv.onnx:
two 128-output convolutions along one axis (8-bit activations from the image);
OUTDIR/decoder.onnx: a ViT-like decoder, its position embedding resized to the input's size
read at run time (Shape -> Gather / Slice -> Concat -> Resize), then transposed convolutions.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


def layers_model(rng):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    conv_w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Constant", [], ["conv_w"], name="conv_w_const",
                         value=numpy_helper.from_array(conv_w, "conv_w_value")),
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c1"], name="conv1",
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"],
                         name="bn1"),
        helper.make_node("Relu", ["b1"], ["r1"]),
        helper.make_node("Flatten", ["r1"], ["f1"], axis=1),
        helper.make_node("Gemm", ["f1", "fc1_w", "fc1_b"], ["g1"], name="fc1", transB=1),
        helper.make_node("Relu", ["g1"], ["r2"]),
        helper.make_node("MatMul", ["r2", "mm_w"], ["m1"], name="mm"),
        helper.make_node("Gemm", ["m1", "fc2_w"], ["g2"], name="fc2", transB=0),
        helper.make_node("Gemm", ["g2", "tiny_w"], ["g3"], name="tiny", transB=1),
        helper.make_node("Softmax", ["g3"], ["y"], axis=1),
    ]
    inits = [
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) * 0.1, "conv_b"),
        numpy_helper.from_array(np.abs(rng.standard_normal(16)).astype(np.float32) + 0.5, "bn_s"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) * 0.1, "bn_b"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) * 0.1, "bn_m"),
        numpy_helper.from_array(np.abs(rng.standard_normal(16)).astype(np.float32) + 0.5, "bn_v"),
        numpy_helper.from_array(rng.standard_normal((200, 576)).astype(np.float32) * 0.05, "fc1_w"),
        numpy_helper.from_array(rng.standard_normal(200).astype(np.float32) * 0.1, "fc1_b"),
        numpy_helper.from_array(rng.standard_normal((200, 136)).astype(np.float32) * 0.1, "mm_w"),
        numpy_helper.from_array(rng.standard_normal((136, 40)).astype(np.float32) * 0.1, "fc2_w"),
        numpy_helper.from_array(rng.standard_normal((10, 40)).astype(np.float32) * 0.1, "tiny_w"),
    ]
    graph = helper.make_graph(nodes, "layers", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="qsl-tests")
    onnx.checker.check_model(model)
    return model


def subgraph_model(rng):
    """An If whose branches hold a Gemm: qsl leaves subgraph layers as they are, with a note."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])
    then_out = helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 64])
    else_out = helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 64])
    then_branch = helper.make_graph(
        [helper.make_node("Gemm", ["x", "inner_w"], ["t"], name="inner_fc", transB=1)],
        "then", [], [then_out],
        [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "inner_w")])
    else_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                                    [else_out])
    nodes = [helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_branch,
                              else_branch=else_branch)]
    graph = helper.make_graph(nodes, "subgraph", [x, c], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="qsl-tests")
    onnx.checker.check_model(model)
    return model


def old_opset_model(rng):
    """What an older exporter writes: opset 9, IR 4, Reshape with a shape input."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    f = lambda a, name: numpy_helper.from_array(a.astype(np.float32), name)
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c1"], name="conv1",
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"],
                         name="bn1"),
        helper.make_node("Relu", ["b1"], ["r1"]),
        helper.make_node("Reshape", ["r1", "flat_shape"], ["f1"], name="flatten"),
        helper.make_node("MatMul", ["f1", "fc1_w"], ["m1"], name="fc1"),
        helper.make_node("Add", ["m1", "fc1_b"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r2"]),
        helper.make_node("Gemm", ["r2", "fc2_w", "fc2_b"], ["y"], name="fc2", transB=1),
    ]
    inits = [
        f(rng.standard_normal((16, 3, 3, 3)) * 0.3, "conv_w"),
        f(rng.standard_normal(16) * 0.1, "conv_b"),
        f(np.abs(rng.standard_normal(16)) + 0.5, "bn_s"),
        f(rng.standard_normal(16) * 0.1, "bn_b"),
        f(rng.standard_normal(16) * 0.1, "bn_m"),
        f(np.abs(rng.standard_normal(16)) + 0.5, "bn_v"),
        numpy_helper.from_array(np.array([-1, 576], np.int64), "flat_shape"),
        f(rng.standard_normal((576, 96)) * 0.05, "fc1_w"),
        f(rng.standard_normal(96) * 0.1, "fc1_b"),
        f(rng.standard_normal((10, 96)) * 0.1, "fc2_w"),
        f(rng.standard_normal(10) * 0.1, "fc2_b"),
    ]
    graph = helper.make_graph(nodes, "old_opset", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=4,
                              producer_name="qsl-tests")
    onnx.checker.check_model(model)
    return model


def pad_opset10_model(rng):
    """Pad without its optional 'value': valid at opset 10, not convertible by libonnx 1.12."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])
    nodes = [
        helper.make_node("Pad", ["x"], ["p"], name="pad", pads=[0, 0, 1, 1, 0, 0, 1, 1]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "fc_w"], ["y"], name="fc"),
    ]
    w = numpy_helper.from_array(rng.standard_normal((256, 64)).astype(np.float32), "fc_w")
    graph = helper.make_graph(nodes, "pad_opset10", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)], ir_version=5,
                              producer_name="qsl-tests")
    onnx.checker.check_model(model)
    return model


def gemm_variants_model(rng):
    """Every Gemm attribute and a weight several nodes read, for fusion: x [N, 64] ->
    Gemm(transA=1 of its [64, N] transpose, alpha 0.5, beta 2, C a computed [N, 48] tensor) ->
    Gemm(transB=1, C [48] with beta 0.25) -> two MatMuls on one shared weight (an unrolled
    recurrence) -> a Gemm (transB=0, C [1, 48]) on the same weight."""
    f = np.float32
    w1 = (rng.standard_normal((64, 48)) * 0.2).astype(f)   # Gemm transA=1, transB=0: [K, N]
    w2 = (rng.standard_normal((48, 48)) * 0.2).astype(f)   # Gemm transB=1: [N, K]
    c2 = (rng.standard_normal(48) * 0.1).astype(f)
    shared = (rng.standard_normal((48, 48)) * 0.2).astype(f)  # read by three nodes, [K, N]
    c_row = (rng.standard_normal((1, 48)) * 0.1).astype(f)
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_t"], perm=[1, 0]),
        helper.make_node("Relu", ["x"], ["x_r"]),
        helper.make_node("MatMul", ["x_r", "w_c"], ["c_computed"]),  # a computed C [N, 48]
        helper.make_node("Gemm", ["x_t", "w1", "c_computed"], ["g1"], name="g_trans_a",
                         transA=1, alpha=0.5, beta=2.0),
        helper.make_node("Gemm", ["g1", "w2", "c2"], ["g2"], name="g_beta", transB=1,
                         beta=0.25),
        helper.make_node("MatMul", ["g2", "shared"], ["s1"], name="step1"),
        helper.make_node("Tanh", ["s1"], ["h1"]),
        helper.make_node("MatMul", ["h1", "shared"], ["s2"], name="step2"),
        helper.make_node("Gemm", ["s2", "shared", "c_row"], ["y"], name="step3"),
    ]
    w_c = (rng.standard_normal((64, 48)) * 0.1).astype(f)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w1, "w1"), (w2, "w2"), (c2, "c2"), (shared, "shared"), (c_row, "c_row"),
              (w_c, "w_c"))]
    g = helper.make_graph(nodes, "gemm_variants",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 48])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION)


def left_weight_model(rng):
    """MatMul(W, X), the weight on the left: x [N, 3, 40, 4] -> W1 [24, 40] x -> Relu ->
    W2 [10, 24] (that) -> y [N, 3, 10, 4] (12 rows per call at batch 1: fused)."""
    f = np.float32
    w1 = (rng.standard_normal((24, 40)) * 0.2).astype(f)
    w2 = (rng.standard_normal((10, 24)) * 0.2).astype(f)
    nodes = [helper.make_node("MatMul", ["w1", "x"], ["h"], name="left1"),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["w2", "r"], ["y"], name="left2")]
    g = helper.make_graph(nodes, "left_weight",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 40, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 10, 4])],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION)


def convolutions_model(rng):
    """Convolutions of every geometry calibration turns into patches, all reading graph inputs:
    x [N, 4, 9, 11] -> depthwise 3x3 (group 4, strides [2, 1], SAME_UPPER); x -> grouped 2x3
    (group 2, 6 outputs, strides [1, 2], dilations [2, 1], pads [1, 0, 0, 2]); x -> 2x2 (3
    outputs, strides 2, SAME_LOWER); x1d [N, 6, 13] -> 1-D grouped 3 (group 2, 4 outputs,
    dilation 2, pads [1, 2])."""
    f = np.float32
    weights = {"w_dw": (4, 1, 3, 3), "w_g2": (6, 2, 2, 3), "w_low": (3, 4, 2, 2),
               "w_1d": (4, 3, 3)}
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(f), n)
             for n, s in weights.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w_dw"], ["y_dw"], name="depthwise", group=4,
                         strides=[2, 1], auto_pad="SAME_UPPER"),
        helper.make_node("Conv", ["x", "w_g2"], ["y_g2"], name="grouped", group=2,
                         strides=[1, 2], dilations=[2, 1], pads=[1, 0, 0, 2]),
        helper.make_node("Conv", ["x", "w_low"], ["y_low"], name="same_lower", strides=[2, 2],
                         auto_pad="SAME_LOWER"),
        helper.make_node("Conv", ["x1d", "w_1d"], ["y_1d"], name="conv1d", group=2,
                         dilations=[2], pads=[1, 2]),
    ]
    g = helper.make_graph(
        nodes, "convolutions",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 9, 11]),
         helper.make_tensor_value_info("x1d", TensorProto.FLOAT, ["N", 6, 13])],
        [helper.make_tensor_value_info("y_dw", TensorProto.FLOAT, ["N", 4, 5, 11]),
         helper.make_tensor_value_info("y_g2", TensorProto.FLOAT, ["N", 6, 8, 6]),
         helper.make_tensor_value_info("y_low", TensorProto.FLOAT, ["N", 3, 5, 6]),
         helper.make_tensor_value_info("y_1d", TensorProto.FLOAT, ["N", 4, 12])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION)


def wide_conv_model(rng):
    """Convolutions qsl-compress gives 8-bit activations (one group, >= 128 outputs, a kernel
    along one axis): x [N, 16, 9, 9] -> Conv 128 x 16 x 3 x 1 (pads 1 above and below) -> Relu ->
    Conv 128 x 128 x 1 x 3 (stride 2, bias) -> y [N, 128, 5, 4]."""
    f = np.float32
    inits = [numpy_helper.from_array((rng.standard_normal((128, 16, 3, 1)) * 0.2).astype(f), "w1"),
             numpy_helper.from_array((rng.standard_normal((128, 128, 1, 3)) * 0.05).astype(f), "w2"),
             numpy_helper.from_array((rng.standard_normal(128) * 0.1).astype(f), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="wide1", pads=[1, 0, 1, 0]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="wide2", strides=[2, 2])]
    g = helper.make_graph(nodes, "wide_conv",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 9, 9])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 128, 5, 4])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION)


def decoder_model(rng):
    """x [N, 64, 6, 6] + Resize(pe [1, 64, 4, 4], sizes = [1, 64] ++ Gather(Shape(x), [2]) ++
    Slice(Shape(x), 3, 4)) (cubic; the sizes read at run time, as exporters write them) ->
    ConvTranspose 64 -> 32, 4 x 4, stride 2, pads 1, bias (ct1) -> Relu -> ConvTranspose 32 ->
    16, 3 x 3, strides 2 x 1, pads [0, 1, 1, 0], output_padding [1, 0], dilations [1, 2] (ct2)
    -> ConvTranspose 16 -> 8 in 2 groups, 3 x 3 (ct3) -> y [N, 8, 27, 17]."""
    f = np.float32
    i64 = np.int64
    inits = [numpy_helper.from_array(rng.standard_normal((1, 64, 4, 4)).astype(f), "pe"),
             numpy_helper.from_array(np.array([1, 64], i64), "leading"),
             numpy_helper.from_array(np.array([2], i64), "h_index"),
             numpy_helper.from_array(np.array([3], i64), "w_start"),
             numpy_helper.from_array(np.array([4], i64), "w_end"),
             numpy_helper.from_array((rng.standard_normal((64, 32, 4, 4)) * 0.1).astype(f), "w1"),
             numpy_helper.from_array((rng.standard_normal(32) * 0.1).astype(f), "b1"),
             numpy_helper.from_array((rng.standard_normal((32, 16, 3, 3)) * 0.1).astype(f), "w2"),
             numpy_helper.from_array((rng.standard_normal((16, 4, 3, 3)) * 0.2).astype(f), "w3")]
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "h_index"], ["h"], axis=0),
             helper.make_node("Slice", ["shape", "w_start", "w_end"], ["w"]),
             helper.make_node("Concat", ["leading", "h", "w"], ["sizes"], axis=0),
             helper.make_node("Resize", ["pe", "", "", "sizes"], ["pos"], mode="cubic"),
             helper.make_node("Add", ["x", "pos"], ["h0"]),
             helper.make_node("ConvTranspose", ["h0", "w1", "b1"], ["t1"], name="ct1",
                              strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["t1"], ["r1"]),
             helper.make_node("ConvTranspose", ["r1", "w2"], ["t2"], name="ct2", strides=[2, 1],
                              pads=[0, 1, 1, 0], output_padding=[1, 0], dilations=[1, 2]),
             helper.make_node("ConvTranspose", ["t2", "w3"], ["y"], name="ct3", group=2)]
    g = helper.make_graph(nodes, "decoder",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                         ["N", 8, 27, 17])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION)


def half_weight_model(rng):
    """x [N, 16] -> MatMul(x, Cast(w16 [16, 8] FLOAT16)) -> y: a weight stored in half."""
    w = (rng.standard_normal((16, 8)) * 0.3).astype(np.float16)
    g = helper.make_graph(
        [helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT),
         helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "half_weight", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(w, "w16")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION)


def weight_kinds_model(rng):
    """ids [N, T] -> Gather(emb) -> e [N, T, 24] -> LSTM (bidirectional, 16) and GRU (8) over
    [T, N, 24]; e as [N, 24, T] channels -> a 1-D ConvTranspose (stride 2) and, as [N, 24, T, 1],
    a 2-D one in 2 groups; Gather(emb32) on int32 ids; Gather(tied) and Gemm(., tied,
    transB=1)."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5])
    outputs = [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["N", 5, 24]),
               helper.make_tensor_value_info("e32", TensorProto.FLOAT, ["N", 5, 24]),
               helper.make_tensor_value_info("lstm_y", TensorProto.FLOAT, [5, 2, "N", 16]),
               helper.make_tensor_value_info("gru_y", TensorProto.FLOAT, [5, 1, "N", 8]),
               helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["M", 40]),
               helper.make_tensor_value_info("ct1_y", TensorProto.FLOAT, ["N", 6, 9]),
               helper.make_tensor_value_info("ct2_y", TensorProto.FLOAT, ["N", 8, 7, 2])]
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed", axis=0),
        helper.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Gather", ["emb32", "ids32"], ["e32"], name="embed32"),
        helper.make_node("Gather", ["tied", "ids"], ["t"], name="embed_tied"),
        helper.make_node("Add", ["e", "t"], ["et"]),
        helper.make_node("Transpose", ["et"], ["seq"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["seq", "lstm_w", "lstm_r", "lstm_b"], ["lstm_y"], name="lstm",
                         hidden_size=16, direction="bidirectional"),
        # Between the LSTM and the GRU: the first and last products stay the recurrent weights.
        helper.make_node("Transpose", ["e"], ["channels"], perm=[0, 2, 1]),
        helper.make_node("ConvTranspose", ["channels", "ct1_w", "ct1_b"], ["ct1_y"],
                         name="upsample1d", strides=[2], pads=[1, 1]),
        helper.make_node("Unsqueeze", ["channels", "last_axis"], ["channels2d"]),
        helper.make_node("ConvTranspose", ["channels2d", "ct2_w"], ["ct2_y"], name="upsample2d",
                         group=2, kernel_shape=[3, 2]),
        helper.make_node("GRU", ["seq", "gru_w", "gru_r"], ["gru_y"], name="gru", hidden_size=8,
                         linear_before_reset=1),
        helper.make_node("Reshape", ["e32", "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "tied"], ["logits"], name="head", transB=1),
        # A Gather on a shape, not a table: not a layer, not reported.
        helper.make_node("Shape", ["ids"], ["ids_shape"]),
        helper.make_node("Gather", ["ids_shape", "zero"], ["batch"], name="batch_size"),
        helper.make_node("Cast", ["batch"], ["batch_f"], to=TensorProto.FLOAT),
    ]
    outputs.append(helper.make_tensor_value_info("batch_f", TensorProto.FLOAT, []))
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    inits = [
        numpy_helper.from_array(normal(40, 24), "emb"),
        numpy_helper.from_array(normal(40, 24) * 0.5, "emb32"),
        numpy_helper.from_array(normal(40, 24) * 0.3, "tied"),
        numpy_helper.from_array(normal(2, 64, 24) * 0.2, "lstm_w"),
        numpy_helper.from_array(normal(2, 64, 16) * 0.2, "lstm_r"),
        numpy_helper.from_array(normal(2, 128) * 0.1, "lstm_b"),
        numpy_helper.from_array(normal(1, 24, 24) * 0.2, "gru_w"),
        numpy_helper.from_array(normal(1, 24, 8) * 0.2, "gru_r"),
        numpy_helper.from_array(normal(24, 6, 3) * 0.3, "ct1_w"),  # [C, M, k]
        numpy_helper.from_array(normal(6) * 0.1, "ct1_b"),
        numpy_helper.from_array(normal(24, 4, 3, 2) * 0.3, "ct2_w"),  # [C, M / 2, kh, kw]
        numpy_helper.from_array(np.array([3], np.int64), "last_axis"),
        numpy_helper.from_array(np.array([-1, 24], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
    ]
    graph = helper.make_graph(nodes, "weight_kinds", [ids], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION)


def main(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    onnx.save(layers_model(rng), os.path.join(out, "layers.onnx"))
    onnx.save(subgraph_model(rng), os.path.join(out, "subgraph.onnx"))
    onnx.save(gemm_variants_model(np.random.default_rng(11)),
              os.path.join(out, "gemm_variants.onnx"))
    onnx.save(left_weight_model(np.random.default_rng(13)), os.path.join(out, "left_weight.onnx"))
    onnx.save(convolutions_model(np.random.default_rng(15)), os.path.join(out, "convolutions.onnx"))
    onnx.save(weight_kinds_model(np.random.default_rng(17)), os.path.join(out, "weight_kinds.onnx"))
    np.savez(os.path.join(out, "weight_kinds_input.npz"),
             ids=np.random.default_rng(18).integers(0, 40, (64, 5)).astype(np.int64))
    np.save(os.path.join(out, "left_weight_input.npy"),
            np.random.default_rng(14).standard_normal((2, 3, 40, 4)).astype(np.float32))
    np.save(os.path.join(out, "gemm_variants_input.npy"),
            np.random.default_rng(12).standard_normal((5, 64)).astype(np.float32))
    onnx.save(half_weight_model(np.random.default_rng(19)), os.path.join(out, "half_weight.onnx"))
    onnx.save(wide_conv_model(np.random.default_rng(21)), os.path.join(out, "wide_conv.onnx"))
    onnx.save(decoder_model(np.random.default_rng(23)), os.path.join(out, "decoder.onnx"))
    onnx.save(old_opset_model(np.random.default_rng(9)), os.path.join(out, "old_opset.onnx"))
    onnx.save(pad_opset10_model(np.random.default_rng(10)), os.path.join(out, "pad_opset10.onnx"))
    np.save(os.path.join(out, "layers_input.npy"),
            rng.standard_normal((5, 3, 12, 12)).astype(np.float32))


if __name__ == "__main__":
    main(sys.argv[1])
