//! Dense layers: Gemm (`alpha * A' B' + beta * C`) and MatMul with numpy batch broadcasting.

use serde::{Deserialize, Serialize};

use super::eltwise::broadcast_shapes;
use super::{Activation, Export, Op};
use crate::error::{Error, Result};
use crate::onnx::export::{attr_float, attr_int};
use crate::onnx::{Arg, OnnxNode};

/// ONNX Gemm on 2-D operands. Inputs: A `[M, K]` (or `[K, M]`), B (a weight), optional C.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gemm {
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of C.
    pub beta: f32,
    /// A is given transposed.
    pub trans_a: bool,
    /// B is given transposed.
    pub trans_b: bool,
    /// Fused activation.
    pub act: Option<Activation>,
}

/// Matrix product with batch broadcasting (`[..., M, K] x [..., K, N]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatMul {
    /// Fused activation.
    pub act: Option<Activation>,
}

impl Gemm {
    /// Output shape `[M, N]`.
    pub fn infer(&self, a: &[usize], b: &[usize], c: Option<&[usize]>) -> Result<Vec<usize>> {
        if a.len() != 2 || b.len() != 2 {
            return Err(Error::shape("Gemm", format!("expects 2-D operands, got {a:?} and {b:?}")));
        }
        let (m, k) = if self.trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
        let (k2, n) = if self.trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
        if k != k2 {
            return Err(Error::shape("Gemm", format!("inner dims differ: {a:?} x {b:?}")));
        }
        if let Some(c) = c {
            if broadcast_shapes(c, &[m, n]).as_deref() != Some(&[m, n][..]) {
                return Err(Error::shape(
                    "Gemm",
                    format!("C {c:?} does not broadcast to [{m}, {n}]"),
                ));
            }
        }
        Ok(vec![m, n])
    }

    pub(crate) fn import(n: &OnnxNode<'_>) -> Result<(Op, Vec<Arg>)> {
        let g = Gemm {
            alpha: n.float("alpha", 1.0)?,
            beta: n.float("beta", 1.0)?,
            trans_a: n.int("transA", 0)? != 0,
            trans_b: n.int("transB", 0)? != 0,
            act: None,
        };
        let c = if n.has_input(2) { Some(n.shape(2)?) } else { None };
        g.infer(n.shape(0)?, n.shape(1)?, c).map_err(|e| n.shape_error(e.to_string()))?;
        n.const_input(1)?;
        let mut args = vec![Arg::Input(0), Arg::Input(1)];
        if n.has_input(2) {
            n.const_input(2)?;
            args.push(Arg::Input(2));
        }
        Ok((Op::Gemm(g), args))
    }

    pub(crate) fn export(&self) -> Export {
        Export::new("Gemm")
            .attr(attr_float("alpha", self.alpha))
            .attr(attr_float("beta", self.beta))
            .attr(attr_int("transA", self.trans_a as i64))
            .attr(attr_int("transB", self.trans_b as i64))
            .act(self.act)
    }
}

impl MatMul {
    /// Output shape, following numpy's matmul (1-D operands are promoted and the unit axis
    /// dropped again).
    pub fn infer(&self, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
        if a.is_empty() || b.is_empty() {
            return Err(Error::shape("MatMul", "scalar operands"));
        }
        let a2: Vec<usize> = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
        let b2: Vec<usize> = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
        let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
        let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
        if k != k2 {
            return Err(Error::shape("MatMul", format!("inner dims differ: {a:?} x {b:?}")));
        }
        let batch =
            broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2]).ok_or_else(|| {
                Error::shape("MatMul", format!("batch dims of {a:?} and {b:?} do not broadcast"))
            })?;
        let mut out = batch;
        if a.len() > 1 {
            out.push(m);
        }
        if b.len() > 1 {
            out.push(n);
        }
        Ok(out)
    }

    pub(crate) fn import(n: &OnnxNode<'_>) -> Result<(Op, Vec<Arg>)> {
        let m = MatMul { act: None };
        m.infer(n.shape(0)?, n.shape(1)?).map_err(|e| n.shape_error(e.to_string()))?;
        Ok((Op::MatMul(m), vec![Arg::Input(0), Arg::Input(1)]))
    }

    pub(crate) fn export(&self) -> Export {
        Export::new("MatMul").act(self.act)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_shapes() {
        let m = MatMul { act: None };
        assert_eq!(m.infer(&[1, 1280], &[1280, 4]).unwrap(), vec![1, 4]);
        assert_eq!(m.infer(&[2, 1, 3, 4], &[5, 4, 6]).unwrap(), vec![2, 5, 3, 6]);
        assert_eq!(m.infer(&[4], &[4, 6]).unwrap(), vec![6]);
        assert_eq!(m.infer(&[3, 4], &[4]).unwrap(), vec![3]);
        assert!(m.infer(&[3, 4], &[5, 6]).is_err());
    }

    #[test]
    fn gemm_shapes() {
        let g = Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: true, act: None };
        assert_eq!(g.infer(&[1, 1280], &[1000, 1280], Some(&[1000])).unwrap(), vec![1, 1000]);
        assert!(g.infer(&[1, 1280], &[1000, 1280], Some(&[999])).is_err());
    }
}
