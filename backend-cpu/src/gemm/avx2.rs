//! AVX2 + FMA microkernel: 6 rows x 16 columns in twelve 8-lane accumulators,
//! `acc = fma(a[k], b[k], acc)` in k order.

use std::arch::x86_64::*;

use super::{TileEpilogue, TileOut, NR};
use crate::simd::act8;

/// Computes a `rows x NR` tile (rows <= MR) of `A * B_panel` into `out`, reading the first
/// `cols` columns of each panel row (the others load as zero: a last partial panel read in
/// place, through masked loads; each column's chain of operations is the same).
///
/// # Safety
/// `out` must point at memory holding `rows` rows of `NR` floats, `out.ld` apart.
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
    // Bounds the kernel relies on, checked once per tile.
    assert!(bs >= cols && (k == 0 || (k - 1) * bs + cols <= panel.len()));
    assert!(k == 0 || rows == 0 || (rows - 1) * rs + (k - 1) * cs < a.len());
    // SAFETY: `Isa::Avx2Fma` is only selected after run-time detection of AVX2 and FMA, the
    // asserts above keep every pointer read in bounds, and the drivers build `out` over memory
    // holding `rows` rows of NR floats.
    unsafe {
        let (a, b) = (a.as_ptr(), panel.as_ptr());
        if cols == NR {
            rows_n::<false>(rows, k, a, rs, cs, b, bs, NR, epi, out)
        } else {
            rows_n::<true>(rows, k, a, rs, cs, b, bs, cols, epi, out)
        }
    }
}

/// [`tile_n`] for a run-time row count.
///
/// # Safety
/// As [`tile_n`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_n<const MASKED: bool>(
    rows: usize,
    k: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    bs: usize,
    cols: usize,
    epi: TileEpilogue<'_>,
    out: TileOut,
) {
    // SAFETY: the caller's.
    unsafe {
        match rows {
            1 => tile_n::<1, MASKED>(k, a, rs, cs, b, bs, cols, epi, out),
            2 => tile_n::<2, MASKED>(k, a, rs, cs, b, bs, cols, epi, out),
            3 => tile_n::<3, MASKED>(k, a, rs, cs, b, bs, cols, epi, out),
            4 => tile_n::<4, MASKED>(k, a, rs, cs, b, bs, cols, epi, out),
            5 => tile_n::<5, MASKED>(k, a, rs, cs, b, bs, cols, epi, out),
            _ => tile_n::<6, MASKED>(k, a, rs, cs, b, bs, cols, epi, out),
        }
    }
}

/// Lane masks selecting columns `< cols` of a 16-column panel row (low and high 8 lanes).
#[target_feature(enable = "avx2")]
fn masks(cols: usize) -> (__m256i, __m256i) {
    let n = _mm256_set1_epi32(cols as i32);
    let lo = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let hi = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
    (_mm256_cmpgt_epi32(n, lo), _mm256_cmpgt_epi32(n, hi))
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_n<const R: usize, const MASKED: bool>(
    k: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    bs: usize,
    cols: usize,
    epi: TileEpilogue<'_>,
    out: TileOut,
) {
    let mut lo = [_mm256_setzero_ps(); R];
    let mut hi = [_mm256_setzero_ps(); R];
    let (m0, m1) = masks(cols);
    for kk in 0..k {
        // SAFETY: the caller checked `b` holds `cols` floats at every kk * bs (NR unless
        // MASKED; masked lanes are not read) and `a` every (r, kk) element.
        unsafe {
            let (b0, b1) = if MASKED {
                (_mm256_maskload_ps(b.add(kk * bs), m0), _mm256_maskload_ps(b.add(kk * bs + 8), m1))
            } else {
                (_mm256_loadu_ps(b.add(kk * bs)), _mm256_loadu_ps(b.add(kk * bs + 8)))
            };
            for r in 0..R {
                let av = _mm256_set1_ps(*a.add(r * rs + kk * cs));
                lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
                hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
            }
        }
    }
    if let Some(bias) = epi.bias {
        for r in 0..R {
            let bv = _mm256_set1_ps(bias[r]);
            lo[r] = _mm256_add_ps(lo[r], bv);
            hi[r] = _mm256_add_ps(hi[r], bv);
        }
    }
    if let Some(act) = epi.act {
        for r in 0..R {
            // SAFETY: AVX is available (`tile_n` is only called with it).
            unsafe {
                lo[r] = act8(act, lo[r]);
                hi[r] = act8(act, hi[r]);
            }
        }
    }
    for r in 0..R {
        // SAFETY: each output row holds NR = 16 floats (see `tile`).
        unsafe {
            let dst = out.ptr.add(r * out.ld);
            _mm256_storeu_ps(dst, lo[r]);
            _mm256_storeu_ps(dst.add(8), hi[r]);
        }
    }
}
