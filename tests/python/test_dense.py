"""qsl.decompose, qsl.QuantizedDense and qsl.TwdDense against the C++ library and numpy."""
import pathlib
import re
import threading
import time

import numpy as np
import pytest

import qsl
from conftest import ROOT, gaussian

EDGE = [1, 63, 64, 65, 131]


def test_version_is_the_headers():
    text = (ROOT / "include/qsl/version.hpp").read_text()
    parts = [re.search(rf"QSL_VERSION_{p} (\d+)", text).group(1) for p in ("MAJOR", "MINOR", "PATCH")]
    assert qsl.__version__ == ".".join(parts)


def planes_of(words, cols):
    """(rows, k, words) uint64 -> (rows, k, cols) bits, column c at bit c % 64 of word c // 64."""
    bits = (words[..., :, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    return bits.reshape(*words.shape[:2], -1)[..., :cols].astype(np.float32)


@pytest.mark.parametrize("basis", ["binary", "ternary"])
@pytest.mark.parametrize("cols,group", [(1, 0), (63, 0), (65, 0), (131, 64), (200, 48)])
def test_code_views_rebuild_reconstruct(rng, basis, cols, group):
    w = gaussian(rng, 17, cols)
    code = qsl.decompose(w, bits=3, group_size=group, basis=basis)
    assert (code.rows, code.cols, code.bits, code.ternary) == (17, cols, 3, basis == "ternary")
    signs, alpha = code.signs, code.coefficients
    assert signs.dtype == np.uint64 and signs.shape == (17, 3, code.words_per_plane)
    assert alpha.shape == (17, code.groups, 3) and not alpha.flags.writeable
    assert not alpha.flags.owndata  # a view of the code, not a copy
    levels = 2 * planes_of(signs, cols) - 1
    if basis == "ternary":
        levels *= planes_of(code.masks, cols)
    else:
        assert code.masks is None
    group_of = np.arange(cols) // (group or cols)
    w_hat = np.zeros((17, cols), np.float32)
    for j in range(3):  # the library's order: planes summed j = 0..k-1, in float32
        w_hat += alpha[:, group_of, j] * levels[:, j, :]
    np.testing.assert_array_equal(qsl.reconstruct(code), w_hat)
    np.testing.assert_allclose(code.offsets, w_hat.sum(axis=1), rtol=1e-5, atol=1e-4)


def test_more_bits_fit_better_and_calibration_fits_its_inputs(rng):
    w = gaussian(rng, 64, 256)
    errors = [qsl.normalized_error(w, qsl.decompose(w, bits=k)) for k in (1, 2, 3, 4)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.02
    x = gaussian(rng, 512, 256) * np.linspace(0.1, 3, 256, dtype=np.float32)
    plain, calibrated = qsl.decompose(w, bits=2), qsl.decompose(w, bits=2, calibration=x)

    def output_error(code):
        return np.linalg.norm((w - qsl.reconstruct(code)) @ x.T) / np.linalg.norm(w @ x.T)
    assert output_error(calibrated) < output_error(plain)


@pytest.mark.parametrize("activation_bits", [0, 4, 8])
@pytest.mark.parametrize("rows,cols", [(1, 1), (63, 64), (65, 131), (64, 63), (7, 257)])
def test_forward_equals_the_cpp_library_bit_for_bit(tmp_path, reference, rng, activation_bits,
                                                    rows, cols):
    w, bias = gaussian(rng, rows, cols), gaussian(rng, rows)
    layer = qsl.QuantizedDense.compress(w, bias, bits=2, activation_bits=activation_bits)
    layer.save(tmp_path / "layer.qsl")
    for batch in (1, 3, 64):
        x = gaussian(rng, batch, cols)
        np.save(tmp_path / "x.npy", x)
        reference("forward", "dense", tmp_path / "layer.qsl", tmp_path / "x.npy", tmp_path / "y.npy")
        expected = np.load(tmp_path / "y.npy")
        y = layer.forward(x)
        assert y.dtype == np.float32 and y.shape == (batch, rows)
        assert np.array_equal(y.view(np.uint32), expected.view(np.uint32)), (batch, rows, cols)


@pytest.mark.parametrize("basis,group", [("binary", 0), ("ternary", 64)])
def test_compress_equals_the_cpp_library_bit_for_bit(tmp_path, reference, rng, basis, group):
    w = gaussian(rng, 33, 200)
    np.save(tmp_path / "w.npy", w)
    reference("compress", tmp_path / "w.npy", 2, group, basis, 8, tmp_path / "cpp.qsl")
    layer = qsl.QuantizedDense.compress(w, bits=2, group_size=group, basis=basis,
                                        activation_bits=8)
    assert layer.to_bytes() == (tmp_path / "cpp.qsl").read_bytes()


def test_forward_takes_any_strides_and_single_vectors(rng):
    layer = qsl.QuantizedDense.compress(gaussian(rng, 40, 96), bits=2)
    big = gaussian(rng, 10, 192)
    strided = big[::2, ::2]  # neither rows nor columns contiguous
    np.testing.assert_array_equal(layer(strided), layer.forward(np.ascontiguousarray(strided)))
    np.testing.assert_array_equal(layer(strided[3]), layer(strided)[3])
    assert layer(strided[3]).shape == (40,)
    fortran = np.asfortranarray(big[:, :96])
    np.testing.assert_array_equal(layer(fortran), layer(np.ascontiguousarray(fortran)))


def test_sizes_files_and_bytes_round_trip(tmp_path, rng):
    w = gaussian(rng, 128, 512)
    layer = qsl.QuantizedDense.compress(w, gaussian(rng, 128), bits=2, group_size=128)
    # 2 bits of planes, 2 fp32 coefficients per 128 weights, one offset and one bias per row
    assert layer.bytes == 128 * 512 * 2 // 8 + 128 * 4 * 2 * 4 + 128 * 4 + 128 * 4
    assert layer.bits_per_weight == 8 * layer.bytes / (128 * 512)
    # A file holds a header and all but the offsets (derived again on load).
    assert layer.bytes - 128 * 4 < len(layer.to_bytes()) < layer.bytes - 128 * 4 + 128
    assert layer.bias.shape == (128,) and not layer.bias.flags.writeable
    path = tmp_path / "sub" / "layer.qsl"
    with pytest.raises(qsl.Error):
        layer.save(path)  # no such folder: a named error, nothing written
    layer.save(tmp_path / "layer.qsl")
    again = qsl.QuantizedDense.load(tmp_path / "layer.qsl")
    x = gaussian(rng, 5, 512)
    np.testing.assert_array_equal(again(x), layer(x))
    assert qsl.QuantizedDense.from_bytes(layer.to_bytes()).to_bytes() == layer.to_bytes()
    broken = bytearray(layer.to_bytes())
    broken[len(broken) // 2] ^= 0x10
    with pytest.raises(qsl.Error):
        qsl.QuantizedDense.from_bytes(bytes(broken))
    with pytest.raises(qsl.Error):
        qsl.QuantizedDense.from_bytes(layer.to_bytes()[:40])


def test_twd_dense_equals_the_cpp_library_bit_for_bit(tmp_path, reference, rng):
    w = gaussian(rng, 48, 80)
    layer = qsl.TwdDense.compress(w, gaussian(rng, 48), bits_per_weight=2.0)
    bias_bits = 48 * 32 / (48 * 80)  # the target is the factorization's; the bias comes on top
    assert layer.basis_vectors > 0 and layer.bits_per_weight <= 2.0 + bias_bits + 1e-9
    layer.save(tmp_path / "twd.qsl")
    x = gaussian(rng, 9, 80)
    np.save(tmp_path / "x.npy", x)
    reference("forward", "twd", tmp_path / "twd.qsl", tmp_path / "x.npy", tmp_path / "y.npy")
    assert np.array_equal(layer(x).view(np.uint32), np.load(tmp_path / "y.npy").view(np.uint32))
    np.testing.assert_array_equal(qsl.TwdDense.load(tmp_path / "twd.qsl")(x), layer(x))


def test_progress_is_reported_and_its_exceptions_stop_the_work(rng):
    w = gaussian(rng, 300, 64)
    calls = []
    qsl.decompose(w, bits=2, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (300, 300) and all(t == 300 for _, t in calls)

    def stop(done, total):
        raise KeyError("stop here")
    with pytest.raises(KeyError, match="stop here"):
        qsl.QuantizedDense.compress(w, bits=2, progress=stop)


def test_the_gil_is_released_while_decomposing(rng):
    w = gaussian(rng, 2048, 512)
    ticks, running = [0], [True]

    def count():
        while running[0]:
            ticks[0] += 1
            time.sleep(0)
    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(0.05)
    before = ticks[0]
    start = time.perf_counter()
    qsl.decompose(w, bits=3, threads=1)
    seconds = time.perf_counter() - start
    during = ticks[0] - before
    running[0] = False
    counter.join()
    # Holding the GIL, the counter would not run at all until decompose returned.
    assert seconds > 0.05 and during > 100, (seconds, during)


def test_cpu_targets(rng):
    targets = qsl.supported_cpu_targets()
    assert targets[0] == "scalar" and qsl.cpu_target() in targets
    layer = qsl.QuantizedDense.compress(gaussian(rng, 20, 70), bits=2, activation_bits=8)
    x = gaussian(rng, 4, 70)
    saved = qsl.cpu_target()
    try:
        results = []
        for t in targets:
            qsl.set_cpu_target(t)
            results.append(layer(x))
    finally:
        qsl.set_cpu_target(saved)
    for r in results:  # integer parts exact; float sums of alpha * integer in another order
        np.testing.assert_allclose(r, results[0], rtol=1e-5, atol=1e-4)
    with pytest.raises(qsl.Error, match="sse9"):
        qsl.set_cpu_target("sse9")
