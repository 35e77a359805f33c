#!/usr/bin/env python3
"""Issue 5's targets, judged from a cuda_bench JSON file (tools/gpu-check.sh writes one):

    python3 tools/cuda_targets.py OUTDIR/cuda_bench.json

For each GEMV shape at k = 2 (and the GEMM at batch 64) it prints qsl's time beside cuBLAS's
from the same run, the ratios and the share of the memory roofline, and whether each target is
met: GEMV >= 4x SGEMV and >= 50% of the roofline (must); >= 4x HGEMV and >= 75% (aim); GEMM at
batch 64 >= 1x HGEMM (aim). Plain calls and CUDA-graph replays are judged separately (files
from before the graph cases count as plain calls). Reads only the file; exits 0 whatever it
finds, 2 for a file it cannot use.
"""
import json
import re
import sys


def parse(name):
    """('BM_Qsl', graph?, {arg: value}) from a benchmark name."""
    parts = name.split("/")
    match = re.fullmatch(r"(\w+)(?:<(true|false)>)?", parts[0])
    if not match:
        return None
    args = {}
    for part in parts[1:]:
        if ":" in part:
            key, value = part.split(":", 1)
            args[key] = int(value)
    return match.group(1), match.group(2) == "true", args


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: tools/cuda_targets.py CUDA_BENCH_JSON")
    try:
        with open(sys.argv[1]) as f:
            runs = json.load(f)["benchmarks"]
    except (OSError, ValueError, KeyError) as error:
        print(f"cuda_targets: cannot read {sys.argv[1]}: {error}", file=sys.stderr)
        sys.exit(2)
    table = {}  # (family, graph, args as a tuple) -> run
    for run in runs:
        if run.get("error_occurred") or run.get("run_type", "iteration") != "iteration":
            continue
        parsed = parse(run["name"])
        if parsed:
            family, graph, args = parsed
            table[(family, graph, tuple(sorted(args.items())))] = run

    def find(family, graph, **wanted):
        for (f, g, args), run in table.items():
            values = dict(args)
            if f == family and g == graph and all(values.get(k, 0) == v for k, v in wanted.items()):
                return run
        return None

    def verdict(ok):
        return "met" if ok else "NOT met"

    for graph in (False, True):
        label = "graph replays" if graph else "plain calls"
        lines = []
        for n in (4096, 8192):
            qsl = find("BM_Qsl", graph, N=n, batch=1, k=2, kx=0, kernel=1, fp16=0)
            sgemv = find("BM_CublasFloat", graph, N=n, batch=1)
            hgemv = find("BM_CublasHalf", graph, N=n, batch=1)
            qsl_half = find("BM_Qsl", graph, N=n, batch=1, k=2, kx=0, kernel=1, fp16=1) or qsl
            if not (qsl and sgemv):
                continue
            t = qsl["real_time"]
            vs_s = sgemv["real_time"] / t
            roof = qsl.get("roofline_pct", 0.0)
            line = (f"  GEMV {n}^2 k=2: qsl {t:.1f} us, SGEMV {sgemv['real_time']:.1f} us: "
                    f"{vs_s:.2f}x (>= 4x: {verdict(vs_s >= 4)}), roofline {roof:.1f}% "
                    f"(>= 50%: {verdict(roof >= 50)}; aim 75%: {verdict(roof >= 75)})")
            if hgemv:
                vs_h = hgemv["real_time"] / qsl_half["real_time"]
                line += (f"; HGEMV {hgemv['real_time']:.1f} us vs qsl fp16 "
                         f"{qsl_half['real_time']:.1f} us: {vs_h:.2f}x (aim 4x: {verdict(vs_h >= 4)})")
            lines.append(line)
        gemm = find("BM_Qsl", graph, N=4096, batch=64, k=2, kx=0, kernel=2, fp16=0)
        hgemm = find("BM_CublasHalf", graph, N=4096, batch=64)
        if gemm and hgemm:
            ratio = hgemm["real_time"] / gemm["real_time"]
            lines.append(f"  GEMM 4096^2 batch 64: qsl {gemm['real_time']:.1f} us, HGEMM "
                         f"{hgemm['real_time']:.1f} us: {ratio:.2f}x (aim 1x: {verdict(ratio >= 1)})")
        if lines:
            print(f"{label}:")
            print("\n".join(lines))
    if not table:
        print("cuda_targets: no benchmark results in the file (no GPU in that run?)")


if __name__ == "__main__":
    main()
