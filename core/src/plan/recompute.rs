//! Recomputation instead of holding whole.
//!
//! A squeeze-and-excitation block multiplies a map `x` by a channel scale computed from all of
//! `x` (a global pool). Streamed, `x` must be held whole until the scale exists. Recomputing
//! gives the readers that wait for the scale (the multiply and the residual add) their own copy
//! of `x`, computed again in a second streaming pass from the model input (fed again) or from
//! one-row values such as earlier scales: the first pass only folds `x` into the pool. The
//! planner chooses, per block, memory (hold) or compute (recompute).

use std::borrow::Cow;
use std::collections::HashMap;

use super::{row_geometry, PlanOptions};
use crate::error::{Error, Result};
use crate::graph::{Graph, Node, NodeId, Value, ValueId};

/// Recomputations that would stop a plan holding values whole: for each value it holds whole
/// (largest first), the readers that only start once the value is complete.
pub fn candidates(graph: &Graph, plan: &super::Plan) -> Vec<Recompute> {
    use super::StepKind;
    let n = graph.nodes.len();
    let (mut first_fire, mut last_fire) = (vec![usize::MAX; n], vec![0usize; n]);
    for (s, step) in plan.steps.iter().enumerate() {
        if let StepKind::Fire(id) = step.kind {
            first_fire[id.0] = first_fire[id.0].min(s);
            last_fire[id.0] = s;
        }
    }
    let producers = graph.producers();
    let consumers = graph.consumers();
    let mut out: Vec<(usize, Recompute)> = plan
        .buffers
        .iter()
        .filter(|b| {
            b.is_whole() && row_geometry(&b.dims).1 > 1 && !graph.outputs.contains(&b.value)
        })
        .filter_map(|b| {
            let done = producers[b.value.0].map(|p| last_fire[p.0])?;
            let readers: Vec<ValueId> = consumers[b.value.0]
                .iter()
                .filter(|c| first_fire[c.0] != usize::MAX && first_fire[c.0] > done)
                .map(|c| graph.node(*c).output())
                .collect();
            // Readers that start early stream it; late readers make it whole.
            let early = consumers[b.value.0].iter().any(|c| first_fire[c.0] < done);
            (!readers.is_empty() && early).then_some((
                b.bytes,
                Recompute { value: b.value, readers, shared: false, keep: vec![] },
            ))
        })
        .collect();
    out.sort_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
    out.into_iter().map(|(_, r)| r).collect()
}

/// Single recomputations to try next on `plan`: the six largest candidates, each copying
/// everything back to the model inputs and, where the plan holds small maps whole anyway,
/// reading those instead (see [`with_keeps`]).
pub fn moves(graph: &Graph, plan: &super::Plan) -> Vec<Vec<Recompute>> {
    candidates(graph, plan).into_iter().take(6).flat_map(|c| with_keeps(plan, vec![c])).collect()
}

/// One streaming pass for the squeeze-and-excitation blocks at fold depth `depth` (see
/// [`super::fold_depth`]): their inputs held whole, recomputed together from one shared copy
/// (the four levels of a feature pyramid wait for the same backbone, and one copy of it
/// serves all four). Maps under 1/16 of the largest are left held: a pass costs a copy of
/// everything before it. Empty when no such block is held.
pub fn pass_moves(graph: &Graph, plan: &super::Plan, depth: usize) -> Vec<Vec<Recompute>> {
    let depths = super::fold_depth(graph);
    let consumers = graph.consumers();
    let pooled =
        |v: ValueId| consumers[v.0].iter().any(|c| super::folds_whole_map(graph, graph.node(*c)));
    let bytes = |v: ValueId| plan.buffer(v).map_or(0, |b| b.bytes);
    let group: Vec<Recompute> = candidates(graph, plan)
        .into_iter()
        .filter(|c| depths[c.value.0] == depth && pooled(c.value))
        .collect();
    let largest = group.iter().map(|c| bytes(c.value)).max().unwrap_or(0);
    let group: Vec<Recompute> =
        group.into_iter().filter(|c| bytes(c.value) * 16 >= largest).collect();
    if group.is_empty() {
        return Vec::new();
    }
    with_keeps(plan, group)
}

/// `group` as one move (later members reuse the first one's copies), twice: copying
/// everything back to the model inputs, and reading the small maps the plan holds whole
/// anyway (at most 1/16 of what the move stops holding) instead of copying them, so that the
/// copy need not run, nor wait for, a deep and coarse path again.
fn with_keeps(plan: &super::Plan, group: Vec<Recompute>) -> Vec<Vec<Recompute>> {
    let bytes = |v: ValueId| plan.buffer(v).map_or(0, |b| b.bytes);
    let freed: usize = group.iter().map(|r| bytes(r.value)).sum();
    let keep: Vec<ValueId> = plan
        .buffers
        .iter()
        .filter(|b| {
            b.role == super::BufferRole::Intermediate
                && b.is_whole()
                && row_geometry(&b.dims).1 > 1
                && b.bytes * 16 <= freed
                && !group.iter().any(|r| r.value == b.value)
        })
        .map(|b| b.value)
        .collect();
    let with = |keep: &[ValueId]| -> Vec<Recompute> {
        let each = group.iter().enumerate();
        each.map(|(i, r)| Recompute { shared: i > 0, keep: keep.to_vec(), ..r.clone() }).collect()
    };
    let mut out = vec![with(&[])];
    if !keep.is_empty() {
        out.push(with(&keep));
    }
    out
}

/// One recomputation: `value` computed again for the readers that produce `readers`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recompute {
    /// The value held whole otherwise.
    pub value: ValueId,
    /// Outputs of the readers that get the copy (values keep their ids across rewrites).
    pub readers: Vec<ValueId>,
    /// Reuse the copies the previous recomputation made: one second pass then serves both
    /// (the neck of a feature pyramid recomputes its four scales from one copy of the
    /// backbone, not four).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// Values the copy reads as they are instead of computing them again: small maps the plan
    /// holds whole anyway (the coarsest level of a feature pyramid), so that the second pass
    /// need not run the deep path again, nor wait for it; or narrow maps the plan then holds
    /// whole for the copy (a backbone output after the projection that narrows it), which
    /// buys the computation before them with their memory (see the planner's keep walk).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<ValueId>,
}

/// `graph` with each recomputation applied in order.
pub fn rewrite(graph: &Graph, list: &[Recompute]) -> Result<Graph> {
    Ok(rewrite_copying(graph, list)?.0)
}

/// The values of `graph` that `list` computes again (model inputs fed again included), in
/// order of their ids: where a plan could hold one whole instead ([`Recompute::keep`]).
pub fn copied(graph: &Graph, list: &[Recompute]) -> Result<Vec<ValueId>> {
    let mut out = rewrite_copying(graph, list)?.1;
    out.sort_unstable_by_key(|v| v.0);
    out.dedup();
    Ok(out)
}

/// [`rewrite`], and the values of `graph` it copied.
fn rewrite_copying(graph: &Graph, list: &[Recompute]) -> Result<(Graph, Vec<ValueId>)> {
    let mut g = graph.clone();
    let mut map = HashMap::new();
    let mut copied = Vec::new();
    for (round, rc) in list.iter().enumerate() {
        if !rc.shared {
            copied.extend(map.keys().copied());
            map = HashMap::new();
        }
        let v = rc.value;
        if v.0 >= g.values.len() {
            return Err(Error::Plan(format!("cannot recompute unknown value {}", v.0)));
        }
        let late: Vec<NodeId> = g.consumers()[v.0]
            .iter()
            .copied()
            .filter(|n| rc.readers.contains(&g.nodes[n.0].output()))
            .collect();
        let Some(first) = late.iter().map(|n| n.0).min() else {
            return Err(Error::Plan(format!(
                "value '{}' has none of the readers to recompute for",
                g.value(v).name
            )));
        };
        let mut cloner = Cloner {
            g: &mut g,
            map: std::mem::take(&mut map),
            nodes: Vec::new(),
            tag: format!("~r{round}"),
            producers: Vec::new(),
            keep: &rc.keep,
        };
        cloner.producers = cloner.g.producers();
        let copy = cloner.value(v)?;
        let nodes = std::mem::take(&mut cloner.nodes);
        map = std::mem::take(&mut cloner.map);
        for n in &late {
            for u in g.nodes[n.0].inputs.iter_mut() {
                if *u == v {
                    *u = copy;
                }
            }
        }
        g.nodes.splice(first..first, nodes);
    }
    copied.extend(map.keys().copied());
    // Shared copies may sit after readers spliced in by a later recomputation.
    g.sort_nodes();
    g.validate()?;
    // Values of `graph` only: a later round may copy an earlier round's copies.
    copied.retain(|v: &ValueId| v.0 < graph.values.len());
    Ok((g, copied))
}

/// Clones the computation of values, sharing constants and one-row values and feeding model
/// inputs again.
struct Cloner<'g> {
    g: &'g mut Graph,
    map: HashMap<ValueId, ValueId>,
    nodes: Vec<Node>,
    tag: String,
    producers: Vec<Option<NodeId>>,
    keep: &'g [ValueId],
}

impl Cloner<'_> {
    fn new_value(&mut self, like: ValueId) -> ValueId {
        let v = &self.g.values[like.0];
        let copy = Value {
            name: format!("{}{}", v.name, self.tag),
            shape: v.shape.clone(),
            dtype: v.dtype,
            constant: None,
        };
        self.g.values.push(copy);
        ValueId(self.g.values.len() - 1)
    }

    fn value(&mut self, u: ValueId) -> Result<ValueId> {
        if let Some(&c) = self.map.get(&u) {
            return Ok(c);
        }
        let val = &self.g.values[u.0];
        if val.is_constant() || row_geometry(&val.shape).1 <= 1 || self.keep.contains(&u) {
            return Ok(u);
        }
        let copy = if let Some(k) = (0..self.g.feeds()).find(|&k| self.g.feed_value(k) == u) {
            let (input, columns) = (self.g.feed_source(k), self.g.feed_columns(k));
            let c = self.new_value(u);
            self.g.aliases.push(crate::graph::Alias { value: c, input, columns });
            c
        } else {
            let p = self.producers[u.0]
                .ok_or_else(|| Error::Plan(format!("value {} has no producer", u.0)))?;
            let node = self.g.nodes[p.0].clone();
            let mut inputs = Vec::with_capacity(node.inputs.len());
            for &x in &node.inputs {
                inputs.push(self.value(x)?);
            }
            let out = self.new_value(u);
            self.nodes.push(Node {
                name: format!("{}{}", node.name, self.tag),
                op: node.op,
                inputs,
                outputs: vec![out],
            });
            out
        };
        self.map.insert(u, copy);
        Ok(copy)
    }
}

/// The graph a plan with `options` runs: `graph` itself, or its rewrite when values are
/// recomputed, then run in column strips ([`super::strips`]).
pub fn effective<'g>(graph: &'g Graph, options: &PlanOptions) -> Result<Cow<'g, Graph>> {
    let g = if options.recompute.is_empty() {
        Cow::Borrowed(graph)
    } else {
        Cow::Owned(rewrite(graph, &options.recompute)?)
    };
    match &options.strips {
        None => Ok(g),
        Some(s) => Ok(Cow::Owned(super::strips::rewrite(&g, s)?)),
    }
}
