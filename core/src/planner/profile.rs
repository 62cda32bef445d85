//! The planner's cost model: kernel timings measured on this machine, for the shapes and part
//! sizes a model needs, and a prediction of any plan's run time from them.
//!
//! Each node is timed at a ladder of part sizes (1, 2, 4, ... rows, and all of them), exactly
//! as the executor calls it: same windows, same ring capacities, same kernel. A plan's time is
//! the sum over its steps of the interpolated kernel time plus a measured per-step overhead,
//! plus, per firing, what a firing costs in a real run beyond its kernel timed alone: timed
//! alone, a kernel finds its weights and data in cache; in a run, the other nodes' firings in
//! between have evicted them (ResNet-50's one-row plan re-reads its low-resolution stages'
//! weights once per row: about a gigabyte per run, estimated from the layer sizes; layer by
//! layer, MobileNetV2's early layers stream megabytes through memory that a kernel timed alone
//! keeps in cache: 2-thread runs took 30-40% longer than the kernels' sum).
//! That cost is measured once per model at both ends of the part sizes, on its one-row plan and
//! on its layer-by-layer plan, step by step, and interpolated in between.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Scratch};
use crate::error::{Error, Result};
use crate::exec::{dims_of, kernel_for, Buffers, Layout, NodeExec, Uploads};
use crate::graph::{Graph, GraphBuilder, NodeId, ValueId};
use crate::ops::Activation;
use crate::plan::{arena::align_up, row_geometry, Plan, PlanOptions, StepKind, Strategy};
use crate::tensor::DType;

/// Bumped whenever the executor or the profile format changes; the backend's
/// `Capabilities::kernels` covers kernel changes.
pub const REVISION: &str = concat!(env!("CARGO_PKG_VERSION"), "-k10");

/// The revision a profile measured on `backend` now carries: frugal's [`REVISION`] and the
/// backend's kernel identity.
pub fn revision_of(backend: &dyn Backend) -> String {
    let kernels = backend.capabilities().kernels;
    if kernels.is_empty() {
        REVISION.to_string()
    } else {
        format!("{REVISION}+{kernels}")
    }
}

/// Measured timings of one backend on one machine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// [`revision_of`] the backend when measured; profiles of another revision are measured
    /// again.
    #[serde(default)]
    pub revision: String,
    /// The backend and device the timings come from (`Capabilities::device`).
    pub device: String,
    /// Seconds the executor spends per step besides the kernel (windows, dispatch, copies of
    /// single rows), measured on a trivial plan.
    pub step_overhead: f64,
    /// Per kernel signature: `(rows, seconds)` pairs sorted by rows.
    pub kernels: BTreeMap<String, Vec<(usize, f64)>>,
    /// Per kernel signature: seconds one firing takes in a run beyond the kernel's time alone;
    /// also per signature and [`SERIAL`] variant (`signature#serial`), whose firings leave
    /// their data on one core.
    #[serde(default)]
    pub cold: BTreeMap<String, InRun>,
    /// What f16 storage adds to a firing on this backend (converting the windows a call reads
    /// and writes), where the backend stores f16; `None` until measured.
    #[serde(default)]
    pub f16_staging: Option<Staging>,
}

/// The cost of f16 storage per firing: `per_element` seconds for each element of the f16
/// windows a call reads or writes, plus `per_run` for each run of consecutive rows (a plane's
/// rows where its ring does not wrap). Measured as the difference between an elementwise
/// kernel on f16 and on f32 windows, on wide planes (few runs) and narrow ones (many).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Staging {
    pub per_element: f64,
    pub per_run: f64,
}

/// The kernel variant a backend may offer that runs the kernel on the calling thread alone.
/// Its in-run cost is measured on its own ([`Profile::cold`]): a one-row firing split across
/// cores pays for moving the rows its neighbours wrote (1-1.8 us per firing on a 2-core Xeon
/// VM, against 0.1-0.2 us on one thread), which its time alone does not show.
pub const SERIAL: &str = "serial";

/// What one firing of a kernel costs in a run beyond its time alone (seconds, at least 0), at
/// both ends of the part sizes: measured as the median of a step's in-run times less the
/// kernel's fastest time alone, so a prediction prices a typical run, not one where every step
/// was at its luckiest (with 2 threads the fastest steps summed came 18% under the fastest
/// whole run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InRun {
    /// Per one-row firing, on the model's one-row by-parts plan.
    pub one_row: f64,
    /// Per whole-tensor firing, on the model's layer-by-layer plan.
    pub whole: f64,
}

impl InRun {
    /// The cost of a firing of `rows` of a node's `limit` rows: linear between the ends (a
    /// node that fires once either way takes their mean).
    pub fn at(&self, rows: usize, limit: usize) -> f64 {
        let f =
            if limit > 1 { (rows.clamp(1, limit) - 1) as f64 / (limit - 1) as f64 } else { 0.5 };
        self.one_row + f * (self.whole - self.one_row)
    }
}

/// The signature a kernel's timings are filed under: operator, parameters and shapes.
pub fn kernel_key(graph: &Graph, node: NodeId) -> String {
    let n = graph.node(node);
    let shapes: Vec<&[usize]> = n.inputs.iter().map(|&v| graph.value(v).shape.as_slice()).collect();
    format!("{:?} {:?} -> {:?}", n.op, shapes, graph.value(n.output()).shape)
}

/// Every node's [`kernel_key`], worked out once for the many lookups of a prediction or a
/// search: formatting the keys anew for each lookup was a tenth of the planner's time.
#[derive(Debug)]
pub struct Keys(Vec<String>);

impl Keys {
    pub fn of(graph: &Graph) -> Keys {
        Keys((0..graph.nodes.len()).map(|i| kernel_key(graph, NodeId(i))).collect())
    }

    fn get(&self, node: NodeId) -> &str {
        &self.0[node.0]
    }
}

/// Rows a node's firings count: output rows, or input rows for ops that fold.
pub fn firing_rows(graph: &Graph, node: NodeId) -> usize {
    let n = graph.node(node);
    let x = graph.value(n.inputs[0]);
    match n.op.fold(&x.shape) {
        Some(_) => row_geometry(&x.shape).1,
        None => row_geometry(&graph.value(n.output()).shape).1,
    }
}

/// Part sizes a node is timed at: powers of two below its row count, and the row count.
pub fn ladder(limit: usize) -> Vec<usize> {
    let mut v: Vec<usize> =
        std::iter::successors(Some(1usize), |&r| Some(r * 2)).take_while(|&r| r < limit).collect();
    v.push(limit.max(1));
    v
}

/// How often `plan` fires each node on each part size: `(node, rows) -> firings` (firings of
/// one node on one part size cost the same).
fn firings(plan: &Plan) -> BTreeMap<(usize, usize), usize> {
    let mut fired = BTreeMap::new();
    for s in &plan.steps {
        if let StepKind::Fire(n) = s.kind {
            *fired.entry((n.0, s.rows[1] - s.rows[0])).or_default() += 1;
        }
    }
    fired
}

impl Profile {
    /// Reads a profile saved with [`Profile::save`].
    pub fn load(path: &Path) -> Result<Profile> {
        let s =
            std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.into(), cause: e })?;
        serde_json::from_str(&s)
            .map_err(|e| Error::Plan(format!("cannot read profile {}: {e}", path.display())))
    }

    /// Writes the profile as JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.into(), cause: e })?;
        }
        let s = serde_json::to_string_pretty(self).unwrap_or_default();
        // Write then rename, so a reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, s).map_err(|e| Error::Io { path: tmp.clone(), cause: e })?;
        std::fs::rename(&tmp, path).map_err(|e| Error::Io { path: path.into(), cause: e })
    }

    /// The (node, rows) timings `graph` needs that this profile lacks.
    pub fn missing(&self, graph: &Graph) -> Vec<(NodeId, usize)> {
        let mut out = Vec::new();
        // Identical layers share a signature: time each one once.
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..graph.nodes.len() {
            let key = kernel_key(graph, NodeId(i));
            let have = self.kernels.get(&key);
            for r in ladder(firing_rows(graph, NodeId(i))) {
                if !have.is_some_and(|v| v.iter().any(|&(rows, _)| rows == r))
                    && seen.insert((key.clone(), r))
                {
                    out.push((NodeId(i), r));
                }
            }
        }
        out
    }

    /// Drops every timing of `graph`'s kernels (all variants, in-run costs), so that the next
    /// [`Profile::measure`] takes them again; other models' timings stay.
    pub fn forget(&mut self, graph: &Graph) {
        for i in 0..graph.nodes.len() {
            let key = kernel_key(graph, NodeId(i));
            let variants = format!("{key}#");
            self.kernels.retain(|k, _| *k != key && !k.starts_with(&variants));
            self.cold.retain(|k, _| *k != key && !k.starts_with(&variants));
        }
    }

    /// Measures what `graph` needs and this profile lacks on `backend`; `progress(done, total)`
    /// is called after each measurement.
    pub fn measure(
        &mut self,
        graph: &Graph,
        backend: &mut dyn Backend,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let device = backend.capabilities().device;
        if self.device.is_empty() {
            self.device = device;
        }
        self.revision = revision_of(backend);
        if self.step_overhead == 0.0 {
            self.step_overhead = measure_step_overhead(backend)?;
        }
        if self.f16_staging.is_none() {
            // Zero where the backend has no f16 storage: measured, nothing to add.
            self.f16_staging = Some(measure_staging(backend)?.unwrap_or_default());
        }
        let todo = self.missing(graph);
        let mut uploads = Uploads::new(graph);
        // Two passes over every kernel, the faster of each kept: one kernel's batches take a
        // few milliseconds, and a shared machine's slow spells last seconds, so a single pass
        // let a spell inflate the kernels it covered (2-thread predictions came out 15-20%
        // above the runs they priced). The second timing of a kernel comes a whole pass later.
        // The in-run timings ([`Profile::cold`]) are taken after each pass, for the same
        // reason, and compared with the kernels' final times at the end.
        const PASSES: usize = 2;
        // The one-row and layer-by-layer plans whose in-run step times give the in-run costs,
        // if some are missing, and the one-row plan with every node on one thread where the
        // backend can (a plan's variant names that a node lacks leave it the default).
        let mut cold = if self.lacks_cold(graph) {
            let one_row = Plan::build(graph, &PlanOptions::new(Strategy::ByParts))?;
            let names = vec![Some(SERIAL.to_string()); graph.nodes.len()];
            let serial = Plan { kernels: names, ..one_row.clone() };
            vec![one_row, Plan::build(graph, &PlanOptions::new(Strategy::LayerByLayer))?, serial]
        } else {
            vec![]
        };
        let mut steps: Vec<Vec<f64>> = Vec::new();
        // Whether the backend queues its steps (a GPU): see [`deflate`].
        let mut queued = false;
        let mut best: Vec<Vec<(Option<&'static str>, f64)>> = Vec::with_capacity(todo.len());
        for pass in 0..PASSES {
            for (k, &(node, rows)) in todo.iter().enumerate() {
                let times = time_kernel(graph, node, rows, backend, &mut uploads, DType::F32)?;
                match best.get_mut(k) {
                    None => best.push(times),
                    Some(b) => {
                        for (b, (variant, t)) in b.iter_mut().zip(times) {
                            debug_assert_eq!(b.0, variant);
                            b.1 = b.1.min(t);
                        }
                    }
                }
                progress(pass * todo.len() + k + 1, PASSES * todo.len());
            }
            // Where no node has a one-thread variant (one thread, or such a backend), the
            // serial plan would be the one-row plan again: not timed.
            if pass == 0 {
                let timed = best.iter().flatten().any(|t| t.0 == Some(SERIAL));
                let cached = (0..graph.nodes.len())
                    .any(|i| self.variants_of(graph, NodeId(i)).iter().any(|v| v == SERIAL));
                if !timed && !cached {
                    cold.truncate(2);
                }
            }
            for (p, plan) in cold.iter().enumerate() {
                let (t, deflated) = time_steps(graph, plan, backend, &mut uploads)?;
                queued |= deflated;
                match steps.get_mut(p) {
                    None => steps.push(t),
                    Some(s) => s.iter_mut().zip(&t).for_each(|(a, b)| *a = a.min(*b)),
                }
            }
        }
        for (&(node, rows), times) in todo.iter().zip(best) {
            for (variant, t) in times {
                let key = variant_key(&kernel_key(graph, node), variant);
                let entry = self.kernels.entry(key).or_default();
                entry.push((rows, t));
                entry.sort_by_key(|&(r, _)| r);
            }
        }
        drop(uploads);
        if let ([one_row, whole, serial @ ..], [s1, sw, ss @ ..]) = (&cold[..], &steps[..]) {
            let e1 = self.excess(graph, one_row, s1, None, queued);
            let ew = self.excess(graph, whole, sw, None, queued);
            let es = match (serial, ss) {
                ([plan], [steps]) => self.excess(graph, plan, steps, Some(SERIAL), queued),
                _ => BTreeMap::new(),
            };
            for i in 0..graph.nodes.len() {
                let key = kernel_key(graph, NodeId(i));
                // Nodes that never fire (none in practice) still count as measured.
                let at = |e: &BTreeMap<String, f64>| e.get(&key).copied().unwrap_or(0.0);
                let cost = InRun { one_row: at(&e1), whole: at(&ew) };
                self.cold.insert(key.clone(), cost);
                // Whole firings stream their data from memory on one core or two alike.
                if let Some(&one_row) = es.get(&key) {
                    self.cold.insert(variant_key(&key, Some(SERIAL)), InRun { one_row, ..cost });
                }
            }
        }
        Ok(())
    }

    /// Seconds one firing of `node` on `rows` rows costs in a run beyond its kernel alone (0 if
    /// unmeasured).
    pub fn in_run_cost(&self, graph: &Graph, node: NodeId, rows: usize) -> f64 {
        self.variant_in_run_cost(graph, node, None, rows)
    }

    /// [`Profile::in_run_cost`] of one kernel variant: the variant's own where measured (the
    /// [`SERIAL`] one), else the signature's.
    pub fn variant_in_run_cost(
        &self,
        graph: &Graph,
        node: NodeId,
        variant: Option<&str>,
        rows: usize,
    ) -> f64 {
        self.in_run_at(&kernel_key(graph, node), variant, rows, firing_rows(graph, node))
    }

    /// [`Profile::variant_in_run_cost`] of the kernel with signature `key`, on a node of
    /// `limit` rows.
    fn in_run_at(&self, key: &str, variant: Option<&str>, rows: usize, limit: usize) -> f64 {
        variant
            .and_then(|v| self.cold.get(&variant_key(key, Some(v))))
            .or_else(|| self.cold.get(key))
            .map_or(0.0, |c| c.at(rows, limit))
    }

    /// Seconds of one firing of the node `keys` names on `rows` of its `limit` rows, in-run
    /// cost included: [`Profile::node_time`] plus [`Profile::in_run_cost`] (0 if unmeasured),
    /// without formatting the node's key again.
    pub fn firing_seconds(&self, keys: &Keys, node: NodeId, rows: usize, limit: usize) -> f64 {
        let key = keys.get(node);
        self.time_at(key, None, rows).unwrap_or(0.0) + self.in_run_at(key, None, rows, limit)
    }

    /// Whether some node of `graph` has no measured in-run cost ([`Profile::cold`]).
    pub fn lacks_cold(&self, graph: &Graph) -> bool {
        (0..graph.nodes.len()).any(|i| !self.cold.contains_key(&kernel_key(graph, NodeId(i))))
    }

    /// Each kernel's mean excess, per firing of `plan`, of its in-run step times `steps`
    /// ([`time_steps`]) over the time alone of `variant` (the nodes that have it; `None`: the
    /// backend's own choice, every node). At least zero per firing, except on a backend that
    /// queues its steps (`signed`): there a firing in a run overlaps the host's work for the
    /// next, and its time alone plus the step overhead (a launch each, measured on a plan of
    /// launches) counts that work twice, so the excess may be negative.
    fn excess(
        &self,
        graph: &Graph,
        plan: &Plan,
        steps: &[f64],
        variant: Option<&str>,
        signed: bool,
    ) -> BTreeMap<String, f64> {
        let mut excess: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for (s, &t) in plan.steps.iter().zip(steps) {
            let StepKind::Fire(node) = s.kind else { continue };
            let rows = s.rows[1] - s.rows[0];
            let Some(alone) = self.variant_time(graph, node, variant, rows) else { continue };
            let e = excess.entry(kernel_key(graph, node)).or_default();
            let over = t - alone - self.step_overhead;
            e.0 += if signed { over } else { over.max(0.0) };
            e.1 += 1;
        }
        excess.into_iter().map(|(key, (sum, count))| (key, sum / count.max(1) as f64)).collect()
    }

    /// Seconds for one firing of `node` on `rows` rows, interpolated between measured sizes.
    pub fn node_time(&self, graph: &Graph, node: NodeId, rows: usize) -> Option<f64> {
        self.variant_time(graph, node, None, rows)
    }

    /// [`Profile::node_time`] of one kernel variant (`None`: the backend's own choice).
    pub fn variant_time(
        &self,
        graph: &Graph,
        node: NodeId,
        variant: Option<&str>,
        rows: usize,
    ) -> Option<f64> {
        self.time_at(&kernel_key(graph, node), variant, rows)
    }

    /// [`Profile::variant_time`] of the kernel with signature `key`.
    fn time_at(&self, key: &str, variant: Option<&str>, rows: usize) -> Option<f64> {
        let pts = match variant {
            None => self.kernels.get(key),
            Some(_) => self.kernels.get(&variant_key(key, variant)),
        }?;
        interpolate(pts, rows)
    }

    /// The measured variants of `node` (names), if the backend had any.
    pub fn variants_of(&self, graph: &Graph, node: NodeId) -> Vec<String> {
        self.variants_at(&kernel_key(graph, node))
    }

    /// [`Profile::variants_of`] the kernel with signature `key`.
    fn variants_at(&self, key: &str) -> Vec<String> {
        let prefix = format!("{key}#");
        self.kernels
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k[prefix.len()..].to_string())
            .collect()
    }

    /// Whether a node (signature `key`) run as `variant` leaves its output on the calling
    /// thread as far as its readers' in-run costs go: the [`SERIAL`] variant, or any run of a
    /// node that has none (the serial profile run, whose costs its readers' `serial` costs
    /// are, ran it so too).
    fn serialish(&self, key: &str, variant: Option<&str>) -> bool {
        variant == Some(SERIAL) || !self.variants_at(key).iter().any(|v| v == SERIAL)
    }

    /// [`Profile::variant_in_run_cost`] given where the node's main input came from: a
    /// [`SERIAL`] firing pays its own (low) in-run cost only after a producer that left the
    /// rows on this core; after a split producer it reads rows the other core wrote, as every
    /// firing of the split run did, and pays the split run's cost.
    fn coupled_in_run_cost(
        &self,
        key: &str,
        limit: usize,
        variant: Option<&str>,
        rows: usize,
        producer_serial: bool,
    ) -> f64 {
        let v = if variant == Some(SERIAL) && !producer_serial { None } else { variant };
        self.in_run_at(key, v, rows, limit)
    }

    /// The fastest measured kernel for each node at the part sizes `plan` fires it on (`None`
    /// where the backend's own choice is as fast or nothing else was measured): what
    /// [`Plan::kernels`] records.
    ///
    /// A node's in-run cost depends on its main input's producer ([`coupled_in_run_cost`]),
    /// so the choices are made together: over the tree in which each node hangs from the
    /// producer of its first input, each node's best choice for either state of its producer
    /// (leaves first), then the choices from the roots down (a graph input counts as left on
    /// the calling thread). Choosing each node alone kept split nodes between serial ones,
    /// whose readers then paid for rows written on the other core (MobileNetV2's smallest
    /// plan on 2 threads: 3-6% slower than with those nodes serial too).
    ///
    /// [`coupled_in_run_cost`]: Profile::coupled_in_run_cost
    pub fn choose_kernels(&self, graph: &Graph, plan: &Plan) -> Result<Vec<Option<String>>> {
        let graph = &*crate::plan::recompute::effective(graph, &plan.options)?;
        let fired = firings(plan);
        let n = graph.nodes.len();
        let keys = Keys::of(graph);
        let parent = main_producers(graph);
        let mut children = vec![Vec::new(); n];
        for (i, p) in parent.iter().enumerate() {
            if let Some(p) = *p {
                children[p].push(i);
            }
        }
        // Per node: each candidate (the default, then every measured variant), whether it
        // leaves rows serial-ish, and its own cost after a serial / a split producer.
        struct Choice {
            name: Option<String>,
            serialish: bool,
            cost: [f64; 2],
        }
        let mut options: Vec<Vec<Choice>> = Vec::with_capacity(n);
        for i in 0..n {
            let (key, limit) = (keys.get(NodeId(i)), firing_rows(graph, NodeId(i)));
            let cost = |variant: Option<&str>, producer_serial: bool| -> Option<f64> {
                fired
                    .range((i, 0)..(i + 1, 0))
                    .map(|(&(_, rows), &count)| {
                        let cold =
                            self.coupled_in_run_cost(key, limit, variant, rows, producer_serial);
                        let t = self.time_at(key, variant, rows)?;
                        Some((t + cold).max(0.0) * count as f64)
                    })
                    .sum()
            };
            let names = std::iter::once(None).chain(self.variants_at(key).into_iter().map(Some));
            let mut opts = Vec::new();
            for name in names {
                let (Some(split), Some(serial)) =
                    (cost(name.as_deref(), false), cost(name.as_deref(), true))
                else {
                    continue;
                };
                let serialish = self.serialish(key, name.as_deref());
                opts.push(Choice { name, serialish, cost: [serial, split] });
            }
            options.push(opts);
        }
        // best[i][s]: the least cost of node i and everything hanging from it, its producer
        // serial-ish (s = 0) or not (s = 1), with the choice that gives it.
        let mut best = vec![[(0.0f64, usize::MAX); 2]; n];
        for i in (0..n).rev() {
            for s in 0..2 {
                let mut b = (f64::INFINITY, usize::MAX);
                for (k, o) in options[i].iter().enumerate() {
                    let below: f64 =
                        children[i].iter().map(|&c| best[c][usize::from(!o.serialish)].0).sum();
                    let t = o.cost[s] + below;
                    // Strictly less: the default (first) wins ties.
                    if t < b.0 {
                        b = (t, k);
                    }
                }
                if b.1 == usize::MAX {
                    // Nothing measured: the default.
                    let below = usize::from(!self.serialish(keys.get(NodeId(i)), None));
                    b = (children[i].iter().map(|&c| best[c][below].0).sum(), usize::MAX);
                }
                best[i][s] = b;
            }
        }
        let mut out = vec![None; n];
        let mut serialish = vec![true; n];
        for i in 0..n {
            let s = parent[i].map_or(0, |p| usize::from(!serialish[p]));
            match best[i][s].1 {
                usize::MAX => serialish[i] = self.serialish(keys.get(NodeId(i)), None),
                k => {
                    out[i] = options[i][k].name.clone();
                    serialish[i] = options[i][k].serialish;
                }
            }
        }
        Ok(out)
    }

    /// Predicted seconds for one run of `plan`.
    pub fn predict(&self, graph: &Graph, plan: &Plan) -> Result<f64> {
        let graph = &*crate::plan::recompute::effective(graph, &plan.options)?;
        let mut total = self.step_overhead * plan.steps.len() as f64;
        let parent = main_producers(graph);
        let keys = Keys::of(graph);
        let variant_of = |n: usize| plan.kernels.get(n).cloned().flatten();
        for ((n, rows), count) in firings(plan) {
            let (key, variant) = (keys.get(NodeId(n)), variant_of(n));
            let producer_serial = parent[n]
                .is_none_or(|p| self.serialish(keys.get(NodeId(p)), variant_of(p).as_deref()));
            let limit = firing_rows(graph, NodeId(n));
            let cold =
                self.coupled_in_run_cost(key, limit, variant.as_deref(), rows, producer_serial);
            let t = self.time_at(key, variant.as_deref(), rows).ok_or_else(|| {
                Error::Plan(format!(
                    "the profile has no timing for node '{}'; run `frugal profile` first",
                    graph.nodes[n].name
                ))
            })?;
            // A negative in-run cost (a queueing backend's) never makes a firing free.
            total += (t + cold).max(0.0) * count as f64;
            total += self.staging_seconds(graph, plan, NodeId(n), rows) * count as f64;
        }
        Ok(total)
    }

    /// [`Profile::predict`] for a plan with column strips before their kernels are measured:
    /// a strip's node the profile lacks costs its whole-width original's firing (kernel and
    /// in-run cost, the backend's own kernel choice) scaled by the columns it computes; the
    /// join's copy costs its step. What ranks strip plans cheaply, so that only the chosen
    /// one is profiled; not a prediction to report (narrow firings cost more per column).
    pub fn estimate_strips(&self, graph: &Graph, plan: &Plan) -> Result<f64> {
        let g = &*crate::plan::recompute::effective(graph, &plan.options)?;
        let whole = PlanOptions { strips: None, ..plan.options.clone() };
        let u = &*crate::plan::recompute::effective(graph, &whole)?;
        let originals: BTreeMap<&str, NodeId> =
            u.nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), NodeId(i))).collect();
        let (keys, ukeys) = (Keys::of(g), Keys::of(u));
        let width = |g: &Graph, n: NodeId| g.value(g.node(n).output()).shape.last().copied();
        let mut total = self.step_overhead * plan.steps.len() as f64;
        for ((n, rows), count) in firings(plan) {
            let node = NodeId(n);
            let firing = |key: &str, limit: usize| {
                Some(self.time_at(key, None, rows)? + self.in_run_at(key, None, rows, limit))
            };
            let t = match firing(keys.get(node), firing_rows(g, node)) {
                Some(t) => t,
                None => {
                    let original = crate::plan::strips::original_name(&g.nodes[n].name);
                    match original.and_then(|name| originals.get(name)) {
                        Some(&o) => {
                            let ratio = match (width(g, node), width(u, o)) {
                                (Some(a), Some(b)) if b > 0 => a as f64 / b as f64,
                                _ => 1.0,
                            };
                            let t = firing(ukeys.get(o), firing_rows(u, o)).ok_or_else(|| {
                                Error::Plan(format!(
                                    "the profile has no timing for node '{}'; run `frugal \
                                     profile` first",
                                    u.nodes[o.0].name
                                ))
                            })?;
                            t * ratio
                        }
                        None => 0.0,
                    }
                }
            };
            total += t.max(0.0) * count as f64;
        }
        Ok(total)
    }

    /// What f16 storage adds to one firing of `node` on `rows` rows in `plan` ([`Staging`]):
    /// each f16 window the call reads (the rows its input maps need, at a middle firing as the
    /// kernels are timed) and writes, by elements and by runs of rows (one per plane where the
    /// buffer holds the whole tensor, one per row in a ring). Zero for f32 plans.
    fn staging_seconds(&self, graph: &Graph, plan: &Plan, node: NodeId, rows: usize) -> f64 {
        let Some(cost) = self.f16_staging.filter(|_| plan.storage == DType::F16) else {
            return 0.0;
        };
        let f16 = |v: ValueId| {
            let b = plan.value_buffer.get(v.0).copied().flatten();
            b.and_then(|b| plan.buffers.get(b)).filter(|b| b.dtype == DType::F16)
        };
        let firing = MiddleFiring::of(graph, node, rows);
        let (mut elements, mut runs) = (0usize, 0usize);
        let (out, (olo, ohi)) = (graph.node(node).output(), firing.writes);
        for (v, lo, hi) in firing.reads.into_iter().chain([(out, olo, ohi)]) {
            if let Some(buffer) = f16(v) {
                let (planes, _, w) = row_geometry(&graph.value(v).shape);
                elements += planes * (hi - lo) * w;
                runs += planes * if buffer.is_whole() { 1 } else { hi - lo };
            }
        }
        cost.per_element * elements as f64 + cost.per_run * runs as f64
    }
}

impl Profile {
    /// Predicted seconds of each of `plan`'s steps when it runs in two lanes of one thread
    /// each: a convolution's `serial` variant where the profile has it (its time alone and
    /// its own in-run cost), the plan's choice otherwise, and the per-step overhead.
    pub fn lane_step_seconds(&self, graph: &Graph, plan: &Plan) -> Result<Vec<f64>> {
        let graph = &*crate::plan::recompute::effective(graph, &plan.options)?;
        let keys = Keys::of(graph);
        plan.steps
            .iter()
            .map(|s| {
                let StepKind::Fire(n) = s.kind else { return Ok(self.step_overhead) };
                let rows = s.rows[1] - s.rows[0];
                let key = keys.get(n);
                let chosen = plan.kernels.get(n.0).cloned().flatten();
                let variant = match self.time_at(key, Some(SERIAL), rows) {
                    Some(_) => Some(SERIAL.to_string()),
                    None => chosen,
                };
                let t = self.time_at(key, variant.as_deref(), rows).ok_or_else(|| {
                    Error::Plan(format!(
                        "the profile has no timing for node '{}'; run `frugal profile` first",
                        graph.nodes[n.0].name
                    ))
                })?;
                let cold = self.in_run_at(key, variant.as_deref(), rows, firing_rows(graph, n));
                let staging = self.staging_seconds(graph, plan, n, rows);
                Ok(self.step_overhead + (t + cold).max(0.0) + staging)
            })
            .collect()
    }
}

/// The producer of each node's first input, where a node produces it (an earlier node).
fn main_producers(graph: &Graph) -> Vec<Option<usize>> {
    let producers = graph.producers();
    (0..graph.nodes.len())
        .map(|i| {
            let v = graph.nodes[i].inputs.first()?;
            producers[v.0].map(|p| p.0).filter(|&p| p < i)
        })
        .collect()
}

/// Runs `plan` several times, step by step, and returns each step's median time: what a firing
/// costs in a run, with the other nodes' firings in between ([`deflate`]d against whole runs),
/// and whether deflating took something out (the backend queues its steps).
fn time_steps(
    graph: &Graph,
    plan: &Plan,
    backend: &mut dyn Backend,
    uploads: &mut Uploads,
) -> Result<(Vec<f64>, bool)> {
    let mut program = crate::exec::Program::bind_with(graph, plan, backend, uploads)?;
    backend.alloc_arena(program.arena_bytes())?;
    let numel = |v: &ValueId| graph.value(*v).shape.iter().product::<usize>();
    let inputs: Vec<Vec<f32>> = graph
        .inputs
        .iter()
        .map(|v| (0..numel(v)).map(|i| (i % 251) as f32 / 251.0).collect())
        .collect();
    let mut outputs: Vec<Vec<f32>> = graph.outputs.iter().map(|v| vec![0.0; numel(v)]).collect();
    let ins: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let mut outs: Vec<&mut [f32]> = outputs.iter_mut().map(Vec::as_mut_slice).collect();
    let n = program.steps().len();
    let mut once = vec![0.0; n];
    program.run(backend, &ins, &mut outs)?;
    // At least 5 runs spread over at least a second (at most 41): the excess is a difference
    // of timings taken at different moments, so a few runs inside one slow spell of a shared
    // machine would inflate it. Each step's median is kept: the fastest of each step, summed,
    // is a run that never happens (one step's luck is not another's).
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut whole = Vec::new();
    let start = Instant::now();
    for run in 0..41 {
        if run >= 5 && start.elapsed().as_secs_f64() >= 1.0 {
            break;
        }
        program.run_timed(backend, &ins, &mut outs, &mut once)?;
        runs.iter_mut().zip(&once).for_each(|(r, &t)| r.push(t));
        // A run as sessions run it, for what a step's own synchronisation adds.
        let t = Instant::now();
        program.run(backend, &ins, &mut outs)?;
        whole.push(t.elapsed().as_secs_f64());
    }
    let median = |mut r: Vec<f64>| {
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let mut steps: Vec<f64> = runs.into_iter().map(median).collect();
    let deflated = deflate(&mut steps, median(whole));
    Ok((steps, deflated))
}

/// Takes out of step times `steps` what timing them one by one added, given the time of a
/// whole run: where the steps sum to clearly more (over 10%: a GPU, where each timed step
/// waits for the device and a run queues its steps back to back), the difference, shared
/// equally (a wait costs about the same for every step; a step never goes below zero). On
/// the CPU the two agree within noise and the steps are left as measured. Whether it took
/// something out: then the backend queues its steps.
fn deflate(steps: &mut [f64], whole: f64) -> bool {
    let sum: f64 = steps.iter().sum();
    if steps.is_empty() || sum <= 1.1 * whole {
        return false;
    }
    let each = (sum - whole) / steps.len() as f64;
    steps.iter_mut().for_each(|t| *t = (*t - each).max(0.0));
    true
}

/// Profile key of a kernel variant: the kernel's key, then `#name`.
fn variant_key(kernel: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!("{kernel}#{v}"),
        None => kernel.to_string(),
    }
}

/// Linear interpolation of `(rows, seconds)` points; proportional beyond the last one.
fn interpolate(pts: &[(usize, f64)], rows: usize) -> Option<f64> {
    let (&(r0, t0), rest) = pts.split_first()?;
    if rows <= r0 || rest.is_empty() {
        return Some(t0 * rows as f64 / r0 as f64);
    }
    let mut prev = (r0, t0);
    for &(r, t) in rest {
        if rows <= r {
            let f = (rows - prev.0) as f64 / (r - prev.0) as f64;
            return Some(prev.1 + f * (t - prev.1));
        }
        prev = (r, t);
    }
    Some(prev.1 * rows as f64 / prev.0 as f64)
}

/// The firing the profile times for a node and part size, in the middle of the node's rows (as
/// far from the image's edges as it can be): its output rows, the rows of each activation
/// input it reads (each input value once) and the output rows it writes (a fold's touched
/// rows).
struct MiddleFiring {
    rows: [usize; 2],
    reads: Vec<(ValueId, usize, usize)>,
    writes: (usize, usize),
}

impl MiddleFiring {
    fn of(graph: &Graph, node: NodeId, rows: usize) -> MiddleFiring {
        let n = graph.node(node);
        let limit = firing_rows(graph, node);
        let a = (limit - rows.min(limit)) / 2;
        let b = (a + rows).min(limit);
        let shapes: Vec<&[usize]> =
            n.inputs.iter().map(|&v| graph.value(v).shape.as_slice()).collect();
        let out = &graph.value(n.output()).shape;
        let mut reads: Vec<(ValueId, usize, usize)> = Vec::new();
        for (s, &v) in n.inputs.iter().enumerate() {
            if graph.value(v).is_constant() || reads.iter().any(|r| r.0 == v) {
                continue;
            }
            let (lo, hi) =
                n.op.row_map(s, &shapes, out).need(a, b, row_geometry(&graph.value(v).shape).1);
            reads.push((v, lo, hi));
        }
        let writes = match n.op.fold(shapes[0]) {
            Some(f) => f.touched(a, b, row_geometry(out).1),
            None => (a, b),
        };
        MiddleFiring { rows: [a, b], reads, writes }
    }
}

/// Seconds of one firing of `node` on `rows` rows with windows laid out as a ring plan would:
/// with the backend's own choice of kernel (`None`), then with each of its variants.
fn time_kernel(
    graph: &Graph,
    node: NodeId,
    rows: usize,
    backend: &mut dyn Backend,
    uploads: &mut Uploads,
    dtype: DType,
) -> Result<Vec<(Option<&'static str>, f64)>> {
    let n = graph.node(node);
    let MiddleFiring { rows: [a, b], reads, writes: (olo, ohi) } =
        MiddleFiring::of(graph, node, rows);
    // Buffers: each activation input holding the rows this firing reads, then the output.
    let mut layouts = Vec::new();
    let mut index: Vec<(ValueId, usize, (usize, usize))> = Vec::new();
    let mut offset = 0;
    let mut place =
        |v: ValueId, lo: usize, hi: usize, layouts: &mut Vec<Layout>| -> Result<usize> {
            let d = dims_of(&graph.value(v).shape, n.op.name(), graph.opset)?;
            let (planes, _, w) = d.rows();
            let capacity = (hi - lo).max(1);
            layouts.push(Layout { offset, capacity, dims: d, dtype, row_stride: w });
            offset = align_up(offset + planes * capacity * w * dtype.size(), 64);
            Ok(layouts.len() - 1)
        };
    for (v, lo, hi) in reads {
        let i = place(v, lo, hi, &mut layouts)?;
        index.push((v, i, (lo, hi)));
    }
    let oi = place(n.output(), olo, ohi, &mut layouts)?;
    let buffers = Buffers::new(layouts);
    let buffer_of = |v: ValueId| -> Result<usize> {
        if v == n.output() {
            return Ok(oi);
        }
        index
            .iter()
            .find(|(x, _, _)| *x == v)
            .map(|&(_, i, _)| i)
            .ok_or_else(|| Error::Plan("unbound input".into()))
    };
    let exec = NodeExec::bind(graph, n, &buffer_of, &mut |v, t| uploads.get(backend, v, t))?;
    let mut concat = Vec::with_capacity(n.inputs.len());
    let k = kernel_for(&exec, [a, b], &buffers, &mut concat)?;
    let scratch = Scratch { offset, bytes: backend.workspace_bytes(&k) };
    backend.alloc_arena(offset + align_up(scratch.bytes, 64))?;
    backend.prepare(&k)?;
    // Inputs hold pseudo-random values (zeros could take faster paths).
    for &(v, i, (lo, hi)) in &index {
        let (planes, _, w) = row_geometry(&graph.value(v).shape);
        let data: Vec<f32> = (0..planes * (hi - lo) * w)
            .map(|j| ((j * 7919 % 1013) as f32 - 506.0) / 512.0)
            .collect();
        backend.write(&buffers.window(i, lo..hi), &data, lo..hi)?;
    }
    // The backend's own choice, then every variant it has.
    let mut times = vec![(None, time_calls(backend, &k, None, scratch)?)];
    for (i, name) in backend.variants(&k).into_iter().enumerate() {
        times.push((Some(name), time_calls(backend, &k, Some(i), scratch)?));
    }
    Ok(times)
}

/// Warms up, then times batches of at least 3 calls and 2 ms and keeps the fastest batch's
/// mean (the figure that repeats on a shared machine). Each batch ends with a sync: on an
/// asynchronous backend (a GPU) queueing calls is far faster than running them, so the batch
/// size grows (at least doubling, else to the size a 2.5 ms batch needs at the rate measured)
/// until a synced batch lasts 2 ms, instead of watching the clock while queueing (which queued
/// thousands of launches per batch and made profiling take minutes).
fn time_calls(
    backend: &mut dyn Backend,
    k: &crate::backend::Kernel<'_>,
    variant: Option<usize>,
    scratch: Scratch,
) -> Result<f64> {
    let batch = |reps: u32, backend: &mut dyn Backend| -> Result<f64> {
        let start = Instant::now();
        for _ in 0..reps {
            backend.execute_variant(k, variant, scratch)?;
        }
        backend.sync()?;
        Ok(start.elapsed().as_secs_f64())
    };
    batch(1, backend)?;
    let mut reps = 3u32;
    let mut best = loop {
        let t = batch(reps, backend)?;
        if t >= 0.002 || reps >= 1 << 20 {
            break t / reps as f64;
        }
        reps = (reps * 2).max((reps as f64 * 0.0025 / t.max(1e-9)).min(1e6) as u32);
    };
    for _ in 0..4 {
        best = best.min(batch(reps, backend)? / reps as f64);
    }
    Ok(best)
}

/// [`Staging`] on `backend`: a ReLU over 8192 elements timed on f32 windows and on f16 ones,
/// once over 8 planes of 8 rows of 128 columns (8 runs each way) and once over 256 planes of
/// one row of 32 columns (256 runs each way); the difference is the conversions, solved for a
/// cost per element and per run. 8192 elements is a one-row firing's size on the models'
/// middle stages. `None` where the backend does not store f16.
pub fn measure_staging(backend: &mut dyn Backend) -> Result<Option<Staging>> {
    if !backend.capabilities().storage.contains(&DType::F16) {
        return Ok(None);
    }
    let mut cost = |shape: &[usize]| -> Result<f64> {
        let mut b = GraphBuilder::new("staging", 0);
        let x = b.input("x", shape);
        let y = b.act(x, Activation::Relu)?;
        b.output(y);
        let g = b.finish()?;
        let node = NodeId(0);
        let rows = shape[2];
        let mut uploads = Uploads::new(&g);
        // Alternating, the faster of three of each: a slow spell hits both sides alike.
        let (mut t32, mut t16) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..3 {
            t32 = t32.min(time_kernel(&g, node, rows, backend, &mut uploads, DType::F32)?[0].1);
            t16 = t16.min(time_kernel(&g, node, rows, backend, &mut uploads, DType::F16)?[0].1);
        }
        Ok((t16 - t32).max(0.0))
    };
    let (wide, narrow) = (cost(&[1, 8, 8, 128])?, cost(&[1, 256, 1, 32])?);
    // Both shapes convert 8192 elements in and out; the runs differ.
    let (elements, runs_wide, runs_narrow) = (2.0 * 8192.0, 2.0 * 8.0, 2.0 * 256.0);
    let per_run = ((narrow - wide) / (runs_narrow - runs_wide)).max(0.0);
    let per_element = ((wide - per_run * runs_wide) / elements).max(0.0);
    Ok(Some(Staging { per_element, per_run }))
}

/// Executor time per step besides kernels: a one-row ReLU streamed through a long by-parts
/// plan, divided by its steps.
fn measure_step_overhead(backend: &mut dyn Backend) -> Result<f64> {
    let mut b = GraphBuilder::new("overhead", 0);
    let x = b.input("x", &[1, 1, 512, 1]);
    let y = b.act(x, Activation::Relu)?;
    b.output(y);
    let g = b.finish()?;
    let plan = Plan::build(&g, &PlanOptions::new(Strategy::ByParts))?;
    let steps = plan.steps.len();
    let mut program = crate::exec::Program::bind(&g, &plan, backend)?;
    backend.alloc_arena(program.arena_bytes())?;
    let input = vec![0.5f32; 512];
    let mut output = vec![0.0f32; 512];
    program.run(backend, &[&input], &mut [&mut output])?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        program.run(backend, &[&input], &mut [&mut output])?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best / steps as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_times_lose_only_what_timing_them_added() {
        // A GPU's synchronised steps: 10 us each of waiting, a run of 3 steps 30 us.
        let mut steps = [20e-6, 5e-6, 15e-6];
        assert!(deflate(&mut steps, 30e-6));
        let want = [20e-6 - 10e-6 / 3.0, 5e-6 - 10e-6 / 3.0, 15e-6 - 10e-6 / 3.0];
        assert!(steps.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{steps:?}");
        // More waiting than a step's time: that step goes to zero, not below.
        let mut steps = [1e-6, 40e-6];
        deflate(&mut steps, 10e-6);
        assert_eq!(steps[0], 0.0);
        // A CPU's steps that sum within 10% of the run: left as measured.
        let mut steps = [20e-6, 5e-6, 15e-6];
        assert!(!deflate(&mut steps, 37e-6));
        assert_eq!(steps, [20e-6, 5e-6, 15e-6]);
    }

    #[test]
    fn interpolation_is_linear_and_proportional_outside() {
        let pts = [(1, 1.0), (4, 2.5), (8, 4.5)];
        assert_eq!(interpolate(&pts, 1), Some(1.0));
        assert_eq!(interpolate(&pts, 2), Some(1.5));
        assert_eq!(interpolate(&pts, 6), Some(3.5));
        assert_eq!(interpolate(&pts, 16), Some(9.0));
        assert_eq!(interpolate(&[], 3), None);
        assert_eq!(ladder(5), vec![1, 2, 4, 5]);
        assert_eq!(ladder(1), vec![1]);
        assert_eq!(ladder(4), vec![1, 2, 4]);
    }

    #[test]
    fn strip_estimates_scale_whole_width_kernels_by_their_columns() {
        // Kernels whose cost is proportional to the columns they compute: the estimate from
        // the whole-width timings alone equals the prediction with every strip timed.
        let g = crate::zoo::by_name("mobilenet_v2", 64, 64, 0).unwrap();
        let base = PlanOptions { strategy: Strategy::ByParts, ..PlanOptions::default() };
        let options = crate::plan::strips::smallest(&g, &base, 2).unwrap();
        let plan = Plan::build(&g, &options).unwrap();
        let time = |graph: &Graph, p: &mut Profile| {
            for i in 0..graph.nodes.len() {
                let key = kernel_key(graph, NodeId(i));
                let out = &graph.value(graph.nodes[i].output()).shape;
                let join = matches!(graph.nodes[i].op, crate::ops::Op::Concat(_))
                    && graph.nodes[i].name.ends_with("~join");
                let w = if join { 0.0 } else { out.last().copied().unwrap_or(1) as f64 };
                let limit = firing_rows(graph, NodeId(i));
                let pts = ladder(limit).into_iter().map(|r| (r, r as f64 * w * 1e-8));
                p.kernels.insert(key.clone(), pts.collect());
                p.cold.insert(key, InRun { one_row: w * 1e-9, whole: w * limit as f64 * 1e-9 });
            }
        };
        let whole = crate::plan::recompute::effective(&g, &base).unwrap();
        let stripped = crate::plan::recompute::effective(&g, &options).unwrap();
        let mut partial = Profile { step_overhead: 1e-7, ..Profile::default() };
        time(&whole, &mut partial);
        let mut full = partial.clone();
        time(&stripped, &mut full);
        assert!(partial.predict(&g, &plan).is_err(), "the strips' kernels are not timed");
        let (estimate, predicted) =
            (partial.estimate_strips(&g, &plan).unwrap(), full.predict(&g, &plan).unwrap());
        assert!((estimate - predicted).abs() <= 1e-9 * predicted, "{estimate} vs {predicted}");
        // Without strips the estimate is the prediction.
        let rows = Plan::build(&g, &base).unwrap();
        assert_eq!(
            partial.estimate_strips(&g, &rows).unwrap(),
            partial.predict(&g, &rows).unwrap()
        );
    }

    #[test]
    fn forgetting_a_model_keeps_the_others_timings() {
        let mut b = GraphBuilder::new("one", 0);
        let x = b.input("x", &[1, 2, 8, 8]);
        let y = b.act(x, Activation::Relu).unwrap();
        b.output(y);
        let g = b.finish().unwrap();
        let key = kernel_key(&g, NodeId(0));
        let mut p = Profile::default();
        for k in [key.clone(), format!("{key}#columns"), "other".into(), "other#columns".into()] {
            p.kernels.insert(k, vec![(1, 1e-6)]);
        }
        p.cold.insert(key.clone(), InRun::default());
        p.cold.insert("other".into(), InRun::default());
        p.forget(&g);
        assert_eq!(p.kernels.keys().collect::<Vec<_>>(), ["other", "other#columns"]);
        assert_eq!(p.cold.keys().collect::<Vec<_>>(), ["other"]);
        assert!(p.lacks_cold(&g) && !p.missing(&g).is_empty());
    }

    #[test]
    fn in_run_costs_run_from_one_row_to_whole() {
        let c = InRun { one_row: 1.0, whole: 5.0 };
        assert_eq!(c.at(1, 9), 1.0);
        assert_eq!(c.at(5, 9), 3.0);
        assert_eq!(c.at(9, 9), 5.0);
        // Out of range part sizes clamp; a node firing once either way takes the mean.
        assert_eq!(c.at(0, 9), 1.0);
        assert_eq!(c.at(20, 9), 5.0);
        assert_eq!(c.at(1, 1), 3.0);
    }

    #[test]
    fn f16_plans_pay_for_converting_what_each_firing_reads_and_writes() {
        // A 3x3 convolution then a ReLU over 4 planes of 8x10: by parts one row at a time.
        let mut b = GraphBuilder::new("staging", 0);
        let x = b.input("x", &[1, 4, 8, 10]);
        let y = b.conv(x, 4, 3, 1, 1, 1, None).unwrap();
        let z = b.act(y, Activation::Relu).unwrap();
        b.output(z);
        let g = b.finish().unwrap();
        let mut profile = Profile::default();
        for i in 0..g.nodes.len() {
            profile.kernels.insert(kernel_key(&g, NodeId(i)), vec![(1, 1e-6), (8, 8e-6)]);
        }
        let with = |storage| PlanOptions { storage, ..PlanOptions::new(Strategy::ByParts) };
        let (p32, p16) = (
            Plan::build(&g, &with(DType::F32)).unwrap(),
            Plan::build(&g, &with(DType::F16)).unwrap(),
        );
        let unmeasured = profile.predict(&g, &p16).unwrap();
        assert_eq!(unmeasured, profile.predict(&g, &p32).unwrap(), "nothing to add unmeasured");
        profile.f16_staging = Some(Staging { per_element: 1.0, per_run: 0.0 });
        assert_eq!(profile.predict(&g, &p32).unwrap(), unmeasured, "f32 plans convert nothing");
        // Per output row: the convolution reads 3 input rows (the input is fed as f16 too)
        // and writes one, the ReLU reads and writes one: (3 + 1 + 1 + 1) rows of 40 elements.
        let firings = 8.0;
        let added = profile.predict(&g, &p16).unwrap() - unmeasured;
        assert!((added - firings * 6.0 * 40.0).abs() < 1e-6, "added {added}");
        // Runs: one per row and plane in the rings, one per plane where a buffer is whole.
        profile.f16_staging = Some(Staging { per_element: 0.0, per_run: 1.0 });
        let runs = profile.predict(&g, &p16).unwrap() - unmeasured;
        assert!(runs > 0.0 && runs <= firings * 6.0 * 4.0 + 1e-9, "runs {runs}");
    }
}
