//! A public API to build graphs in code: the model zoo uses it, tests build random architectures
//! with it, and users can describe a network without an ONNX file. Weights are drawn from a
//! seeded generator, so the same calls always give the same model.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Graph, Node, Value, ValueId};
use crate::error::{Error, Result};
use crate::ops::*;
use crate::tensor::{DType, Tensor};

/// Builds a [`Graph`] node by node, inferring shapes as it goes.
#[derive(Debug)]
pub struct GraphBuilder {
    graph: Graph,
    rng: ChaCha8Rng,
    counter: usize,
}

impl GraphBuilder {
    /// A builder for a model called `name`, with weights drawn from `seed`.
    pub fn new(name: &str, seed: u64) -> Self {
        GraphBuilder {
            graph: Graph { name: name.to_string(), opset: 17, ..Default::default() },
            rng: ChaCha8Rng::seed_from_u64(seed),
            counter: 0,
        }
    }

    fn fresh(&mut self, base: &str) -> String {
        self.counter += 1;
        format!("{base}_{}", self.counter)
    }

    fn push_value(&mut self, name: String, shape: Vec<usize>, constant: Option<Tensor>) -> ValueId {
        let id = ValueId(self.graph.values.len());
        let dtype = constant.as_ref().map_or(DType::F32, Tensor::dtype);
        self.graph.values.push(Value { name, shape, dtype, constant });
        id
    }

    /// Declares a model input.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> ValueId {
        let id = self.push_value(name.to_string(), shape.to_vec(), None);
        self.graph.inputs.push(id);
        id
    }

    /// Adds a constant.
    pub fn constant(&mut self, name: &str, t: Tensor) -> ValueId {
        let shape = t.shape().to_vec();
        self.push_value(name.to_string(), shape, Some(t))
    }

    /// Adds a metadata entry (for example class labels under `character` or `labels`).
    pub fn metadata(&mut self, key: &str, value: &str) {
        self.graph.metadata.push((key.to_string(), value.to_string()));
    }

    /// Shape of a value.
    pub fn shape(&self, v: ValueId) -> &[usize] {
        &self.graph.values[v.0].shape
    }

    /// Adds a node, inferring its output shape; returns the output.
    pub fn node(&mut self, base: &str, op: Op, inputs: &[ValueId]) -> Result<ValueId> {
        let shapes: Vec<&[usize]> =
            inputs.iter().map(|&v| self.graph.values[v.0].shape.as_slice()).collect();
        let shape = op.infer(&shapes)?;
        let name = self.fresh(base);
        let out = self.push_value(format!("{name}.out"), shape, None);
        self.graph.nodes.push(Node { name, op, inputs: inputs.to_vec(), outputs: vec![out] });
        Ok(out)
    }

    /// Marks a value as a model output.
    pub fn output(&mut self, v: ValueId) {
        self.graph.outputs.push(v);
    }

    /// Uniform random f32 tensor in `[-bound, bound)`.
    pub fn random(&mut self, shape: &[usize], bound: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let data = (0..n).map(|_| self.rng.random_range(-bound..bound)).collect();
        Tensor::from_f32(shape.to_vec(), data)
    }

    fn weight(&mut self, base: &str, shape: &[usize], fan_in: usize) -> ValueId {
        // Variance 2 / fan_in (He): keeps ReLU networks' activations in a sane range.
        let bound = (6.0 / fan_in.max(1) as f32).sqrt();
        let t = self.random(shape, bound);
        let name = self.fresh(base);
        self.constant(&name, t)
    }

    fn small(&mut self, base: &str, shape: &[usize], bound: f32) -> ValueId {
        let t = self.random(shape, bound);
        let name = self.fresh(base);
        self.constant(&name, t)
    }

    /// Convolution with seeded weights and bias: `k x k`, `stride`, symmetric `pad`, `groups`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: ValueId,
        out_channels: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
        act: Option<Activation>,
    ) -> Result<ValueId> {
        self.conv_full(x, out_channels, [k, k], [stride, stride], [1, 1], [pad; 4], groups, act)
    }

    /// Convolution with every geometric parameter explicit.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_full(
        &mut self,
        x: ValueId,
        out_channels: usize,
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
        pads: [usize; 4],
        groups: usize,
        act: Option<Activation>,
    ) -> Result<ValueId> {
        let cin = self
            .shape(x)
            .get(1)
            .copied()
            .ok_or_else(|| Error::shape("conv", "input has no channels"))?;
        if groups == 0 || cin % groups != 0 {
            return Err(Error::shape(
                "conv",
                format!("{cin} channels not divisible by {groups} groups"),
            ));
        }
        let fan_in = cin / groups * kernel[0] * kernel[1];
        let w = self.weight("conv.w", &[out_channels, cin / groups, kernel[0], kernel[1]], fan_in);
        let b = self.small("conv.b", &[out_channels], 0.1);
        let op = Op::Conv(Conv { kernel, strides, dilations, pads, groups, act, residual: false });
        self.node("conv", op, &[x, w, b])
    }

    /// Transposed convolution with seeded weights and bias.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_transpose(
        &mut self,
        x: ValueId,
        out_channels: usize,
        k: usize,
        stride: usize,
        pad: usize,
        output_padding: usize,
        act: Option<Activation>,
    ) -> Result<ValueId> {
        let cin = self.shape(x)[1];
        let w = self.weight(
            "deconv.w",
            &[cin, out_channels, k, k],
            cin * k * k / (stride * stride).max(1),
        );
        let b = self.small("deconv.b", &[out_channels], 0.1);
        let op = Op::ConvTranspose(ConvTranspose {
            kernel: [k, k],
            strides: [stride, stride],
            dilations: [1, 1],
            pads: [pad; 4],
            output_padding: [output_padding; 2],
            groups: 1,
            act,
        });
        self.node("deconv", op, &[x, w, b])
    }

    /// Standalone batch norm with seeded statistics (already in scale/shift form).
    pub fn batch_norm(&mut self, x: ValueId, act: Option<Activation>) -> Result<ValueId> {
        let c = self.shape(x)[1];
        let scale: Vec<f32> = (0..c).map(|_| self.rng.random_range(0.5..1.5)).collect();
        let shift: Vec<f32> = (0..c).map(|_| self.rng.random_range(-0.2..0.2)).collect();
        let s =
            self.constant(&format!("bn{}.scale", self.counter), Tensor::from_f32(vec![c], scale));
        let t =
            self.constant(&format!("bn{}.shift", self.counter), Tensor::from_f32(vec![c], shift));
        self.node("bn", Op::BatchNorm(BatchNorm { act }), &[x, s, t])
    }

    /// Standalone activation.
    pub fn act(&mut self, x: ValueId, act: Activation) -> Result<ValueId> {
        self.node("act", Op::Unary(act), &[x])
    }

    /// Elementwise binary op of two values.
    pub fn binary(
        &mut self,
        kind: BinaryKind,
        a: ValueId,
        b: ValueId,
        act: Option<Activation>,
    ) -> Result<ValueId> {
        self.node(kind.onnx_name(), Op::Binary(Binary { kind, act }), &[a, b])
    }

    /// `a + b`.
    pub fn add(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.binary(BinaryKind::Add, a, b, None)
    }

    /// Max or average pooling with a square window.
    pub fn pool(
        &mut self,
        kind: PoolKind,
        x: ValueId,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<ValueId> {
        let op = Op::Pool(Pool {
            kind,
            kernel: [k, k],
            strides: [stride, stride],
            dilations: [1, 1],
            pads: [pad; 4],
            ceil_mode: false,
            count_include_pad: false,
        });
        self.node("pool", op, &[x])
    }

    /// Global average pooling.
    pub fn global_avg_pool(&mut self, x: ValueId) -> Result<ValueId> {
        self.node("gap", Op::GlobalAvgPool, &[x])
    }

    /// Flattens to `[N, rest]`.
    pub fn flatten(&mut self, x: ValueId) -> Result<ValueId> {
        let s = self.shape(x);
        let shape = vec![s[0], s[1..].iter().product()];
        self.node("flatten", Op::Reshape(Reshape { shape }), &[x])
    }

    /// Reshape to `shape`.
    pub fn reshape(&mut self, x: ValueId, shape: &[usize]) -> Result<ValueId> {
        self.node("reshape", Op::Reshape(Reshape { shape: shape.to_vec() }), &[x])
    }

    /// Transpose by `perm`.
    pub fn transpose(&mut self, x: ValueId, perm: &[usize]) -> Result<ValueId> {
        self.node("transpose", Op::Transpose(Transpose { perm: perm.to_vec() }), &[x])
    }

    /// Dense layer `[N, K] -> [N, out]` with seeded weights (Gemm with transposed B).
    pub fn dense(&mut self, x: ValueId, out: usize, act: Option<Activation>) -> Result<ValueId> {
        let k = self.shape(x)[1];
        let w = self.weight("fc.w", &[out, k], k);
        let b = self.small("fc.b", &[out], 0.1);
        let op = Op::Gemm(Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: true, act });
        self.node("fc", op, &[x, w, b])
    }

    /// Concatenation along `axis`.
    pub fn concat(&mut self, xs: &[ValueId], axis: usize) -> Result<ValueId> {
        self.node("concat", Op::Concat(Concat { axis }), xs)
    }

    /// Nearest or bilinear resize by an integer factor.
    pub fn upsample(&mut self, x: ValueId, factor: usize, mode: ResizeMode) -> Result<ValueId> {
        let s = self.shape(x);
        let (coord, nearest) = match mode {
            ResizeMode::Nearest => (CoordMode::Asymmetric, NearestMode::Floor),
            ResizeMode::Linear => (CoordMode::HalfPixel, NearestMode::RoundPreferFloor),
        };
        let op = Op::Resize(Resize {
            mode,
            coord,
            nearest,
            scales: [factor as f32; 2],
            size: [s[2] * factor, s[3] * factor],
        });
        self.node("resize", op, &[x])
    }

    /// Softmax along `axis`.
    pub fn softmax(&mut self, x: ValueId, axis: usize) -> Result<ValueId> {
        self.node("softmax", Op::Softmax(Softmax { axis, coerce_2d: false }), &[x])
    }

    /// Squeeze-and-excitation: global pool, two 1x1 convs (ReLU, HardSigmoid), channel scale.
    pub fn squeeze_excite(&mut self, x: ValueId, reduction: usize) -> Result<ValueId> {
        let c = self.shape(x)[1];
        let s = self.global_avg_pool(x)?;
        let s = self.conv(s, (c / reduction).max(1), 1, 1, 0, 1, Some(Activation::Relu))?;
        let s = self.conv(
            s,
            c,
            1,
            1,
            0,
            1,
            Some(Activation::HardSigmoid { alpha: 1.0 / 6.0, beta: 0.5 }),
        )?;
        self.binary(BinaryKind::Mul, x, s, None)
    }

    /// Channel shuffle (ShuffleNet): reshape to groups, transpose, reshape back.
    pub fn channel_shuffle(&mut self, x: ValueId, groups: usize) -> Result<ValueId> {
        let s = self.shape(x).to_vec();
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        let r = self.reshape(x, &[n, groups, c / groups, h, w])?;
        let t = self.transpose(r, &[0, 2, 1, 3, 4])?;
        self.reshape(t, &[n, c, h, w])
    }

    /// Finishes the graph (checks it) and returns it.
    pub fn finish(self) -> Result<Graph> {
        let g = self.graph;
        g.validate()?;
        g.check_shapes()?;
        Ok(g)
    }
}
