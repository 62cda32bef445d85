//! Convolution and transposed convolution (2-D, NCHW, any groups, strides, dilations, pads).

use serde::{Deserialize, Serialize};

use super::{Activation, Export};
use crate::error::Result;
use crate::onnx::export::{attr_int, attr_ints};
use crate::onnx::{Arg, OnnxNode};

/// 2-D convolution. Inputs: `x [N, C, H, W]`, weight `[M, C/groups, kh, kw]`, optional bias `[M]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along H and W.
    pub strides: [usize; 2],
    /// Dilation along H and W.
    pub dilations: [usize; 2],
    /// Padding: top, left, bottom, right.
    pub pads: [usize; 4],
    /// Number of groups (C for depthwise).
    pub groups: usize,
    /// Activation applied to each output element (fused at import).
    pub act: Option<Activation>,
    /// A residual add fused at import: inputs are then `[x, w, bias, r]` and the output is
    /// `act(conv(x) + bias + r)`, `r` having the output's shape (ONNX: Conv, Add, activation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub residual: bool,
}

/// 2-D transposed convolution. Inputs: `x [N, C, H, W]`, weight `[C, M/groups, kh, kw]`, bias `[M]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvTranspose {
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along H and W.
    pub strides: [usize; 2],
    /// Dilation along H and W.
    pub dilations: [usize; 2],
    /// Padding removed from the full output: top, left, bottom, right.
    pub pads: [usize; 4],
    /// Extra rows/columns added at the bottom/right of the output.
    pub output_padding: [usize; 2],
    /// Number of groups.
    pub groups: usize,
    /// Fused activation.
    pub act: Option<Activation>,
}

/// Output length of a convolution or pooling window along one axis, `None` when the window
/// never fits.
pub fn conv_out_len(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
    ceil: bool,
) -> Option<usize> {
    let span = (kernel - 1) * dilation + 1;
    let padded = input + pad_begin + pad_end;
    if padded < span || stride == 0 {
        return None;
    }
    let q = padded - span;
    let mut out = if ceil { q.div_ceil(stride) + 1 } else { q / stride + 1 };
    // ONNX (like PyTorch) drops a last window that would start inside the end padding.
    if ceil && (out - 1) * stride >= input + pad_begin {
        out -= 1;
    }
    Some(out)
}

fn shape_err(what: &str, reason: String) -> crate::error::Error {
    crate::error::Error::shape(what, reason)
}

impl Conv {
    /// Output shape from the input and weight shapes.
    pub fn infer(&self, x: &[usize], w: &[usize]) -> Result<Vec<usize>> {
        if x.len() != 4 || w.len() != 4 {
            return Err(shape_err(
                "Conv",
                format!("expects 4-D input and weight, got {x:?}, {w:?}"),
            ));
        }
        let g = self.groups;
        if g == 0 || !x[1].is_multiple_of(g) || !w[0].is_multiple_of(g) || w[1] * g != x[1] {
            return Err(shape_err(
                "Conv",
                format!("input {x:?} and weight {w:?} do not agree with {g} groups"),
            ));
        }
        let mut out = vec![x[0], w[0], 0, 0];
        for a in 0..2 {
            out[2 + a] = conv_out_len(
                x[2 + a],
                self.kernel[a],
                self.strides[a],
                self.dilations[a],
                self.pads[a],
                self.pads[a + 2],
                false,
            )
            .ok_or_else(|| {
                shape_err("Conv", format!("kernel {:?} does not fit input {x:?}", self.kernel))
            })?;
        }
        Ok(out)
    }

    /// Multiply-accumulates per output element.
    pub fn macs_per_output(&self, w: &[usize]) -> usize {
        w[1] * w[2] * w[3]
    }

    /// True when every output channel reads exactly one input channel.
    pub fn is_depthwise(&self, x_channels: usize) -> bool {
        self.groups == x_channels && self.groups > 1
    }

    pub(crate) fn import(n: &OnnxNode<'_>) -> Result<(super::Op, Vec<Arg>)> {
        let x = n.shape(0)?;
        let w = n.shape(1)?;
        if x.len() != 4 || w.len() != 4 {
            return Err(n.unsupported(format!(
                "only 2-D convolutions (4-D tensors) are supported, got input {x:?}"
            )));
        }
        n.const_input(1)?;
        n.const_input(2)?;
        let kernel = kernel_attr(n, [w[2], w[3]])?;
        let strides = pair(n, "strides", 1)?;
        let dilations = pair(n, "dilations", 1)?;
        let pads = resolve_pads(n, [x[2], x[3]], kernel, strides, dilations)?;
        let groups = n.int("group", 1)?;
        if groups < 1 {
            return Err(n.shape_error(format!("group must be positive, got {groups}")));
        }
        let conv = Conv {
            kernel,
            strides,
            dilations,
            pads,
            groups: groups as usize,
            act: None,
            residual: false,
        };
        let mut args = vec![Arg::Input(0), Arg::Input(1)];
        if n.has_input(2) {
            args.push(Arg::Input(2));
        }
        Ok((super::Op::Conv(conv), args))
    }

    pub(crate) fn export(&self) -> Export {
        Export::new("Conv")
            .attr(attr_ints("kernel_shape", &self.kernel))
            .attr(attr_ints("strides", &self.strides))
            .attr(attr_ints("dilations", &self.dilations))
            .attr(attr_ints("pads", &self.pads))
            .attr(attr_int("group", self.groups as i64))
            .residual(self.residual)
            .act(self.act)
    }
}

impl ConvTranspose {
    /// Output shape from the input and weight shapes.
    pub fn infer(&self, x: &[usize], w: &[usize]) -> Result<Vec<usize>> {
        if x.len() != 4 || w.len() != 4 {
            return Err(shape_err(
                "ConvTranspose",
                format!("expects 4-D input and weight, got {x:?}, {w:?}"),
            ));
        }
        let g = self.groups;
        if g == 0 || w[0] != x[1] || !x[1].is_multiple_of(g) {
            return Err(shape_err(
                "ConvTranspose",
                format!("input {x:?} and weight {w:?} do not agree with {g} groups"),
            ));
        }
        let mut out = vec![x[0], w[1] * g, 0, 0];
        for a in 0..2 {
            let full = self.strides[a] * (x[2 + a] - 1)
                + self.output_padding[a]
                + (self.kernel[a] - 1) * self.dilations[a]
                + 1;
            let cut = self.pads[a] + self.pads[a + 2];
            if full <= cut {
                return Err(shape_err(
                    "ConvTranspose",
                    format!("pads {:?} remove the whole output", self.pads),
                ));
            }
            out[2 + a] = full - cut;
        }
        Ok(out)
    }

    pub(crate) fn import(n: &OnnxNode<'_>) -> Result<(super::Op, Vec<Arg>)> {
        let x = n.shape(0)?;
        let w = n.shape(1)?;
        if x.len() != 4 || w.len() != 4 {
            return Err(n.unsupported("only 2-D transposed convolutions are supported"));
        }
        n.const_input(1)?;
        n.const_input(2)?;
        let kernel = kernel_attr(n, [w[2], w[3]])?;
        let strides = pair(n, "strides", 1)?;
        let dilations = pair(n, "dilations", 1)?;
        let output_padding = pair(n, "output_padding", 0)?;
        let auto_pad = n.string("auto_pad", "NOTSET")?;
        let output_shape = n.ints("output_shape")?;
        let mut pads = [0usize; 4];
        if let Some(p) = n.ints("pads")? {
            pads = four(n, &p)?;
        }
        if output_shape.is_some() || auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER" {
            // Padding derived from a requested output size (spec of opset 11+).
            let want: Vec<usize> = match &output_shape {
                Some(s) => {
                    let s: Vec<usize> = s.iter().map(|&v| v.max(0) as usize).collect();
                    s[s.len().saturating_sub(2)..].to_vec()
                }
                None => vec![x[2] * strides[0], x[3] * strides[1]],
            };
            if want.len() != 2 {
                return Err(n.shape_error("output_shape must give H and W"));
            }
            for a in 0..2 {
                let full = strides[a] * (x[2 + a] - 1)
                    + output_padding[a]
                    + (kernel[a] - 1) * dilations[a]
                    + 1;
                if full < want[a] {
                    return Err(
                        n.unsupported("output_shape larger than the full transposed output")
                    );
                }
                let total = full - want[a];
                let (b, e) = if auto_pad == "SAME_UPPER" {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                };
                pads[a] = b;
                pads[a + 2] = e;
            }
        } else if auto_pad != "NOTSET" && auto_pad != "VALID" {
            return Err(n.unsupported(format!("auto_pad '{auto_pad}'")));
        }
        let groups = n.int("group", 1)?;
        if groups < 1 {
            return Err(n.shape_error(format!("group must be positive, got {groups}")));
        }
        let op = ConvTranspose {
            kernel,
            strides,
            dilations,
            pads,
            output_padding,
            groups: groups as usize,
            act: None,
        };
        let mut args = vec![Arg::Input(0), Arg::Input(1)];
        if n.has_input(2) {
            args.push(Arg::Input(2));
        }
        Ok((super::Op::ConvTranspose(op), args))
    }

    pub(crate) fn export(&self) -> Export {
        Export::new("ConvTranspose")
            .attr(attr_ints("kernel_shape", &self.kernel))
            .attr(attr_ints("strides", &self.strides))
            .attr(attr_ints("dilations", &self.dilations))
            .attr(attr_ints("pads", &self.pads))
            .attr(attr_ints("output_padding", &self.output_padding))
            .attr(attr_int("group", self.groups as i64))
            .act(self.act)
    }
}

/// `kernel_shape`, checked against the weight when given.
pub(crate) fn kernel_attr(n: &OnnxNode<'_>, from_weight: [usize; 2]) -> Result<[usize; 2]> {
    match n.ints("kernel_shape")? {
        None => Ok(from_weight),
        Some(k) => {
            let k = two(n, "kernel_shape", &k)?;
            if k != from_weight {
                return Err(n.shape_error(format!(
                    "kernel_shape {k:?} differs from the weight's {from_weight:?}"
                )));
            }
            Ok(k)
        }
    }
}

/// A two-element positive int attribute (strides, dilations), `default` when absent.
pub(crate) fn pair(n: &OnnxNode<'_>, name: &str, default: usize) -> Result<[usize; 2]> {
    match n.ints(name)? {
        None => Ok([default; 2]),
        Some(v) => two(n, name, &v),
    }
}

pub(crate) fn two(n: &OnnxNode<'_>, name: &str, v: &[i64]) -> Result<[usize; 2]> {
    if v.len() != 2 || v.iter().any(|&x| x < 0) {
        return Err(n.unsupported(format!("{name} {v:?}: expected two non-negative values (2-D)")));
    }
    Ok([v[0] as usize, v[1] as usize])
}

pub(crate) fn four(n: &OnnxNode<'_>, v: &[i64]) -> Result<[usize; 4]> {
    if v.len() != 4 || v.iter().any(|&x| x < 0) {
        return Err(n.unsupported(format!("pads {v:?}: expected four non-negative values (2-D)")));
    }
    Ok([v[0] as usize, v[1] as usize, v[2] as usize, v[3] as usize])
}

/// Explicit pads from `pads` or `auto_pad` (shared by convolution and pooling).
pub(crate) fn resolve_pads(
    n: &OnnxNode<'_>,
    input: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
) -> Result<[usize; 4]> {
    if strides.contains(&0) || dilations.contains(&0) || kernel.contains(&0) {
        return Err(n.shape_error("kernel, strides and dilations must be positive"));
    }
    let auto_pad = n.string("auto_pad", "NOTSET")?;
    match auto_pad.as_str() {
        "NOTSET" => match n.ints("pads")? {
            None => Ok([0; 4]),
            Some(p) => four(n, &p),
        },
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut pads = [0; 4];
            for a in 0..2 {
                let out = input[a].div_ceil(strides[a]);
                let span = (kernel[a] - 1) * dilations[a] + 1;
                let total = ((out - 1) * strides[a] + span).saturating_sub(input[a]);
                let small = total / 2;
                let (b, e) = if auto_pad == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                pads[a] = b;
                pads[a + 2] = e;
            }
            Ok(pads)
        }
        other => Err(n.unsupported(format!("auto_pad '{other}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lengths_follow_onnx() {
        assert_eq!(conv_out_len(224, 3, 2, 1, 1, 1, false), Some(112));
        assert_eq!(conv_out_len(7, 3, 1, 2, 0, 0, false), Some(3));
        assert_eq!(conv_out_len(2, 3, 1, 1, 0, 0, false), None);
        // ceil mode: 6 with k=3 s=2 -> floor 2, ceil 3
        assert_eq!(conv_out_len(6, 3, 2, 1, 0, 0, true), Some(3));
        assert_eq!(conv_out_len(6, 3, 2, 1, 0, 0, false), Some(2));
        // ceil mode never starts a window in the end padding
        assert_eq!(conv_out_len(5, 2, 2, 1, 0, 1, true), Some(3));
        assert_eq!(conv_out_len(4, 2, 2, 1, 1, 1, true), Some(3));
    }

    #[test]
    fn conv_shape() {
        let c = Conv {
            kernel: [3, 3],
            strides: [2, 2],
            dilations: [1, 1],
            pads: [1, 1, 1, 1],
            groups: 32,
            act: None,
            residual: false,
        };
        assert_eq!(c.infer(&[1, 32, 112, 112], &[32, 1, 3, 3]).unwrap(), vec![1, 32, 56, 56]);
        assert!(c.infer(&[1, 16, 112, 112], &[32, 1, 3, 3]).is_err());
    }

    #[test]
    fn conv_transpose_shape() {
        let c = ConvTranspose {
            kernel: [2, 2],
            strides: [2, 2],
            dilations: [1, 1],
            pads: [0; 4],
            output_padding: [0, 0],
            groups: 1,
            act: None,
        };
        assert_eq!(c.infer(&[1, 24, 160, 160], &[24, 24, 2, 2]).unwrap(), vec![1, 24, 320, 320]);
    }
}
