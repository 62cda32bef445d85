#!/bin/bash
# Builds, on a machine without a GPU, everything the GPU checks run, into .gpu/ (git-ignored by
# the line `/.gpu/` in .git/info/exclude): the frugal CLI with the CUDA backend, the CUDA test
# executables and the Jetson example, stripped and packed. Then carry `.gpu` to the GPU
# machine and run `bash benches/gpu/check.sh` there, from the repository root.
#
#   bash benches/gpu/build.sh [CUDA feature, default cuda-13000]
set -euo pipefail
cd "$(dirname "$0")/../.."
feature=${1:-cuda-13000}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
stage=$(mktemp -d)
cargo build --release -p frugal --bin frugal --features "$feature"
cp target/release/frugal "$stage/frugal"
cargo build --release -p frugal --features "$feature" --example jetson
cp target/release/examples/jetson "$stage/jetson"
# The test executables read the bundled models through the path they were built at
# (CARGO_MANIFEST_DIR); check.sh links that path to the checkout on the GPU machine.
cargo test -p frugal-cuda --release --no-default-features --features "$feature" --no-run \
    --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])' |
    while read -r name exe; do cp "$exe" "$stage/$name"; done
strip "$stage"/* 2>/dev/null || true
mkdir -p .gpu
tar -C "$stage" -cJf .gpu/bin.tar.xz .
printf '%s\n' "$PWD" > .gpu/built-at
git rev-parse --short HEAD > .gpu/commit
rm -rf "$stage"
ls -la .gpu
