//! Peaks of the text detector's recomputing plans, in both demand orders
//! (`PlanOptions::larger_pools_first`): the smallest the recomputation search finds, and the
//! smallest of the input order with narrow backbone maps held whole for the later passes
//! (what the planner's keep walk adds). Planning only: nothing runs.
//!
//! cargo run --release --example held_maps [-- HEIGHT [WIDTH]]      (default 2048x2048)
use frugal::planner::search::recompute_path;
use frugal::{model, Plan, PlanOptions};

fn main() -> frugal::Result<()> {
    let arg = |i: usize| std::env::args().nth(i).and_then(|a| a.parse::<usize>().ok());
    let h = arg(1).unwrap_or(2048);
    let w = arg(2).unwrap_or(h);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/ch_PP-OCRv4_det_infer.onnx");
    let g = model::load(Some(path), Some(&[1, 3, h, w]))?;
    for larger_pools_first in [false, true] {
        let base = PlanOptions { larger_pools_first, ..Default::default() };
        let peak = match recompute_path(&g, &base)?.pop() {
            Some(o) => Plan::build(&g, &o)?.peak_bytes as f64 / 1e6,
            None => f64::NAN,
        };
        println!(
            "smallest recomputing plan, larger_pools_first {larger_pools_first}: {peak:.2} MB"
        );
    }
    let Some(smallest) = recompute_path(&g, &PlanOptions::default())?.pop() else {
        println!("nothing to recompute at {h}x{w}");
        return Ok(());
    };
    let id = |name: &str| g.values.iter().position(|v| v.name == name).map(frugal::graph::ValueId);
    // The 1/16 and 1/8 backbone outputs after their narrowing projections.
    let sets: [&[&str]; 3] =
        [&[], &["conv2d_471.tmp_0"], &["conv2d_471.tmp_0", "conv2d_470.tmp_0"]];
    println!("held whole | peak, input order | peak, larger pools first");
    for set in sets {
        let mut peaks = Vec::new();
        for larger_pools_first in [false, true] {
            let mut o = smallest.clone();
            for r in &mut o.recompute {
                r.keep.extend(set.iter().filter_map(|n| id(n)));
            }
            o.cuts = None;
            o.larger_pools_first = larger_pools_first;
            peaks.push(Plan::build(&g, &o)?.peak_bytes as f64 / 1e6);
        }
        println!("{set:?} | {:.2} MB | {:.2} MB", peaks[0], peaks[1]);
    }
    Ok(())
}
