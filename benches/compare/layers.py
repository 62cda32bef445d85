#!/usr/bin/env python3
"""Per-layer times of onnxruntime against frugal's, both timed inside whole runs, on one thread
(or THREADS).

Usage: benches/compare/.venv/bin/python benches/compare/layers.py MODEL.onnx [FRUGAL_BINARY]
[THREADS]
(the venv run.py makes). onnxruntime runs 30 times with `enable_profiling` (its per-node
kernel times, the median per node); frugal's come from `frugal bench MODEL --threads 1
--per-node --json` (every step timed where it runs in the schedule, the median over 200
runs). onnxruntime renames the convolutions it fuses, so convolutions are matched by kernel
size, groups and output channels, in the order they run, and summed per kind: first/dense
convolutions (`conv`), pointwise (`pw`), depthwise (`dw`); the other nodes are summed apart.
"""
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

THREADS = 1
import onnxruntime as ort


def ort_layers(model):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feed = {inp.name: np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)}
    for _ in range(30):
        sess.run(None, feed)
    times = collections.defaultdict(list)
    for e in json.load(open(sess.end_profiling())):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            a = e["args"]
            shapes = [list(x.values())[0] for x in a.get("input_type_shape", [])]
            times[(e["name"], a.get("op_name"), json.dumps(shapes[:2]))].append(e["dur"])
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def frugal_layers(model, binary):
    """frugal's in-run node times (us) by (kernel size, groups, output channels), in node
    order, and the total of the other nodes."""
    out = subprocess.run([binary, "bench", model, "--threads", str(THREADS), "--runs", "200",
                          "--per-node", "--json"], check=True, capture_output=True, text=True)
    rows = json.loads(out.stdout[out.stdout.index("{"):])["per_node"]
    order = lambda r: int(m[1]) if (m := re.search(r"(\d+)$", r["node"])) else 0
    convs, other = collections.defaultdict(list), 0.0
    for r in sorted(rows, key=order):
        m = re.match(r"Conv (\d+)x\d+/\d+(?: g(\d+))?", r["op"])
        if m:
            convs[(int(m[1]), int(m[2] or 1), r["output_shape"][1])].append(r)
        else:
            other += r["median_ms"] * 1e3
    return convs, other


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    model = sys.argv[1]
    binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/frugal"
    global THREADS
    THREADS = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    theirs, (ours, other) = ort_layers(model), frugal_layers(model, binary)
    kinds = collections.defaultdict(lambda: [0.0, 0.0])
    kinds["other"][1] = other
    rows = []
    taken = collections.Counter()
    for (name, op, shapes), t in theirs.items():
        shapes = json.loads(shapes)
        if op != "Conv" or len(shapes) < 2:
            kinds["other"][0] += t
            continue
        x, w = shapes
        groups = w[0] if w[1] == 1 and w[0] > 1 else 1
        key = (w[2], groups, w[0])
        mine = ours.get(key, [])
        if taken[key] >= len(mine):
            kinds["conv, not matched"][0] += t
            continue
        r = mine[taken[key]]
        taken[key] += 1
        f = r["median_ms"] * 1e3
        kind = "dw" if groups > 1 else ("pw" if w[2] == 1 else "conv")
        kinds[kind][0] += t
        kinds[kind][1] += f
        rows.append((f - t, t, f, kind, r["op"], r["output_shape"], r["node"]))
    print("| kind | onnxruntime us | frugal us |\n|---|---|---|")
    for k, (t, f) in sorted(kinds.items()):
        print(f"| {k} | {t:.0f} | {f:.0f} |")
    print("\nLargest gaps (frugal - onnxruntime, us):")
    for gap, t, f, kind, op, shape, node in sorted(rows, reverse=True)[:12]:
        print(f"  {gap:7.0f}  {kind:4} onnxruntime {t:6.0f} frugal {f:6.0f}  {op} -> {shape} ({node})")


if __name__ == "__main__":
    main()
