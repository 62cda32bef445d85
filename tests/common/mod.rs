//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use frugal::{backend_by_name, Graph, Plan, PlanOptions, Session, Strategy, Tensor};

/// How close two outputs must be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// Bit for bit.
    Exact,
    /// Within 1e-4 of the reference's largest magnitude (frugal against onnxruntime).
    Close,
    /// Within 1e-2 of the reference's largest magnitude (f16 storage, lossy preprocessing).
    Approximate,
}

impl Tolerance {
    fn relative(self) -> f32 {
        match self {
            Tolerance::Exact => 0.0,
            Tolerance::Close => 1e-4,
            Tolerance::Approximate => 1e-2,
        }
    }
}

/// Compares `got` with the reference `want`.
pub fn check(got: &[f32], want: &[f32], tol: Tolerance) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{} values, expected {}", got.len(), want.len()));
    }
    if tol == Tolerance::Exact {
        return match got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits()) {
            None => Ok(()),
            Some(i) => Err(format!("element {i}: {} != {} (bits differ)", got[i], want[i])),
        };
    }
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
    let (mut worst, mut at) = (0.0f32, 0);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        // NaN counts as the worst error.
        let d = if a.is_nan() != b.is_nan() { f32::INFINITY } else { (a - b).abs() };
        if d > worst {
            worst = d;
            at = i;
        }
    }
    if worst <= tol.relative() * scale {
        Ok(())
    } else {
        Err(format!(
            "max abs error {worst:e} at element {at} ({} vs {}) exceeds {:?} = {:e} x max|ref| {scale:e}",
            got[at],
            want[at],
            tol,
            tol.relative()
        ))
    }
}

/// Path of a file in the repository.
pub fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `graph` with `strategy` on the CPU.
pub fn run(graph: &Graph, strategy: Strategy, inputs: &[&[f32]]) -> Vec<Tensor> {
    let plan = Plan::build(graph, &PlanOptions::new(strategy)).expect("plan");
    let mut s = Session::new(graph, &plan, backend_by_name("cpu").expect("cpu")).expect("session");
    s.run(inputs).expect("run")
}

/// A seeded input in [-1, 1).
pub fn seeded_input(shape: &[usize], seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..shape.iter().product::<usize>())
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}
