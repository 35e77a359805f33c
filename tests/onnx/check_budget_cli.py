#!/usr/bin/env python3
"""qsl-compress --budget / --max-size on the bundled model: the stored bits and the file size
stay within what was asked, the report lists every measured code with the choice marked, and
impossible or conflicting requests exit 1 with a message naming the value.

    python3 tests/onnx/check_budget_cli.py QSL_COMPRESS BUNDLED_MODEL WORK_DIR
"""
import json
import math
import os
import shutil
import subprocess
import sys


def main(tool, model, work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    failures = []

    def check(ok, message):
        if not ok:
            failures.append(message)
            print("FAIL:", message)

    def compress(name, extra):
        out = os.path.join(work, name + ".onnx")
        report = out + ".json"
        r = subprocess.run([tool, model, "-o", out, "-q", "--json", report, "--method", "greedy",
                            "--min-weights", "0"] + extra, capture_output=True, text=True)
        data = json.load(open(report)) if r.returncode == 0 else None
        return r, out, data

    r, out, report = compress("budget2", ["--budget", "2"])
    check(r.returncode == 0, f"--budget 2 failed: {r.stderr}")
    if report:
        layers = [l for l in report["layers"] if l["compressed"]]
        weights = sum(math.prod(l["shape"]) for l in layers)
        stored = sum(l["bytes_after"] for l in layers)
        check(8 * stored <= 2 * weights, f"--budget 2: {8 * stored / weights:.3f} bits per weight")
        check(report["totals"]["budget_code_bytes"] == int(2 * weights / 8),
              f"--budget 2: budget_code_bytes {report['totals']['budget_code_bytes']}")
        for l in layers:
            chosen = [m for m in l["budget_measurements"]
                      if m["bits"] == l["bits"] and m["group_size"] == l["group_size"]]
            check(len(chosen) == 1 and chosen[0]["bytes"] == l["bytes_after"],
                  f"--budget 2: {l['node']}'s code is not one it measured")
        check("budget: bits/group:error" in r.stdout and "*" in r.stdout,
              "--budget 2: the table does not show the measured codes")

    r, out, report = compress("sized", ["--max-size", "300KB"])
    check(r.returncode == 0 and os.path.getsize(out) <= 300_000,
          f"--max-size 300KB: exit {r.returncode}, "
          f"{os.path.getsize(out) if os.path.exists(out) else 'no'} bytes: {r.stderr}")

    for extra, needle in [(["--budget", "0.5"], "the smallest codes of the layers take"),
                          (["--budget", "2", "--edge-bits", "4"], "leave edge_bits 0"),
                          (["--max-size", "1000"], "max_model_bytes is 1000"),
                          (["--budget", "-1"], "--budget")]:
        r, out, _ = compress("bad", extra)
        check(r.returncode == 1 and needle in r.stderr and not os.path.exists(out),
              f"{extra}: exit {r.returncode}, {r.stderr.strip()!r}")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("qsl-compress --budget / --max-size: within the budget, named errors")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
