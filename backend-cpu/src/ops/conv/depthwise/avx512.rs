//! The AVX-512 form of the row kernel ([`super::avx2`]): sixteen output columns per vector
//! instead of eight, so a 56-column row is four vectors instead of seven and a 14-column row
//! one instead of two. It serves one-row firings (by parts) and rows wider than the channel
//! tiles take ([`super::channels`]); layer by layer on narrower maps runs the tiles.
//!
//! A load that reaches past either end of the input row is masked with the lanes inside it
//! (AVX-512 masks suppress faults outside the row; the masks come from a table worked out once
//! per call), so edge blocks need no code of their own; loads inside the row are plain.
//! Each lane computes the AVX2 kernel's chain, `acc = fma(w, x, acc)` over (ky, kx) from zero,
//! then `+ bias` and the activation through the same 8-lane code on each half: the same bits.

use std::arch::x86_64::*;

use frugal_core::ops::Activation;

use super::avx2::{units_per_step, Cols, Unit};
use super::MAX_K;
use crate::gemm::finish16;

/// Most 16-column blocks a row may have (512 columns): the loads' masks for every block and
/// tap are worked out once per call, in a table of this many blocks on the stack.
pub(super) const MAX_BLOCKS: usize = 32;

/// Per block, per tap column: the masks of its loads (stride 2: two).
type Masks = [[__mmask16; 2]; MAX_K];

/// The masks of every block's loads for one column geometry: they depend on the block and
/// the tap column only, so they are worked out once per call of the caller (a one-row firing
/// over 576 planes makes 18 calls of [`rows`]; zeroing and filling the table in each cost
/// 3-4% of a 14-column firing, `kernel_min "dw3 576@14"` by parts).
pub(super) struct MaskTable {
    table: [Masks; MAX_BLOCKS],
    nb: usize,
    /// The geometry it was made for (checked by [`rows`]).
    key: (usize, usize, usize, usize, usize, usize),
}

impl MaskTable {
    /// The table for rows of geometry `c`: `sw` 1 or 2, `kw` at most [`MAX_K`], `wout` at most
    /// `16 * MAX_BLOCKS`.
    pub(super) fn new(c: &Cols) -> MaskTable {
        assert!((1..=2).contains(&c.sw) && c.kw <= MAX_K);
        let nb = c.wout.div_ceil(16);
        assert!(nb <= MAX_BLOCKS);
        let mut table = [[[0 as __mmask16; 2]; MAX_K]; MAX_BLOCKS];
        for (b, masks) in table.iter_mut().enumerate().take(nb) {
            let start = (col(c, 16 * b, 0) * c.sw) as isize - c.pl as isize;
            for (kx, m) in masks.iter_mut().enumerate().take(c.kw) {
                let s = start + (kx * c.dw) as isize;
                *m = [inside(s, c.w), inside(s + 16, c.w)];
            }
        }
        MaskTable { table, nb, key: (c.kw, c.sw, c.dw, c.pl, c.w, c.wout) }
    }
}

/// Computes every unit's output row, as [`super::avx2::rows`] does, with the loads' masks of
/// `table` (made for `c`).
///
/// # Safety
/// AVX-512 (F, DQ, VL), AVX2 and FMA must be available; each unit's pointers must hold what
/// [`Unit`] says; `sw` must be 1 or 2, `kh` and `kw` at most [`MAX_K`], `w >= 1`, and `wout`
/// at most `16 * MAX_BLOCKS`.
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
pub(super) unsafe fn rows(units: &[Unit], c: &Cols, act: Option<Activation>, table: &MaskTable) {
    assert!((1..=2).contains(&c.sw) && c.kh <= MAX_K && c.kw <= MAX_K && c.w >= 1);
    assert!(table.key == (c.kw, c.sw, c.dw, c.pl, c.w, c.wout), "masks of another geometry");
    let nb = table.nb;
    let table = &table.table[..nb];
    let most = units_per_step(nb);
    let mut rest = units;
    // SAFETY (all four): the caller's.
    unsafe {
        if most >= 8 {
            rest = steps::<8>(rest, c, act, table);
        }
        if most >= 4 {
            rest = steps::<4>(rest, c, act, table);
        }
        if most >= 2 {
            rest = steps::<2>(rest, c, act, table);
        }
        steps::<1>(rest, c, act, table);
    }
}

/// Groups of `U` units while there are that many, up to `8 / U` blocks per call; returns the
/// rest.
///
/// # Safety
/// As [`rows`].
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
unsafe fn steps<'u, const U: usize>(
    mut units: &'u [Unit],
    c: &Cols,
    act: Option<Activation>,
    table: &[Masks],
) -> &'u [Unit] {
    let (per, nb) = ((8 / U).max(1), table.len());
    while units.len() >= U {
        let group: &[Unit; U] = units[..U].try_into().expect("U units");
        let mut b = 0;
        while b < nb {
            let v = per.min(nb - b);
            // SAFETY: the caller's; `v * U <= 8`.
            unsafe { dispatch(group, c, act, 16 * b, &table[b..b + v]) };
            b += v;
        }
        units = &units[U..];
    }
    units
}

/// Calls [`block`] with the blocks of `masks` at `ox`.
///
/// # Safety
/// As [`rows`], with `v * U <= 8`.
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
unsafe fn dispatch<const U: usize>(
    units: &[Unit; U],
    c: &Cols,
    act: Option<Activation>,
    ox: usize,
    masks: &[Masks],
) {
    let v = masks.len();
    macro_rules! go {
        ($($v:literal)*) => {
            match (v, c.sw == 2) {
                $(
                    ($v, false) => block::<U, $v, false>(units, c, act, ox, masks),
                    ($v, true) => block::<U, $v, true>(units, c, act, ox, masks),
                )*
                _ => unreachable!("{v} blocks of {U} units"),
            }
        };
    }
    // SAFETY: the caller's; `v * U <= 8` keeps to the arms below.
    unsafe {
        match U {
            1 => go!(1 2 3 4 5 6 7 8),
            2 => go!(1 2 3 4),
            4 => go!(1 2),
            _ => go!(1),
        }
    }
}

/// The first output column of block `v` of a call at `ox`: a block that would pass `wout`
/// moves back to end there (recomputing a column gives the same bits), unless the row is
/// narrower than a block.
#[inline(always)]
fn col(c: &Cols, ox: usize, v: usize) -> usize {
    (ox + 16 * v).min(c.wout.saturating_sub(16))
}

/// Lanes `j` of a 16-float load at column `s` with `0 <= s + j < w`.
#[inline(always)]
fn inside(s: isize, w: usize) -> __mmask16 {
    let lo = (-s).clamp(0, 16) as u32;
    let hi = (w as isize - s).clamp(0, 16) as u32;
    if hi <= lo {
        return 0;
    }
    let upto = |n: u32| if n >= 16 { 0xffff_u32 } else { (1u32 << n) - 1 };
    (upto(hi) & !upto(lo)) as __mmask16
}

/// `V` blocks of sixteen output columns from `ox` (see [`col`]) for each of `U` units, with
/// their loads' masks.
///
/// # Safety
/// As [`rows`]; `masks` holds `V` blocks.
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
unsafe fn block<const U: usize, const V: usize, const S2: bool>(
    units: &[Unit; U],
    c: &Cols,
    act: Option<Activation>,
    ox: usize,
    masks: &[Masks],
) {
    let sw = if S2 { 2 } else { 1 };
    let masks: &[Masks; V] = masks.try_into().expect("V blocks");
    // Each block's first input column for kx = 0.
    let starts: [isize; V] = std::array::from_fn(|v| (col(c, ox, v) * sw) as isize - c.pl as isize);
    // Even lanes of two vectors: stride 2's columns.
    let evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    let mut acc = [[_mm512_setzero_ps(); V]; U];
    for ky in 0..c.kh {
        let rows: [*const f32; U] = std::array::from_fn(|u| units[u].rows[ky]);
        // SAFETY: ky * kw < kh * kw weights.
        let wrow: [*const f32; U] = std::array::from_fn(|u| unsafe { units[u].wk.add(ky * c.kw) });
        // `kx` picks a weight, an offset and each block's masks: a range reads plainest.
        #[allow(clippy::needless_range_loop)]
        for kx in 0..c.kw {
            let d = (kx * c.dw) as isize;
            for u in 0..U {
                // SAFETY: kx < kw weights of the row; masked lanes are not read, the others
                // lie inside the unit's row of `w` floats.
                unsafe {
                    let wv = _mm512_set1_ps(*wrow[u].add(kx));
                    for v in 0..V {
                        let p = rows[u].wrapping_offset(starts[v] + d);
                        let load = |m: __mmask16, p: *const f32| {
                            if m == 0xffff {
                                _mm512_loadu_ps(p)
                            } else {
                                _mm512_maskz_loadu_ps(m, p)
                            }
                        };
                        let xv = if S2 {
                            let lo = load(masks[v][kx][0], p);
                            let hi = load(masks[v][kx][1], p.wrapping_add(16));
                            _mm512_permutex2var_ps(lo, evens, hi)
                        } else {
                            load(masks[v][kx][0], p)
                        };
                        acc[u][v] = _mm512_fmadd_ps(wv, xv, acc[u][v]);
                    }
                }
            }
        }
    }
    let narrow = if c.wout < 16 { ((1u32 << c.wout) - 1) as __mmask16 } else { 0xffff };
    for (u, unit) in units.iter().enumerate() {
        let bias = _mm512_set1_ps(unit.bias);
        for (v, acc) in acc[u].iter().enumerate() {
            let r = finish16(*acc, Some(bias), act);
            // SAFETY: the output row holds `wout` floats: a block ends by `wout` (`col`), or
            // the row is narrower than a block and takes its first `wout` lanes.
            unsafe { _mm512_mask_storeu_ps(unit.out.add(col(c, ox, v)), narrow, r) };
        }
    }
}
