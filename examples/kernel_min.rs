//! The fastest of N runs of single-node convolution models, layer by layer and by parts (one
//! thread unless `FRUGAL_THREADS` says): on a shared machine whose slow spells move means and
//! medians, the minimum is what an A/B of two kernel versions can compare. Stride-1 cases that
//! keep the channel count chain six layers so that feeding and reading the model is a small
//! share of the time.
//!
//! cargo run --release --example kernel_min [-- FILTER]     (FRUGAL_THREADS=N: N threads;
//!     PART_ROWS=N: by parts N rows per firing, default 1; REPS=N runs, default 300;
//!     ONLY_PARTS=1: by parts alone, for `perf record`; LAYERS=N: chains of N layers, default 6;
//!     VARIANT=NAME: every node's kernel variant, e.g. columns or channels)
use frugal::ops::Activation;
use frugal::{CpuBackend, GraphBuilder, Plan, PlanOptions, Result, Session, Strategy};
use std::time::Instant;

/// A depthwise or dense convolution on one input shape.
struct Case {
    name: &'static str,
    input: [usize; 4],
    out: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    groups: usize,
}

const fn case(
    name: &'static str,
    input: [usize; 4],
    (out, kernel, stride, pad, groups): (usize, usize, usize, usize, usize),
) -> Case {
    Case { name, input, out, kernel, stride, pad, groups }
}

const CASES: &[Case] = &[
    case("dw3 96@112", [1, 96, 112, 112], (96, 3, 1, 1, 96)),
    case("dw3s2 144@56", [1, 144, 56, 56], (144, 3, 2, 1, 144)),
    case("dw3 576@14", [1, 576, 14, 14], (576, 3, 1, 1, 576)),
    case("dw3 64@56", [1, 64, 56, 56], (64, 3, 1, 1, 64)),
    case("dw3 192@28", [1, 192, 28, 28], (192, 3, 1, 1, 192)),
    case("dw5 256@14", [1, 256, 14, 14], (256, 5, 1, 2, 256)),
    case("dw3 960@7", [1, 960, 7, 7], (960, 3, 1, 1, 960)),
    case("dw3s2 32@112", [1, 32, 112, 112], (32, 3, 2, 1, 32)),
    case("pw 512@7", [1, 512, 7, 7], (512, 1, 1, 0, 1)),
    case("pw 64@56", [1, 64, 56, 56], (64, 1, 1, 0, 1)),
    case("pw 2048->512@7", [1, 2048, 7, 7], (512, 1, 1, 0, 1)),
    case("pw 256@14", [1, 256, 14, 14], (256, 1, 1, 0, 1)),
    case("pw 256->64@56", [1, 256, 56, 56], (64, 1, 1, 0, 1)),
    case("pw 64->256@56", [1, 64, 56, 56], (256, 1, 1, 0, 1)),
    case("conv3 256@14", [1, 256, 14, 14], (256, 3, 1, 1, 1)),
    case("conv3 64@56", [1, 64, 56, 56], (64, 3, 1, 1, 1)),
    case("conv3 128@28", [1, 128, 28, 28], (128, 3, 1, 1, 1)),
    case("conv3 512@7", [1, 512, 7, 7], (512, 3, 1, 1, 1)),
    case("pw 256->1024@14", [1, 256, 14, 14], (1024, 1, 1, 0, 1)),
    case("conv3s2 3->16@224", [1, 3, 224, 224], (16, 3, 2, 1, 1)),
    case("conv3s2 3->32@224", [1, 3, 224, 224], (32, 3, 2, 1, 1)),
    case("conv7s2 3->64@224", [1, 3, 224, 224], (64, 7, 2, 3, 1)),
    case("conv3s2 128@56", [1, 128, 56, 56], (128, 3, 2, 1, 1)),
    case("conv3s2 256@28", [1, 256, 28, 28], (256, 3, 2, 1, 1)),
];

fn main() -> Result<()> {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let env = |name: &str, default: usize| {
        std::env::var(name).ok().and_then(|t| t.parse().ok()).unwrap_or(default)
    };
    let (threads, part_rows, reps) =
        (env("FRUGAL_THREADS", 1), env("PART_ROWS", 1), env("REPS", 300));
    let only_parts = std::env::var_os("ONLY_PARTS").is_some();
    let chain = env("LAYERS", 6);
    for c in CASES.iter().filter(|c| c.name.contains(&filter)) {
        let mut b = GraphBuilder::new(c.name, 1);
        let mut y = b.input("x", &c.input);
        for _ in 0..if c.stride == 1 && c.out == c.input[1] { chain } else { 1 } {
            let act = Some(Activation::Clip { min: 0.0, max: 6.0 });
            y = b.conv(y, c.out, c.kernel, c.stride, c.pad, c.groups, act)?;
        }
        b.output(y);
        let graph = b.finish()?;
        let n: usize = c.input.iter().product();
        let x: Vec<f32> = (0..n).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
        let mut line = format!("{:18}", c.name);
        for strategy in [Strategy::LayerByLayer, Strategy::ByParts] {
            if only_parts && strategy == Strategy::LayerByLayer {
                continue;
            }
            let mut plan =
                Plan::build(&graph, &PlanOptions { part_rows, ..PlanOptions::new(strategy) })?;
            if let Ok(v) = std::env::var("VARIANT") {
                plan.kernels = vec![Some(v); graph.nodes.len()];
            }
            let mut s = Session::new(&graph, &plan, Box::new(CpuBackend::with_threads(threads)?))?;
            let mut out = vec![0.0f32; s.outputs()[0].shape.iter().product()];
            let mut best = f64::MAX;
            for _ in 0..reps {
                let t = Instant::now();
                s.run_into(&[&x], &mut [&mut out])?;
                best = best.min(t.elapsed().as_secs_f64());
            }
            line += &format!(" {:>9.1} us", best * 1e6);
        }
        println!("{line}   (layer by layer, by parts)");
    }
    Ok(())
}
