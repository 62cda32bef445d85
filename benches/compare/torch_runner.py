#!/usr/bin/env python3
"""Times one ONNX model with PyTorch on a GPU (cuDNN), for gpu.py.

Usage: torch_runner.py MODEL.onnx --input-shape 1,3,224,224 --runs N [--save-io PREFIX]

PyTorch cannot read ONNX files, so this interprets the graph node by node with
torch.nn.functional (eager mode: one cuDNN/cuBLAS call per node, as a PyTorch deployment of the
same network runs). Only the operators of the bundled models are implemented; others stop with
their name. TF32 is off (f32 products, as frugal and onnxruntime compute them) and
cudnn.benchmark is on (the fastest convolution algorithm per shape). Two warm-up runs, then N
timed runs on a fixed pseudo-random input, host in and host out, as `frugal bench` times them.

The interpreter is checked on every call against onnxruntime on the CPU (when installed), on the
same input: `ort_max_rel_diff` is the largest output difference divided by the output's largest
magnitude. Prints {"median_ms", "min_ms", "runs", "peak_allocated_bytes", "ort_max_rel_diff"};
peak_allocated_bytes is torch.cuda.max_memory_allocated over the timed runs (weights included,
CUDA context and cuDNN workspace caches not). --save-io writes PREFIX.input.npy and
PREFIX.output.npy (first output) so gpu.py can compare frugal's output with this one.
"""
import argparse
import json
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def scalar(v):
    """A one-element host tensor as a Python number (no device sync), else v."""
    if isinstance(v, torch.Tensor) and v.device.type == "cpu" and v.numel() == 1:
        return v.item()
    return v


def ints(v):
    return [int(i) for i in v.tolist()]


def conv(a, at, transpose=False):
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else None
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise SystemExit("torch_runner: Conv auto_pad is not implemented")
    pads = list(at.get("pads", [0, 0, 0, 0]))
    stride = list(at.get("strides", [1, 1]))
    dil = list(at.get("dilations", [1, 1]))
    group = at.get("group", 1)
    if transpose:
        if pads[:2] != pads[2:]:
            raise SystemExit("torch_runner: asymmetric ConvTranspose pads are not implemented")
        return F.conv_transpose2d(x, w, b, stride, pads[:2], list(at.get("output_padding", [0, 0])),
                                  group, dil)
    if pads[:2] != pads[2:]:
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        pads = [0, 0, 0, 0]
    return F.conv2d(x, w, b, stride, pads[:2], dil, group)


def gemm(a, at):
    x, w = a[0], a[1]
    if at.get("transA", 0):
        x = x.t()
    if at.get("transB", 0):
        w = w.t()
    y = at.get("alpha", 1.0) * (x @ w)
    if len(a) > 2 and a[2] is not None:
        y = y + at.get("beta", 1.0) * a[2]
    return y


def resize(a, at):
    mode = at.get("mode", b"nearest")
    ctm = at.get("coordinate_transformation_mode", b"half_pixel")
    if mode != b"nearest" or ctm != b"asymmetric" or at.get("nearest_mode", b"round_prefer_floor") != b"floor":
        raise SystemExit(f"torch_runner: Resize {mode}/{ctm} is not implemented")
    x = a[0]
    if len(a) > 3 and a[3] is not None and a[3].numel():
        return F.interpolate(x, size=ints(a[3])[2:], mode="nearest")
    s = [float(v) for v in a[2].tolist()]
    # torch's "nearest" takes source index floor(dst / scale): ONNX's asymmetric + floor.
    return F.interpolate(x, scale_factor=s[2:], mode="nearest")


def reshape(a, at):
    x, shape = a[0], ints(a[1])
    if not at.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def slice_(a, at):
    x = a[0]
    starts, ends = ints(a[1]), ints(a[2])
    axes = ints(a[3]) if len(a) > 3 and a[3] is not None else list(range(len(starts)))
    steps = ints(a[4]) if len(a) > 4 and a[4] is not None else [1] * len(starts)
    idx = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if st != 1:
            raise SystemExit("torch_runner: Slice steps other than 1 are not implemented")
        n = x.shape[ax]
        idx[ax] = slice(max(0, min(n, s + n if s < 0 else s)), max(0, min(n, e + n if e < 0 else e)))
    return x[tuple(idx)]


def flatten(a, at):
    x, axis = a[0], at.get("axis", 1)
    lead = int(np.prod(x.shape[:axis])) if axis else 1
    return x.reshape(lead, -1)


OPS = {
    "Conv": lambda a, at: conv(a, at),
    "ConvTranspose": lambda a, at: conv(a, at, transpose=True),
    "BatchNormalization": lambda a, at: F.batch_norm(a[0], a[3], a[4], a[1], a[2], False, 0.0,
                                                     at.get("epsilon", 1e-5)),
    "Relu": lambda a, at: F.relu(a[0]),
    "Sigmoid": lambda a, at: torch.sigmoid(a[0]),
    "HardSigmoid": lambda a, at: torch.clamp(a[0] * at.get("alpha", 0.2) + at.get("beta", 0.5), 0, 1),
    "HardSwish": lambda a, at: F.hardswish(a[0]),
    "Clip": lambda a, at: torch.clamp(a[0], scalar(a[1]) if len(a) > 1 and a[1] is not None else None,
                                      scalar(a[2]) if len(a) > 2 and a[2] is not None else None),
    "Add": lambda a, at: scalar(a[0]) + scalar(a[1]),
    "Sub": lambda a, at: scalar(a[0]) - scalar(a[1]),
    "Mul": lambda a, at: scalar(a[0]) * scalar(a[1]),
    "Div": lambda a, at: a[0] / scalar(a[1]),
    "GlobalAveragePool": lambda a, at: a[0].mean((2, 3), keepdim=True),
    "Resize": resize,
    "Concat": lambda a, at: torch.cat(a, at["axis"]),
    "Identity": lambda a, at: a[0],
    "Flatten": flatten,
    "Gemm": gemm,
    "MatMul": lambda a, at: a[0] @ a[1],
    "Reshape": reshape,
    "Shape": lambda a, at: torch.tensor(list(a[0].shape)[at.get("start", 0):at.get("end", None)]),
    "Slice": slice_,
    "Softmax": lambda a, at: torch.softmax(a[0], at.get("axis", -1)),
}


class Net:
    """An ONNX graph run node by node with torch functions. Float tensors of more than one
    element live on `device`; integer and one-element tensors stay on the host (shapes and
    scalars: no device round trip per node)."""

    def __init__(self, model, device):
        def place(arr):
            t = torch.from_numpy(np.array(arr))
            return t.to(device) if t.is_floating_point() and t.numel() > 1 else t

        g = model.graph
        self.values = {i.name: place(numpy_helper.to_array(i)) for i in g.initializer}
        self.nodes = []
        for n in g.node:
            if n.op_type == "Constant":
                self.values[n.output[0]] = place(numpy_helper.to_array(attrs(n)["value"]))
                continue
            if n.op_type not in OPS:
                raise SystemExit(f"torch_runner: operator {n.op_type} is not implemented")
            self.nodes.append((OPS[n.op_type], list(n.input), list(n.output), attrs(n)))
        self.input = next(i.name for i in g.input if i.name not in self.values)
        self.outputs = [o.name for o in g.output]

    def __call__(self, x):
        env = dict(self.values)
        env[self.input] = x
        for fn, ins, outs, at in self.nodes:
            r = fn([env[i] if i else None for i in ins], at)
            for o, v in zip(outs, r if isinstance(r, (list, tuple)) else [r]):
                env[o] = v
        return [env[o] for o in self.outputs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--input-shape", default="1,3,224,224")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--save-io", default=None)
    a = ap.parse_args()

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    model = onnx.load(a.model)
    net = Net(model, dev)
    shape = [int(d) for d in a.input_shape.split(",")]
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)

    def infer():
        with torch.inference_mode():
            outs = net(torch.from_numpy(x).to(dev))
            return [o.cpu().numpy() for o in outs]

    first = infer()
    infer()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    ms = []
    for _ in range(max(a.runs, 1)):
        t = time.perf_counter()
        infer()
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    report = {"median_ms": round(ms[len(ms) // 2], 3), "min_ms": round(ms[0], 3), "runs": len(ms),
              "peak_allocated_bytes": torch.cuda.max_memory_allocated(), "ort_max_rel_diff": None,
              "device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
        want = sess.run(None, {sess.get_inputs()[0].name: x})
        report["ort_max_rel_diff"] = max(
            float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-30)) for g, w in zip(first, want))
    except ImportError:
        pass
    if a.save_io:
        np.save(a.save_io + ".input.npy", x)
        np.save(a.save_io + ".output.npy", first[0])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
