"""Compress ONNX models and run them in ONNX Runtime.

``compress`` runs qsl-compress, the command-line tool shipped inside this package (the same C++
code as the CLI, so files and reports are the CLI's), with its options as keyword arguments and
its JSON report returned as a ``Report``. ``session_options`` gives ONNX Runtime session options
with qsl's custom-operator library registered, for qsl-format models.

    report = qsl.onnx.compress("model.onnx", "model.qsl.onnx", budget=2.0,
                               calib={"input": samples})
    session = onnxruntime.InferenceSession("model.qsl.onnx", qsl.onnx.session_options())
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import Error, _binary_folder, onnxruntime_library

__all__ = ["Report", "compress", "compressor", "session_options"]


def compressor() -> str:
    """The path of the qsl-compress executable shipped in this package."""
    path = os.path.join(_binary_folder(), "bin", "qsl-compress")
    if not os.path.isfile(path):
        raise Error(f"{path} does not exist: this qsl was built without ONNX support "
                    "(libonnx-dev and protobuf; see README)")
    return path


def session_options(base=None):
    """onnxruntime.SessionOptions (``base`` or new ones) with qsl's operators registered."""
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise Error("qsl.onnx.session_options needs onnxruntime (pip install onnxruntime)") from e
    options = base if base is not None else onnxruntime.SessionOptions()
    options.register_custom_ops_library(onnxruntime_library())
    return options


class Report:
    """qsl-compress's report: ``data`` is the JSON object; keys are also attributes.

    ``layers`` lists every layer found (node, op_type, weight, shape, compressed, bits, ...),
    and the totals (input/output bytes, bits per weight) are top-level keys.
    """

    def __init__(self, data: Dict[str, Any]):
        self.data = data

    def __getattr__(self, name: str):
        try:
            return self.data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str):
        return self.data[key]

    def keys(self):
        return self.data.keys()

    def __repr__(self) -> str:
        layers = self.data.get("layers", [])
        done = sum(1 for layer in layers if layer.get("compressed"))
        return f"Report({done} of {len(layers)} layers compressed)"


Calibration = Union[Mapping[str, Any], Iterable[Mapping[str, Any]], str, os.PathLike]


def _calibration_file(calib: Calibration, folder: str) -> str:
    """An .npz with one array per graph input (samples first) from a dict of arrays or an
    iterable of feed dicts (each the inputs of one run, stacked along the first axis)."""
    if isinstance(calib, (str, os.PathLike)):
        return os.fspath(calib)
    if isinstance(calib, Mapping):
        arrays = {name: np.asarray(value) for name, value in calib.items()}
    else:
        feeds = list(calib)
        if not feeds:
            raise Error("calib is an empty iterable; expected feed dicts {input name: array}")
        names = set(feeds[0])
        for i, feed in enumerate(feeds):
            if not isinstance(feed, Mapping) or set(feed) != names:
                raise Error(f"calib feed {i} has inputs {sorted(feed) if isinstance(feed, Mapping) else type(feed).__name__}; "
                            f"expected the first feed's {sorted(names)}")
        arrays = {name: np.concatenate([np.asarray(f[name]) for f in feeds]) for name in names}
    for name, a in arrays.items():
        if a.ndim == 0:
            raise Error(f"calib[{name!r}] is a scalar; expected samples along the first axis")
    path = os.path.join(folder, "calibration.npz")
    np.savez(path, **arrays)
    return path


def _model_file(model, folder: str) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    if isinstance(model, (bytes, bytearray)):
        data = bytes(model)
    elif hasattr(model, "SerializeToString"):  # onnx.ModelProto
        data = model.SerializeToString()
    else:
        raise Error(f"model is a {type(model).__name__}; expected a path, bytes or onnx.ModelProto")
    path = os.path.join(folder, "model.onnx")
    with open(path, "wb") as f:
        f.write(data)
    return path


def compress(model, output, *, bits: Optional[int] = None, group_size: Optional[int] = None,
             basis: Optional[str] = None, method: Optional[str] = None,
             format: Optional[str] = None, activation_bits: Optional[int] = None,
             budget: Optional[float] = None, max_size: Optional[int] = None,
             calib: Optional[Calibration] = None, calib_count: Optional[int] = None,
             calib_runtime: Optional[str] = None, calib_batch: Optional[int] = None,
             sequential: Optional[int] = None, sensitivity_samples: Optional[int] = None,
             error_feedback: Optional[bool] = None, damping: Optional[float] = None,
             skip: Sequence[str] = (), overrides: Optional[Mapping[str, Union[int, Tuple[int, int]]]] = None,
             min_weights: Optional[int] = None, min_grouped_row_width: Optional[int] = None,
             edge_bits: Optional[int] = None, int8_rows: Optional[int] = None,
             small_batch_bits: Optional[int] = None,
             native_rows: Optional[int] = None, native_int8: bool = False, fuse: bool = True,
             twd: Sequence[str] = (), twd_k: Optional[int] = None,
             twd_bits: Optional[float] = None, threads: Optional[int] = None,
             force: bool = False, progress: bool = True) -> Report:
    """Compress an ONNX model (a path, bytes or onnx.ModelProto) into ``output``.

    Every keyword is the qsl-compress option of the same name (``qsl-compress --help``;
    docs/onnx.md); None keeps the tool's default. ``calib`` is a dict {input name: array with
    samples first}, an iterable of feed dicts, or a path (.npz, .npy, IDX). ``overrides`` maps a
    layer pattern to bits or (bits, group). ``progress`` shows the tool's progress bars (stderr)
    and summary (stdout). Raises qsl.Error with the tool's message when it fails; the output file is written
    atomically and only on success.
    """
    with tempfile.TemporaryDirectory(prefix="qsl-") as folder:
        args: List[str] = [compressor(), _model_file(model, folder), "-o", os.fspath(output)]
        report_path = os.path.join(folder, "report.json")
        args += ["--json", report_path]

        def option(flag: str, value) -> None:
            if value is not None:
                args.extend([flag, str(value)])
        option("--bits", bits)
        option("--group", group_size)
        option("--basis", basis)
        option("--method", method)
        option("--format", format)
        option("--activation-bits", activation_bits)
        option("--budget", budget)
        option("--max-size", max_size)
        option("--calib-count", calib_count)
        option("--calib-runtime", calib_runtime)
        option("--calib-batch", calib_batch)
        option("--sequential", sequential)
        option("--sensitivity-samples", sensitivity_samples)
        option("--damping", damping)
        option("--min-weights", min_weights)
        option("--min-grouped-row-width", min_grouped_row_width)
        option("--edge-bits", edge_bits)
        option("--int8-rows", int8_rows)
        option("--small-batch-bits", small_batch_bits)
        option("--native-rows", native_rows)
        option("--twd-k", twd_k)
        option("--twd-bits", twd_bits)
        option("--threads", threads)
        if calib is not None:
            args += ["--calib", _calibration_file(calib, folder)]
        if error_feedback is not None:
            args.append("--error-feedback" if error_feedback else "--no-error-feedback")
        if skip:
            args += ["--skip", *skip]
        if overrides:
            specs = []
            for pattern, value in overrides.items():
                spec = f"{value[0]}/{value[1]}" if isinstance(value, tuple) else str(value)
                specs.append(f"{pattern}={spec}")
            args += ["--override", *specs]
        if twd:
            args += ["--twd", *twd]
        if native_int8:
            args.append("--native-int8")
        if not fuse:
            args.append("--no-fuse")
        if force:
            args.append("--force")
        if not progress:
            args.append("--quiet")
        # qsl-compress finds PyPI onnxruntime's library (for calibration) through $PYTHON.
        env = dict(os.environ, PYTHON=sys.executable)
        # stderr is passed on as it comes (progress bars) and its tail kept for the error.
        process = subprocess.Popen(args, stdout=None if progress else subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, env=env)
        tail = b""
        for chunk in iter(lambda: process.stderr.read1(4096), b""):
            if progress:
                sys.stderr.write(chunk.decode("utf-8", "replace"))
                sys.stderr.flush()
            tail = (tail + chunk)[-8192:]
        if process.wait() != 0:
            text = tail.decode("utf-8", "replace").replace("\r", "\n").strip().splitlines()
            message = next((line for line in reversed(text) if line.strip()),
                           f"exit status {process.returncode}")
            raise Error(f"qsl-compress: {message.removeprefix('qsl-compress: ')}")
        with open(report_path, encoding="utf-8") as f:
            return Report(json.load(f))
