//! `frugal profile`: time the backend's kernels for a model on this machine, cache them, and
//! report how well they predict measured runs.

use clap::Args;
use frugal::planner::{self, search::evaluate};
use frugal::{planning, PlanOptions, Session, Strategy};
use serde::Serialize;

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// ONNX file, or zoo:NAME.
    model: String,
    /// Input shape, e.g. 1,3,224,224.
    #[arg(long, value_parser = super::parse_shape)]
    input_shape: Option<super::ShapeArg>,
    #[command(flatten)]
    target: super::TargetArgs,
    /// Measure this model's kernels again, replacing what the cache holds for them (when
    /// predictions are far off: the machine was busy while they were timed).
    #[arg(long)]
    fresh: bool,
    /// Timed runs per plan when checking predictions.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Check {
    plan: String,
    peak_bytes: usize,
    predicted_ms: f64,
    measured_ms: f64,
    error: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    device: String,
    profile: String,
    kernels: usize,
    checks: Vec<Check>,
}

pub fn run(a: ProfileArgs) -> anyhow::Result<()> {
    let mut bar = super::Progress::default();
    let (graph, backend, profile) =
        super::load_profiled(&a.model, a.input_shape.as_ref(), &a.target, a.fresh, &mut bar)?;
    let device = backend.capabilities().device;
    drop(bar);
    // Predictions against measurements: the baselines and the planner's front.
    let base = PlanOptions::default();
    let mut bar = super::Progress::default();
    let front = planner::front(&graph, &profile, &*backend, &base, &mut |d, t| {
        bar.update("searching plans", d, t)
    })?;
    drop(bar);
    let mut candidates = vec![evaluate(
        &graph,
        &PlanOptions::new(Strategy::LayerByLayer),
        &profile,
        &*backend,
        "layer-by-layer",
    )?];
    let step = (front.len() / 5).max(1);
    candidates.extend(front.iter().step_by(step).cloned());
    let mut checks = Vec::new();
    for c in &candidates {
        let plan = c.plan(&graph)?;
        let mut session = Session::new(&graph, &plan, a.target.backend()?)?;
        let input = vec![0.25f32; session.inputs()[0].shape.iter().product()];
        // The fastest run is the repeatable figure on a shared machine.
        let (_, fastest) = super::bench::time_runs(&mut session, &input, a.runs)?;
        let predicted = c.seconds * 1e3;
        checks.push(Check {
            plan: format!("{} ({})", c.label, frugal::format::bytes(c.peak_bytes)),
            peak_bytes: c.peak_bytes,
            predicted_ms: predicted,
            measured_ms: fastest,
            error: (predicted - fastest) / fastest,
        });
    }
    let report = Report {
        model: a.model.clone(),
        device,
        profile: planning::profile_path(&backend.capabilities().device).display().to_string(),
        kernels: profile.kernels.len(),
        checks,
    };
    let worst = report.checks.iter().map(|c| c.error.abs()).fold(0.0, f64::max);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        far_off(worst, &a.model);
        return Ok(());
    }
    println!(
        "{}: {} kernel signatures timed on {}; cached in {}",
        report.model, report.kernels, report.device, report.profile
    );
    println!("{:<36} {:>12} {:>12} {:>8}", "plan", "predicted", "measured", "error");
    for c in &report.checks {
        println!(
            "{:<36} {:>9.2} ms {:>9.2} ms {:>+7.1}%",
            c.plan,
            c.predicted_ms,
            c.measured_ms,
            c.error * 100.0
        );
    }
    far_off(worst, &a.model);
    Ok(())
}

/// Predictions further off than this suggest a profile timed in a busy spell.
pub const FAR_OFF: f64 = 0.25;

/// Tells the user (stderr) how to re-measure when the worst prediction `error` is far off.
pub fn far_off(error: f64, model: &str) {
    if error > FAR_OFF {
        eprintln!(
            "note: predictions are off by up to {:.0}%; if the machine was busy when the kernels \
             were timed, measure them again on a quiet machine: frugal profile {model} --fresh",
            error * 100.0
        );
    }
}
