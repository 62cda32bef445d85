//! `frugal bench`: throughput and memory of one plan, measured.

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use frugal::{format, model, Session};
use serde::Serialize;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// ONNX file, or zoo:NAME.
    model: String,
    /// Input shape, e.g. 1,3,224,224 (needed for models with dynamic dims).
    #[arg(long, value_parser = super::parse_shape)]
    input_shape: Option<super::ShapeArg>,
    #[command(flatten)]
    target: super::TargetArgs,
    /// Measure a plan saved by `frugal plan --save` instead of planning now.
    #[arg(long)]
    plan: Option<std::path::PathBuf>,
    /// Timed runs (after two warm-up runs).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Also time every step inside the runs and report each node's share (the backend is
    /// synchronised after each step; on the CPU that costs nothing).
    #[arg(long)]
    per_node: bool,
}

#[derive(Serialize)]
struct Report {
    model: String,
    strategy: &'static str,
    peak_bytes: usize,
    peak_bytes_with_io: usize,
    arena_bytes: usize,
    /// Bytes the backend holds for the uploaded weights (on a GPU: device memory).
    weight_bytes: usize,
    median_ms: f64,
    min_ms: f64,
    throughput_per_s: f64,
    runs: usize,
    threads: usize,
    budget: Option<usize>,
    /// The planner's prediction, when it chose the plan.
    predicted_ms: Option<f64>,
    /// With `--per-node`: each node's time in a run, largest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    per_node: Option<Vec<NodeTime>>,
}

/// One node's share of a run: the median over runs of the summed seconds of its firings.
#[derive(Serialize)]
struct NodeTime {
    node: String,
    op: String,
    output_shape: Vec<usize>,
    firings: usize,
    median_ms: f64,
}

/// A node's name, operator and output shape, as the per-node report prints them.
type NodeLabel = (String, String, Vec<usize>);

/// The labels of the nodes a plan's steps fire: the graph it runs, which has recomputed
/// copies of nodes when the plan recomputes values (their steps index past the model's own
/// nodes).
fn node_labels(graph: &frugal::Graph, plan: &frugal::Plan) -> anyhow::Result<Vec<NodeLabel>> {
    let run = frugal::plan::recompute::effective(graph, &plan.options)?;
    Ok(run
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.op.describe(), run.value(n.output()).shape.clone()))
        .collect())
}

/// Times every step of `runs` runs (after one warm-up) and sums them per node; feeds and
/// drains are reported as the pseudo-nodes `(feed)` and `(drain)`, and the run's time outside
/// every step (the executor's own bookkeeping between firings) as `(between steps)`.
fn per_node(
    labels: &[NodeLabel],
    session: &mut Session,
    input: &[f32],
    runs: usize,
) -> anyhow::Result<Vec<NodeTime>> {
    use frugal::plan::StepKind;
    let mut outs: Vec<Vec<f32>> =
        session.outputs().iter().map(|o| vec![0.0; o.shape.iter().product()]).collect();
    let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    let steps = session.steps().to_vec();
    // Row of the report per step: node index, then feed and drain.
    let (feed, drain, between) = (labels.len(), labels.len() + 1, labels.len() + 2);
    let slot = |k: StepKind| match k {
        StepKind::Fire(n) => n.0,
        StepKind::Feed(_) => feed,
        StepKind::Drain(_) => drain,
    };
    let mut firings = vec![0usize; labels.len() + 3];
    steps.iter().for_each(|s| firings[slot(s.kind)] += 1);
    firings[between] = 1;
    let mut seconds = vec![0.0; steps.len()];
    let mut per_run: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); firings.len()];
    session.run_timed_into(&[input], &mut views, &mut seconds)?;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        session.run_timed_into(&[input], &mut views, &mut seconds)?;
        let wall = t.elapsed().as_secs_f64();
        let mut sum = vec![0.0; firings.len()];
        steps.iter().zip(&seconds).for_each(|(s, t)| sum[slot(s.kind)] += t);
        sum[between] = (wall - seconds.iter().sum::<f64>()).max(0.0);
        per_run.iter_mut().zip(sum).for_each(|(v, t)| v.push(t));
    }
    let mut rows: Vec<NodeTime> = per_run
        .into_iter()
        .enumerate()
        .filter(|&(i, _)| firings[i] > 0)
        .map(|(i, mut v)| {
            v.sort_by(f64::total_cmp);
            let (node, op, output_shape) = match labels.get(i) {
                Some(l) => l.clone(),
                None => {
                    let name = match i {
                        _ if i == feed => "(feed)",
                        _ if i == drain => "(drain)",
                        _ => "(between steps)",
                    };
                    (name.to_string(), String::new(), Vec::new())
                }
            };
            NodeTime {
                node,
                op,
                output_shape,
                firings: firings[i],
                median_ms: v[v.len() / 2] * 1e3,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.median_ms.total_cmp(&a.median_ms));
    Ok(rows)
}

/// The per-node table, then the same times summed per operator description.
fn print_per_node(rows: &[NodeTime], median_ms: f64) {
    let total: f64 = rows.iter().map(|r| r.median_ms).sum();
    println!(
        "per node (median of the timed runs; steps sum to {total:.3} ms, a whole run {median_ms:.3} ms):"
    );
    println!("{:>9} {:>6} {:>8}  {:<28} {:<22} node", "ms", "share", "firings", "op", "output");
    for r in rows {
        println!(
            "{:>9.3} {:>5.1}% {:>8}  {:<28} {:<22} {}",
            r.median_ms,
            100.0 * r.median_ms / total,
            r.firings,
            r.op,
            format!("{:?}", r.output_shape),
            r.node
        );
    }
    let mut kinds: Vec<(String, f64, usize)> = Vec::new();
    for r in rows {
        match kinds.iter_mut().find(|k| k.0 == r.op) {
            Some(k) => {
                k.1 += r.median_ms;
                k.2 += 1;
            }
            None => kinds.push((r.op.clone(), r.median_ms, 1)),
        };
    }
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("per operator:");
    for (op, ms, n) in kinds {
        let op = if op.is_empty() { "(feed, drain, between steps)" } else { op.as_str() };
        println!("{ms:>9.3} {:>5.1}% {n:>8}  {op}", 100.0 * ms / total);
    }
}

/// Median and minimum of `runs` timed runs of `session` on `input`, after two warm-ups.
pub fn time_runs(session: &mut Session, input: &[f32], runs: usize) -> anyhow::Result<(f64, f64)> {
    let mut outs: Vec<Vec<f32>> =
        session.outputs().iter().map(|o| vec![0.0; o.shape.iter().product()]).collect();
    let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    for _ in 0..2 {
        session.run_into(&[input], &mut views)?;
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        session.run_into(&[input], &mut views)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[ms.len() / 2], ms[0]))
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let mut graph = model::load(Some(&a.model), a.input_shape.as_ref().map(|s| s.0.as_slice()))
        .with_context(|| format!("loading {}", a.model))?;
    let backend = a.target.backend()?;
    let (plan, chosen) = match &a.plan {
        Some(path) => (a.target.saved_plan(path, &graph, &*backend)?, None),
        None => a.target.plan(&graph)?,
    };
    let strategy = plan.strategy;
    let threads = a.target.backend_options().threads;
    // Labelled before the session takes the graph's weights.
    let labels = if a.per_node { Some(node_labels(&graph, &plan)?) } else { None };
    let mut session = a.target.session_on(&mut graph, &plan, backend)?;
    let shape = session.inputs()[0].shape.clone();
    let input: Vec<f32> =
        (0..shape.iter().product::<usize>()).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
    let (median, min) = time_runs(&mut session, &input, a.runs)?;
    let nodes = match &labels {
        Some(labels) => Some(per_node(labels, &mut session, &input, a.runs)?),
        None => None,
    };
    let report = Report {
        model: a.model.clone(),
        strategy: strategy.name(),
        peak_bytes: plan.peak_bytes,
        peak_bytes_with_io: plan.peak_bytes_with_io,
        arena_bytes: session.arena_bytes(),
        weight_bytes: session.weight_bytes(),
        median_ms: median,
        min_ms: min,
        throughput_per_s: 1e3 / median,
        runs: a.runs.max(1),
        threads,
        budget: a.target.budget,
        predicted_ms: chosen.map(|c| c.seconds * 1e3),
        per_node: nodes,
    };
    // Against the fastest run, as `frugal profile` checks.
    if let Some(predicted) = report.predicted_ms {
        super::profile::far_off((predicted - min).abs() / min, &a.model);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} {}: {:.2} ms median ({:.2} min) over {} runs, {:.1}/s, {} threads; peak {} ({} with I/O), arena {}",
            a.model,
            report.strategy,
            median,
            min,
            report.runs,
            report.throughput_per_s,
            report.threads,
            format::bytes(report.peak_bytes),
            format::bytes(report.peak_bytes_with_io),
            format::bytes(report.arena_bytes)
        );
        if let Some(rows) = &report.per_node {
            print_per_node(rows, median);
        }
    }
    Ok(())
}
