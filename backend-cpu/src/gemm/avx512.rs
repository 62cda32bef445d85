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
use frugal_core::ops::Activation;

/// Rows per tile.
pub(super) const MR: usize = 12;

/// `f::<rows>(args)` for a tile of 1 to [`MR`] rows (a const generic per height, so each
/// kernel keeps its accumulators in registers).
macro_rules! by_rows {
    ($rows:expr, $f:ident($($arg:expr),*)) => {
        match $rows {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            8 => $f::<8>($($arg),*),
            9 => $f::<9>($($arg),*),
            10 => $f::<10>($($arg),*),
            11 => $f::<11>($($arg),*),
            _ => $f::<12>($($arg),*),
        }
    };
}

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
    unsafe { by_rows!(rows, kernel(g, epi, out)) }
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
        *acc = finish(*acc, epi.bias.map(|b| b[r]), epi.act);
        // SAFETY: each output row holds 16 floats (the contract).
        unsafe { _mm512_storeu_ps(out.ptr.add(r * out.ld), *acc) };
    }
}

/// `act(acc + bias)`, the activation through the AVX2 code on each half (the AVX2 kernel's
/// operations, so its bits).
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
fn finish(mut acc: __m512, bias: Option<f32>, act: Option<Activation>) -> __m512 {
    if let Some(bias) = bias {
        acc = _mm512_add_ps(acc, _mm512_set1_ps(bias));
    }
    if let Some(act) = act {
        // SAFETY: AVX2 is enabled.
        unsafe {
            let lo = act8(act, _mm512_castps512_ps256(acc));
            let hi = act8(act, _mm512_extractf32x8_ps::<1>(acc));
            acc = _mm512_insertf32x8::<1>(_mm512_castps256_ps512(lo), hi);
        }
    }
    acc
}

/// Computes a `rows x 2 NR` tile (rows <= [`MR`]) of `A * [panel | panel2]` into `out`:
/// `panel` whole, the first `cols2` columns of `panel2` (the others as zero, never loaded).
/// Each element's chain is [`tile`]'s, so are the bits.
///
/// # Safety
/// As [`tile`], with `out` holding `rows` rows of `2 NR` floats.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile2(
    rows: usize,
    k: usize,
    a: &[f32],
    rs: usize,
    cs: usize,
    panel: &[f32],
    panel2: &[f32],
    bs: usize,
    cols2: usize,
    epi: TileEpilogue<'_>,
    out: TileOut,
) {
    let cols2 = cols2.min(NR);
    assert!(rows <= MR);
    let g = Geometry::checked(rows, k, a, rs, cs, panel, bs, NR);
    let g2 = Geometry::checked(rows, k, a, rs, cs, panel2, bs, cols2);
    // SAFETY: the caller's contract and the checks above.
    unsafe { by_rows!(rows, kernel2(g, g2, epi, out)) }
}

/// An `R x 32` tile: `2 R` accumulators (`g` the first 16 columns, `g2` the next), then bias,
/// activation and the store of 32 floats per row.
///
/// # Safety
/// `g` and `g2` must hold what [`tile2`] checks, and `out` `R` rows of 32 floats.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn kernel2<const R: usize>(g: Geometry, g2: Geometry, epi: TileEpilogue<'_>, out: TileOut) {
    let mask2: __mmask16 = if g2.cols >= NR { u16::MAX } else { (1u16 << g2.cols) - 1 };
    let mut lo = [_mm512_setzero_ps(); R];
    let mut hi = [_mm512_setzero_ps(); R];
    for kk in 0..g.k {
        // SAFETY: see the function's contract.
        unsafe {
            let b0 = _mm512_loadu_ps(g.b.add(kk * g.bs));
            let b1 = _mm512_maskz_loadu_ps(mask2, g2.b.add(kk * g.bs));
            for r in 0..R {
                let av = _mm512_set1_ps(*g.a.add(r * g.rs + kk * g.cs));
                lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
                hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
            }
        }
    }
    for r in 0..R {
        let bias = epi.bias.map(|b| b[r]);
        // SAFETY: each output row holds 32 floats (the contract).
        unsafe {
            _mm512_storeu_ps(out.ptr.add(r * out.ld), finish(lo[r], bias, epi.act));
            _mm512_storeu_ps(out.ptr.add(r * out.ld + NR), finish(hi[r], bias, epi.act));
        }
    }
}
