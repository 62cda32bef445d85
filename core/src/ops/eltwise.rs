//! Elementwise operators: standalone activations, broadcasting binary arithmetic, and batch
//! normalisation reduced to a per-channel affine map.

use serde::{Deserialize, Serialize};

use super::{Activation, Export, Op};
use crate::error::{Error, Result};
use crate::onnx::export::attr_float;
use crate::onnx::{Arg, OnnxNode};
use crate::tensor::Tensor;

/// Binary arithmetic with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryKind {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b
    Div,
    /// a if a >= 0 else a * b (PRelu with slope b)
    PRelu,
}

impl BinaryKind {
    /// Applies the operation to one pair.
    #[inline(always)]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryKind::Add => a + b,
            BinaryKind::Sub => a - b,
            BinaryKind::Mul => a * b,
            BinaryKind::Div => a / b,
            BinaryKind::PRelu => {
                if a >= 0.0 {
                    a
                } else {
                    a * b
                }
            }
        }
    }

    /// ONNX operator name.
    pub fn onnx_name(self) -> &'static str {
        match self {
            BinaryKind::Add => "Add",
            BinaryKind::Sub => "Sub",
            BinaryKind::Mul => "Mul",
            BinaryKind::Div => "Div",
            BinaryKind::PRelu => "PRelu",
        }
    }
}

/// Broadcasting binary op with an optional fused activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Binary {
    /// The arithmetic.
    pub kind: BinaryKind,
    /// Activation applied to the result.
    pub act: Option<Activation>,
}

/// Batch normalisation in inference form: `y = x * scale[c] + shift[c]` (inputs: x, scale,
/// shift), with the division by `sqrt(var + eps)` done once at import.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchNorm {
    /// Activation applied to the result.
    pub act: Option<Activation>,
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

impl Binary {
    /// Output shape.
    pub fn infer(&self, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
        broadcast_shapes(a, b).ok_or_else(|| {
            Error::shape(self.kind.onnx_name(), format!("cannot broadcast {a:?} with {b:?}"))
        })
    }

    pub(crate) fn import(n: &OnnxNode<'_>, kind: BinaryKind) -> Result<(Op, Vec<Arg>)> {
        let a = n.shape(0)?;
        let b = n.shape(1)?;
        if n.opset < 7 && n.has_attr("broadcast") {
            return Err(n.unsupported("legacy broadcast attribute (opset < 7)"));
        }
        let op = Binary { kind, act: None };
        op.infer(a, b).map_err(|e| n.shape_error(e.to_string()))?;
        if kind == BinaryKind::PRelu {
            // Slope broadcasts to x: unidirectional.
            if broadcast_shapes(a, b).as_deref() != Some(a) {
                return Err(n.shape_error(format!("slope {b:?} does not broadcast to {a:?}")));
            }
        }
        Ok((Op::Binary(op), vec![Arg::Input(0), Arg::Input(1)]))
    }

    pub(crate) fn export(&self) -> Export {
        Export::new(self.kind.onnx_name()).act(self.act)
    }
}

impl BatchNorm {
    /// Output shape (same as x).
    pub fn infer(&self, x: &[usize], scale: &[usize]) -> Result<Vec<usize>> {
        if x.len() < 2 || scale != [x[1]] {
            return Err(Error::shape(
                "BatchNormalization",
                format!("per-channel parameters {scale:?} do not match input {x:?}"),
            ));
        }
        Ok(x.to_vec())
    }

    pub(crate) fn import(n: &OnnxNode<'_>) -> Result<(Op, Vec<Arg>)> {
        if n.int("training_mode", 0)? != 0 {
            return Err(n.unsupported("training_mode=1; export the model in inference mode"));
        }
        if n.proto.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(n.unsupported("running mean/var outputs (training mode)"));
        }
        let x = n.shape(0)?;
        if x.len() < 2 {
            return Err(n.shape_error(format!("input {x:?} has no channel axis")));
        }
        let eps = n.float("epsilon", 1e-5)?;
        let c = x[1];
        let get = |i: usize| -> Result<Vec<f32>> {
            let v =
                n.const_floats(i)?.ok_or_else(|| n.shape_error(format!("missing input {i}")))?;
            if v.len() != c {
                return Err(n.shape_error(format!(
                    "parameter {i} has {} values for {c} channels",
                    v.len()
                )));
            }
            Ok(v)
        };
        let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
        let (scale, shift) = fold_batch_norm(&gamma, &beta, &mean, &var, eps);
        Ok((
            Op::BatchNorm(BatchNorm { act: None }),
            vec![
                Arg::Input(0),
                Arg::Const(Tensor::from_f32(vec![c], scale)),
                Arg::Const(Tensor::from_f32(vec![c], shift)),
            ],
        ))
    }

    pub(crate) fn export(&self) -> Export {
        // Exported as scale/shift with mean 0, variance 1 and epsilon 0 (see onnx::export).
        Export::new("BatchNormalization").attr(attr_float("epsilon", 0.0)).act(self.act)
    }
}

/// Inference batch norm as a per-channel affine map: `scale = gamma / sqrt(var + eps)`,
/// `shift = beta - mean * scale`.
pub fn fold_batch_norm(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma.iter().zip(var).map(|(&g, &v)| g / (v + eps).sqrt()).collect();
    let shift = beta.iter().zip(mean).zip(&scale).map(|((&b, &m), &s)| b - m * s).collect();
    (scale, shift)
}

/// Translates a standalone activation node.
pub(crate) fn import_activation(n: &OnnxNode<'_>) -> Result<(Op, Vec<Arg>)> {
    let act = match n.op_type() {
        "Relu" => Activation::Relu,
        "Sigmoid" => Activation::Sigmoid,
        "Tanh" => Activation::Tanh,
        "Erf" => Activation::Erf,
        "HardSwish" => Activation::HardSwish,
        "LeakyRelu" => Activation::LeakyRelu { alpha: n.float("alpha", 0.01)? },
        "HardSigmoid" => {
            Activation::HardSigmoid { alpha: n.float("alpha", 0.2)?, beta: n.float("beta", 0.5)? }
        }
        "Clip" => {
            let (min, max) = if n.opset < 11 {
                (n.float("min", f32::NEG_INFINITY)?, n.float("max", f32::INFINITY)?)
            } else {
                let scalar = |i: usize, d: f32| -> Result<f32> {
                    match n.const_floats(i)? {
                        None => Ok(d),
                        Some(v) if v.len() == 1 => Ok(v[0]),
                        Some(v) => Err(n.shape_error(format!(
                            "bound {i} must be a scalar, has {} values",
                            v.len()
                        ))),
                    }
                };
                (scalar(1, f32::NEG_INFINITY)?, scalar(2, f32::INFINITY)?)
            };
            Activation::Clip { min, max }
        }
        other => return Err(n.unsupported(format!("{other} is not an activation"))),
    };
    Ok((Op::Unary(act), vec![Arg::Input(0)]))
}

/// The ONNX node for a standalone or fused activation.
pub(crate) fn export_activation(act: &Activation) -> Export {
    let e = Export::new(act.onnx_name());
    match *act {
        Activation::Clip { min, max } => e
            .const_input(Tensor::from_f32(vec![], vec![min]))
            .const_input(Tensor::from_f32(vec![], vec![max])),
        Activation::LeakyRelu { alpha } => e.attr(attr_float("alpha", alpha)),
        Activation::HardSigmoid { alpha, beta } => {
            e.attr(attr_float("alpha", alpha)).attr(attr_float("beta", beta))
        }
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes(&[1, 8, 4, 4], &[8, 1, 1]), Some(vec![1, 8, 4, 4]));
        assert_eq!(broadcast_shapes(&[3], &[2, 1]), Some(vec![2, 3]));
        assert_eq!(broadcast_shapes(&[], &[2, 3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shapes(&[2, 3], &[3, 2]), None);
    }

    #[test]
    fn batch_norm_folds_to_affine() {
        let (s, b) = fold_batch_norm(&[2.0], &[1.0], &[3.0], &[4.0 - 1e-5], 1e-5);
        assert!((s[0] - 1.0).abs() < 1e-6);
        assert!((b[0] - (1.0 - 3.0)).abs() < 1e-6);
    }
}
