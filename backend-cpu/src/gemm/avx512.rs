//! AVX-512 microkernel for whole panels: up to 12 rows x 16 columns, one 16-lane vector per
//! row, so a step of `k` is one load of B and one fused multiply-add per row at twice the
//! AVX2 kernel's width. The same chain per element as `avx2.rs` (`acc = fma(a[k], b[k], acc)`
//! in k order from zero, then `+ bias`, then the activation through the same 8-lane code on
//! each half): the bits are the AVX2 kernel's, so a plan's results do not depend on which of
//! the two a machine has.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::{Geometry, TileEpilogue, TileOut, NR};
use crate::simd::{act8, transpose8};
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

/// Whether this processor has the AVX-512 subsets the kernels use (F, DQ, and VL: 256-bit
/// operations on all 32 registers, which the column kernel's transposes need to leave its
/// accumulators where they are).
/// `FRUGAL_NO_AVX512` (set, not empty) turns it off: the AVX2 kernels then run everything
/// (same bits), to compare the two or to measure what a processor without AVX-512 would do.
pub(super) fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::env::var_os("FRUGAL_NO_AVX512").is_none_or(|v| v.is_empty())
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("avx512vl")
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
    // SAFETY: the function's contract.
    unsafe { steps(&mut acc, &g, mask) };
    for (r, acc) in acc.iter_mut().enumerate() {
        *acc = finish(*acc, epi.bias.map(|b| b[r]), epi.act);
        // SAFETY: each output row holds 16 floats (the contract).
        unsafe { _mm512_storeu_ps(out.ptr.add(r * out.ld), *acc) };
    }
}

/// The `g.k` steps of a [`kernel`] tile into `acc` (a function of its own, as [`steps2`]).
///
/// # Safety
/// As [`kernel`]'s.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn steps<const R: usize>(acc: &mut [__m512; R], g: &Geometry, mask: __mmask16) {
    let mut c = *acc;
    if g.rs == 1 {
        let (mut a, mut b) = (g.a, g.b);
        for _ in 0..g.k {
            // SAFETY: see the function's contract; a prefetch never faults.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(PREFETCH_STEPS * g.cs).cast());
                let bv = _mm512_maskz_loadu_ps(mask, b);
                for (r, c) in c.iter_mut().enumerate() {
                    *c = _mm512_fmadd_ps(_mm512_set1_ps(*a.add(r)), bv, *c);
                }
                a = a.wrapping_add(g.cs);
                b = b.wrapping_add(g.bs);
            }
        }
    } else {
        for kk in 0..g.k {
            // SAFETY: see the function's contract.
            unsafe {
                let bv = _mm512_maskz_loadu_ps(mask, g.b.add(kk * g.bs));
                for (r, c) in c.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*g.a.add(r * g.rs + kk * g.cs));
                    *c = _mm512_fmadd_ps(av, bv, *c);
                }
            }
        }
    }
    *acc = c;
}

/// Steps of `k` ahead at which the kernels ask for a packed A: a panel is one sequential
/// stream of 48 bytes per step, which the hardware prefetcher alone fetches from memory at
/// about half the rate of twelve rows read in place (weights larger than the caches:
/// `gemm_rate 3072 28 4608` 10.8 -> 6.8 ms; 16 steps ahead 7.9, 128 7.2). A hint only: no
/// fault past the end.
const PREFETCH_STEPS: usize = 64;

/// `act(acc + bias)`, the activation through the AVX2 code on each half (the AVX2 kernel's
/// operations, so its bits).
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
fn finish(acc: __m512, bias: Option<f32>, act: Option<Activation>) -> __m512 {
    finish_v(acc, bias.map(|b| _mm512_set1_ps(b)), act)
}

/// [`finish`] with a bias per lane.
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(crate) fn finish_v(mut acc: __m512, bias: Option<__m512>, act: Option<Activation>) -> __m512 {
    if let Some(bias) = bias {
        acc = _mm512_add_ps(acc, bias);
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
/// Each element's chain is [`tile`]'s, so are the bits. Unless `next` is null, each step also
/// asks for the two lines at `next + kk * bs` (and 16 floats on) in L2: the next pair's B
/// where it is read in place (see `panels`); a prefetch never faults.
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
    next: *const f32,
    epi: TileEpilogue<'_>,
    out: TileOut,
) {
    let cols2 = cols2.min(NR);
    assert!(rows <= MR);
    let g = Geometry::checked(rows, k, a, rs, cs, panel, bs, NR);
    let g2 = Geometry::checked(rows, k, a, rs, cs, panel2, bs, cols2);
    // SAFETY: the caller's contract and the checks above.
    unsafe { by_rows!(rows, kernel2(g, g2, next, epi, out)) }
}

/// An `R x 32` tile: `2 R` accumulators (`g` the first 16 columns, `g2` the next), then bias,
/// activation and the store of 32 floats per row.
///
/// # Safety
/// `g` and `g2` must hold what [`tile2`] checks, and `out` `R` rows of 32 floats.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn kernel2<const R: usize>(
    g: Geometry,
    g2: Geometry,
    next: *const f32,
    epi: TileEpilogue<'_>,
    out: TileOut,
) {
    let mask2: __mmask16 = if g2.cols >= NR { u16::MAX } else { (1u16 << g2.cols) - 1 };
    let mut lo = [_mm512_setzero_ps(); R];
    let mut hi = [_mm512_setzero_ps(); R];
    // SAFETY: the function's contract.
    unsafe { steps2(&mut lo, &mut hi, &g, g2.b, mask2, next) };
    for r in 0..R {
        let bias = epi.bias.map(|b| b[r]);
        // SAFETY: each output row holds 32 floats (the contract).
        unsafe {
            _mm512_storeu_ps(out.ptr.add(r * out.ld), finish(lo[r], bias, epi.act));
            _mm512_storeu_ps(out.ptr.add(r * out.ld + NR), finish(hi[r], bias, epi.act));
        }
    }
}

/// The `g.k` steps of a [`kernel2`] tile, from and into `lo` and `hi`: a function of its own,
/// never inlined. Inside the kernel, next to its epilogue, LLVM kept some accumulators on the
/// stack for some heights (5, 7 and 10 rows: a load and a store around most multiply-adds;
/// `gemm_rate 40 504 256 rows`, ten-row tiles, 92 GFLOP/s, 162 alone, as 11 and 12 rows).
///
/// # Safety
/// As [`kernel2`]'s; `b2` is `g2.b`.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn steps2<const R: usize>(
    lo: &mut [__m512; R],
    hi: &mut [__m512; R],
    g: &Geometry,
    b2: *const f32,
    mask2: __mmask16,
    next: *const f32,
) {
    let (mut l, mut h) = (*lo, *hi);
    if g.rs == 1 && !next.is_null() {
        // As below, with the next pair's B asked for in L2 at each step.
        let (mut a, mut b, mut b2, mut n) = (g.a, g.b, b2, next);
        for _ in 0..g.k {
            // SAFETY: see the function's contract; a prefetch never faults.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(PREFETCH_STEPS * g.cs).cast());
                _mm_prefetch::<_MM_HINT_T1>(n.cast());
                _mm_prefetch::<_MM_HINT_T1>(n.wrapping_add(NR).cast());
                let b0 = _mm512_loadu_ps(b);
                let b1 = _mm512_maskz_loadu_ps(mask2, b2);
                for r in 0..R {
                    let av = _mm512_set1_ps(*a.add(r));
                    l[r] = _mm512_fmadd_ps(av, b0, l[r]);
                    h[r] = _mm512_fmadd_ps(av, b1, h[r]);
                }
                a = a.wrapping_add(g.cs);
                b = b.wrapping_add(g.bs);
                b2 = b2.wrapping_add(g.bs);
                n = n.wrapping_add(g.bs);
            }
        }
    } else if g.rs == 1 {
        // A packed: the tile's rows at constant offsets from one pointer per step.
        let (mut a, mut b, mut b2) = (g.a, g.b, b2);
        for _ in 0..g.k {
            // SAFETY: see the function's contract; a prefetch never faults.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(PREFETCH_STEPS * g.cs).cast());
                let b0 = _mm512_loadu_ps(b);
                let b1 = _mm512_maskz_loadu_ps(mask2, b2);
                for r in 0..R {
                    let av = _mm512_set1_ps(*a.add(r));
                    l[r] = _mm512_fmadd_ps(av, b0, l[r]);
                    h[r] = _mm512_fmadd_ps(av, b1, h[r]);
                }
                a = a.wrapping_add(g.cs);
                b = b.wrapping_add(g.bs);
                b2 = b2.wrapping_add(g.bs);
            }
        }
    } else {
        for kk in 0..g.k {
            // SAFETY: see the function's contract.
            unsafe {
                let b0 = _mm512_loadu_ps(g.b.add(kk * g.bs));
                let b1 = _mm512_maskz_loadu_ps(mask2, b2.add(kk * g.bs));
                for r in 0..R {
                    let av = _mm512_set1_ps(*g.a.add(r * g.rs + kk * g.cs));
                    l[r] = _mm512_fmadd_ps(av, b0, l[r]);
                    h[r] = _mm512_fmadd_ps(av, b1, h[r]);
                }
            }
        }
    }
    (*lo, *hi) = (l, h);
}

/// Most columns of a [`columns`] tile.
pub(super) const COLUMN_COLS: usize = 8;

/// Computes a tile of up to 8 columns (`cols`) of `A * B_panel` with rows of C in the vectors:
/// one vector per part of A, `(a, cs, rows)` holding `rows <= 16` rows with element
/// `(r, kk)` at `a[r + kk * cs]` (a panel of a packed A: its rows contiguous at every
/// depth), the parts' rows one after another in C; each of B's `cols` values broadcast. For
/// narrow products (a row of a 7x7 map, the last column of a 49-column one) most lanes are
/// useful outputs, where a 16- or 8-column tile per row of A used `cols` lanes. Each
/// element's chain is [`tile`]'s, `acc = fma(a[k], b[k], acc)` in k order from zero (the
/// factors commute), then the same epilogue: the same bits. Stores the `cols` columns of
/// each row only.
///
/// # Safety
/// [`available`] must be true, and `out` must point at memory holding the parts' rows of
/// `cols` floats, `out.ld` apart.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn columns(
    parts: &[(&[f32], usize, usize)],
    k: usize,
    panel: &[f32],
    bs: usize,
    cols: usize,
    epi: TileEpilogue<'_>,
    out: TileOut,
) {
    assert!((1..=3).contains(&parts.len()) && (1..=COLUMN_COLS).contains(&cols));
    assert!(bs >= cols && (k == 0 || (k - 1) * bs + cols <= panel.len()));
    let mut a = [Part { a: std::ptr::null(), cs: 0, rows: 0, row0: 0 }; 3];
    let mut rows = 0;
    for (part, &(data, cs, n)) in a.iter_mut().zip(parts) {
        assert!((1..=16).contains(&n) && cs >= n);
        assert!(k == 0 || (n - 1) + (k - 1) * cs < data.len());
        *part = Part { a: data.as_ptr(), cs, rows: n, row0: rows };
        rows += n;
    }
    assert!(epi.bias.is_none_or(|b| b.len() >= rows));
    let b = panel.as_ptr();
    macro_rules! by_cols {
        ($v:literal) => {
            match cols {
                1 => columns_kernel::<$v, 1>(&a, k, b, bs, epi, out),
                2 => columns_kernel::<$v, 2>(&a, k, b, bs, epi, out),
                3 => columns_kernel::<$v, 3>(&a, k, b, bs, epi, out),
                4 => columns_kernel::<$v, 4>(&a, k, b, bs, epi, out),
                5 => columns_kernel::<$v, 5>(&a, k, b, bs, epi, out),
                6 => columns_kernel::<$v, 6>(&a, k, b, bs, epi, out),
                7 => columns_kernel::<$v, 7>(&a, k, b, bs, epi, out),
                _ => columns_kernel::<$v, 8>(&a, k, b, bs, epi, out),
            }
        };
    }
    // SAFETY: the caller's contract and the checks above.
    unsafe {
        match parts.len() {
            1 => by_cols!(1),
            2 => by_cols!(2),
            _ => by_cols!(3),
        }
    }
}

/// One vector's rows of a [`columns`] tile: `rows` rows from row `row0` of the tile, element
/// `(r, kk)` at `a + r + kk * cs`.
#[derive(Clone, Copy)]
struct Part {
    a: *const f32,
    cs: usize,
    rows: usize,
    row0: usize,
}

/// A tile of `P` columns in `V` vectors: `V * P` accumulators, then bias, activation, an
/// 8 x 8 transpose per half vector and the store of `P` floats per row.
///
/// # Safety
/// `a`, `b` and `bs` must hold what [`columns`] checks, and `out` the parts' rows of `P`
/// floats.
// Index loops, not iterators: with them LLVM kept the accumulators on the stack.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
unsafe fn columns_kernel<const V: usize, const P: usize>(
    a: &[Part; 3],
    k: usize,
    b: *const f32,
    bs: usize,
    epi: TileEpilogue<'_>,
    out: TileOut,
) {
    // Lanes past a part's rows are neither loaded nor stored.
    let mut masks = [0u16; V];
    let mut ptr = [std::ptr::null::<f32>(); V];
    let mut cs = [0usize; V];
    for v in 0..V {
        masks[v] = if a[v].rows >= 16 { u16::MAX } else { (1u16 << a[v].rows) - 1 };
        ptr[v] = a[v].a;
        cs[v] = a[v].cs;
    }
    let mut acc = [[_mm512_setzero_ps(); V]; P];
    for kk in 0..k {
        // SAFETY: see the function's contract; masked lanes are not read.
        unsafe {
            let mut av = [_mm512_setzero_ps(); V];
            for v in 0..V {
                av[v] = _mm512_maskz_loadu_ps(masks[v], ptr[v].add(kk * cs[v]));
                // As in `steps`: a hint, no fault past the end.
                _mm_prefetch::<_MM_HINT_T0>(
                    ptr[v].wrapping_add((kk + PREFETCH_STEPS) * cs[v]).cast(),
                );
            }
            for j in 0..P {
                let bv = _mm512_set1_ps(*b.add(kk * bs + j));
                for v in 0..V {
                    acc[j][v] = _mm512_fmadd_ps(av[v], bv, acc[j][v]);
                }
            }
        }
    }
    let mut bias = [None; V];
    for v in 0..V {
        // SAFETY: the bias holds every row (checked by `columns`); masked lanes are not read.
        bias[v] = epi
            .bias
            .map(|bb| unsafe { _mm512_maskz_loadu_ps(masks[v], bb.as_ptr().add(a[v].row0)) });
    }
    let store =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(P as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    // Eight rows by the tile's columns (the rest zero) per half vector, turned into rows
    // of C. Constant indices throughout, so the accumulators stay in registers.
    let mut halves = [[_mm256_setzero_ps(); 8]; 6];
    for j in 0..P {
        for v in 0..V {
            let x = finish_v(acc[j][v], bias[v], epi.act);
            halves[2 * v][j] = _mm512_castps512_ps256(x);
            halves[2 * v + 1][j] = _mm512_extractf32x8_ps::<1>(x);
        }
    }
    for (h, half) in halves.iter().enumerate().take(2 * V) {
        let part = a[h / 2];
        let first = 8 * (h % 2);
        if first >= part.rows {
            continue;
        }
        let by_row = transpose8(*half);
        for (r, vals) in by_row.iter().enumerate().take(part.rows - first) {
            // SAFETY: row part.row0 + first + r of the tile holds P floats (the contract).
            unsafe {
                let dst = out.ptr.add((part.row0 + first + r) * out.ld);
                if P == 8 {
                    _mm256_storeu_ps(dst, *vals);
                } else {
                    _mm256_maskstore_ps(dst, store, *vals);
                }
            }
        }
    }
}
