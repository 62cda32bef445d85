//! A plan bound to a backend: weights uploaded once, one arena, and the executor that replays
//! the plan's steps. Running allocates nothing beyond the arena (see `run_into`).

use crate::backend::{Backend, Dims, Kernel, Operand, RowWindow, Scratch, WeightRef};
use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::ops::Op;
use crate::plan::{arena::align_up, Buffer, Plan, Step};
use crate::tensor::Tensor;

/// How a node input is bound at run time.
#[derive(Clone, Copy, Debug)]
enum Bound {
    /// Buffer index in the plan.
    Arena(usize),
    /// Uploaded weight.
    Weight(WeightRef),
}

/// What the executor keeps of a node.
#[derive(Clone, Debug)]
struct NodeExec {
    name: String,
    op: Op,
    inputs: Vec<Bound>,
    output: usize,
}

/// A model input or output as the caller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoInfo {
    /// Value name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    buffer: usize,
}

/// A plan ready to run on a backend.
#[derive(Debug)]
pub struct Session {
    backend: Box<dyn Backend>,
    nodes: Vec<NodeExec>,
    buffers: Vec<Buffer>,
    buffer_dims: Vec<Dims>,
    steps: Vec<Step>,
    inputs: Vec<IoInfo>,
    outputs: Vec<IoInfo>,
    scratch: Scratch,
    arena_bytes: usize,
    plan_peak_bytes: usize,
    /// Reused list of concat inputs (no allocation per firing).
    concat_inputs: Vec<RowWindow>,
}

impl Session {
    /// Binds `plan` (built for `graph`) to `backend`: uploads the weights and allocates the arena.
    pub fn new(graph: &Graph, plan: &Plan, mut backend: Box<dyn Backend>) -> Result<Session> {
        backend.check()?;
        plan.check_graph(graph)?;
        let dims_of = |shape: &[usize], what: &str| {
            Dims::new(shape).ok_or_else(|| Error::Unsupported {
                op: what.to_string(),
                node: String::new(),
                opset: graph.opset,
                reason: format!(
                    "tensors of rank {} (at most {} axes run)",
                    shape.len(),
                    crate::backend::MAX_RANK
                ),
            })
        };
        let mut weights: Vec<Option<WeightRef>> = vec![None; graph.values.len()];
        let mut nodes = Vec::with_capacity(graph.nodes.len());
        let mut max_inputs = 0;
        for n in &graph.nodes {
            let mut inputs = Vec::with_capacity(n.inputs.len());
            for &v in &n.inputs {
                let val = graph.value(v);
                let b = match &val.constant {
                    Some(t) => {
                        if weights[v.0].is_none() {
                            let id = backend.upload(t)?;
                            weights[v.0] =
                                Some(WeightRef { id, dims: dims_of(t.shape(), n.op.name())? });
                        }
                        Bound::Weight(weights[v.0].expect("uploaded above"))
                    }
                    None => Bound::Arena(buffer_index(plan, v)?),
                };
                inputs.push(b);
            }
            max_inputs = max_inputs.max(inputs.len());
            nodes.push(NodeExec {
                name: n.name.clone(),
                op: n.op.clone(),
                inputs,
                output: buffer_index(plan, n.output())?,
            });
        }
        let buffer_dims =
            plan.buffers.iter().map(|b| dims_of(&b.dims, "tensor")).collect::<Result<Vec<_>>>()?;
        let io = |ids: &[ValueId]| -> Result<Vec<IoInfo>> {
            ids.iter()
                .map(|&v| {
                    Ok(IoInfo {
                        name: graph.value(v).name.clone(),
                        shape: graph.value(v).shape.clone(),
                        buffer: buffer_index(plan, v)?,
                    })
                })
                .collect()
        };
        let mut s = Session {
            nodes,
            buffers: plan.buffers.clone(),
            buffer_dims,
            steps: plan.steps.clone(),
            inputs: io(&graph.inputs)?,
            outputs: io(&graph.outputs)?,
            scratch: Scratch::default(),
            arena_bytes: 0,
            plan_peak_bytes: plan.peak_bytes_with_io,
            concat_inputs: Vec::with_capacity(max_inputs),
            backend,
        };
        for b in &s.buffers {
            if b.offset + b.bytes > plan.arena_bytes {
                return Err(Error::Plan(format!("buffer '{}' lies outside the arena", b.name)));
            }
        }
        // Per-node preparation (weight repacking, pipeline compilation), over whole outputs.
        for node in &s.nodes {
            let (_, h, _) = s.buffer_dims[node.output].rows();
            let step = Step { node: crate::graph::NodeId(0), rows: [0, h] };
            let k = kernel_for(node, step, &s.buffers, &s.buffer_dims, &mut s.concat_inputs)?;
            s.backend.prepare(&k)?;
        }
        // Scratch: the most any single kernel call asks for, after the buffers.
        let mut workspace = 0;
        for i in 0..s.steps.len() {
            let step = s.steps[i];
            let k = kernel_for(
                &s.nodes[step.node.0],
                step,
                &s.buffers,
                &s.buffer_dims,
                &mut s.concat_inputs,
            )?;
            workspace = workspace.max(s.backend.workspace_bytes(&k));
        }
        let base = align_up(plan.arena_bytes, 64);
        s.scratch = Scratch { offset: base, bytes: workspace };
        s.arena_bytes = base + align_up(workspace, 64);
        s.backend.alloc_arena(s.arena_bytes)?;
        Ok(s)
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &str {
        self.backend.name()
    }

    /// Model inputs, in order.
    pub fn inputs(&self) -> &[IoInfo] {
        &self.inputs
    }

    /// Model outputs, in order.
    pub fn outputs(&self) -> &[IoInfo] {
        &self.outputs
    }

    /// Bytes of the arena: the plan's buffers plus kernel scratch.
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes
    }

    /// Scratch bytes reserved for kernels.
    pub fn workspace_bytes(&self) -> usize {
        self.scratch.bytes
    }

    /// The plan's peak including inputs and outputs (the arena without scratch).
    pub fn plan_bytes(&self) -> usize {
        self.plan_peak_bytes
    }

    /// Bytes the backend holds for weights.
    pub fn weight_bytes(&self) -> usize {
        self.backend.weight_bytes()
    }

    /// Runs the model, returning newly allocated outputs.
    pub fn run(&mut self, inputs: &[&[f32]]) -> Result<Vec<Tensor>> {
        let mut outs: Vec<Vec<f32>> =
            self.outputs.iter().map(|o| vec![0.0; o.shape.iter().product()]).collect();
        {
            let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
            self.run_into(inputs, &mut views)?;
        }
        Ok(outs
            .into_iter()
            .zip(&self.outputs)
            .map(|(d, o)| Tensor::from_f32(o.shape.clone(), d))
            .collect())
    }

    /// Runs the model into caller-provided output slices. Allocates nothing.
    pub fn run_into(&mut self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) -> Result<()> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::Input {
                name: self.inputs.first().map_or(String::new(), |i| i.name.clone()),
                reason: format!(
                    "the model takes {} inputs, {} given",
                    self.inputs.len(),
                    inputs.len()
                ),
            });
        }
        if outputs.len() != self.outputs.len() {
            return Err(Error::Input {
                name: "outputs".into(),
                reason: format!(
                    "the model has {} outputs, {} slices given",
                    self.outputs.len(),
                    outputs.len()
                ),
            });
        }
        for (info, data) in self.inputs.iter().zip(inputs) {
            let want: usize = info.shape.iter().product();
            if data.len() != want {
                return Err(Error::Input {
                    name: info.name.clone(),
                    reason: format!(
                        "expected {want} values for shape {:?}, got {}",
                        info.shape,
                        data.len()
                    ),
                });
            }
            let w = whole_window(&self.buffers[info.buffer], self.buffer_dims[info.buffer]);
            self.backend.write(&w, data)?;
        }
        for (info, data) in self.outputs.iter().zip(outputs.iter()) {
            let want: usize = info.shape.iter().product();
            if data.len() != want {
                return Err(Error::Input {
                    name: info.name.clone(),
                    reason: format!(
                        "output slice holds {} values, shape {:?} needs {want}",
                        data.len(),
                        info.shape
                    ),
                });
            }
        }
        for i in 0..self.steps.len() {
            let step = self.steps[i];
            let node = &self.nodes[step.node.0];
            let k =
                kernel_for(node, step, &self.buffers, &self.buffer_dims, &mut self.concat_inputs)?;
            self.backend.execute(&k, self.scratch).map_err(|e| match e {
                Error::Backend { backend, op, reason } => {
                    Error::Backend { backend, op: format!("{op} (node '{}')", node.name), reason }
                }
                other => other,
            })?;
        }
        self.backend.sync()?;
        for (info, data) in self.outputs.iter().zip(outputs.iter_mut()) {
            let w = whole_window(&self.buffers[info.buffer], self.buffer_dims[info.buffer]);
            self.backend.read(&w, data)?;
        }
        Ok(())
    }
}

fn buffer_index(plan: &Plan, v: ValueId) -> Result<usize> {
    plan.value_buffer
        .get(v.0)
        .copied()
        .flatten()
        .ok_or_else(|| Error::Plan(format!("value {} has no buffer in the plan", v.0)))
}

fn whole_window(b: &Buffer, dims: Dims) -> RowWindow {
    let (_, h, w) = dims.rows();
    RowWindow {
        offset: b.offset,
        dtype: crate::tensor::DType::F32,
        dims,
        capacity: b.capacity,
        row_stride: w,
        first_row: 0,
        rows: h,
    }
}

/// The window of buffer `b` covering rows `[first, first + rows)`.
fn window(b: &Buffer, dims: Dims, first: usize, rows: usize) -> RowWindow {
    RowWindow { first_row: first, rows, ..whole_window(b, dims) }
}

/// The kernel call for one step. Inputs are whole tensors in the baseline strategies.
fn kernel_for<'a>(
    node: &'a NodeExec,
    step: Step,
    buffers: &[Buffer],
    dims: &[Dims],
    concat_inputs: &'a mut Vec<RowWindow>,
) -> Result<Kernel<'a>> {
    let misbound = |i: usize, want: &str| {
        Error::Plan(format!(
            "input {i} of node '{}' ({}) must be {want}",
            node.name,
            node.op.name()
        ))
    };
    let arena = |i: usize| -> Result<RowWindow> {
        match node.inputs[i] {
            Bound::Arena(b) => Ok(whole_window(&buffers[b], dims[b])),
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
            Bound::Arena(b) => Operand::Arena(whole_window(&buffers[b], dims[b])),
        }
    };
    let y =
        window(&buffers[node.output], dims[node.output], step.rows[0], step.rows[1] - step.rows[0]);
    Ok(match &node.op {
        Op::Conv(op) => Kernel::Conv { op, x: arena(0)?, w: weight(1)?, b: opt_weight(2)?, y },
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
