#!/usr/bin/env python3
"""Per-layer times of onnxruntime against frugal's kernel profile, one thread, one model.

Usage: benches/compare/.venv/bin/python benches/compare/layers.py MODEL.onnx [FRUGAL_BINARY]
(the venv run.py makes). onnxruntime runs 30 times with `enable_profiling` (its per-node
kernel times, the median per node); frugal's times come from `frugal profile MODEL --threads 1`
(each kernel signature timed whole, in a fresh cache under /tmp). Convolutions are matched by
input shape, weight shape and groups, and summed per kind: first/dense convolutions (`conv`),
pointwise (`pw`), depthwise (`dw`). frugal's profile times kernels in isolation (inputs
warm in cache), so its sums come out below its whole-run time.
"""
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort


def ort_layers(model):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
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
    cache = tempfile.mkdtemp()
    subprocess.run([binary, "profile", model, "--threads", "1"], check=True,
                   capture_output=True, env={**os.environ, "FRUGAL_CACHE_DIR": cache})
    kernels = json.load(open(glob.glob(os.path.join(cache, "profile-cpu*.json"))[0]))["kernels"]
    out = {}
    for sig, timings in kernels.items():
        whole = max(timings, key=lambda p: p[0])[1] * 1e6
        m = re.search(r"kernel: \[(\d+), (\d+)\].*groups: (\d+).*\) (\[\[.*\]\]) -> (\[.*\])$", sig)
        if m:
            x = json.loads(m[4])[0]
            out[(tuple(x), int(m[1]), int(m[3]), json.loads(m[5])[1])] = whole
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    model = sys.argv[1]
    binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/frugal"
    theirs, ours = ort_layers(model), frugal_layers(model, binary)
    kinds = collections.defaultdict(lambda: [0.0, 0.0])
    rows = []
    for (name, op, shapes), t in theirs.items():
        shapes = json.loads(shapes)
        if op != "Conv" or len(shapes) < 2:
            kinds["other (not matched)"][0] += t
            continue
        x, w = shapes
        groups = x[1] // w[1]
        f = ours.get((tuple(x), w[2], groups, w[0]), 0.0)
        kind = "dw" if groups > 1 else ("pw" if w[2] == 1 else "conv")
        kinds[kind][0] += t
        kinds[kind][1] += f
        rows.append((f - t, t, f, kind, x, w))
    print("| kind | onnxruntime us | frugal us |\n|---|---|---|")
    for k, (t, f) in sorted(kinds.items()):
        print(f"| {k} | {t:.0f} | {f:.0f} |")
    print("\nLargest gaps (frugal - onnxruntime, us):")
    for gap, t, f, kind, x, w in sorted(rows, reverse=True)[:12]:
        print(f"  {gap:7.0f}  {kind:4} onnxruntime {t:6.0f} frugal {f:6.0f}  input {x} weight {w}")


if __name__ == "__main__":
    main()
