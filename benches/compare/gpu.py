#!/usr/bin/env python3
"""Compares frugal's CUDA backend with PyTorch (cuDNN) and/or onnxruntime's CUDA execution
provider on the same GPU, in the same run: time, GPU memory and outputs of one inference process
per engine and model.

Usage (from the repository root, on a machine with an NVIDIA GPU and driver):
    python3 benches/compare/gpu.py [--runs 50] [--reference torch,ort] [--ocr-size 640]
                                   [--cargo-features cuda | --frugal PATH] [--no-venv]

Needs python3 and the NVIDIA driver; NVRTC (libnvrtc.so, from the CUDA toolkit or the
nvidia-cuda-nvrtc wheel) must be loadable for frugal. Without --frugal it builds frugal (release,
`--features` as given: `cuda`, `cuda-13000`, or a Jetson's `cuda-12020`...). Without --no-venv it
makes its own venv (benches/compare/.venv-gpu) with pinned onnxruntime-gpu, numpy, onnx and
nvidia-ml-py; with --no-venv it uses the running Python's packages (a CUDA machine that has
PyTorch, onnx and nvidia-ml-py). References: `torch` (torch_runner.py: the ONNX graph run by
torch.nn.functional on cuDNN, checked against onnxruntime on the CPU) and `ort` (ort_runner.py,
CUDAExecutionProvider). Each engine runs in its own process while NVML samples that process's
GPU memory. frugal's output (both strategies) is compared with the reference's on the same input.
Prints a Markdown table and writes it to benches/compare/out/gpu.md.
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
REQUIREMENTS = ["onnxruntime-gpu[cuda,cudnn]==1.31.1", "numpy==2.3.5", "onnx==1.19.1",
                "nvidia-ml-py==13.615.71"]
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


def failed(rc, err):
    lines = err.strip().splitlines() or ["(no output)"]
    return f"exit {rc}: {lines[-1][:160]}"


def rel_diff(got, want):
    import numpy as np

    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))


def bench(label, path, shape, runs, references, work):
    """Rows for one model: each reference, then frugal layer by layer and by parts."""
    print(f"== {label}", file=sys.stderr)
    import numpy as np

    rows, io = [], None
    for ref in references:
        if ref == "torch":
            io = os.path.join(work, "torch")
            cmd = [sys.executable, os.path.join(HERE, "torch_runner.py"), path, "--input-shape",
                   shape, "--runs", str(runs), "--save-io", io]
            engine = "PyTorch (cuDNN, eager)"
        else:
            cmd = [sys.executable, os.path.join(HERE, "ort_runner.py"), path, "--input-shape",
                   shape, "--runs", str(runs), "--provider", "cuda"]
            engine = "onnxruntime CUDA EP"
        rc, out, err, gpu = measure(cmd)
        if rc != 0:
            rows.append([label, engine, "failed", "", mb(gpu), "", failed(rc, err)])
            io = None if ref == "torch" else io
            continue
        r = last_json(out)
        note = ""
        if "peak_allocated_bytes" in r:
            note = f"allocated {mb(r['peak_allocated_bytes'])} MB"
        if r.get("ort_max_rel_diff") is not None:
            note += f"; vs onnxruntime CPU {r['ort_max_rel_diff']:.1e}"
        rows.append([label, engine, f"{r['median_ms']:.2f}", f"{1e3 / r['median_ms']:.1f}",
                     mb(gpu), "", note])
    outputs = {}
    for engine, strategy in [("frugal cuda layer by layer", "layer-by-layer"),
                             ("frugal cuda by parts (min memory)", "by-parts")]:
        fbench = [FRUGAL, "bench", path, "--input-shape", shape, "--backend", "cuda",
                  "--runs", str(runs), "--json", "--strategy", strategy]
        rc, out, err, gpu = measure(fbench)
        if rc != 0:
            rows.append([label, engine, "failed", "", mb(gpu), "", failed(rc, err)])
            continue
        r = last_json(out)
        held = r["arena_bytes"] + r.get("weight_bytes", 0)
        note = (f"arena {mb(r['arena_bytes'])} MB + weights {mb(r.get('weight_bytes', 0))} MB "
                f"(activations {mb(r['peak_bytes_with_io'])} MB)")
        diff = ""
        if io:
            got = os.path.join(work, f"frugal-{strategy}.npy")
            rc, _, err, _ = measure([FRUGAL, "run", path, "--backend", "cuda", "--strategy",
                                     strategy, "-i", io + ".input.npy", "-o", got])
            if rc == 0:
                outputs[strategy] = np.load(got)
                diff = f"{rel_diff(outputs[strategy], np.load(io + '.output.npy')):.1e}"
            else:
                diff = failed(rc, err)
        rows.append([label, engine, f"{r['median_ms']:.2f}", f"{1e3 / r['median_ms']:.1f}",
                     mb(gpu), diff, f"{mb(held)} MB held: " + note])
    if len(outputs) == 2:
        same = np.array_equal(outputs["by-parts"].view(np.uint32),
                              outputs["layer-by-layer"].view(np.uint32))
        rows[-1][-1] += "; bit-identical to layer by layer" if same else "; DIFFERS from layer by layer"
    return rows


def versions(references):
    out = []
    for r in references:
        try:
            if r == "torch":
                import torch

                out.append(f"PyTorch {torch.__version__}")
            else:
                import onnxruntime

                out.append(f"onnxruntime {onnxruntime.__version__}")
        except ImportError:
            out.append(r)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--cargo-features", default="cuda")
    ap.add_argument("--frugal", default=None, help="a built frugal binary (skips cargo build)")
    ap.add_argument("--reference", default="ort", help="comma-separated: torch, ort")
    ap.add_argument("--no-venv", action="store_true", help="use the running Python's packages")
    ap.add_argument("--ocr-size", type=int, default=640)
    a = ap.parse_args()
    global FRUGAL
    if not a.no_venv:
        ensure_venv()
    os.makedirs(OUT, exist_ok=True)
    work = os.path.join(OUT, "io")
    os.makedirs(work, exist_ok=True)
    if a.frugal:
        FRUGAL = os.path.abspath(a.frugal)
    else:
        subprocess.check_call(["cargo", "build", "--release", "--quiet", "-p", "frugal", "--bin",
                               "frugal", "--features", a.cargo_features], cwd=ROOT)
    references = [r for r in a.reference.split(",") if r]
    s = a.ocr_size
    models = [
        ("MobileNetV2 224 (bundled)", "models/mobilenet_v2.onnx", "1,3,224,224"),
        (f"PP-OCRv4 text detector {s}x{s} (bundled)", "models/ch_PP-OCRv4_det_infer.onnx",
         f"1,3,{s},{s}"),
    ]
    rows = []
    for label, model, shape in models:
        rows.extend(bench(label, os.path.join(ROOT, model), shape, a.runs, references, work))

    import pynvml

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    gpu = pynvml.nvmlDeviceGetName(h)
    driver = pynvml.nvmlSystemGetDriverVersion()
    # FRUGAL_COMMIT names the build of a binary made elsewhere (--frugal).
    commit = os.environ.get("FRUGAL_COMMIT", "")
    if not commit:
        try:
            commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                                    capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    commit = commit or "unknown"
    header = ["model", "engine", "median ms", "throughput /s", "peak GPU memory (MB)",
              "max rel. diff vs reference", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines + [
        "",
        f"GPU: {gpu}, driver {driver}; references {', '.join(versions(references))}; frugal "
        f"{commit} ({os.path.basename(FRUGAL) if a.frugal else 'features ' + a.cargo_features}). "
        f"Input f32 from and to the host, {a.runs} timed runs after warm-up, median. GPU memory: "
        "NVML's per-process figure (CUDA context included), peak over the process; MB = 10^6 "
        "bytes. 'held' is what frugal allocated on the device (arena + weights); 'allocated' is "
        "torch.cuda.max_memory_allocated. Max rel. diff: largest |frugal - reference| over the "
        "reference's largest magnitude, first output, same input.",
    ])
    print(text)
    with open(os.path.join(OUT, "gpu.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
