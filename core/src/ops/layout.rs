//! Operators that move data without arithmetic: concatenation, reshapes (Reshape, Flatten,
//! Squeeze, Unsqueeze of activations), transposition, and materialising a constant.

use serde::{Deserialize, Serialize};

use super::{Export, Op};
use crate::error::{Error, Result};
use crate::onnx::export::{attr_int, attr_ints};
use crate::onnx::{normalize_axis, Arg, OnnxNode};
use crate::tensor::{numel, Tensor};

/// Concatenation along `axis`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Concat {
    /// Non-negative axis.
    pub axis: usize,
}

/// Same elements, new shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reshape {
    /// The output shape, fully resolved.
    pub shape: Vec<usize>,
}

/// Axis permutation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transpose {
    /// Output axis `i` is input axis `perm[i]`.
    pub perm: Vec<usize>,
}

impl Concat {
    /// Output shape.
    pub fn infer(&self, xs: &[&[usize]]) -> Result<Vec<usize>> {
        let first = xs.first().ok_or_else(|| Error::shape("Concat", "no inputs"))?;
        if self.axis >= first.len() {
            return Err(Error::shape("Concat", format!("axis {} out of range", self.axis)));
        }
        let mut out = first.to_vec();
        out[self.axis] = 0;
        for x in xs {
            let same_rest = x.len() == first.len()
                && x.iter()
                    .zip(first.iter())
                    .enumerate()
                    .all(|(i, (a, b))| i == self.axis || a == b);
            if !same_rest {
                return Err(Error::shape("Concat", format!("input {x:?} does not fit {first:?}")));
            }
            out[self.axis] += x[self.axis];
        }
        Ok(out)
    }

    pub(crate) fn import(n: &OnnxNode<'_>) -> Result<(Op, Vec<Arg>)> {
        let rank = n.rank()?;
        let axis = n.axis(n.int("axis", 1)?, rank)?;
        let args = (0..n.input_count()).filter(|&i| n.has_input(i)).map(Arg::Input).collect();
        Ok((Op::Concat(Concat { axis }), args))
    }

    pub(crate) fn export(&self) -> Export {
        Export::new("Concat").attr(attr_int("axis", self.axis as i64))
    }
}

impl Reshape {
    /// Output shape (checks the element count).
    pub fn infer(&self, x: &[usize]) -> Result<Vec<usize>> {
        if numel(x) != numel(&self.shape) {
            return Err(Error::shape(
                "Reshape",
                format!("cannot reshape {x:?} to {:?}", self.shape),
            ));
        }
        Ok(self.shape.clone())
    }

    /// Translates Reshape, Flatten, Squeeze and Unsqueeze of an activation.
    pub(crate) fn import(n: &OnnxNode<'_>) -> Result<(Op, Vec<Arg>)> {
        let x = n.shape(0)?;
        let shape = match n.op_type() {
            "Reshape" => {
                let spec =
                    n.const_ints(1)?.ok_or_else(|| n.shape_error("Reshape needs a shape input"))?;
                reshape_target(x, &spec, n.int("allowzero", 0)? != 0)
                    .map_err(|r| n.shape_error(r))?
            }
            "Flatten" => {
                let axis = n.int("axis", 1)?;
                let a = if axis < 0 { axis + x.len() as i64 } else { axis };
                if !(0..=x.len() as i64).contains(&a) {
                    return Err(n.shape_error(format!("axis {axis} out of range")));
                }
                let a = a as usize;
                vec![numel(&x[..a]), numel(&x[a..])]
            }
            "Squeeze" => {
                let axes = if n.opset >= 13 { n.const_ints(1)? } else { n.ints("axes")? };
                squeeze(x, axes.as_deref()).map_err(|r| n.shape_error(r))?
            }
            "Unsqueeze" => {
                let axes = if n.opset >= 13 { n.const_ints(1)? } else { n.ints("axes")? };
                let axes = axes.ok_or_else(|| n.shape_error("Unsqueeze needs axes"))?;
                unsqueeze(x, &axes).map_err(|r| n.shape_error(r))?
            }
            other => return Err(n.unsupported(format!("{other} is not a reshape"))),
        };
        Ok((Op::Reshape(Reshape { shape }), vec![Arg::Input(0)]))
    }

    pub(crate) fn export(&self) -> Export {
        let spec: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        Export::new("Reshape").const_input(Tensor::from_i64(vec![spec.len()], spec))
    }
}

/// Resolves an ONNX Reshape `spec` (0 copies a dim unless `allowzero`, -1 infers one dim).
pub fn reshape_target(x: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*x.get(i).ok_or("0 refers to a missing input dim")?),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(format!("invalid reshape spec {spec:?}")),
        }
    }
    let total = numel(x);
    if let Some(i) = infer {
        let rest = numel(&out);
        if rest == 0 || !total.is_multiple_of(rest) {
            return Err(format!("cannot reshape {x:?} to {spec:?}"));
        }
        out[i] = total / rest;
    }
    if numel(&out) != total {
        return Err(format!("cannot reshape {x:?} to {spec:?}"));
    }
    Ok(out)
}

/// Removes the given axes (all unit axes when `None`).
pub fn squeeze(x: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, String> {
    match axes {
        None => Ok(x.iter().copied().filter(|&d| d != 1).collect()),
        Some(axes) => {
            let mut drop = vec![false; x.len()];
            for &a in axes {
                let a = normalize_axis(a, x.len()).ok_or(format!("axis {a} out of range"))?;
                if x[a] != 1 {
                    return Err(format!("cannot squeeze axis {a} of size {}", x[a]));
                }
                drop[a] = true;
            }
            Ok(x.iter().zip(drop).filter(|(_, d)| !d).map(|(&v, _)| v).collect())
        }
    }
}

/// Inserts unit axes at the given output positions.
pub fn unsqueeze(x: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    let rank = x.len() + axes.len();
    let mut ins = vec![false; rank];
    for &a in axes {
        let a = normalize_axis(a, rank).ok_or(format!("axis {a} out of range"))?;
        if ins[a] {
            return Err(format!("axis {a} repeated"));
        }
        ins[a] = true;
    }
    let mut src = x.iter();
    Ok(ins.iter().map(|&i| if i { 1 } else { *src.next().unwrap_or(&1) }).collect())
}

impl Transpose {
    /// Output shape.
    pub fn infer(&self, x: &[usize]) -> Result<Vec<usize>> {
        let mut seen = vec![false; x.len()];
        if self.perm.len() != x.len() {
            return Err(Error::shape(
                "Transpose",
                format!("perm {:?} for rank {}", self.perm, x.len()),
            ));
        }
        for &p in &self.perm {
            if p >= x.len() || seen[p] {
                return Err(Error::shape("Transpose", format!("invalid perm {:?}", self.perm)));
            }
            seen[p] = true;
        }
        Ok(self.perm.iter().map(|&p| x[p]).collect())
    }

    pub(crate) fn import(n: &OnnxNode<'_>) -> Result<(Op, Vec<Arg>)> {
        let rank = n.rank()?;
        let perm = match n.ints("perm")? {
            None => (0..rank).rev().collect(),
            Some(p) => p.iter().map(|&a| n.axis(a, rank)).collect::<Result<Vec<_>>>()?,
        };
        let t = Transpose { perm };
        t.infer(n.shape(0)?).map_err(|e| n.shape_error(e.to_string()))?;
        Ok((Op::Transpose(t), vec![Arg::Input(0)]))
    }

    pub(crate) fn export(&self) -> Export {
        Export::new("Transpose").attr(attr_ints("perm", &self.perm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_specs() {
        assert_eq!(reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(), vec![2, 12]);
        assert_eq!(reshape_target(&[2, 3, 4], &[-1], false).unwrap(), vec![24]);
        assert!(reshape_target(&[2, 3, 4], &[5, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[-1, -1], false).is_err());
    }

    #[test]
    fn squeeze_unsqueeze() {
        assert_eq!(squeeze(&[1, 3, 1, 1], Some(&[2, 3])).unwrap(), vec![1, 3]);
        assert_eq!(squeeze(&[1, 3, 1], None).unwrap(), vec![3]);
        assert!(squeeze(&[1, 3], Some(&[1])).is_err());
        assert_eq!(unsqueeze(&[3], &[0, -1]).unwrap(), vec![1, 3, 1]);
    }

    #[test]
    fn concat_shapes() {
        let c = Concat { axis: 1 };
        assert_eq!(c.infer(&[&[1, 2, 4, 4], &[1, 3, 4, 4]]).unwrap(), vec![1, 5, 4, 4]);
        assert!(c.infer(&[&[1, 2, 4, 4], &[1, 3, 5, 4]]).is_err());
    }
}
