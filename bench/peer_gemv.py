#!/usr/bin/env python3
"""qsl's low-bit GEMV beside its peers, in the same minutes: y = W x, one thread.

    python3 bench/peer_gemv.py build [--ggml /path/to/ggml] [--rounds 5]
    python3 bench/peer_gemv.py build --check-filters   # a CTest: the qsl cases exist

Contenders (each timed once per round, rounds interleaved, medians reported):
  * qsl (build/bench/cpu_kernels_bench): k = 2, groups of 128 (2.5 bits per weight with the
    fp32 coefficients), 8-bit activations on the word tables (AVX-512), the byte tables and AND + popcount
    (and at batches on byte dots), float activations (look-up tables); the active CPU target
    and QSL_CPU_TARGET=avx2;
  * Eigen fp32 GEMV (same binary);
  * ggml MUL_MAT for tq2_0, q2_K and q4_0, when --ggml names a ggml checkout with a CPU build
    in its build/ folder (this script compiles bench/peers/ggml_mul_mat.cpp against it; no
    ggml code or binary is part of qsl); skipped when absent;
  * ONNX Runtime MatMulNBits 2- and 4-bit, block 128, accuracy_level 4 (int8 activations),
    from PyPI onnxruntime (needs onnx_ir for its quantizer); skipped when absent.
Shapes: 4096 x 4096 and 4096 x 14336 with one matrix reused (cache-resident), 4096 x 4096
with 12 matrices used in turn (streaming: more bytes than the L3, as a model's layers are),
and 4096 x 4096 at batches 16 and 64 (qsl: 8-bit activations only, on the encoded kernels
and on cpu_forward_int8's VNNI tiles, which also round W_hat's rows to int8 grids).
Rates are G weights/s = rows * cols / time. The machine is noisy (a shared VM): compare rows of
one run, and read the ratios, not the absolute rates.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

SHAPES = [(4096, 4096, 1, 1), (4096, 14336, 1, 1), (4096, 4096, 12, 1), (4096, 4096, 1, 16),
          (4096, 4096, 1, 64)]  # rows, cols, matrices, batch


# Kernels only the AVX-512 targets have: not run with QSL_CPU_TARGET=avx2.
AVX512_ONLY = ("word tables", "VNNI tiles")


def qsl_filters(n, d, matrices, batch):
    if batch > 1:
        return {
            "qsl k=2 8-bit act, word tables":
                f"BM_EncodedPaths/N:{n}/D:{d}/batch:{batch}/k:2/kx:8/kernel:3/",
            "qsl k=2 8-bit act, byte tables":
                f"BM_EncodedPaths/N:{n}/D:{d}/batch:{batch}/k:2/kx:8/kernel:1/",
            "qsl k=2 8-bit act, AND+popcount":
                f"BM_EncodedPaths/N:{n}/D:{d}/batch:{batch}/k:2/kx:8/kernel:0/",
            "qsl k=2 8-bit act, byte dots":
                f"BM_EncodedPaths/N:{n}/D:{d}/batch:{batch}/k:2/kx:8/kernel:2/",
            # cpu_forward_int8: int8 grids of x and of W_hat's rows, products from the code.
            "qsl k=2 int8 products, VNNI tiles":
                f"BM_Int8Products/N:{n}/D:{d}/batch:{batch}/kernel:2/k:2/",
        }
    if matrices > 1:
        return {
            "qsl k=2 8-bit act, the target's tables":
                f"BM_EncodedStreaming/N:{n}/D:{d}/k:2/kx:8/matrices:{matrices}/bytes:1/",
            "qsl k=2 8-bit act, AND+popcount":
                f"BM_EncodedStreaming/N:{n}/D:{d}/k:2/kx:8/matrices:{matrices}/bytes:0/",
        }
    return {
        "qsl k=2 8-bit act, word tables": f"BM_EncodedPaths/N:{n}/D:{d}/batch:1/k:2/kx:8/kernel:3/",
        "qsl k=2 8-bit act, byte tables": f"BM_EncodedPaths/N:{n}/D:{d}/batch:1/k:2/kx:8/kernel:1/",
        "qsl k=2 8-bit act, AND+popcount":
            f"BM_EncodedPaths/N:{n}/D:{d}/batch:1/k:2/kx:8/kernel:0/",
        "qsl k=2 float act": f"BM_Qsl/N:{n}/D:{d}/batch:1/threads:1/k:2/kx:0/",
        "Eigen fp32": f"BM_Eigen/N:{n}/D:{d}/batch:1/threads:1/",
    }


def check_filters(bench):
    """Every qsl filter of every shape must name exactly one registered cpu_kernels_bench case
    (a renamed argument would otherwise stop a long run with "0 results")."""
    listed = subprocess.run([bench, "--benchmark_list_tests"], check=True, capture_output=True,
                            text=True).stdout.split()
    bad = []
    for n, d, matrices, batch in SHAPES:
        for label, pattern in qsl_filters(n, d, matrices, batch).items():
            found = [name for name in listed if re.search("^" + pattern, name)]
            if len(found) != 1:
                bad.append(f"{label} ({n} x {d}, {matrices} matrices, batch {batch}): "
                           f"{pattern} matches {len(found)} cases")
    if bad:
        raise SystemExit("peer_gemv.py: filters that do not name one case of " + bench + ":\n  " +
                         "\n  ".join(bad))
    print(f"peer_gemv.py: every filter names one case of {bench}")


def run_qsl(bench, pattern, target):
    env = dict(os.environ)
    if target:
        env["QSL_CPU_TARGET"] = target
    out = subprocess.run([bench, f"--benchmark_filter=^{pattern}", "--benchmark_format=json",
                          "--benchmark_min_time=0.5"], env=env, check=True,
                         capture_output=True, text=True).stdout
    results = json.loads(out)["benchmarks"]
    runs = [b for b in results if not b.get("error_occurred")]
    if len(results) == 1 and not runs:
        return None  # skipped by the benchmark: this target has no such kernel
    if len(runs) != 1:
        raise SystemExit(f"cpu_kernels_bench: {len(runs)} results for {pattern}")
    return runs[0]["real_time"]  # microseconds (the benchmarks' unit)


def build_ggml_harness(ggml, work):
    exe = os.path.join(work, "ggml_mul_mat")
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "ggml_mul_mat.cpp")
    lib = os.path.join(ggml, "build", "src")
    subprocess.run(["g++", "-O2", "-std=c++17", f"-I{ggml}/include", source, "-o", exe,
                    f"-L{lib}", "-lggml", "-lggml-base", "-lggml-cpu", f"-Wl,-rpath,{lib}"],
                   check=True)
    return exe


def run_ggml(exe, kind, n, d, matrices, batch):
    calls = max(10, int(3e9 / (n * d * batch)))
    out = subprocess.run([exe, kind, str(n), str(d), str(matrices), str(calls), "1", str(batch)],
                         check=True, capture_output=True, text=True).stdout
    return float(out.split()[0])


ORT_CHILD = """
import sys, time, numpy as np, onnxruntime as ort
o = ort.SessionOptions()
o.intra_op_num_threads = 1
o.inter_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
d, nodes, batch = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
x = {"x": np.random.default_rng(3).standard_normal((batch, d)).astype(np.float32)}
s.run(None, x)
calls = max(5, int(3e9 / (4096 * d * nodes * batch)))
best = 1e9
for _ in range(3):
    t = time.perf_counter()
    for _ in range(calls):
        s.run(None, x)
    best = min(best, (time.perf_counter() - t) / calls / nodes)
print(best * 1e6)
"""


def ort_models(work, n, d, matrices):
    """MatMul models of `matrices` parallel nodes (one input x [batch, d]), and their MatMulNBits
    forms; path per label."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    fp32 = os.path.join(work, f"matmul_{n}x{d}x{matrices}.onnx")
    rng = np.random.default_rng(1)
    weights = [numpy_helper.from_array(rng.standard_normal((d, n)).astype(np.float32), f"w{i}")
               for i in range(matrices)]
    nodes = [helper.make_node("MatMul", ["x", f"w{i}"], [f"y{i}"]) for i in range(matrices)]
    outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["B", n])
               for i in range(matrices)]
    graph = helper.make_graph(nodes, "gemv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", d])],
                              outputs, weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), fp32)
    out = {}
    for bits in (2, 4):
        path = fp32.replace(".onnx", f".nbits{bits}.onnx")
        q = MatMulNBitsQuantizer(onnx.load(fp32), bits=bits, block_size=128, is_symmetric=True,
                                 accuracy_level=4)
        q.process()
        q.model.save_model_to_file(path, use_external_data_format=False)
        out[f"ORT MatMulNBits {bits}-bit (acc 4)"] = path
    os.remove(fp32)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("build", help="qsl's build folder (holds bench/cpu_kernels_bench)")
    p.add_argument("--ggml", help="a ggml checkout with a CPU build in build/ (optional)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    p.add_argument("--json", help="write every round's times here")
    p.add_argument("--batches", action="store_true",
                   help="also batches 16 and 64 (4096 x 4096); default: batch 1 only")
    p.add_argument("--check-filters", action="store_true",
                   help="only check that every qsl filter names one benchmark case (a test)")
    a = p.parse_args()
    bench = os.path.join(a.build, "bench", "cpu_kernels_bench")
    if not os.path.exists(bench):
        raise SystemExit(f"{bench} does not exist; build qsl first (tools/build.sh)")
    if a.check_filters:
        check_filters(bench)
        return
    work = tempfile.mkdtemp(prefix="qsl_peer_gemv_")
    shapes = [s for s in SHAPES if a.batches or s[3] == 1]
    ggml = None
    if a.ggml:
        if os.path.exists(os.path.join(a.ggml, "build", "src")):
            ggml = build_ggml_harness(a.ggml, work)
        else:
            print(f"# ggml: no build in {a.ggml}/build; skipped", file=sys.stderr)
    ort_paths = {}
    if not a.no_ort:
        try:
            for n, d, matrices, _ in shapes:
                if (n, d, matrices) not in ort_paths:
                    ort_paths[(n, d, matrices)] = ort_models(work, n, d, matrices)
        except ImportError as e:
            print(f"# ONNX Runtime: {e}; skipped", file=sys.stderr)
            ort_paths = {}
    times = {}  # (shape, label) -> [microseconds per call]
    for r in range(a.rounds):
        print(f"# round {r + 1} of {a.rounds}", file=sys.stderr, flush=True)
        for n, d, matrices, batch in shapes:
            shape = (n, d, matrices, batch)
            for target in ("", "avx2"):
                for label, pattern in qsl_filters(n, d, matrices, batch).items():
                    if target and (label == "Eigen fp32" or label.endswith(AVX512_ONLY)):
                        continue
                    name = label + (" (QSL_CPU_TARGET=avx2)" if target else "")
                    us = run_qsl(bench, pattern, target)
                    if us is not None:
                        times.setdefault((shape, name), []).append(us)
            if ggml:
                for kind in ("tq2_0", "q2_K", "q4_0"):
                    times.setdefault((shape, f"ggml {kind}"), []).append(
                        run_ggml(ggml, kind, n, d, matrices, batch))
            for label, path in ort_paths.get((n, d, matrices), {}).items():
                out = subprocess.run([sys.executable, "-c", ORT_CHILD, path, str(d),
                                      str(matrices), str(batch)], check=True,
                                     capture_output=True, text=True).stdout
                times.setdefault((shape, label), []).append(float(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump([{"shape": list(k[0]), "label": k[1], "us": v} for k, v in times.items()],
                      f, indent=1)
    for n, d, matrices, batch in shapes:
        shape = (n, d, matrices, batch)
        rows = [(label, statistics.median(v)) for (s, label), v in times.items() if s == shape]
        peers = [t for label, t in rows if label.startswith(("ggml", "ORT"))]
        best_peer = min(peers) if peers else None
        kind = "cache-resident" if matrices == 1 else f"streaming, {matrices} matrices"
        print(f"\n{n} x {d} ({kind}), batch {batch}, 1 thread, medians of {a.rounds} rounds")
        print("| kernel | us per call | G weights/s | vs best peer |")
        print("|---|---|---|---|")
        for label, t in sorted(rows, key=lambda x: x[1]):
            ratio = f"{best_peer / t:.2f}x" if best_peer else "-"
            print(f"| {label} | {t:.1f} | {n * d * batch / t / 1e3:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
