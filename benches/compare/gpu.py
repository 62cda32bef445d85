#!/usr/bin/env python3
"""Compares frugal's CUDA backend with onnxruntime's CUDA execution provider on the same GPU, in
the same run: time and GPU memory of one inference process per engine and model.

Usage (from the repository root, on a machine with an NVIDIA GPU and driver):
    python3 benches/compare/gpu.py [--runs 50] [--cargo-features cuda] [--ocr-size 640]

Needs python3, cargo and the NVIDIA driver; NVRTC (libnvrtc.so, from the CUDA toolkit or the
nvidia-cuda-nvrtc-cu12 wheel) must be loadable for frugal. It makes its own venv
(benches/compare/.venv-gpu) with pinned onnxruntime-gpu, numpy and nvidia-ml-py, builds frugal
(release, `--features` as given: `cuda`, or a Jetson's `cuda-12020`...), then runs every engine
on every model in its own process while sampling that process's GPU memory with NVML. Prints a
Markdown table and writes it to benches/compare/out/gpu.md.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.join(HERE, ".venv-gpu")
OUT = os.path.join(HERE, "out")
# onnxruntime-gpu's extras bring the CUDA 12 runtime and cuDNN 9 it loads (pip wheels).
REQUIREMENTS = ["onnxruntime-gpu[cuda,cudnn]==1.31.1", "numpy==2.3.5", "nvidia-ml-py==13.615.71"]
FRUGAL = os.path.join(ROOT, "target", "release", "frugal")


def ensure_venv():
    """Re-runs this script inside a venv that has the pinned requirements."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    subprocess.check_call([py, "-m", "pip", "install", "-q", *REQUIREMENTS])
    os.execv(py, [py, os.path.abspath(__file__), *sys.argv[1:]])


def measure(cmd, env=None):
    """Runs cmd; returns (returncode, stdout, stderr, peak GPU memory of that process in bytes).

    The peak is NVML's per-process used GPU memory (context, kernels' code, allocations), sampled
    every 5 ms while the process runs: the same yardstick for every engine. It includes the CUDA
    context (a few hundred MB), which each engine pays once.
    """
    import pynvml

    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **(env or {})})
    peak = [0]

    def sample():
        while p.poll() is None:
            for h in handles:
                try:
                    procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                except pynvml.NVMLError:
                    procs = []
                for q in procs:
                    if q.pid == p.pid and q.usedGpuMemory:
                        peak[0] = max(peak[0], q.usedGpuMemory)
            time.sleep(0.005)

    t = threading.Thread(target=sample)
    t.start()
    out, err = p.communicate()
    t.join()
    return p.returncode, out, err, peak[0]


def last_json(text):
    return json.loads(text[text.index("{"):])


def mb(n):
    return f"{n / 1e6:.1f}"


def row(label, engine, rc, out, err, gpu, note=""):
    if rc != 0:
        lines = err.strip().splitlines() or ["(no output)"]
        return [label, engine, "failed", "", mb(gpu), f"exit {rc}: {lines[-1][:160]}"]
    r = last_json(out)
    return [label, engine, f"{r['median_ms']:.2f}", f"{1e3 / r['median_ms']:.1f}", mb(gpu), note]


def bench(label, path, shape, runs):
    print(f"== {label}", file=sys.stderr)
    rows = [row(label, "onnxruntime CUDA EP", *measure(
        [sys.executable, os.path.join(HERE, "ort_runner.py"), path, "--input-shape", shape,
         "--runs", str(runs), "--provider", "cuda"]))]
    fbench = [FRUGAL, "bench", path, "--input-shape", shape, "--backend", "cuda",
              "--runs", str(runs), "--json"]
    for engine, strategy in [("frugal cuda layer by layer", "layer-by-layer"),
                             ("frugal cuda by parts (min memory)", "by-parts")]:
        rc, out, err, gpu = measure(fbench + ["--strategy", strategy])
        note = ""
        if rc == 0:
            r = last_json(out)
            note = f"activations {mb(r['peak_bytes_with_io'])} MB, arena {mb(r['arena_bytes'])} MB"
        rows.append(row(label, engine, rc, out, err, gpu, note))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--cargo-features", default="cuda")
    ap.add_argument("--ocr-size", type=int, default=640)
    a = ap.parse_args()
    ensure_venv()
    os.makedirs(OUT, exist_ok=True)
    subprocess.check_call(["cargo", "build", "--release", "--quiet", "-p", "frugal", "--bin",
                           "frugal", "--features", a.cargo_features], cwd=ROOT)
    s = a.ocr_size
    models = [
        ("MobileNetV2 224 (bundled)", "models/mobilenet_v2.onnx", "1,3,224,224"),
        (f"PP-OCRv4 text detector {s}x{s} (bundled)", "models/ch_PP-OCRv4_det_infer.onnx",
         f"1,3,{s},{s}"),
    ]
    rows = []
    for label, model, shape in models:
        rows.extend(bench(label, os.path.join(ROOT, model), shape, a.runs))

    import onnxruntime
    import pynvml

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    gpu = pynvml.nvmlDeviceGetName(h)
    driver = pynvml.nvmlSystemGetDriverVersion()
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    header = ["model", "engine", "median ms", "throughput /s", "peak GPU memory (MB)", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines + [
        "",
        f"GPU: {gpu}, driver {driver}; onnxruntime-gpu {onnxruntime.__version__}, frugal {commit} "
        f"(features {a.cargo_features}). Input f32 from and to the host, {a.runs} timed runs after "
        "warm-up, median. GPU memory: NVML's per-process figure (CUDA context included), peak "
        "over the process; MB = 10^6 bytes. frugal's activations/arena are its plan's numbers.",
    ])
    print(text)
    with open(os.path.join(OUT, "gpu.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
