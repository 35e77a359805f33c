#!/usr/bin/env python3
"""qsl-compress --calib through ONNX Runtime:

* a model qsl-run cannot execute (two inputs, int64 token ids -> Gather, a mask, Erf) is
  calibrated from an .npz of both inputs; on held-out samples the calibrated 2-bit file's output
  error is well below the data-free one's (its embedding channels differ in scale 50-fold, which
  only output-error codes see), and the report counts the samples and the vectors per layer;
* on a model both can run, ORT's statistics give the layers qsl's executor gives (the same
  output errors and vector counts);
* every bad feed is a named error (exit code 1): a missing, extra, mistyped or misshaped array,
  arrays of different sample counts, a corrupt archive, a .npy for a two-input model.

    python3 tests/onnxruntime/check_ort_calibration.py LIBQSL_ONNXRUNTIME QSL_COMPRESS QSL_RUN \\
        MODELS_DIR WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import check, failures  # noqa: E402

TOKENS, VOCABULARY, WIDTH = 8, 50, 32


def token_model(rng):
    """ids [N, 8] int64, mask [N, 8] float -> Gather(E [50, 32]) * mask -> MatMul [32, 48] ->
    Erf -> MatMul [48, 16] -> y [N, 8, 16]. E's channels have scales 0.2 .. 10."""
    f = np.float32
    scales = np.exp(np.linspace(np.log(0.2), np.log(10.0), WIDTH))
    e = (rng.standard_normal((VOCABULARY, WIDTH)) * scales).astype(f)
    w1 = (rng.standard_normal((WIDTH, 48)) * 0.1).astype(f)
    w2 = (rng.standard_normal((48, 16)) * 0.2).astype(f)
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["embedded"]),
        helper.make_node("Unsqueeze", ["mask", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["embedded", "mask3"], ["masked"]),
        helper.make_node("MatMul", ["masked", "w1"], ["h"], name="up"),
        helper.make_node("Erf", ["h"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["y"], name="down"),
    ]
    inits = [numpy_helper.from_array(e, "E"), numpy_helper.from_array(w1, "w1"),
             numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2")]
    g = helper.make_graph(
        nodes, "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", TOKENS]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", TOKENS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", TOKENS, 16])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def token_samples(rng, n):
    ids = np.minimum(rng.zipf(1.3, (n, TOKENS)) - 1, VOCABULARY - 1).astype(np.int64)
    mask = (rng.random((n, TOKENS)) < 0.9).astype(np.float32)
    return {"ids": ids, "mask": mask}


def compress(tool, source, out, extra):
    """(exit code, stderr, the JSON report or None)"""
    report = out + ".json"
    if os.path.exists(report):
        os.remove(report)
    # The embedding table E stays fp32 (--skip E): the products' calibration is what is
    # measured here (tables are data-free; check_weight_kinds.py covers them).
    r = subprocess.run([tool, source, "-o", out, "--force", "-q", "--json", report,
                        "--min-weights", "100", "--bits", "2", "--group", "0", "--skip", "E"]
                       + extra,
                       capture_output=True, text=True)
    data = None
    if r.returncode == 0:
        with open(report) as f:
            data = json.load(f)
    return r.returncode, r.stderr, data


def run(path, feed, library=None):
    options = ort.SessionOptions()
    if library:
        options.register_custom_ops_library(library)
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]).run(
        None, feed)[0]


def relative_error(got, reference):
    return float(np.linalg.norm(got - reference) / np.linalg.norm(reference))


def calibrated_beats_data_free(library, tool, run_tool, work):
    rng = np.random.default_rng(21)
    source = os.path.join(work, "tokens.onnx")
    onnx.save(token_model(rng), source)
    calib = os.path.join(work, "tokens_calib.npz")
    np.savez(calib, **token_samples(rng, 256))
    code, err, report = compress(tool, source, os.path.join(work, "tokens.calibrated.onnx"),
                                 ["--calib", calib, "--calib-runtime", "onnxruntime"])
    check(code == 0, f"tokens: calibrated compression failed ({code}): {err}")
    if code != 0:
        return
    layers = {l["node"]: l for l in report["layers"] if l["compressed"]}
    check(sorted(layers) == ["down", "up"], f"tokens: compressed {sorted(layers)}")
    check(all(l["calibrated"] for l in layers.values()), "tokens: a layer was not calibrated")
    # 256 samples x 8 tokens: 2,048 vectors per layer.
    for name, l in layers.items():
        check(l.get("calibration_vectors") == 2048,
              f"tokens {name}: {l.get('calibration_vectors')} calibration vectors, expected 2048")
    calibration = report.get("calibration", {})
    check(calibration.get("samples") == 256 and "ONNX Runtime" in calibration.get("runtime", ""),
          f"tokens: the report's calibration is {calibration}")
    code, err, _ = compress(tool, source, os.path.join(work, "tokens.free.onnx"), [])
    check(code == 0, f"tokens: data-free compression failed: {err}")
    held_out = token_samples(np.random.default_rng(22), 64)
    reference = run(source, held_out)
    calibrated = relative_error(run(os.path.join(work, "tokens.calibrated.onnx"), held_out,
                                    library), reference)
    free = relative_error(run(os.path.join(work, "tokens.free.onnx"), held_out, library),
                          reference)
    print(f"tokens (Gather + Erf, 2 inputs): held-out relative output error at 2 bits: "
          f"calibrated {calibrated:.4f}, data-free {free:.4f}")
    check(calibrated < 0.7 * free, f"tokens: calibrated error {calibrated:.4f} is not well below "
                                   f"the data-free {free:.4f}")
    # qsl-run cannot execute the model (Gather on int64 ids, Erf): calibration did not need it.
    npy = os.path.join(work, "tokens_ids.npy")
    np.save(npy, held_out["ids"].astype(np.float32))
    r = subprocess.run([run_tool, source, "--npy", npy], capture_output=True, text=True)
    check(r.returncode != 0, "tokens: qsl-run runs the two-input model after all")
    code, err, _ = compress(tool, source, os.path.join(work, "tokens.qsl.onnx"),
                            ["--calib", calib, "--calib-runtime", "qsl"])
    check(code == 2 and "not supported by qsl-run" in err,
          f"tokens: qsl's executor calibration: {code} {err}")


def same_as_the_executor(tool, models, work):
    source = os.path.join(models, "layers.onnx")
    x = np.random.default_rng(23).standard_normal((40, 3, 12, 12)).astype(np.float32)
    npy = os.path.join(work, "layers_calib.npy")
    np.save(npy, x)
    reports = {}
    for runtime in ("onnxruntime", "qsl"):
        code, err, reports[runtime] = compress(
            tool, source, os.path.join(work, f"layers.{runtime}.onnx"),
            ["--calib", npy, "--calib-runtime", runtime])
        check(code == 0, f"layers: --calib-runtime {runtime} failed: {err}")
    if None in reports.values():
        return
    by_node = {r: {l["node"]: l for l in rep["layers"] if l["compressed"]}
               for r, rep in reports.items()}
    check(by_node["onnxruntime"].keys() == by_node["qsl"].keys(), "layers: other layers")
    for node, a in by_node["onnxruntime"].items():
        b = by_node["qsl"][node]
        check(a["calibrated"] and b["calibrated"], f"layers {node}: not calibrated")
        check(a.get("calibration_vectors") == b.get("calibration_vectors"),
              f"layers {node}: {a.get('calibration_vectors')} vectors in ORT, "
              f"{b.get('calibration_vectors')} in qsl's executor")
        difference = abs(a["relative_output_error"] - b["relative_output_error"])
        check(difference <= 1e-3 * b["relative_output_error"] + 1e-6,
              f"layers {node}: output error {a['relative_output_error']} from ORT's statistics, "
              f"{b['relative_output_error']} from the executor's")
    print(f"layers: ORT and qsl's executor give the same calibrated layers "
          f"({len(by_node['qsl'])} of them)")


def budget_sensitivity(tool, work):
    """--budget with --calib in ORT weighs each layer by the model's output change, measured
    on the first --sensitivity-samples samples: the reported change is recomputed here from a
    model with that layer alone at the measured code (the standard format, plain ORT)."""
    source = os.path.join(work, "tokens.onnx")  # made by calibrated_beats_data_free
    calib = os.path.join(work, "tokens_calib.npz")
    samples = 32
    code, err, report = compress(tool, source, os.path.join(work, "tokens.budget.onnx"),
                                 ["--calib", calib, "--budget", "2.5",
                                  "--sensitivity-samples", str(samples)])
    check(code == 0, f"budget sensitivity: compression failed ({code}): {err}")
    if code != 0:
        return
    check(report["calibration"].get("sensitivity_samples") == samples,
          f"budget sensitivity: the report's calibration is {report['calibration']}")
    feed = {k: v[:samples] for k, v in np.load(calib).items()}
    reference = run(source, feed)
    for l in (l for l in report["layers"] if l["compressed"]):
        measured = [m for m in l["budget_measurements"] if m["measured"]]
        check(len(measured) == 1 and l.get("sensitivity", 0) > 0,
              f"budget sensitivity {l['node']}: {len(measured)} measured codes, "
              f"sensitivity {l.get('sensitivity')}")
        if len(measured) != 1:
            continue
        m = measured[0]
        check(abs(m["output_change"] ** 2 - l["sensitivity"]) <= 1e-9 * l["sensitivity"],
              f"budget sensitivity {l['node']}: output_change {m['output_change']} is not the "
              f"root of the sensitivity {l['sensitivity']}")
        alone = os.path.join(work, f"tokens.alone_{l['node']}.onnx")
        others = [x["node"] for x in report["layers"] if x["compressed"] and x is not l]
        group = 0 if m["group_size"] == l["shape"][0] else m["group_size"]
        code, err, _ = compress(tool, source, alone,
                                ["--calib", calib, "--format", "standard",
                                 "--override", f"{l['node']}={m['bits']}/{group}"]
                                + [a for o in others for a in ("--skip", o)])
        check(code == 0, f"budget sensitivity {l['node']} alone: {err}")
        if code != 0:
            continue
        y = run(alone, feed)
        change = float(np.sum((y.astype(np.float64) - reference) ** 2) /
                       np.sum(reference.astype(np.float64) ** 2))
        check(abs(change - l["sensitivity"]) <= 1e-3 * change,
              f"budget sensitivity {l['node']}: reported {l['sensitivity']:.6g}, the model with "
              f"it alone at {m['bits']}/{m['group_size']} changes by {change:.6g}")
    code, err, report = compress(tool, source, os.path.join(work, "tokens.budget0.onnx"),
                                 ["--calib", calib, "--budget", "2.5",
                                  "--sensitivity-samples", "0"])
    check(code == 0 and all("sensitivity" not in l for l in report["layers"]) and
          report["calibration"].get("sensitivity_samples") == 0,
          f"--sensitivity-samples 0 still measured: {code} {err}")
    print("budget sensitivity: each layer's output change as ORT measures it")


def sequential(tool, work):
    """--sequential 2 on the token model: the second layer is calibrated again, on the model
    with the first one's code in place, in ORT; its statistics (so its output error) change,
    the first layer's do not. Without --calib it is a named error."""
    source = os.path.join(work, "tokens.onnx")  # made by calibrated_beats_data_free
    calib = os.path.join(work, "tokens_calib.npz")
    reports = {}
    for passes in (0, 2):
        out = os.path.join(work, f"tokens.sequential{passes}.onnx")
        r = subprocess.run([tool, source, "-o", out, "--force", "--json", out + ".json",
                            "--min-weights", "100", "--bits", "2", "--group", "0", "--skip", "E",
                            "--calib", calib, "--sequential", str(passes)],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"--sequential {passes}: {r.stderr}")
        if r.returncode != 0:
            return
        check(("sequential pass 2" in r.stderr) == (passes == 2),
              f"--sequential {passes}: the second pass's progress: {r.stderr[-300:]!r}")
        with open(out + ".json") as f:
            reports[passes] = json.load(f)
    check(reports[2]["calibration"].get("sequential_passes") == 2,
          f"--sequential 2: the report's calibration is {reports[2]['calibration']}")
    error = {p: {l["node"]: l["relative_output_error"] for l in r["layers"] if l["compressed"]}
             for p, r in reports.items()}
    check(error[2]["up"] == error[0]["up"], f"--sequential 2 changed the first layer: {error}")
    check(error[2]["down"] != error[0]["down"],
          f"--sequential 2: the second layer's statistics did not change: {error}")
    code, err, _ = compress(tool, source, os.path.join(work, "bad.onnx"), ["--sequential", "2"])
    check(code == 1 and "--sequential needs --calib" in err, f"--sequential alone: {code} {err!r}")
    print(f"--sequential 2: the second layer recalibrated (output error {error[0]['down']:.4f} "
          f"-> {error[2]['down']:.4f} on its own statistics)")


def bad_feeds(tool, work):
    source = os.path.join(work, "tokens.onnx")  # made by calibrated_beats_data_free
    good = token_samples(np.random.default_rng(24), 12)
    cases = [
        ("missing", {"ids": good["ids"]}, "no array 'mask' for the model's input 'mask'"),
        ("extra", dict(good, extra=good["mask"]), "array 'extra' names no input of the model"),
        ("dtype", dict(good, ids=good["ids"].astype(np.int32)),
         "array 'ids' is int32; the model's input 'ids' takes int64"),
        ("shape", dict(good, mask=np.ones((12, 9), np.float32)),
         "array 'mask' has shape [12, 9]; the model's input 'mask' is [?, 8]"),
        ("samples", dict(good, mask=good["mask"][:10]), "has 10 samples; 'ids' has 12"),
    ]
    for label, arrays, expected in cases:
        path = os.path.join(work, f"bad_{label}.npz")
        np.savez(path, **arrays)
        code, err, _ = compress(tool, source, os.path.join(work, "bad.onnx"), ["--calib", path])
        check(code == 1 and expected in err, f"bad feed {label}: exit {code}, {err.strip()!r}, "
                                             f"expected {expected!r}")
    truncated = os.path.join(work, "bad_truncated.npz")
    with open(os.path.join(work, "tokens_calib.npz"), "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    code, err, _ = compress(tool, source, os.path.join(work, "bad.onnx"), ["--calib", truncated])
    check(code == 1 and "not a readable .npz" in err, f"truncated npz: exit {code}, {err!r}")
    npy = os.path.join(work, "bad_single.npy")
    np.save(npy, good["mask"])
    code, err, _ = compress(tool, source, os.path.join(work, "bad.onnx"), ["--calib", npy])
    check(code == 1 and "feeds a model with one input" in err, f".npy for two inputs: {code}, {err!r}")
    check(not os.path.exists(os.path.join(work, "bad.onnx")), "a bad feed wrote an output")
    print(f"bad feeds: {len(cases) + 2} named errors")


def main(library, tool, run_tool, models, work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    ort.set_default_logger_severity(3)
    calibrated_beats_data_free(library, tool, run_tool, work)
    same_as_the_executor(tool, models, work)
    budget_sensitivity(tool, work)
    sequential(tool, work)
    bad_feeds(tool, work)
    print(f"{failures()} failures")
    return 1 if failures() else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
