"""Every bad input is a qsl.Error (a ValueError) that names the argument and the value."""
import numpy as np
import pytest

import qsl
from conftest import gaussian


def test_error_is_a_value_error():
    assert issubclass(qsl.Error, ValueError)


@pytest.fixture
def layer(rng):
    return qsl.QuantizedDense.compress(gaussian(rng, 8, 32), bits=2)


@pytest.mark.parametrize("x,message", [
    (np.zeros((2, 32), np.float64), "x has dtype float64; expected float32"),
    (np.zeros((2, 32), np.int32), "x has dtype int32"),
    (np.zeros((2, 31), np.float32), r"x has shape \(2, 31\); expected \(32,\) or \(batch, 32\)"),
    (np.zeros((2, 2, 32), np.float32), r"x has shape \(2, 2, 32\)"),
    (np.zeros((), np.float32), r"x has shape \(\)"),
])
def test_forward_names_bad_inputs(layer, x, message):
    with pytest.raises(qsl.Error, match=message):
        layer.forward(x)


def test_forward_of_an_empty_batch_is_empty(layer):
    assert layer.forward(np.zeros((0, 32), np.float32)).shape == (0, 8)


def test_encoded_forward_names_nan_inputs(rng):
    layer = qsl.QuantizedDense.compress(gaussian(rng, 8, 32), bits=2, activation_bits=4)
    x = np.zeros((3, 32), np.float32)
    x[2, 5] = np.nan
    with pytest.raises(qsl.Error, match="row 2, col 5"):
        layer.forward(x)


@pytest.mark.parametrize("kwargs,message", [
    (dict(bits=0), "bits"),
    (dict(bits=9), "bits"),
    (dict(group_size=12), "group"),
    (dict(basis="quaternary"), "basis is 'quaternary'; expected one of 'binary', 'ternary'"),
    (dict(method="best"), "method is 'best'"),
    (dict(calibration=np.zeros((4, 31), np.float32)), r"calibration has shape \(4, 31\)"),
    (dict(threads=-1), "thread"),
])
def test_decompose_names_bad_options(rng, kwargs, message):
    with pytest.raises(qsl.Error, match=message):
        qsl.decompose(gaussian(rng, 4, 32), **kwargs)


@pytest.mark.parametrize("w,message", [
    (np.zeros((4, 32), np.int64), "w has dtype int64; expected a floating dtype"),
    (np.zeros(32, np.float32), r"w has shape \(32,\); expected 2 dimensions"),
    (np.zeros((0, 32), np.float32), r"w has shape \(0, 32\)"),
    ("weights", "w has dtype <U7"),
])
def test_decompose_names_bad_weights(w, message):
    with pytest.raises(qsl.Error, match=message):
        qsl.decompose(w)


def test_non_finite_weights_are_named(rng):
    w = gaussian(rng, 4, 32)
    w[1, 7] = np.inf
    with pytest.raises(qsl.Error, match="inf"):
        qsl.decompose(w)


def test_weights_of_any_float_dtype_are_taken(rng):
    w = gaussian(rng, 16, 64)
    expected = qsl.reconstruct(qsl.decompose(w))
    np.testing.assert_array_equal(qsl.reconstruct(qsl.decompose(w.astype(np.float64))), expected)
    np.testing.assert_array_equal(qsl.reconstruct(qsl.decompose(np.asfortranarray(w))), expected)


@pytest.mark.parametrize("bias,message", [
    (np.zeros(7, np.float32), r"bias has shape \(7,\); expected \(8,\)"),
    (np.zeros(8, np.int32), "bias has dtype int32"),
])
def test_compress_names_a_bad_bias(rng, bias, message):
    with pytest.raises(qsl.Error, match=message):
        qsl.QuantizedDense.compress(gaussian(rng, 8, 32), bias)


def test_scaling_needs_calibration_and_a_known_name(rng):
    w = gaussian(rng, 8, 32)
    with pytest.raises(qsl.Error, match="scaling is 'fixed'"):
        qsl.QuantizedDense.compress(w, activation_bits=4, scaling="fixed")
    with pytest.raises(qsl.Error, match="calibrat"):
        qsl.QuantizedDense.compress(w, activation_bits=4, scaling="calibrated")


def test_missing_and_foreign_files_are_named(tmp_path, rng):
    with pytest.raises(qsl.Error, match="missing.qsl"):
        qsl.QuantizedDense.load(tmp_path / "missing.qsl")
    (tmp_path / "text.qsl").write_bytes(b"not a layer at all, just some text" * 4)
    with pytest.raises(qsl.Error):
        qsl.QuantizedDense.load(tmp_path / "text.qsl")
    twd = qsl.TwdDense.compress(gaussian(rng, 8, 32), basis_vectors=4)
    twd.save(tmp_path / "twd.qsl")
    with pytest.raises(qsl.Error):
        qsl.QuantizedDense.load(tmp_path / "twd.qsl")  # another layer kind


def test_twd_names_bad_options(rng):
    with pytest.raises(qsl.Error):
        qsl.TwdDense.compress(gaussian(rng, 8, 32))  # neither K nor a size target
    with pytest.raises(qsl.Error, match=r"w has shape \(32,\)"):
        qsl.TwdDense.compress(np.zeros(32, np.float32), basis_vectors=2)
