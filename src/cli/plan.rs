//! `frugal plan`: the memory report.

use anyhow::Context;
use clap::Args;
use frugal::{format, model, Plan, PlanOptions, Strategy};
use serde::Serialize;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// ONNX file, or zoo:NAME (mobilenet_v2, resnet18, resnet50, vgg16).
    model: String,
    /// Input shape, e.g. 1,3,224,224 (needed for models with dynamic dims).
    #[arg(long, value_parser = super::parse_shape)]
    input_shape: Option<super::ShapeArg>,
    /// Report only this strategy (naive, layer-by-layer); all by default.
    #[arg(long, value_parser = super::parse_strategy)]
    strategy: Option<Strategy>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also list every buffer of each plan.
    #[arg(long)]
    verbose: bool,
}

#[derive(Serialize)]
struct PlanReport {
    strategy: &'static str,
    peak_bytes: usize,
    peak_bytes_with_io: usize,
    arena_bytes: usize,
    live_peak_bytes: usize,
    steps: usize,
    buffers: usize,
}

#[derive(Serialize)]
struct Report {
    model: String,
    input_shape: Vec<usize>,
    weight_bytes: usize,
    plans: Vec<PlanReport>,
}

pub fn run(a: PlanArgs) -> anyhow::Result<()> {
    let graph = model::load(Some(&a.model), a.input_shape.as_ref().map(|s| s.0.as_slice()))
        .with_context(|| format!("loading {}", a.model))?;
    let strategies: Vec<Strategy> = match a.strategy {
        Some(s) => vec![s],
        None => Strategy::ALL.to_vec(),
    };
    let mut plans = Vec::new();
    for s in &strategies {
        plans.push(Plan::build(&graph, &PlanOptions::new(*s))?);
    }
    let input_shape =
        graph.inputs.first().map(|&v| graph.value(v).shape.clone()).unwrap_or_default();
    if a.json {
        let report = Report {
            model: a.model.clone(),
            input_shape,
            weight_bytes: graph.weight_bytes(),
            plans: plans
                .iter()
                .map(|p| PlanReport {
                    strategy: p.strategy.name(),
                    peak_bytes: p.peak_bytes,
                    peak_bytes_with_io: p.peak_bytes_with_io,
                    arena_bytes: p.arena_bytes,
                    live_peak_bytes: p.live_peak_bytes,
                    steps: p.steps.len(),
                    buffers: p.buffers.len(),
                })
                .collect(),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "model {} — input {:?}, {} nodes, weights {}",
        a.model,
        input_shape,
        graph.nodes.len(),
        format::bytes(graph.weight_bytes())
    );
    println!();
    println!("{:<40} {:<28} {:<20} {:>10}", "node", "op", "output shape", "size");
    for n in &graph.nodes {
        let v = graph.value(n.output());
        println!(
            "{:<40} {:<28} {:<20} {:>10}",
            clip(&n.name, 40),
            n.op.describe(),
            format!("{:?}", v.shape),
            format::bytes(v.nbytes())
        );
    }
    println!();
    println!("{:<16} {:>14} {:>18} {:>8}", "strategy", "peak", "peak with I/O", "steps");
    for p in &plans {
        println!(
            "{:<16} {:>14} {:>18} {:>8}",
            p.strategy.name(),
            format::bytes(p.peak_bytes),
            format::bytes(p.peak_bytes_with_io),
            p.steps.len()
        );
    }
    if a.verbose {
        for p in &plans {
            println!();
            print!("{}", p.describe());
        }
    }
    Ok(())
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('~')).collect()
    }
}
