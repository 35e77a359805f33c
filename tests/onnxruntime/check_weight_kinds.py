#!/usr/bin/env python3
"""Every weight kind qsl-compress compresses besides products, in ONNX Runtime
(tests/onnx/make_models.py's weight_kinds.onnx: embedding tables, a bidirectional LSTM, a GRU,
a 1-D and a grouped 2-D ConvTranspose):

* a table only a Gather reads becomes a QuantizedGather (int64 and int32 ids, negative ids):
  its rows equal the code's rows decoded in numpy in qsl::reconstruct's order, exactly; a
  table a Gemm also reads (tied embeddings), every LSTM / GRU weight (W and R) and every
  ConvTranspose weight stay on ORT's own operators, decoded by standard operators that ORT
  folds at load;
* round trip: the compressed file's outputs equal the original model's with each weight
  replaced by its code decoded in numpy (float tolerance: the folded decoder sums in another
  order), in the qsl and the standard format, at 2 bits binary and 3 bits ternary in groups;
* ids out of range and ids of another type are ORT errors naming the node and the value;
* calibration through ORT sees the LSTM's and GRU's inputs (W: X, R: the hidden states);
  tables and ConvTranspose weights are fitted to the weight, uncalibrated.

    python3 tests/onnxruntime/check_weight_kinds.py LIBQSL_ONNXRUNTIME QSL_COMPRESS MODELS_DIR \\
        WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import check, failures  # noqa: E402

ROWS_BY_TABLE = 40


def session(path, library=None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if library:
        options.register_custom_ops_library(library)
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run(path, ids, library=None):
    s = session(path, library)
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"ids": ids})))


def compress(tool, source, out, options):
    report = out + ".json"
    subprocess.run([tool, source, "-o", out, "-q", "--force", "--json", report, "--min-weights",
                    "0", "--int8-rows", "0"] + options, check=True, stdout=subprocess.DEVNULL)
    with open(report) as f:
        return json.load(f)


def decode(signs, coefficients, masks, rows, cols, group):
    """W_hat [rows, cols] in float32, summed as qsl::reconstruct_row does: groups, then planes
    in order, each adding +alpha or -alpha (nothing where a ternary mask is 0)."""
    bits = signs.shape[1]
    s = np.unpackbits(signs, axis=2, bitorder="little")[:, :, :cols].astype(bool)
    m = (np.unpackbits(masks, axis=2, bitorder="little")[:, :, :cols].astype(bool)
         if masks is not None else np.ones_like(s))
    group = group if 0 < group < cols else cols
    w = np.zeros((rows, cols), np.float32)
    for c in range(cols):
        alpha = coefficients[:, c // group, 0, :]  # [rows, bits]
        for j in range(bits):
            term = np.where(s[:, j, c], alpha[:, j], -alpha[:, j]).astype(np.float32)
            w[:, c] = np.where(m[:, j, c], w[:, c] + term, w[:, c])
    return w


def codes_of(path):
    """{weight name: (W_hat as the tensor's shape, node op)} for every qsl code of the file:
    QuantizedGather nodes and the metadata entries of weights kept on ORT's operators."""
    model = onnx.load(path)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type != "QuantizedGather":
            continue
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        masks = init[n.input[3]] if len(n.input) > 3 else None
        w = decode(init[n.input[1]], init[n.input[2]], masks, a["rows"], a["cols"],
                   a["group_size"])
        out[a["weight_name"].decode()] = (w, "QuantizedGather")
    for p in model.metadata_props:
        if not p.key.startswith("ai.qsl.decoded_weight."):
            continue
        fields, weight = p.value.split(" weight=")
        f = dict(x.split("=", 1) for x in fields.split())
        rows, cols = int(f["rows"]), int(f["cols"])
        w = decode(init[f["signs"]], init[f["coefficients"]], init.get(f.get("masks")), rows,
                   cols, int(f["group_size"]))
        shape = [int(d) for d in f["shape"].split(",")]
        out[weight] = (w.T.reshape(shape) if f["transposed"] == "1" else w.reshape(shape),
                       "decoded at load")
    return out


def with_weights(source, weights, out):
    """The source model with these initializers replaced (the decoded codes)."""
    model = onnx.load(source)
    for t in model.graph.initializer:
        if t.name in weights:
            t.CopyFrom(numpy_helper.from_array(weights[t.name].astype(np.float32), t.name))
    onnx.save(model, out)


def main(library, compress_tool, models, work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    source = os.path.join(models, "weight_kinds.onnx")
    rng = np.random.default_rng(5)
    ids = rng.integers(-ROWS_BY_TABLE, ROWS_BY_TABLE, (3, 5)).astype(np.int64)
    ids[0, 0], ids[0, 1] = ROWS_BY_TABLE - 1, -ROWS_BY_TABLE  # both ends
    ids_pos = np.abs(ids) % ROWS_BY_TABLE  # Cast to int32 and Gather: ORT's own Gather checks

    expected_runs = {
        "emb": "QuantizedGather", "emb32": "QuantizedGather",
        "tied": "Gather on the runtime's kernel (the table is read by 2 nodes; decoded at load)",
        "lstm_w": "LSTM on the runtime's kernel (qsl has no recurrent kernel; W decoded at load)",
        "lstm_r": "LSTM on the runtime's kernel (qsl has no recurrent kernel; R decoded at load)",
        "gru_w": "GRU on the runtime's kernel (qsl has no recurrent kernel; W decoded at load)",
        "gru_r": "GRU on the runtime's kernel (qsl has no recurrent kernel; R decoded at load)",
        # --int8-rows 0: QuantizedConvTranspose (8-bit activations only) is not chosen.
        "ct1_w": "ConvTranspose on the runtime's kernel (qsl's transposed convolution runs on "
                 "8-bit activations only (int8_min_rows > 0, float layers); weight decoded at "
                 "load)",
        "ct2_w": "ConvTranspose on the runtime's kernel (a grouped transposed convolution; "
                 "weight decoded at load)"}
    for label, options in [("b2", ["--bits", "2"]),
                           ("t3g8", ["--bits", "3", "--basis", "ternary", "--group", "8"]),
                           ("b2f16", ["--bits", "2", "--coefficients", "f16"])]:
        qsl = os.path.join(work, f"{label}.qsl.onnx")
        standard = os.path.join(work, f"{label}.standard.onnx")
        report = compress(compress_tool, source, qsl, options)
        compress(compress_tool, source, standard, options + ["--format", "standard"])
        layers = {l["weight"]: l for l in report["layers"]}
        check(sorted(layers) == sorted(expected_runs),
              f"{label}: layers {sorted(layers)}, expected {sorted(expected_runs)} (the shape "
              f"Gather is no layer; the head shares 'tied')")
        for weight, runs in expected_runs.items():
            got = layers.get(weight, {}).get("runs_as")
            check(got == runs, f"{label}: {weight} runs as {got!r}, expected {runs!r}")
            check(layers.get(weight, {}).get("compressed"), f"{label}: {weight} not compressed")

        if "f16" in label:  # the decoders below read the halves as the file holds them
            types = {t.data_type for t in onnx.load(qsl).graph.initializer
                     if t.name.endswith("_coefficients")}
            check(types == {onnx.TensorProto.FLOAT16}, f"{label}: coefficient types {types}")
        codes = codes_of(qsl)
        check(sorted(codes) == sorted(expected_runs), f"{label}: codes of {sorted(codes)}")
        out_qsl = run(qsl, ids_pos, library)
        # QuantizedGather: exactly the decoded rows, negative ids counting from the end.
        out_neg = run(qsl, ids, library)
        table = codes["emb"][0]
        check(np.array_equal(out_neg["e"], table[ids % ROWS_BY_TABLE]),
              f"{label}: QuantizedGather rows differ from the decoded table by "
              f"{np.abs(out_neg['e'] - table[ids % ROWS_BY_TABLE]).max()}")
        check(np.array_equal(out_qsl["e32"], codes["emb32"][0][ids_pos]),
              f"{label}: QuantizedGather on int32 ids differs from the decoded table")
        # Round trip: the original model on the decoded weights.
        decoded = os.path.join(work, f"{label}.decoded.onnx")
        with_weights(source, {w: c[0] for w, c in codes.items()}, decoded)
        reference = run(decoded, ids_pos)
        out_standard = run(standard, ids_pos)
        for name, want in reference.items():
            scale = max(float(np.abs(want).max()), 1e-30)
            for fmt, got in [("qsl", out_qsl[name]), ("standard", out_standard[name])]:
                err = float(np.abs(got - want).max()) / scale
                check(err <= 1e-5, f"{label} {fmt}: output {name} is {err:.2e} (relative) from "
                                   "the model on the decoded weights")
        # The codes are the layers' 2- or 3-bit approximations, not the weights themselves.
        original = {t.name: numpy_helper.to_array(t) for t in onnx.load(source).graph.initializer}
        for weight, (w, _) in codes.items():
            rel = np.linalg.norm(w - original[weight]) / np.linalg.norm(original[weight])
            check(abs(rel - layers[weight]["relative_error"]) <= 1e-4 and 0 < rel < 0.6,
                  f"{label}: {weight}'s decoded code is {rel:.4f} from the weight; the report "
                  f"says {layers[weight]['relative_error']:.4f}")

    # Bad ids: named errors, no crash.
    qsl = os.path.join(work, "b2.qsl.onnx")
    s = session(qsl, library)
    for bad, needle in [(np.array([[0, 1, 2, 3, ROWS_BY_TABLE]], np.int64),
                         f"index {ROWS_BY_TABLE} (element 4 of the indices) is out of range"),
                        (np.array([[0, 1, -ROWS_BY_TABLE - 1, 3, 4]], np.int64),
                         f"index {-ROWS_BY_TABLE - 1} (element 2")]:
        try:
            s.run(["e"], {"ids": bad})
            check(False, f"ids {bad.tolist()} ran")
        except Exception as e:  # noqa: BLE001 (ORT raises its own exception types)
            check(needle in str(e) and "QuantizedGather node 'embed" in str(e),
                  f"ids {bad.tolist()}: {e}")

    # Calibration through ORT: the recurrent weights see their inputs (W: X's 24 values per
    # step; R: the hidden states, 16 for the LSTM's two directions together, 8 for the GRU).
    calibrated = os.path.join(work, "calibrated.qsl.onnx")
    report = compress(compress_tool, source, calibrated,
                      ["--bits", "2", "--calib", os.path.join(models, "weight_kinds_input.npz"),
                       "--calib-runtime", "onnxruntime"])
    layers = {l["weight"]: l for l in report["layers"]}
    samples, steps = 64, 5
    for weight, vectors in [("lstm_w", samples * steps), ("lstm_r", 2 * samples * steps),
                            ("gru_w", samples * steps), ("gru_r", samples * steps)]:
        got = layers[weight].get("calibration_vectors")
        check(got == vectors and layers[weight].get("relative_output_error") is not None,
              f"calibrated {weight}: {got} vectors, expected {vectors}")
    for table in ["emb", "emb32", "tied", "ct1_w", "ct2_w"]:
        check(not layers[table].get("calibrated"), f"calibrated: {table} was calibrated")
    check(np.isfinite(run(calibrated, ids_pos, library)["lstm_y"]).all(),
          "calibrated: the LSTM's output is not finite")

    if failures():
        print(f"{failures()} check(s) failed")
        return 1
    print("weight kinds: tables, LSTM, GRU and ConvTranspose weights in ORT agree with their "
          "decoded codes")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
