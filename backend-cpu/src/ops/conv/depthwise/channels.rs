//! The depthwise kernel for small maps: eight (AVX2) or sixteen (AVX-512) channels per vector.
//!
//! On a 14- or 7-column row the row kernel ([`super::avx2`]) spends most loads on edge taps
//! (masked) and on lanes past the row. Here `L` channels' input rows are transposed into a
//! zero-padded tile in scratch (column-major over the channels: one vector per padded column),
//! so every tap of every output column is one aligned load, the weights of a tap are one
//! vector for the channels, and nothing is masked; the output rows are transposed back (8 x 8
//! blocks, two per column block with sixteen channels). Each lane computes the row kernel's
//! sum: `acc = fma(w, x, acc)` over (ky, kx) from zero (padding rows and columns add `w * 0`: see
//! [`super::avx2`] for why that keeps the bits), then `+ bias` and the activation: the same
//! operations on eight lanes or sixteen, so the same bits.

use std::arch::x86_64::*;
use std::ops::Range;

use frugal_core::ops::Activation;

use crate::gemm::finish16;
use crate::simd;

/// Output rows per tile: each tile transposes the input rows its output rows span, so 4
/// rows transposed 1.5x the input of a 3x3 kernel, 8 rows 1.25x (`kernel_min dw`, whole
/// maps, sixteen channels: 4 -> 8 rows 7-8% faster, 17% on 5x5 over 14x14; 16 rows no better).
const CHUNK: usize = 8;
/// Most channels per vector.
pub(super) const MAX_LANES: usize = 16;

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

    /// Scratch floats of one task with `lanes` channels per vector, for calls of at most
    /// `rows` output rows: the input tile, an output row and the weights.
    pub fn scratch(&self, lanes: usize, rows: usize) -> usize {
        let span = self.span(rows.clamp(1, CHUNK));
        ((span * self.wp() + self.wout + self.kh * self.kw) * lanes).next_multiple_of(16)
    }
}

/// Up to [`MAX_LANES`] channels (a kernel takes its first `L`): each one's input plane (its
/// whole ring), weights, bias and output plane.
pub(super) struct Group<'a> {
    pub inputs: [&'a [f32]; MAX_LANES],
    pub weights: [&'a [f32]; MAX_LANES],
    pub bias: [f32; MAX_LANES],
    pub outs: [*mut f32; MAX_LANES],
}

/// A vector of `L` channels and the operations the kernel needs on it.
trait Lanes {
    const L: usize;
    type V: Copy;
    /// # Safety (every method): the vector extension is enabled in the caller; pointers
    /// address `L` floats.
    unsafe fn zero() -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `acc + w * x`, rounded once (fused).
    unsafe fn mul_add(acc: Self::V, w: Self::V, x: Self::V) -> Self::V;
    /// `act(acc + bias)`.
    unsafe fn finish(acc: Self::V, bias: Self::V, act: Option<Activation>) -> Self::V;
}

struct Avx2;

impl Lanes for Avx2 {
    const L: usize = 8;
    type V = __m256;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn mul_add(acc: __m256, w: __m256, x: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(w, x, acc) }
    }
    #[inline(always)]
    unsafe fn finish(acc: __m256, bias: __m256, act: Option<Activation>) -> __m256 {
        let r = unsafe { _mm256_add_ps(acc, bias) };
        match act {
            Some(act) => unsafe { simd::act8(act, r) },
            None => r,
        }
    }
}

struct Avx512;

impl Lanes for Avx512 {
    const L: usize = 16;
    type V = __m512;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn mul_add(acc: __m512, w: __m512, x: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(w, x, acc) }
    }
    #[inline(always)]
    unsafe fn finish(acc: __m512, bias: __m512, act: Option<Activation>) -> __m512 {
        // The bias added, then the activation through the AVX2 code on each half.
        unsafe { finish16(acc, Some(bias), act) }
    }
}

/// Output rows `rows` of the first eight channels of `grp`. `in_at(iy)` is where input row
/// `iy` starts in an input plane, `out_at(oy)` where output row `oy` starts in an output plane.
///
/// # Safety
/// AVX2 and FMA must be available; each `outs[c] + out_at(oy)` (`c < 8`) must hold `wout`
/// floats for every `oy` in `rows`, written by nobody else during the call; `act` piecewise
/// linear or `None`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn group8(
    g: &Geom,
    grp: &Group<'_>,
    in_at: impl Fn(usize) -> usize,
    out_at: impl Fn(usize) -> usize,
    rows: Range<usize>,
    scratch: &mut [f32],
    act: Option<Activation>,
) {
    // SAFETY: the caller's.
    unsafe { group::<Avx2>(g, grp, in_at, out_at, rows, scratch, act) }
}

/// [`group8`] on the first sixteen channels of `grp`.
///
/// # Safety
/// As [`group8`], with AVX-512 F and DQ available too and sixteen output planes.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(super) unsafe fn group16(
    g: &Geom,
    grp: &Group<'_>,
    in_at: impl Fn(usize) -> usize,
    out_at: impl Fn(usize) -> usize,
    rows: Range<usize>,
    scratch: &mut [f32],
    act: Option<Activation>,
) {
    // SAFETY: the caller's.
    unsafe { group::<Avx512>(g, grp, in_at, out_at, rows, scratch, act) }
}

#[inline(always)]
unsafe fn group<K: Lanes>(
    g: &Geom,
    grp: &Group<'_>,
    in_at: impl Fn(usize) -> usize,
    out_at: impl Fn(usize) -> usize,
    rows: Range<usize>,
    scratch: &mut [f32],
    act: Option<Activation>,
) {
    let (wp, taps, l) = (g.wp(), g.kh * g.kw, K::L);
    let most = rows.len().clamp(1, CHUNK);
    assert!(scratch.len() >= g.scratch(l, most) && g.wout >= 8 && g.w >= 1);
    let (tile, rest) = scratch.split_at_mut(g.span(most) * wp * l);
    let (orow, wts) = rest.split_at_mut(g.wout * l);
    for t in 0..taps {
        for c in 0..l {
            wts[t * l + c] = grp.weights[c][t];
        }
    }
    let wts = &wts[..taps * l];
    // SAFETY: L floats of the bias array.
    let bias = unsafe { K::load(grp.bias.as_ptr()) };
    // Input columns that land in the tile (stride 2 may leave the last one unread).
    let (pl, cols) = (g.pl.min(wp), g.w.min(wp.saturating_sub(g.pl)));
    let mut oy0 = rows.start;
    while oy0 < rows.end {
        let oy1 = (oy0 + most).min(rows.end);
        let first = (oy0 * g.sh) as isize - g.pt as isize;
        for (r, trow) in tile.chunks_exact_mut(wp * l).take(g.span(oy1 - oy0)).enumerate() {
            let iy = first + r as isize;
            if iy < 0 || iy >= g.h as isize {
                trow.fill(0.0);
                continue;
            }
            trow[..pl * l].fill(0.0);
            trow[(pl + cols) * l..].fill(0.0);
            let at = in_at(iy as usize);
            for half in 0..l / 8 {
                let inputs = std::array::from_fn(|c| grp.inputs[half * 8 + c]);
                transpose_in(&inputs, at, cols, &mut trow[pl * l + half * 8..], l);
            }
        }
        for oy in oy0..oy1 {
            let t0 = (oy - oy0) * g.sh;
            let mut ox = 0;
            while g.wout - ox >= 8 {
                out_block::<K, 8>(g, tile, wts, bias, act, t0, ox, orow);
                ox += 8;
            }
            for b in [4, 2, 1] {
                if g.wout - ox >= b {
                    match b {
                        4 => out_block::<K, 4>(g, tile, wts, bias, act, t0, ox, orow),
                        2 => out_block::<K, 2>(g, tile, wts, bias, act, t0, ox, orow),
                        _ => out_block::<K, 1>(g, tile, wts, bias, act, t0, ox, orow),
                    }
                    ox += b;
                }
            }
            for half in 0..l / 8 {
                let outs = std::array::from_fn(|c| grp.outs[half * 8 + c]);
                // SAFETY: the caller's: each output row holds `wout` floats.
                unsafe { transpose_out(&orow[half * 8..], l, &outs, out_at(oy), g.wout) };
            }
        }
        oy0 = oy1;
    }
}

/// Output columns `ox .. ox + B` of one row (tile rows from `t0`) into `orow`, one vector of
/// `L` channels per column.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn out_block<K: Lanes, const B: usize>(
    g: &Geom,
    tile: &[f32],
    wts: &[f32],
    bias: K::V,
    act: Option<Activation>,
    t0: usize,
    ox: usize,
    orow: &mut [f32],
) {
    let (l, wp) = (K::L, g.wp());
    // Every load below is inside `tile` and `wts`: checked once here.
    let last_row = t0 + (g.kh - 1) * g.dh;
    let last_col = (ox + B - 1) * g.sw + (g.kw - 1) * g.dw;
    assert!((last_row * wp + last_col + 1) * l <= tile.len() && wts.len() >= g.kh * g.kw * l);
    assert!(last_col < wp && (ox + B) * l <= orow.len());
    // SAFETY (every vector operation below): the extension is enabled, this is inlined into
    // the kernel; the loads and stores are in bounds (asserted above).
    let mut acc = [unsafe { K::zero() }; B];
    for ky in 0..g.kh {
        let trow = tile[(t0 + ky * g.dh) * wp * l..].as_ptr();
        for kx in 0..g.kw {
            let wv = unsafe { K::load(wts.as_ptr().add((ky * g.kw + kx) * l)) };
            for (j, acc) in acc.iter_mut().enumerate() {
                let at = ((ox + j) * g.sw + kx * g.dw) * l;
                unsafe { *acc = K::mul_add(*acc, wv, K::load(trow.add(at))) };
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        unsafe { K::store(orow.as_mut_ptr().add((ox + j) * l), K::finish(*acc, bias, act)) };
    }
}

/// `dst[j * stride + c] = inputs[c][at + j]` for `j < n`, `c < 8`: 8 x 8 transposes, the last
/// block moved back to end at `n` (rewriting columns with the same values), one by one below 8
/// columns.
#[inline(always)]
fn transpose_in(inputs: &[&[f32]; 8], at: usize, n: usize, dst: &mut [f32], stride: usize) {
    if n < 8 {
        for j in 0..n {
            for c in 0..8 {
                dst[j * stride + c] = inputs[c][at + j];
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
            unsafe { _mm256_storeu_ps(dst[(c0m + j) * stride..][..8].as_mut_ptr(), *v) };
        }
        if c0m + 8 >= n {
            break;
        }
        c0 += 8;
    }
}

/// Writes the `wout >= 8` columns of `orow` (eight channels at `j * stride` for column `j`) to
/// the output rows `outs[c] + at`: 8 x 8 transposes, the last block moved back to end at
/// `wout`.
///
/// # Safety
/// Each `outs[c] + at` must hold `wout` floats.
#[inline(always)]
unsafe fn transpose_out(orow: &[f32], stride: usize, outs: &[*mut f32; 8], at: usize, wout: usize) {
    let mut c0 = 0;
    loop {
        let c0m = c0.min(wout - 8);
        // SAFETY: AVX is enabled; eight floats of `orow`.
        let cols: [__m256; 8] = std::array::from_fn(|j| unsafe {
            _mm256_loadu_ps(orow[(c0m + j) * stride..][..8].as_ptr())
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
