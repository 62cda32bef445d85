//! Detect text on a whole page in little memory: the bundled text detector by parts, writing
//! the page's text map as a PNG.
//!
//! cargo run --release --example text_map -- [IMAGE] [OUT.png] [--scale S]
//!
//! IMAGE defaults to the bundled page, OUT to text_map.png; --scale enlarges the page first
//! (2 gives a 2496x3520 input), to see memory stay small as the image grows.

use frugal::planner::search::recompute_path;
use frugal::preprocess::ImagePrep;
use frugal::{backend_by_name, format, model, Plan, PlanOptions, Session, Strategy};

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let scale = match args.iter().position(|a| a == "--scale") {
        Some(i) => {
            let s: f32 = args.get(i + 1).map(|v| v.parse()).transpose()?.unwrap_or(1.0);
            args.drain(i..(i + 2).min(args.len()));
            s
        }
        None => 1.0,
    };
    let image = match args.first() {
        Some(p) => std::fs::read(p)?,
        None => model::PAGE.to_vec(),
    };
    let out = args.get(1).cloned().unwrap_or_else(|| "text_map.png".into());

    // The detector's preprocessing, at the page's own resolution (sides to multiples of 32).
    let img = image::load_from_memory(&image)?.to_rgb8();
    let (w, h) = ((img.width() as f32 * scale) as usize, (img.height() as f32 * scale) as usize);
    let prep = ImagePrep {
        resize_exact: Some([h, w]),
        multiple_of: Some(32),
        ..ImagePrep::preset("ppocr-det")?
    };
    let input = prep.apply(img, "page")?;
    let shape = input.shape().to_vec();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/ch_PP-OCRv4_det_infer.onnx");
    let graph = model::load(Some(path), Some(&shape))?;

    // The smallest plan: by parts, recomputing what squeeze-and-excitation blocks would hold.
    let lbl = Plan::build(&graph, &PlanOptions::new(Strategy::LayerByLayer))?;
    let smallest = recompute_path(&graph, &PlanOptions::default())?.pop();
    let plan = match smallest {
        Some(o) => Plan::build(&graph, &o)?,
        None => Plan::build(&graph, &PlanOptions::new(Strategy::ByParts))?,
    };
    let mut session = Session::new(&graph, &plan, backend_by_name("cpu")?)?;
    let started = std::time::Instant::now();
    let map = session.run(&[input.as_f32()?])?.remove(0);
    let elapsed = started.elapsed();

    // Text pixels: probability above 0.3 (the detector's published threshold).
    let (mh, mw) = (shape[2], shape[3]);
    let probs = map.as_f32()?;
    let pixels: Vec<u8> = probs.iter().map(|&p| if p > 0.3 { 0 } else { 255 }).collect();
    image::GrayImage::from_raw(mw as u32, mh as u32, pixels)
        .ok_or_else(|| anyhow::anyhow!("map of {mw}x{mh} does not fit its data"))?
        .save(&out)?;
    let text = probs.iter().filter(|&&p| p > 0.3).count() as f64 / probs.len() as f64;
    println!("page {mw}x{mh}: {:.1}% text pixels, map written to {out}", text * 100.0);
    println!(
        "activations {} by parts ({} recomputations) vs {} layer by layer ({:.1}x less); {:.2} s",
        format::bytes(session.arena_bytes()),
        plan.options.recompute.len(),
        format::bytes(lbl.peak_bytes_with_io),
        lbl.peak_bytes_with_io as f64 / session.arena_bytes() as f64,
        elapsed.as_secs_f64()
    );
    Ok(())
}
