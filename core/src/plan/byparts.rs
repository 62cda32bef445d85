//! The by-parts schedule: a demand-driven (pull) traversal from the model outputs.
//!
//! To drain the next rows of an output, the scheduler asks for the firing that produces them;
//! a firing whose input lacks rows first asks the producer of that input for its next part, and
//! so on up to the model inputs, which are fed a few rows at a time. Each node therefore fires
//! only when a consumer needs its rows, and every buffer drops a row once no reader will touch
//! it again. Replaying this simulation gives each buffer's exact peak occupancy, which becomes
//! its ring capacity: lagging branches of residual and concat blocks hold exactly the rows the
//! lag needs, and a value some consumer needs whole (squeeze-and-excitation scales, flatten
//! before a dense layer) ends up held whole. Where the lagging reader is a node that shrinks
//! its input row for row (a feature pyramid's 1x1 lateral convolution), it fires as the rows
//! arrive instead, so the lag is held in its narrower output.

use super::{row_geometry, PlanOptions, Step, StepKind};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, ValueId};
use crate::rows::RowMap;

/// Something the scheduler can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Task {
    Feed(usize),
    Fire(usize),
    Drain(usize),
}

/// Who reads a value.
#[derive(Clone, Copy, Debug)]
enum Reader {
    /// Input `slot` of a node.
    Node(usize, usize),
    /// Model output `k`.
    Drain(usize),
}

struct Sim<'g> {
    g: &'g Graph,
    /// Per value: the value whose buffer holds its rows (itself, or a view's source).
    canon: Vec<ValueId>,
    rows: Vec<usize>,
    producer: Vec<Option<Task>>,
    readers: Vec<Vec<Reader>>,
    maps: Vec<Vec<RowMap>>,
    /// Per node: how it folds input rows into its output, for nodes firing on input rows.
    folds: Vec<Option<crate::rows::Fold>>,
    /// Per value: consumers wait until it is complete (a stage cut).
    cut: Vec<bool>,
    /// Per node: its input slots, the one behind the most whole-map folds first (see
    /// [`super::fold_depth`]): a scale computed from a whole map is the long wait, and rows
    /// fetched before it would sit in their rings through all of it. Of equally deep ones,
    /// the first, or with [`PlanOptions::larger_pools_first`] the one behind the largest fold
    /// ([`super::fold_rows`]).
    demand_order: Vec<Vec<usize>>,
    /// Per node: it only gathers statistics (everything it feeds ends in a global pool) or it
    /// is a one-row node feeding a many-row one (a pool and scale of squeeze-and-excitation),
    /// so it fires as soon as its inputs allow rather than when demanded (see [`Sim::settle`]).
    eager: Vec<bool>,
    /// Per node: its one streamed input (a `Some` only for nodes whose output is smaller than
    /// that input, folds excluded). Such a node fires as soon as its input's rows allow when
    /// it is the reader holding them back (see [`Sim::narrows_now`]): the rows a lagging
    /// branch waits for then wait in its smaller output (a feature pyramid's 1x1 lateral
    /// convolution, waiting for the deeper levels, holds 12 channels instead of 48).
    narrowing: Vec<Option<usize>>,
    part: Vec<usize>,
    feed_part: usize,
    /// Per node: output rows produced so far (input rows folded in, for accumulating nodes).
    done: Vec<usize>,
    fed: Vec<usize>,
    drained: Vec<usize>,
    /// Per value: rows `[0, produced)` exist (some may have been dropped already).
    produced: Vec<usize>,
    /// Per value: most rows ever held at once.
    cap: Vec<usize>,
    steps: Vec<Step>,
}

/// Steps and per-value ring capacities of the by-parts strategy.
pub(super) fn schedule(graph: &Graph, options: &PlanOptions) -> Result<(Vec<Step>, Vec<usize>)> {
    let mut sim = Sim::new(graph, options);
    let outputs = graph.outputs.len();
    loop {
        let mut progressed = false;
        // Drain outputs round-robin so that outputs of different branches advance together.
        for k in 0..outputs {
            if sim.drained[k] < sim.rows[graph.outputs[k].0] {
                sim.demand(Task::Drain(k))?;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    Ok((sim.steps, sim.cap))
}

impl<'g> Sim<'g> {
    fn new(g: &'g Graph, options: &PlanOptions) -> Sim<'g> {
        let nv = g.values.len();
        let rows: Vec<usize> = g.values.iter().map(|v| row_geometry(&v.shape).1).collect();
        let mut producer = vec![None; nv];
        let mut readers = vec![Vec::new(); nv];
        for k in 0..g.feeds() {
            producer[g.feed_value(k).0] = Some(Task::Feed(k));
        }
        let mut maps = Vec::with_capacity(g.nodes.len());
        let mut folds = Vec::with_capacity(g.nodes.len());
        for (i, n) in g.nodes.iter().enumerate() {
            producer[n.output().0] = Some(Task::Fire(i));
            let shapes: Vec<&[usize]> =
                n.inputs.iter().map(|&v| g.value(v).shape.as_slice()).collect();
            let out = &g.value(n.output()).shape;
            maps.push(
                (0..n.inputs.len()).map(|s| n.op.row_map(s, &shapes, out)).collect::<Vec<_>>(),
            );
            folds.push(n.op.fold(shapes[0]));
            for (s, &v) in n.inputs.iter().enumerate() {
                if !g.value(v).is_constant() {
                    // A view's reader holds rows of its source.
                    readers[g.source_of(v).0 .0].push(Reader::Node(i, s));
                }
            }
        }
        for (k, &v) in g.outputs.iter().enumerate() {
            readers[v.0].push(Reader::Drain(k));
        }
        let part = (0..g.nodes.len()).map(|i| options.part_of(NodeId(i))).collect();
        let mut cut = vec![false; nv];
        // A strip's share of the map strips join is held whole: the join reads it only once
        // every strip is done, so that the strips run one after another.
        let joins = super::strips::joins(g, options);
        for v in options.cuts.iter().flatten().chain(&joins) {
            if let Some(c) = cut.get_mut(v.0) {
                *c = true;
            }
        }
        // Reverse topological order. A node of one row is eager when it leads to a node of
        // many rows: the pool and scale of a squeeze-and-excitation block (holding one row
        // costs nothing, and eager readers wait for it), not a classifier's pool and dense
        // layers, which the model output demands anyway. A node of many rows is eager when
        // every reader is: a branch that only gathers statistics.
        let mut eager = vec![false; g.nodes.len()];
        for i in (0..g.nodes.len()).rev() {
            let out = g.nodes[i].output();
            let read = &readers[out.0];
            eager[i] = !read.is_empty()
                && read.iter().all(|r| {
                    matches!(r, Reader::Node(n, _) if eager[*n]
                    || (rows[out.0] <= 1 && rows[g.nodes[*n].output().0] > 1))
                });
        }
        let narrowing = g
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut streamed = n.inputs.iter().filter(|&&v| !g.value(v).is_constant());
                let (Some(&x), None) = (streamed.next(), streamed.next()) else { return None };
                let elements = |v: ValueId| g.value(v).shape.iter().product::<usize>();
                let shrinks = elements(n.output()) < elements(x);
                // Row for row: a strided node (a backbone's downsampling) also shrinks, but
                // firing it ahead ran the detector's trunk ahead of its lateral branches and
                // held a 48-channel map whole (its smallest plan at 2048x2048: 19.9 MB against
                // 13.2, measured with strided nodes included, not kept).
                let same_rows = rows[n.output().0] == rows[x.0];
                (shrinks && same_rows && folds[i].is_none() && rows[x.0] > 1)
                    .then(|| n.inputs.iter().position(|&v| v == x).unwrap_or(0))
            })
            .collect();
        let depth = super::fold_depth(g);
        let folded = options.larger_pools_first.then(|| super::fold_rows(g, &depth));
        let demand_order = g
            .nodes
            .iter()
            .map(|n| {
                let mut slots: Vec<usize> = (0..n.inputs.len()).collect();
                slots.sort_by_key(|&s| {
                    let v = n.inputs[s].0;
                    let larger = folded.as_ref().map_or(0, |f| f[v]);
                    std::cmp::Reverse((depth[v], larger))
                });
                slots
            })
            .collect();
        Sim {
            canon: (0..nv).map(|v| g.source_of(ValueId(v)).0).collect(),
            cut,
            eager,
            narrowing,
            demand_order,
            g,
            rows,
            producer,
            readers,
            maps,
            folds,
            part,
            feed_part: options.part_rows.max(1),
            done: vec![0; g.nodes.len()],
            fed: vec![0; g.feeds()],
            drained: vec![0; g.outputs.len()],
            produced: vec![0; nv],
            cap: vec![0; nv],
            steps: Vec::new(),
        }
    }

    /// Rows a node's firings count: output rows, or input rows for accumulating nodes.
    fn limit(&self, n: usize) -> usize {
        let node = &self.g.nodes[n];
        if self.folds[n].is_some() {
            self.rows[node.inputs[0].0]
        } else {
            self.rows[node.output().0]
        }
    }

    /// Rows of the node's next firing.
    fn span(&self, n: usize) -> (usize, usize) {
        let a = self.done[n];
        (a, (a + self.part[n]).min(self.limit(n)))
    }

    /// First row of `v` that reader `r` may still read.
    fn next_lo(&self, r: Reader, v: ValueId) -> usize {
        match r {
            Reader::Drain(k) => self.drained[k],
            Reader::Node(n, s) => {
                if self.done[n] >= self.limit(n) {
                    return self.rows[v.0];
                }
                let (a, b) = self.span(n);
                self.maps[n][s].need(a, b, self.rows[v.0]).0
            }
        }
    }

    /// Rows below this are dropped: no reader needs them any more.
    fn freed(&self, v: ValueId) -> usize {
        self.readers[v.0].iter().map(|&r| self.next_lo(r, v)).min().unwrap_or(self.rows[v.0])
    }

    /// An input `task` waits for, if any.
    fn missing(&self, task: Task) -> Option<ValueId> {
        match task {
            Task::Feed(_) => None,
            Task::Drain(k) => {
                let v = self.g.outputs[k];
                let want = (self.drained[k] + self.feed_part).min(self.rows[v.0]);
                (self.produced[v.0] < want).then_some(v)
            }
            Task::Fire(n) => {
                let node = &self.g.nodes[n];
                let (a, b) = self.span(n);
                self.demand_order[n].iter().find_map(|&s| {
                    let v = node.inputs[s];
                    if self.g.value(v).is_constant() {
                        return None;
                    }
                    let v = self.canon[v.0];
                    let (_, hi) = self.maps[n][s].need(a, b, self.rows[v.0]);
                    let hi = if self.cut[v.0] { self.rows[v.0] } else { hi };
                    (self.produced[v.0] < hi).then_some(v)
                })
            }
        }
    }

    /// Runs `task` once, first running whatever it waits for.
    fn demand(&mut self, task: Task) -> Result<()> {
        let mut stack = vec![task];
        while let Some(&t) = stack.last() {
            match self.missing(t) {
                Some(v) => match self.producer[v.0] {
                    Some(p) => stack.push(p),
                    None => {
                        return Err(Error::Plan(format!(
                            "value '{}' has no producer",
                            self.g.value(v).name
                        )));
                    }
                },
                None => {
                    stack.pop();
                    // Settling may already have run a firing the stack asked for.
                    if let Task::Fire(n) = t {
                        if self.done[n] >= self.limit(n) {
                            continue;
                        }
                    }
                    self.run(t)?;
                    if let Some(v) = self.written(t) {
                        self.settle(v)?;
                    }
                }
            }
            if self.steps.len() > crate::limits::MAX_STEPS {
                return Err(Error::TooLarge {
                    what: "the by-parts schedule".into(),
                    reason: format!(
                        "more than {} steps; use more rows per firing (--part-rows) or \
                         --strategy layer-by-layer",
                        crate::limits::MAX_STEPS
                    ),
                });
            }
            if stack.len() > 4 * self.g.nodes.len() + 16 {
                return Err(Error::Plan("the by-parts schedule does not converge".into()));
            }
        }
        Ok(())
    }

    /// The value a task writes rows of.
    fn written(&self, t: Task) -> Option<ValueId> {
        match t {
            Task::Feed(k) => Some(self.g.feed_value(k)),
            Task::Fire(n) => Some(self.g.nodes[n].output()),
            Task::Drain(_) => None,
        }
    }

    /// Runs every eager firing that the new rows of `v` allow, and those that theirs allow.
    /// A branch that only feeds a global pool (the statistics pass of a recomputed
    /// squeeze-and-excitation block) is never demanded by a model output until the pool is
    /// needed whole; firing it while its inputs stream keeps those inputs from being held
    /// whole for it.
    fn settle(&mut self, v: ValueId) -> Result<()> {
        let mut work: Vec<usize> = Vec::new();
        self.eager_readers(v, &mut work);
        while let Some(n) = work.pop() {
            let mut fired = false;
            while self.done[n] < self.limit(n)
                && self.missing(Task::Fire(n)).is_none()
                && ((self.eager[n] && self.room(n)) || self.narrows_now(n))
            {
                self.run(Task::Fire(n))?;
                fired = true;
            }
            if fired {
                // Its readers may fire now, and producers it stalled may have room again.
                self.eager_readers(self.g.nodes[n].output(), &mut work);
                for &u in &self.g.nodes[n].inputs {
                    if let Some(Task::Fire(p)) = self.producer[self.canon[u.0].0] {
                        if self.eager[p] && !work.contains(&p) {
                            work.push(p);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn eager_readers(&self, v: ValueId, work: &mut Vec<usize>) {
        for r in &self.readers[v.0] {
            if let Reader::Node(n, _) = *r {
                if (self.eager[n] || self.narrowing[n].is_some()) && !work.contains(&n) {
                    work.push(n);
                }
            }
        }
    }

    /// Whether narrowing node `n` ([`Sim::narrowing`]) should fire ahead of demand: it alone
    /// holds its input's oldest rows (every other reader has moved past them), so its firing
    /// frees input rows and keeps the lag in its smaller output instead. Where another
    /// reader lags as far, firing would free nothing and only add output rows.
    fn narrows_now(&self, n: usize) -> bool {
        let Some(s) = self.narrowing[n] else { return false };
        let x = self.canon[self.g.nodes[n].inputs[s].0];
        let mine = self.next_lo(Reader::Node(n, s), x);
        let mut others = self.readers[x.0]
            .iter()
            .filter(|&&r| !matches!(r, Reader::Node(m, t) if m == n && t == s))
            .peekable();
        others.peek().is_some() && others.all(|&r| self.next_lo(r, x) > mine)
    }

    /// Whether an eager firing of `n` would only fill rows its readers' next firings read:
    /// a reader blocked on another input (the lagging side of a join) stops it, so eager
    /// rows never pile up.
    fn room(&self, n: usize) -> bool {
        if self.folds[n].is_some() {
            return true;
        }
        let out = self.g.nodes[n].output();
        let held = self.produced[out.0] - self.freed(out).min(self.produced[out.0]);
        let want = self.readers[out.0]
            .iter()
            .map(|&r| match r {
                Reader::Node(m, s) => {
                    let (a, b) = self.span(m);
                    let (lo, hi) = self.maps[m][s].need(a, b, self.rows[out.0]);
                    hi.saturating_sub(lo)
                }
                Reader::Drain(_) => self.feed_part,
            })
            .max()
            .unwrap_or(0);
        held < want.max(1)
    }

    fn grow(&mut self, v: ValueId, held: usize) {
        self.cap[v.0] = self.cap[v.0].max(held);
    }

    fn run(&mut self, t: Task) -> Result<()> {
        match t {
            Task::Feed(k) => {
                let v = self.g.feed_value(k);
                let a = self.fed[k];
                let b = (a + self.feed_part).min(self.rows[v.0]);
                self.steps.push(Step { kind: StepKind::Feed(k), rows: [a, b] });
                self.fed[k] = b;
                self.produced[v.0] = b;
                let held = b - self.freed(v).min(a);
                self.grow(v, held);
            }
            Task::Drain(k) => {
                let v = self.g.outputs[k];
                let a = self.drained[k];
                let b = (a + self.feed_part).min(self.rows[v.0]);
                self.steps.push(Step { kind: StepKind::Drain(k), rows: [a, b] });
                self.drained[k] = b;
            }
            Task::Fire(n) => {
                let (a, b) = self.span(n);
                if a >= b {
                    return Err(Error::Plan(format!(
                        "node '{}' fired past its last row",
                        self.g.nodes[n].name
                    )));
                }
                self.steps.push(Step { kind: StepKind::Fire(NodeId(n)), rows: [a, b] });
                self.done[n] = b;
                let out = self.g.nodes[n].output();
                if let Some(fold) = self.folds[n] {
                    // Started rows hold partial results; complete ones are readable.
                    let (h_in, h) = (self.limit(n), self.rows[out.0]);
                    let complete = fold.complete(b, h_in, h);
                    self.produced[out.0] = complete;
                    // Rows in progress stay, even those no reader needs (a strided reader may
                    // skip them): the next firing still folds into them.
                    let started = fold.started(b, h);
                    let touched = fold.touched(a, b, h).0;
                    let held = started - self.freed(out).min(complete).min(touched).min(started);
                    self.grow(out, held);
                } else {
                    self.produced[out.0] = b;
                    // Every row written must have a slot, even rows no reader needs.
                    let held = b - self.freed(out).min(a);
                    self.grow(out, held);
                }
            }
        }
        Ok(())
    }
}

/// Values whose removal disconnects the model inputs from its outputs: cutting there splits the
/// graph into stages that never run at the same time. Nodes are in topological order and all
/// lead to an output, so the output of node `i` is one exactly when it is the only value
/// produced up to `i` (model inputs included) and read after `i`: every path from the inputs
/// to the outputs then crosses that boundary through it. Linear in nodes and edges.
pub(super) fn articulations(g: &Graph) -> Vec<ValueId> {
    let n = g.nodes.len();
    // Position of each value's producer (model inputs: before node 0) and of its last reader
    // (graph outputs: after the last node), as boundaries `0..=n`.
    let mut born = vec![usize::MAX; g.values.len()];
    let mut last = vec![0usize; g.values.len()];
    for k in 0..g.feeds() {
        born[g.feed_value(k).0] = 0;
    }
    for (i, node) in g.nodes.iter().enumerate() {
        born[node.output().0] = i + 1;
        for &x in &node.inputs {
            let x = g.source_of(x).0;
            last[x.0] = last[x.0].max(i + 1);
        }
    }
    for &o in &g.outputs {
        last[o.0] = n + 1;
    }
    // crossing[b]: values alive at boundary b (after node b-1, before node b): those born at
    // or before b and read after it.
    let mut delta = vec![0isize; n + 2];
    for v in 0..g.values.len() {
        if born[v] != usize::MAX && last[v] > born[v] {
            delta[born[v]] += 1;
            delta[last[v]] -= 1;
        }
    }
    let mut crossing = vec![0isize; n + 1];
    let mut run = 0;
    for (b, c) in crossing.iter_mut().enumerate() {
        run += delta[b];
        *c = run;
    }
    let mut out = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let v = node.output();
        if !g.outputs.contains(&v) && last[v.0] > i + 1 && crossing[i + 1] == 1 {
            out.push(v);
        }
    }
    out
}

/// Most candidates one round of the cut search tries: graphs with more articulation values
/// (thousands of layers in a chain) try an even sample, so planning stays quick.
const MAX_CUT_CANDIDATES: usize = 256;

/// Peak intermediate bytes of the by-parts plan with `cuts`, or `None` when it cannot be below
/// `beat` (its live bytes already reach it: packing never does better than that, so the
/// quadratic packing is skipped).
fn peak_with(
    g: &Graph,
    options: &PlanOptions,
    cuts: &[ValueId],
    beat: usize,
) -> Result<Option<usize>> {
    let options = PlanOptions { cuts: Some(cuts.to_vec()), ..options.clone() };
    let (steps, cap) = schedule(g, &options)?;
    if super::live_peak_of(g, &options, &steps, &cap) >= beat {
        return Ok(None);
    }
    Ok(Some(super::finish(g, &options, steps, &cap, true).peak_bytes))
}

/// Greedy search for stage cuts: adds the cut that lowers the peak most, while one does.
/// Candidates are articulation values smaller than the current peak (a cut holds its value
/// whole, so a bigger one can only raise it).
pub(super) fn search_cuts(g: &Graph, options: &PlanOptions) -> Result<Vec<ValueId>> {
    let all = articulations(g);
    let step = all.len().div_ceil(MAX_CUT_CANDIDATES).max(1);
    let candidates: Vec<ValueId> = all.into_iter().step_by(step).collect();
    let mut cuts: Vec<ValueId> = Vec::new();
    let mut best = peak_with(g, options, &cuts, usize::MAX)?.unwrap_or(usize::MAX);
    loop {
        let mut round: Option<(usize, ValueId)> = None;
        for &c in &candidates {
            if cuts.contains(&c) || g.value(c).nbytes() >= best {
                continue;
            }
            cuts.push(c);
            let beat = round.map_or(best, |r| r.0);
            let p = peak_with(g, options, &cuts, beat)?;
            cuts.pop();
            if let Some(p) = p.filter(|&p| p < beat) {
                round = Some((p, c));
            }
        }
        match round {
            Some((p, c)) => {
                best = p;
                cuts.push(c);
            }
            None => break,
        }
    }
    cuts.sort();
    Ok(cuts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, by search: removing `v` leaves no path from the inputs to the outputs.
    fn articulations_by_search(g: &Graph) -> Vec<ValueId> {
        let consumers = g.consumers();
        let mut out = Vec::new();
        for n in &g.nodes {
            let v = n.output();
            if g.outputs.contains(&v) {
                continue;
            }
            let mut seen = vec![false; g.values.len()];
            let mut stack: Vec<ValueId> = (0..g.feeds()).map(|k| g.feed_value(k)).collect();
            let mut reached = false;
            while let Some(x) = stack.pop() {
                if x == v || std::mem::replace(&mut seen[x.0], true) {
                    continue;
                }
                if g.outputs.contains(&x) {
                    reached = true;
                    break;
                }
                stack.extend(consumers[x.0].iter().map(|c| g.node(*c).output()));
            }
            if !reached {
                out.push(v);
            }
        }
        out
    }

    #[test]
    fn the_linear_articulation_scan_agrees_with_the_definition() {
        for name in crate::zoo::NAMES {
            let g = crate::zoo::by_name(name, 64, 64, 0).unwrap();
            assert_eq!(articulations(&g), articulations_by_search(&g), "{name}");
        }
    }
}
