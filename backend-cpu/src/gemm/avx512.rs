//! AVX-512 microkernel for whole panels: up to 12 rows x 16 columns, one 16-lane vector per
//! row, so a step of `k` is one load of B and one fused multiply-add per row at twice the
//! AVX2 kernel's width. The same chain per element as `avx2.rs` (`acc = fma(a[k], b[k], acc)`
//! in k order from zero, then `+ bias`, then the activation through the same 8-lane code on
//! each half): the bits are the AVX2 kernel's, so a plan's results do not depend on which of
//! the two a machine has.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::{Geometry, TileEpilogue, TileOut, NR};
use crate::simd::act8;

/// Rows per tile.
pub(super) const MR: usize = 12;

/// Whether this processor has the AVX-512 subsets the kernel uses (F and DQ).
pub(super) fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    })
}

/// Computes a `rows x NR` tile (rows <= [`MR`]) of `A * B_panel` into `out`, reading the first
/// `cols` columns of each panel row (the others as zero, never loaded).
///
/// # Safety
/// [`available`] must be true, and `out` must point at memory holding `rows` rows of [`NR`]
/// floats, `out.ld` apart.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile(
    rows: usize,
    k: usize,
    a: &[f32],
    rs: usize,
    cs: usize,
    panel: &[f32],
    bs: usize,
    cols: usize,
    epi: TileEpilogue<'_>,
    out: TileOut,
) {
    let cols = cols.min(NR);
    assert!(rows <= MR);
    let g = Geometry::checked(rows, k, a, rs, cs, panel, bs, cols);
    // SAFETY: the caller's contract and the asserts above.
    unsafe {
        match rows {
            1 => kernel::<1>(g, epi, out),
            2 => kernel::<2>(g, epi, out),
            3 => kernel::<3>(g, epi, out),
            4 => kernel::<4>(g, epi, out),
            5 => kernel::<5>(g, epi, out),
            6 => kernel::<6>(g, epi, out),
            7 => kernel::<7>(g, epi, out),
            8 => kernel::<8>(g, epi, out),
            9 => kernel::<9>(g, epi, out),
            10 => kernel::<10>(g, epi, out),
            11 => kernel::<11>(g, epi, out),
            _ => kernel::<12>(g, epi, out),
        }
    }
}

/// An `R x 16` tile: `R` accumulators, then bias, activation and the store of 16 floats per
/// row.
///
/// # Safety
/// `g` must hold what [`tile`] checks, and `out` `R` rows of 16 floats.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn kernel<const R: usize>(g: Geometry, epi: TileEpilogue<'_>, out: TileOut) {
    // Lanes past `cols` are neither loaded (masked loads do not fault) nor nonzero.
    let mask: __mmask16 = if g.cols >= NR { u16::MAX } else { (1u16 << g.cols) - 1 };
    let mut acc = [_mm512_setzero_ps(); R];
    for kk in 0..g.k {
        // SAFETY: see the function's contract.
        unsafe {
            let bv = _mm512_maskz_loadu_ps(mask, g.b.add(kk * g.bs));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*g.a.add(r * g.rs + kk * g.cs));
                *acc = _mm512_fmadd_ps(av, bv, *acc);
            }
        }
    }
    for (r, acc) in acc.iter_mut().enumerate() {
        if let Some(bias) = epi.bias {
            *acc = _mm512_add_ps(*acc, _mm512_set1_ps(bias[r]));
        }
        if let Some(act) = epi.act {
            // SAFETY: AVX2 is enabled; the halves go through the AVX2 kernel's code.
            unsafe {
                let lo = act8(act, _mm512_castps512_ps256(*acc));
                let hi = act8(act, _mm512_extractf32x8_ps::<1>(*acc));
                *acc = _mm512_insertf32x8::<1>(_mm512_castps256_ps512(lo), hi);
            }
        }
        // SAFETY: each output row holds 16 floats (the contract).
        unsafe { _mm512_storeu_ps(out.ptr.add(r * out.ld), *acc) };
    }
}
