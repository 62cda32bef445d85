//! The executor's view of a plan: where each buffer lives, how each node's inputs are bound,
//! and the kernel call of one firing. Shared by the session and by kernel profiling, so that
//! what is timed is exactly what runs.

use std::ops::Range;

use crate::backend::{Backend, Dims, Kernel, Operand, RowWindow, Scratch, WeightRef};
use crate::error::{Error, Result};
use crate::graph::{Graph, Node, ValueId};
use crate::ops::Op;
use crate::plan::{arena::align_up, row_geometry, verify, Plan, Step, StepKind};
use crate::rows::{Fold, RowMap};
use crate::tensor::{DType, Tensor};

/// Dims of a runtime tensor, or an error for ranks beyond what kernels take.
pub(crate) fn dims_of(shape: &[usize], what: &str, opset: i64) -> Result<Dims> {
    Dims::new(shape).ok_or_else(|| Error::Unsupported {
        op: what.to_string(),
        node: String::new(),
        opset,
        reason: format!(
            "tensors of rank {} (at most {} axes run)",
            shape.len(),
            crate::backend::MAX_RANK
        ),
    })
}

/// Where one buffer lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// Byte offset in the arena.
    pub offset: usize,
    /// Rows held (ring capacity).
    pub capacity: usize,
    /// Shape of the whole tensor.
    pub dims: Dims,
    /// Storage type.
    pub dtype: DType,
    /// Elements between the starts of consecutive rows: the width, or a view's source's.
    pub row_stride: usize,
}

impl Layout {
    /// The layout of a plan's buffer.
    pub fn of(b: &crate::plan::Buffer, opset: i64) -> Result<Layout> {
        let dims = dims_of(&b.dims, "tensor", opset)?;
        let row_stride = dims.rows().2;
        Ok(Layout { offset: b.offset, capacity: b.capacity, dims, dtype: b.dtype, row_stride })
    }

    /// The layouts of `plan`'s buffers, then one per view of `graph` ([`Graph::views`]): its
    /// source's buffer seen from the view's first column, rows as long as the source's. With
    /// `offsets`, buffers sit there instead (a lane's arena). Returns the layouts and a
    /// function from values to their index.
    pub fn all<'p>(
        graph: &Graph,
        plan: &'p Plan,
        offsets: Option<&[usize]>,
    ) -> Result<(Vec<Layout>, impl Fn(ValueId) -> Result<usize> + 'p)> {
        let mut layouts =
            plan.buffers.iter().map(|b| Layout::of(b, graph.opset)).collect::<Result<Vec<_>>>()?;
        for (layout, &offset) in layouts.iter_mut().zip(offsets.unwrap_or(&[])) {
            layout.offset = offset;
        }
        let mut views = std::collections::HashMap::new();
        for w in &graph.views {
            let source = layouts[plan.buffer_index(w.source)?];
            let dims = dims_of(&graph.value(w.value).shape, "tensor", graph.opset)?;
            let offset = source.offset + w.column * source.dtype.size();
            views.insert(w.value, layouts.len());
            layouts.push(Layout { offset, dims, ..source });
        }
        let index = move |v: ValueId| match views.get(&v) {
            Some(&i) => Ok(i),
            None => plan.buffer_index(v),
        };
        Ok((layouts, index))
    }
}

/// The buffers of a plan, as the executor addresses them.
#[derive(Debug)]
pub(crate) struct Buffers {
    list: Vec<Layout>,
}

impl Buffers {
    pub fn new(list: Vec<Layout>) -> Buffers {
        Buffers { list }
    }

    /// The window of buffer `b` covering tensor rows `rows`.
    pub fn window(&self, b: usize, rows: Range<usize>) -> RowWindow {
        let l = &self.list[b];
        let (_, _, w) = l.dims.rows();
        RowWindow {
            offset: l.offset,
            dtype: l.dtype,
            dims: l.dims,
            capacity: l.capacity,
            row_stride: l.row_stride.max(w),
            first_row: rows.start,
            rows: rows.len(),
        }
    }

    /// Rows of the whole tensor in buffer `b`.
    pub fn height(&self, b: usize) -> usize {
        self.list[b].dims.rows().1
    }
}

/// Constants uploaded to a backend once each, however many nodes read them.
pub(crate) struct Uploads {
    refs: Vec<Option<WeightRef>>,
    opset: i64,
}

impl Uploads {
    pub fn new(graph: &Graph) -> Uploads {
        Uploads { refs: vec![None; graph.values.len()], opset: graph.opset }
    }

    /// The handle of constant `v`, uploading it on first use.
    pub fn get(&mut self, backend: &mut dyn Backend, v: ValueId, t: &Tensor) -> Result<WeightRef> {
        if let Some(w) = self.refs[v.0] {
            return Ok(w);
        }
        let w =
            WeightRef { id: backend.upload(t)?, dims: dims_of(t.shape(), "weight", self.opset)? };
        self.refs[v.0] = Some(w);
        Ok(w)
    }
}

/// How a node input is bound at run time.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bound {
    /// Buffer index.
    Arena(usize),
    /// Uploaded weight.
    Weight(WeightRef),
}

/// What the executor keeps of a node.
#[derive(Clone, Debug)]
pub(crate) struct NodeExec {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<Bound>,
    /// Row map of each input.
    pub maps: Vec<RowMap>,
    /// How it folds input rows into its output, for nodes firing on input rows (pooling).
    pub fold: Option<Fold>,
    /// Buffer index of the output.
    pub output: usize,
    /// Kernel variant (index into the backend's `variants`), `None`: the backend's choice.
    pub variant: Option<usize>,
}

impl NodeExec {
    /// Binds `node`: activations to the buffers `buffer_of` names, constants through `upload`.
    pub fn bind(
        graph: &Graph,
        node: &Node,
        buffer_of: &dyn Fn(ValueId) -> Result<usize>,
        upload: &mut dyn FnMut(ValueId, &Tensor) -> Result<WeightRef>,
    ) -> Result<NodeExec> {
        let shapes: Vec<&[usize]> =
            node.inputs.iter().map(|&v| graph.value(v).shape.as_slice()).collect();
        let out_shape = &graph.value(node.output()).shape;
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for &v in &node.inputs {
            inputs.push(match &graph.value(v).constant {
                Some(t) => Bound::Weight(upload(v, t)?),
                None => Bound::Arena(buffer_of(v)?),
            });
        }
        Ok(NodeExec {
            name: node.name.clone(),
            maps: (0..node.inputs.len()).map(|s| node.op.row_map(s, &shapes, out_shape)).collect(),
            fold: node.op.fold(shapes[0]),
            op: node.op.clone(),
            inputs,
            output: buffer_of(node.output())?,
            variant: None,
        })
    }
}

/// A plan bound to a backend's weights and arena layout: everything the step loop needs, so
/// that it can run on any backend it was bound to (owned by a session, or borrowed while
/// profiling).
#[derive(Debug)]
pub(crate) struct Program {
    nodes: Vec<NodeExec>,
    buffers: Buffers,
    steps: Vec<Step>,
    /// Per feed: the buffer it writes, the model input it copies, and for a column strip's
    /// feed the columns it takes (with the input's row geometry).
    /// `None` for a model input the plan never feeds (column strips feed their own columns).
    feeds: Vec<Option<(usize, usize, Option<StripFeed>)>>,
    /// A strip feed's rows, gathered from the caller's input (reused between feeds).
    gathered: Vec<f32>,
    outputs: Vec<usize>,
    scratch: Scratch,
    arena_bytes: usize,
    /// Reused list of concat inputs (no allocation per firing).
    concat_inputs: Vec<RowWindow>,
    /// One lane of a split plan: what it runs ([`Program::run_lane`]).
    execs: Option<Vec<crate::lanes::Exec>>,
    /// Blocks sent or received per channel this run.
    seq: Vec<usize>,
}

impl Program {
    /// Checks `plan`, uploads the weights to `backend`, lets it prepare each node, and sizes
    /// the scratch. The caller allocates `arena_bytes()` on the backend before running.
    pub fn bind(graph: &Graph, plan: &Plan, backend: &mut dyn Backend) -> Result<Program> {
        Program::bind_with(graph, plan, backend, &mut Uploads::new(graph))
    }

    /// [`Program::bind`] with weights already uploaded through `uploads` reused (the profiler
    /// binds a plan after timing the same model's kernels one by one).
    pub fn bind_with(
        graph: &Graph,
        plan: &Plan,
        backend: &mut dyn Backend,
        uploads: &mut Uploads,
    ) -> Result<Program> {
        Program::bind_part(graph, plan, backend, uploads, None)
    }

    /// [`Program::bind`] in two halves, for the whole plan or one lane of it (split by
    /// [`crate::lanes::split`]: only the lane's nodes' weights go to `backend`, its buffers at
    /// the lane's offsets): this one uploads the weights and lays out the buffers;
    /// [`Program::prepare`] then lets the backend prepare each node (weight repacking) and
    /// sizes the scratch. Between the two the caller may drop its own
    /// references to the weights (a backend that repacks one then holds it alone).
    pub fn upload_only(
        graph: &Graph,
        plan: &Plan,
        backend: &mut dyn Backend,
        lane: Option<&crate::lanes::Lane>,
    ) -> Result<Program> {
        Program::upload_part(graph, plan, backend, &mut Uploads::new(graph), lane)
    }

    fn bind_part(
        graph: &Graph,
        plan: &Plan,
        backend: &mut dyn Backend,
        uploads: &mut Uploads,
        lane: Option<&crate::lanes::Lane>,
    ) -> Result<Program> {
        let mut p = Program::upload_part(graph, plan, backend, uploads, lane)?;
        p.prepare(plan, backend, lane)?;
        Ok(p)
    }

    fn upload_part(
        graph: &Graph,
        plan: &Plan,
        backend: &mut dyn Backend,
        uploads: &mut Uploads,
        lane: Option<&crate::lanes::Lane>,
    ) -> Result<Program> {
        verify::verify(graph, plan)?;
        let graph = &*crate::plan::recompute::effective(graph, &plan.options)?;
        let (layouts, buffer_of) = Layout::all(graph, plan, lane.map(|l| l.offsets.as_slice()))?;
        // Recomputation adds values: handles of the original graph's do not index them.
        let mut fresh;
        let uploads = if uploads.refs.len() == graph.values.len() {
            uploads
        } else {
            fresh = Uploads::new(graph);
            &mut fresh
        };
        let mut nodes = Vec::with_capacity(graph.nodes.len());
        for (i, n) in graph.nodes.iter().enumerate() {
            let mine = lane.is_none_or(|l| l.nodes[i]);
            nodes.push(NodeExec::bind(graph, n, &buffer_of, &mut |v, t| {
                if mine {
                    uploads.get(backend, v, t)
                } else {
                    // The other lane's node: never fired here.
                    Ok(WeightRef {
                        id: crate::backend::WeightId(usize::MAX),
                        dims: dims_of(t.shape(), "weight", graph.opset)?,
                    })
                }
            })?);
        }
        let max_inputs = nodes.iter().map(|n| n.inputs.len()).max().unwrap_or(0);
        let p = Program {
            nodes,
            buffers: Buffers::new(layouts),
            steps: plan.steps.clone(),
            feeds: (0..graph.feeds())
                .map(|k| {
                    if plan.buffer(graph.feed_value(k)).is_none() {
                        return Ok(None);
                    }
                    let source = graph.feed_source(k);
                    let strip = graph.feed_columns(k).map(|columns| {
                        let (planes, rows, width) =
                            row_geometry(&graph.value(graph.inputs[source]).shape);
                        StripFeed { columns, planes, rows, width }
                    });
                    Ok(Some((buffer_of(graph.feed_value(k))?, source, strip)))
                })
                .collect::<Result<_>>()?,
            gathered: Vec::new(),
            outputs: graph.outputs.iter().map(|&v| buffer_of(v)).collect::<Result<_>>()?,
            scratch: Scratch::default(),
            arena_bytes: 0,
            concat_inputs: Vec::with_capacity(max_inputs),
            execs: None,
            seq: Vec::new(),
        };
        Ok(p)
    }

    /// The second half of binding (see [`Program::upload_only`]): the backend prepares each
    /// node, and the scratch goes after the buffers. `plan` and `lane` are the first half's.
    pub fn prepare(
        &mut self,
        plan: &Plan,
        backend: &mut dyn Backend,
        lane: Option<&crate::lanes::Lane>,
    ) -> Result<()> {
        // Per-node preparation (weight repacking, pipeline compilation) on each node's first
        // firing, and scratch: the most any single firing asks for, placed after the buffers.
        let mut prepared = vec![false; self.nodes.len()];
        let mut variants = vec![None; self.nodes.len()];
        let mut workspace = 0;
        for i in 0..self.steps.len() {
            let Step { kind: StepKind::Fire(n), rows } = self.steps[i] else { continue };
            if lane.is_some_and(|l| !l.nodes[n.0]) {
                continue;
            }
            let k = kernel_for(&self.nodes[n.0], rows, &self.buffers, &mut self.concat_inputs)?;
            if !prepared[n.0] {
                backend.prepare(&k)?;
                prepared[n.0] = true;
                // The plan names variants; a name this backend does not have leaves its choice.
                if let Some(Some(name)) = plan.kernels.get(n.0) {
                    variants[n.0] = backend.variants(&k).iter().position(|v| v == name);
                }
            }
            workspace = workspace.max(backend.workspace_bytes(&k));
        }
        for (node, v) in self.nodes.iter_mut().zip(variants) {
            node.variant = v;
        }
        let base = align_up(lane.map_or(plan.arena_bytes, |l| l.arena_bytes), 64);
        self.execs = lane.map(|l| l.execs.clone());
        self.scratch = Scratch { offset: base, bytes: workspace };
        self.arena_bytes = base + align_up(workspace, 64);
        Ok(())
    }

    /// Bytes of arena the program needs: buffers then scratch.
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes
    }

    /// Scratch bytes.
    pub fn workspace_bytes(&self) -> usize {
        self.scratch.bytes
    }

    /// Replays the steps on `backend` (whose arena this program was laid out for). Inputs and
    /// outputs are whole host tensors, already checked against the model's shapes.
    pub fn run(
        &mut self,
        backend: &mut dyn Backend,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<()> {
        for i in 0..self.steps.len() {
            self.step(i, backend, inputs, outputs)?;
        }
        backend.sync()
    }

    /// [`Program::run`], recording the seconds of each step in `seconds` (one per step; the
    /// backend is synchronised after each, so on a GPU this is slower than a run).
    pub fn run_timed(
        &mut self,
        backend: &mut dyn Backend,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        seconds: &mut [f64],
    ) -> Result<()> {
        for (i, s) in seconds.iter_mut().enumerate().take(self.steps.len()) {
            let t = std::time::Instant::now();
            self.step(i, backend, inputs, outputs)?;
            backend.sync()?;
            *s = t.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// Runs this lane of a split plan ([`Program::bind_lane`]) on `backend`, exchanging cut
    /// rows through `chans`. Outputs this lane does not produce may be empty slices.
    pub fn run_lane(
        &mut self,
        backend: &mut dyn Backend,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        chans: &crate::lanes::Channels,
        cuts: &[crate::lanes::Cut],
    ) -> Result<()> {
        use crate::lanes::Exec;
        let execs = self.execs.take().ok_or_else(|| Error::Plan("not a lane".into()))?;
        self.seq.clear();
        self.seq.resize(cuts.len(), 0);
        let mut run = || -> Result<()> {
            for e in &execs {
                match *e {
                    Exec::Step(i) => self.step(i, backend, inputs, outputs)?,
                    Exec::Send { chan, rows } => {
                        let w = self.buffers.window(cuts[chan].buffer, rows[0]..rows[1]);
                        let n = w.len();
                        backend.sync()?;
                        chans.send(chan, self.seq[chan], |slot| {
                            backend.read(&w, &mut slot[..n], rows[0]..rows[1])
                        })?;
                        self.seq[chan] += 1;
                    }
                    Exec::Recv { chan, rows } => {
                        let w = self.buffers.window(cuts[chan].buffer, rows[0]..rows[1]);
                        let n = w.len();
                        chans.recv(chan, self.seq[chan], |slot| {
                            backend.write(&w, &slot[..n], rows[0]..rows[1])
                        })?;
                        self.seq[chan] += 1;
                    }
                }
            }
            backend.sync()
        };
        let r = run();
        self.execs = Some(execs);
        if r.is_err() {
            chans.fail();
        }
        r
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    fn step(
        &mut self,
        i: usize,
        backend: &mut dyn Backend,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
    ) -> Result<()> {
        let Step { kind, rows } = self.steps[i];
        match kind {
            StepKind::Feed(k) => {
                let Some((b, source, strip)) = self.feeds[k] else {
                    return Err(Error::Plan(format!(
                        "the plan feeds input {k}, which it never holds"
                    )));
                };
                let w = self.buffers.window(b, rows[0]..rows[1]);
                match strip {
                    None => backend.write(&w, inputs[source], 0..self.buffers.height(b))?,
                    Some(strip) => {
                        strip.gather(inputs[source], rows, &mut self.gathered)?;
                        backend.write(&w, &self.gathered, rows[0]..rows[1])?;
                    }
                }
            }
            StepKind::Drain(k) => {
                let b = self.outputs[k];
                let w = self.buffers.window(b, rows[0]..rows[1]);
                backend.sync()?;
                backend.read(&w, outputs[k], 0..self.buffers.height(b))?;
            }
            StepKind::Fire(n) => {
                let node = &self.nodes[n.0];
                let k = kernel_for(node, rows, &self.buffers, &mut self.concat_inputs)?;
                backend.execute_variant(&k, node.variant, self.scratch).map_err(|e| match e {
                    Error::Backend { backend, op, reason } => Error::Backend {
                        backend,
                        op: format!("{op} (node '{}')", node.name),
                        reason,
                    },
                    other => other,
                })?;
            }
        }
        Ok(())
    }
}

/// A column strip's feed ([`crate::graph::Alias::columns`]): which columns of a model input
/// of `planes x rows x width` it copies.
#[derive(Clone, Copy, Debug)]
struct StripFeed {
    columns: [usize; 2],
    planes: usize,
    rows: usize,
    width: usize,
}

impl StripFeed {
    /// Rows `rows` of the strip's columns of every plane of `input` (the whole model input,
    /// plane after plane), into `out`, laid out as [`Backend::write`] reads them.
    fn gather(&self, input: &[f32], rows: [usize; 2], out: &mut Vec<f32>) -> Result<()> {
        let [c0, c1] = self.columns;
        if input.len() < self.planes * self.rows * self.width || rows[1] > self.rows {
            return Err(Error::Plan(format!(
                "a column strip's feed needs the whole input ({} planes of {}x{})",
                self.planes, self.rows, self.width
            )));
        }
        out.clear();
        for p in 0..self.planes {
            for r in rows[0]..rows[1] {
                let at = (p * self.rows + r) * self.width;
                out.extend_from_slice(&input[at + c0..at + c1]);
            }
        }
        Ok(())
    }
}

/// Scratch bytes `backend` would need to run `plan`: the most any firing asks for. Weights are
/// not uploaded (handles are placeholders): only shapes matter here.
pub(crate) fn workspace_bytes(graph: &Graph, plan: &Plan, backend: &dyn Backend) -> Result<usize> {
    lane_workspace_bytes(graph, plan, backend, None)
}

/// [`workspace_bytes`] over the firings of the nodes `lanes` marks (all without it).
pub(crate) fn lane_workspace_bytes(
    graph: &Graph,
    plan: &Plan,
    backend: &dyn Backend,
    lanes: Option<&[bool]>,
) -> Result<usize> {
    let graph = &*crate::plan::recompute::effective(graph, &plan.options)?;
    let (layouts, buffer_of) = Layout::all(graph, plan, None)?;
    let mut placeholder = |_: ValueId, t: &Tensor| -> Result<WeightRef> {
        Ok(WeightRef {
            id: crate::backend::WeightId(usize::MAX),
            dims: dims_of(t.shape(), "weight", graph.opset)?,
        })
    };
    let nodes = graph
        .nodes
        .iter()
        .map(|n| NodeExec::bind(graph, n, &buffer_of, &mut placeholder))
        .collect::<Result<Vec<_>>>()?;
    let buffers = Buffers::new(layouts);
    let mut concat = Vec::new();
    let mut most = 0;
    for s in &plan.steps {
        if let StepKind::Fire(n) = s.kind {
            if lanes.is_some_and(|l| !l[n.0]) {
                continue;
            }
            let k = kernel_for(&nodes[n.0], s.rows, &buffers, &mut concat)?;
            most = most.max(backend.workspace_bytes(&k));
        }
    }
    Ok(most)
}

/// Bytes a session allocates for `plan` on `backend`: the plan's arena, then scratch; for a
/// plan in two lanes, each lane's arena and scratch (on a one-thread fork of `backend`, as
/// the session runs them) and the channels between them.
pub fn session_bytes(graph: &Graph, plan: &Plan, backend: &dyn Backend) -> Result<usize> {
    if plan.options.lanes.is_empty() {
        return Ok(
            align_up(plan.arena_bytes, 64) + align_up(workspace_bytes(graph, plan, backend)?, 64)
        );
    }
    let effective = crate::plan::recompute::effective(graph, &plan.options)?;
    let split = crate::lanes::split(&effective, plan)?;
    let one = backend.fork(1)?;
    let mut total = split.channel_bytes();
    for lane in &split.lanes {
        let ws = lane_workspace_bytes(graph, plan, &*one, Some(&lane.nodes))?;
        total += align_up(lane.arena_bytes, 64) + align_up(ws, 64);
    }
    Ok(total)
}

/// The kernel call of one firing on `rows`: output rows, or input rows for accumulating nodes.
/// Input windows hold exactly the rows the row maps ask for.
pub(crate) fn kernel_for<'a>(
    node: &'a NodeExec,
    rows: [usize; 2],
    buffers: &Buffers,
    concat_inputs: &'a mut Vec<RowWindow>,
) -> Result<Kernel<'a>> {
    let [a, b] = rows;
    let misbound = |i: usize, want: &str| {
        Error::Plan(format!(
            "input {i} of node '{}' ({}) must be {want}",
            node.name,
            node.op.name()
        ))
    };
    let window = |i: usize, buf: usize| -> RowWindow {
        let (lo, hi) = node.maps[i].need(a, b, buffers.height(buf));
        buffers.window(buf, lo..hi)
    };
    let arena = |i: usize| -> Result<RowWindow> {
        match node.inputs[i] {
            Bound::Arena(buf) => Ok(window(i, buf)),
            Bound::Weight(_) => Err(misbound(i, "an activation")),
        }
    };
    let weight = |i: usize| -> Result<WeightRef> {
        match node.inputs[i] {
            Bound::Weight(w) => Ok(w),
            Bound::Arena(_) => Err(misbound(i, "a constant weight")),
        }
    };
    let opt_weight = |i: usize| -> Result<Option<WeightRef>> {
        if i < node.inputs.len() {
            weight(i).map(Some)
        } else {
            Ok(None)
        }
    };
    let operand = |i: usize| -> Operand {
        match node.inputs[i] {
            Bound::Weight(w) => Operand::Weight(w),
            Bound::Arena(buf) => Operand::Arena(window(i, buf)),
        }
    };
    let out = node.output;
    let y = match node.fold {
        Some(fold) => {
            let (lo, hi) = fold.touched(a, b, buffers.height(out));
            buffers.window(out, lo..hi)
        }
        None => buffers.window(out, a..b),
    };
    Ok(match &node.op {
        Op::Conv(op) => {
            let r = if op.residual { Some(arena(3)?) } else { None };
            Kernel::Conv { op, x: arena(0)?, w: weight(1)?, b: opt_weight(2)?, r, y }
        }
        Op::ConvTranspose(op) => {
            Kernel::ConvTranspose { op, x: arena(0)?, w: weight(1)?, b: opt_weight(2)?, y }
        }
        Op::Pool(op) => Kernel::Pool { op, x: arena(0)?, y },
        Op::GlobalAvgPool => Kernel::GlobalAvgPool { x: arena(0)?, y },
        Op::BatchNorm(bn) => {
            Kernel::Affine { act: bn.act, x: arena(0)?, scale: weight(1)?, shift: weight(2)?, y }
        }
        Op::Unary(act) => Kernel::Unary { act: *act, x: arena(0)?, y },
        Op::Binary(op) => Kernel::Binary { op, a: operand(0), b: operand(1), y },
        Op::Concat(c) => {
            concat_inputs.clear();
            for i in 0..node.inputs.len() {
                concat_inputs.push(arena(i)?);
            }
            Kernel::Concat { axis: c.axis, xs: concat_inputs.as_slice(), y }
        }
        Op::Reshape(_) | Op::Materialize => Kernel::Copy { x: operand(0), y },
        Op::Transpose(t) => Kernel::Transpose { perm: &t.perm, x: arena(0)?, y },
        Op::Resize(op) => Kernel::Resize { op, x: arena(0)?, y },
        Op::Gemm(op) => Kernel::Gemm { op, a: arena(0)?, b: weight(1)?, c: opt_weight(2)?, y },
        Op::MatMul(op) => Kernel::MatMul { op, a: operand(0), b: operand(1), y },
        Op::Reduce(op) => Kernel::Reduce { op, x: arena(0)?, y },
        Op::Softmax(op) => Kernel::Softmax { op, x: arena(0)?, y },
    })
}
