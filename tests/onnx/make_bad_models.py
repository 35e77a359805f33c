#!/usr/bin/env python3
"""Writes the corpus of malformed ONNX models in tests/data/bad_models, and expected.txt:
one line per model, `FILE<TAB>MESSAGE FRAGMENT`. qsl-compress must exit with code 2 on each,
print the fragment, and write nothing (tests/onnx/check_bad_models.sh). The symlink case is
link of external_symlink.onnx is made by that script (git keeps no link out of the tree). Run
it again after changing
the cases; the files are committed so that the test needs no Python.

    python3 tests/onnx/make_bad_models.py tests/data/bad_models
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def base_model(weights=None):
    """x[1,64] -> Gemm(fc_w[128,64], transB=1) -> y[1,128]; valid as is."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((128, 64)).astype(np.float32) if weights is None else weights
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "fc_w"], ["y"], name="fc", transB=1)], "base",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])],
        [numpy_helper.from_array(w, "fc_w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def weight(model):
    return model.graph.initializer[0]


def external(model, location, offset=None, length=None):
    t = weight(model)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entries = [("location", location)]
    if offset is not None:
        entries.append(("offset", str(offset)))
    if length is not None:
        entries.append(("length", str(length)))
    for key, value in entries:
        e = t.external_data.add()
        e.key, e.value = key, value
    return model


def nested_if(depth):
    """If nodes nested `depth` deep (each then-branch holds the next If)."""
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [], [out])
    inner = leaf
    for i in range(depth):  # only the then-branch nests: the file grows linearly
        node = helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=leaf)
        inner = helper.make_graph([node], f"level{i}", [], [out])
    graph = helper.make_graph(
        list(inner.node), "nested",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def cases(folder):
    """(file name, bytes or model, expected message fragment)."""
    good = base_model().SerializeToString()
    out = []
    out.append(("truncated.onnx", good[: len(good) // 2], "does not parse"))
    out.append(("garbage.onnx", bytes(np.random.default_rng(1).integers(0, 256, 4000, np.uint8)),
                "does not parse"))
    out.append(("empty_file.onnx", b"", "no graph"))
    m = base_model(); del m.graph.node[:]
    out.append(("empty_graph.onnx", m, "the graph is empty"))
    m = base_model(); weight(m).raw_data = weight(m).raw_data[:-4]
    out.append(("raw_data_short.onnx", m, "raw_data has 32764 bytes"))
    m = base_model(); weight(m).raw_data += b"\0\0\0\0"
    out.append(("raw_data_long.onnx", m, "raw_data has 32772 bytes"))
    m = base_model(); weight(m).dims[0] = -128
    out.append(("negative_dims.onnx", m, "dims[0] is -128"))
    m = base_model(); weight(m).dims[:] = [2**40, 2**40]
    out.append(("dims_overflow.onnx", m, "the product overflows or exceeds the limit"))
    m = base_model(); weight(m).dims[:] = [2**20, 2**20]
    out.append(("huge_declared_size.onnx", m, "the product overflows or exceeds the limit"))
    m = base_model(); weight(m).data_type = 999
    out.append(("unknown_dtype.onnx", m, "data_type is unknown type 999"))
    m = base_model(); weight(m).data_type = TensorProto.COMPLEX64
    out.append(("complex_dtype.onnx", m, "data_type is COMPLEX64"))
    m = base_model(); weight(m).float_data.extend([1.0] * 8192)
    out.append(("two_data_sources.onnx", m, "both raw_data and a typed data field"))
    m = base_model(); weight(m).ClearField("raw_data"); weight(m).float_data.extend([0.5] * 100)
    out.append(("float_data_count.onnx", m, "holds 100 values; dims need 8192"))
    m = base_model(); weight(m).ClearField("raw_data"); weight(m).int64_data.extend([1] * 8192)
    out.append(("wrong_typed_field.onnx", m, "does not match FLOAT"))
    w = np.random.default_rng(3).standard_normal((128, 64)).astype(np.float32); w[5, 7] = np.nan
    out.append(("nan_weights.onnx", base_model(w), "has nan at row 5, col 7"))
    w = np.ones((128, 64), np.float32); w[0, 3] = np.inf
    out.append(("inf_weights.onnx", base_model(w), "has inf at row 0, col 3"))
    # Shapes ONNX Runtime refuses on loading (tests/onnx/check_ort_agrees.py runs them there).
    m = base_model(); weight(m).dims[:] = [128, 32, 2]
    out.append(("gemm_weight_rank3.onnx", m, "node name: fc"))
    m = base_model(); m.graph.node[0].op_type = "MatMul"; del m.graph.node[0].attribute[:]
    out.append(("matmul_inner_mismatch.onnx", m, "Incompatible dimensions for matrix multiplication"))
    m = base_model(); m.graph.node[0].input[1] = "nowhere"
    out.append(("missing_initializer.onnx", m, "input 'nowhere' is not a graph input"))
    m = base_model(); m.graph.output[0].name = "ghost"
    out.append(("output_never_produced.onnx", m, "graph output 'ghost' is never produced"))
    out.append(("external_traversal.onnx", external(base_model(), "../secret.bin"),
                "leaves the model's folder"))
    out.append(("external_absolute.onnx", external(base_model(), "/etc/passwd"), "is absolute"))
    out.append(("external_missing_file.onnx", external(base_model(), "missing.bin"),
                "does not resolve to a file inside the model's folder"))
    with open(os.path.join(folder, "short_weights.bin"), "wb") as f:
        f.write(b"\0" * 1000)
    out.append(("external_past_end.onnx", external(base_model(), "short_weights.bin", offset=16),
                "run past the end"))
    out.append(("external_bad_length.onnx",
                external(base_model(), "short_weights.bin", offset=0, length=12),
                "external length 12 but dims need 32768 bytes"))
    # link.bin is made by check_bad_models.sh: a symlink to a real file outside the folder.
    out.append(("external_symlink.onnx", external(base_model(), "link.bin"),
                "does not resolve to a file inside the model's folder"))
    out.append(("external_bad_offset.onnx",
                external(base_model(), "short_weights.bin", offset="-1"),
                "is not a non-negative integer"))
    m = base_model(); m.ir_version = 10
    out.append(("ir_version_too_new.onnx", m, "ir_version is 10"))
    m = base_model(); m.opset_import[0].version = 21
    out.append(("opset_too_new.onnx", m, "the default-domain opset is 21"))
    m = base_model(); m.ClearField("graph")
    out.append(("no_graph.onnx", m, "the model has no graph"))
    m = base_model()
    sparse = m.graph.sparse_initializer.add()
    sparse.values.CopyFrom(numpy_helper.from_array(np.ones(2, np.float32), "sv"))
    sparse.indices.CopyFrom(numpy_helper.from_array(np.array([0, 1], np.int64), "si"))
    sparse.dims.extend([4])
    out.append(("sparse_initializer.onnx", m, "sparse initializers are not supported"))
    out.append(("subgraphs_too_deep.onnx", nested_if(17), "subgraphs nest deeper than 16"))
    # 25 levels of If: about 77 nested messages, past the 64 qsl lets protobuf parse
    out.append(("protobuf_too_deep.onnx", nested_if(25), "does not parse"))
    return out


def main(folder):
    os.makedirs(folder, exist_ok=True)
    lines = []
    for name, content, fragment in cases(folder):
        data = content if isinstance(content, bytes) else content.SerializeToString()
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
        lines.append(f"{name}\t{fragment}")
    with open(os.path.join(folder, "expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(lines)} bad models in {folder}")


if __name__ == "__main__":
    main(sys.argv[1])
