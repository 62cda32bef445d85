//! The search over plans: exact memory from the schedule, time from the profile, and the
//! Pareto front of one against the other.
//!
//! The space is a part size per node (1 row up to all of them) on top of the stage cuts that
//! give the smallest peak. The search starts at the smallest plan and keeps doubling the part
//! of the node whose larger part saves the most predicted time per byte it costs (moves that
//! cost nothing first), recording every plan on the way; layer by layer closes the curve.
//! The published method's space (each layer by parts, one row at a time, or whole) is searched
//! too, so that both stand in one table. Below the smallest plan without recomputation, the
//! recomputing plans (see `recompute_path`) are walked the same way, parts growing on the
//! model rewritten with its recomputed copies.

use serde::Serialize;

use super::profile::{firing_rows, Keys, Profile};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::exec::session_bytes;
use crate::graph::{Graph, NodeId};
use crate::plan::{Plan, PlanOptions, Strategy};

/// One point of the memory/time trade-off.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// Where it comes from: `layer-by-layer`, `by-parts`, `published`, `search`.
    pub label: String,
    /// The options that rebuild its plan.
    pub options: PlanOptions,
    /// Peak intermediate bytes (inputs and outputs excluded).
    pub peak_bytes: usize,
    /// Bytes a session allocates: buffers with inputs and outputs, plus kernel scratch.
    pub arena_bytes: usize,
    /// Predicted seconds per run.
    pub seconds: f64,
    /// Kernel variant per node, the fastest measured ([`Plan::kernels`]).
    #[serde(skip)]
    pub kernels: Vec<Option<String>>,
}

impl Candidate {
    /// Predicted runs per second.
    pub fn throughput(&self) -> f64 {
        1.0 / self.seconds.max(1e-12)
    }

    /// The plan, with its measured kernel choices.
    pub fn plan(&self, graph: &Graph) -> Result<Plan> {
        let mut plan = Plan::build(graph, &self.options)?;
        plan.kernels = self.kernels.clone();
        Ok(plan)
    }
}

/// Builds `options`' plan and prices it.
pub fn evaluate(
    graph: &Graph,
    options: &PlanOptions,
    profile: &Profile,
    backend: &dyn Backend,
    label: &str,
) -> Result<Candidate> {
    let mut plan = Plan::build(graph, options)?;
    plan.kernels = profile.choose_kernels(graph, &plan)?;
    Ok(Candidate {
        label: label.to_string(),
        options: plan.options.clone(),
        peak_bytes: plan.peak_bytes,
        arena_bytes: session_bytes(graph, &plan, backend)?,
        seconds: profile.predict(graph, &plan)?,
        kernels: plan.kernels,
    })
}

/// Keeps the candidates no other beats on both memory and time, by increasing memory.
pub fn pareto(mut all: Vec<Candidate>) -> Vec<Candidate> {
    all.sort_by(|a, b| a.arena_bytes.cmp(&b.arena_bytes).then(a.seconds.total_cmp(&b.seconds)));
    let mut front: Vec<Candidate> = Vec::new();
    for c in all {
        if front.last().is_none_or(|l| c.seconds < l.seconds) {
            front.push(c);
        }
    }
    front
}

fn by_parts(base: &PlanOptions, parts: &[usize], cuts: &[crate::graph::ValueId]) -> PlanOptions {
    PlanOptions {
        strategy: Strategy::ByParts,
        part_rows: 1,
        parts: parts
            .iter()
            .enumerate()
            .filter(|(_, &p)| p > 1)
            .map(|(i, &p)| (NodeId(i), p))
            .collect(),
        cuts: Some(cuts.to_vec()),
        ..base.clone()
    }
}

/// Predicted seconds of all of a node's firings at part `p` (overheads and in-run costs
/// included, as [`Profile::predict`] counts them).
fn node_cost(keys: &Keys, profile: &Profile, limits: &[usize], n: usize, p: usize) -> f64 {
    let limit = limits[n];
    let fires = limit.div_ceil(p.max(1));
    let t = profile.firing_seconds(keys, NodeId(n), p.min(limit), limit);
    fires as f64 * (t + profile.step_overhead)
}

/// The measured trade-off: every plan the search visits, filtered to the Pareto front, with
/// layer by layer included. `progress(done, total)` reports search moves.
pub fn front(
    graph: &Graph,
    profile: &Profile,
    backend: &dyn Backend,
    base: &PlanOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Candidate>> {
    let smallest = Plan::build(
        graph,
        &PlanOptions {
            strategy: Strategy::ByParts,
            part_rows: 1,
            parts: vec![],
            cuts: None,
            ..base.clone()
        },
    )?;
    let cuts = smallest.options.cuts.clone().unwrap_or_default();
    let limits: Vec<usize> =
        (0..graph.nodes.len()).map(|i| firing_rows(graph, NodeId(i))).collect();
    let per_walk = doublings(&limits);
    // Two walks: from the smallest plan's stage cuts, and, where it has some, without them.
    // The cuts that give the smallest peak need not suit larger parts: ResNet-50's holds a
    // 1/16-scale map whole, and once the low-resolution stages run whole the plan without
    // that cut is faster at the same memory.
    let walks: Vec<&[crate::graph::ValueId]> =
        if cuts.is_empty() { vec![&cuts] } else { vec![&cuts, &[]] };
    // Below the smallest plan without recomputation: the recomputing plans, and larger parts
    // on top of the smallest of them, up to twice its memory: a budget a little above it buys
    // larger parts where they save most (the text detector's full-resolution first layers,
    // three passes of them), which the walks without recomputation never reach at that memory.
    // Parts grow too on top of the plans that hold narrow maps whole for the copies (see
    // `keep_walk`): each takes one more pass's worth of computation out.
    let mut all = Vec::new();
    for o in recompute_path(graph, base)? {
        all.push(evaluate(graph, &o, profile, backend, "recompute")?);
    }
    let mut starts = Vec::new();
    let mut cap = None;
    if let Some(smallest) = all.last().cloned() {
        cap = Some(2 * smallest.arena_bytes);
        let (taken, tried) =
            keep_walk(graph, profile, backend, &smallest, 2 * smallest.arena_bytes)?;
        all.extend(tried);
        starts.push(smallest);
        starts.extend(taken);
    }
    let mut rewritten = Vec::new();
    for start in starts {
        let effective = crate::plan::recompute::effective(graph, &start.options)?.into_owned();
        let limits: Vec<usize> =
            (0..effective.nodes.len()).map(|i| firing_rows(&effective, NodeId(i))).collect();
        rewritten.push((start, effective, limits));
    }
    // Each of these walks twice: with the moves that take a stage whole but for its entries,
    // and without (a greedy path that takes them can end slower at a larger budget: the zoo's
    // MobileNetV2 within twice its smallest session, predicted 5.92 ms without, 6.04 with).
    let total =
        2 * per_walk * walks.len() + rewritten.iter().map(|r| doublings(&r.2)).sum::<usize>();
    for (w, (cuts, apart)) in walks.iter().flat_map(|c| [(c, true), (c, false)]).enumerate() {
        let mut report = |step: usize| progress(w * per_walk + step, total);
        let (l, b) = (&limits, base);
        all.extend(walk(graph, graph, profile, backend, b, cuts, l, None, apart, &mut report)?);
    }
    let mut done = 2 * per_walk * walks.len();
    for (start, effective, limits) in &rewritten {
        let cuts = start.options.cuts.clone().unwrap_or_default();
        let mut report = |step: usize| progress(done + step, total);
        let o = &start.options;
        let (g, c) = (effective, &cuts);
        all.extend(walk(graph, g, profile, backend, o, c, limits, cap, true, &mut report)?);
        done += doublings(limits);
    }
    progress(total, total);
    // The published method's configurations are candidates too, so the front is never behind
    // it: its one-row-or-whole plans without cuts can land between two of the walks' plans
    // (ResNet-50 at 5 MiB: whole low-resolution stages, no cut).
    for o in published_path(graph, base)? {
        all.push(evaluate(graph, &o, profile, backend, "published")?);
    }
    all.push(evaluate(
        graph,
        &PlanOptions { strategy: Strategy::LayerByLayer, ..base.clone() },
        profile,
        backend,
        "layer-by-layer",
    )?);
    let mut front = pareto(all);
    let lanes = in_two_lanes(graph, profile, backend, &front)?;
    front.extend(lanes);
    Ok(pareto(front))
}

/// Plans of the front considered again in two lanes: the smallest [`LANE_PLANS`] by parts
/// (two lanes pay where firings are too small to split across threads), where the backend
/// can run two (a fork of one thread each, from a backend of at least two). Each lane's
/// steps are priced from the profile ([`Profile::lane_step_seconds`]), the lanes placed and
/// their run timed by the simulation in [`crate::lanes`]; memory is both lanes' arenas and
/// scratch and the channels, as the session allocates them.
pub fn in_two_lanes(
    graph: &Graph,
    profile: &Profile,
    backend: &dyn Backend,
    front: &[Candidate],
) -> Result<Vec<Candidate>> {
    if backend.threads() < 2 || backend.fork(1).is_err() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for c in front.iter().filter(|c| c.options.strategy == Strategy::ByParts).take(LANE_PLANS) {
        let plan = c.plan(graph)?;
        let effective = crate::plan::recompute::effective(graph, &plan.options)?;
        let ns: Vec<usize> = profile
            .lane_step_seconds(graph, &plan)?
            .iter()
            .map(|s| (s * 1e9).round() as usize)
            .collect();
        let flips = crate::lanes::search_in(&effective, &plan, &ns, 1000)?;
        let mut two = plan.clone();
        two.options.lanes = flips;
        let split = crate::lanes::split(&effective, &two)?;
        let seconds = crate::lanes::simulate_in(&split, &ns, 1000) as f64 * 1e-9;
        out.push(Candidate {
            label: "two lanes".into(),
            options: two.options.clone(),
            peak_bytes: split.lanes.iter().map(|l| l.arena_bytes).sum::<usize>()
                + split.channel_bytes(),
            arena_bytes: session_bytes(graph, &two, backend)?,
            seconds,
            kernels: two.kernels.clone(),
        });
    }
    Ok(out)
}

/// How many of the front's smallest plans are considered in two lanes.
const LANE_PLANS: usize = 8;

/// The greedy walk from one row per node up, with `base`'s options and stage cuts `cuts`,
/// stopping before a move that would take the plan's session past `cap` bytes: every plan it
/// visits (those priced on the way included). With `entries_apart`, it also tries each stage
/// whole but for its entries ([`entries`]). Plans are of
/// `graph`; the parts (and their costs) are of `costs`' nodes, the graph the plans run (the
/// model's, or its rewrite with recomputed copies).
#[allow(clippy::too_many_arguments)]
fn walk(
    graph: &Graph,
    costs: &Graph,
    profile: &Profile,
    backend: &dyn Backend,
    base: &PlanOptions,
    cuts: &[crate::graph::ValueId],
    limits: &[usize],
    cap: Option<usize>,
    entries_apart: bool,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Candidate>> {
    let keys = Keys::of(costs);
    let mut parts = vec![1usize; costs.nodes.len()];
    let mut cur = evaluate(graph, &by_parts(base, &parts, cuts), profile, backend, "by-parts")?;
    let mut tried = vec![cur.clone()];
    let mut stuck = vec![false; parts.len()];
    let stages = stages(limits);
    let entries = entries(costs, limits);
    let total = doublings(limits);
    for step in 0..total {
        progress(step);
        // Nodes whose next part saves the most predicted time, then every stage as a whole: a
        // ring's size depends on its producer's part and its consumer's, so doubling one node
        // of a stage alone can cost memory and save nothing, while the stage together saves
        // (weights streamed once per firing dominate low-resolution stages).
        let mut singles: Vec<(f64, usize)> = (0..parts.len())
            .filter(|&n| parts[n] < limits[n] && !stuck[n])
            .map(|n| {
                let next = (parts[n] * 2).min(limits[n]);
                let cost = |p: usize| node_cost(&keys, profile, limits, n, p);
                (cost(parts[n]) - cost(next), n)
            })
            .filter(|m| m.0 > 0.0)
            .collect();
        singles.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut moves: Vec<Vec<usize>> = singles.iter().take(6).map(|&(_, n)| vec![n]).collect();
        for stage in &stages {
            let grow: Vec<usize> =
                stage.iter().copied().filter(|&n| parts[n] < limits[n]).collect();
            if grow.len() > 1 && !moves.contains(&grow) {
                moves.push(grow);
            }
        }
        // And every stage whole at once: whole maps can be stage cuts, each node then its own
        // stage, so a low-resolution stage whole can cost no memory where its rows doubled
        // cost some, and doubling alone never gets there at the smallest memory (MobileNetV2's
        // 7x7 layers: the bundled model's smallest session measured 6.9 ms instead of 8.4 on
        // 2 threads, `frugal pareto` before and after).
        let whole_from = moves.len();
        for stage in &stages {
            let grow: Vec<usize> =
                stage.iter().copied().filter(|&n| parts[n] * 2 < limits[n]).collect();
            // The stage whole but for its entries: a strided layer that enters it whole
            // needs its input, of the finer stage before, whole too, where by rows it needs
            // a few of them (the orientation model's 28x28 map before its 14x14 stage:
            // 401 KB held for a layer whose rows take 0.02 ms; once held, no walk gives it
            // back).
            let inner: Vec<usize> = grow.iter().copied().filter(|&n| !entries[n]).collect();
            if entries_apart && !inner.is_empty() && inner.len() < grow.len() {
                moves.push(inner);
            }
            if !grow.is_empty() {
                moves.push(grow);
            }
        }
        if moves.is_empty() {
            break;
        }
        let mut best: Option<(f64, Vec<usize>, Candidate)> = None;
        for (m, nodes) in moves.iter().enumerate() {
            let mut trial = parts.clone();
            for &n in nodes {
                trial[n] = if m >= whole_from { limits[n] } else { (parts[n] * 2).min(limits[n]) };
            }
            let c = evaluate(graph, &by_parts(base, &trial, cuts), profile, backend, "search")?;
            // Every plan priced is a point of the trade-off, taken or not: a move the walk
            // passes over for a better ratio may be the fastest under a tight budget.
            tried.push(c.clone());
            let saved = cur.seconds - c.seconds;
            if saved <= 0.0 {
                if let (true, &[n]) = (m < whole_from, &nodes[..]) {
                    stuck[n] = true;
                }
                continue;
            }
            // Free moves first, then time saved per byte added.
            let score = if c.arena_bytes <= cur.arena_bytes {
                f64::INFINITY
            } else {
                saved / (c.arena_bytes - cur.arena_bytes) as f64
            };
            let better = best
                .as_ref()
                .is_none_or(|b| score > b.0 || (score == b.0 && c.seconds < b.2.seconds));
            if better {
                best = Some((score, trial, c));
            }
        }
        match best {
            Some((_, _, c)) if cap.is_some_and(|cap| c.arena_bytes > cap) => break,
            Some((_, trial, c)) => {
                parts = trial;
                cur = c;
            }
            // Single moves that found nothing are marked stuck: try the next ones.
            None if singles.len() > 6 => continue,
            None => break,
        }
    }
    Ok(tried)
}

/// Nodes that read an activation of more rows than they produce (a strided layer, a pooling
/// that enters a coarser stage): whole, such a node needs its finer input whole.
fn entries(graph: &Graph, limits: &[usize]) -> Vec<bool> {
    graph
        .nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            node.inputs.iter().any(|&v| {
                let value = graph.value(v);
                !value.is_constant() && crate::plan::row_geometry(&value.shape).1 > limits[n]
            })
        })
        .collect()
}

/// Steps a walk takes at most: each node can double about log2(rows) times.
fn doublings(limits: &[usize]) -> usize {
    limits.iter().map(|&l| usize::BITS as usize - l.leading_zeros() as usize).sum()
}

/// Nodes grouped by the rows they fire on (a resolution stage), for moves that grow a whole
/// stage's parts together.
fn stages(limits: &[usize]) -> Vec<Vec<usize>> {
    let mut heights: Vec<usize> = limits.iter().copied().filter(|&l| l > 1).collect();
    heights.sort_unstable();
    heights.dedup();
    heights.iter().map(|&h| (0..limits.len()).filter(|&n| limits[n] == h).collect()).collect()
}

/// Recomputation cut short: plans that hold a narrow map of the recomputed path whole, so that
/// the later passes read it instead of computing everything before it again. The text
/// detector at 2048x2048 holds its 1/16-scale backbone output (42 channels, where the layers
/// before it have 192: 2.6 MB) and spares two passes of its 1/16 stage. Candidates are the
/// values the recomputations copy that are smaller than each input of their producer (a
/// projection that narrows, a strided layer): elsewhere the producer's input is the cheaper
/// map to hold. Greedy: the candidate that saves the most predicted time per byte, while one
/// saves time and the session stays within `cap`. Returns the plans taken, in order, and every
/// plan priced.
pub fn keep_walk(
    graph: &Graph,
    profile: &Profile,
    backend: &dyn Backend,
    start: &Candidate,
    cap: usize,
) -> Result<(Vec<Candidate>, Vec<Candidate>)> {
    let list = &start.options.recompute;
    let producers = graph.producers();
    let narrow = |v: crate::graph::ValueId| {
        let Some(p) = producers[v.0] else { return false };
        let bytes = graph.value(v).nbytes();
        let inputs: Vec<_> = graph
            .node(p)
            .inputs
            .iter()
            .map(|&x| graph.value(x))
            .filter(|x| !x.is_constant())
            .collect();
        !inputs.is_empty() && inputs.iter().all(|x| bytes < x.nbytes())
    };
    let mut pool: Vec<_> = crate::plan::recompute::copied(graph, list)?
        .into_iter()
        .filter(|&v| {
            !list.iter().any(|r| r.value == v)
                && narrow(v)
                && start.arena_bytes + graph.value(v).nbytes() <= cap
        })
        .collect();
    let (mut cur, mut taken, mut tried) = (start.clone(), Vec::new(), Vec::new());
    while !pool.is_empty() {
        let mut best: Option<(f64, usize, Candidate)> = None;
        let each = pool.iter().enumerate().flat_map(|(i, &v)| [(i, v, false), (i, v, true)]);
        for (i, v, larger_pools_first) in each {
            // Stage cuts are searched again: the held map is a new one. Both demand orders:
            // a held map can let a pyramid level run ahead of the stem (see
            // `PlanOptions::larger_pools_first`).
            let mut o = PlanOptions { cuts: None, larger_pools_first, ..cur.options.clone() };
            for r in o.recompute.iter_mut().filter(|r| !r.keep.contains(&v)) {
                r.keep.push(v);
            }
            // Keeping a map can leave a later recomputation of the list nothing to copy for
            // (its readers read the kept map now, so the copy it names is never made): not a
            // plan, skipped (a random CNN with a concatenation under squeeze-and-excitation,
            // `tests/byparts.proptest-regressions`).
            let c = match evaluate(graph, &o, profile, backend, "recompute") {
                Ok(c) => c,
                Err(Error::Plan(_)) => continue,
                Err(e) => return Err(e),
            };
            tried.push(c.clone());
            let saved = cur.seconds - c.seconds;
            if saved <= 0.0 || c.arena_bytes > cap {
                continue;
            }
            let score = if c.arena_bytes <= cur.arena_bytes {
                f64::INFINITY
            } else {
                saved / (c.arena_bytes - cur.arena_bytes) as f64
            };
            if best.as_ref().is_none_or(|b| score > b.0) {
                best = Some((score, i, c));
            }
        }
        let Some((_, i, c)) = best else { break };
        pool.remove(i);
        cur = c;
        taken.push(cur.clone());
    }
    Ok((taken, tried))
}

/// Plans below the smallest by-parts peak, bought with computation. Two walks, the smaller
/// end kept: a greedy one (recompute the value held whole whose recomputation lowers the peak
/// most, largest held values tried first, while that helps), and one that first gives each
/// depth of squeeze-and-excitation nesting its own streaming pass (shallowest first, each
/// kept if it lowers the peak) and then goes on greedily. Greedy alone stops early on
/// feature pyramids: recomputing one level helps at once, recomputing all of them from one
/// copy helps far more but only once the next depth's blocks are recomputed too. Returns each
/// step's options, smallest last.
pub fn recompute_path(graph: &Graph, base: &PlanOptions) -> Result<Vec<PlanOptions>> {
    use crate::plan::recompute::pass_moves;
    let opts = PlanOptions {
        strategy: Strategy::ByParts,
        part_rows: 1,
        parts: vec![],
        cuts: None,
        ..base.clone()
    };
    let plan = Plan::build(graph, &opts)?;
    let mut greedy = Walk { plan: plan.clone(), path: Vec::new() };
    greedy.greedy(graph)?;
    let mut passes = Walk { plan, path: Vec::new() };
    let deepest = crate::plan::fold_depth(graph).into_iter().max().unwrap_or(0);
    for depth in 0..=deepest {
        let g = crate::plan::recompute::effective(graph, &passes.plan.options)?;
        let moves = pass_moves(&g, &passes.plan, depth);
        passes.step(graph, moves)?;
    }
    passes.greedy(graph)?;
    let best = if passes.plan.peak_bytes < greedy.plan.peak_bytes { passes } else { greedy };
    Ok(best.path)
}

/// A walk through recomputation options, one move at a time.
struct Walk {
    /// Where the walk stands (its options hold the recomputations so far).
    plan: Plan,
    /// Options after each move taken.
    path: Vec<PlanOptions>,
}

impl Walk {
    /// Takes the move that lowers the peak most, if one does.
    fn step(
        &mut self,
        graph: &Graph,
        moves: Vec<Vec<crate::plan::recompute::Recompute>>,
    ) -> Result<bool> {
        let mut best: Option<Plan> = None;
        for m in moves {
            // Stage cuts are searched again for each rewritten graph.
            let mut o = PlanOptions { cuts: None, ..self.plan.options.clone() };
            o.recompute.extend(m);
            let p = Plan::build(graph, &o)?;
            if p.peak_bytes < best.as_ref().map_or(self.plan.peak_bytes, |b| b.peak_bytes) {
                best = Some(p);
            }
        }
        let Some(p) = best else { return Ok(false) };
        self.path.push(p.options.clone());
        self.plan = p;
        Ok(true)
    }

    /// Single recomputations while they lower the peak.
    fn greedy(&mut self, graph: &Graph) -> Result<()> {
        for _ in 0..16 {
            let g = crate::plan::recompute::effective(graph, &self.plan.options)?;
            let moves = crate::plan::recompute::moves(&g, &self.plan);
            if !self.step(graph, moves)? {
                break;
            }
        }
        Ok(())
    }
}

/// The published method's trade-off: each layer either by parts (one row per firing) or whole,
/// no stage cuts; layers switch to by parts greedily, the one that lowers the peak most first.
/// Its own time model is a constant per layer, so it takes the configurations in that order;
/// here each is priced with the measured profile for a fair comparison.
pub fn published(
    graph: &Graph,
    profile: &Profile,
    backend: &dyn Backend,
    base: &PlanOptions,
) -> Result<Vec<Candidate>> {
    let configs = published_path(graph, base)?;
    configs.iter().map(|o| evaluate(graph, o, profile, backend, "published")).collect()
}

/// The configurations the published method walks through, from all whole to its smallest:
/// layers switch to by parts in order of their output size, largest first, each kept if it
/// does not raise the peak.
pub fn published_path(graph: &Graph, base: &PlanOptions) -> Result<Vec<PlanOptions>> {
    let limits: Vec<usize> =
        (0..graph.nodes.len()).map(|i| firing_rows(graph, NodeId(i))).collect();
    let mut parts = limits.clone();
    let opts = |parts: &[usize]| by_parts(base, parts, &[]);
    let mut peak = Plan::build(graph, &opts(&parts))?.peak_bytes;
    let mut path = vec![opts(&parts)];
    let mut order: Vec<usize> = (0..parts.len()).filter(|&n| limits[n] > 1).collect();
    order.sort_by_key(|&n| std::cmp::Reverse(graph.value(graph.nodes[n].output()).nbytes()));
    for n in order {
        let mut trial = parts.clone();
        trial[n] = 1;
        let p = Plan::build(graph, &opts(&trial))?.peak_bytes;
        if p <= peak {
            parts = trial;
            if p < peak {
                path.push(opts(&parts));
            }
            peak = p;
        }
    }
    if path.last() != Some(&opts(&parts)) {
        path.push(opts(&parts));
    }
    Ok(path)
}

/// The fastest candidate whose session fits in `budget` bytes.
pub fn fastest_within(front: &[Candidate], budget: usize) -> Result<&Candidate> {
    front
        .iter()
        .filter(|c| c.arena_bytes <= budget)
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .ok_or_else(|| Error::OutOfBudget {
            needed: front.iter().map(|c| c.arena_bytes).min().unwrap_or(0),
            budget,
        })
}

/// The smallest candidate predicted to hold `per_second` runs per second.
pub fn smallest_holding(front: &[Candidate], per_second: f64) -> Result<&Candidate> {
    front.iter().filter(|c| c.throughput() >= per_second).min_by_key(|c| c.arena_bytes).ok_or_else(|| {
        let best = front.iter().map(Candidate::throughput).fold(0.0, f64::max);
        Error::Plan(format!(
            "no plan reaches {per_second:.1} runs per second on this machine; the fastest is predicted at {best:.1}/s"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_group_nodes_by_the_rows_they_fire_on() {
        // Rows per node: a 4-row stage, a 2-row stage, one-row nodes (not grown as stages).
        let limits = [4, 4, 2, 1, 4, 2, 1];
        assert_eq!(stages(&limits), vec![vec![2, 5], vec![0, 1, 4]]);
        assert!(stages(&[1, 1]).is_empty());
    }

    #[test]
    fn entries_are_the_nodes_that_read_finer_maps() {
        use crate::graph::GraphBuilder;
        let mut b = GraphBuilder::new("entries", 1);
        let x = b.input("x", &[1, 4, 16, 16]);
        let a = b.conv(x, 8, 3, 1, 1, 1, None).unwrap(); // 16 rows from 16: not an entry
        let c = b.conv(a, 8, 3, 2, 1, 8, None).unwrap(); // 8 rows from 16: the coarser stage's entry
        let d = b.conv(c, 8, 1, 1, 0, 1, None).unwrap(); // 8 from 8
        let e = b.add(d, c).unwrap(); // 8 from 8 and 8
        b.output(e);
        let g = b.finish().unwrap();
        let limits: Vec<usize> = (0..g.nodes.len()).map(|i| firing_rows(&g, NodeId(i))).collect();
        assert_eq!(limits, vec![16, 8, 8, 8]);
        assert_eq!(entries(&g, &limits), vec![false, true, false, false]);
    }
}
