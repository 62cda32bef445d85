//! Reductions over axes (ReduceMean, ReduceSum, ReduceMax) and Softmax.

use serde::{Deserialize, Serialize};

use super::{Export, Op};
use crate::error::{Error, Result};
use crate::onnx::export::{attr_int, attr_ints};
use crate::onnx::{Arg, OnnxNode};
use crate::tensor::Tensor;

/// Which reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceKind {
    /// Arithmetic mean.
    Mean,
    /// Sum.
    Sum,
    /// Maximum.
    Max,
}

impl ReduceKind {
    /// ONNX operator name.
    pub fn onnx_name(self) -> &'static str {
        match self {
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Max => "ReduceMax",
        }
    }
}

/// Reduction over a set of axes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reduce {
    /// The reduction.
    pub kind: ReduceKind,
    /// Sorted, non-negative axes.
    pub axes: Vec<usize>,
    /// Keep reduced axes as size 1.
    pub keepdims: bool,
}

/// Softmax along `axis`; with `coerce_2d` (opset < 13) over all axes from `axis` on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Softmax {
    /// Non-negative axis.
    pub axis: usize,
    /// Opset < 13 semantics: the input is flattened to 2-D at `axis`.
    pub coerce_2d: bool,
}

impl Reduce {
    /// Output shape.
    pub fn infer(&self, x: &[usize]) -> Result<Vec<usize>> {
        if self.axes.iter().any(|&a| a >= x.len()) {
            return Err(Error::shape(
                self.kind.onnx_name(),
                format!("axes {:?} out of range", self.axes),
            ));
        }
        Ok(x.iter()
            .enumerate()
            .filter_map(|(i, &d)| match (self.axes.contains(&i), self.keepdims) {
                (true, true) => Some(1),
                (true, false) => None,
                (false, _) => Some(d),
            })
            .collect())
    }

    pub(crate) fn import(n: &OnnxNode<'_>, kind: ReduceKind) -> Result<(Op, Vec<Arg>)> {
        let rank = n.rank()?;
        // ReduceSum moved axes to an input at opset 13, the others at 18.
        let axes_as_input = n.opset >= if kind == ReduceKind::Sum { 13 } else { 18 };
        let axes = if axes_as_input {
            if n.input_count() > 1 {
                n.const_ints(1)?
            } else {
                None
            }
        } else {
            n.ints("axes")?
        };
        let axes = match axes {
            Some(a) if !a.is_empty() => a,
            _ if n.int("noop_with_empty_axes", 0)? != 0 => {
                return Err(n.unsupported("noop_with_empty_axes with empty axes (an identity)"))
            }
            _ => (0..rank as i64).collect(),
        };
        let mut axes = axes.iter().map(|&a| n.axis(a, rank)).collect::<Result<Vec<_>>>()?;
        axes.sort_unstable();
        axes.dedup();
        let r = Reduce { kind, axes, keepdims: n.int("keepdims", 1)? != 0 };
        Ok((Op::Reduce(r), vec![Arg::Input(0)]))
    }

    /// Exported for opset 17: axes are an input of ReduceSum (13+) and an attribute of the others.
    pub(crate) fn export(&self) -> Export {
        let axes: Vec<i64> = self.axes.iter().map(|&a| a as i64).collect();
        let e = Export::new(self.kind.onnx_name()).attr(attr_int("keepdims", self.keepdims as i64));
        match self.kind {
            ReduceKind::Sum => e.const_input(Tensor::from_i64(vec![axes.len()], axes)),
            ReduceKind::Mean | ReduceKind::Max => e.attr(attr_ints("axes", &self.axes)),
        }
    }
}

impl Softmax {
    /// Output shape (same as x).
    pub fn infer(&self, x: &[usize]) -> Result<Vec<usize>> {
        if self.axis >= x.len() {
            return Err(Error::shape(
                "Softmax",
                format!("axis {} out of range for {x:?}", self.axis),
            ));
        }
        Ok(x.to_vec())
    }

    pub(crate) fn import(n: &OnnxNode<'_>) -> Result<(Op, Vec<Arg>)> {
        let rank = n.rank()?;
        let legacy = n.opset < 13;
        let axis = n.axis(n.int("axis", if legacy { 1 } else { -1 })?, rank)?;
        // Legacy softmax over [axis..] equals softmax on the last axis when axis is the last one.
        let coerce_2d = legacy && axis != rank - 1;
        Ok((Op::Softmax(Softmax { axis, coerce_2d }), vec![Arg::Input(0)]))
    }

    pub(crate) fn export(&self) -> Export {
        Export::new("Softmax").attr(attr_int("axis", self.axis as i64))
    }
}
