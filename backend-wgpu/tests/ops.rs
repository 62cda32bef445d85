//! Per op family on wgpu: small one- or two-node graphs run layer by layer and by parts (so
//! kernels see ring windows that wrap), against the CPU backend within 1e-4 relative, and by
//! parts bit-identical to layer by layer.

mod common;

use frugal_core::ops::{
    Activation, BinaryKind, Gemm, MatMul, Op, PoolKind, Reduce, ReduceKind, ResizeMode, Softmax,
};
use frugal_core::{Graph, GraphBuilder, Result, Tensor, ValueId};

fn graph(
    name: &str,
    shape: &[usize],
    f: impl FnOnce(&mut GraphBuilder, ValueId) -> Result<ValueId>,
) -> Graph {
    let mut b = GraphBuilder::new(name, 7);
    let x = b.input("input", shape);
    let y = f(&mut b, x).unwrap();
    b.output(y);
    b.finish().unwrap()
}

const ACTS: [Activation; 8] = [
    Activation::Relu,
    Activation::Clip { min: -0.5, max: 0.75 },
    Activation::LeakyRelu { alpha: 0.1 },
    Activation::Sigmoid,
    Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
    Activation::HardSwish,
    Activation::Tanh,
    Activation::Erf,
];

#[test]
fn conv_plain_strided_dilated_grouped_depthwise() {
    let s = [1, 6, 17, 13];
    common::check_graph(&graph("conv3x3", &s, |b, x| b.conv(x, 8, 3, 1, 1, 1, None)), 1);
    common::check_graph(
        &graph("conv_s2", &s, |b, x| b.conv(x, 5, 3, 2, 1, 1, Some(Activation::Relu))),
        2,
    );
    common::check_graph(
        &graph("conv_dil", &s, |b, x| {
            b.conv_full(x, 4, [3, 2], [1, 2], [2, 1], [2, 0, 1, 1], 2, Some(Activation::HardSwish))
        }),
        3,
    );
    common::check_graph(&graph("depthwise", &s, |b, x| b.conv(x, 6, 5, 2, 2, 6, None)), 4);
    common::check_graph(
        &graph("residual", &s, |b, x| {
            let h = b.conv(x, 6, 3, 1, 1, 1, None)?;
            b.binary(BinaryKind::Add, x, h, Some(Activation::Relu))
        }),
        5,
    );
}

#[test]
fn conv_transpose_and_resize() {
    let s = [1, 4, 9, 7];
    common::check_graph(
        &graph("deconv", &s, |b, x| b.conv_transpose(x, 3, 3, 2, 1, 1, Some(Activation::Relu))),
        1,
    );
    common::check_graph(&graph("deconv4", &s, |b, x| b.conv_transpose(x, 2, 4, 2, 1, 0, None)), 2);
    common::check_graph(&graph("nearest", &s, |b, x| b.upsample(x, 2, ResizeMode::Nearest)), 3);
    common::check_graph(&graph("linear", &s, |b, x| b.upsample(x, 2, ResizeMode::Linear)), 4);
}

#[test]
fn pools() {
    let s = [1, 3, 15, 11];
    common::check_graph(&graph("maxpool", &s, |b, x| b.pool(PoolKind::Max, x, 3, 2, 1)), 1);
    common::check_graph(&graph("avgpool", &s, |b, x| b.pool(PoolKind::Avg, x, 3, 1, 1)), 2);
    common::check_graph(&graph("avgpool2", &s, |b, x| b.pool(PoolKind::Avg, x, 2, 2, 0)), 3);
    common::check_graph(&graph("gap", &s, |b, x| b.global_avg_pool(x)), 4);
}

#[test]
fn pointwise() {
    let s = [1, 3, 9, 5];
    for (i, a) in ACTS.iter().enumerate() {
        common::check_graph(&graph(a.onnx_name(), &s, |b, x| b.act(x, *a)), i as u64);
    }
    common::check_graph(
        &graph("bn", &s, |b, x| b.batch_norm(x, Some(Activation::LeakyRelu { alpha: 0.2 }))),
        9,
    );
    for kind in
        [BinaryKind::Add, BinaryKind::Sub, BinaryKind::Mul, BinaryKind::Div, BinaryKind::PRelu]
    {
        common::check_graph(
            &graph(kind.onnx_name(), &s, |b, x| {
                let c = b.random(&[3, 1, 5], 1.0);
                let c = b.constant("c", c);
                let h = b.binary(kind, x, c, None)?;
                let g = b.global_avg_pool(x)?;
                b.binary(kind, h, g, Some(Activation::Tanh))
            }),
            10,
        );
    }
}

#[test]
fn layout_ops() {
    let s = [1, 6, 8, 5];
    common::check_graph(&graph("shuffle", &s, |b, x| b.channel_shuffle(x, 3)), 1);
    common::check_graph(
        &graph("concat", &s, |b, x| {
            let h = b.conv(x, 2, 3, 1, 1, 1, None)?;
            let c = b.concat(&[x, h], 1)?;
            let r = b.concat(&[c, c], 2)?;
            b.concat(&[r, r], 3)
        }),
        2,
    );
    common::check_graph(
        &graph("transpose", &s, |b, x| {
            let t = b.transpose(x, &[0, 3, 1, 2])?;
            b.flatten(t)
        }),
        3,
    );
}

#[test]
fn dense_reduce_softmax() {
    let s = [1, 4, 6, 5];
    common::check_graph(
        &graph("dense", &s, |b, x| {
            let f = b.flatten(x)?;
            let d = b.dense(f, 7, Some(Activation::Relu))?;
            b.softmax(d, 1)
        }),
        1,
    );
    common::check_graph(
        &graph("matmul", &s, |b, x| {
            let w = b.random(&[5, 3], 1.0);
            let w = b.constant("w", w);
            let m = b.node("mm", Op::MatMul(MatMul { act: None }), &[x, w])?;
            let t = b.transpose(x, &[0, 1, 3, 2])?;
            let t = b.conv(t, 4, 1, 1, 0, 1, None)?;
            b.node("mm2", Op::MatMul(MatMul { act: Some(Activation::Relu) }), &[t, m])
        }),
        2,
    );
    common::check_graph(
        &graph("gemm", &[2, 6], |b, x| {
            let w = b.random(&[6, 4], 1.0);
            let w = b.constant("w", w);
            let c = b.constant("c", Tensor::from_f32(vec![4], vec![0.5, -1.0, 2.0, 0.0]));
            let op = Gemm { alpha: 0.5, beta: 2.0, trans_a: false, trans_b: false, act: None };
            b.node("g", Op::Gemm(op), &[x, w, c])
        }),
        3,
    );
    for (i, kind) in [ReduceKind::Mean, ReduceKind::Sum, ReduceKind::Max].into_iter().enumerate() {
        common::check_graph(
            &graph("reduce", &s, |b, x| {
                let r = Reduce { kind, axes: vec![2, 3], keepdims: i != 1 };
                b.node("r", Op::Reduce(r), &[x])
            }),
            4 + i as u64,
        );
    }
    common::check_graph(
        &graph("softmax", &s, |b, x| {
            // Softmax reads whole tensors: rows = 1 so that by parts still hands it all.
            let t = b.reshape(x, &[2, 1, 60])?;
            b.node("s", Op::Softmax(Softmax { axis: 0, coerce_2d: false }), &[t])
        }),
        8,
    );
}
