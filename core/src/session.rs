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
    /// The second lane of a two-lane session (`program` and `backend` are then the first).
    back: Option<Back>,
    inputs: Vec<IoInfo>,
    outputs: Vec<IoInfo>,
    plan_peak_bytes: usize,
}

/// The second lane of a two-lane session and what the lanes share.
#[derive(Debug)]
struct Back {
    backend: Box<dyn Backend>,
    program: Program,
    chans: crate::lanes::Channels,
    cuts: Vec<crate::lanes::Cut>,
    channel_bytes: usize,
    /// Outputs the second lane drains.
    drains: Vec<bool>,
}

/// Marks the run failed if its lane's thread panics, so that the other lane stops waiting.
struct PanicGuard<'a>(&'a crate::lanes::Channels);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail();
        }
    }
}

/// A session between its two halves of binding: weights uploaded, nodes not yet prepared.
struct Uploaded {
    backend: Box<dyn Backend>,
    program: Program,
    back: Option<UploadedBack>,
    inputs: Vec<IoInfo>,
    outputs: Vec<IoInfo>,
}

/// Two lanes: the second lane's backend and program, the split, which outputs it drains.
struct UploadedBack {
    backend: Box<dyn Backend>,
    program: Program,
    split: crate::lanes::Split,
    drains: Vec<bool>,
}

impl Session {
    /// Binds `plan` (built for `graph`) to `backend`: checks the plan, uploads the weights and
    /// allocates the arena.
    pub fn new(graph: &Graph, plan: &Plan, backend: Box<dyn Backend>) -> Result<Session> {
        let (lanes, threads) = Session::plan_lanes(plan);
        Session::with_lanes(graph, plan, backend, lanes, threads)
    }

    /// Lanes and threads per lane of a plain session of `plan`: one lane (`usize::MAX`: the
    /// backend's threads), or the two lanes the planner chose (one thread each, as it priced
    /// them).
    pub fn plan_lanes(plan: &Plan) -> (usize, usize) {
        if plan.options.lanes.is_empty() {
            (1, usize::MAX)
        } else {
            (2, 1)
        }
    }

    /// [`Session::new`] with the plan's nodes in `lanes` lanes (1 or 2; the plan's own choice
    /// of lanes, [`crate::plan::PlanOptions::lanes`], is where they flip): with two, each
    /// node runs in one of two threads (placed by a simulation of the plan's steps), each
    /// thread on a backend forked from `backend` ([`Backend::fork`], `threads_per_lane`
    /// threads each) with its own arena; rows read across lanes go through host channels.
    /// A two-lane run starts a scoped thread (it allocates, unlike one lane's).
    /// The same bits as one lane; more memory (both arenas, both scratches, the channels:
    /// [`Session::arena_bytes`] counts them all).
    pub fn with_lanes(
        graph: &Graph,
        plan: &Plan,
        backend: Box<dyn Backend>,
        lanes: usize,
        threads_per_lane: usize,
    ) -> Result<Session> {
        Session::upload(graph, plan, backend, lanes, threads_per_lane)?.finish(plan)
    }

    /// [`Session::with_lanes`] that takes the weights out of `graph` once the backend holds
    /// them, before it prepares the nodes: `graph` keeps its values, shapes and names but no
    /// constants (it can no longer be planned or bound). A backend that repacks a weight (the
    /// CPU backend's convolutions) then frees the original as it repacks, where beside the
    /// caller's copy the process would hold both: the `frugal` CLI's sessions are made so.
    pub fn with_lanes_taking_weights(
        graph: &mut Graph,
        plan: &Plan,
        backend: Box<dyn Backend>,
        lanes: usize,
        threads_per_lane: usize,
    ) -> Result<Session> {
        let uploaded = Session::upload(graph, plan, backend, lanes, threads_per_lane)?;
        for v in &mut graph.values {
            v.constant = None;
        }
        uploaded.finish(plan)
    }

    /// The first half of binding: checks, lanes, uploads.
    fn upload(
        graph: &Graph,
        plan: &Plan,
        backend: Box<dyn Backend>,
        lanes: usize,
        threads_per_lane: usize,
    ) -> Result<Uploaded> {
        backend.check()?;
        let io = |ids: &[ValueId]| -> Vec<IoInfo> {
            ids.iter()
                .map(|&v| IoInfo {
                    name: graph.value(v).name.clone(),
                    shape: graph.value(v).shape.clone(),
                })
                .collect()
        };
        let (inputs, outputs) = (io(&graph.inputs), io(&graph.outputs));
        match lanes {
            1 => {
                let mut backend = backend;
                let program = Program::upload_only(graph, plan, &mut *backend, None)?;
                return Ok(Uploaded { backend, program, back: None, inputs, outputs });
            }
            2 => {}
            n => {
                return Err(Error::Plan(format!("{n} lanes: a session runs 1 or 2")));
            }
        }
        let effective = crate::plan::recompute::effective(graph, &plan.options)?;
        let split = crate::lanes::split(&effective, plan)?;
        let mut first = backend.fork(threads_per_lane)?;
        let mut back = backend.fork(threads_per_lane)?;
        drop(backend);
        let program = Program::upload_only(graph, plan, &mut *first, Some(&split.lanes[0]))?;
        let back_program = Program::upload_only(graph, plan, &mut *back, Some(&split.lanes[1]))?;
        let drains = (0..graph.outputs.len())
            .map(|k| {
                split.lanes[1].execs.iter().any(|e| {
                    matches!(e, crate::lanes::Exec::Step(i)
                        if plan.steps[*i].kind == crate::plan::StepKind::Drain(k))
                })
            })
            .collect();
        Ok(Uploaded {
            backend: first,
            program,
            back: Some(UploadedBack { backend: back, program: back_program, split, drains }),
            inputs,
            outputs,
        })
    }
}

impl Uploaded {
    /// The second half of binding: the backends prepare the nodes, the arenas are allocated.
    fn finish(self, plan: &Plan) -> Result<Session> {
        let Uploaded { mut backend, mut program, back, inputs, outputs } = self;
        let lane = back.as_ref().map(|b| &b.split.lanes[0]);
        program.prepare(plan, &mut *backend, lane)?;
        backend.alloc_arena(program.arena_bytes())?;
        let back = match back {
            None => None,
            Some(UploadedBack { backend: mut back, program: mut back_program, split, drains }) => {
                back_program.prepare(plan, &mut *back, Some(&split.lanes[1]))?;
                back.alloc_arena(back_program.arena_bytes())?;
                Some(Back {
                    backend: back,
                    program: back_program,
                    chans: crate::lanes::Channels::new(&split)?,
                    channel_bytes: split.channel_bytes(),
                    cuts: split.cuts,
                    drains,
                })
            }
        };
        Ok(Session {
            backend,
            program,
            back,
            inputs,
            outputs,
            plan_peak_bytes: plan.peak_bytes_with_io,
        })
    }
}

impl Session {
    /// Lanes the session runs in (1 or 2).
    pub fn lanes(&self) -> usize {
        if self.back.is_some() {
            2
        } else {
            1
        }
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

    /// Bytes of the arena: the plan's buffers plus kernel scratch (two lanes: both arenas and
    /// the channels between them).
    pub fn arena_bytes(&self) -> usize {
        self.program.arena_bytes()
            + self.back.as_ref().map_or(0, |b| b.program.arena_bytes() + b.channel_bytes)
    }

    /// Scratch bytes reserved for kernels (both lanes').
    pub fn workspace_bytes(&self) -> usize {
        self.program.workspace_bytes()
            + self.back.as_ref().map_or(0, |b| b.program.workspace_bytes())
    }

    /// The plan's peak including inputs and outputs (the arena without scratch).
    pub fn plan_bytes(&self) -> usize {
        self.plan_peak_bytes
    }

    /// Bytes the backend holds for weights (both lanes').
    pub fn weight_bytes(&self) -> usize {
        self.backend.weight_bytes() + self.back.as_ref().map_or(0, |b| b.backend.weight_bytes())
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
        let Some(back) = &mut self.back else {
            return self.program.run(&mut *self.backend, inputs, outputs);
        };
        // Each lane gets the outputs it drains (the others as empty slices).
        let mut first_outs: Vec<&mut [f32]> = Vec::with_capacity(outputs.len());
        let mut back_outs: Vec<&mut [f32]> = Vec::with_capacity(outputs.len());
        for (o, &theirs) in outputs.iter_mut().zip(&back.drains) {
            let o = &mut **o;
            if theirs {
                back_outs.push(o);
                first_outs.push(&mut []);
            } else {
                first_outs.push(o);
                back_outs.push(&mut []);
            }
        }
        back.chans.reset();
        let (first, first_be) = (&mut self.program, &mut self.backend);
        let (chans, cuts) = (&back.chans, back.cuts.as_slice());
        std::thread::scope(|s| {
            let lane = s.spawn(move || {
                let _guard = PanicGuard(chans);
                first.run_lane(&mut **first_be, inputs, &mut first_outs, chans, cuts)
            });
            let r = {
                let _guard = PanicGuard(chans);
                back.program.run_lane(&mut *back.backend, inputs, &mut back_outs, chans, cuts)
            };
            if r.is_err() {
                chans.fail();
            }
            let f = lane.join().unwrap_or_else(|_| {
                Err(Error::Plan("the first lane of a two-lane run panicked".into()))
            });
            f.and(r)
        })
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
        if self.back.is_some() {
            return Err(Error::Plan(
                "steps are timed one lane at a time: time them with one lane (--lanes 1)".into(),
            ));
        }
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
