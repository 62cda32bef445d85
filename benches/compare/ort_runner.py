#!/usr/bin/env python3
"""Times one ONNX model with onnxruntime, for run.py.

Usage: ort_runner.py MODEL.onnx --input-shape 1,3,224,224 --runs N --threads T [--provider cuda]
CPUExecutionProvider (or CUDAExecutionProvider with --provider cuda, for gpu.py: onnxruntime-gpu),
intra_op_num_threads=T, inter_op_num_threads=1; two warm-up runs, then N timed runs on a fixed
pseudo-random input (host in, host out). Prints {"median_ms":..,"min_ms":..,"runs":N}.
"""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--input-shape", default="1,3,224,224")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--provider", choices=["cpu", "cuda"], default="cpu")
    a = ap.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[a.provider]
    if a.provider == "cuda" and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # the CUDA and cuDNN libraries of the pip wheels, if installed
    sess = ort.InferenceSession(a.model, opts, providers=[provider])
    if sess.get_providers()[0] != provider:
        raise SystemExit(f"onnxruntime could not use {provider} (has {sess.get_providers()})")
    shape = [int(d) for d in a.input_shape.split(",")]
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    feed = {sess.get_inputs()[0].name: x}

    for _ in range(2):
        sess.run(None, feed)
    ms = []
    for _ in range(max(a.runs, 1)):
        t = time.perf_counter()
        sess.run(None, feed)
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    # Median as `frugal bench` takes it: the middle element (the upper one for even N).
    print(json.dumps({"median_ms": round(ms[len(ms) // 2], 3), "min_ms": round(ms[0], 3), "runs": len(ms)}))


if __name__ == "__main__":
    main()
