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
    // After activation fusion: the clip inside a written-out hard-swish is fused by then.
    while fuse_hardswish(g) {}
    while fuse_activation(g) {}
    while fuse_scalar_affine(g) {}
    while fold_affine_into_pointwise_conv(g) {}
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

/// The value of a constant holding one float.
fn scalar(g: &Graph, v: ValueId) -> Option<f32> {
    let t = g.value(v).constant.as_ref()?;
    (t.dtype().is_float() && t.shape().iter().product::<usize>() == 1).then(|| t.to_f32_vec()[0])
}

/// The producer of `v`, when it is a binary op of `kind` with no activation of its own (or
/// with `act`), reading `x` and another value: that other value.
fn binary_with(
    g: &Graph,
    v: ValueId,
    kind: BinaryKind,
    act: Option<crate::ops::Activation>,
) -> Option<(usize, [ValueId; 2])> {
    let i = g.nodes.iter().position(|n| n.outputs.contains(&v))?;
    let node = &g.nodes[i];
    match &node.op {
        Op::Binary(b) if b.kind == kind && b.act == act && node.inputs.len() == 2 => {
            Some((i, [node.inputs[0], node.inputs[1]]))
        }
        _ => None,
    }
}

/// Rewrites one hard-swish written out as arithmetic, `y * clip(y + 3, 0, 6) / 6` (how
/// exporters without the HardSwish op write it: PaddleOCR's models have one per layer), into
/// the activation, which then fuses into the convolution producing `y`: three tensors and
/// three passes over them fewer per layer. The activation rounds as
/// `y * clamp(y / 6 + 1/2, 0, 1)`, within an ulp or two of the arithmetic.
fn fuse_hardswish(g: &mut Graph) -> bool {
    use crate::ops::Activation;
    let clip = Some(Activation::Clip { min: 0.0, max: 6.0 });
    for ci in 0..g.nodes.len() {
        let node = &g.nodes[ci];
        let (Op::Binary(c), [m, k]) = (&node.op, node.inputs.as_slice()) else { continue };
        let sixth = match (c.kind, scalar(g, *k)) {
            (BinaryKind::Div, Some(s)) => s == 6.0,
            (BinaryKind::Mul, Some(s)) => s == 1.0 / 6.0,
            _ => false,
        };
        if c.act.is_some() || !sixth {
            continue;
        }

        let (out, m) = (node.output(), *m);
        let Some((bi, [p, q])) = binary_with(g, m, BinaryKind::Mul, None) else { continue };
        // One operand is y, the other clip(y + 3, 0, 6).
        let found = [(p, q), (q, p)].into_iter().find_map(|(y, a)| {
            let (ai, [s, t]) = binary_with(g, a, BinaryKind::Add, clip)?;
            let three =
                (s == y && scalar(g, t) == Some(3.0)) || (t == y && scalar(g, s) == Some(3.0));
            three.then_some((y, a, ai))
        });
        let Some((y, a, ai)) = found else { continue };
        if sole_consumer(g, a) != Some(NodeId(bi))
            || sole_consumer(g, m) != Some(NodeId(ci))
            || g.value(y).shape != g.value(out).shape
        {
            continue;
        }
        g.nodes[ci] = crate::graph::Node {
            name: format!("{}.hardswish", g.nodes[ci].name),
            op: Op::Unary(Activation::HardSwish),
            inputs: vec![y],
            outputs: vec![out],
        };
        // The rewritten node sits where the division was, after both removed ones.
        g.nodes.remove(ai.max(bi));
        g.nodes.remove(ai.min(bi));
        return true;
    }
    false
}

/// Rewrites one `x * s + b` by scalar constants (the learnable affine block after each
/// activation of PaddleOCR's backbone) into a batch norm: one tensor and one pass fewer, and a
/// form the next pass can fold into a pointwise convolution.
fn fuse_scalar_affine(g: &mut Graph) -> bool {
    for mi in 0..g.nodes.len() {
        let node = &g.nodes[mi];
        let Op::Binary(m) = &node.op else { continue };
        if m.kind != BinaryKind::Mul || m.act.is_some() || node.inputs.len() != 2 {
            continue;
        }
        let (x, s) = match (scalar(g, node.inputs[0]), scalar(g, node.inputs[1])) {
            (None, Some(s)) => (node.inputs[0], s),
            (Some(s), None) => (node.inputs[1], s),
            _ => continue,
        };
        let y = node.output();
        let Some(NodeId(ai)) = sole_consumer(g, y) else { continue };
        let add = &g.nodes[ai];
        let Op::Binary(a) = &add.op else { continue };
        if a.kind != BinaryKind::Add || add.inputs.len() != 2 {
            continue;
        }
        let other = if add.inputs[0] == y { add.inputs[1] } else { add.inputs[0] };
        let Some(b) = scalar(g, other) else { continue };
        let shape = &g.value(x).shape;
        if shape.len() != 4 || g.value(g.nodes[ai].output()).shape != *shape {
            continue;
        }
        let (c, name, act) = (shape[1], node.name.clone(), a.act);
        let sid = add_constant(g, format!("{name}.scale"), Tensor::from_f32(vec![c], vec![s; c]));
        let bid = add_constant(g, format!("{name}.shift"), Tensor::from_f32(vec![c], vec![b; c]));
        g.nodes[ai] = crate::graph::Node {
            name: format!("{name}.affine"),
            op: Op::BatchNorm(crate::ops::BatchNorm { act }),
            inputs: vec![x, sid, bid],
            outputs: g.nodes[ai].outputs.clone(),
        };
        g.nodes.remove(mi);
        return true;
    }
    false
}

/// Folds one per-channel affine map (a batch norm without activation) into the pointwise
/// convolution reading it: `W'[m][c] = W[m][c] * scale[c]`, `b'[m] = b[m] + sum_c W[m][c] *
/// shift[c]`. Exact only without padding (padding would see the shift where it sees zeros),
/// hence 1x1 kernels with no pads.
fn fold_affine_into_pointwise_conv(g: &mut Graph) -> bool {
    for bi in 0..g.nodes.len() {
        let Op::BatchNorm(bn) = &g.nodes[bi].op else { continue };
        if bn.act.is_some() {
            continue;
        }
        let y = g.nodes[bi].output();
        let Some(NodeId(ci)) = sole_consumer(g, y) else { continue };
        let conv_node = &g.nodes[ci];
        let Op::Conv(conv) = &conv_node.op else { continue };
        let c = g.value(y).shape[1];
        let scale =
            g.value(g.nodes[bi].inputs[1]).constant.as_ref().and_then(|t| per_channel(t, c, true));
        let shift =
            g.value(g.nodes[bi].inputs[2]).constant.as_ref().and_then(|t| per_channel(t, c, true));
        let (Some(scale), Some(shift)) = (scale, shift) else { continue };
        if conv.kernel != [1, 1]
            || conv.pads != [0; 4]
            || conv.groups != 1
            || conv_node.inputs[0] != y
        {
            continue;
        }
        let w = g.value(conv_node.inputs[1]);
        let (Some(wt), DType::F32) = (&w.constant, w.dtype) else { continue };
        let m = wt.shape()[0];
        if wt.len() != m * c {
            continue;
        }
        let mut wv = wt.to_f32_vec();
        let mut bias: Vec<f32> =
            match conv_node.inputs.get(2).and_then(|&b| g.value(b).constant.as_ref()) {
                Some(b) => b.to_f32_vec(),
                None => vec![0.0; m],
            };
        for (row, b) in wv.chunks_mut(c).zip(bias.iter_mut()) {
            *b += row.iter().zip(&shift).map(|(w, t)| w * t).sum::<f32>();
            row.iter_mut().zip(&scale).for_each(|(w, s)| *w *= s);
        }
        let wshape = wt.shape().to_vec();
        let name = conv_node.name.clone();
        let x = g.nodes[bi].inputs[0];
        let wid = add_constant(g, format!("{name}.w_prefolded"), Tensor::from_f32(wshape, wv));
        let bid = add_constant(g, format!("{name}.b_prefolded"), Tensor::from_f32(vec![m], bias));
        let node = &mut g.nodes[ci];
        node.inputs[0] = x;
        node.inputs[1] = wid;
        if node.inputs.len() >= 3 {
            node.inputs[2] = bid;
        } else {
            node.inputs.push(bid);
        }
        g.nodes.remove(bi);
        return true;
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
