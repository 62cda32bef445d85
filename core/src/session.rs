//! A plan bound to a backend: weights uploaded once, one arena, and the executor that replays
//! the plan's steps. Each firing's windows come from the row maps; running allocates nothing
//! beyond the arena (see `run_into`).

use crate::backend::{Backend, RowWindow, Scratch, WeightRef};
use crate::error::{Error, Result};
use crate::exec::{dims_of, kernel_for, Buffers, Layout, NodeExec};
use crate::graph::{Graph, ValueId};
use crate::plan::{arena::align_up, verify, Plan, Step, StepKind};
use crate::tensor::Tensor;

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
        let mut weights: Vec<Option<WeightRef>> = vec![None; graph.values.len()];
        let mut nodes = Vec::with_capacity(graph.nodes.len());
        for n in &graph.nodes {
            let mut upload = |v: ValueId, t: &Tensor| -> Result<WeightRef> {
                if let Some(w) = weights[v.0] {
                    return Ok(w);
                }
                let w = WeightRef {
                    id: backend.upload(t)?,
                    dims: dims_of(t.shape(), n.op.name(), graph.opset)?,
                };
                weights[v.0] = Some(w);
                Ok(w)
            };
            nodes.push(NodeExec::bind(graph, n, &|v| buffer_index(plan, v), &mut upload)?);
        }
        let max_inputs = nodes.iter().map(|n| n.inputs.len()).max().unwrap_or(0);
        let buffers = Buffers::new(
            plan.buffers
                .iter()
                .map(|b| {
                    Ok(Layout {
                        offset: b.offset,
                        capacity: b.capacity,
                        dims: dims_of(&b.dims, "tensor", graph.opset)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        );
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
