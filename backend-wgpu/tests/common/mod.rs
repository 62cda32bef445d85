//! Helpers for the wgpu tests: the adapter (or a loud failure when there is none), sessions on
//! both backends, and comparisons.
#![allow(dead_code)]

use std::path::PathBuf;

use frugal_core::{Backend, Graph, Plan, PlanOptions, Session, Strategy};
use frugal_cpu::CpuBackend;
use frugal_wgpu::{WgpuBackend, WgpuOptions};

/// Environment variable that lets the tests pass on a machine with no adapter.
pub const ALLOW_NO_GPU: &str = "FRUGAL_ALLOW_NO_GPU";

/// A wgpu backend, or `None` when no adapter exists and `FRUGAL_ALLOW_NO_GPU=1`; without that
/// variable a missing adapter fails the test (CI installs Mesa's lavapipe, so it never should).
pub fn gpu_with(options: &WgpuOptions) -> Option<WgpuBackend> {
    match WgpuBackend::with_options(options) {
        Ok(b) => Some(b),
        Err(e) => {
            let msg = format!(
                "\n*** NO WGPU ADAPTER: {e}\n*** the wgpu tests did NOT run; set {ALLOW_NO_GPU}=1 \
                 to accept that (install mesa-vulkan-drivers for lavapipe)\n"
            );
            eprintln!("{msg}");
            println!("{msg}");
            if std::env::var(ALLOW_NO_GPU).as_deref() == Ok("1") {
                None
            } else {
                panic!("no wgpu adapter: {e}");
            }
        }
    }
}

/// A wgpu backend with default options (see [`gpu_with`]).
pub fn gpu() -> Option<WgpuBackend> {
    gpu_with(&WgpuOptions::default())
}

/// Path of a file in the repository.
pub fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A seeded input in [-1, 1).
pub fn seeded(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Runs `graph` under `options` on `backend`; the outputs as f32.
pub fn run(
    graph: &Graph,
    options: &PlanOptions,
    backend: Box<dyn Backend>,
    input: &[f32],
) -> frugal_core::Result<Vec<Vec<f32>>> {
    let plan = Plan::build(graph, options)?;
    let mut s = Session::new(graph, &plan, backend)?;
    let out = s.run(&[input])?;
    Ok(out.into_iter().map(|t| t.as_f32().unwrap().to_vec()).collect())
}

/// Runs on the CPU (one thread).
pub fn cpu(graph: &Graph, options: &PlanOptions, input: &[f32]) -> Vec<Vec<f32>> {
    run(graph, options, Box::new(CpuBackend::new()), input).expect("cpu run")
}

/// Largest |got - want| over the largest |want|.
pub fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "output sizes differ");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
    let worst = got.iter().zip(want).fold(0.0f32, |m, (a, b)| {
        let d = if a.is_nan() != b.is_nan() { f32::INFINITY } else { (a - b).abs() };
        m.max(d)
    });
    worst / scale
}

/// Number of elements whose bits differ, and the largest difference in ULPs.
pub fn ulp_diff(a: &[f32], b: &[f32]) -> (usize, u32) {
    let mut n = 0;
    let mut worst = 0;
    for (x, y) in a.iter().zip(b) {
        if x.to_bits() != y.to_bits() {
            n += 1;
            let d = (x.to_bits() as i64 - y.to_bits() as i64).unsigned_abs() as u32;
            worst = worst.max(d);
        }
    }
    (n, worst)
}

/// Layer-by-layer and by-parts plan options.
pub fn lbl() -> PlanOptions {
    PlanOptions::new(Strategy::LayerByLayer)
}

/// By parts with `rows` rows per part.
pub fn parts(rows: usize) -> PlanOptions {
    PlanOptions { part_rows: rows, ..PlanOptions::new(Strategy::ByParts) }
}

/// The wgpu-vs-CPU and by-parts-vs-layer-by-layer checks on one graph: wgpu layer by layer
/// within 1e-4 of the CPU, and wgpu by parts (several part sizes) the same bits as wgpu layer
/// by layer.
pub fn check_graph(graph: &Graph, seed: u64) {
    let shape = &graph.value(graph.inputs[0]).shape;
    let input = seeded(shape.iter().product(), seed);
    let want = cpu(graph, &lbl(), &input);
    let Some(g) = gpu() else { return };
    let adapter = g.adapter();
    let got = run(graph, &lbl(), Box::new(g), &input).expect("wgpu layer by layer");
    for (o, (g, w)) in got.iter().zip(&want).enumerate() {
        let e = rel_err(g, w);
        println!("{} output {o}: wgpu vs cpu relative error {e:e} on {adapter}", graph.name);
        assert!(e <= 1e-4, "{} output {o}: wgpu differs from cpu by {e:e}", graph.name);
    }
    for rows in [1, 3] {
        let Some(g) = gpu() else { return };
        let bp = run(graph, &parts(rows), Box::new(g), &input).expect("wgpu by parts");
        for (o, (b, l)) in bp.iter().zip(&got).enumerate() {
            let (n, ulps) = ulp_diff(b, l);
            assert!(
                n == 0,
                "{} output {o}, parts of {rows} rows: {n} elements differ from layer by layer \
                 on wgpu (up to {ulps} ulp)",
                graph.name
            );
        }
    }
}
