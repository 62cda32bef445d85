//! Time and memory of each CPU kernel family on the shapes the standard networks use: one
//! single-node model per case, run layer by layer (the whole output in one firing) and by parts
//! (one output row per firing, inputs streamed through rings).
//!
//! cargo bench --bench kernels [-- FILTER]        (FRUGAL_THREADS=N for N threads; default 1)
//!
//! Criterion reports the time per inference; the table printed first gives the bytes each plan
//! allocates (arena, kernel scratch included) next to the output size and the work, so the
//! GFLOP/s of a case is `flops / time`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use frugal::ops::{Activation, BinaryKind, PoolKind, ResizeMode};
use frugal::{
    CpuBackend, Graph, GraphBuilder, Plan, PlanOptions, Result, Session, Strategy, ValueId,
};

/// One benchmark case: a family, a name and a single-node model on one input.
struct Case {
    family: &'static str,
    name: &'static str,
    input: [usize; 4],
    build: fn(&mut GraphBuilder, ValueId) -> Result<ValueId>,
    /// Multiply-adds x 2 (or element operations) of one inference, for the throughput column.
    flops: u64,
}

fn conv_flops(cin: u64, cout: u64, k: u64, groups: u64, hw_out: u64) -> u64 {
    2 * cout * (cin / groups) * k * k * hw_out
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            family: "conv",
            name: "1x1 16->96 @112",
            input: [1, 16, 112, 112],
            build: |b, x| b.conv(x, 96, 1, 1, 0, 1, Some(Activation::Clip { min: 0.0, max: 6.0 })),
            flops: conv_flops(16, 96, 1, 1, 112 * 112),
        },
        Case {
            family: "conv",
            name: "1x1 144->24 @56",
            input: [1, 144, 56, 56],
            build: |b, x| b.conv(x, 24, 1, 1, 0, 1, None),
            flops: conv_flops(144, 24, 1, 1, 56 * 56),
        },
        Case {
            family: "conv",
            name: "1x1 960->160 @7",
            input: [1, 960, 7, 7],
            build: |b, x| b.conv(x, 160, 1, 1, 0, 1, None),
            flops: conv_flops(960, 160, 1, 1, 49),
        },
        Case {
            family: "conv",
            name: "3x3 64->64 @56",
            input: [1, 64, 56, 56],
            build: |b, x| b.conv(x, 64, 3, 1, 1, 1, Some(Activation::Relu)),
            flops: conv_flops(64, 64, 3, 1, 56 * 56),
        },
        Case {
            family: "conv",
            name: "3x3 256->256 @14",
            input: [1, 256, 14, 14],
            build: |b, x| b.conv(x, 256, 3, 1, 1, 1, Some(Activation::Relu)),
            flops: conv_flops(256, 256, 3, 1, 14 * 14),
        },
        Case {
            family: "conv",
            name: "3x3 s2 3->32 @224",
            input: [1, 3, 224, 224],
            build: |b, x| b.conv(x, 32, 3, 2, 1, 1, Some(Activation::Relu)),
            flops: conv_flops(3, 32, 3, 1, 112 * 112),
        },
        Case {
            family: "depthwise",
            name: "dw3x3 96 @112",
            input: [1, 96, 112, 112],
            build: |b, x| b.conv(x, 96, 3, 1, 1, 96, Some(Activation::Clip { min: 0.0, max: 6.0 })),
            flops: conv_flops(96, 96, 3, 96, 112 * 112),
        },
        Case {
            family: "depthwise",
            name: "dw3x3 s2 144 @56",
            input: [1, 144, 56, 56],
            build: |b, x| b.conv(x, 144, 3, 2, 1, 144, None),
            flops: conv_flops(144, 144, 3, 144, 28 * 28),
        },
        Case {
            family: "depthwise",
            name: "dw3x3 576 @14",
            input: [1, 576, 14, 14],
            build: |b, x| b.conv(x, 576, 3, 1, 1, 576, None),
            flops: conv_flops(576, 576, 3, 576, 14 * 14),
        },
        Case {
            family: "conv_transpose",
            name: "2x2 s2 64->32 @56",
            input: [1, 64, 56, 56],
            build: |b, x| b.conv_transpose(x, 32, 2, 2, 0, 0, None),
            flops: conv_flops(64, 32, 2, 1, 56 * 56),
        },
        Case {
            family: "pool",
            name: "max 3x3 s2 64 @112",
            input: [1, 64, 112, 112],
            build: |b, x| b.pool(PoolKind::Max, x, 3, 2, 1),
            flops: 64 * 56 * 56 * 9,
        },
        Case {
            family: "pool",
            name: "global avg 1280 @7",
            input: [1, 1280, 7, 7],
            build: |b, x| b.global_avg_pool(x),
            flops: 1280 * 49,
        },
        Case {
            family: "eltwise",
            name: "add+relu 96 @56",
            input: [1, 96, 56, 56],
            build: |b, x| {
                let y = b.act(x, Activation::HardSwish)?;
                b.binary(BinaryKind::Add, x, y, Some(Activation::Relu))
            },
            flops: 2 * 96 * 56 * 56,
        },
        Case {
            family: "resize",
            name: "linear x2 64 @56",
            input: [1, 64, 56, 56],
            build: |b, x| b.upsample(x, 2, ResizeMode::Linear),
            flops: 64 * 112 * 112 * 4,
        },
        Case {
            family: "dense",
            name: "1280->1000",
            input: [1, 1280, 1, 1],
            build: |b, x| {
                let f = b.flatten(x)?;
                b.dense(f, 1000, None)
            },
            flops: 2 * 1280 * 1000,
        },
    ]
}

fn graph(case: &Case) -> Result<Graph> {
    let mut b = GraphBuilder::new(case.name, 1);
    let x = b.input("x", &case.input);
    let y = (case.build)(&mut b, x)?;
    b.output(y);
    b.finish()
}

fn threads() -> usize {
    std::env::var("FRUGAL_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1)
}

fn session(graph: &Graph, strategy: Strategy) -> Result<Session> {
    let plan = Plan::build(graph, &PlanOptions::new(strategy))?;
    Session::new(graph, &plan, Box::new(CpuBackend::with_threads(threads())?))
}

fn bench(c: &mut Criterion) {
    let strategies = [("layer-by-layer", Strategy::LayerByLayer), ("by-parts", Strategy::ByParts)];
    println!("| family | case | strategy | session bytes | output bytes | MFLOP |");
    println!("|---|---|---|---|---|---|");
    for case in cases() {
        let g = graph(&case).expect("bench model builds");
        let x: Vec<f32> = (0..case.input.iter().product::<usize>())
            .map(|i| (i % 17) as f32 * 0.1 - 0.8)
            .collect();
        let mut group = c.benchmark_group(case.family);
        group.throughput(Throughput::Elements(case.flops));
        for (label, strategy) in strategies {
            let mut s = session(&g, strategy).expect("bench session starts");
            let out_bytes: usize =
                s.outputs().iter().map(|o| o.shape.iter().product::<usize>() * 4).sum();
            println!(
                "| {} | {} | {label} | {} | {out_bytes} | {:.1} |",
                case.family,
                case.name,
                s.arena_bytes(),
                case.flops as f64 / 1e6
            );
            let mut y = vec![0.0f32; out_bytes / 4];
            group.bench_function(BenchmarkId::new(case.name, label), |bch| {
                bch.iter(|| s.run_into(&[&x], &mut [&mut y]).expect("bench run"))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = kernels;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(kernels);
