//! Portable microkernel: `acc += a * b` in k order (unfused, so it vectorises on any target).

use super::{MR, NR};

/// Computes a `rows x NR` tile (rows <= MR) of `A * B_panel` into `out`.
pub(super) fn tile(
    rows: usize,
    k: usize,
    a: &[f32],
    rs: usize,
    cs: usize,
    panel: &[f32],
    out: &mut [[f32; NR]; MR],
) {
    for (r, acc) in out.iter_mut().enumerate().take(rows) {
        *acc = [0.0; NR];
        let arow = &a[r * rs..];
        for (kk, b) in panel.chunks_exact(NR).take(k).enumerate() {
            let av = arow[kk * cs];
            for c in 0..NR {
                acc[c] += av * b[c];
            }
        }
    }
}
