"""qsl: binary/ternary weight codes and bit-plane inner products, from Python.

A thin layer over the C++ library (the same code the C++ API runs, so results are the same bit
for bit). It checks every array it is given and names the argument, the dtype or the shape
that is wrong (``qsl.Error``, a ``ValueError``), converts only where a view cannot serve, and
releases the GIL around decompositions and forward passes.

    import numpy as np, qsl
    w = np.random.randn(256, 512).astype(np.float32)
    layer = qsl.QuantizedDense.compress(w, bits=2, group_size=128)
    y = layer.forward(np.random.randn(8, 512).astype(np.float32))   # (8, 256)
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np

from . import _qsl
from ._qsl import (
    Error,
    WeightCode,
    cpu_target,
    cpu_threads,
    set_cpu_target,
    set_cpu_threads,
    supported_cpu_targets,
)

__version__: str = _qsl.__version__

__all__ = [
    "Error",
    "QuantizedDense",
    "TwdDense",
    "WeightCode",
    "cpu_target",
    "cpu_threads",
    "decompose",
    "normalized_error",
    "onnxruntime_library",
    "reconstruct",
    "set_cpu_target",
    "set_cpu_threads",
    "supported_cpu_targets",
]

Progress = Callable[[int, int], object]

_BASES = {"binary": 0, "ternary": 1}
_METHODS = {"greedy": 0, "alternating": 1, "multi_start": 2}
_SCALINGS = {"automatic": 0, "per_vector": 1, "calibrated": 2}


def _choice(name: str, value: str, choices: dict) -> int:
    if value not in choices:
        raise Error(f"{name} is {value!r}; expected one of {', '.join(map(repr, choices))}")
    return choices[value]


def _matrix(name: str, a, *, convert: bool) -> np.ndarray:
    """A float32 C-contiguous 2-D array: a view of `a` where it already is one.

    With convert, any real floating dtype is accepted and converted (weights arrive as float16
    or float64 as often as float32); without, only float32 is (inputs of a forward pass: a
    silent conversion there would cost a copy on every call).
    """
    a = np.asarray(a)
    if a.dtype.kind != "f" or (not convert and a.dtype != np.float32):
        expected = "a floating dtype" if convert else "float32 (use .astype(np.float32))"
        raise Error(f"{name} has dtype {a.dtype}; expected {expected}")
    if a.ndim != 2:
        raise Error(f"{name} has shape {a.shape}; expected 2 dimensions (rows, columns)")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise Error(f"{name} has shape {a.shape}; expected at least one row and one column")
    return np.ascontiguousarray(a, dtype=np.float32)


def _optional_matrix(name: str, a, cols: int) -> Optional[np.ndarray]:
    if a is None:
        return None
    a = _matrix(name, a, convert=True)
    if a.shape[1] != cols:
        raise Error(f"{name} has shape {a.shape}; expected (samples, {cols}): one column per input")
    return a


def _bias(b, rows: int) -> Optional[np.ndarray]:
    if b is None:
        return None
    b = np.asarray(b)
    if b.dtype.kind != "f":
        raise Error(f"bias has dtype {b.dtype}; expected a floating dtype")
    if b.shape != (rows,):
        raise Error(f"bias has shape {b.shape}; expected ({rows},): one value per output")
    return np.ascontiguousarray(b, dtype=np.float32)


def _decompose_arguments(w, bits, basis, group_size, method, max_iterations, calibration,
                         error_feedback, damping, threads):
    w = _matrix("w", w, convert=True)
    return dict(
        w=w,
        bits=int(bits),
        basis=_choice("basis", basis, _BASES),
        group_size=int(group_size),
        method=_choice("method", method, _METHODS),
        max_iterations=int(max_iterations),
        calibration=_optional_matrix("calibration", calibration, w.shape[1]),
        error_feedback=bool(error_feedback),
        damping=float(damping),
        threads=int(threads),
    )


def decompose(w, bits: int = 2, group_size: int = 0, basis: str = "binary",
              calibration=None, *, method: str = "multi_start", max_iterations: int = 100,
              error_feedback: bool = False, damping: float = 0.01, threads: int = 0,
              progress: Optional[Progress] = None) -> WeightCode:
    """Decompose w (outputs x inputs) into ``bits`` binary or ternary planes per row.

    Each row (or each ``group_size`` columns of it; 0 = whole rows, else a multiple of 8) is
    approximated by sum_j alpha_j * m_j with m_j in {-1, +1} ("binary") or {-1, 0, +1}
    ("ternary"). With ``calibration`` (samples x inputs) the fit minimizes the output error on
    those inputs instead of the weight error; ``error_feedback`` adds GPTQ-style feedback.
    ``progress(done, total)`` is called as rows are finished (tqdm: ``lambda d, t: bar.update``).
    The GIL is released while the work runs.
    """
    args = _decompose_arguments(w, bits, basis, group_size, method, max_iterations, calibration,
                                error_feedback, damping, threads)
    return _qsl._decompose(**args, progress=progress)


def reconstruct(code: WeightCode) -> np.ndarray:
    """W_hat (rows x cols, float32): the weights the code stands for."""
    return _qsl._reconstruct(code)


def normalized_error(w, code: WeightCode) -> float:
    """||W - W_hat||^2 / ||W||^2 of a code against the matrix it came from."""
    w = _matrix("w", w, convert=True)
    if w.shape != (code.rows, code.cols):
        raise Error(f"w has shape {w.shape}; expected ({code.rows}, {code.cols}), the code's shape")
    return _qsl._normalized_error(w, code)


class _Layer:
    """What QuantizedDense and TwdDense share: forward, sizes, files."""

    _impl_type: type

    def __init__(self, impl):
        self._impl = impl

    @property
    def in_features(self) -> int:
        return self._impl.in_features

    @property
    def out_features(self) -> int:
        return self._impl.out_features

    @property
    def bytes(self) -> int:
        """Bytes of the parameters in memory: the code (planes, coefficients, and the per-row
        offsets, which files do not store: they are derived again on load) and the bias."""
        return self._impl.bytes

    @property
    def packed_bytes(self) -> int:
        """Bytes of the copy the CPU kernels read."""
        return self._impl.packed_bytes

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight, coefficients and bias included."""
        return self._impl.bits_per_weight

    @property
    def activation_bits(self) -> int:
        """0: float activations; 1..8: inputs encoded with that many bits."""
        return self._impl.activation_bits

    def forward(self, x) -> np.ndarray:
        """y = layer(x): x is (batch, in_features) or one vector (in_features,), float32.

        Any strides are accepted (a non-contiguous x is copied once). Returns a new float32
        array of shape (batch, out_features), or (out_features,) for one vector.
        """
        a = np.asarray(x)
        if a.dtype != np.float32:
            raise Error(f"x has dtype {a.dtype}; expected float32 (use .astype(np.float32))")
        single = a.ndim == 1
        if a.ndim not in (1, 2) or a.shape[-1] != self.in_features:
            raise Error(f"x has shape {a.shape}; expected ({self.in_features},) or "
                        f"(batch, {self.in_features})")
        a = np.ascontiguousarray(a.reshape(1, -1) if single else a)
        y = self._impl.forward(a)
        return y[0] if single else y

    __call__ = forward

    def to_bytes(self) -> bytes:
        """The serialized layer (the format save() writes)."""
        return self._impl.serialize()

    @classmethod
    def from_bytes(cls, data: bytes):
        """A layer from to_bytes(); every field and the checksum are checked."""
        return cls(cls._impl_type.deserialize(bytes(data)))

    def save(self, path) -> None:
        """Write the layer to path atomically (a temporary file, then a rename)."""
        self._impl.save(os.fspath(path))

    @classmethod
    def load(cls, path):
        """Read a layer written by save() (or by the C++ library's save())."""
        return cls(cls._impl_type.load(os.fspath(path)))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.out_features} x {self.in_features}, "
                f"{self.bits_per_weight:.3f} bits/weight, activation_bits={self.activation_bits})")


class QuantizedDense(_Layer):
    """A dense layer y = W x + b stored as a weight code (qsl::quantized_dense)."""

    _impl_type = _qsl._QuantizedDense

    @classmethod
    def compress(cls, w, bias=None, bits: int = 2, group_size: int = 0, basis: str = "binary",
                 calibration=None, *, activation_bits: int = 0, scaling: str = "automatic",
                 method: str = "multi_start", max_iterations: int = 100,
                 error_feedback: bool = False, damping: float = 0.01, threads: int = 0,
                 progress: Optional[Progress] = None) -> "QuantizedDense":
        """Compress w (out_features x in_features) and bias (None or out_features values).

        The weight options are decompose()'s. ``activation_bits`` > 0 encodes the inputs with
        that many bits, with a step and minimum per vector, or fixed from ``calibration``
        (``scaling``: "automatic" = calibrated when calibration is given, "per_vector",
        "calibrated").
        """
        args = _decompose_arguments(w, bits, basis, group_size, method, max_iterations,
                                    calibration, error_feedback, damping, threads)
        impl = cls._impl_type.compress(
            bias=_bias(bias, args["w"].shape[0]), activation_bits=int(activation_bits),
            scaling=_choice("scaling", scaling, _SCALINGS), progress=progress, **args)
        return cls(impl)

    @property
    def code(self) -> WeightCode:
        """The weight code (a copy; its arrays are read-only views of it)."""
        return self._impl.code

    @property
    def bias(self) -> Optional[np.ndarray]:
        """The bias (a read-only view), or None."""
        return self._impl.bias


class TwdDense(_Layer):
    """A dense layer stored as a ternary weight decomposition W = C M^T (qsl::twd_dense)."""

    _impl_type = _qsl._TwdDense

    @classmethod
    def compress(cls, w, bias=None, basis_vectors: int = 0, bits_per_weight: float = 0.0,
                 calibration=None, *, activation_bits: int = 0, scaling: str = "automatic",
                 max_iterations: int = 10, refine_iterations: int = 10, threads: int = 0,
                 progress: Optional[Progress] = None) -> "TwdDense":
        """Factorize w (out_features x in_features) into K shared ternary basis vectors.

        Give ``basis_vectors`` (K) or ``bits_per_weight`` (the largest K that fits). With
        ``calibration`` the refinement minimizes the output error on those inputs.
        """
        w = _matrix("w", w, convert=True)
        impl = cls._impl_type.compress(
            w=w, bias=_bias(bias, w.shape[0]), basis_vectors=int(basis_vectors),
            bits_per_weight=float(bits_per_weight), max_iterations=int(max_iterations),
            refine_iterations=int(refine_iterations),
            calibration=_optional_matrix("calibration", calibration, w.shape[1]),
            threads=int(threads), activation_bits=int(activation_bits),
            scaling=_choice("scaling", scaling, _SCALINGS), progress=progress)
        return cls(impl)

    @property
    def basis_vectors(self) -> int:
        return self._impl.basis_vectors


def _binary_folder() -> str:
    """Where the wheel put the compiled files: beside the module (in an editable install the
    Python files stay in the source tree and only the compiled ones are installed)."""
    return os.path.dirname(os.path.abspath(_qsl.__file__))


def onnxruntime_library() -> str:
    """The path of qsl's ONNX Runtime custom-operator library shipped in this package.

    Register it with ``onnxruntime.SessionOptions().register_custom_ops_library(path)`` (or use
    qsl.onnx.session_options()) to run qsl-format models. qsl.Error when this build has none.
    """
    path = os.path.join(_binary_folder(), "libqsl_onnxruntime.so")
    if not os.path.isfile(path):
        raise Error(f"{path} does not exist: this qsl was built without ONNX Runtime's headers "
                    "(see README: tools/install-deps.sh fetches them)")
    return path
