//! The two baseline strategies every later number is compared with: naive (each tensor whole in
//! its own buffer) and layer by layer (whole tensors packed by lifetime). Both run one node at a
//! time over all its rows; they differ only in whether buffers share bytes (see `finish`).

use super::{row_geometry, Step, StepKind};
use crate::graph::{Graph, NodeId};

/// Feeds every input whole, fires each node once over all its rows, drains each output as soon
/// as it exists. Every buffer holds its whole tensor.
pub(super) fn schedule(graph: &Graph) -> (Vec<Step>, Vec<usize>) {
    let rows = |v: crate::graph::ValueId| row_geometry(&graph.value(v).shape).1;
    let mut steps: Vec<Step> = (0..graph.feeds())
        .map(|k| Step { kind: StepKind::Feed(k), rows: [0, rows(graph.feed_value(k))] })
        .collect();
    for (i, n) in graph.nodes.iter().enumerate() {
        let x = n.inputs.first().map(|&v| graph.value(v).shape.as_slice()).unwrap_or(&[]);
        let r = if n.op.fold(x).is_some() { rows(n.inputs[0]) } else { rows(n.output()) };
        steps.push(Step { kind: StepKind::Fire(NodeId(i)), rows: [0, r] });
        for (k, &o) in graph.outputs.iter().enumerate() {
            if o == n.output() {
                steps.push(Step { kind: StepKind::Drain(k), rows: [0, rows(o)] });
            }
        }
    }
    let capacity = graph.values.iter().map(|v| row_geometry(&v.shape).1).collect();
    (steps, capacity)
}
