#!/usr/bin/env python3
"""Where a by-parts plan loses to layer by layer: each node's time on 1 and 2 threads.

    python3 benches/compare/scaling.py MODEL [--plan P | --budget B] [--runs 40] [--rounds 3]

Runs `frugal bench --per-node` for the plan (a saved plan, the planner's 2-thread pick at a
budget, or the one-row by-parts plan) and for layer by layer, on 1 and on 2 threads, `--rounds`
times in turn, and keeps each node's fastest median. Per node it prints both plans' times on
1 and 2 threads and their speed-ups, and what the plan loses on 2 threads against scaling as
layer by layer does (2-thread time less 1-thread time over layer by layer's speed-up): where
a plan's cost on 2 threads comes from. Build first: `cargo build --release`.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FRUGAL = ROOT / "target" / "release" / "frugal"


def bench(model, args, threads, runs):
    cmd = [str(FRUGAL), "bench", model, *args, "--threads", str(threads), "--runs", str(runs),
           "--per-node", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    d = json.loads(out.stdout)
    return d["median_ms"], {n["node"]: n for n in d["per_node"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--plan", help="a plan saved by `frugal plan --save`")
    ap.add_argument("--budget", help="the planner's fastest plan within SIZE")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--top", type=int, default=25, help="nodes to list, largest loss first")
    a = ap.parse_args()
    if not FRUGAL.exists():
        sys.exit(f"{FRUGAL} is missing: run `cargo build --release` first")
    if a.plan:
        plan_args = ["--plan", a.plan]
    elif a.budget:
        # Picked once, for 2 threads: on 1 thread the planner would pick from the 1-thread
        # profile, another plan.
        saved = ROOT / "target" / "scaling-plan.json"
        cmd = [str(FRUGAL), "plan", a.model, "--budget", a.budget, "--threads", "2", "--save", str(saved)]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed")
        plan_args = ["--plan", str(saved)]
    else:
        plan_args = ["--strategy", "by-parts"]
    configs = {("plan", t): plan_args for t in (1, 2)}
    configs.update({("lbl", t): ["--strategy", "layer-by-layer"] for t in (1, 2)})
    best, whole = {}, {}
    for _ in range(a.rounds):
        for (kind, t), args in configs.items():
            median, nodes = bench(a.model, args, t, a.runs)
            whole[(kind, t)] = min(whole.get((kind, t), median), median)
            for name, n in nodes.items():
                k = (kind, t, name)
                if k not in best or n["median_ms"] < best[k]["median_ms"]:
                    best[k] = n
    ms = lambda kind, t, name: best[(kind, t, name)]["median_ms"] if (kind, t, name) in best else None
    rows = []
    for (kind, t, name), n in best.items():
        if kind != "plan" or t != 2:
            continue
        p1, p2, l1, l2 = ms("plan", 1, name), ms("plan", 2, name), ms("lbl", 1, name), ms("lbl", 2, name)
        scale = l1 / l2 if l1 and l2 else 1.0
        loss = p2 - p1 / scale if p1 else 0.0
        rows.append((loss, name, n, p1, p2, l1, l2))
    rows.sort(key=lambda r: -r[0])
    x = lambda a_, b: f"{a_ / b:5.2f}" if a_ and b else "    -"
    f = lambda v: f"{v:7.3f}" if v is not None else "      -"
    print(f"{'node':14} {'op':28} {'output':22} {'firings':>7} | plan 1T     2T     x |  lbl 1T     2T     x | loss ms")
    for loss, name, n, p1, p2, l1, l2 in rows[: a.top]:
        shape = "x".join(map(str, n["output_shape"]))
        print(f"{name[:14]:14} {n['op'][:28]:28} {shape[:22]:22} {n['firings']:7} | {f(p1)} {f(p2)} {x(p1, p2)} | {f(l1)} {f(l2)} {x(l1, l2)} | {loss:7.3f}")
    total = lambda kind, t: sum(v["median_ms"] for (k, tt, _), v in best.items() if k == kind and tt == t)
    print(f"steps summed: plan {total('plan', 1):.3f} ms on 1 thread, {total('plan', 2):.3f} on 2; "
          f"layer by layer {total('lbl', 1):.3f} and {total('lbl', 2):.3f}")
    print(f"whole runs (fastest median): plan {whole[('plan', 1)]:.3f} / {whole[('plan', 2)]:.3f} ms, "
          f"layer by layer {whole[('lbl', 1)]:.3f} / {whole[('lbl', 2)]:.3f} ms (1 / 2 threads)")


if __name__ == "__main__":
    main()
