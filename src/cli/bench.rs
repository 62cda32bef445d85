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
    /// Timed runs (after two warm-up runs).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
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
    let graph = model::load(Some(&a.model), a.input_shape.as_ref().map(|s| s.0.as_slice()))
        .with_context(|| format!("loading {}", a.model))?;
    let (plan, chosen) = a.target.plan(&graph)?;
    let strategy = plan.strategy;
    let threads = a.target.backend_options().threads;
    let mut session = Session::new(&graph, &plan, a.target.backend()?)?;
    let shape = session.inputs()[0].shape.clone();
    let input: Vec<f32> =
        (0..shape.iter().product::<usize>()).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
    let (median, min) = time_runs(&mut session, &input, a.runs)?;
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
    };
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
    }
    Ok(())
}
