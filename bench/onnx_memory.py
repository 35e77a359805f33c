#!/usr/bin/env python3
"""Resident memory of compressed models beside their fp32 originals, in the same run.

    python3 bench/onnx_memory.py QSL_COMPRESS QSL_RUN WORK_DIR [--bits 2] [--group 128]

Builds two synthetic models with random weights (the memory does not depend on the values):
  * encoder: a BERT-style transformer encoder, 21 M parameters (vocabulary 16000, hidden 512,
    4 layers, FFN 2048: Gather embeddings, MatMul projections, Softmax attention,
    LayerNormalization, Erf GELU); ONNX Runtime runs it, qsl-run does not (its operators);
  * mlp: 6 Gemm layers of 2048 x 2048 with Relu (25 M parameters), which both run.
compresses each with qsl-compress in the standard and the qsl format, and runs every model in
a fresh process: ONNX Runtime (the CPU provider, a session and one batch of inputs) or qsl-run
(--random inputs). Prints the peak resident set (the kernel's maxrss of the child: what the
machine must have), the resident set once ONNX Runtime has run (qsl-run does not report it) and
the files' sizes, as a markdown table.
"""
import argparse
import json
import os
import resource
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def tensor(rng, shape, name, scale=0.02):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def encoder_model(rng, vocab=16000, hidden=512, layers=4, ffn=2048, heads=8, seq=128):
    nodes, inits = [], []
    head = hidden // heads

    def const(values, name, dtype=np.int64):
        inits.append(numpy_helper.from_array(np.array(values, dtype), name))
        return name

    inits += [tensor(rng, (vocab, hidden), "word_embeddings"),
              tensor(rng, (seq, hidden), "position_embeddings")]
    nodes += [helper.make_node("Gather", ["word_embeddings", "ids"], ["emb"]),
              helper.make_node("Add", ["emb", "position_embeddings"], ["h0"])]
    const([0, seq, heads, head], "split_heads")  # 0: the batch dimension as it is
    const([0, seq, hidden], "merge_heads")
    inits.append(numpy_helper.from_array(np.array(1 / np.sqrt(head), np.float32), "scale"))
    inits.append(numpy_helper.from_array(np.array(np.sqrt(0.5), np.float32), "rsqrt2"))
    inits.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    inits.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
    x = "h0"
    for l in range(layers):
        p = f"l{l}_"
        for n in ("q", "k", "v", "o"):
            inits += [tensor(rng, (hidden, hidden), p + n + "_w"),
                      tensor(rng, (hidden,), p + n + "_b")]
        inits += [tensor(rng, (hidden, ffn), p + "ffn1_w"), tensor(rng, (ffn,), p + "ffn1_b"),
                  tensor(rng, (ffn, hidden), p + "ffn2_w"), tensor(rng, (hidden,), p + "ffn2_b")]
        for n in ("ln1", "ln2"):
            inits += [numpy_helper.from_array(np.ones(hidden, np.float32), p + n + "_g"),
                      numpy_helper.from_array(np.zeros(hidden, np.float32), p + n + "_b")]
        for n in ("q", "k", "v"):
            nodes += [helper.make_node("MatMul", [x, p + n + "_w"], [p + n + "_mm"], name=p + n),
                      helper.make_node("Add", [p + n + "_mm", p + n + "_b"], [p + n + "_a"]),
                      helper.make_node("Reshape", [p + n + "_a", "split_heads"], [p + n + "_r"])]
        nodes += [
            helper.make_node("Transpose", [p + "q_r"], [p + "qt"], perm=[0, 2, 1, 3]),
            helper.make_node("Transpose", [p + "k_r"], [p + "kt"], perm=[0, 2, 3, 1]),
            helper.make_node("Transpose", [p + "v_r"], [p + "vt"], perm=[0, 2, 1, 3]),
            helper.make_node("MatMul", [p + "qt", p + "kt"], [p + "s"]),
            helper.make_node("Mul", [p + "s", "scale"], [p + "ss"]),
            helper.make_node("Softmax", [p + "ss"], [p + "att"], axis=-1),
            helper.make_node("MatMul", [p + "att", p + "vt"], [p + "ctx"]),
            helper.make_node("Transpose", [p + "ctx"], [p + "ctxt"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [p + "ctxt", "merge_heads"], [p + "ctxm"]),
            helper.make_node("MatMul", [p + "ctxm", p + "o_w"], [p + "o_mm"], name=p + "o"),
            helper.make_node("Add", [p + "o_mm", p + "o_b"], [p + "o_a"]),
            helper.make_node("Add", [p + "o_a", x], [p + "res1"]),
            helper.make_node("LayerNormalization", [p + "res1", p + "ln1_g", p + "ln1_b"],
                             [p + "h1"], axis=-1),
            helper.make_node("MatMul", [p + "h1", p + "ffn1_w"], [p + "f1"], name=p + "ffn1"),
            helper.make_node("Add", [p + "f1", p + "ffn1_b"], [p + "f1b"]),
            helper.make_node("Mul", [p + "f1b", "rsqrt2"], [p + "g0"]),
            helper.make_node("Erf", [p + "g0"], [p + "g1"]),
            helper.make_node("Add", [p + "g1", "one"], [p + "g2"]),
            helper.make_node("Mul", [p + "f1b", p + "g2"], [p + "g3"]),
            helper.make_node("Mul", [p + "g3", "half"], [p + "gelu"]),
            helper.make_node("MatMul", [p + "gelu", p + "ffn2_w"], [p + "f2"], name=p + "ffn2"),
            helper.make_node("Add", [p + "f2", p + "ffn2_b"], [p + "f2b"]),
            helper.make_node("Add", [p + "f2b", p + "h1"], [p + "res2"]),
            helper.make_node("LayerNormalization", [p + "res2", p + "ln2_g", p + "ln2_b"],
                             [p + "out"], axis=-1),
        ]
        x = p + "out"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(
        nodes, "encoder", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", seq])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", seq, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=8)
    onnx.checker.check_model(model)
    feed = {"ids": rng.integers(0, vocab, (1, seq)).astype(np.int64)}
    return model, feed


def mlp_model(rng, width=2048, layers=6, batch=8):
    nodes, inits, x = [], [], "x"
    for l in range(layers):
        inits += [tensor(rng, (width, width), f"fc{l}_w"), tensor(rng, (width,), f"fc{l}_b")]
        nodes.append(helper.make_node("Gemm", [x, f"fc{l}_w", f"fc{l}_b"], [f"g{l}"],
                                      name=f"fc{l}", transB=1))
        nodes.append(helper.make_node("Relu", [f"g{l}"], [f"r{l}"]))
        x = f"r{l}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=8)
    onnx.checker.check_model(model)
    return model, {"x": rng.standard_normal((batch, width)).astype(np.float32)}


ORT_CHILD = """
import sys, numpy as np, onnxruntime as ort
feed = dict(np.load(sys.argv[2]))
options = ort.SessionOptions()
options.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
s.run(None, feed)
print([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS")][0])
"""


def peak_rss_mib(command):
    """Peak resident set of a child process, and what it printed last (the ORT child: its
    resident set in KiB once the session has run)."""
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return peak, (float(out[-1]) / 1024.0 if out and out[-1].isdigit() else None)


def measure(command):
    """(peak, after) RSS in MiB of `command`, run from a fresh interpreter of this script
    (--child) so that the peak is this command's alone."""
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(command)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        print(json.dumps(peak_rss_mib(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("qsl_compress")
    ap.add_argument("qsl_run")
    ap.add_argument("work")
    ap.add_argument("--bits", default="2")
    ap.add_argument("--group", default="128")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for name, (model, feed) in (("encoder", encoder_model(rng)), ("mlp", mlp_model(rng))):
        fp32 = os.path.join(a.work, name + ".onnx")
        onnx.save(model, fp32)
        feed_path = os.path.join(a.work, name + "_feed.npz")
        np.savez(feed_path, **feed)
        files = {"fp32": fp32}
        for fmt in ("standard", "qsl"):
            files[fmt] = os.path.join(a.work, f"{name}.{fmt}.onnx")
            subprocess.run([a.qsl_compress, fp32, "-o", files[fmt], "--format", fmt, "--bits",
                            a.bits, "--group", a.group, "-q", "--force"], check=True,
                           stdout=subprocess.DEVNULL)
        ort_cmd = lambda path: [sys.executable, "-c", ORT_CHILD, path, feed_path]
        run_cmd = lambda path: [a.qsl_run, path, "--random", "8", "--batch", "8",
                                "--threads", "1"]
        for fmt in ("fp32", "standard"):
            rows.append((name, fmt, "ONNX Runtime", os.path.getsize(files[fmt]),
                         measure(ort_cmd(files[fmt]))))
        if name == "mlp":
            for fmt in ("fp32", "qsl"):
                rows.append((name, fmt, "qsl-run", os.path.getsize(files[fmt]),
                             measure(run_cmd(files[fmt]))))
    print(f"{a.bits}-bit codes, groups of {a.group}; peak resident set of one process that "
          "loads the model and runs one batch")
    print("| model | format | runtime | file | peak resident | resident after the run |")
    print("|---|---|---|---|---|---|")
    for name, fmt, runtime, size, (peak, after) in rows:
        after = "-" if after is None else f"{after:.0f} MiB"
        print(f"| {name} | {fmt} | {runtime} | {size / 2**20:.1f} MiB | {peak:.0f} MiB | {after} |")


if __name__ == "__main__":
    main()
