//! `frugal pareto`: the memory/throughput trade-off, measured. The planner's front, the
//! published per-layer method and layer by layer, each plan run and timed on this machine.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use frugal::planner::{self, search::evaluate, Candidate};
use frugal::{format, Graph, PlanOptions, Session, Strategy};
use serde::Serialize;

#[derive(Debug, Args)]
pub struct ParetoArgs {
    /// ONNX file, or zoo:NAME.
    model: String,
    /// Input shape, e.g. 1,3,224,224.
    #[arg(long, value_parser = super::parse_shape)]
    input_shape: Option<super::ShapeArg>,
    #[command(flatten)]
    target: super::TargetArgs,
    /// Write the curve as an SVG chart.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Timed runs per plan.
    #[arg(long, default_value_t = 10)]
    runs: usize,
}

#[derive(Clone, Serialize)]
struct Point {
    label: String,
    peak_bytes: usize,
    session_bytes: usize,
    predicted_ms: f64,
    measured_ms: f64,
    throughput_per_s: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    device: String,
    front: Vec<Point>,
    published: Vec<Point>,
    layer_by_layer: Point,
    chosen: Option<Point>,
}

fn measure(graph: &Graph, c: &Candidate, a: &ParetoArgs) -> anyhow::Result<Point> {
    let plan = c.plan(graph)?;
    let mut session = Session::new(graph, &plan, a.target.backend()?)?;
    let input = vec![0.25f32; session.inputs()[0].shape.iter().product()];
    let (median, _) = super::bench::time_runs(&mut session, &input, a.runs)?;
    Ok(Point {
        label: c.label.clone(),
        peak_bytes: c.peak_bytes,
        session_bytes: session.arena_bytes(),
        predicted_ms: c.seconds * 1e3,
        measured_ms: median,
        throughput_per_s: 1e3 / median,
    })
}

pub fn run(a: ParetoArgs) -> anyhow::Result<()> {
    let mut bar = super::Progress::default();
    let (graph, mut backend, mut profile) =
        super::load_profiled(&a.model, a.input_shape.as_ref(), &a.target, false, &mut bar)?;
    let device = backend.capabilities().device;
    let base = PlanOptions::default();
    let mut front = planner::front(&graph, &profile, &*backend, &base, &mut |d, t| {
        bar.update("searching plans", d, t)
    })?;
    // A budget below every plan by rows: the plan in column strips run and plan would choose.
    if let Some(b) = a.target.budget.filter(|&b| front.iter().all(|c| c.arena_bytes > b)) {
        let mut progress = |what: &str, d, t| bar.update(what, d, t);
        let strips = frugal::planning::strips_within(
            &graph,
            &mut profile,
            &mut *backend,
            &front,
            b,
            &mut progress,
        )?;
        front.extend(strips);
        front = planner::pareto(front);
    }
    let published = planner::published(&graph, &profile, &*backend, &base)?;
    let lbl = evaluate(
        &graph,
        &PlanOptions::new(Strategy::LayerByLayer),
        &profile,
        &*backend,
        "layer-by-layer",
    )?;
    let chosen = match (a.target.budget, a.target.min_throughput) {
        (Some(b), _) => Some(planner::fastest_within(&front, b)?.clone()),
        (None, Some(t)) => Some(planner::smallest_holding(&front, t)?.clone()),
        _ => None,
    };
    let total = front.len() + published.len() + 1;
    let mut done = 0;
    let mut timed = |c: &Candidate| -> anyhow::Result<Point> {
        done += 1;
        bar.update("running plans", done, total);
        measure(&graph, c, &a)
    };
    let front_pts: Vec<Point> = front.iter().map(&mut timed).collect::<anyhow::Result<_>>()?;
    let pub_pts: Vec<Point> = published.iter().map(&mut timed).collect::<anyhow::Result<_>>()?;
    let lbl_pt = timed(&lbl)?;
    drop(bar);
    let chosen_pt = chosen.as_ref().and_then(|c| {
        front.iter().position(|f| f.options == c.options).map(|i| front_pts[i].clone())
    });
    let report = Report {
        model: a.model.clone(),
        device,
        front: front_pts,
        published: pub_pts,
        layer_by_layer: lbl_pt,
        chosen: chosen_pt,
    };
    if let Some(path) = &a.svg {
        draw(&report, path).with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{} on {}", report.model, report.device);
    println!(
        "{:<16} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "plan", "peak", "session", "predicted", "measured", "runs/s"
    );
    let row = |p: &Point| {
        println!(
            "{:<16} {:>12} {:>12} {:>9.2} ms {:>9.2} ms {:>10.1}",
            p.label,
            format::bytes(p.peak_bytes),
            format::bytes(p.session_bytes),
            p.predicted_ms,
            p.measured_ms,
            p.throughput_per_s
        )
    };
    report.front.iter().for_each(row);
    report.published.iter().for_each(row);
    row(&report.layer_by_layer);
    if let Some(c) = &report.chosen {
        print!("chosen: ");
        row(c);
    }
    if let Some(path) = &a.svg {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The chart: memory (log scale) against measured throughput.
fn draw(r: &Report, path: &std::path::Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let mib = |p: &Point| p.session_bytes as f64 / (1024.0 * 1024.0);
    let all: Vec<&Point> =
        r.front.iter().chain(&r.published).chain(std::iter::once(&r.layer_by_layer)).collect();
    let (xmin, xmax) =
        all.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| (lo.min(mib(p)), hi.max(mib(p))));
    let ymax = all.iter().map(|p| p.throughput_per_s).fold(0.0f64, f64::max) * 1.15;
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: memory against throughput ({})", r.model, r.device),
            ("sans-serif", 18),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((xmin * 0.8..xmax * 1.25).log_scale(), 0.0..ymax)?;
    chart
        .configure_mesh()
        .x_desc("session memory: activations and scratch (MiB)")
        .y_desc("runs per second (measured)")
        .draw()?;
    let front: Vec<(f64, f64)> = r.front.iter().map(|p| (mib(p), p.throughput_per_s)).collect();
    chart
        .draw_series(LineSeries::new(front.clone(), BLUE.stroke_width(2)))?
        .label("frugal planner")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart.draw_series(front.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
    let published: Vec<(f64, f64)> =
        r.published.iter().map(|p| (mib(p), p.throughput_per_s)).collect();
    chart
        .draw_series(published.iter().map(|&p| TriangleMarker::new(p, 6, RED.filled())))?
        .label("published per-layer method")
        .legend(|(x, y)| TriangleMarker::new((x + 10, y), 6, RED.filled()));
    let l = &r.layer_by_layer;
    chart
        .draw_series(std::iter::once(Cross::new(
            (mib(l), l.throughput_per_s),
            8,
            BLACK.stroke_width(3),
        )))?
        .label("layer by layer")
        .legend(|(x, y)| Cross::new((x + 10, y), 6, BLACK.stroke_width(3)));
    if let Some(c) = &r.chosen {
        chart
            .draw_series(std::iter::once(Circle::new(
                (mib(c), c.throughput_per_s),
                9,
                GREEN.stroke_width(3),
            )))?
            .label("chosen plan")
            .legend(|(x, y)| Circle::new((x + 10, y), 6, GREEN.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
