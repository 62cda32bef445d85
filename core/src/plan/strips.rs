//! Column strips: the first stage of a model run as narrow vertical strips, one after another.
//!
//! By rows, a stage keeps a few rows of every map in flight. Early in a network those rows
//! are wide (a 224-column image, 16 to 64 channels), and their sum is the least memory rows
//! alone can reach. Run in strips, every node of the stage computes only the columns its strip
//! needs (the strip's share of the stage's last map, widened by the halo each window adds),
//! so each ring holds a fraction of a row. A strip's share of the last map is held whole
//! until every strip is done; a concatenation along the width then joins the shares into the
//! map the rest of the model reads, row by row, as before.
//!
//! The price is time: halo columns are computed once per strip that needs them, and the join
//! copies the map once. The bits do not change: every element is computed by the same kernel
//! from the same inputs (a strip's inner edges read real columns where a whole-width layer
//! reads its neighbours; its outer edges keep the layer's padding).
//!
//! The stage is everything `end` depends on: `end` must be a value every path from the model
//! inputs to its outputs crosses, the stage must start at the model inputs (each strip gets
//! its own feed of its columns) and hold only ops whose output columns come from a band of
//! input columns: convolutions, pooling (not in ceil mode), elementwise ops and channel
//! concatenation. Where two readers of one value need different columns (a residual block's
//! shortcut beside its 3x3 convolution), the value is computed over all of them and the reader
//! that needs fewer reads a view ([`crate::graph::View`]): its columns in place, rows as far
//! apart as the wider value's, which every kernel's windows allow (`RowWindow::row_stride`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::PlanOptions;
use crate::error::{Error, Result};
use crate::graph::{Alias, Graph, Node, Value, ValueId, View};
use crate::ops::{Concat, Op};

/// What a strip's copy of a node or value adds to its name: `conv_3~s0` is strip 0's `conv_3`.
const STRIP_TAG: &str = "~s";

/// The node or value a strip's copy named `name` copies, if it is one.
pub fn original_name(name: &str) -> Option<&str> {
    let (base, j) = name.rsplit_once(STRIP_TAG)?;
    j.parse::<usize>().is_ok().then_some(base)
}

/// Column strips of a plan ([`PlanOptions::strips`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strips {
    /// The map the strips join into (values keep their ids across rewrites).
    pub end: ValueId,
    /// How many strips: at least 2, at most the map's width.
    pub count: usize,
}

/// `graph` with the stage before `strips.end` computed in strips and joined.
pub fn rewrite(graph: &Graph, strips: &Strips) -> Result<Graph> {
    let g = graph;
    let end = strips.end;
    let Some(end_value) = g.values.get(end.0) else {
        return Err(Error::Plan(format!("column strips: unknown value {}", end.0)));
    };
    let refuse =
        |why: String| Error::Plan(format!("column strips up to '{}': {why}", end_value.name));
    if end_value.is_constant() || g.is_fed(end) || g.outputs.contains(&end) {
        return Err(refuse("strips join at a map inside the model, not an input or output".into()));
    }
    if end_value.shape.len() != 4 {
        return Err(refuse(format!("the map is {:?}, not [N, C, H, W]", end_value.shape)));
    }
    let width = end_value.shape[3];
    if strips.count < 2 || strips.count > width {
        return Err(refuse(format!(
            "{} strips of a map {width} columns wide; choose 2 to {width}",
            strips.count
        )));
    }
    let producers = g.producers();
    let consumers = g.consumers();
    // The stage: every node `end` depends on, and the fed values it starts from.
    let mut inside = vec![false; g.nodes.len()];
    // Fed values with the feed that writes them.
    let mut fed: Vec<(ValueId, usize)> = Vec::new();
    let mut stack = vec![end];
    while let Some(v) = stack.pop() {
        if g.value(v).is_constant() {
            continue;
        }
        match producers[v.0] {
            Some(p) if !inside[p.0] => {
                inside[p.0] = true;
                stack.extend(g.nodes[p.0].inputs.iter().copied());
            }
            Some(_) => {}
            None => match (0..g.feeds()).find(|&k| g.feed_value(k) == v) {
                Some(k) if !fed.contains(&(v, k)) => fed.push((v, k)),
                Some(_) => {}
                None => return Err(refuse(format!("'{}' has no producer", g.value(v).name))),
            },
        }
    }
    for (i, n) in g.nodes.iter().enumerate().filter(|(i, _)| inside[*i]) {
        let out = n.output();
        let read_after = consumers[out.0].iter().any(|c| !inside[c.0]);
        if out != end && (read_after || g.outputs.contains(&out)) {
            return Err(refuse(format!(
                "'{}' is read after the strips join too; join at a map every path crosses",
                g.value(out).name
            )));
        }
        if !strippable(g, &g.nodes[i]) {
            return Err(refuse(format!(
                "node '{}' ({}) cannot run in column strips",
                n.name,
                n.op.describe()
            )));
        }
    }
    for &(v, k) in &fed {
        if g.feed_columns(k).is_some() || g.value(v).shape.len() != 4 {
            return Err(refuse(format!("input '{}' cannot be fed in strips", g.value(v).name)));
        }
    }

    let mut out = g.clone();
    let mut clones: Vec<Node> = Vec::new();
    let mut joins = Vec::with_capacity(strips.count);
    for j in 0..strips.count {
        let span = [width * j / strips.count, width * (j + 1) / strips.count];
        let (columns, needs) = columns_of(g, &inside, end, span);
        let mut map: HashMap<ValueId, ValueId> = HashMap::new();
        let tag = format!("{STRIP_TAG}{j}");
        let narrow = |out: &mut Graph, like: ValueId, cols: [usize; 2]| -> ValueId {
            let v = g.value(like);
            let mut shape = v.shape.clone();
            shape[3] = cols[1] - cols[0];
            out.values.push(Value {
                name: format!("{}{tag}", v.name),
                shape,
                dtype: v.dtype,
                constant: None,
            });
            ValueId(out.values.len() - 1)
        };
        for &(v, k) in &fed {
            let c = narrow(&mut out, v, columns[&v]);
            out.aliases.push(Alias {
                value: c,
                input: g.feed_source(k),
                columns: Some(columns[&v]),
            });
            map.insert(v, c);
        }
        for (i, n) in g.nodes.iter().enumerate().filter(|(i, _)| inside[*i]) {
            let o = n.output();
            let op = narrowed(&n.op, columns[&o], needs.get(&(i, 0)).copied());
            let mut inputs = Vec::with_capacity(n.inputs.len());
            for (slot, v) in n.inputs.iter().enumerate() {
                let Some(&c) = map.get(v) else {
                    inputs.push(*v);
                    continue;
                };
                // A reader that needs fewer columns than the value has reads a view of them.
                let (need, have) = (needs[&(i, slot)], columns[v]);
                if need == have {
                    inputs.push(c);
                } else {
                    let view = narrow(&mut out, *v, need);
                    out.views.push(View { value: view, source: c, column: need[0] - have[0] });
                    inputs.push(view);
                }
            }
            let y = narrow(&mut out, o, columns[&o]);
            let shapes: Vec<&[usize]> =
                inputs.iter().map(|&v| out.value(v).shape.as_slice()).collect();
            let inferred = op.infer(&shapes).map_err(|e| {
                refuse(format!("node '{}' does not narrow to its strip: {e}", g.nodes[i].name))
            })?;
            if inferred != out.value(y).shape {
                return Err(refuse(format!(
                    "node '{}' narrows to {inferred:?}, not {:?}",
                    n.name,
                    out.value(y).shape
                )));
            }
            clones.push(Node { name: format!("{}{tag}", n.name), op, inputs, outputs: vec![y] });
            map.insert(o, y);
        }
        joins.push(map[&end]);
    }
    let join_name = producers[end.0].map_or("strips".into(), |p| g.nodes[p.0].name.clone());
    clones.push(Node {
        name: format!("{join_name}~join"),
        op: Op::Concat(Concat { axis: 3 }),
        inputs: joins,
        outputs: vec![end],
    });
    let rest = g.nodes.iter().enumerate().filter(|(i, _)| !inside[*i]).map(|(_, n)| n.clone());
    // Topological already: strips in the stage's order, the join, then the rest (which reads
    // nothing of the stage but `end`).
    out.nodes = clones.into_iter().chain(rest).collect();
    out.validate()?;
    Ok(out)
}

/// The values the strips of `options` join (each strip's share of the map, held whole until
/// the join has read all of it), in `graph`, the graph the plan runs.
pub fn joins(graph: &Graph, options: &PlanOptions) -> Vec<ValueId> {
    let Some(s) = &options.strips else { return Vec::new() };
    let producer = graph.nodes.iter().find(|n| n.output() == s.end);
    match producer {
        Some(n) if matches!(n.op, Op::Concat(Concat { axis: 3 })) => n.inputs.clone(),
        _ => Vec::new(),
    }
}

/// The maps `graph` could join strips at: values every path crosses whose stage the rewrite
/// accepts for `count` strips, in graph order.
pub fn ends(graph: &Graph, count: usize) -> Vec<ValueId> {
    super::byparts::articulations(graph)
        .into_iter()
        .filter(|&v| rewrite(graph, &Strips { end: v, count }).is_ok())
        .collect()
}

/// `options` (by parts) with its first stage in `count` strips, one for each map the strips
/// can join at. Per-node parts and lanes are dropped (they name nodes of the graph without
/// strips); stage cuts are searched again, or with `keep_cuts` kept (those inside the stripped
/// stage then cut nothing): a plan then costs one schedule, not a search of them.
pub fn each_end(
    graph: &Graph,
    options: &PlanOptions,
    count: usize,
    keep_cuts: bool,
) -> Result<Vec<PlanOptions>> {
    let base = PlanOptions {
        strips: None,
        cuts: if keep_cuts { options.cuts.clone() } else { None },
        parts: Vec::new(),
        lanes: Vec::new(),
        ..options.clone()
    };
    let g = super::recompute::effective(graph, &base)?;
    let ends = ends(&g, count);
    Ok(ends
        .into_iter()
        .map(|end| PlanOptions { strips: Some(Strips { end, count }), ..base.clone() })
        .collect())
}

/// `options` with its first stage in `count` strips joined where the plan's peak comes out
/// smallest, of equal peaks the one computing least ([`work`]: joins deeper in a network
/// compute wider halos). An error says why no map can join them when none can.
pub fn smallest(graph: &Graph, options: &PlanOptions, count: usize) -> Result<PlanOptions> {
    let mut best: Option<((usize, usize), PlanOptions)> = None;
    for o in each_end(graph, options, count, false)? {
        let plan = super::Plan::build(graph, &o)?;
        let key = (plan.peak_bytes, work(&*super::recompute::effective(graph, &o)?));
        if best.as_ref().is_none_or(|b| key < b.0) {
            best = Some((key, o));
        }
    }
    best.map(|b| b.1).ok_or_else(|| {
        // The first map every path crosses says why, if the model has one.
        let g = super::recompute::effective(graph, options);
        let why = g
            .ok()
            .and_then(|g| {
                let end = *super::byparts::articulations(&g).first()?;
                rewrite(&g, &Strips { end, count }).err()
            })
            .map_or_else(|| "no map every path crosses".to_string(), |e| e.to_string());
        Error::Plan(format!(
            "{count} column strips fit nowhere in this model ({why}); run by rows instead"
        ))
    })
}

/// Multiply-adds (elements for ops without weights) of one run of `graph`: what strips add
/// by computing halo columns more than once.
pub fn work(graph: &Graph) -> usize {
    (0..graph.nodes.len())
        .map(|i| {
            let out = graph.value(graph.nodes[i].output());
            crate::lanes::work(graph, crate::graph::NodeId(i), super::row_geometry(&out.shape).1)
        })
        .sum()
}

/// Whether `n`'s output columns come from a band of its input's columns that
/// [`input_columns`] and [`narrowed`] know.
fn strippable(g: &Graph, n: &Node) -> bool {
    let out_w = g.value(n.output()).shape.get(3).copied();
    // Activations the strip narrows too, or constants that broadcast along the width.
    let same_width = |v: &ValueId| {
        let s = &g.value(*v).shape;
        if g.value(*v).is_constant() {
            s.last().is_none_or(|&d| d == 1)
        } else {
            s.len() == 4 && Some(s[3]) == out_w
        }
    };
    let constant = |v: &ValueId| g.value(*v).is_constant();
    let rest = n.inputs.iter().enumerate().skip(1);
    match &n.op {
        Op::Conv(c) => rest.into_iter().all(|(s, v)| {
            if s == 3 && c.residual {
                !constant(v) && same_width(v)
            } else {
                constant(v)
            }
        }),
        Op::Pool(p) => !p.ceil_mode && rest.into_iter().all(|(_, v)| constant(v)),
        Op::BatchNorm(_) => rest.into_iter().all(|(_, v)| constant(v)),
        Op::Unary(_) => n.inputs.len() == 1,
        Op::Binary(_) => n.inputs.iter().all(same_width),
        Op::Concat(c) => c.axis == 1 && n.inputs.iter().all(|v| !constant(v) && same_width(v)),
        _ => false,
    }
}

/// Columns the strip producing columns `span` of `end` computes, worked backwards through the
/// stage (`inside` its nodes): per value, the span of what its readers need, and per node and
/// input slot, what that reader needs (a view of the value where it needs less).
type Needs = (HashMap<ValueId, [usize; 2]>, HashMap<(usize, usize), [usize; 2]>);

fn columns_of(g: &Graph, inside: &[bool], end: ValueId, span: [usize; 2]) -> Needs {
    let mut columns: HashMap<ValueId, [usize; 2]> = HashMap::from([(end, span)]);
    let mut needs = HashMap::new();
    for i in (0..g.nodes.len()).rev().filter(|&i| inside[i]) {
        let n = &g.nodes[i];
        // Every node of the stage leads to `end`: its readers came first.
        let out = columns[&n.output()];
        for (slot, &x) in n.inputs.iter().enumerate() {
            if g.value(x).is_constant() {
                continue;
            }
            let need = input_columns(&n.op, slot, out, g.value(x).shape[3]);
            let hull = columns.entry(x).or_insert(need);
            *hull = [hull[0].min(need[0]), hull[1].max(need[1])];
            needs.insert((i, slot), need);
        }
    }
    (columns, needs)
}

/// Horizontal window of a convolution or pooling: kernel extent (dilated), stride, left pad.
fn window(op: &Op) -> Option<(usize, usize, usize)> {
    match op {
        Op::Conv(c) => Some(((c.kernel[1] - 1) * c.dilations[1] + 1, c.strides[1], c.pads[1])),
        Op::Pool(p) => Some(((p.kernel[1] - 1) * p.dilations[1] + 1, p.strides[1], p.pads[1])),
        _ => None,
    }
}

/// Columns of input `slot` (of width `in_w`) that output columns `out` read.
fn input_columns(op: &Op, slot: usize, out: [usize; 2], in_w: usize) -> [usize; 2] {
    match window(op) {
        Some((extent, stride, pad)) if slot == 0 => {
            let start = (out[0] * stride).saturating_sub(pad);
            let end = ((out[1] - 1) * stride + extent).saturating_sub(pad).min(in_w);
            [start.min(end), end]
        }
        _ => out,
    }
}

/// `op` computing output columns `out` from input columns `input` of its map:
/// padding only where the strip meets the map's edges (inner edges read real columns).
fn narrowed(op: &Op, out: [usize; 2], input: Option<[usize; 2]>) -> Op {
    let (Some((extent, stride, pad)), Some([c0, c1])) = (window(op), input) else {
        return op.clone();
    };
    // Output column `out[0]`'s window starts at column `out[0] * stride - pad` of the map.
    let left = (c0 + pad).saturating_sub(out[0] * stride);
    let right = ((out[1] - 1) * stride + extent).saturating_sub(pad + c1);
    let mut op = op.clone();
    match &mut op {
        Op::Conv(c) => {
            c.pads[1] = left;
            c.pads[3] = right;
        }
        Op::Pool(p) => {
            p.pads[1] = left;
            p.pads[3] = right;
        }
        _ => {}
    }
    op
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Plan, Strategy};

    fn strips_of(g: &Graph, count: usize) -> Vec<Strips> {
        ends(g, count).into_iter().map(|end| Strips { end, count }).collect()
    }

    #[test]
    fn a_chain_narrows_to_its_strips_and_joins_whole() {
        let g = crate::zoo::by_name("mobilenet_v2", 64, 64, 0).unwrap();
        let all = strips_of(&g, 3);
        assert!(!all.is_empty(), "MobileNetV2's stem is a chain");
        for s in &all {
            let r = rewrite(&g, s).unwrap();
            r.check_shapes().unwrap();
            let join = r.nodes.iter().find(|n| n.output() == s.end).unwrap();
            assert!(matches!(join.op, Op::Concat(Concat { axis: 3 })));
            assert_eq!(join.inputs.len(), 3);
            let widths: usize = join.inputs.iter().map(|v| r.value(*v).shape[3]).sum();
            assert_eq!(widths, g.value(s.end).shape[3]);
            assert_eq!(r.aliases.iter().filter(|a| a.columns.is_some()).count(), 3);
            // Every strip's node names the node it copies; the join names none.
            for n in &r.nodes {
                let copies = original_name(&n.name);
                let join = std::ptr::eq(n, join);
                assert_eq!(copies.is_none(), join || g.nodes.iter().any(|m| m.name == n.name));
                assert!(copies.is_none_or(|o| g.nodes.iter().any(|m| m.name == o)), "{}", n.name);
            }
        }
    }

    #[test]
    fn inner_edges_lose_their_padding_and_outer_edges_keep_it() {
        let conv = Op::Conv(crate::ops::Conv {
            kernel: [3, 3],
            strides: [2, 2],
            dilations: [1, 1],
            pads: [1, 1, 1, 1],
            groups: 1,
            act: None,
            residual: false,
        });
        // 8 output columns of a 16-column map, in two strips of 4.
        let left = input_columns(&conv, 0, [0, 4], 16);
        let right = input_columns(&conv, 0, [4, 8], 16);
        assert_eq!((left, right), ([0, 8], [7, 16]));
        let pads = |op: Op| match op {
            Op::Conv(c) => c.pads,
            _ => unreachable!(),
        };
        assert_eq!(pads(narrowed(&conv, [0, 4], Some(left))), [1, 1, 1, 0]);
        assert_eq!(pads(narrowed(&conv, [4, 8], Some(right))), [1, 0, 1, 0]);
    }

    #[test]
    fn a_shortcut_reads_its_columns_of_a_wider_map_in_place() {
        let g = crate::zoo::by_name("resnet18", 64, 64, 0).unwrap();
        // The first residual block's output: its shortcut reads fewer columns of the block's
        // input than the block's first 3x3 convolution does.
        let block = crate::plan::byparts::articulations(&g)[2];
        let r = rewrite(&g, &Strips { end: block, count: 2 }).unwrap();
        r.check_shapes().unwrap();
        assert!(!r.views.is_empty());
        for w in &r.views {
            let (view, source) = (&r.value(w.value).shape, &r.value(w.source).shape);
            assert!(w.column + view[3] <= source[3] && view[..3] == source[..3], "{w:?}");
            assert_eq!(r.source_of(w.value), (w.source, w.column));
        }
    }

    #[test]
    fn stages_with_whole_map_ops_or_too_many_strips_are_refused_with_the_reason() {
        let g = crate::zoo::by_name("se_net", 48, 40, 0).unwrap();
        let ops = |v: ValueId| rewrite(&g, &Strips { end: v, count: 2 }).map(|_| ()).unwrap_err();
        let refusals: Vec<String> = crate::plan::byparts::articulations(&g)
            .into_iter()
            .filter(|&v| g.value(v).shape.len() == 4 && g.value(v).shape[3] > 1)
            .filter(|&v| rewrite(&g, &Strips { end: v, count: 2 }).is_err())
            .map(|v| ops(v).to_string())
            .collect();
        assert!(refusals.iter().any(|e| e.contains("cannot run in column strips")), "{refusals:?}");
        let first = crate::plan::byparts::articulations(&g)[0];
        let e = rewrite(&g, &Strips { end: first, count: 1000 }).unwrap_err().to_string();
        assert!(e.contains("choose 2 to"), "{e}");
    }

    #[test]
    fn strips_lower_the_smallest_peak_of_a_wide_stem() {
        let g = crate::zoo::by_name("mobilenet_v2", 224, 224, 0).unwrap();
        let rows = Plan::build(&g, &PlanOptions::new(Strategy::ByParts)).unwrap().peak_bytes;
        let best = strips_of(&g, 4)
            .into_iter()
            .map(|s| {
                let o = PlanOptions { strips: Some(s), ..PlanOptions::new(Strategy::ByParts) };
                Plan::build(&g, &o).unwrap().peak_bytes
            })
            .min()
            .unwrap();
        assert!(best < rows, "strips {best} vs rows {rows}");
    }
}
