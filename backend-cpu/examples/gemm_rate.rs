//! GFLOP/s of one matrix product `C[m x n] = A[m x k] * B[k x n]` on one thread, the fastest
//! of five batches: the microkernels and the tile walk alone, without im2col or threads.
//!
//! cargo run --release -p frugal-cpu --example gemm_rate -- M N K [strided] [rows]
//!
//! A is packed in panels as a convolution's weights are (`gemm::pack_a`), or with `strided`
//! read row-major in place; B is packed, or with `rows` read in place (a pointwise
//! convolution's input rows).
use std::time::Instant;

use frugal_cpu::gemm::{self, Epilogue, Isa, MatA};

fn main() {
    let dims: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let strided = std::env::args().any(|a| a == "strided");
    let in_place = std::env::args().any(|a| a == "rows");
    let [m, n, k] = dims[..] else {
        eprintln!("usage: gemm_rate M N K [strided] [rows] (for example 96 12544 16)");
        std::process::exit(2);
    };
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    // B 64-byte aligned, as a session's arena holds a layer's input (from malloc it may start
    // mid-line, and every row read in place would straddle two cache lines).
    let mut b_mem = vec![0.0f32; k * n + 16];
    let skip = b_mem.as_ptr().align_offset(64);
    let b = &mut b_mem[skip..skip + k * n];
    b.iter_mut().enumerate().for_each(|(i, v)| *v = (i % 5) as f32 * 0.1);
    let b: &[f32] = b;
    let mut panels = vec![0.0; m * k];
    gemm::pack_a(&a, m, k, &mut panels);
    let mut packed = vec![0.0; gemm::packed_len(k, n)];
    gemm::pack_b(b, n, 1, k, n, &mut packed);
    let mut c = vec![0.0; m * n];
    let isa = Isa::detect();
    let flops = 2.0 * (m * n * k) as f64;
    let reps = (2e9 / flops.max(1.0)).max(1.0) as usize;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            let a = if strided { MatA::strided(&a, k, 1) } else { MatA::panels(&panels, m, k) };
            if in_place {
                // SAFETY: `c` holds m rows of n floats and is borrowed mutably.
                unsafe {
                    gemm::gemm_rows_into_raw(
                        isa,
                        m,
                        n,
                        k,
                        a,
                        b,
                        n,
                        Epilogue::default(),
                        c.as_mut_ptr(),
                        n,
                    )
                };
            } else {
                gemm::gemm_into(isa, m, n, k, a, &packed, Epilogue::default(), &mut c, n);
            }
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    println!(
        "{m} x {n} x {k} ({}, A {}): {:.1} GFLOP/s, {:.1} us",
        isa.name(),
        if strided { "strided" } else { "packed" },
        flops / best / 1e9,
        best * 1e6
    );
}
