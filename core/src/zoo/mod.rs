//! Standard networks built in code with seeded weights, at any input size: ask "how much memory
//! does ResNet-50 need at 512x512?" without a file, and test on architectures everyone knows.
//! Batch norms are folded (as in deployed models); architectures follow torchvision. The
//! standard networks come normalised as an import would leave them (residual adds fused into
//! the convolution before them), so they plan exactly like their exported ONNX files.

pub mod arch;

use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, ValueId};
use crate::ops::{Activation, PoolKind};

const RELU: Option<Activation> = Some(Activation::Relu);
const RELU6: Option<Activation> = Some(Activation::Clip { min: 0.0, max: 6.0 });

/// The builder's graph after the import passes (`passes::normalize`).
fn deployed(b: GraphBuilder) -> Result<Graph> {
    let mut g = b.finish()?;
    crate::passes::normalize(&mut g);
    g.check_shapes()?;
    Ok(g)
}

/// Names accepted by [`by_name`]: standard networks, then the architecture test networks.
pub const NAMES: [&str; 8] =
    ["mobilenet_v2", "resnet18", "resnet50", "vgg16", "se_net", "shuffle_net", "inception", "unet"];

/// Builds a zoo network by name for a `[1, 3, height, width]` input with 1000 classes.
pub fn by_name(name: &str, height: usize, width: usize, seed: u64) -> Result<Graph> {
    match name {
        "mobilenet_v2" | "mobilenetv2" => mobilenet_v2_hw(height, width, 1000, seed),
        "resnet18" => resnet(18, height, width, 1000, seed),
        "resnet50" => resnet(50, height, width, 1000, seed),
        "vgg16" => vgg16(height, width, 1000, seed),
        other => match arch::by_name(other, height, width, seed) {
            Some(g) => g,
            None => Err(Error::Plan(format!(
                "unknown zoo model '{other}'; choose one of: {}",
                NAMES.join(", ")
            ))),
        },
    }
}

fn check_size(name: &str, h: usize, w: usize, multiple: usize) -> Result<()> {
    if h < multiple || w < multiple {
        return Err(Error::shape(
            name,
            format!("input {h}x{w} is too small; {name} needs at least {multiple}x{multiple}"),
        ));
    }
    Ok(())
}

/// MobileNetV2 (torchvision layout, width 1.0) at `size x size`.
pub fn mobilenet_v2(size: usize, classes: usize, seed: u64) -> Result<Graph> {
    mobilenet_v2_hw(size, size, classes, seed)
}

/// MobileNetV2 at `height x width`.
pub fn mobilenet_v2_hw(height: usize, width: usize, classes: usize, seed: u64) -> Result<Graph> {
    check_size("mobilenet_v2", height, width, 32)?;
    let mut b = GraphBuilder::new("mobilenet_v2", seed);
    let x = b.input("input", &[1, 3, height, width]);
    let mut x = b.conv(x, 32, 3, 2, 1, 1, RELU6)?;
    let mut cin = 32;
    // (expansion t, channels c, repeats n, first stride s)
    let cfg = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    for (t, c, n, s) in cfg {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            x = inverted_residual(&mut b, x, cin, c, stride, t)?;
            cin = c;
        }
    }
    let x = b.conv(x, 1280, 1, 1, 0, 1, RELU6)?;
    let x = b.global_avg_pool(x)?;
    let x = b.flatten(x)?;
    let y = b.dense(x, classes, None)?;
    b.output(y);
    deployed(b)
}

fn inverted_residual(
    b: &mut GraphBuilder,
    x: ValueId,
    cin: usize,
    cout: usize,
    stride: usize,
    t: usize,
) -> Result<ValueId> {
    let hidden = cin * t;
    let mut h = x;
    if t != 1 {
        h = b.conv(h, hidden, 1, 1, 0, 1, RELU6)?;
    }
    let h = b.conv(h, hidden, 3, stride, 1, hidden, RELU6)?;
    let h = b.conv(h, cout, 1, 1, 0, 1, None)?;
    if stride == 1 && cin == cout {
        b.add(x, h)
    } else {
        Ok(h)
    }
}

/// ResNet-18 or ResNet-50 (torchvision v1.5: stride on the 3x3 conv) at `height x width`.
pub fn resnet(
    depth: usize,
    height: usize,
    width: usize,
    classes: usize,
    seed: u64,
) -> Result<Graph> {
    let (blocks, bottleneck) = match depth {
        18 => ([2, 2, 2, 2], false),
        34 => ([3, 4, 6, 3], false),
        50 => ([3, 4, 6, 3], true),
        101 => ([3, 4, 23, 3], true),
        other => {
            return Err(Error::Plan(format!(
                "ResNet-{other} is not in the zoo (18, 34, 50, 101 are)"
            )))
        }
    };
    let name = format!("resnet{depth}");
    check_size(&name, height, width, 32)?;
    let mut b = GraphBuilder::new(&name, seed);
    let x = b.input("input", &[1, 3, height, width]);
    let x = b.conv(x, 64, 7, 2, 3, 1, RELU)?;
    let mut x = b.pool(PoolKind::Max, x, 3, 2, 1)?;
    let mut cin = 64;
    for (stage, &n) in blocks.iter().enumerate() {
        let width_c = 64 << stage;
        for i in 0..n {
            let stride = if i == 0 && stage > 0 { 2 } else { 1 };
            let cout = if bottleneck { width_c * 4 } else { width_c };
            let shortcut = if stride != 1 || cin != cout {
                b.conv(x, cout, 1, stride, 0, 1, None)?
            } else {
                x
            };
            let h = if bottleneck {
                let h = b.conv(x, width_c, 1, 1, 0, 1, RELU)?;
                let h = b.conv(h, width_c, 3, stride, 1, 1, RELU)?;
                b.conv(h, cout, 1, 1, 0, 1, None)?
            } else {
                let h = b.conv(x, width_c, 3, stride, 1, 1, RELU)?;
                b.conv(h, cout, 3, 1, 1, 1, None)?
            };
            x = b.binary(crate::ops::BinaryKind::Add, h, shortcut, RELU)?;
            cin = cout;
        }
    }
    let x = b.global_avg_pool(x)?;
    let x = b.flatten(x)?;
    let y = b.dense(x, classes, None)?;
    b.output(y);
    deployed(b)
}

/// VGG-16 (configuration D) at `height x width`; the classifier reads the whole final map.
pub fn vgg16(height: usize, width: usize, classes: usize, seed: u64) -> Result<Graph> {
    check_size("vgg16", height, width, 32)?;
    let mut b = GraphBuilder::new("vgg16", seed);
    let mut x = b.input("input", &[1, 3, height, width]);
    let cfg: [usize; 18] =
        [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];
    for c in cfg {
        x = if c == 0 {
            b.pool(PoolKind::Max, x, 2, 2, 0)?
        } else {
            b.conv(x, c, 3, 1, 1, 1, RELU)?
        };
    }
    let x = b.flatten(x)?;
    let x = b.dense(x, 4096, RELU)?;
    let x = b.dense(x, 4096, RELU)?;
    let y = b.dense(x, classes, None)?;
    b.output(y);
    deployed(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoo_shapes_and_sizes() {
        let g = mobilenet_v2(224, 1000, 0).unwrap();
        assert_eq!(g.value(g.outputs[0]).shape, vec![1, 1000]);
        // torchvision's MobileNetV2 has 3.50 M parameters.
        let p = g.parameter_count();
        assert!((3_400_000..3_600_000).contains(&p), "{p}");
        let r = resnet(18, 64, 64, 10, 0).unwrap();
        assert_eq!(r.value(r.outputs[0]).shape, vec![1, 10]);
        assert!(by_name("nope", 224, 224, 0).is_err());
        assert!(mobilenet_v2(16, 10, 0).is_err());
    }
}
