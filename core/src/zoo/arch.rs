//! Small networks that exercise the architectural patterns real CNNs use and the planner must
//! handle: squeeze-and-excitation, channel shuffle, many-branch concatenation, and an
//! encoder-decoder with transposed convolutions, upsampling and skip connections. Seeded, any
//! input size (multiples of 16).

use crate::error::Result;
use crate::graph::{Graph, GraphBuilder};
use crate::ops::{Activation, BinaryKind, PoolKind, ResizeMode};

const RELU: Option<Activation> = Some(Activation::Relu);
const HSWISH: Option<Activation> = Some(Activation::HardSwish);

/// MobileNetV3-style blocks with squeeze-and-excitation, HardSwish and a softmax head.
pub fn se_net(height: usize, width: usize, classes: usize, seed: u64) -> Result<Graph> {
    super::check_size("se_net", height, width, 16)?;
    let mut b = GraphBuilder::new("se_net", seed);
    let x = b.input("input", &[1, 3, height, width]);
    let mut x = b.conv(x, 16, 3, 2, 1, 1, HSWISH)?;
    for &(c, s) in &[(24, 2), (24, 1), (40, 2), (40, 1)] {
        let cin = b.shape(x)[1];
        let h = b.conv(x, cin * 3, 1, 1, 0, 1, HSWISH)?;
        let h = b.conv(h, cin * 3, 5, s, 2, cin * 3, HSWISH)?;
        let h = b.squeeze_excite(h, 4)?;
        let h = b.conv(h, c, 1, 1, 0, 1, None)?;
        x = if s == 1 && cin == c { b.add(x, h)? } else { h };
    }
    let x = b.batch_norm(x, Some(Activation::LeakyRelu { alpha: 0.1 }))?;
    let x = b.global_avg_pool(x)?;
    let x = b.flatten(x)?;
    let x = b.dense(x, classes, None)?;
    let y = b.softmax(x, 1)?;
    b.output(y);
    b.finish()
}

/// ShuffleNet-style units: grouped 1x1 convs, channel shuffle, depthwise 3x3, concat shortcut.
pub fn shuffle_net(height: usize, width: usize, classes: usize, seed: u64) -> Result<Graph> {
    super::check_size("shuffle_net", height, width, 16)?;
    let mut b = GraphBuilder::new("shuffle_net", seed);
    let x = b.input("input", &[1, 3, height, width]);
    let x = b.conv(x, 24, 3, 2, 1, 1, RELU)?;
    let mut x = b.pool(PoolKind::Max, x, 3, 2, 1)?;
    for &(c, s) in &[(48, 2), (48, 1), (96, 2)] {
        let cin = b.shape(x)[1];
        let branch = if s == 2 { c - cin } else { c };
        let h = b.conv(x, 24, 1, 1, 0, 3.min(gcd(cin, 24)), RELU)?;
        let h = b.channel_shuffle(h, 3)?;
        let h = b.conv(h, 24, 3, s, 1, 24, None)?;
        let h = b.conv(h, branch, 1, 1, 0, 1, None)?;
        x = if s == 2 {
            let short = b.node("avgpool", crate::ops::Op::Pool(avg3s2()), &[x])?;
            let cat = b.concat(&[short, h], 1)?;
            b.act(cat, Activation::Relu)?
        } else {
            b.binary(BinaryKind::Add, x, h, RELU)?
        };
    }
    let x = b.global_avg_pool(x)?;
    let x = b.flatten(x)?;
    let y = b.dense(x, classes, None)?;
    b.output(y);
    b.finish()
}

fn avg3s2() -> crate::ops::Pool {
    crate::ops::Pool {
        kind: PoolKind::Avg,
        kernel: [3, 3],
        strides: [2, 2],
        dilations: [1, 1],
        pads: [1, 1, 1, 1],
        ceil_mode: false,
        count_include_pad: true,
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Inception-style blocks: four branches (1x1, 3x3, dilated 3x3, pool + 1x1) concatenated.
pub fn inception(height: usize, width: usize, classes: usize, seed: u64) -> Result<Graph> {
    super::check_size("inception", height, width, 16)?;
    let mut b = GraphBuilder::new("inception", seed);
    let x = b.input("input", &[1, 3, height, width]);
    let mut x = b.conv(x, 32, 3, 2, 1, 1, RELU)?;
    for _ in 0..2 {
        let b1 = b.conv(x, 16, 1, 1, 0, 1, RELU)?;
        let b2 = b.conv(x, 16, 1, 1, 0, 1, RELU)?;
        let b2 = b.conv(b2, 24, 3, 1, 1, 1, RELU)?;
        let b3 = b.conv_full(x, 16, [3, 3], [1, 1], [2, 2], [2; 4], 1, RELU)?;
        let b3 = b.conv_full(b3, 8, [1, 5], [1, 1], [1, 1], [0, 2, 0, 2], 1, RELU)?;
        let b4 = b.pool(PoolKind::Max, x, 3, 1, 1)?;
        let b4 = b.conv(b4, 8, 1, 1, 0, 1, RELU)?;
        x = b.concat(&[b1, b2, b3, b4], 1)?;
        x = b.pool(PoolKind::Max, x, 2, 2, 0)?;
    }
    let x = b.global_avg_pool(x)?;
    let x = b.flatten(x)?;
    let y = b.dense(x, classes, None)?;
    b.output(y);
    b.finish()
}

/// A small U-Net: encoder with strided convs, decoder with transposed convs and bilinear and
/// nearest upsampling, skip connections by concat and add, sigmoid map out.
pub fn unet(height: usize, width: usize, seed: u64) -> Result<Graph> {
    super::check_size("unet", height, width, 16)?;
    let mut b = GraphBuilder::new("unet", seed);
    let x = b.input("input", &[1, 3, height, width]);
    let e1 = b.conv(x, 16, 3, 1, 1, 1, RELU)?;
    let e2 = b.conv(e1, 32, 3, 2, 1, 1, RELU)?;
    let e3 = b.conv(e2, 48, 3, 2, 1, 1, RELU)?;
    let e4 = b.conv(e3, 64, 3, 2, 1, 1, RELU)?;
    let d3 = b.conv_transpose(e4, 48, 2, 2, 0, 0, RELU)?;
    let d3 = b.add(d3, e3)?;
    let d2 = b.conv_transpose(d3, 32, 3, 2, 1, 1, RELU)?;
    let d2 = b.concat(&[d2, e2], 1)?;
    let d2 = b.conv(d2, 32, 3, 1, 1, 1, RELU)?;
    let d1 = b.upsample(d2, 2, ResizeMode::Linear)?;
    let d1 = b.conv(d1, 16, 3, 1, 1, 1, RELU)?;
    let side = b.upsample(e3, 4, ResizeMode::Nearest)?;
    let side = b.conv(side, 16, 1, 1, 0, 1, None)?;
    let d1 = b.add(d1, side)?;
    let d1 = b.concat(&[d1, e1], 1)?;
    let y = b.conv(d1, 1, 3, 1, 1, 1, Some(Activation::Sigmoid))?;
    b.output(y);
    b.finish()
}

/// The arch networks by name.
pub fn by_name(name: &str, height: usize, width: usize, seed: u64) -> Option<Result<Graph>> {
    Some(match name {
        "se_net" => se_net(height, width, 10, seed),
        "shuffle_net" => shuffle_net(height, width, 10, seed),
        "inception" => inception(height, width, 10, seed),
        "unet" => unet(height, width, seed),
        _ => return None,
    })
}
