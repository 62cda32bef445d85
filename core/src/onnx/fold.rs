//! Import-time evaluation of shape-only subgraphs (Shape, Gather, Slice, Concat, Unsqueeze,
//! Cast, arithmetic on shapes, ... feeding Reshape and Resize) and of small constant expressions.
//! Once the input shape is fixed these are constants; evaluating them here keeps the runtime
//! graph a pure dataflow of activations.

use super::node::{normalize_axis, OnnxNode};
use crate::error::{Error, Result};
use crate::ops::eltwise::broadcast_shapes;
use crate::ops::layout::{reshape_target, squeeze, unsqueeze};
use crate::tensor::{numel, DType, Tensor};

/// Ops that fold when all their inputs are constants.
const FOLDABLE: &[&str] = &[
    "Shape",
    "Size",
    "Gather",
    "Slice",
    "Concat",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "Reshape",
    "Flatten",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
    "Sqrt",
    "ConstantOfShape",
    "Range",
    "Transpose",
    "Floor",
    "Ceil",
    "Max",
    "Min",
    "Equal",
    "Where",
    "ReduceProd",
];

/// Whether `node` can be evaluated now: a foldable op whose inputs are all constants, or a
/// Shape/Size of any value (shapes are static).
pub fn can_fold(n: &OnnxNode<'_>) -> bool {
    let op = n.op_type();
    if op == "Shape" || op == "Size" {
        return true;
    }
    FOLDABLE.contains(&op)
        && (0..n.input_count())
            .all(|i| !n.has_input(i) || n.inputs[i].is_some_and(|x| x.constant.is_some()))
}

/// Evaluates a foldable node to its (single) output.
pub fn eval(n: &OnnxNode<'_>) -> Result<Tensor> {
    let c = |i: usize| -> Result<&Tensor> {
        n.const_input(i)?
            .ok_or_else(|| Error::malformed(format!("node '{}' lacks input {i}", n.name)))
    };
    let shape_of = |v: &[usize]| -> Tensor {
        Tensor::from_i64(vec![v.len()], v.iter().map(|&d| d as i64).collect())
    };
    match n.op_type() {
        "Shape" => {
            let s = n.shape(0)?;
            let r = s.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clamp(n.int("start", 0)?);
            let end = clamp(n.int("end", r)?);
            Ok(shape_of(&s[start..end.max(start)]))
        }
        "Size" => Ok(Tensor::from_i64(vec![], vec![numel(n.shape(0)?) as i64])),
        "Cast" => {
            let to = n.int("to", 1)?;
            let dt = super::tensor::dtype_from_onnx(to as i32)
                .ok_or_else(|| n.unsupported(format!("Cast to ONNX type {to}")))?;
            Ok(c(0)?.cast(dt))
        }
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
            let x = c(0)?;
            let shape = match n.op_type() {
                "Reshape" => {
                    let spec = n.const_ints(1)?.ok_or_else(|| n.shape_error("missing shape"))?;
                    reshape_target(x.shape(), &spec, n.int("allowzero", 0)? != 0)
                }
                "Flatten" => {
                    let a = n.axis(n.int("axis", 1)?, x.shape().len() + 1)?;
                    Ok(vec![numel(&x.shape()[..a]), numel(&x.shape()[a..])])
                }
                "Squeeze" => {
                    let axes = if n.opset >= 13 { n.const_ints(1)? } else { n.ints("axes")? };
                    squeeze(x.shape(), axes.as_deref())
                }
                _ => {
                    let axes = if n.opset >= 13 { n.const_ints(1)? } else { n.ints("axes")? };
                    unsqueeze(x.shape(), &axes.ok_or_else(|| n.shape_error("missing axes"))?)
                }
            }
            .map_err(|r| n.shape_error(r))?;
            x.reshaped(shape)
        }
        "Gather" => gather(n, c(0)?, c(1)?),
        "Slice" => slice(n, c(0)?),
        "Concat" => {
            let ts: Vec<&Tensor> =
                (0..n.input_count()).filter(|&i| n.has_input(i)).map(c).collect::<Result<_>>()?;
            concat(n, &ts)
        }
        "Transpose" => {
            let x = c(0)?;
            let rank = x.shape().len();
            let perm: Vec<usize> = match n.ints("perm")? {
                None => (0..rank).rev().collect(),
                Some(p) => p.iter().map(|&a| n.axis(a, rank)).collect::<Result<_>>()?,
            };
            transpose(x, &perm).ok_or_else(|| n.shape_error("invalid perm"))
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = c(0)?.to_i64_vec().iter().map(|&d| d.max(0) as usize).collect();
            let value = n.tensor("value")?.unwrap_or_else(|| Tensor::from_f32(vec![1], vec![0.0]));
            let len = check_folded(n, &shape, 0)?;
            Ok(match value.dtype() {
                DType::F32 | DType::F16 => {
                    Tensor::from_f32(shape, vec![value.to_f32_vec()[0]; len])
                }
                _ => Tensor::from_i64(shape, vec![value.to_i64_vec()[0]; len]),
            })
        }
        "Range" => {
            let (s, l, d) = (c(0)?, c(1)?, c(2)?);
            if s.dtype().is_float() {
                let (s, l, d) = (s.to_f32_vec()[0], l.to_f32_vec()[0], d.to_f32_vec()[0]);
                let count = ((l - s) / d).ceil().max(0.0) as usize;
                check_folded(n, &[count], 0)?;
                Ok(Tensor::from_f32(vec![count], (0..count).map(|i| s + i as f32 * d).collect()))
            } else {
                let (s, l, d) = (s.to_i64_vec()[0], l.to_i64_vec()[0], d.to_i64_vec()[0]);
                if d == 0 {
                    return Err(n.shape_error("Range with zero delta"));
                }
                let count = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
                check_folded(n, &[count], 0)?;
                Ok(Tensor::from_i64(vec![count], (0..count as i64).map(|i| s + i * d).collect()))
            }
        }
        "ReduceProd" => {
            let x = c(0)?;
            if x.shape().len() > 1 {
                return Err(n.unsupported("ReduceProd of constants is folded for 1-D shapes only"));
            }
            let keep = n.int("keepdims", 1)? != 0;
            let shape = if keep { vec![1] } else { vec![] };
            Ok(if x.dtype().is_float() {
                Tensor::from_f32(shape, vec![x.to_f32_vec().iter().product()])
            } else {
                Tensor::from_i64(shape, vec![x.to_i64_vec().iter().product()])
            })
        }
        "Neg" | "Sqrt" | "Floor" | "Ceil" => unary(n, c(0)?),
        "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "Equal" => binary(n, c(0)?, c(1)?),
        "Where" => {
            let (cond, a, b) = (c(0)?, c(1)?, c(2)?);
            let shape = broadcast_shapes(cond.shape(), a.shape())
                .and_then(|s| broadcast_shapes(&s, b.shape()))
                .ok_or_else(|| n.shape_error("Where operands do not broadcast"))?;
            check_folded(n, &shape, cond.len() + a.len() + b.len())?;
            let (cv, idx_c) = (cond.to_i64_vec(), broadcast_index(cond.shape(), &shape));
            let (ia, ib) = (broadcast_index(a.shape(), &shape), broadcast_index(b.shape(), &shape));
            if a.dtype().is_float() {
                let (av, bv) = (a.to_f32_vec(), b.to_f32_vec());
                let out = (0..numel(&shape))
                    .map(|i| if cv[idx_c[i]] != 0 { av[ia[i]] } else { bv[ib[i]] })
                    .collect();
                Ok(Tensor::from_f32(shape, out))
            } else {
                let (av, bv) = (a.to_i64_vec(), b.to_i64_vec());
                let out = (0..numel(&shape))
                    .map(|i| if cv[idx_c[i]] != 0 { av[ia[i]] } else { bv[ib[i]] })
                    .collect();
                Ok(Tensor::from_i64(shape, out))
            }
        }
        other => Err(n.unsupported(format!("{other} cannot be folded"))),
    }
}

/// For each element of `out_shape`, the flat index into a tensor of `shape` broadcast to it.
/// Most elements an import-time evaluation may create beyond the size of its inputs: folding is
/// for shapes and small constants, and a corrupt shape must not allocate gigabytes.
const MAX_FOLDED: usize = 1 << 24;

/// Checks the output of a folded node before it is allocated; returns its element count.
fn check_folded(n: &OnnxNode<'_>, shape: &[usize], inputs: usize) -> Result<usize> {
    let what = format!("{} '{}'", n.op_type(), n.name);
    let count = crate::limits::check_shape(&what, shape)?;
    if count > MAX_FOLDED.max(inputs) {
        return Err(Error::TooLarge {
            what,
            reason: format!(
                "evaluating it at import would create {count} elements from constants of                  {inputs}; the model file is corrupt, or computes a large constant frugal                  does not fold"
            ),
        });
    }
    Ok(count)
}

fn broadcast_index(shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let r = out_shape.len();
    let mut strides = vec![0usize; r];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        let o = i + r - shape.len();
        strides[o] = if shape[i] == 1 { 0 } else { s };
        s *= shape[i];
    }
    let mut idx = Vec::with_capacity(numel(out_shape));
    let mut pos = vec![0usize; r];
    for _ in 0..numel(out_shape) {
        idx.push(pos.iter().zip(&strides).map(|(p, s)| p * s).sum());
        for a in (0..r).rev() {
            pos[a] += 1;
            if pos[a] < out_shape[a] {
                break;
            }
            pos[a] = 0;
        }
    }
    idx
}

fn unary(n: &OnnxNode<'_>, x: &Tensor) -> Result<Tensor> {
    let shape = x.shape().to_vec();
    if x.dtype().is_float() {
        let f: fn(f32) -> f32 = match n.op_type() {
            "Neg" => |v| -v,
            "Sqrt" => f32::sqrt,
            "Floor" => f32::floor,
            _ => f32::ceil,
        };
        Ok(Tensor::from_f32(shape, x.to_f32_vec().into_iter().map(f).collect()).cast(x.dtype()))
    } else {
        match n.op_type() {
            "Neg" => Ok(Tensor::from_i64(shape, x.to_i64_vec().into_iter().map(|v| -v).collect())
                .cast(x.dtype())),
            "Floor" | "Ceil" => Ok(x.clone()),
            other => Err(n.unsupported(format!("{other} of integers"))),
        }
    }
}

fn binary(n: &OnnxNode<'_>, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let shape = broadcast_shapes(a.shape(), b.shape()).ok_or_else(|| {
        n.shape_error(format!("cannot broadcast {:?} with {:?}", a.shape(), b.shape()))
    })?;
    check_folded(n, &shape, a.len() + b.len())?;
    let (ia, ib) = (broadcast_index(a.shape(), &shape), broadcast_index(b.shape(), &shape));
    let op = n.op_type();
    if op == "Equal" {
        let (av, bv) = (a.to_f32_vec(), b.to_f32_vec());
        let out = ia.iter().zip(&ib).map(|(&i, &j)| (av[i] == bv[j]) as u8).collect();
        return Ok(Tensor::from_u8(shape, out));
    }
    if a.dtype().is_float() || b.dtype().is_float() {
        let (av, bv) = (a.to_f32_vec(), b.to_f32_vec());
        let f: fn(f32, f32) -> f32 = match op {
            "Add" => |x, y| x + y,
            "Sub" => |x, y| x - y,
            "Mul" => |x, y| x * y,
            "Div" => |x, y| x / y,
            "Max" => f32::max,
            _ => f32::min,
        };
        let out = ia.iter().zip(&ib).map(|(&i, &j)| f(av[i], bv[j])).collect();
        Ok(Tensor::from_f32(shape, out).cast(if a.dtype().is_float() {
            a.dtype()
        } else {
            b.dtype()
        }))
    } else {
        let (av, bv) = (a.to_i64_vec(), b.to_i64_vec());
        if op == "Div" && bv.contains(&0) {
            return Err(n.shape_error("integer division by zero in a shape computation"));
        }
        let f: fn(i64, i64) -> i64 = match op {
            "Add" => |x, y| x.wrapping_add(y),
            "Sub" => |x, y| x.wrapping_sub(y),
            "Mul" => |x, y| x.wrapping_mul(y),
            "Div" => |x, y| x / y,
            "Max" => |x, y| x.max(y),
            _ => |x, y| x.min(y),
        };
        let out = ia.iter().zip(&ib).map(|(&i, &j)| f(av[i], bv[j])).collect();
        Ok(Tensor::from_i64(shape, out).cast(a.dtype()))
    }
}

/// Copies elements `idx` (flat, in order) of `x` into a new tensor of `shape`.
fn take(x: &Tensor, shape: Vec<usize>, idx: impl Iterator<Item = usize>) -> Tensor {
    let es = x.dtype().size();
    let src = x.bytes();
    let mut out = Vec::with_capacity(numel(&shape) * es);
    for i in idx {
        out.extend_from_slice(&src[i * es..(i + 1) * es]);
    }
    // Source and destination share the dtype, so the bytes reinterpret exactly.
    Tensor::from_le_bytes(x.dtype(), shape, bytes::Bytes::from(out))
        .expect("byte count matches by construction")
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn gather(n: &OnnxNode<'_>, x: &Tensor, ind: &Tensor) -> Result<Tensor> {
    let rank = x.shape().len();
    let axis = n.axis(n.int("axis", 0)?, rank)?;
    let dim = x.shape()[axis] as i64;
    let ids: Vec<usize> = ind
        .to_i64_vec()
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim } else { i };
            if (0..dim).contains(&j) {
                Ok(j as usize)
            } else {
                Err(n.shape_error(format!("index {i} out of range for axis of {dim}")))
            }
        })
        .collect::<Result<_>>()?;
    let xs = x.shape();
    let outer = numel(&xs[..axis]);
    let inner = numel(&xs[axis + 1..]);
    let mut shape = xs[..axis].to_vec();
    shape.extend_from_slice(ind.shape());
    shape.extend_from_slice(&xs[axis + 1..]);
    let idx = (0..outer).flat_map(|o| {
        let ids = &ids;
        ids.iter().flat_map(move |&g| (0..inner).map(move |i| (o * xs[axis] + g) * inner + i))
    });
    Ok(take(x, shape, idx))
}

fn slice(n: &OnnxNode<'_>, x: &Tensor) -> Result<Tensor> {
    let rank = x.shape().len();
    let (starts, ends, axes, steps) = if n.opset < 10 {
        (
            n.ints("starts")?.unwrap_or_default(),
            n.ints("ends")?.unwrap_or_default(),
            n.ints("axes")?,
            None,
        )
    } else {
        (
            n.const_ints(1)?.unwrap_or_default(),
            n.const_ints(2)?.unwrap_or_default(),
            n.const_ints(3)?,
            n.const_ints(4)?,
        )
    };
    let axes: Vec<i64> = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(n.shape_error("starts, ends, axes and steps differ in length"));
    }
    let xs = x.shape();
    let mut lo: Vec<i64> = vec![0; rank];
    let mut step: Vec<i64> = vec![1; rank];
    let mut len: Vec<usize> = xs.to_vec();
    for k in 0..starts.len() {
        let a = normalize_axis(axes[k], rank).ok_or_else(|| n.shape_error("axis out of range"))?;
        let d = xs[a] as i64;
        let s = steps[k];
        if s == 0 {
            return Err(n.shape_error("slice step 0"));
        }
        let fix = |v: i64, lo_c: i64, hi_c: i64| {
            let v = if v < 0 { v + d } else { v };
            v.clamp(lo_c, hi_c)
        };
        let (b, e) = if s > 0 {
            (fix(starts[k], 0, d), fix(ends[k], 0, d))
        } else {
            (fix(starts[k], -1, d - 1), fix(ends[k], -1, d - 1))
        };
        let count =
            if s > 0 { (e - b + s - 1).max(0) / s } else { (b - e + (-s) - 1).max(0) / (-s) };
        lo[a] = b;
        step[a] = s;
        len[a] = count as usize;
    }
    let st = strides(xs);
    let total = numel(&len);
    let mut pos = vec![0usize; rank];
    let mut idx = Vec::with_capacity(total);
    for _ in 0..total {
        let mut flat = 0i64;
        for a in 0..rank {
            flat += (lo[a] + pos[a] as i64 * step[a]) * st[a] as i64;
        }
        idx.push(flat as usize);
        for a in (0..rank).rev() {
            pos[a] += 1;
            if pos[a] < len[a] {
                break;
            }
            pos[a] = 0;
        }
    }
    Ok(take(x, len, idx.into_iter()))
}

fn concat(n: &OnnxNode<'_>, ts: &[&Tensor]) -> Result<Tensor> {
    let first = ts.first().ok_or_else(|| n.shape_error("Concat without inputs"))?;
    let rank = first.shape().len();
    let axis = n.axis(n.int("axis", 0)?, rank)?;
    let dt = first.dtype();
    let ts: Vec<Tensor> = ts.iter().map(|t| t.cast(dt)).collect();
    let outer = numel(&first.shape()[..axis]);
    let mut shape = first.shape().to_vec();
    shape[axis] = ts.iter().map(|t| t.shape().get(axis).copied().unwrap_or(0)).sum();
    let es = dt.size();
    let mut out = Vec::new();
    for o in 0..outer {
        for t in &ts {
            if t.shape().len() != rank {
                return Err(n.shape_error("Concat of different ranks"));
            }
            let chunk = numel(&t.shape()[axis..]) * es;
            out.extend_from_slice(&t.bytes()[o * chunk..(o + 1) * chunk]);
        }
    }
    Tensor::from_le_bytes(dt, shape, bytes::Bytes::from(out))
}

/// Transposes a host tensor (used for constants).
pub fn transpose(x: &Tensor, perm: &[usize]) -> Option<Tensor> {
    let xs = x.shape();
    if perm.len() != xs.len() {
        return None;
    }
    let st = strides(xs);
    let shape: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
    let total = numel(&shape);
    let mut pos = vec![0usize; shape.len()];
    let mut idx = Vec::with_capacity(total);
    for _ in 0..total {
        idx.push(pos.iter().zip(perm).map(|(&p, &a)| p * st[a]).sum());
        for a in (0..shape.len()).rev() {
            pos[a] += 1;
            if pos[a] < shape[a] {
                break;
            }
            pos[a] = 0;
        }
    }
    Some(take(x, shape, idx.into_iter()))
}
