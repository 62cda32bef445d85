//! Two lanes: a plan's nodes split between two threads, each on its own backend and arena,
//! the rows a node of one lane reads from a node of the other handed over through small host
//! channels.
//!
//! Why: by parts, a firing is a few microseconds of work, too little to split across cores
//! (`cargo bench --bench pool`: a pool job costs 0.7 us and a split firing another 1-2 us in
//! cache traffic), so a one-row plan runs no faster on two threads than on one. Two lanes fire
//! *different* nodes at once, each firing whole on one core.
//!
//! Each lane replays the plan's steps in the plan's order, skipping the other lane's: a lane
//! receives a value's rows where the plan fires its producer (into a ring of the plan's
//! capacity), so both lanes' buffers hold what they would in a one-lane run, and every kernel
//! call is the one-lane call on the same rows: the same bits. A channel holds a few blocks
//! (one where a block is a whole map), so a producer's lane may run ahead of its readers'.
//! The lanes cannot deadlock: a lane waits either for a send at a step the other lane has not
//! reached yet (which it will reach: its own waits are for earlier steps), or for the receive
//! of a block sent at a step it has passed itself, which the other lane has passed too.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, ValueId};
use crate::ops::Op;
use crate::plan::arena::{align_up, pack, Interval};
use crate::plan::{row_geometry, Plan, StepKind};

/// Most blocks a channel holds: how many firings of a value its producer's lane may be ahead
/// of its readers'.
const SLOTS: usize = 4;
/// Bytes up to which a channel takes more than one block: a block of rows of a small map
/// gains from slack, a block the size of a whole map (a stage's output, read when complete)
/// does not, and four of those cost more than the lanes save.
const SLACK_BYTES: usize = 64 * 1024;

/// What one lane runs.
#[derive(Clone, Debug)]
pub(crate) enum Exec {
    /// The plan's step with this index.
    Step(usize),
    /// The producer's lane: copy rows `rows` of the value of channel `chan` into it.
    Send { chan: usize, rows: [usize; 2] },
    /// A reader's lane: copy those rows from channel `chan` into its ring of the value.
    Recv { chan: usize, rows: [usize; 2] },
}

/// One lane of a split plan.
#[derive(Clone, Debug)]
pub(crate) struct Lane {
    /// Whether the lane fires each node (the effective graph's).
    pub nodes: Vec<bool>,
    /// Arena offset of each plan buffer in this lane's arena (0 for buffers it never uses).
    pub offsets: Vec<usize>,
    /// Bytes of the lane's buffers (its scratch comes after).
    pub arena_bytes: usize,
    /// What it runs, in order.
    pub execs: Vec<Exec>,
}

/// A value read in the other lane than its producer's: its channel.
#[derive(Clone, Debug)]
pub(crate) struct Cut {
    /// Plan buffer holding it (in both lanes).
    pub buffer: usize,
    /// Floats of the largest block one firing sends.
    pub block: usize,
    /// Blocks the channel holds.
    pub slots: usize,
}

/// A plan split in two lanes.
#[derive(Clone, Debug)]
pub(crate) struct Split {
    pub lanes: [Lane; 2],
    pub cuts: Vec<Cut>,
}

impl Split {
    /// Host bytes of the channels.
    pub fn channel_bytes(&self) -> usize {
        self.cuts.iter().map(|c| c.block * 4 * c.slots).sum()
    }
}

/// Work of one firing, for balancing the lanes: multiply-adds of a convolution or a product,
/// elements otherwise.
pub(crate) fn work(graph: &Graph, n: NodeId, rows: usize) -> usize {
    let node = &graph.nodes[n.0];
    let out = &graph.value(node.output()).shape;
    let (planes, _, w) = row_geometry(out);
    let per = match &node.op {
        Op::Conv(c) => {
            node.inputs.get(1).map_or(1, |&v| c.macs_per_output(&graph.value(v).shape).max(1))
        }
        Op::Gemm(_) | Op::MatMul(_) => {
            node.inputs.first().map_or(1, |&v| *graph.value(v).shape.last().unwrap_or(&1))
        }
        _ => 1,
    };
    planes * rows.max(1) * w * per
}

/// Splits `plan` (of the effective `graph`) in two lanes: at the plan's own flips
/// ([`crate::plan::PlanOptions::lanes`], chosen by the planner from measured costs), or else
/// at those [`search`] finds from multiply-adds.
pub(crate) fn split(graph: &Graph, plan: &Plan) -> Result<Split> {
    let n = graph.nodes.len();
    let flips = if plan.options.lanes.is_empty() {
        search(graph, plan, &work_costs(graph, plan))?
    } else {
        plan.options.lanes.clone()
    };
    if flips.is_empty() || flips.windows(2).any(|w| w[0] >= w[1]) || flips[flips.len() - 1] >= n {
        return Err(Error::Plan(format!(
            "two lanes flipping at nodes {flips:?}: flips must increase, inside the {n} nodes"
        )));
    }
    split_flips(graph, plan, &flips, true)
}

/// Each step's cost in work units: [`work`] and [`OVERHEAD`].
fn work_costs(graph: &Graph, plan: &Plan) -> Vec<usize> {
    plan.steps
        .iter()
        .map(|s| match s.kind {
            StepKind::Fire(id) => work(graph, id, s.rows[1] - s.rows[0]) + OVERHEAD,
            _ => OVERHEAD,
        })
        .collect()
}

/// Where two lanes of `plan` should flip, given each step's cost (`cost[i]` for step `i`, in
/// any unit; [`OVERHEAD`] is about a microsecond): the best single flip (taken even where one
/// lane would be as fast: two were asked for), then more while a simulation of both lanes
/// over the plan's steps says the run gets shorter. Each node's lane is the parity of the
/// flips up to it, so a stage the plan finishes before the next is split between the lanes
/// too.
pub(crate) fn search(graph: &Graph, plan: &Plan, cost: &[usize]) -> Result<Vec<usize>> {
    search_in(graph, plan, cost, OVERHEAD)
}

/// [`search`] with costs in units of which `micro` make about a microsecond.
pub(crate) fn search_in(
    graph: &Graph,
    plan: &Plan,
    cost: &[usize],
    micro: usize,
) -> Result<Vec<usize>> {
    let n = graph.nodes.len();
    if n < 2 {
        return Err(Error::Plan("two lanes need a model of at least two nodes".into()));
    }
    let mut flips = vec![false; n];
    let chosen = |f: &[bool]| (1..n).filter(|&i| f[i]).collect::<Vec<usize>>();
    let mut best = usize::MAX;
    loop {
        let mut improved = None;
        for c in 1..n {
            flips[c] = !flips[c];
            let set = chosen(&flips);
            if set.is_empty() {
                // Back to one lane: not what was asked for.
                flips[c] = !flips[c];
                continue;
            }
            let time = simulate_in(&split_flips(graph, plan, &set, false)?, cost, micro);
            flips[c] = !flips[c];
            if time < best && improved.is_none_or(|(_, t)| time < t) {
                improved = Some((c, time));
            }
        }
        let Some((c, time)) = improved else { break };
        flips[c] = !flips[c];
        best = time;
    }
    Ok(chosen(&flips))
}

/// The split whose lanes flip at nodes `flips` (increasing, inside the graph; none: one lane
/// does everything, what the search starts from).
fn split_flips(graph: &Graph, plan: &Plan, flips: &[usize], layout: bool) -> Result<Split> {
    let n = graph.nodes.len();
    let mut lane = 0;
    let mut next = flips.iter().peekable();
    let lane_of: Vec<usize> = (0..n)
        .map(|i| {
            if next.peek() == Some(&&i) {
                next.next();
                lane ^= 1;
            }
            lane
        })
        .collect();
    split_with(graph, plan, &lane_of, layout)
}

/// Work units a step costs besides its arithmetic (about a microsecond of a core).
const OVERHEAD: usize = 10_000;

/// Time of a two-lane run of `split` in the units of `cost` (`cost[i]`: step `i`), of which
/// `micro` make about a microsecond: each lane runs its steps in order, a receive waits for
/// its send, a send for the receive its channel's slots earlier; a block costs half a
/// microsecond and a microsecond per 4000 floats copied.
pub(crate) fn simulate_in(split: &Split, cost: &[usize], micro: usize) -> usize {
    let chans = split.cuts.len();
    let mut sent: Vec<Vec<usize>> = vec![Vec::new(); chans];
    let mut taken: Vec<Vec<usize>> = vec![Vec::new(); chans];
    let mut at = [0usize; 2];
    let mut t = [0usize; 2];
    let copy = |chan: usize| micro / 2 + split.cuts[chan].block * micro / 4000;
    loop {
        let mut moved = false;
        for l in 0..2 {
            let execs = &split.lanes[l].execs;
            while at[l] < execs.len() {
                match execs[at[l]] {
                    Exec::Step(k) => t[l] += cost[k],
                    Exec::Send { chan, .. } => {
                        let seq = sent[chan].len();
                        let slots = split.cuts[chan].slots;
                        if seq >= slots {
                            match taken[chan].get(seq - slots) {
                                Some(&d) => t[l] = t[l].max(d),
                                None => break,
                            }
                        }
                        t[l] += copy(chan);
                        sent[chan].push(t[l]);
                    }
                    Exec::Recv { chan, .. } => {
                        let seq = taken[chan].len();
                        match sent[chan].get(seq) {
                            Some(&d) => t[l] = t[l].max(d),
                            None => break,
                        }
                        t[l] += copy(chan);
                        taken[chan].push(t[l]);
                    }
                }
                at[l] += 1;
                moved = true;
            }
        }
        if at[0] == split.lanes[0].execs.len() && at[1] == split.lanes[1].execs.len() {
            return t[0].max(t[1]);
        }
        assert!(moved, "two lanes waiting for each other");
    }
}

/// The split running node `i` in lane `lane_of[i]`: every value read in the other lane than
/// its producer's gets a channel, sent after each firing (a folding node sends the output rows
/// the firing touched) and received where the plan fires its producer. Buffer layouts only
/// with `layout`.
fn split_with(graph: &Graph, plan: &Plan, lane_of: &[usize], layout: bool) -> Result<Split> {
    let n = graph.nodes.len();
    let producers = graph.producers();
    // A view's readers read its source's buffer: they count as the source's.
    let mut consumers = graph.consumers();
    for w in &graph.views {
        let readers = consumers[w.value.0].clone();
        consumers[w.source.0].extend(readers);
    }
    let buffer = |v: ValueId| plan.buffer_index(v);
    // Per value: the channel carrying it, if a node of the other lane reads it.
    let mut chan_of: Vec<Option<usize>> = vec![None; graph.values.len()];
    let mut cuts = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let v = node.output();
        let readers = consumers.get(v.0).map_or(&[][..], |c| c.as_slice());
        if readers.iter().any(|r| lane_of[r.0] != lane_of[i]) {
            chan_of[v.0] = Some(cuts.len());
            cuts.push(Cut { buffer: buffer(v)?, block: 0, slots: 1 });
        }
    }
    let readers = |v: ValueId| -> [bool; 2] {
        let mut r = [false; 2];
        for &c in consumers.get(v.0).map_or(&[][..], |c| c.as_slice()) {
            r[lane_of[c.0]] = true;
        }
        r
    };
    let mut execs: [Vec<Exec>; 2] = [Vec::new(), Vec::new()];
    let mut used = [vec![false; plan.buffers.len()], vec![false; plan.buffers.len()]];
    for (i, s) in plan.steps.iter().enumerate() {
        match s.kind {
            StepKind::Feed(k) => {
                let v = graph.feed_value(k);
                for (l, &reads) in readers(v).iter().enumerate() {
                    if reads {
                        execs[l].push(Exec::Step(i));
                        used[l][buffer(v)?] = true;
                    }
                }
            }
            StepKind::Fire(id) => {
                let l = lane_of[id.0];
                execs[l].push(Exec::Step(i));
                let node = &graph.nodes[id.0];
                let out = node.output();
                used[l][buffer(out)?] = true;
                if let Some(chan) = chan_of[out.0] {
                    let shape = &graph.value(out).shape;
                    let (planes, h, w) = row_geometry(shape);
                    let x = node.inputs.first().map(|&v| graph.value(v).shape.as_slice());
                    let rows = match x.and_then(|x| node.op.fold(x)) {
                        Some(fold) => {
                            let (lo, hi) = fold.touched(s.rows[0], s.rows[1], h);
                            [lo, hi]
                        }
                        None => s.rows,
                    };
                    cuts[chan].block = cuts[chan].block.max(planes * (rows[1] - rows[0]) * w);
                    execs[l].push(Exec::Send { chan, rows });
                    execs[1 - l].push(Exec::Recv { chan, rows });
                    used[1 - l][buffer(out)?] = true;
                }
            }
            StepKind::Drain(k) => {
                let v = graph.outputs[k];
                let l = producers.get(v.0).copied().flatten().map_or(0, |p| lane_of[p.0]);
                execs[l].push(Exec::Step(i));
            }
        }
    }
    for c in &mut cuts {
        c.slots = (SLACK_BYTES / (c.block * 4).max(1)).clamp(1, SLOTS);
    }
    let lane = |l: usize, execs: Vec<Exec>| -> Lane {
        let items: Vec<Interval> = plan
            .buffers
            .iter()
            .enumerate()
            .map(|(b, buf)| Interval {
                bytes: if used[l][b] { buf.bytes } else { 0 },
                first: buf.first_step,
                last: buf.last_step,
            })
            .collect();
        // Layouts only for the split chosen (the search needs the steps alone).
        let (offsets, bytes) =
            if layout { pack(&items, plan.options.alignment) } else { (Vec::new(), 0) };
        Lane {
            nodes: (0..n).map(|i| lane_of[i] == l).collect(),
            offsets,
            arena_bytes: align_up(bytes, 64),
            execs,
        }
    };
    let [e0, e1] = execs;
    Ok(Split { lanes: [lane(0, e0), lane(1, e1)], cuts })
}

/// The channels of a running split plan: per value read across lanes, a few blocks of rows.
#[derive(Debug)]
pub(crate) struct Channels {
    slots: Vec<Vec<Mutex<Vec<f32>>>>,
    /// Blocks sent and taken so far this run, per channel.
    sent: Vec<AtomicUsize>,
    taken: Vec<AtomicUsize>,
    /// Set by a lane that fails, so that the other stops waiting.
    failed: AtomicBool,
}

impl Channels {
    pub fn new(split: &Split) -> Result<Channels> {
        let mut slots = Vec::with_capacity(split.cuts.len());
        for c in &split.cuts {
            let mut s = Vec::with_capacity(c.slots);
            for _ in 0..c.slots {
                s.push(Mutex::new(crate::limits::try_zeroed("a lane channel", c.block)?));
            }
            slots.push(s);
        }
        Ok(Channels {
            sent: split.cuts.iter().map(|_| AtomicUsize::new(0)).collect(),
            taken: split.cuts.iter().map(|_| AtomicUsize::new(0)).collect(),
            slots,
            failed: AtomicBool::new(false),
        })
    }

    /// Before a run.
    pub fn reset(&self) {
        for a in self.sent.iter().chain(&self.taken) {
            a.store(0, Ordering::Relaxed);
        }
        self.failed.store(false, Ordering::Relaxed);
    }

    /// Marks the run failed (the other lane returns at its next wait).
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Waits until `ready()`; an error if the other lane failed.
    fn wait(&self, ready: impl Fn() -> bool) -> Result<()> {
        let mut spins = 0u32;
        while !ready() {
            if self.failed.load(Ordering::Acquire) {
                return Err(Error::Plan("the other lane of a two-lane run failed".into()));
            }
            spins += 1;
            if spins < 512 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    /// Block `seq` of channel `chan` through `fill`, once the reading lane has taken the block
    /// that was in its slot.
    pub fn send(
        &self,
        chan: usize,
        seq: usize,
        fill: impl FnOnce(&mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let slots = self.slots[chan].len();
        self.wait(|| self.taken[chan].load(Ordering::Acquire) + slots > seq)?;
        {
            let mut slot = self.slots[chan][seq % slots].lock().unwrap_or_else(|e| e.into_inner());
            fill(&mut slot)?;
        }
        self.sent[chan].store(seq + 1, Ordering::Release);
        Ok(())
    }

    /// Block `seq` of channel `chan` to `take`, once the producing lane has sent it.
    pub fn recv(
        &self,
        chan: usize,
        seq: usize,
        take: impl FnOnce(&[f32]) -> Result<()>,
    ) -> Result<()> {
        self.wait(|| self.sent[chan].load(Ordering::Acquire) > seq)?;
        {
            let slot = self.slots[chan][seq % self.slots[chan].len()]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            take(&slot)?;
        }
        self.taken[chan].store(seq + 1, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(execs: Vec<Exec>) -> Lane {
        Lane { nodes: Vec::new(), offsets: Vec::new(), arena_bytes: 0, execs }
    }

    /// A producer and a reader of one value, `n` firings each, and a channel of `slots`.
    fn pipeline(n: usize, slots: usize) -> Split {
        let rows = [0, 1];
        let mut first = Vec::new();
        let mut second = Vec::new();
        for i in 0..n {
            first.push(Exec::Step(2 * i));
            first.push(Exec::Send { chan: 0, rows });
            second.push(Exec::Recv { chan: 0, rows });
            second.push(Exec::Step(2 * i + 1));
        }
        Split { lanes: [lane(first), lane(second)], cuts: vec![Cut { buffer: 0, block: 4, slots }] }
    }

    #[test]
    fn the_simulation_overlaps_a_producer_and_its_reader() {
        let n = 10;
        let cost = vec![100_000; 2 * n];
        let one_lane: usize = cost.iter().sum::<usize>() + 2 * n * OVERHEAD;
        let two = simulate_in(&pipeline(n, 4), &cost, OVERHEAD);
        // About half the one-lane time: the reader lags one firing behind.
        assert!(two < one_lane * 6 / 10, "{two} vs {one_lane}");
        // One slot: the producer waits for each block to be taken, and still overlaps.
        assert!(simulate_in(&pipeline(n, 1), &cost, OVERHEAD) < one_lane);
    }

    #[test]
    fn blocks_pass_in_order_and_a_failed_lane_releases_the_other() {
        let split = pipeline(3, 1);
        let chans = Channels::new(&split).unwrap();
        std::thread::scope(|s| {
            let sender = s.spawn(|| {
                for seq in 0..3 {
                    chans.send(0, seq, |slot| {
                        slot.fill(seq as f32);
                        Ok(())
                    })?;
                }
                Ok::<_, Error>(())
            });
            for seq in 0..3 {
                chans
                    .recv(0, seq, |slot| {
                        assert!(slot.iter().all(|&v| v == seq as f32));
                        Ok(())
                    })
                    .unwrap();
            }
            sender.join().unwrap().unwrap();
        });
        // A reader waiting for a block that never comes returns once the other lane fails.
        chans.reset();
        std::thread::scope(|s| {
            let reader = s.spawn(|| chans.recv(0, 0, |_| Ok(())));
            std::thread::sleep(std::time::Duration::from_millis(20));
            chans.fail();
            let e = reader.join().unwrap().unwrap_err().to_string();
            assert!(e.contains("other lane"), "{e}");
        });
        // So does a sender waiting for room.
        chans.reset();
        chans.send(0, 0, |_| Ok(())).unwrap();
        std::thread::scope(|s| {
            let sender = s.spawn(|| chans.send(0, 1, |_| Ok(())));
            std::thread::sleep(std::time::Duration::from_millis(20));
            chans.fail();
            assert!(sender.join().unwrap().is_err());
        });
    }
}
