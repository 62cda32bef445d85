//! Graph normalisation after import: per-channel affine maps (batch norm, constant scale and
//! shift) folded into the convolution before them, activations fused into their producer.
//! Fewer nodes means fewer intermediate tensors, which is memory in every strategy.

use crate::graph::{Graph, NodeId, Value, ValueId};
use crate::ops::{BinaryKind, Op};
use crate::tensor::{DType, Tensor};

/// Runs every normalisation pass to a fixed point, then drops what became dead.
pub fn normalize(g: &mut Graph) {
    while fold_affine_into_conv(g) {}
    while fuse_activation(g) {}
    while fuse_residual(g) {}
    g.prune();
}

/// The node reading `v`, when exactly one node reads it once and it is not a graph output.
fn sole_consumer(g: &Graph, v: ValueId) -> Option<NodeId> {
    if g.outputs.contains(&v) {
        return None;
    }
    let mut found = None;
    for (i, n) in g.nodes.iter().enumerate() {
        for &x in &n.inputs {
            if x == v {
                if found.is_some() {
                    return None;
                }
                found = Some(NodeId(i));
            }
        }
    }
    found
}

/// Makes `producer` write `consumer`'s output and removes `consumer`.
fn splice(g: &mut Graph, producer: usize, consumer: usize) {
    let out = g.nodes[consumer].output();
    g.nodes[producer].outputs = vec![out];
    g.nodes.remove(consumer);
}

fn add_constant(g: &mut Graph, name: String, t: Tensor) -> ValueId {
    let id = ValueId(g.values.len());
    g.values.push(Value { name, shape: t.shape().to_vec(), dtype: t.dtype(), constant: Some(t) });
    id
}

/// Per-channel values of a constant that broadcasts along axis 1 only (`[C]` for batch norm;
/// `[C,1,1]`, `[1,C,1,1]` or a scalar for arithmetic), or `None`.
fn per_channel(t: &Tensor, channels: usize, is_bn: bool) -> Option<Vec<f32>> {
    if !t.dtype().is_float() {
        return None;
    }
    let s = t.shape();
    let v = t.to_f32_vec();
    if is_bn {
        return (s == [channels]).then_some(v);
    }
    let n: usize = s.iter().product();
    if n == 1 && s.len() <= 4 {
        return Some(vec![v[0]; channels]);
    }
    let ok = match s.len() {
        3 => s == [channels, 1, 1],
        4 => s == [1, channels, 1, 1],
        _ => false,
    };
    ok.then_some(v)
}

/// Folds one `y = conv(x) * a + b` pattern (batch norm, or Mul/Add/Sub by a per-channel
/// constant) into the convolution's weights and bias. Returns whether it changed the graph.
fn fold_affine_into_conv(g: &mut Graph) -> bool {
    for ci in 0..g.nodes.len() {
        let Op::Conv(conv) = &g.nodes[ci].op else { continue };
        if conv.act.is_some() {
            continue;
        }
        let y = g.nodes[ci].output();
        let Some(NodeId(ni)) = sole_consumer(g, y) else { continue };
        let channels = g.value(y).shape[1];
        let next = &g.nodes[ni];
        // (scale, shift) per output channel.
        let affine = match &next.op {
            Op::BatchNorm(bn) if bn.act.is_none() => {
                let s = g
                    .value(next.inputs[1])
                    .constant
                    .as_ref()
                    .and_then(|t| per_channel(t, channels, true));
                let b = g
                    .value(next.inputs[2])
                    .constant
                    .as_ref()
                    .and_then(|t| per_channel(t, channels, true));
                s.zip(b)
            }
            Op::Binary(b) if b.act.is_none() => {
                let other = if next.inputs[0] == y { next.inputs[1] } else { next.inputs[0] };
                let y_first = next.inputs[0] == y;
                let c =
                    g.value(other).constant.as_ref().and_then(|t| per_channel(t, channels, false));
                match (b.kind, c) {
                    (BinaryKind::Mul, Some(c)) => Some((c, vec![0.0; channels])),
                    (BinaryKind::Add, Some(c)) => Some((vec![1.0; channels], c)),
                    (BinaryKind::Sub, Some(c)) if y_first => {
                        Some((vec![1.0; channels], c.iter().map(|v| -v).collect()))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let Some((scale, shift)) = affine else { continue };
        // The output shape must not change (a broadcasting constant could add axes).
        if g.value(next.output()).shape != g.value(y).shape {
            continue;
        }
        let node = &g.nodes[ci];
        let w = g.value(node.inputs[1]);
        let (Some(wt), DType::F32) = (&w.constant, w.dtype) else { continue };
        let per_out = wt.len() / channels;
        let mut wv = wt.to_f32_vec();
        for (m, chunk) in wv.chunks_mut(per_out).enumerate() {
            chunk.iter_mut().for_each(|x| *x *= scale[m]);
        }
        let bias: Vec<f32> = match node.inputs.get(2).and_then(|&b| g.value(b).constant.as_ref()) {
            Some(b) => {
                b.to_f32_vec().iter().zip(&scale).zip(&shift).map(|((b, s), t)| b * s + t).collect()
            }
            None => shift.clone(),
        };
        let wshape = wt.shape().to_vec();
        let name = node.name.clone();
        let wid = add_constant(g, format!("{name}.w_folded"), Tensor::from_f32(wshape, wv));
        let bid =
            add_constant(g, format!("{name}.b_folded"), Tensor::from_f32(vec![channels], bias));
        let node = &mut g.nodes[ci];
        node.inputs.truncate(1);
        node.inputs.push(wid);
        node.inputs.push(bid);
        splice(g, ci, ni);
        return true;
    }
    false
}

/// Fuses one residual add into the convolution producing one of its operands:
/// `act(conv(x) + r)` becomes one convolution whose epilogue adds `r`, so the convolution's
/// output is never stored on its own. The add's activation moves into the convolution.
fn fuse_residual(g: &mut Graph) -> bool {
    for ai in 0..g.nodes.len() {
        let Op::Binary(add) = &g.nodes[ai].op else { continue };
        if add.kind != BinaryKind::Add || g.nodes[ai].inputs.len() != 2 {
            continue;
        }
        let out_shape = g.value(g.nodes[ai].output()).shape.clone();
        let act = add.act;
        for (k, &v) in g.nodes[ai].inputs.iter().enumerate() {
            let r = g.nodes[ai].inputs[1 - k];
            let Some(ci) = g.nodes.iter().position(|n| n.outputs.contains(&v)) else { continue };
            let Op::Conv(c) = &g.nodes[ci].op else { continue };
            if c.act.is_some()
                || c.residual
                || sole_consumer(g, v) != Some(NodeId(ai))
                || g.value(v).shape != out_shape
                || g.value(r).shape != out_shape
                || g.value(r).is_constant()
                || r == v
            {
                continue;
            }
            let mut node = g.nodes[ci].clone();
            if node.inputs.len() < 3 {
                // The residual is input 3: give the convolution a zero bias.
                let m = out_shape[1];
                let bias = add_constant(
                    g,
                    format!("{}.bias", node.name),
                    Tensor::from_f32(vec![m], vec![0.0; m]),
                );
                node.inputs.push(bias);
            }
            node.inputs.push(r);
            if let Op::Conv(c) = &mut node.op {
                c.residual = true;
                c.act = act;
            }
            node.outputs = vec![g.nodes[ai].output()];
            // The fused node takes the add's place: both its operands exist by then.
            g.nodes[ai] = node;
            g.nodes.remove(ci);
            return true;
        }
    }
    false
}

/// Fuses one standalone activation into the op producing its input.
fn fuse_activation(g: &mut Graph) -> bool {
    for ui in 0..g.nodes.len() {
        let Op::Unary(act) = g.nodes[ui].op else { continue };
        let x = g.nodes[ui].inputs[0];
        let Some(pi) = g.nodes.iter().position(|n| n.outputs.contains(&x)) else { continue };
        if sole_consumer(g, x) != Some(NodeId(ui)) {
            continue;
        }
        match g.nodes[pi].op.act_slot() {
            Some(slot @ None) => *slot = Some(act),
            _ => continue,
        }
        splice(g, pi, ui);
        return true;
    }
    false
}
