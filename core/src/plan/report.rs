//! What a plan costs, in words: stage cuts (values held whole and why), stages, buffers.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{row_geometry, BufferRole, Plan, StepKind, Strategy};
use crate::format;
use crate::graph::{Graph, ValueId};

/// A value held whole in a by-parts plan because some consumer needs all of it at once, or
/// waits for something that needs all of it (a squeeze-and-excitation scale).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cut {
    /// The value.
    pub value: ValueId,
    /// Its name.
    pub name: String,
    /// Bytes of its buffer.
    pub bytes: usize,
    /// The consumer that keeps it whole: the one whose first read comes last.
    pub held_for: String,
    /// That consumer's operator.
    pub op: String,
}

/// A part of the graph between cuts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// Stage number, from 0.
    pub index: usize,
    /// Nodes in the stage.
    pub nodes: usize,
    /// Bytes of the buffers its nodes write.
    pub bytes: usize,
}

/// Values a by-parts plan holds whole although they have more than one row.
pub(super) fn cuts(graph: &Graph, plan: &Plan) -> Vec<Cut> {
    if !matches!(plan.strategy, Strategy::ByParts | Strategy::Published) {
        return Vec::new();
    }
    // Step of each node's first firing.
    let mut first_fire = vec![usize::MAX; graph.nodes.len()];
    for (s, step) in plan.steps.iter().enumerate() {
        if let StepKind::Fire(n) = step.kind {
            first_fire[n.0] = first_fire[n.0].min(s);
        }
    }
    let consumers = graph.consumers();
    plan.buffers
        .iter()
        .filter(|b| b.role != BufferRole::Input && b.is_whole() && row_geometry(&b.dims).1 > 1)
        .filter_map(|b| {
            // The reader that starts last is the one the whole tensor waits for.
            let holder = consumers[b.value.0].iter().max_by_key(|n| first_fire[n.0])?;
            let node = graph.node(*holder);
            Some(Cut {
                value: b.value,
                name: b.name.clone(),
                bytes: b.bytes,
                held_for: node.name.clone(),
                op: node.op.name().to_string(),
            })
        })
        .collect()
}

/// Stages: a node's stage is one more than a producer's whose output is a cut.
pub(super) fn stages(graph: &Graph, plan: &Plan) -> Vec<Stage> {
    let producers = graph.producers();
    let is_cut: Vec<bool> =
        (0..graph.values.len()).map(|v| plan.cuts.iter().any(|c| c.value.0 == v)).collect();
    let mut stage = vec![0usize; graph.nodes.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        stage[i] = graph
            .activation_inputs(n)
            .filter_map(|v| producers[v.0].map(|p| stage[p.0] + is_cut[v.0] as usize))
            .max()
            .unwrap_or(0);
    }
    let count = stage.iter().max().map_or(0, |m| m + 1);
    (0..count)
        .map(|index| {
            let nodes: Vec<usize> = (0..graph.nodes.len()).filter(|&i| stage[i] == index).collect();
            let bytes = nodes
                .iter()
                .filter_map(|&i| plan.buffer(graph.nodes[i].output()))
                .map(|b| b.bytes)
                .sum();
            Stage { index, nodes: nodes.len(), bytes }
        })
        .collect()
}

pub(super) fn describe(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "strategy {}: {} intermediate peak, {} with inputs and outputs, {} steps, {} buffers",
        plan.strategy.name(),
        format::bytes(plan.peak_bytes),
        format::bytes(plan.peak_bytes_with_io),
        plan.steps.len(),
        plan.buffers.len()
    );
    if !plan.cuts.is_empty() {
        let total: usize = plan.cuts.iter().map(|c| c.bytes).sum();
        let _ = writeln!(s, "{} values held whole ({}):", plan.cuts.len(), format::bytes(total));
        for c in &plan.cuts {
            let _ = writeln!(
                s,
                "  {:<44} {:>10}  for {} ({})",
                clip(&c.name, 44),
                format::bytes(c.bytes),
                c.held_for,
                c.op
            );
        }
    }
    if plan.stages.len() > 1 {
        for st in &plan.stages {
            let _ = writeln!(
                s,
                "stage {}: {} nodes, buffers {}",
                st.index,
                st.nodes,
                format::bytes(st.bytes)
            );
        }
    }
    let _ = writeln!(
        s,
        "{:<44} {:>12} {:>10} {:>10} {:>10}  steps",
        "buffer", "role", "rows", "bytes", "offset"
    );
    for b in &plan.buffers {
        let _ = writeln!(
            s,
            "{:<44} {:>12} {:>10} {:>10} {:>10}  {}..{}",
            clip(&b.name, 44),
            format!("{:?}", b.role).to_lowercase(),
            format!("{}/{}", b.capacity, row_geometry(&b.dims).1),
            format::bytes(b.bytes),
            b.offset,
            b.first_step,
            b.last_step
        );
    }
    s
}

/// Keeps the end of a long name (the distinctive part of exported names).
pub(crate) fn clip(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        s.to_string()
    } else {
        let tail: String = s.chars().skip(count - (n - 1)).collect();
        format!("~{tail}")
    }
}
