#!/usr/bin/env python3
"""Plots weights/s against bits per weight from cpu_kernels_bench's JSON output, and prints the
same results as a markdown table (the one in docs/benchmarks.md).

    build/bench/cpu_kernels_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only \
        --benchmark_out=cpu.json --benchmark_out_format=json
    python3 tools/plot_cpu_bench.py cpu.json docs/cpu_weights_per_s.png

One panel per (shape, batch); one line per (activations, threads); Eigen's fp32 rate is drawn
at 32 bits. Needs matplotlib (pip install matplotlib).
"""
import json
import re
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def cases(path):
    with open(path) as f:
        data = json.load(f)
    for b in data["benchmarks"]:
        if b.get("aggregate_name", "median") != "median":
            continue
        name = b["run_name"] if "run_name" in b else b["name"]
        args = dict(re.findall(r"(\w+):(\d+)", name))
        yield name.split("/")[0], {k: int(v) for k, v in args.items()}, b["weights_per_s"]


def markdown_table(path):
    """Every qsl case with its rate, weight GB/s and the ratio to Eigen's median rate for the
    same shape, batch and threads in the same run."""
    eigen, rows = {}, []
    with open(path) as f:
        for b in json.load(f)["benchmarks"]:
            if b.get("aggregate_name", "median") != "median":
                continue
            a = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", b.get("run_name", b["name"]))}
            if b["name"].startswith("BM_Eigen"):
                eigen[(a["D"], a["batch"], a["threads"])] = b["weights_per_s"]
            else:
                rows.append((a, b))
    print("| N x D | batch | threads | activations | k | time (us) | G weights/s | weight GB/s "
          "| vs Eigen |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows.sort(key=lambda r: (r[0]["D"], r[0]["batch"], r[0]["threads"] == 0, r[0]["kx"], r[0]["k"]))
    for a, b in rows:
        ratio = b["weights_per_s"] / eigen[(a["D"], a["batch"], a["threads"])]
        acts = "float" if a["kx"] == 0 else f"{a['kx']}-bit"
        print(f"| 4096 x {a['D']} | {a['batch']} | {'1' if a['threads'] == 1 else 'all'} | {acts} "
              f"| {a['k']} | {b['real_time']:.0f} | {b['weights_per_s'] / 1e9:.1f} "
              f"| {b['weight_GBps']:.1f} | {ratio:.2f}x |")
    print()
    print("| N x D | batch | threads | Eigen time (us) | G weights/s |")
    print("|---|---|---|---|---|")
    for (d, batch, threads), rate in sorted(eigen.items(), key=lambda e: (e[0][0], e[0][1], e[0][2] == 0)):
        t = 4096 * d * batch / rate * 1e6
        print(f"| 4096 x {d} | {batch} | {'1' if threads == 1 else 'all'} | {t:.0f} | {rate / 1e9:.2f} |")


def main(path, out):
    eigen = {}
    lines = defaultdict(list)
    for kind, a, rate in cases(path):
        panel = (a["D"], a["batch"])
        threads = "1 thread" if a["threads"] == 1 else "all threads"
        if kind == "BM_Eigen":
            eigen[(panel, threads)] = rate
        else:
            label = ("float (LUT)" if a["kx"] == 0 else f"{a['kx']}-bit (popcount)") + ", " + threads
            lines[(panel, label)].append((a["k"], rate))
    panels = sorted({p for p, _ in lines})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for (p, label), points in sorted(lines.items()):
            if p != panel:
                continue
            points.sort()
            ax.plot([k for k, _ in points], [r / 1e9 for _, r in points], marker="o", label=label)
        for (p, threads), rate in eigen.items():
            if p == panel:
                ax.scatter([32], [rate / 1e9], marker="x", s=60, label=f"Eigen fp32, {threads}")
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 3, 32])
        ax.set_xticklabels(["1", "2", "3", "32 (fp32)"])
        ax.set_xlabel("weight bits (planes k)")
        ax.set_ylabel("G weights/s (N·D·batch / time)")
        ax.set_title(f"4096 x {panel[0]}, batch {panel[1]}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
    markdown_table(sys.argv[1])
