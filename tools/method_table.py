#!/usr/bin/env python3
"""The decomposition methods side by side on the bundled Fashion-MNIST model (issue 7): for each
budget of stored bits per weight (coefficients included) over the compressed layers, compress
the model with greedy, alternating and multi_start BCQ (weight error only), calibration-driven
BCQ (output error on 1,024 *training* images, error feedback), TWD (shared ternary basis,
calibrated) on the large FC layer with calibrated BCQ elsewhere, and a mixed allocation (TWD on
the FC layer, 4-bit codes on the 1.4% of weights elsewhere), and run each on the 10,000 test images with float activations and with 8- and
4-bit activations (calibrated quantizers where the model has them). Also the original method's
headline shape: TWD on the FC layers only, at <= 5.2% of their fp32 size.

    python3 tools/method_table.py [--build build] [--limit N] [--json results.json]
"""
import argparse
import json
import os
import tempfile

import demo

CALIB = demo.CALIB  # 1,024 training images

# Budget (stored bits per weight) -> the per-row code that fits it.
BUDGETS = [
    ("1", ["--bits", "1", "--group", "0"], 1.0),
    ("1.5", ["--bits", "1", "--group", "64"], 1.5),
    ("2", ["--bits", "2", "--group", "0"], 2.0),
    ("3", ["--bits", "3", "--group", "0"], 3.0),
]
METHODS = [
    ("greedy", lambda code, bits: code + ["--method", "greedy"]),
    ("alternating", lambda code, bits: code + ["--method", "alternating"]),
    ("multi_start", lambda code, bits: code + ["--method", "multi_start"]),
    ("calibrated BCQ", lambda code, bits: code + CALIB),
    # TWD on the large FC layer (the original method's target), calibrated BCQ on the others.
    ("TWD (FC1) + calibrated BCQ", lambda code, bits: code + CALIB + [
        "--twd", "/classifier/classifier.1/*", "--twd-bits", str(bits)]),
]


def mixed_twd_bits(budget):
    """FC1's TWD budget when the other compressed layers (the second conv and FC2, 1.4% of the
    weights) get 4-bit calibrated codes, so that the whole stays within `budget` bits/weight."""
    import onnx
    from onnx import numpy_helper
    sizes = {t.name: numpy_helper.to_array(t).size for t in onnx.load(demo.MODEL).graph.initializer}
    fc1, conv2, fc2 = sizes["classifier.1.weight"], sizes["onnx::Conv_26"], sizes["classifier.4.weight"]
    # 4 planes + one fp32 coefficient per plane per row: 4 + 128 / D bits per weight.
    others = conv2 * (4 + 128 / 288) + fc2 * (4 + 128 / 512)
    return (budget * (fc1 + conv2 + fc2) - others) / fc1


METHODS.append(("mixed: TWD FC1 + 4-bit calibrated rest", lambda code, bits: [
    "--bits", "4", "--group", "0", "--twd", "/classifier/classifier.1/*",
    "--twd-bits", f"{mixed_twd_bits(bits):.4f}"] + CALIB))
ACTIVATIONS = [0, 8, 4]
# The original method's headline: the FC layers only (the conv left fp32) at <= 5.2% of their
# fp32 size: TWD on FC1 within 1.6 bits per weight, 4-bit calibrated BCQ on the 10-way FC2 (a
# shared basis of K < 10 vectors cannot keep 10 outputs apart).
FC_ONLY = [("TWD FC1 (1.6 b/w) + 4-bit FC2, conv fp32",
            ["--twd", "/classifier/classifier.1/*", "--twd-bits", "1.6", "--bits", "4",
             "--group", "0", "--skip", "/features/*"] + CALIB)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default=os.path.join(demo.ROOT, "build"))
    parser.add_argument("--limit", type=int, default=0, help="first N test images (0: all)")
    parser.add_argument("--json", help="write the rows as JSON")
    args = parser.parse_args()
    compress = os.path.join(args.build, "examples", "qsl-compress")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        fp32 = demo.qsl_run(args.build, demo.MODEL, args.limit, 0, work)["accuracy"]
        settings = [(budget, name, make(code, bits))
                    for budget, code, bits in BUDGETS for name, make in METHODS]
        settings += [("fc", name, options) for name, options in FC_ONLY]
        for budget, name, options in settings:
            print(f"{budget} bits, {name} ...", flush=True)
            out = os.path.join(work, "model.onnx")
            report = os.path.join(work, "compress.json")
            demo.run([compress, demo.MODEL, "-o", out, "-q", "--force", "--json", report] + options)
            with open(report) as f:
                totals = json.load(f)["totals"]
            row = {"budget": budget, "method": name, "options": options,
                   "size_ratio": totals["size_ratio"],
                   "weight_ratio": totals["weight_bytes_after"] / totals["weight_bytes_before"],
                   "bits_per_weight": totals["bits_per_weight"]}
            for bits in ACTIVATIONS:
                row[f"accuracy_a{bits}"] = demo.qsl_run(args.build, out, args.limit, bits, work)["accuracy"]
            rows.append(row)

    header = (f"{'bits':>4} {'method':44} {'b/w':>5} {'model':>6} {'layers':>6} "
              f"{'float':>14} {'8-bit act':>14} {'4-bit act':>14}")
    print(f"\nfp32: {100 * fp32:.2f}%\n" + header + "\n" + "-" * len(header))
    for r in rows:
        cells = " ".join(f"{100 * r[f'accuracy_a{b}']:6.2f}% ({100 * (fp32 - r[f'accuracy_a{b}']):+5.2f})"
                         for b in ACTIVATIONS)
        print(f"{r['budget']:>4} {r['method']:44} {r['bits_per_weight']:5.2f} "
              f"{100 * r['size_ratio']:5.1f}% {100 * r['weight_ratio']:5.1f}% {cells}")
    print("\nb/w: stored bits per weight of the compressed layers; model: file size vs fp32; layers: "
          "compressed layers' bytes vs their fp32 bytes; accuracy (drop vs fp32, points).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"fp32_accuracy": fp32, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
