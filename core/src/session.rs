//! A plan bound to a backend: weights uploaded once, one arena, and the executor that replays
//! the plan's steps. Each firing's windows come from the row maps; running allocates nothing
//! beyond the arena (see `run_into`).

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::exec::Program;
use crate::graph::{Graph, ValueId};
use crate::plan::Plan;
use crate::tensor::Tensor;

/// A model input or output as the caller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoInfo {
    /// Value name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// A plan ready to run on a backend.
#[derive(Debug)]
pub struct Session {
    backend: Box<dyn Backend>,
    program: Program,
    inputs: Vec<IoInfo>,
    outputs: Vec<IoInfo>,
    plan_peak_bytes: usize,
}

impl Session {
    /// Binds `plan` (built for `graph`) to `backend`: checks the plan, uploads the weights and
    /// allocates the arena.
    pub fn new(graph: &Graph, plan: &Plan, mut backend: Box<dyn Backend>) -> Result<Session> {
        backend.check()?;
        let program = Program::bind(graph, plan, &mut *backend)?;
        backend.alloc_arena(program.arena_bytes())?;
        let io = |ids: &[ValueId]| -> Vec<IoInfo> {
            ids.iter()
                .map(|&v| IoInfo {
                    name: graph.value(v).name.clone(),
                    shape: graph.value(v).shape.clone(),
                })
                .collect()
        };
        Ok(Session {
            backend,
            program,
            inputs: io(&graph.inputs),
            outputs: io(&graph.outputs),
            plan_peak_bytes: plan.peak_bytes_with_io,
        })
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
        self.program.arena_bytes()
    }

    /// Scratch bytes reserved for kernels.
    pub fn workspace_bytes(&self) -> usize {
        self.program.workspace_bytes()
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
        let mut outs: Vec<Vec<f32>> = self
            .outputs
            .iter()
            .map(|o| crate::limits::try_zeroed("a model output", o.shape.iter().product()))
            .collect::<Result<_>>()?;
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
        self.program.run(&mut *self.backend, inputs, outputs)
    }

    /// [`Session::run_into`], recording each step's seconds in `seconds` (one per
    /// [`Session::steps`] entry). The backend is synchronised after every step, so on a GPU the
    /// run is slower than [`Session::run_into`]; on the CPU each step is timed in place, with
    /// whatever the steps before it left in the caches (what `frugal bench --per-node` shows).
    pub fn run_timed_into(
        &mut self,
        inputs: &[&[f32]],
        outputs: &mut [&mut [f32]],
        seconds: &mut [f64],
    ) -> Result<()> {
        self.check_io(inputs, outputs)?;
        if seconds.len() != self.program.steps().len() {
            return Err(Error::Input {
                name: "seconds".into(),
                reason: format!(
                    "the plan has {} steps, {} timings given",
                    self.program.steps().len(),
                    seconds.len()
                ),
            });
        }
        self.program.run_timed(&mut *self.backend, inputs, outputs, seconds)
    }

    /// The plan's steps, in the order a run executes them.
    pub fn steps(&self) -> &[crate::plan::Step] {
        self.program.steps()
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
