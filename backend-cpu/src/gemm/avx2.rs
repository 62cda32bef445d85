//! AVX2 + FMA microkernels: 6 rows x 16 columns in twelve 8-lane accumulators, and for
//! panels of at most 8 columns (a row of a 7x7 map, the last columns of a 56-wide row) 12 rows
//! x 8 columns, so that half of every vector is not spent on missing columns. Both compute
//! `acc = fma(a[k], b[k], acc)` in k order: the same bits per element.

use std::arch::x86_64::*;

use super::{TileEpilogue, TileOut, MR_NARROW, NARROW, NR};
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

/// Computes a `rows x NARROW` tile (rows <= [`MR_NARROW`]) of `A * B_panel` into `out`,
/// reading the first `cols` (<= [`NARROW`]) columns of each panel row (the others load as
/// zero, masked). Same order of operations per element as [`tile`].
///
/// # Safety
/// `out` must point at memory holding `rows` rows of `NARROW` floats, `out.ld` apart.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile_narrow(
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
    let cols = cols.min(NARROW);
    assert!(rows <= MR_NARROW);
    assert!(bs >= cols && (k == 0 || (k - 1) * bs + cols <= panel.len()));
    assert!(k == 0 || rows == 0 || (rows - 1) * rs + (k - 1) * cs < a.len());
    // SAFETY: as in `tile`.
    unsafe {
        let (a, b) = (a.as_ptr(), panel.as_ptr());
        if cols == NARROW {
            rows_narrow::<false>(rows, k, a, rs, cs, b, bs, NARROW, epi, out)
        } else {
            rows_narrow::<true>(rows, k, a, rs, cs, b, bs, cols, epi, out)
        }
    }
}

/// [`narrow_n`] for a run-time row count.
///
/// # Safety
/// As [`narrow_n`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_narrow<const MASKED: bool>(
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
    macro_rules! call {
        ($($r:literal)*) => {
            match rows {
                $($r => narrow_n::<$r, MASKED>(k, a, rs, cs, b, bs, cols, epi, out),)*
                _ => narrow_n::<12, MASKED>(k, a, rs, cs, b, bs, cols, epi, out),
            }
        };
    }
    // SAFETY: the caller's.
    unsafe { call!(1 2 3 4 5 6 7 8 9 10 11) }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn narrow_n<const R: usize, const MASKED: bool>(
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
    let mut acc = [_mm256_setzero_ps(); R];
    let (m0, _) = masks(cols);
    for kk in 0..k {
        // SAFETY: the caller checked `b` holds `cols` floats at every kk * bs (NARROW unless
        // MASKED; masked lanes are not read) and `a` every (r, kk) element.
        unsafe {
            let b0 = if MASKED {
                _mm256_maskload_ps(b.add(kk * bs), m0)
            } else {
                _mm256_loadu_ps(b.add(kk * bs))
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*a.add(r * rs + kk * cs));
                *acc = _mm256_fmadd_ps(av, b0, *acc);
            }
        }
    }
    if let Some(bias) = epi.bias {
        for (r, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_add_ps(*acc, _mm256_set1_ps(bias[r]));
        }
    }
    if let Some(act) = epi.act {
        for acc in acc.iter_mut() {
            // SAFETY: AVX is available (`narrow_n` is only called with it).
            *acc = unsafe { act8(act, *acc) };
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: each output row holds NARROW = 8 floats (see `tile_narrow`).
        unsafe { _mm256_storeu_ps(out.ptr.add(r * out.ld), *acc) };
    }
}
