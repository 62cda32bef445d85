//! The AVX2 depthwise kernel for small maps: eight channels per vector.
//!
//! On a 14- or 7-column row the row kernel ([`super::avx2`]) spends most loads on edge taps
//! (masked) and on lanes past the row. Here eight channels' input rows are transposed into a
//! zero-padded tile in scratch (column-major over the eight channels: one vector per padded
//! column), so every tap of every output column is one aligned load, the weights of a tap are
//! one vector for the eight channels, and nothing is masked; the output rows are transposed
//! back. Each lane computes the row kernel's sum: `acc = acc + w * x` over (ky, kx) from zero
//! (padding rows and columns add `w * 0`: see [`super::avx2`] for why that keeps the bits),
//! then `+ bias` and the activation.

use std::arch::x86_64::*;
use std::ops::Range;

use frugal_core::ops::Activation;

use crate::simd;

/// Output rows per tile.
const CHUNK: usize = 4;

/// The geometry of a call, the same for all its groups of channels.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geom {
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub pt: usize,
    pub pl: usize,
    /// Input height and width, output width.
    pub h: usize,
    pub w: usize,
    pub wout: usize,
}

impl Geom {
    /// Padded columns the taps of a row read.
    fn wp(&self) -> usize {
        (self.wout - 1) * self.sw + (self.kw - 1) * self.dw + 1
    }

    /// Input rows `rows` output rows read.
    fn span(&self, rows: usize) -> usize {
        (rows - 1) * self.sh + (self.kh - 1) * self.dh + 1
    }

    /// Scratch floats of one task: the input tile, an output row and the weights.
    pub fn scratch(&self) -> usize {
        (self.span(CHUNK) * self.wp() * 8 + self.wout * 8 + self.kh * self.kw * 8)
            .next_multiple_of(16)
    }
}

/// Eight channels: each one's input plane (its whole ring), weights, bias and output plane.
pub(super) struct Group<'a> {
    pub inputs: [&'a [f32]; 8],
    pub weights: [&'a [f32]; 8],
    pub bias: [f32; 8],
    pub outs: [*mut f32; 8],
}

/// Output rows `rows` of eight channels. `in_at(iy)` is where input row `iy` starts in an
/// input plane, `out_at(oy)` where output row `oy` starts in an output plane.
///
/// # Safety
/// AVX2 must be available; each `outs[c] + out_at(oy)` must hold `wout` floats for every
/// `oy` in `rows`, written by nobody else during the call; `act` piecewise linear or `None`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn group(
    g: &Geom,
    grp: &Group<'_>,
    in_at: impl Fn(usize) -> usize,
    out_at: impl Fn(usize) -> usize,
    rows: Range<usize>,
    scratch: &mut [f32],
    act: Option<Activation>,
) {
    let (wp, taps) = (g.wp(), g.kh * g.kw);
    assert!(scratch.len() >= g.scratch() && g.wout >= 8 && g.w >= 1);
    let (tile, rest) = scratch.split_at_mut(g.span(CHUNK) * wp * 8);
    let (orow, wts) = rest.split_at_mut(g.wout * 8);
    for t in 0..taps {
        for c in 0..8 {
            wts[t * 8 + c] = grp.weights[c][t];
        }
    }
    let wts = &wts[..taps * 8];
    let bias = unsafe { _mm256_loadu_ps(grp.bias.as_ptr()) };
    // Input columns that land in the tile (stride 2 may leave the last one unread).
    let (pl, cols) = (g.pl.min(wp), g.w.min(wp.saturating_sub(g.pl)));
    let mut oy0 = rows.start;
    while oy0 < rows.end {
        let oy1 = (oy0 + CHUNK).min(rows.end);
        let first = (oy0 * g.sh) as isize - g.pt as isize;
        for (r, trow) in tile.chunks_exact_mut(wp * 8).take(g.span(oy1 - oy0)).enumerate() {
            let iy = first + r as isize;
            if iy < 0 || iy >= g.h as isize {
                trow.fill(0.0);
                continue;
            }
            trow[..pl * 8].fill(0.0);
            trow[(pl + cols) * 8..].fill(0.0);
            let at = in_at(iy as usize);
            transpose_in(&grp.inputs, at, cols, &mut trow[pl * 8..(pl + cols) * 8]);
        }
        for oy in oy0..oy1 {
            let t0 = (oy - oy0) * g.sh;
            let mut ox = 0;
            while g.wout - ox >= 8 {
                out_block::<8>(g, tile, wts, bias, act, t0, ox, orow);
                ox += 8;
            }
            for b in [4, 2, 1] {
                if g.wout - ox >= b {
                    match b {
                        4 => out_block::<4>(g, tile, wts, bias, act, t0, ox, orow),
                        2 => out_block::<2>(g, tile, wts, bias, act, t0, ox, orow),
                        _ => out_block::<1>(g, tile, wts, bias, act, t0, ox, orow),
                    }
                    ox += b;
                }
            }
            // SAFETY: the caller's: each output row holds `wout` floats.
            unsafe { transpose_out(orow, &grp.outs, out_at(oy), g.wout) };
        }
        oy0 = oy1;
    }
}

/// Output columns `ox .. ox + B` of one row (tile rows from `t0`) into `orow`, one vector of
/// eight channels per column.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn out_block<const B: usize>(
    g: &Geom,
    tile: &[f32],
    wts: &[f32],
    bias: __m256,
    act: Option<Activation>,
    t0: usize,
    ox: usize,
    orow: &mut [f32],
) {
    let wp8 = g.wp() * 8;
    // Every load below is inside `tile` and `wts`: checked once here.
    let last_row = t0 + (g.kh - 1) * g.dh;
    let last_col = (ox + B - 1) * g.sw + (g.kw - 1) * g.dw;
    assert!((last_row * g.wp() + last_col + 1) * 8 <= tile.len() && wts.len() >= g.kh * g.kw * 8);
    assert!(last_col < g.wp());
    // SAFETY (every intrinsic below): AVX is enabled, this is inlined into the kernel.
    let mut acc = [unsafe { _mm256_setzero_ps() }; B];
    for ky in 0..g.kh {
        let trow = tile[(t0 + ky * g.dh) * wp8..].as_ptr();
        for kx in 0..g.kw {
            // SAFETY (all loads): in bounds (asserted above).
            let wv = unsafe { _mm256_loadu_ps(wts.as_ptr().add((ky * g.kw + kx) * 8)) };
            for (j, acc) in acc.iter_mut().enumerate() {
                let at = ((ox + j) * g.sw + kx * g.dw) * 8;
                unsafe {
                    let x = _mm256_loadu_ps(trow.add(at));
                    *acc = _mm256_add_ps(*acc, _mm256_mul_ps(wv, x));
                }
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        let mut r = unsafe { _mm256_add_ps(*acc, bias) };
        if let Some(act) = act {
            // SAFETY: AVX is available.
            r = unsafe { simd::act8(act, r) };
        }
        // SAFETY: eight floats of `orow`.
        unsafe { _mm256_storeu_ps(orow[(ox + j) * 8..][..8].as_mut_ptr(), r) };
    }
}

/// `dst[j * 8 + c] = inputs[c][at + j]` for `j < n`: 8 x 8 transposes, the last block moved
/// back to end at `n` (rewriting columns with the same values), one by one below 8 columns.
#[inline(always)]
fn transpose_in(inputs: &[&[f32]; 8], at: usize, n: usize, dst: &mut [f32]) {
    if n < 8 {
        for j in 0..n {
            for c in 0..8 {
                dst[j * 8 + c] = inputs[c][at + j];
            }
        }
        return;
    }
    let mut c0 = 0;
    loop {
        let c0m = c0.min(n - 8);
        // SAFETY: AVX is enabled; eight floats of each row slice (bounds-checked).
        let rows: [__m256; 8] = std::array::from_fn(|c| unsafe {
            _mm256_loadu_ps(inputs[c][at + c0m..][..8].as_ptr())
        });
        let cols = simd::transpose8(rows);
        for (j, v) in cols.iter().enumerate() {
            // SAFETY: as above, eight floats of `dst`.
            unsafe { _mm256_storeu_ps(dst[(c0m + j) * 8..][..8].as_mut_ptr(), *v) };
        }
        if c0m + 8 >= n {
            break;
        }
        c0 += 8;
    }
}

/// Writes the `wout >= 8` columns of `orow` (one vector of eight channels each) to the output
/// rows `outs[c] + at`: 8 x 8 transposes, the last block moved back to end at `wout`.
///
/// # Safety
/// Each `outs[c] + at` must hold `wout` floats.
#[inline(always)]
unsafe fn transpose_out(orow: &[f32], outs: &[*mut f32; 8], at: usize, wout: usize) {
    let mut c0 = 0;
    loop {
        let c0m = c0.min(wout - 8);
        // SAFETY: AVX is enabled; eight floats of `orow`.
        let cols: [__m256; 8] = std::array::from_fn(|j| unsafe {
            _mm256_loadu_ps(orow[(c0m + j) * 8..][..8].as_ptr())
        });
        for (c, v) in simd::transpose8(cols).iter().enumerate() {
            // SAFETY: the caller's; columns c0m .. c0m + 8 <= wout.
            unsafe { _mm256_storeu_ps(outs[c].add(at + c0m), *v) };
        }
        if c0m + 8 >= wout {
            break;
        }
        c0 += 8;
    }
}
