//! Windowed pooling (max, average) and global average pooling.

use serde::{Deserialize, Serialize};

use super::conv::{conv_out_len, pair, resolve_pads, two};
use super::{Export, Op};
use crate::error::{Error, Result};
use crate::onnx::export::{attr_int, attr_ints};
use crate::onnx::{Arg, OnnxNode};

/// Which reduction a pooling window computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// Maximum over the window (padding never wins).
    Max,
    /// Mean over the window.
    Avg,
}

/// Max or average pooling over `kernel` windows of an NCHW tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    /// Max or average.
    pub kind: PoolKind,
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride along H and W.
    pub strides: [usize; 2],
    /// Dilation along H and W (MaxPool only; 1 for average).
    pub dilations: [usize; 2],
    /// Padding: top, left, bottom, right.
    pub pads: [usize; 4],
    /// Output size rounds up (a last partial window is kept).
    pub ceil_mode: bool,
    /// Average divides by the full window, padding included.
    pub count_include_pad: bool,
}

impl Pool {
    /// Output shape.
    pub fn infer(&self, x: &[usize]) -> Result<Vec<usize>> {
        if x.len() != 4 {
            return Err(Error::shape("Pool", format!("expects a 4-D input, got {x:?}")));
        }
        let mut out = x.to_vec();
        for a in 0..2 {
            // As onnxruntime requires: a window must always cover some input (a window wholly
            // in padding has no maximum and no mean).
            let span = (self.kernel[a].max(1) - 1) * self.dilations[a] + 1;
            if self.pads[a] >= span || self.pads[a + 2] >= span {
                return Err(Error::shape(
                    "Pool",
                    format!(
                        "pads {:?} must be smaller than the window {:?}",
                        self.pads, self.kernel
                    ),
                ));
            }
            out[2 + a] = conv_out_len(
                x[2 + a],
                self.kernel[a],
                self.strides[a],
                self.dilations[a],
                self.pads[a],
                self.pads[a + 2],
                self.ceil_mode,
            )
            .ok_or_else(|| {
                Error::shape("Pool", format!("window {:?} does not fit input {x:?}", self.kernel))
            })?;
        }
        Ok(out)
    }

    pub(crate) fn import(n: &OnnxNode<'_>, kind: PoolKind) -> Result<(Op, Vec<Arg>)> {
        let x = n.shape(0)?;
        if x.len() != 4 {
            return Err(n.unsupported(format!("only 2-D pooling is supported, got input {x:?}")));
        }
        if n.proto.output.len() > 1 && !n.proto.output[1].is_empty() {
            return Err(n.unsupported("the Indices output of MaxPool is not supported"));
        }
        if n.int("storage_order", 0)? != 0 {
            return Err(n.unsupported("storage_order=1"));
        }
        let kernel = match n.ints("kernel_shape")? {
            Some(k) => two(n, "kernel_shape", &k)?,
            None => return Err(n.shape_error("kernel_shape is required")),
        };
        let strides = pair(n, "strides", 1)?;
        let dilations = pair(n, "dilations", 1)?;
        if kind == PoolKind::Avg && dilations != [1, 1] {
            return Err(n.unsupported("dilated average pooling"));
        }
        let pads = resolve_pads(n, [x[2], x[3]], kernel, strides, dilations)?;
        let pool = Pool {
            kind,
            kernel,
            strides,
            dilations,
            pads,
            ceil_mode: n.int("ceil_mode", 0)? != 0,
            count_include_pad: n.int("count_include_pad", 0)? != 0,
        };
        pool.infer(x).map_err(|e| n.shape_error(e.to_string()))?;
        Ok((Op::Pool(pool), vec![Arg::Input(0)]))
    }

    pub(crate) fn export(&self) -> Export {
        let e = match self.kind {
            PoolKind::Max => Export::new("MaxPool").attr(attr_ints("dilations", &self.dilations)),
            PoolKind::Avg => Export::new("AveragePool")
                .attr(attr_int("count_include_pad", self.count_include_pad as i64)),
        };
        e.attr(attr_ints("kernel_shape", &self.kernel))
            .attr(attr_ints("strides", &self.strides))
            .attr(attr_ints("pads", &self.pads))
            .attr(attr_int("ceil_mode", self.ceil_mode as i64))
    }
}

/// Output shape of global average pooling: `[N, C, 1, 1]`.
pub fn global_pool_infer(x: &[usize]) -> Result<Vec<usize>> {
    if x.len() < 3 {
        return Err(Error::shape("GlobalAveragePool", format!("expects rank >= 3, got {x:?}")));
    }
    let mut out = x.to_vec();
    out[2..].iter_mut().for_each(|d| *d = 1);
    Ok(out)
}

pub(crate) fn import_global(n: &OnnxNode<'_>) -> Result<(Op, Vec<Arg>)> {
    let x = n.shape(0)?;
    if x.len() != 4 {
        return Err(n.unsupported(format!("only 4-D inputs are supported, got {x:?}")));
    }
    Ok((Op::GlobalAvgPool, vec![Arg::Input(0)]))
}
