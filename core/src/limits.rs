//! Limits checked before anything large is allocated, so that a hostile or corrupt model is an
//! error rather than an out-of-memory kill: the size of any one tensor, of any one axis, the
//! number of nodes and of by-parts steps, and finite weights.

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::ops::{InputRole, Op};

/// Largest extent of one axis (16 Mi): an image 16 million rows tall still fits.
pub const MAX_DIM: usize = 1 << 24;
/// Most elements in one tensor (8 Gi, 32 GiB in f32).
pub const MAX_ELEMENTS: usize = 1 << 33;
/// Most nodes in a graph.
pub const MAX_NODES: usize = 1 << 20;
/// Most steps in one plan (1 Mi). Building and checking a schedule costs about a microsecond per
/// step, so a few hundred bytes of model (a Resize to two million rows) could otherwise keep
/// the planner busy for many seconds. Real schedules are far shorter: the text detector on a
/// 2048x2048 page by parts takes 36 k steps; more rows per firing shorten any schedule.
pub const MAX_STEPS: usize = 1 << 20;

/// Checks one tensor shape against [`MAX_DIM`] and [`MAX_ELEMENTS`]; returns its element count.
pub fn check_shape(what: &str, shape: &[usize]) -> Result<usize> {
    let too_large = |reason: String| Err(Error::TooLarge { what: what.to_string(), reason });
    if let Some(d) = shape.iter().find(|&&d| d > MAX_DIM) {
        return too_large(format!(
            "shape {shape:?} has an axis of {d}, above frugal's limit of {MAX_DIM}; the model \
             file is corrupt, or the input shape is wrong"
        ));
    }
    match shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) if n <= MAX_ELEMENTS => Ok(n),
        _ => too_large(format!(
            "shape {shape:?} has more than {MAX_ELEMENTS} elements (frugal's limit for one \
             tensor); the model file is corrupt, or the input shape is wrong"
        )),
    }
}

/// A zeroed `Vec<f32>` of `n` elements, or an error naming `what` when the allocator refuses
/// (instead of aborting the process).
pub fn try_zeroed(what: &str, n: usize) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::TooLarge {
        what: what.to_string(),
        reason: format!(
            "cannot allocate {} for it; use a smaller input or a machine with more memory",
            crate::format::bytes(n.saturating_mul(4))
        ),
    })?;
    v.resize(n, 0.0);
    Ok(v)
}

/// Checks a node count against [`MAX_NODES`].
pub fn check_nodes(what: &str, count: usize) -> Result<()> {
    if count > MAX_NODES {
        return Err(Error::TooLarge {
            what: what.to_string(),
            reason: format!("{count} nodes, above frugal's limit of {MAX_NODES}"),
        });
    }
    Ok(())
}

/// Checks that the weights of convolutions, batch norms and dense layers are finite: a NaN or
/// infinity there poisons every output, so it is a corrupt file, not a model to run.
pub fn check_finite_weights(g: &Graph) -> Result<()> {
    for n in &g.nodes {
        if !matches!(n.op, Op::Conv(_) | Op::ConvTranspose(_) | Op::BatchNorm(_) | Op::Gemm(_)) {
            continue;
        }
        for (slot, &v) in n.inputs.iter().enumerate() {
            let value = g.value(v);
            let Some(t) =
                value.constant.as_ref().filter(|_| n.op.input_role(slot) == InputRole::Weight)
            else {
                continue;
            };
            if !t.dtype().is_float() {
                continue;
            }
            let copy;
            let values = match t.as_f32() {
                Ok(v) => v,
                Err(_) => {
                    copy = t.to_f32_vec();
                    &copy
                }
            };
            if let Some((i, x)) = values.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                return Err(Error::malformed(format!(
                    "weight '{}' of node '{}' holds {x} at element {i}; the model file is \
                     corrupt (re-export it, or check the training run that produced it)",
                    value.name, n.name
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_beyond_the_limits_are_refused_without_overflow() {
        assert_eq!(check_shape("x", &[1, 3, 224, 224]).unwrap(), 150528);
        let e = check_shape("x", &[1, 3, MAX_DIM + 1, 1]).unwrap_err().to_string();
        assert!(e.contains("x is too large") && e.contains("axis"), "{e}");
        let e = check_shape("x", &[MAX_DIM, MAX_DIM, MAX_DIM, MAX_DIM]).unwrap_err().to_string();
        assert!(e.contains("elements"), "{e}");
        assert!(check_nodes("g", MAX_NODES + 1).is_err());
    }
}
