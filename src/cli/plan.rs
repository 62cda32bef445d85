//! `frugal plan`: the memory report.

use anyhow::Context;
use clap::Args;
use frugal::{format, model, Plan, Strategy};
use serde::Serialize;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// ONNX file, or zoo:NAME (mobilenet_v2, resnet18, resnet50, vgg16).
    model: String,
    /// Input shape, e.g. 1,3,224,224 (needed for models with dynamic dims).
    #[arg(long, value_parser = super::parse_shape)]
    input_shape: Option<super::ShapeArg>,
    /// --strategy reports only that strategy (all by default); --budget or --min-throughput
    /// adds the plan the planner chooses.
    #[command(flatten)]
    target: super::TargetArgs,
    /// Write a plan as JSON, to run later with `frugal run --plan FILE`: the planner's choice,
    /// else --strategy's, else by parts.
    #[arg(long)]
    save: Option<std::path::PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also list every buffer of each plan.
    #[arg(long)]
    verbose: bool,
}

#[derive(Serialize)]
struct PlanReport<'p> {
    strategy: &'static str,
    peak_bytes: usize,
    peak_bytes_with_io: usize,
    arena_bytes: usize,
    live_peak_bytes: usize,
    steps: usize,
    /// Values held whole in a by-parts plan, and the consumer that holds them.
    cuts: &'p [frugal::plan::Cut],
    stages: &'p [frugal::plan::Stage],
    buffers: Vec<BufferReport<'p>>,
    /// Kernel variant chosen per node by measurement (`null`: the backend's own choice).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    kernels: &'p [Option<String>],
}

#[derive(Serialize)]
struct BufferReport<'p> {
    name: &'p str,
    role: frugal::plan::BufferRole,
    shape: &'p [usize],
    rows_held: usize,
    rows: usize,
    bytes: usize,
    offset: usize,
    first_step: usize,
    last_step: usize,
}

impl<'p> PlanReport<'p> {
    fn new(p: &'p Plan) -> Self {
        PlanReport {
            strategy: p.strategy.name(),
            peak_bytes: p.peak_bytes,
            peak_bytes_with_io: p.peak_bytes_with_io,
            arena_bytes: p.arena_bytes,
            live_peak_bytes: p.live_peak_bytes,
            steps: p.steps.len(),
            cuts: &p.cuts,
            stages: &p.stages,
            kernels: &p.kernels,
            buffers: p
                .buffers
                .iter()
                .map(|b| BufferReport {
                    name: &b.name,
                    role: b.role,
                    shape: &b.dims,
                    rows_held: b.capacity,
                    rows: frugal::plan::row_geometry(&b.dims).1,
                    bytes: b.bytes,
                    offset: b.offset,
                    first_step: b.first_step,
                    last_step: b.last_step,
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct Report<'p> {
    model: String,
    input_shape: Vec<usize>,
    weight_bytes: usize,
    plans: Vec<PlanReport<'p>>,
    /// The planner's choice for --budget / --min-throughput.
    chosen: Option<ChosenReport<'p>>,
}

#[derive(Serialize)]
struct ChosenReport<'p> {
    #[serde(flatten)]
    plan: PlanReport<'p>,
    /// Bytes a session allocates (activations with inputs and outputs, plus scratch).
    session_bytes: usize,
    predicted_ms: f64,
    /// 1, or 2 for a plan that runs in two lanes (`peak_bytes` is then the one-lane peak, and
    /// `lanes_peak_bytes` both lanes' buffers and the channels between them).
    lanes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    lanes_peak_bytes: Option<usize>,
}

pub fn run(a: PlanArgs) -> anyhow::Result<()> {
    let graph = model::load(Some(&a.model), a.input_shape.as_ref().map(|s| s.0.as_slice()))
        .with_context(|| format!("loading {}", a.model))?;
    let chooses = a.target.budget.is_some() || a.target.min_throughput.is_some();
    let strategies: Vec<Strategy> = match a.target.strategy {
        Some(s) if !chooses => vec![s],
        _ => Strategy::ALL.to_vec(),
    };
    let mut plans = Vec::new();
    for s in &strategies {
        // Strips apply to by parts; the other strategies show what they are compared with.
        let strips = a.target.strips.filter(|_| *s == Strategy::ByParts && !chooses);
        let target = frugal::planning::Target { strategy: Some(*s), strips, ..a.target.target() };
        plans.push(Plan::build(&graph, &frugal::planning::options_for(&graph, &target)?)?);
    }
    let chosen = if chooses { Some(a.target.plan(&graph)?) } else { None };
    if let Some(path) = &a.save {
        let want = a.target.strategy.unwrap_or(Strategy::ByParts);
        let plan = match &chosen {
            Some((p, _)) => p,
            None => plans.iter().find(|p| p.strategy == want).unwrap_or(&plans[0]),
        };
        std::fs::write(path, plan.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("saved the {} plan to {}", plan.strategy.name(), path.display());
    }
    let chosen_report = chosen.as_ref().and_then(|(p, c)| {
        let two = !p.options.lanes.is_empty();
        c.as_ref().map(|c| ChosenReport {
            plan: PlanReport::new(p),
            session_bytes: c.arena_bytes,
            predicted_ms: c.seconds * 1e3,
            lanes: if two { 2 } else { 1 },
            lanes_peak_bytes: two.then_some(c.peak_bytes),
        })
    });
    if let (Some(c), false) = (&chosen_report, a.json) {
        let (lanes, peak) = match c.lanes_peak_bytes {
            Some(b) => (" in two lanes", b),
            None => ("", c.plan.peak_bytes),
        };
        println!(
            "chosen: {} plan{lanes}, peak {}, session {} (activations and scratch), predicted {:.2} ms",
            c.plan.strategy,
            format::bytes(peak),
            format::bytes(c.session_bytes),
            c.predicted_ms
        );
    }
    let input_shape =
        graph.inputs.first().map(|&v| graph.value(v).shape.clone()).unwrap_or_default();
    if a.json {
        let report = Report {
            model: a.model.clone(),
            input_shape,
            weight_bytes: graph.weight_bytes(),
            plans: plans.iter().map(PlanReport::new).collect(),
            chosen: chosen_report,
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
    // The chosen plan's measured kernel variants, where it has any.
    let kernels: &[Option<String>] = chosen.as_ref().map_or(&[], |(p, _)| &p.kernels);
    let show_kernels = kernels.iter().any(Option::is_some);
    println!();
    print!("{:<40} {:<28} {:<20} {:>10}", "node", "op", "output shape", "size");
    println!("{}", if show_kernels { "  kernel" } else { "" });
    for (i, n) in graph.nodes.iter().enumerate() {
        let v = graph.value(n.output());
        print!(
            "{:<40} {:<28} {:<20} {:>10}",
            clip(&n.name, 40),
            n.op.describe(),
            format!("{:?}", v.shape),
            format::bytes(v.nbytes())
        );
        let kernel = kernels.get(i).cloned().flatten().unwrap_or_else(|| "-".into());
        println!("{}", if show_kernels { format!("  {kernel}") } else { String::new() });
    }
    println!();
    println!(
        "{:<16} {:>14} {:>18} {:>8} {:>14}",
        "strategy", "peak", "peak with I/O", "steps", "held whole"
    );
    for p in &plans {
        let whole: usize = p.cuts.iter().map(|c| c.bytes).sum();
        println!(
            "{:<16} {:>14} {:>18} {:>8} {:>14}",
            p.strategy.name(),
            format::bytes(p.peak_bytes),
            format::bytes(p.peak_bytes_with_io),
            p.steps.len(),
            if p.strategy == Strategy::ByParts { format::bytes(whole) } else { "-".into() }
        );
    }
    if let Some(p) = plans.iter().find(|p| !p.cuts.is_empty()) {
        println!();
        println!("by parts holds {} values whole (stage cuts):", p.cuts.len());
        for c in &p.cuts {
            println!(
                "  {:<40} {:>10}  for {} ({})",
                clip(&c.name, 40),
                format::bytes(c.bytes),
                c.held_for,
                c.op
            );
        }
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
