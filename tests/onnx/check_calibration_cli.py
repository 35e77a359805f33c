#!/usr/bin/env python3
"""qsl-compress --calib / --twd / --scheme on the bundled model, end to end through qsl-run:
a calibrated, partly TWD-factorized model is written and runs (float and calibrated 4-bit
activations), its report marks the layers; bad calibration files and option mistakes exit with
1 and a message that names the problem, and leave no output file.

    python3 tests/onnx/check_calibration_cli.py QSL_COMPRESS QSL_RUN MODEL WORK_DIR
"""
import json
import os
import subprocess
import sys

import numpy as np


def main(compress, run, model, work):
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(7)
    good = os.path.join(work, "calib.npy")
    np.save(good, rng.random((16, 1, 28, 28), dtype=np.float32))
    failures = 0

    def check(label, ok, detail):
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {label}: {detail}")

    out = os.path.join(work, "calibrated.onnx")
    report = os.path.join(work, "report.json")
    r = subprocess.run([compress, model, "-o", out, "-q", "--force", "--json", report, "--bits", "2",
                        "--group", "0", "--calib", good, "--twd", "/classifier/classifier.1/*",
                        "--twd-k", "12"], capture_output=True, text=True)
    check("calibrated + TWD", r.returncode == 0, f"exit {r.returncode} {r.stderr.strip()[-200:]}")
    if r.returncode == 0:
        layers = {l["node"]: l for l in json.load(open(report))["layers"] if l["compressed"]}
        fc1 = layers["/classifier/classifier.1/Gemm"]
        conv = layers["/features/features.3/Conv"]
        check("report", fc1["scheme"] == "twd" and fc1["basis_vectors"] == 12 and fc1["calibrated"]
              and conv["scheme"] == "bcq" and conv["calibrated"] and 0 < conv["relative_output_error"] < 1,
              json.dumps({"fc1": fc1, "conv": conv})[:300])
        for bits in ("0", "4"):
            r = subprocess.run([run, out, "--random", "8", "--activation-bits", bits],
                               capture_output=True, text=True)
            check(f"qsl-run --activation-bits {bits}", r.returncode == 0,
                  f"exit {r.returncode} {r.stderr.strip()[-200:]}")

    wide = os.path.join(work, "wide.npy")
    np.save(wide, rng.random((4, 785), dtype=np.float32))
    empty = os.path.join(work, "empty.npy")
    np.save(empty, np.zeros((0, 1, 28, 28), np.float32))
    nan = os.path.join(work, "nan.npy")
    bad = rng.random((3, 1, 28, 28), dtype=np.float32)
    bad[2, 0, 5, 6] = np.nan
    np.save(nan, bad)
    cases = [
        ("wrong width", ["--calib", wide],
         "has 785 values per sample; the model's input 'image' is [?, 1, 28, 28]"),
        ("no inputs", ["--calib", empty], "holds no samples"),
        ("NaN input", ["--calib", nan], "sample 2 has nan at position 146"),
        ("missing file", ["--calib", os.path.join(work, "nowhere.npy")], "nowhere.npy"),
        ("TWD without K", ["--twd", "*"], "needs --twd-k K or --twd-bits B"),
        ("scheme twd without K", ["--scheme", "twd"], "needs --twd-k K or --twd-bits B"),
        ("TWD in the standard format", ["--twd", "*", "--twd-k", "4", "--format", "standard"],
         "no standard-format encoding"),
        ("TWD size target too small", ["--twd", "*", "--twd-bits", "0.001"], "of node '/features/features.3/Conv': twd_basis_vectors_for: bits_per_weight is 0.001"),
    ]
    for label, options, fragment in cases:
        target = os.path.join(work, "bad.onnx")
        r = subprocess.run([compress, model, "-o", target, "-q"] + options, capture_output=True, text=True)
        ok = r.returncode == 1 and fragment in r.stderr and not os.path.exists(target)
        check(label, ok, f"exit {r.returncode}, {r.stderr.strip()[-240:]}")
    # Paths that cannot be written fail before any work, and nothing is written: the model is
    # not written when only its report's folder is missing.
    missing = os.path.join(work, "no-such-folder")
    for label, target, options in [
            ("output in a missing folder", os.path.join(missing, "out.onnx"), []),
            ("report in a missing folder", os.path.join(work, "unreported.onnx"),
             ["--json", os.path.join(missing, "report.json")])]:
        r = subprocess.run([compress, model, "-o", target] + options,
                           capture_output=True, text=True)
        ok = (r.returncode == 1 and "no-such-folder" in r.stderr and not os.path.exists(target)
              and "layers" not in r.stderr)  # no progress bar: it stopped before compressing
        check(label, ok, f"exit {r.returncode}, {r.stderr.strip()[-240:]}")
    for option in ("--json", "--dump-outputs"):
        r = subprocess.run([run, model, "--random", "4", option, os.path.join(missing, "x")],
                           capture_output=True, text=True)
        ok = r.returncode == 1 and "no-such-folder" in r.stderr and "latency" not in r.stdout
        check(f"qsl-run {option} in a missing folder", ok,
              f"exit {r.returncode}, {r.stdout.strip()[-120:]} {r.stderr.strip()[-240:]}")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
