"""qsl.onnx: compress a model from Python (calibrated, under a budget) and run it in ONNX Runtime."""
import subprocess

import numpy as np
import pytest

import qsl
import qsl.onnx
from conftest import ROOT, gaussian

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def mlp(rng):
    """x (batch, 256) -> Gemm 256x512 -> Relu -> MatMul 512x64: two layers worth compressing."""
    w1, b1 = gaussian(rng, 512, 256) * 0.06, gaussian(rng, 512) * 0.1
    w2 = gaussian(rng, 512, 64) * 0.04
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(path, x, options=None):
    session = ort.InferenceSession(str(path), options or ort.SessionOptions(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_compress_calibrated_and_run_in_onnxruntime(tmp_path, rng):
    model = mlp(rng)
    x = np.abs(gaussian(rng, 64, 256))
    fp32 = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    report = qsl.onnx.compress(model, tmp_path / "mlp.qsl.onnx", bits=2, group_size=64,
                               calib={"x": np.abs(gaussian(rng, 256, 256))}, progress=False)
    layers = [layer for layer in report.layers if layer["compressed"]]
    assert [layer["node"] for layer in layers] == ["fc1", "fc2"]
    assert report.calibration["samples"] == 256
    standard = qsl.onnx.compress(model, tmp_path / "mlp.std.onnx", bits=2, group_size=64,
                                 calib={"x": np.abs(gaussian(rng, 256, 256))}, format="standard",
                                 progress=False)
    assert len(standard.layers) == 2
    y = run(tmp_path / "mlp.qsl.onnx", x, qsl.onnx.session_options())
    relative = np.linalg.norm(y - fp32) / np.linalg.norm(fp32)
    assert 0 < relative < 0.35, relative  # a 2-bit code: close to fp32, not equal to it
    assert (tmp_path / "mlp.qsl.onnx").stat().st_size < 0.2 * len(model.SerializeToString())


def test_feeds_of_an_iterable_equal_one_dict(tmp_path, rng):
    model = mlp(rng)
    samples = np.abs(gaussian(rng, 96, 256))
    qsl.onnx.compress(model, tmp_path / "a.onnx", bits=2, calib={"x": samples}, progress=False)
    feeds = ({"x": samples[i:i + 32]} for i in range(0, 96, 32))
    qsl.onnx.compress(model, tmp_path / "b.onnx", bits=2, calib=feeds, progress=False)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_budget_is_reported_per_layer(tmp_path, rng):
    report = qsl.onnx.compress(mlp(rng), tmp_path / "m.onnx", budget=1.5, progress=False)
    compressed = [layer for layer in report.layers if layer["compressed"]]
    assert compressed and all(layer["bits"] in (1, 2, 3, 4, 6, 8) for layer in compressed)


def test_tool_errors_are_qsl_errors(tmp_path, rng):
    with pytest.raises(qsl.Error, match="missing.onnx"):
        qsl.onnx.compress(tmp_path / "missing.onnx", tmp_path / "out.onnx", progress=False)
    with pytest.raises(qsl.Error, match="'z'"):
        qsl.onnx.compress(mlp(rng), tmp_path / "out.onnx", calib={"z": np.zeros((4, 256), np.float32)},
                          progress=False)
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(qsl.Error, match="expected the first feed"):
        qsl.onnx.compress(mlp(rng), tmp_path / "out.onnx", calib=[{"x": np.zeros((1, 256))}, {"y": 1}],
                          progress=False)
    with pytest.raises(qsl.Error, match="expected a path, bytes or onnx.ModelProto"):
        qsl.onnx.compress(42, tmp_path / "out.onnx")


def test_the_library_path_is_in_the_package():
    path = qsl.onnxruntime_library()
    assert path.startswith(qsl.__path__[0]) and path.endswith("libqsl_onnxruntime.so")


def test_options_reach_the_tool_as_its_flags(tmp_path, rng):
    """The package's file equals the one the C++ build's qsl-compress writes with the flags the
    keywords stand for (so each keyword maps to its option)."""
    tool = ROOT / "build/examples/qsl-compress"
    if not tool.is_file():
        pytest.fail(f"{tool} is missing: build the C++ tree first (tools/build.sh)")
    model = mlp(rng)
    onnx.save(model, tmp_path / "mlp.onnx")
    samples = np.abs(gaussian(rng, 64, 256))
    np.savez(tmp_path / "calib.npz", x=samples)
    qsl.onnx.compress(tmp_path / "mlp.onnx", tmp_path / "py.onnx", bits=3, group_size=64,
                      basis="ternary", calib={"x": samples}, overrides={"fc2": (2, 128)},
                      activation_bits=4, error_feedback=False, progress=False)
    done = subprocess.run([str(tool), str(tmp_path / "mlp.onnx"), "-o", str(tmp_path / "cli.onnx"),
                           "--bits", "3", "--group", "64", "--basis", "ternary", "--calib",
                           str(tmp_path / "calib.npz"), "--override", "fc2=2/128",
                           "--activation-bits", "4", "--no-error-feedback", "--quiet"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "py.onnx").read_bytes() == (tmp_path / "cli.onnx").read_bytes()


def test_activation_path_keywords_reach_the_tool(tmp_path, rng):
    """int8_rows and small_batch_bits as qsl-compress's --int8-rows and --small-batch-bits."""
    tool = ROOT / "build/examples/qsl-compress"
    if not tool.is_file():
        pytest.fail(f"{tool} is missing: build the C++ tree first (tools/build.sh)")
    onnx.save(mlp(rng), tmp_path / "mlp.onnx")
    qsl.onnx.compress(tmp_path / "mlp.onnx", tmp_path / "py.onnx", bits=2, int8_rows=4,
                      small_batch_bits=6, progress=False)
    done = subprocess.run([str(tool), str(tmp_path / "mlp.onnx"), "-o", str(tmp_path / "cli.onnx"),
                           "--bits", "2", "--int8-rows", "4", "--small-batch-bits", "6",
                           "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    py = (tmp_path / "py.onnx").read_bytes()
    assert py == (tmp_path / "cli.onnx").read_bytes()
    fused = [n for n in onnx.load_from_string(py).graph.node if n.op_type == "QuantizedMatMul"]
    assert fused and all({a.name: a.i for a in n.attribute}.get("small_batch_bits") == 6
                         for n in fused)
