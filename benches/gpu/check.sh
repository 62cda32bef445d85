#!/bin/bash
# The CUDA backend's checks on a GPU machine, from the repository root, with .gpu/ made by
# benches/gpu/build.sh. Writes everything to $OUT/log.txt (or ./gpu-check.log) and
# $OUT/gpu.md. Needs the NVIDIA driver and NVRTC on the loader path, and for the comparison
# python3 with PyTorch, onnx, onnxruntime and nvidia-ml-py (a CUDA image has them).
ROOT=$PWD
OUT=${OUT:-$ROOT}
G=$(mktemp -d)
tar -C "$G" -xJf .gpu/bin.tar.xz
built=$(cat .gpu/built-at)
[ "$ROOT" = "$built" ] || { mkdir -p "$(dirname "$built")" && ln -sfn "$ROOT" "$built"; }
exec > >(tee "$OUT/log.txt") 2>&1
step() { echo; echo "=== $* ($(date +%T))"; }
F=$G/frugal; D=models/ch_PP-OCRv4_det_infer.onnx; M=models/mobilenet_v2.onnx
step environment
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
ldconfig -p | grep -E 'libcuda\.so|libnvrtc\.so' | head -4
# NVRTC is often installed off the loader path (the toolkit's lib64, or a pip wheel's lib
# folder): find it and put its folder on LD_LIBRARY_PATH (its builtins library sits beside it).
if ! ldconfig -p | grep -q 'libnvrtc\.so'; then
    nv=$(find /usr/local /opt /usr/lib -name 'libnvrtc.so*' 2>/dev/null | grep -v stub | head -1)
    [ -n "$nv" ] && export LD_LIBRARY_PATH="$(dirname "$nv")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "NVRTC: ${nv:-not found}"
fi
step backends; timeout 60 "$F" backends
# Whole test output in $OUT/tests.txt; the log keeps the verdicts and the failures' first lines.
for t in kernels models; do
    step $t tests
    timeout 150 "$G/$t" 2>&1 | tee -a "$OUT/tests.txt" | grep -E -A2 "^test |result|panicked|SKIPPED"
done
step jetson example; timeout 60 "$G/jetson"; echo "exit $?"
step comparison
FRUGAL_COMMIT=$(cat .gpu/commit) PYTHONUNBUFFERED=1 timeout 300 python3 benches/compare/gpu.py \
    --frugal "$F" --no-venv --reference torch --runs 30
cp benches/compare/out/gpu.md "$OUT/" 2>/dev/null
step part sizes and the planner
for r in 1 16; do timeout 60 "$F" bench $M --backend cuda --strategy by-parts --part-rows $r --runs 20; done
timeout 60 "$F" bench $D --input-shape 1,3,2048,2048 --backend cuda --runs 5
timeout 60 "$F" bench $D --input-shape 1,3,2048,2048 --backend cuda --strategy by-parts --part-rows 16 --runs 5
FRUGAL_CACHE_DIR=$G/cache timeout 120 "$F" bench $M --backend cuda --budget 2MB --runs 20
step done
