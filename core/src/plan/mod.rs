//! Plans: everything decided before running. Which node fires when and on which output rows,
//! where every buffer lives in the arena and how many rows it holds, and what that costs.
//!
//! A plan is built once from a graph (`Plan::build(&graph, &PlanOptions)`), is immutable and
//! serialisable (plan on a laptop, run on the device), and is bound to a backend by a
//! [`crate::Session`].

pub mod arena;
mod baseline;

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format;
use crate::graph::{Graph, NodeId, ValueId};
use crate::tensor::DType;

/// How to schedule and place intermediate data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Every tensor whole, in its own buffer, for the whole run.
    Naive,
    /// Whole tensors, one node at a time, packed by lifetime in one arena (greedy by size,
    /// first fit): what mainstream engines do.
    LayerByLayer,
}

impl Strategy {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Naive => "naive",
            Strategy::LayerByLayer => "layer-by-layer",
        }
    }

    /// All strategies, in the order reports list them.
    pub const ALL: [Strategy; 2] = [Strategy::Naive, Strategy::LayerByLayer];

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Result<Strategy> {
        Strategy::ALL.into_iter().find(|st| st.name() == s).ok_or_else(|| {
            Error::Plan(format!(
                "unknown strategy '{s}'; choose one of: {}",
                Strategy::ALL.map(Strategy::name).join(", ")
            ))
        })
    }
}

/// Options of [`Plan::build`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOptions {
    /// The scheduling strategy.
    pub strategy: Strategy,
    /// Alignment of every buffer in the arena, in bytes (a power of two).
    pub alignment: usize,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { strategy: Strategy::LayerByLayer, alignment: 64 }
    }
}

impl PlanOptions {
    /// Default options with the given strategy.
    pub fn new(strategy: Strategy) -> Self {
        PlanOptions { strategy, ..Default::default() }
    }
}

/// Why a buffer exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferRole {
    /// A model input, written by the caller.
    Input,
    /// A model output, read back by the caller.
    Output,
    /// Data exchanged between nodes.
    Intermediate,
}

/// One buffer of the arena: a value's rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Buffer {
    /// The value it holds.
    pub value: ValueId,
    /// The value's name.
    pub name: String,
    /// Input, output or intermediate.
    pub role: BufferRole,
    /// The full tensor's shape.
    pub dims: Vec<usize>,
    /// Rows held at once (the tensor's height when held whole).
    pub capacity: usize,
    /// Bytes reserved.
    pub bytes: usize,
    /// Byte offset in the arena.
    pub offset: usize,
    /// First step at which the buffer is live.
    pub first_step: usize,
    /// Last step at which the buffer is live.
    pub last_step: usize,
}

/// One firing: a node producing output rows `rows[0]..rows[1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The node.
    pub node: NodeId,
    /// Output rows `[start, end)` along the row axis.
    pub rows: [usize; 2],
}

/// The row geometry of a tensor: `planes x rows x width`, rows along axis `rank - 2`.
/// Rank-4 `[N, C, H, W]` gives `(N*C, H, W)`; rank 1 and 0 are a single row.
pub fn row_geometry(dims: &[usize]) -> (usize, usize, usize) {
    match dims.len() {
        0 => (1, 1, 1),
        1 => (1, 1, dims[0]),
        r => (dims[..r - 2].iter().product(), dims[r - 2], dims[r - 1]),
    }
}

/// A complete execution plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The strategy that produced it.
    pub strategy: Strategy,
    /// Fingerprint of the graph it was built for.
    pub fingerprint: u64,
    /// Storage type of activations.
    pub storage: DType,
    /// Buffers, one per activation value.
    pub buffers: Vec<Buffer>,
    /// Buffer index of each value (`None` for constants).
    pub value_buffer: Vec<Option<usize>>,
    /// The firings, in order.
    pub steps: Vec<Step>,
    /// Arena bytes: every buffer, model inputs and outputs included.
    pub arena_bytes: usize,
    /// Peak bytes of intermediate data only (inputs and outputs excluded), as packed.
    pub peak_bytes: usize,
    /// Peak bytes including model inputs and outputs (equals `arena_bytes`).
    pub peak_bytes_with_io: usize,
    /// Largest sum of intermediate bytes live at one step: the bound any packing meets.
    pub live_peak_bytes: usize,
}

impl Plan {
    /// Builds a plan for `graph`.
    pub fn build(graph: &Graph, options: &PlanOptions) -> Result<Plan> {
        if !options.alignment.is_power_of_two() {
            return Err(Error::Plan(format!(
                "alignment {} is not a power of two",
                options.alignment
            )));
        }
        graph.validate()?;
        match options.strategy {
            Strategy::Naive => baseline::build(graph, options, false),
            Strategy::LayerByLayer => baseline::build(graph, options, true),
        }
    }

    /// Peak intermediate bytes (inputs and outputs excluded).
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    /// Bytes of the arena a session allocates for activations.
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes
    }

    /// The buffer holding `value`.
    pub fn buffer(&self, value: ValueId) -> Option<&Buffer> {
        self.value_buffer.get(value.0).copied().flatten().map(|b| &self.buffers[b])
    }

    /// Checks that this plan was built for `graph`.
    pub fn check_graph(&self, graph: &Graph) -> Result<()> {
        let fp = fingerprint(graph);
        if fp != self.fingerprint {
            return Err(Error::Plan(format!(
                "the plan was built for another graph or input shape (fingerprint {:016x}, graph {fp:016x}); rebuild it",
                self.fingerprint
            )));
        }
        Ok(())
    }

    /// Serialises the plan as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a plan from JSON.
    pub fn from_json(s: &str) -> Result<Plan> {
        serde_json::from_str(s).map_err(|e| Error::Plan(format!("cannot read plan JSON: {e}")))
    }

    /// A human-readable report: totals, then every buffer.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "strategy {}: {} intermediate peak, {} with inputs and outputs, {} steps, {} buffers",
            self.strategy.name(),
            format::bytes(self.peak_bytes),
            format::bytes(self.peak_bytes_with_io),
            self.steps.len(),
            self.buffers.len()
        );
        let _ = writeln!(
            s,
            "{:<44} {:>10} {:>8} {:>10} {:>10}  steps",
            "buffer", "role", "rows", "bytes", "offset"
        );
        for b in &self.buffers {
            let _ = writeln!(
                s,
                "{:<44} {:>10} {:>8} {:>10} {:>10}  {}..{}",
                truncate(&b.name, 44),
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
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: String =
            s.chars().rev().take(n - 1).collect::<Vec<_>>().into_iter().rev().collect();
        format!("~{tail}")
    }
}

/// A stable hash of the graph's structure and shapes (FNV-1a), to tie plans to graphs.
pub fn fingerprint(graph: &Graph) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for n in &graph.nodes {
        eat(format!("{:?}", n.op).as_bytes());
        for &v in n.inputs.iter().chain(&n.outputs) {
            eat(&(v.0 as u64).to_le_bytes());
            for &d in &graph.value(v).shape {
                eat(&(d as u64).to_le_bytes());
            }
        }
    }
    for &v in graph.inputs.iter().chain(&graph.outputs) {
        eat(&(v.0 as u64).to_le_bytes());
    }
    h
}
