//! An independent check of a plan against its graph: replays the steps slot by slot and proves
//! that every row a step reads is present in its ring (produced, and not overwritten by a later
//! row), that nodes fire over their rows in order, that outputs are drained
//! whole, and that buffers live at the same time never share bytes. It shares no code with the
//! scheduler, so a scheduling bug cannot hide behind its own arithmetic.

use super::{row_geometry, Plan, StepKind};
use crate::error::{Error, Result};
use crate::graph::Graph;

fn bad(msg: String) -> Error {
    Error::Plan(msg)
}

/// Checks `plan` against `graph`; an error names the first violation.
pub fn verify(graph: &Graph, plan: &Plan) -> Result<()> {
    plan.check_graph(graph)?;
    let graph = &*super::recompute::effective(graph, &plan.options)?;
    check_packing(plan)?;
    let nb = plan.buffers.len();
    if plan.value_buffer.len() != graph.values.len() {
        return Err(bad("the plan's value table does not match the graph".into()));
    }
    // What each slot of each buffer holds.
    let mut slots: Vec<Vec<Slot>> =
        plan.buffers.iter().map(|b| vec![Slot::Empty; b.capacity.max(1)]).collect();
    let buf = |v: crate::graph::ValueId| -> Result<usize> {
        // A view's rows are its source's, in its source's buffer.
        let v = graph.source_of(v).0;
        plan.value_buffer[v.0]
            .filter(|&b| b < nb)
            .ok_or_else(|| bad(format!("value '{}' has no buffer", graph.value(v).name)))
    };
    let rows_of = |v: crate::graph::ValueId| row_geometry(&graph.value(v).shape).1;
    let mut progress = vec![0usize; graph.nodes.len()];
    let mut fed = vec![0usize; graph.feeds()];
    let mut drained = vec![0usize; graph.outputs.len()];
    for (s, step) in plan.steps.iter().enumerate() {
        let [a, b] = step.rows;
        let live = |bi: usize| {
            let bf = &plan.buffers[bi];
            if s < bf.first_step || s > bf.last_step {
                return Err(bad(format!("step {s} touches '{}' outside its lifetime", bf.name)));
            }
            Ok(())
        };
        let read = |slots: &Vec<Vec<Slot>>, bi: usize, lo: usize, hi: usize| -> Result<()> {
            live(bi)?;
            let cap = slots[bi].len();
            for r in lo..hi {
                if slots[bi][r % cap] != Slot::Row(r) {
                    return Err(bad(format!(
                        "step {s} reads row {r} of '{}', which its ring of {cap} rows no longer (or not yet) holds",
                        plan.buffers[bi].name
                    )));
                }
            }
            Ok(())
        };
        let write = |slots: &mut Vec<Vec<Slot>>,
                     bi: usize,
                     rows: &mut dyn Iterator<Item = (usize, Slot)>|
         -> Result<()> {
            live(bi)?;
            let cap = slots[bi].len();
            let (mut lo, mut hi) = (usize::MAX, 0);
            for (r, v) in rows {
                slots[bi][r % cap] = v;
                (lo, hi) = (lo.min(r), hi.max(r + 1));
            }
            // The rows one step writes must all have their own slot.
            if hi > lo && hi - lo > cap {
                return Err(bad(format!(
                    "step {s} writes rows {lo}..{hi} of '{}' into a ring of {cap} rows",
                    plan.buffers[bi].name
                )));
            }
            Ok(())
        };
        match step.kind {
            StepKind::Feed(k) => {
                if k >= graph.feeds() {
                    return Err(bad(format!("step {s} feeds unknown input {k}")));
                }
                let v = graph.feed_value(k);
                if a != fed[k] || b > rows_of(v) || a >= b {
                    return Err(bad(format!(
                        "step {s} feeds rows {a}..{b} of input {k} out of order"
                    )));
                }
                fed[k] = b;
                write(&mut slots, buf(v)?, &mut (a..b).map(|r| (r, Slot::Row(r))))?;
            }
            StepKind::Drain(k) => {
                let v = *graph
                    .outputs
                    .get(k)
                    .ok_or_else(|| bad(format!("step {s} drains unknown output {k}")))?;
                if a != drained[k] || b > rows_of(v) || a >= b {
                    return Err(bad(format!(
                        "step {s} drains rows {a}..{b} of output {k} out of order"
                    )));
                }
                drained[k] = b;
                read(&slots, buf(v)?, a, b)?;
            }
            StepKind::Fire(n) => {
                let node = graph
                    .nodes
                    .get(n.0)
                    .ok_or_else(|| bad(format!("step {s} fires unknown node {}", n.0)))?;
                let shapes: Vec<&[usize]> =
                    node.inputs.iter().map(|&v| graph.value(v).shape.as_slice()).collect();
                let out = node.output();
                let fold = node.op.fold(shapes[0]);
                let limit = if fold.is_some() { rows_of(node.inputs[0]) } else { rows_of(out) };
                if a != progress[n.0] || b > limit || a >= b {
                    return Err(bad(format!(
                        "step {s} fires '{}' on rows {a}..{b} out of order",
                        node.name
                    )));
                }
                progress[n.0] = b;
                for (slot, &v) in node.inputs.iter().enumerate() {
                    if graph.value(v).is_constant() {
                        continue;
                    }
                    let map = node.op.row_map(slot, &shapes, &graph.value(out).shape);
                    let (lo, hi) = map.need(a, b, rows_of(v));
                    read(&slots, buf(v)?, lo, hi)?;
                }
                let ob = buf(out)?;
                match &node.op {
                    op if fold.is_some() => {
                        // Rows the input rows fold into become partial, and complete once their
                        // last tap is in; worked out tap by tap, not with the scheduler's formulas.
                        let taps = taps_of(op, rows_of(out), limit);
                        let cap = slots[ob].len();
                        let mut changes = Vec::new();
                        for (o, t) in taps.iter().enumerate() {
                            if !t.iter().any(|r| (a..b).contains(r)) {
                                continue;
                            }
                            let done = b == limit || t.iter().all(|&r| r < b);
                            let cur = slots[ob][o % cap];
                            if cur != Slot::Partial(o) && t.iter().any(|&r| r < a) {
                                return Err(bad(format!(
                                    "step {s}: partial row {o} of '{}' was overwritten",
                                    plan.buffers[ob].name
                                )));
                            }
                            changes.push((o, if done { Slot::Row(o) } else { Slot::Partial(o) }));
                        }
                        write(&mut slots, ob, &mut changes.into_iter())?;
                    }
                    _ => write(&mut slots, ob, &mut (a..b).map(|r| (r, Slot::Row(r))))?,
                }
            }
        }
    }
    for (k, &v) in graph.outputs.iter().enumerate() {
        if drained[k] != rows_of(v) {
            return Err(bad(format!(
                "output '{}' is drained {} of {} rows",
                graph.value(v).name,
                drained[k],
                rows_of(v)
            )));
        }
    }
    // Inputs are fed, and nodes fire, only as far as something reads them: a strided window
    // may never touch the last rows.
    Ok(())
}

/// What a ring slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Empty,
    /// A row still being folded into.
    Partial(usize),
    /// A complete row.
    Row(usize),
}

/// The in-bounds input rows each output row of a folding node reads.
fn taps_of(op: &crate::ops::Op, out_rows: usize, in_rows: usize) -> Vec<Vec<usize>> {
    match op {
        crate::ops::Op::Pool(p) => (0..out_rows)
            .map(|o| {
                (0..p.kernel[0])
                    .filter_map(|k| (o * p.strides[0] + k * p.dilations[0]).checked_sub(p.pads[0]))
                    .filter(|&r| r < in_rows)
                    .collect()
            })
            .collect(),
        _ => vec![(0..in_rows).collect(); out_rows],
    }
}

/// Buffers live at the same step must not overlap, and all lie inside the arena.
fn check_packing(plan: &Plan) -> Result<()> {
    let mut order: Vec<usize> = (0..plan.buffers.len()).collect();
    order.sort_by_key(|&i| plan.buffers[i].offset);
    for (x, &i) in order.iter().enumerate() {
        let bi = &plan.buffers[i];
        if bi.offset + bi.bytes > plan.arena_bytes {
            return Err(bad(format!("buffer '{}' ends past the arena", bi.name)));
        }
        for &j in &order[x + 1..] {
            let bj = &plan.buffers[j];
            if bj.offset >= bi.offset + bi.bytes {
                break;
            }
            if bi.first_step <= bj.last_step && bj.first_step <= bi.last_step {
                return Err(bad(format!(
                    "buffers '{}' and '{}' overlap while both live",
                    bi.name, bj.name
                )));
            }
        }
    }
    Ok(())
}
