//! The two baseline strategies every later number is compared with: naive (each tensor whole in
//! its own buffer) and layer by layer (whole tensors packed by lifetime).

use super::arena::{live_peak, pack, Interval};
use super::{fingerprint, row_geometry, Buffer, BufferRole, Plan, PlanOptions, Step};
use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::tensor::DType;

/// One step per node over all its output rows; buffers whole. With `share`, buffers whose
/// lifetimes do not overlap share bytes; without, each gets its own.
pub(super) fn build(graph: &Graph, options: &PlanOptions, share: bool) -> Result<Plan> {
    let storage = DType::F32;
    let nsteps = graph.nodes.len();
    let steps: Vec<Step> = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let rows = row_geometry(&graph.value(n.output()).shape).1;
            Step { node: NodeId(i), rows: [0, rows] }
        })
        .collect();

    let mut value_buffer = vec![None; graph.values.len()];
    let mut buffers = Vec::new();
    let mut first = vec![usize::MAX; graph.values.len()];
    let mut last = vec![0usize; graph.values.len()];
    for &i in &graph.inputs {
        first[i.0] = 0;
    }
    for (s, n) in graph.nodes.iter().enumerate() {
        for &o in &n.outputs {
            first[o.0] = s;
            last[o.0] = last[o.0].max(s);
        }
        for &v in &n.inputs {
            last[v.0] = last[v.0].max(s);
        }
    }
    for &o in &graph.outputs {
        last[o.0] = nsteps.saturating_sub(1);
    }
    for (vi, v) in graph.values.iter().enumerate() {
        if v.is_constant() || first[vi] == usize::MAX {
            continue;
        }
        let id = crate::graph::ValueId(vi);
        let role = if graph.inputs.contains(&id) {
            BufferRole::Input
        } else if graph.outputs.contains(&id) {
            BufferRole::Output
        } else {
            BufferRole::Intermediate
        };
        value_buffer[vi] = Some(buffers.len());
        buffers.push(Buffer {
            value: id,
            name: v.name.clone(),
            role,
            dims: v.shape.clone(),
            capacity: row_geometry(&v.shape).1,
            bytes: v.numel() * storage.size(),
            offset: 0,
            first_step: if share { first[vi] } else { 0 },
            last_step: if share { last[vi] } else { nsteps.saturating_sub(1) },
        });
    }

    let interval = |b: &Buffer| Interval { bytes: b.bytes, first: b.first_step, last: b.last_step };
    let all: Vec<Interval> = buffers.iter().map(interval).collect();
    let mids: Vec<Interval> =
        buffers.iter().filter(|b| b.role == BufferRole::Intermediate).map(interval).collect();
    let (offsets, arena_bytes) = pack(&all, options.alignment);
    let (_, peak_bytes) = pack(&mids, options.alignment);
    for (b, o) in buffers.iter_mut().zip(offsets) {
        b.offset = o;
    }
    Ok(Plan {
        strategy: options.strategy,
        fingerprint: fingerprint(graph),
        storage,
        buffers,
        value_buffer,
        steps,
        arena_bytes,
        peak_bytes,
        peak_bytes_with_io: arena_bytes,
        live_peak_bytes: live_peak(&mids),
    })
}
