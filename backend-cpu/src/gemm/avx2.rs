//! AVX2 + FMA microkernels: 6 rows x 16 columns (two 8-lane vectors per row), and for panels
//! of at most 8 columns (a row of a 7x7 map, the last columns of a 56-wide row) 12 rows x 8
//! columns, so that half of every vector is not spent on missing columns. One kernel body,
//! `acc = fma(a[k], b[k], acc)` in k order: the same bits per element in both shapes.

use std::arch::x86_64::*;

use super::{Geometry, TileEpilogue, TileOut, MR, MR_NARROW, NARROW, NR};
use crate::simd::act8;

/// Computes a `rows x width` tile of `A * B_panel` into `out`, where `width` is [`NR`] (rows
/// <= [`MR`]) or, when `narrow`, [`NARROW`] (rows <= [`MR_NARROW`]). Reads the first `cols`
/// columns of each panel row; the others load as zero (a last partial panel read in place,
/// through masked loads; each column's chain of operations is the same).
///
/// # Safety
/// `out` must point at memory holding `rows` rows of `width` floats, `out.ld` apart.
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
    narrow: bool,
    epi: TileEpilogue<'_>,
    out: TileOut,
) {
    let (width, max_rows) = if narrow { (NARROW, MR_NARROW) } else { (NR, MR) };
    let cols = cols.min(width);
    assert!(rows <= max_rows);
    let g = Geometry::checked(rows, k, a, rs, cs, panel, bs, cols);
    // SAFETY: `Isa::Avx2Fma` is only selected after run-time detection of AVX2 and FMA, the
    // asserts above keep every pointer read in bounds, and the drivers build `out` over memory
    // holding `rows` rows of `width` floats.
    unsafe {
        match (narrow, cols == width) {
            (false, true) => wide::<false>(rows, g, epi, out),
            (false, false) => wide::<true>(rows, g, epi, out),
            (true, true) => narrow_rows::<false>(rows, g, epi, out),
            (true, false) => narrow_rows::<true>(rows, g, epi, out),
        }
    }
}

/// Calls `kernel::<R, V, MASKED>` for a run-time row count `rows` (the last arm: every larger
/// count).
macro_rules! by_rows {
    ($rows:expr, $v:literal, $masked:ident, ($g:expr, $epi:expr, $out:expr), $($r:literal)* ; $last:literal) => {
        match $rows {
            $($r => kernel::<$r, $v, $masked>($g, $epi, $out),)*
            _ => kernel::<$last, $v, $masked>($g, $epi, $out),
        }
    };
}

/// 16-column tiles of 1 to [`MR`] rows.
///
/// # Safety
/// As [`kernel`].
#[target_feature(enable = "avx2,fma")]
unsafe fn wide<const MASKED: bool>(rows: usize, g: Geometry, epi: TileEpilogue<'_>, out: TileOut) {
    // SAFETY: the caller's.
    unsafe { by_rows!(rows, 2, MASKED, (g, epi, out), 1 2 3 4 5; 6) }
}

/// 8-column tiles of 1 to [`MR_NARROW`] rows.
///
/// # Safety
/// As [`kernel`].
#[target_feature(enable = "avx2,fma")]
unsafe fn narrow_rows<const MASKED: bool>(
    rows: usize,
    g: Geometry,
    epi: TileEpilogue<'_>,
    out: TileOut,
) {
    // SAFETY: the caller's.
    unsafe { by_rows!(rows, 1, MASKED, (g, epi, out), 1 2 3 4 5 6 7 8 9 10 11; 12) }
}

/// Lane masks selecting columns `< cols` of a panel row (lanes 0-7, then 8-15).
#[target_feature(enable = "avx2")]
fn masks(cols: usize) -> [__m256i; 2] {
    let n = _mm256_set1_epi32(cols as i32);
    let lo = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let hi = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
    [_mm256_cmpgt_epi32(n, lo), _mm256_cmpgt_epi32(n, hi)]
}

/// An `R x 8V` tile: `R * V` accumulators, then bias, activation and the store of `8V` floats
/// per row.
///
/// # Safety
/// `g` must hold what [`tile`] checks (`cols` floats of B at every `kk * bs`, 8V unless
/// MASKED, and every `(r, kk)` element of A), and `out` `R` rows of `8V` floats.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize, const V: usize, const MASKED: bool>(
    g: Geometry,
    epi: TileEpilogue<'_>,
    out: TileOut,
) {
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    let m = masks(g.cols);
    for kk in 0..g.k {
        // SAFETY: see the function's contract; masked lanes are not read.
        unsafe {
            let mut bv = [_mm256_setzero_ps(); V];
            for (v, bv) in bv.iter_mut().enumerate() {
                let p = g.b.add(kk * g.bs + 8 * v);
                *bv = if MASKED { _mm256_maskload_ps(p, m[v]) } else { _mm256_loadu_ps(p) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*g.a.add(r * g.rs + kk * g.cs));
                for (acc, bv) in row.iter_mut().zip(&bv) {
                    *acc = _mm256_fmadd_ps(av, *bv, *acc);
                }
            }
        }
    }
    for (r, row) in acc.iter_mut().enumerate() {
        for (v, acc) in row.iter_mut().enumerate() {
            if let Some(bias) = epi.bias {
                *acc = _mm256_add_ps(*acc, _mm256_set1_ps(bias[r]));
            }
            if let Some(act) = epi.act {
                // SAFETY: AVX is available (`kernel` is only called with it).
                *acc = unsafe { act8(act, *acc) };
            }
            // SAFETY: each output row holds 8V floats (the contract).
            unsafe { _mm256_storeu_ps(out.ptr.add(r * out.ld + 8 * v), *acc) };
        }
    }
}

/// An 8 x 1 tile: eight rows of C in one column (a matrix-vector product, or the last column
/// of a 49-column 7x7 map), where the narrow kernel would spend one lane of eight per row.
/// Eight rows of A are read as 8 x 8 blocks and transposed in registers, so each step is one
/// fused multiply-add of eight rows: `acc = fma(a[r][kk], b[kk], acc)` in k order, the
/// narrow kernel's operation per element (the factors commute), then the same epilogue.
///
/// # Safety
/// `a` must hold rows `r * rs + kk` for `r < 8`, `kk < k`; `b[kk * bs]` for `kk < k`;
/// `out` 8 rows of at least one float, `out.ld` apart.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn column8(
    k: usize,
    a: &[f32],
    rs: usize,
    b: &[f32],
    bs: usize,
    epi: TileEpilogue<'_>,
    out: TileOut,
) {
    assert!(k == 0 || (7 * rs + k - 1 < a.len() && (k - 1) * bs < b.len()));
    assert!(epi.bias.is_none_or(|b| b.len() >= 8));
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc = _mm256_setzero_ps();
    let mut kk = 0;
    // SAFETY: every read is inside `a` and `b` (asserted above); AVX2 and FMA are enabled.
    unsafe {
        while kk + 8 <= k {
            let rows: [__m256; 8] = std::array::from_fn(|r| _mm256_loadu_ps(ap.add(r * rs + kk)));
            let cols = crate::simd::transpose8(rows);
            for (j, col) in cols.iter().enumerate() {
                acc = _mm256_fmadd_ps(*col, _mm256_set1_ps(*bp.add((kk + j) * bs)), acc);
            }
            kk += 8;
        }
        while kk < k {
            let col: [f32; 8] = std::array::from_fn(|r| *ap.add(r * rs + kk));
            let col = _mm256_loadu_ps(col.as_ptr());
            acc = _mm256_fmadd_ps(col, _mm256_set1_ps(*bp.add(kk * bs)), acc);
            kk += 1;
        }
        if let Some(bias) = epi.bias {
            acc = _mm256_add_ps(acc, _mm256_loadu_ps(bias.as_ptr()));
        }
        if let Some(act) = epi.act {
            acc = act8(act, acc);
        }
        let mut v = [0.0f32; 8];
        _mm256_storeu_ps(v.as_mut_ptr(), acc);
        for (r, v) in v.iter().enumerate() {
            *out.ptr.add(r * out.ld) = *v;
        }
    }
}
