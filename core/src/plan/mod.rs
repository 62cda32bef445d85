//! Plans: everything decided before running. Which node fires when and on which rows, where
//! every buffer lives in the arena and how many rows it holds, and what that costs.
//!
//! A plan is built once from a graph (`Plan::build(&graph, &PlanOptions)`), is immutable and
//! serialisable (plan on a laptop, run on the device), and is bound to a backend by a
//! [`crate::Session`].

pub mod arena;
mod baseline;
mod byparts;
pub mod recompute;
mod report;
pub mod strips;
pub mod verify;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, ValueId};
use crate::tensor::DType;

pub use report::{Cut, Stage};

/// How to schedule and place intermediate data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Every tensor whole, in its own buffer, for the whole run.
    Naive,
    /// Whole tensors, one node at a time, packed by lifetime in one arena (greedy by size,
    /// first fit): what mainstream engines do.
    LayerByLayer,
    /// Nodes produce a few rows per firing; every edge is a ring buffer holding only the rows
    /// its consumers still need; a static schedule fixes every capacity.
    ByParts,
    /// The published by-parts method, for comparison: each layer either by parts, one row per
    /// firing, or whole (chosen greedily, largest outputs first), with no stage cuts.
    Published,
}

impl Strategy {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Naive => "naive",
            Strategy::LayerByLayer => "layer-by-layer",
            Strategy::ByParts => "by-parts",
            Strategy::Published => "published",
        }
    }

    /// All strategies, in the order reports list them.
    pub const ALL: [Strategy; 4] =
        [Strategy::Naive, Strategy::LayerByLayer, Strategy::ByParts, Strategy::Published];

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
    /// By parts: rows per firing of every node (and per feed of a model input) unless
    /// overridden in `parts`.
    pub part_rows: usize,
    /// By parts: rows per firing of particular nodes.
    pub parts: Vec<(NodeId, usize)>,
    /// By parts: values held whole, so that everything before them finishes before anything
    /// after them starts and the two sides' rings never live at the same time. `None`: search
    /// for the cuts that give the smallest peak.
    pub cuts: Option<Vec<ValueId>>,
    /// By parts: values recomputed for the readers that wait for a scale computed from all of
    /// them (squeeze-and-excitation), instead of held whole (see [`recompute`]). Values of the
    /// model as given; the plan then runs on the rewritten graph.
    #[serde(default)]
    pub recompute: Vec<recompute::Recompute>,
    /// Storage type of activations: `F32`, or `F16` (computed in f32, stored in half: half the
    /// memory, about three decimal digits). Outputs of ops that fold rows in (pooling) keep
    /// f32, so partial results never round and by parts still matches layer by layer.
    #[serde(default = "default_storage")]
    pub storage: DType,
    /// Two lanes ([`crate::lanes`]): the nodes (indices in the graph the plan runs on) at
    /// which the nodes' lane flips, in graph order; empty: one lane. A session runs such a
    /// plan in two threads, each on its own backend and arena, one thread each.
    #[serde(default)]
    pub lanes: Vec<usize>,
    /// By parts: of a node's inputs behind equally many global pools, demand first the one
    /// behind the largest pool ([`fold_rows`]) rather than the first in input order. The
    /// planner's keep walk sets it where it pays: once a pyramid level no longer waits for
    /// the full-resolution stem, demanding it first computes it ahead and holds it whole;
    /// without held maps the input order gives the smaller peak (the detector at 1024x768:
    /// 4.6 MB against 6.2, `examples/held_maps.rs`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub larger_pools_first: bool,
    /// By parts: the first stage (everything before `end`) run in column strips, one after
    /// another, each computing only its columns ([`strips`]): less memory than rows alone
    /// reach, for the halo columns computed twice. Applied after `recompute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strips: Option<strips::Strips>,
}

fn default_storage() -> DType {
    DType::F32
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            strategy: Strategy::LayerByLayer,
            alignment: 64,
            part_rows: 1,
            parts: Vec::new(),
            cuts: None,
            recompute: Vec::new(),
            storage: DType::F32,
            lanes: Vec::new(),
            larger_pools_first: false,
            strips: None,
        }
    }
}

impl PlanOptions {
    /// Default options with the given strategy.
    pub fn new(strategy: Strategy) -> Self {
        PlanOptions { strategy, ..Default::default() }
    }

    /// Rows per firing of `node`.
    pub fn part_of(&self, node: NodeId) -> usize {
        self.parts.iter().find(|(n, _)| *n == node).map_or(self.part_rows, |&(_, p)| p).max(1)
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

/// One buffer of the arena: some rows of one value.
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
    /// Rows held at once: the ring capacity (the tensor's height when held whole).
    pub capacity: usize,
    /// Bytes reserved.
    pub bytes: usize,
    /// Byte offset in the arena.
    pub offset: usize,
    /// First step at which the buffer is live.
    pub first_step: usize,
    /// Last step at which the buffer is live.
    pub last_step: usize,
    /// Storage type of its elements.
    #[serde(default = "default_storage")]
    pub dtype: DType,
}

impl Buffer {
    /// Whether the buffer holds the whole tensor.
    pub fn is_whole(&self) -> bool {
        self.capacity >= row_geometry(&self.dims).1
    }
}

/// What a step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// Copy rows of model input `k` from the caller into its buffer.
    Feed(usize),
    /// Fire a node: produce output rows (or, for accumulating nodes, fold in input rows).
    Fire(NodeId),
    /// Copy rows of model output `k` from its buffer to the caller.
    Drain(usize),
}

/// One step of the schedule: what, and on which rows `[rows[0], rows[1])`. A firing names
/// output rows, except for accumulating nodes (global pooling), whose steps name the input
/// rows they fold in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "[u32; 4]", try_from = "[u32; 4]")]
pub struct Step {
    /// What the step does.
    pub kind: StepKind,
    /// Rows `[start, end)`.
    pub rows: [usize; 2],
}

impl From<Step> for [u32; 4] {
    fn from(s: Step) -> [u32; 4] {
        let (code, i) = match s.kind {
            StepKind::Feed(k) => (0, k),
            StepKind::Fire(n) => (1, n.0),
            StepKind::Drain(k) => (2, k),
        };
        [code, i as u32, s.rows[0] as u32, s.rows[1] as u32]
    }
}

impl TryFrom<[u32; 4]> for Step {
    type Error = String;
    fn try_from(a: [u32; 4]) -> std::result::Result<Step, String> {
        let i = a[1] as usize;
        let kind = match a[0] {
            0 => StepKind::Feed(i),
            1 => StepKind::Fire(NodeId(i)),
            2 => StepKind::Drain(i),
            c => return Err(format!("unknown step kind {c}")),
        };
        if a[2] > a[3] {
            return Err(format!("step rows {}..{} are reversed", a[2], a[3]));
        }
        Ok(Step { kind, rows: [a[2] as usize, a[3] as usize] })
    }
}

/// Per value: the most whole-map folds (global pools down to one row) on any path from the
/// model inputs to it: the streaming passes that must finish before its first row exists.
pub fn fold_depth(g: &Graph) -> Vec<usize> {
    let mut depth = vec![0usize; g.values.len()];
    for n in &g.nodes {
        let d = n.inputs.iter().map(|v| depth[v.0]).max().unwrap_or(0);
        depth[n.output().0] = d + usize::from(folds_whole_map(g, n));
    }
    depth
}

/// Per value: the most rows that one of the whole-map folds at its [`fold_depth`] (`depth`)
/// behind it folds (0 where none is behind it). Of two inputs equally deep, the one behind the larger
/// fold is the longer stream: demanded first, it drives the others' statistics along with it
/// (their eager branches fire as its rows pass), where demanding the smaller one first can
/// compute its whole input ahead and hold it for the larger one's stream (the text
/// detector's pyramid with its 1/8 backbone output held: the 1/8 level's top-down sum, 25 MB
/// at 2048x2048). See [`PlanOptions::larger_pools_first`].
pub fn fold_rows(g: &Graph, depth: &[usize]) -> Vec<usize> {
    let mut rows = vec![0usize; g.values.len()];
    for n in &g.nodes {
        let out = n.output();
        rows[out.0] = if folds_whole_map(g, n) {
            row_geometry(&g.value(n.inputs[0]).shape).1
        } else {
            let d = depth[out.0];
            n.inputs.iter().filter(|v| depth[v.0] == d).map(|v| rows[v.0]).max().unwrap_or(0)
        };
    }
    rows
}

/// Whether `n` folds all rows of its input into one (a global pool): its output exists only
/// once the whole input has streamed through.
pub fn folds_whole_map(g: &Graph, n: &crate::graph::Node) -> bool {
    n.inputs.first().is_some_and(|x| n.op.fold(&g.value(*x).shape).is_some())
        && row_geometry(&g.value(n.output()).shape).1 <= 1
}

/// The row geometry of a tensor: `planes x rows x width`, rows along axis `rank - 2`.
/// Rank-4 `[N, C, H, W]` gives `(N*C, H, W)`; rank 1 and 0 are a single row.
#[inline]
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
    /// The options it was built with.
    pub options: PlanOptions,
    /// Fingerprint of the graph it was built for.
    pub fingerprint: u64,
    /// Storage type of activations.
    pub storage: DType,
    /// Buffers, one per activation value.
    pub buffers: Vec<Buffer>,
    /// Buffer index of each value (`None` for constants).
    pub value_buffer: Vec<Option<usize>>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Arena bytes: every buffer, model inputs and outputs included.
    pub arena_bytes: usize,
    /// Peak bytes of intermediate data only (inputs and outputs excluded), as packed.
    pub peak_bytes: usize,
    /// Peak bytes including model inputs and outputs (equals `arena_bytes`).
    pub peak_bytes_with_io: usize,
    /// Largest sum of intermediate bytes live at one step: the bound any packing meets.
    pub live_peak_bytes: usize,
    /// Values held whole because a consumer needs all of them at once (stage cuts).
    pub cuts: Vec<Cut>,
    /// Stages: parts of the graph between cuts.
    pub stages: Vec<Stage>,
    /// Kernel variant per node ([`Backend::variants`](crate::Backend::variants) name, indexed
    /// by node of the graph the plan runs, recomputed copies included), chosen by measurement
    /// when the planner had a profile; `None` (or an empty list): the backend's own choice.
    /// Variants give the same bits, so this changes speed only.
    #[serde(default)]
    pub kernels: Vec<Option<String>>,
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
        if !matches!(options.storage, DType::F32 | DType::F16) {
            return Err(Error::Plan(format!(
                "activations are stored as f32 or f16, not {}",
                options.storage
            )));
        }
        if options.part_rows == 0 || options.parts.iter().any(|&(_, p)| p == 0) {
            return Err(Error::Plan("part sizes must be at least one row".into()));
        }
        if options.strips.is_some() && options.strategy != Strategy::ByParts {
            return Err(Error::Plan(format!(
                "column strips run by parts, not with strategy {}",
                options.strategy.name()
            )));
        }
        let graph = &*recompute::effective(graph, options)?;
        graph.validate()?;
        let mut plan = match options.strategy {
            Strategy::Naive | Strategy::LayerByLayer => {
                let (steps, capacity) = baseline::schedule(graph);
                finish(graph, options, steps, &capacity, options.strategy != Strategy::Naive)
            }
            Strategy::Published => {
                // `graph` is already rewritten for `options.recompute`: build on it as it is.
                let plain = PlanOptions { recompute: Vec::new(), strips: None, ..options.clone() };
                let path = crate::planner::search::published_path(graph, &plain)?;
                let last = path.last().cloned().unwrap_or(plain);
                let mut plan = Plan::build(graph, &last)?;
                plan.strategy = Strategy::Published;
                plan.options.strategy = Strategy::Published;
                plan.options.recompute.clone_from(&options.recompute);
                plan.options.strips.clone_from(&options.strips);
                return Ok(plan);
            }
            Strategy::ByParts => {
                let mut options = options.clone();
                let cuts = match options.cuts.take() {
                    Some(c) => c,
                    None => byparts::search_cuts(graph, &options)?,
                };
                options.cuts = Some(cuts);
                let (steps, capacity) = byparts::schedule(graph, &options)?;
                finish(graph, &options, steps, &capacity, true)
            }
        };
        plan.cuts = report::cuts(graph, &plan);
        plan.stages = report::stages(graph, &plan);
        Ok(plan)
    }

    /// Peak intermediate bytes (inputs and outputs excluded).
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }

    /// Bytes of the arena a session allocates for activations.
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes
    }

    /// Index of the buffer holding `value`, or an error naming the value.
    pub fn buffer_index(&self, value: ValueId) -> Result<usize> {
        self.value_buffer
            .get(value.0)
            .copied()
            .flatten()
            .filter(|&b| b < self.buffers.len())
            .ok_or_else(|| Error::Plan(format!("value {} has no buffer in the plan", value.0)))
    }

    /// The buffer holding `value`.
    pub fn buffer(&self, value: ValueId) -> Option<&Buffer> {
        self.value_buffer.get(value.0).copied().flatten().map(|b| &self.buffers[b])
    }

    /// Checks that this plan was built for `graph` (the model as given; recomputation is
    /// applied first).
    pub fn check_graph(&self, graph: &Graph) -> Result<()> {
        let fp = fingerprint(&*recompute::effective(graph, &self.options)?);
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
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a plan from JSON.
    pub fn from_json(s: &str) -> Result<Plan> {
        serde_json::from_str(s).map_err(|e| Error::Plan(format!("cannot read plan JSON: {e}")))
    }

    /// A human-readable report: totals, cuts, then every buffer.
    pub fn describe(&self) -> String {
        report::describe(self)
    }
}

/// Lifetimes, buffers, packing and peaks from a schedule and per-value capacities.
pub(super) fn finish(
    graph: &Graph,
    options: &PlanOptions,
    steps: Vec<Step>,
    capacity: &[usize],
    share: bool,
) -> Plan {
    let (mut buffers, value_buffer) = layout(graph, options, &steps, capacity, share);
    let interval =
        |b: &Buffer| arena::Interval { bytes: b.bytes, first: b.first_step, last: b.last_step };
    let all: Vec<arena::Interval> = buffers.iter().map(interval).collect();
    let mids: Vec<arena::Interval> =
        buffers.iter().filter(|b| b.role == BufferRole::Intermediate).map(interval).collect();
    let (offsets, arena_bytes) = arena::pack(&all, options.alignment);
    let (_, peak_bytes) = arena::pack(&mids, options.alignment);
    for (b, o) in buffers.iter_mut().zip(offsets) {
        b.offset = o;
    }
    Plan {
        strategy: options.strategy,
        options: options.clone(),
        fingerprint: fingerprint(graph),
        storage: options.storage,
        buffers,
        value_buffer,
        steps,
        arena_bytes,
        peak_bytes,
        peak_bytes_with_io: arena_bytes,
        live_peak_bytes: arena::live_peak(&mids),
        cuts: Vec::new(),
        stages: Vec::new(),
        kernels: Vec::new(),
    }
}

/// The most intermediate bytes (aligned as packing aligns them) live at one step of `steps`:
/// a lower bound of the packed `peak_bytes`, without the (quadratic) packing.
pub(super) fn live_peak_of(
    graph: &Graph,
    options: &PlanOptions,
    steps: &[Step],
    capacity: &[usize],
) -> usize {
    let (buffers, _) = layout(graph, options, steps, capacity, true);
    let mids: Vec<arena::Interval> = buffers
        .iter()
        .filter(|b| b.role == BufferRole::Intermediate)
        .map(|b| arena::Interval {
            bytes: arena::align_up(b.bytes, options.alignment),
            first: b.first_step,
            last: b.last_step,
        })
        .collect();
    arena::live_peak(&mids)
}

/// One buffer per activation the steps touch (offsets still 0), and each value's buffer.
fn layout(
    graph: &Graph,
    options: &PlanOptions,
    steps: &[Step],
    capacity: &[usize],
    share: bool,
) -> (Vec<Buffer>, Vec<Option<usize>>) {
    let storage = options.storage;
    // Values that pooling folds rows into stay f32: their partial results must not round.
    let mut folded = vec![false; graph.values.len()];
    for n in &graph.nodes {
        if n.op.fold(&graph.value(n.inputs[0]).shape).is_some() {
            folded[n.output().0] = true;
        }
    }
    let nv = graph.values.len();
    let (mut first, mut last) = (vec![usize::MAX; nv], vec![0usize; nv]);
    let mut touch = |v: ValueId, s: usize| {
        first[v.0] = first[v.0].min(s);
        last[v.0] = last[v.0].max(s);
    };
    for (s, step) in steps.iter().enumerate() {
        match step.kind {
            StepKind::Feed(k) => touch(graph.feed_value(k), s),
            StepKind::Drain(k) => touch(graph.outputs[k], s),
            StepKind::Fire(n) => {
                let node = graph.node(n);
                for v in graph.activation_inputs(node).chain(node.outputs.iter().copied()) {
                    // A view's rows live in its source's buffer.
                    touch(graph.source_of(v).0, s);
                }
            }
        }
    }
    let end = steps.len().saturating_sub(1);
    let mut value_buffer = vec![None; nv];
    let mut buffers = Vec::new();
    for (vi, v) in graph.values.iter().enumerate() {
        if v.is_constant() || first[vi] == usize::MAX {
            continue;
        }
        let id = ValueId(vi);
        let role = if graph.is_fed(id) {
            BufferRole::Input
        } else if graph.outputs.contains(&id) {
            BufferRole::Output
        } else {
            BufferRole::Intermediate
        };
        let dtype = if folded[vi] { DType::F32 } else { storage };
        let (planes, h, w) = row_geometry(&v.shape);
        let cap = capacity[vi].clamp(1, h.max(1));
        value_buffer[vi] = Some(buffers.len());
        buffers.push(Buffer {
            value: id,
            name: v.name.clone(),
            role,
            dims: v.shape.clone(),
            capacity: cap,
            bytes: planes * cap * w * dtype.size(),
            offset: 0,
            first_step: if share { first[vi] } else { 0 },
            last_step: if share { last[vi] } else { end },
            dtype,
        });
    }
    (buffers, value_buffer)
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
    for &v in
        graph.inputs.iter().chain(&graph.outputs).chain(graph.aliases.iter().map(|a| &a.value))
    {
        eat(&(v.0 as u64).to_le_bytes());
    }
    for w in &graph.views {
        for x in [w.value.0, w.source.0, w.column] {
            eat(&(x as u64).to_le_bytes());
        }
    }
    for c in graph.aliases.iter().filter_map(|a| a.columns) {
        eat(&(c[0] as u64).to_le_bytes());
        eat(&(c[1] as u64).to_le_bytes());
    }
    h
}
