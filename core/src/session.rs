//! A plan bound to a backend: weights uploaded once, one arena, and the executor that replays
//! the plan's steps. Each firing's windows come from the row maps; running allocates nothing
//! beyond the arena (see `run_into`).

use std::ops::Range;

use crate::backend::{Backend, Dims, Kernel, Operand, RowWindow, Scratch, WeightRef};
use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::ops::Op;
use crate::plan::{arena::align_up, verify, Buffer, Plan, Step, StepKind};
use crate::rows::RowMap;
use crate::tensor::{DType, Tensor};

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
    /// Row map of each input.
    maps: Vec<RowMap>,
    /// How it folds input rows into its output, for nodes firing on input rows (pooling).
    fold: Option<crate::rows::Fold>,
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

/// The buffers of a plan with their shapes, as the executor addresses them.
#[derive(Debug)]
struct Buffers {
    list: Vec<Buffer>,
    dims: Vec<Dims>,
}

impl Buffers {
    /// The window of buffer `b` covering tensor rows `rows`.
    fn window(&self, b: usize, rows: Range<usize>) -> RowWindow {
        let dims = self.dims[b];
        let (_, _, w) = dims.rows();
        RowWindow {
            offset: self.list[b].offset,
            dtype: DType::F32,
            dims,
            capacity: self.list[b].capacity,
            row_stride: w,
            first_row: rows.start,
            rows: rows.len(),
        }
    }

    fn height(&self, b: usize) -> usize {
        self.dims[b].rows().1
    }
}

/// A plan ready to run on a backend.
#[derive(Debug)]
pub struct Session {
    backend: Box<dyn Backend>,
    nodes: Vec<NodeExec>,
    buffers: Buffers,
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
    /// Binds `plan` (built for `graph`) to `backend`: checks the plan, uploads the weights and
    /// allocates the arena.
    pub fn new(graph: &Graph, plan: &Plan, mut backend: Box<dyn Backend>) -> Result<Session> {
        backend.check()?;
        verify::verify(graph, plan)?;
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
            let shapes: Vec<&[usize]> =
                n.inputs.iter().map(|&v| graph.value(v).shape.as_slice()).collect();
            let out_shape = &graph.value(n.output()).shape;
            let mut inputs = Vec::with_capacity(n.inputs.len());
            for &v in &n.inputs {
                let b = match &graph.value(v).constant {
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
                maps: (0..n.inputs.len()).map(|s| n.op.row_map(s, &shapes, out_shape)).collect(),
                fold: n.op.fold(shapes[0]),
                op: n.op.clone(),
                inputs,
                output: buffer_index(plan, n.output())?,
            });
        }
        let buffers = Buffers {
            dims: plan
                .buffers
                .iter()
                .map(|b| dims_of(&b.dims, "tensor"))
                .collect::<Result<Vec<_>>>()?,
            list: plan.buffers.clone(),
        };
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
            buffers,
            steps: plan.steps.clone(),
            inputs: io(&graph.inputs)?,
            outputs: io(&graph.outputs)?,
            scratch: Scratch::default(),
            arena_bytes: 0,
            plan_peak_bytes: plan.peak_bytes_with_io,
            concat_inputs: Vec::with_capacity(max_inputs),
            backend,
        };
        // Per-node preparation (weight repacking, pipeline compilation) on each node's first
        // firing, and scratch: the most any single firing asks for, placed after the buffers.
        let mut prepared = vec![false; s.nodes.len()];
        let mut workspace = 0;
        for i in 0..s.steps.len() {
            let Step { kind: StepKind::Fire(n), rows } = s.steps[i] else { continue };
            let k = kernel_for(&s.nodes[n.0], rows, &s.buffers, &mut s.concat_inputs)?;
            if !prepared[n.0] {
                s.backend.prepare(&k)?;
                prepared[n.0] = true;
            }
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
        self.check_io(inputs, outputs)?;
        for i in 0..self.steps.len() {
            let Step { kind, rows } = self.steps[i];
            match kind {
                StepKind::Feed(k) => {
                    let b = self.inputs[k].buffer;
                    let all = 0..self.buffers.height(b);
                    let w = self.buffers.window(b, rows[0]..rows[1]);
                    self.backend.write(&w, inputs[k], all)?;
                }
                StepKind::Drain(k) => {
                    let b = self.outputs[k].buffer;
                    let all = 0..self.buffers.height(b);
                    let w = self.buffers.window(b, rows[0]..rows[1]);
                    self.backend.sync()?;
                    self.backend.read(&w, outputs[k], all)?;
                }
                StepKind::Fire(n) => {
                    let node = &self.nodes[n.0];
                    let k = kernel_for(node, rows, &self.buffers, &mut self.concat_inputs)?;
                    self.backend.execute(&k, self.scratch).map_err(|e| match e {
                        Error::Backend { backend, op, reason } => Error::Backend {
                            backend,
                            op: format!("{op} (node '{}')", node.name),
                            reason,
                        },
                        other => other,
                    })?;
                }
            }
        }
        self.backend.sync()
    }

    fn check_io(&self, inputs: &[&[f32]], outputs: &[&mut [f32]]) -> Result<()> {
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
        }
        for (info, data) in self.outputs.iter().zip(outputs) {
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
        Ok(())
    }
}

fn buffer_index(plan: &Plan, v: ValueId) -> Result<usize> {
    plan.value_buffer
        .get(v.0)
        .copied()
        .flatten()
        .filter(|&b| b < plan.buffers.len())
        .ok_or_else(|| Error::Plan(format!("value {} has no buffer in the plan", v.0)))
}

/// The kernel call of one firing on `rows`: output rows, or input rows for accumulating nodes.
/// Input windows hold exactly the rows the row maps ask for.
fn kernel_for<'a>(
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
