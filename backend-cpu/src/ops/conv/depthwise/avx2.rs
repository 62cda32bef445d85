//! The AVX2 depthwise kernel for horizontal strides 1 and 2, reading input rows in place.
//!
//! Work comes as *units*: one output row of one channel, with a pointer per kernel row (a row
//! of zeros where the kernel row falls in the padding). Up to eight units x column blocks are
//! computed together, so even a 7-column row of a 7x7 map runs eight independent chains of
//! adds (one channel's sum is a chain of dependent adds: alone it leaves the adders waiting).
//! Taps that fall outside the input row are masked loads (zeros); with stride 2 each tap
//! loads 16 columns and keeps the even ones.
//!
//! Every lane computes `acc = fma(w, x, acc)` (one rounding) over (ky, kx) from zero,
//! then `+ bias` and the activation: the portable kernel's order. A padding row adds `w * 0`
//! where the portable kernel skips the row, which gives the same bits: the sum starts at +0
//! and a round-to-nearest sum is -0 only when both terms are, so adding a zero never changes
//! it.

use std::arch::x86_64::*;

use frugal_core::ops::Activation;

use super::MAX_K;
use crate::simd;

/// One output row of one channel.
#[derive(Clone, Copy)]
pub(super) struct Unit {
    /// Input row read by each kernel row (`kh` of them), a zero row in the padding. Each holds
    /// `Cols::w` floats.
    pub rows: [*const f32; MAX_K],
    /// The channel's `kh * kw` weights.
    pub wk: *const f32,
    pub bias: f32,
    /// The output row: `Cols::wout` floats.
    pub out: *mut f32,
}

/// The column geometry shared by every unit of a call.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cols {
    pub kh: usize,
    pub kw: usize,
    /// Horizontal stride (1 or 2), dilation and left padding.
    pub sw: usize,
    pub dw: usize,
    pub pl: usize,
    /// Input and output row lengths.
    pub w: usize,
    pub wout: usize,
    /// `w + 16` lane masks: 8 zeros, `w` all-ones, 8 zeros ([`mask_table`]).
    pub masks: *const i32,
}

/// Fills `table` (`w + 16` entries) with what [`Cols::masks`] holds: the mask of a load at
/// column `s` is then the eight entries from `s + 8` (`s` clamped to `-8..=w`).
pub(super) fn mask_table(table: &mut [i32], w: usize) {
    for (i, m) in table[..w + 16].iter_mut().enumerate() {
        *m = if (8..8 + w).contains(&i) { -1 } else { 0 };
    }
}

/// Computes every unit's output row: bias and `act` (piecewise linear) applied in registers.
///
/// # Safety
/// AVX2 and FMA must be available; each unit's pointers must hold what [`Unit`] says; `sw` must
/// be 1 or 2, `kh` and `kw` at most [`MAX_K`], and `w >= 1`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn rows(units: &[Unit], c: &Cols, act: Option<Activation>) {
    assert!((1..=2).contains(&c.sw) && c.kh <= MAX_K && c.kw <= MAX_K && c.w >= 1);
    let nb = c.wout.div_ceil(8);
    // Blocks [lo, hi) load inside the row, the others are edges: the test is monotone in the
    // block (both ends of its loads move right with it), so once per call, not per unit.
    let lo = (0..nb).find(|&b| inside(c, b)).unwrap_or(nb);
    let hi = (lo..nb).rev().find(|&b| inside(c, b)).map_or(lo, |b| b + 1);
    debug_assert!((lo..hi).all(|b| inside(c, b)));
    let edges = Edges { nb, lo, hi };
    let most = units_per_step(nb);
    let mut rest = units;
    // SAFETY (all four): the caller's.
    unsafe {
        if most >= 8 {
            rest = steps::<8>(rest, c, act, edges);
        }
        if most >= 4 {
            rest = steps::<4>(rest, c, act, edges);
        }
        if most >= 2 {
            rest = steps::<2>(rest, c, act, edges);
        }
        steps::<1>(rest, c, act, edges);
    }
}

/// Units per step for rows of `nb` blocks, so that units x blocks fill about eight
/// accumulators (the AVX-512 kernel's blocks too).
pub(super) fn units_per_step(nb: usize) -> usize {
    match nb {
        1 => 8,
        2 => 4,
        3 | 4 => 2,
        _ => 1,
    }
}

/// Groups of `U` units while there are that many; returns the rest.
///
/// # Safety
/// As [`rows`].
#[target_feature(enable = "avx2,fma")]
unsafe fn steps<'u, const U: usize>(
    mut units: &'u [Unit],
    c: &Cols,
    act: Option<Activation>,
    Edges { nb, lo, hi }: Edges,
) -> &'u [Unit] {
    let per = (8 / U).max(1);
    let inside = |b: usize| (lo..hi).contains(&b);
    while units.len() >= U {
        let group: &[Unit; U] = units[..U].try_into().expect("U units");
        // Calls of at most `per` blocks whose inner blocks load inside the row: only a first
        // or last block at an edge masks its loads, and every block of a call is a chain of
        // adds of its own, so edge blocks do not run alone.
        let mut b = 0;
        while b < nb {
            let left = !inside(b);
            let mut v = 1;
            while v < per && b + v < nb {
                v += 1;
                if !inside(b + v - 1) {
                    break;
                }
            }
            let right = v > 1 && !inside(b + v - 1);
            // SAFETY: the caller's.
            unsafe { dispatch(group, c, act, 8 * b, v, left, right) };
            b += v;
        }
        units = &units[U..];
    }
    units
}

/// The row's `nb` blocks: `[lo, hi)` load inside the input row, the rest are edges.
#[derive(Clone, Copy)]
struct Edges {
    nb: usize,
    lo: usize,
    hi: usize,
}

/// Whether every load of block `b` lies inside the input row (stride 2: 16 columns per tap,
/// the last one odd).
fn inside(c: &Cols, b: usize) -> bool {
    let first = col(c, 8 * b, 0) * c.sw;
    let last = (col(c, 8 * b, 0) + 7) * c.sw + (c.kw - 1) * c.dw + c.sw - 1;
    first >= c.pl && last < c.w + c.pl
}

/// Calls [`block`] with `v` blocks at `ox`, masking the loads of the first (`left`) and the
/// last (`right`) block.
///
/// # Safety
/// As [`rows`], with `v * U <= 8`, and every load of an unmasked block inside the row.
#[target_feature(enable = "avx2,fma")]
unsafe fn dispatch<const U: usize>(
    units: &[Unit; U],
    c: &Cols,
    act: Option<Activation>,
    ox: usize,
    v: usize,
    left: bool,
    right: bool,
) {
    let s2 = c.sw == 2;
    macro_rules! go {
        ($($v:literal)*) => {
            match (v, left, right, s2) {
                // One block: `left` says whether it is masked (`right` is never set).
                (1, true, _, false) => block::<U, 1, true, false, false>(units, c, act, ox),
                (1, true, _, true) => block::<U, 1, true, false, true>(units, c, act, ox),
                (1, false, _, false) => block::<U, 1, false, false, false>(units, c, act, ox),
                (1, false, _, true) => block::<U, 1, false, false, true>(units, c, act, ox),
                $(
                    ($v, false, false, false) => block::<U, $v, false, false, false>(units, c, act, ox),
                    ($v, false, false, true) => block::<U, $v, false, false, true>(units, c, act, ox),
                    ($v, true, false, false) => block::<U, $v, true, false, false>(units, c, act, ox),
                    ($v, true, false, true) => block::<U, $v, true, false, true>(units, c, act, ox),
                    ($v, false, true, false) => block::<U, $v, false, true, false>(units, c, act, ox),
                    ($v, false, true, true) => block::<U, $v, false, true, true>(units, c, act, ox),
                    ($v, true, true, false) => block::<U, $v, true, true, false>(units, c, act, ox),
                    ($v, true, true, true) => block::<U, $v, true, true, true>(units, c, act, ox),
                )*
                _ => unreachable!("{v} blocks of {U} units"),
            }
        };
    }
    // SAFETY: the caller's; `v * U <= 8` keeps to the arms below.
    unsafe {
        match U {
            1 => go!(2 3 4 5 6 7 8),
            2 => go!(2 3 4),
            4 => go!(2),
            _ => go!(),
        }
    }
}

/// The first output column of block `v` of a call at `ox`: a block that would pass `wout`
/// moves back to end there (recomputing a column gives the same bits, and full stores beat
/// masked ones), unless the row is narrower than a block.
#[inline(always)]
fn col(c: &Cols, ox: usize, v: usize) -> usize {
    (ox + 8 * v).min(c.wout.saturating_sub(8))
}

/// The masks of an edge block's loads for one tap at column `s` (stride 2: two loads), from
/// the call's table.
#[inline(always)]
unsafe fn edge_masks<const S2: bool>(s: isize, c: &Cols) -> [__m256i; 2] {
    // SAFETY: the index is clamped to `0..=w + 8`: eight entries of the `w + 16` table.
    let at = |s: isize| unsafe {
        _mm256_loadu_si256(c.masks.add((s.clamp(-8, c.w as isize) + 8) as usize).cast())
    };
    if S2 {
        [at(s), at(s + 8)]
    } else {
        let m = at(s);
        [m, m]
    }
}

/// [`taps`] of an edge block with its masks ([`edge_masks`]).
#[inline(always)]
unsafe fn taps_masked<const S2: bool>(row: *const f32, s: isize, m: [__m256i; 2]) -> __m256 {
    // SAFETY: masked lanes are not read; the others are inside the row (the masks' table).
    unsafe {
        if S2 {
            let (lo, hi) = (row.wrapping_offset(s), row.wrapping_offset(s + 8));
            simd::even8(_mm256_maskload_ps(lo, m[0]), _mm256_maskload_ps(hi, m[1]))
        } else {
            _mm256_maskload_ps(row.wrapping_offset(s), m[0])
        }
    }
}

/// The input of eight output columns for one tap starting at column `s`, every load inside
/// the row: stride 1 reads `s .. s + 8`, stride 2 the even columns of `s .. s + 16`.
#[inline(always)]
unsafe fn taps<const S2: bool>(row: *const f32, s: isize) -> __m256 {
    // SAFETY: in bounds (the caller checked the block's columns).
    unsafe {
        let p = row.wrapping_offset(s);
        if S2 {
            simd::even8(_mm256_loadu_ps(p), _mm256_loadu_ps(p.wrapping_add(8)))
        } else {
            _mm256_loadu_ps(p)
        }
    }
}

/// `V` blocks of eight output columns from `ox` (see [`col`]) for each of `U` units, the loads
/// of the first block masked with `LEFT`, of the last with `RIGHT`.
///
/// # Safety
/// As [`rows`]; every load of an unmasked block lies inside `0..w`.
#[target_feature(enable = "avx2,fma")]
unsafe fn block<
    const U: usize,
    const V: usize,
    const LEFT: bool,
    const RIGHT: bool,
    const S2: bool,
>(
    units: &[Unit; U],
    c: &Cols,
    act: Option<Activation>,
    ox: usize,
) {
    let sw = if S2 { 2 } else { 1 };
    // Each block's first input column for kx = 0.
    let starts: [isize; V] = std::array::from_fn(|v| (col(c, ox, v) * sw) as isize - c.pl as isize);
    let mut acc = [[_mm256_setzero_ps(); V]; U];
    for ky in 0..c.kh {
        // The units' input rows and weight rows for this kernel row, out of the inner loops.
        let rows: [*const f32; U] = std::array::from_fn(|u| units[u].rows[ky]);
        // SAFETY: ky * kw < kh * kw weights.
        let wrow: [*const f32; U] = std::array::from_fn(|u| unsafe { units[u].wk.add(ky * c.kw) });
        for kx in 0..c.kw {
            let d = (kx * c.dw) as isize;
            // The edge blocks' masks for this tap, shared by the units.
            let zero = _mm256_setzero_si256();
            // SAFETY: the table holds what `Cols::masks` says.
            let lm = if LEFT { unsafe { edge_masks::<S2>(starts[0] + d, c) } } else { [zero; 2] };
            let rm =
                if RIGHT { unsafe { edge_masks::<S2>(starts[V - 1] + d, c) } } else { [zero; 2] };
            for u in 0..U {
                // SAFETY: kx < kw weights of the row; loads as the contract says.
                unsafe {
                    let wv = _mm256_broadcast_ss(&*wrow[u].add(kx));
                    for v in 0..V {
                        let s = starts[v] + d;
                        let xv = if LEFT && v == 0 {
                            taps_masked::<S2>(rows[u], s, lm)
                        } else if RIGHT && v == V - 1 {
                            taps_masked::<S2>(rows[u], s, rm)
                        } else {
                            taps::<S2>(rows[u], s)
                        };
                        acc[u][v] = _mm256_fmadd_ps(wv, xv, acc[u][v]);
                    }
                }
            }
        }
    }
    for (u, unit) in units.iter().enumerate() {
        let b8 = _mm256_set1_ps(unit.bias);
        for (v, acc) in acc[u].iter().enumerate() {
            let mut r = _mm256_add_ps(*acc, b8);
            if let Some(act) = act {
                // SAFETY: AVX is available.
                r = unsafe { simd::act8(act, r) };
            }
            // SAFETY: the output row holds `wout` floats: a block ends by `wout` (`col`), or
            // the row is narrower than a block and takes its first `wout` lanes.
            unsafe {
                if c.wout >= 8 {
                    _mm256_storeu_ps(unit.out.add(col(c, ox, v)), r);
                } else {
                    store_first(unit.out, r, c.wout);
                }
            }
        }
    }
}

/// Stores the first `n < 8` lanes of `r` at `p` (4, 2 and 1 at a time: masked stores are slow
/// on AMD processors, and a copy through memory called `memcpy`).
#[inline(always)]
unsafe fn store_first(p: *mut f32, r: __m256, n: usize) {
    // SAFETY: `p` holds `n` floats (caller); each store writes lanes below `n` only.
    unsafe {
        let (mut v, mut p, mut n) = (_mm256_castps256_ps128(r), p, n);
        if n >= 4 {
            _mm_storeu_ps(p, v);
            v = _mm256_extractf128_ps::<1>(r);
            p = p.add(4);
            n -= 4;
        }
        if n >= 2 {
            _mm_storel_pd(p.cast(), _mm_castps_pd(v));
            v = _mm_movehl_ps(v, v);
            p = p.add(2);
            n -= 2;
        }
        if n == 1 {
            _mm_store_ss(p, v);
        }
    }
}
