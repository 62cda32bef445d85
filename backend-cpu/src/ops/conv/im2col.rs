//! im2col: the input taps of a band of output rows, written straight into the packed-panel
//! layout of the matrix product's B ([`gemm::packed_index`]). Every path writes the same
//! values (padding as +0.0), so the products, and their bits, do not depend on which ran.

use frugal_core::backend::RowWindow;
use frugal_core::ops::Conv;

use super::{ColumnTaps, Geo};
use crate::arena::Src;
use crate::gemm;
#[cfg(target_arch = "x86_64")]
use crate::simd;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m256, __m256i, _mm256_and_si256, _mm256_cmpgt_epi32, _mm256_loadu_ps, _mm256_set1_epi32,
};

/// im2col of output rows `[r0, r1)` for the channels `c0 .. c0 + cg` of one image/group,
/// written in packed-panel layout: the band columns `cols` (a whole number of panels from the
/// start) into `part`, which holds those panels.
#[allow(clippy::too_many_arguments)]
pub(super) fn im2col(
    op: &Conv,
    x: &RowWindow,
    src: &Src<'_>,
    part: &mut [f32],
    c0: usize,
    (r0, r1): (usize, usize),
    cols: std::ops::Range<usize>,
    g: &Geo,
    isa: gemm::Isa,
) {
    #[cfg(target_arch = "x86_64")]
    if isa == gemm::Isa::Avx2Fma && op.kernel[0] <= MAX_KH {
        // SAFETY (both): AVX2 was detected at run time (`Isa::Avx2Fma`).
        match op.strides[1] {
            1 => return unsafe { panels_avx2::<1>(op, x, src, part, c0, (r0, r1), cols, g) },
            2 => return unsafe { panels_avx2::<2>(op, x, src, part, c0, (r0, r1), cols, g) },
            _ => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    let [kh, kw] = op.kernel;
    let (sh, dh, pt) = (op.strides[0], op.dilations[0], op.pads[0]);
    let taps = ColumnTaps::new(op, g);
    // Output rows of the band these columns touch.
    let (oy0, oy1) = (r0 + cols.start / g.wout, (r0 + cols.end.div_ceil(g.wout)).min(r1));
    for ci in 0..g.cg {
        for ky in 0..kh {
            for kx in 0..kw {
                let kidx = (ci * kh + ky) * kw + kx;
                let (lo, hi, st) = taps.get(op, g, kx);
                for oy in oy0..oy1 {
                    let iy = (oy * sh + ky * dh) as isize - pt as isize;
                    let jrow = (oy - r0) * g.wout;
                    let row = if iy < 0 || iy >= g.h as isize {
                        None
                    } else {
                        Some(src.slice(x.row_start(c0 + ci, iy as usize), g.w))
                    };
                    let oxs = cols.start.saturating_sub(jrow)..(cols.end - jrow).min(g.wout);
                    let at = PackAt { depth: g.k, kidx, jrow, base: cols.start };
                    pack_row(part, at, oxs, row, (lo, hi, st), op.strides[1]);
                }
            }
        }
    }
    // Padding columns of the last panel stay as they are: their products are never stored.
}

/// Where [`pack_row`] writes: row `kidx` of a packed B of depth `depth` whose first column is
/// band column `base`; output column `ox` of the row is band column `jrow + ox`.
#[derive(Clone, Copy)]
struct PackAt {
    depth: usize,
    kidx: usize,
    jrow: usize,
    base: usize,
}

/// Writes the output columns `oxs` of one output row into row `at.kidx` of the packed B:
/// `row[st + (ox - lo) * sw]` for `ox` in `[lo, hi)`, zero elsewhere or when the input row is
/// padding. Runs that stay inside one panel are contiguous in the packed layout.
#[inline]
fn pack_row(
    packed: &mut [f32],
    PackAt { depth, kidx, jrow, base }: PackAt,
    oxs: std::ops::Range<usize>,
    row: Option<&[f32]>,
    (lo, hi, st): (usize, usize, usize),
    sw: usize,
) {
    let nr = gemm::NR;
    let mut ox = oxs.start;
    while ox < oxs.end {
        let j = jrow + ox - base;
        let (p, c) = (j / nr, j % nr);
        let n = (nr - c).min(oxs.end - ox);
        let base = p * nr * depth + kidx * nr + c;
        let dst = &mut packed[base..base + n];
        // Columns of the run whose tap lands in the row: [a, b) of `dst`, zeros around.
        let (a, b) = (lo.clamp(ox, ox + n) - ox, hi.clamp(ox, ox + n) - ox);
        match row {
            Some(row) if a < b => {
                dst[..a].fill(0.0);
                dst[b..].fill(0.0);
                let s = st + (ox + a - lo) * sw;
                gather(&mut dst[a..b], &row[s..], sw);
            }
            _ => dst.fill(0.0),
        }
        ox += n;
    }
}

/// `dst[t] = src[t * step]`. Runs are at most a panel (16 columns) long: step 1 is a copy
/// (`memcpy`'s overlapping moves beat 8-wide vectors and a scalar tail on runs of 14). With
/// AVX2, strides 1 and 2 take [`panels_avx2`] instead.
#[inline]
fn gather(dst: &mut [f32], src: &[f32], step: usize) {
    assert!(dst.is_empty() || (dst.len() - 1) * step < src.len(), "gather past the row");
    if step == 1 {
        dst.copy_from_slice(&src[..dst.len()]);
        return;
    }
    for (d, v) in dst.iter_mut().zip(src.iter().step_by(step)) {
        *d = *v;
    }
}

/// Lanes of an 8-column half panel that come from one output row: output row `oy`, the
/// output column of each lane (`OUTSIDE` for lanes of other runs), and `shift`, the output
/// column lane 0 would have.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Run {
    oy: usize,
    ox: std::arch::x86_64::__m256i,
    shift: isize,
}

/// Output column of lanes outside a run: below every tap's first valid column.
#[cfg(target_arch = "x86_64")]
const OUTSIDE: i32 = i32::MIN / 2;

/// The runs of the half panel whose lane 0 is band column `j0` (lanes up to band column
/// `end`), for output rows from `r0`, `wout` columns each. Returns how many of `runs` are set.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn half_runs(j0: usize, end: usize, r0: usize, wout: usize, runs: &mut [Run; 8]) -> usize {
    use std::arch::x86_64::*;
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let (mut c, mut n) = (0, 0);
    while c < 8 && j0 + c < end {
        let j = j0 + c;
        let ox = j % wout;
        let len = (wout - ox).min(8 - c).min(end - j);
        let shift = ox as isize - c as isize;
        // Lanes c .. c + len: output column lane + shift.
        let inside = _mm256_andnot_si256(
            _mm256_cmpgt_epi32(_mm256_set1_epi32(c as i32), lane),
            _mm256_cmpgt_epi32(_mm256_set1_epi32((c + len) as i32), lane),
        );
        let cols = _mm256_add_epi32(lane, _mm256_set1_epi32(shift as i32));
        let ox = _mm256_blendv_epi8(_mm256_set1_epi32(OUTSIDE), cols, inside);
        runs[n] = Run { oy: r0 + j / wout, ox, shift };
        (c, n) = (c + len, n + 1);
    }
    n
}

/// Kernel rows [`panels_avx2`] handles (taller kernels take the portable path).
#[cfg(target_arch = "x86_64")]
const MAX_KH: usize = 16;

/// Kernel columns whose unmasked halves [`panels_avx2`] notes (wider kernels mask every load).
#[cfg(target_arch = "x86_64")]
const MAX_KW: usize = 16;

/// The tap column range `(lo, hi, _)` of [`ColumnTaps::get`] as [`inside`] compares it.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn bounds((lo, hi, _): (usize, usize, usize)) -> (__m256i, __m256i) {
    (_mm256_set1_epi32(lo as i32 - 1), _mm256_set1_epi32(hi as i32))
}

/// All-ones lanes where output column `ox` is in `[lo, hi)`: its tap lands inside the row.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn inside(ox: __m256i, (lo, hi): (__m256i, __m256i)) -> __m256i {
    _mm256_and_si256(_mm256_cmpgt_epi32(ox, lo), _mm256_cmpgt_epi32(hi, ox))
}

/// The eight floats `planes[i + S * l]`, or `None` where they are not all inside `planes`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn load8<const S: usize>(planes: &[f32], i: isize) -> Option<__m256> {
    if i < 0 || i as usize + 8 * S > planes.len() {
        return None;
    }
    let p = planes[i as usize..].as_ptr();
    // SAFETY: 8 S floats from `p` are in `planes` (checked above).
    Some(unsafe {
        if S == 1 {
            _mm256_loadu_ps(p)
        } else {
            simd::even8(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
        }
    })
}

/// [`im2col`] for horizontal stride `S` (1 or 2) with AVX2, panel by panel: each 16-column
/// panel row is built in two registers, one load per output row a half panel spans (stride
/// 2: sixteen floats, the even ones kept), lanes of padding and of other rows cleared by a
/// mask (+0.0), and written whole, so a panel's depth is written front to back (the
/// row-by-row order of the portable path strides a panel's size between writes, a multiple
/// of 4 KB at depth 576: one L1 set; it took a quarter of a 3x3 layer's time). Same values
/// as the portable path.
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
unsafe fn panels_avx2<const S: usize>(
    op: &Conv,
    x: &RowWindow,
    src: &Src<'_>,
    part: &mut [f32],
    c0: usize,
    (r0, _r1): (usize, usize),
    cols: std::ops::Range<usize>,
    g: &Geo,
) {
    use std::arch::x86_64::*;
    let [kh, kw] = op.kernel;
    let (sh, dh, pt) = (op.strides[0], op.dilations[0], op.pads[0]);
    let (dw, pl) = (op.dilations[1], op.pads[1]);
    let (nr, depth) = (gemm::NR, g.k);
    assert!(kh <= MAX_KH, "im2col: kernel taller than MAX_KH");
    let taps = ColumnTaps::new(op, g);
    let panels = cols.len().div_ceil(nr);
    assert!(part.len() >= panels * nr * depth, "im2col: part holds its panels");
    // The group's input planes, every ring slot: one slice, read at row offsets.
    let plane = x.capacity * x.row_stride;
    let planes = src.slice(x.row_start(c0, 0), g.cg * plane);
    let none = Run { oy: 0, ox: _mm256_setzero_si256(), shift: 0 };
    let mut runs = [[none; 8]; 2];
    // Per half, run and kernel row: offset in a plane of the element lane 0 would read for
    // an input column of 0 (`None`: a padding row).
    let mut at = [[[None::<isize>; MAX_KH]; 8]; 2];
    for p in 0..panels {
        let j0 = cols.start + p * nr;
        let n = [0, 1].map(|h| half_runs(j0 + 8 * h, cols.end, r0, g.wout, &mut runs[h]));
        for h in 0..2 {
            for (run, at) in runs[h].iter().zip(at[h].iter_mut()).take(n[h]) {
                for (ky, at) in at.iter_mut().enumerate().take(kh) {
                    let iy = (run.oy * sh + ky * dh) as isize - pt as isize;
                    *at = (iy >= 0 && (iy as usize) < g.h).then(|| {
                        (x.slot(iy as usize) * x.row_stride) as isize + S as isize * run.shift
                    });
                }
            }
        }
        // Halves that are one run whose lanes all read inside the row for tap column kx:
        // their loads need no mask (most of a wide map's panels, at every kx).
        let mut whole = [[false; MAX_KW]; 2];
        for h in 0..2 {
            if n[h] == 1 {
                for (kx, w) in whole[h].iter_mut().enumerate().take(kw) {
                    let valid = inside(runs[h][0].ox, bounds(taps.get(op, g, kx)));
                    *w = _mm256_movemask_ps(_mm256_castsi256_ps(valid)) == 0xff;
                }
            }
        }
        let panel = &mut part[p * nr * depth..(p + 1) * nr * depth];
        let mut kidx = 0;
        for ci in 0..g.cg {
            let pc = (ci * plane) as isize;
            for ky in 0..kh {
                for kx in 0..kw {
                    let cols = bounds(taps.get(op, g, kx));
                    // Input column of output column ox: S * ox + off.
                    let off = pc + (kx * dw) as isize - pl as isize;
                    let mut v = [_mm256_setzero_ps(); 2];
                    for h in 0..2 {
                        if whole[h].get(kx) == Some(&true) {
                            // Every lane valid (the mask would keep them all): a plain load,
                            // zeros in a padding row.
                            let Some(at) = at[h][0][ky] else { continue };
                            if let Some(x) = load8::<S>(planes, at + off) {
                                v[h] = x;
                                continue;
                            }
                        }
                        for (run, at) in runs[h].iter().zip(&at[h]).take(n[h]) {
                            let Some(at) = at[ky] else { continue };
                            let valid = inside(run.ox, cols);
                            // Lane l reads planes[at + off + S * l]; where `valid`, lo <= ox
                            // < hi puts the input column inside the row (`ColumnTaps`).
                            // Other lanes are cleared: loaded plainly inside `planes`, one by
                            // one at its ends.
                            let i = at + off;
                            let x = if let Some(x) = load8::<S>(planes, i) {
                                _mm256_and_ps(x, _mm256_castsi256_ps(valid))
                            } else {
                                let mut lanes = [0i32; 8];
                                // SAFETY: AVX is enabled; `lanes` holds 8 lanes.
                                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), valid) };
                                let v: [f32; 8] = std::array::from_fn(|l| {
                                    let at = i + (S * l) as isize;
                                    if lanes[l] != 0 {
                                        planes[at as usize]
                                    } else {
                                        0.0
                                    }
                                });
                                // SAFETY: AVX is enabled; `v` holds 8 floats.
                                unsafe { _mm256_loadu_ps(v.as_ptr()) }
                            };
                            v[h] = _mm256_or_ps(v[h], x);
                        }
                    }
                    let dst = &mut panel[kidx * nr..kidx * nr + nr];
                    // SAFETY: `dst` holds 16 floats.
                    unsafe {
                        _mm256_storeu_ps(dst.as_mut_ptr(), v[0]);
                        _mm256_storeu_ps(dst.as_mut_ptr().add(8), v[1]);
                    }
                    kidx += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use frugal_core::backend::{Dims, RowWindow};
    use frugal_core::ops::Conv;
    use frugal_core::DType;

    use super::*;
    use crate::arena::Arena;

    /// The AVX2 paths (strides 1 and 2) write the portable path's values, bit for bit, for every band
    /// column it covers: kernels 1..5 wide, dilations, asymmetric pads, rows narrower and
    /// wider than a half panel, vertical strides, partial column ranges (a thread's panels),
    /// and inputs in rings whose unused slots hold NaN (a lane read from the wrong row would
    /// show).
    #[test]
    fn avx2_panels_match_the_portable_path() {
        if gemm::Isa::detect() != gemm::Isa::Avx2Fma {
            return;
        }
        type Case = ([usize; 2], [usize; 3], [usize; 4], usize, [usize; 3]);
        let cases: &[Case] = &[
            // (kernel, [vertical stride, horizontal stride, dilation], pads, channels,
            // [h, w, ring capacity])
            ([3, 3], [1, 1, 1], [1, 1, 1, 1], 3, [9, 56, 9]),
            ([3, 3], [1, 1, 1], [1, 1, 1, 1], 2, [12, 14, 5]),
            ([3, 3], [1, 1, 1], [1, 1, 1, 1], 4, [7, 7, 7]),
            ([1, 3], [1, 1, 1], [0, 1, 0, 1], 2, [6, 5, 3]),
            ([5, 5], [1, 1, 2], [4, 4, 4, 4], 2, [11, 13, 11]),
            ([3, 5], [2, 1, 1], [0, 2, 1, 1], 3, [10, 37, 6]),
            ([3, 3], [1, 1, 1], [0, 0, 0, 0], 2, [8, 8, 8]),
            ([2, 2], [1, 1, 1], [1, 0, 0, 1], 1, [4, 3, 4]),
            ([3, 3], [2, 2, 1], [1, 1, 1, 1], 3, [12, 56, 12]),
            ([7, 7], [2, 2, 1], [3, 3, 3, 3], 3, [16, 41, 9]),
            ([1, 1], [2, 2, 1], [0, 0, 0, 0], 4, [14, 14, 14]),
            ([3, 3], [1, 2, 2], [2, 1, 0, 2], 2, [9, 23, 7]),
            ([3, 3], [2, 2, 1], [0, 1, 1, 0], 2, [8, 9, 4]),
        ];
        let mut checked = 0;
        for (case, &(kernel, [sh, sw, d], pads, cin, [h, w, cap])) in cases.iter().enumerate() {
            let op = Conv {
                kernel,
                strides: [sh, sw],
                dilations: [d, d],
                pads,
                groups: 1,
                act: None,
                residual: false,
            };
            let hout = (h + pads[0] + pads[2] - d * (kernel[0] - 1) - 1) / sh + 1;
            let wout = (w + pads[1] + pads[3] - d * (kernel[1] - 1) - 1) / sw + 1;
            let xd = Dims::new(&[1, cin, h, w]).unwrap();
            let yd = Dims::new(&[1, 2, hout, wout]).unwrap();
            let wd = Dims::new(&[2, cin, kernel[0], kernel[1]]).unwrap();
            let x = RowWindow { capacity: cap, ..RowWindow::whole(0, DType::F32, xd) };
            let y = RowWindow::whole(0, DType::F32, yd);
            let g = super::super::geo(&op, &x, &wd, &y);
            // Bands of output rows the ring can serve: one, two, and all rows when it is whole.
            for band in [1, 2, hout] {
                for r0 in (0..hout).step_by(band) {
                    let r1 = (r0 + band).min(hout);
                    let lo = (r0 * sh).saturating_sub(pads[0]);
                    let hi = ((r1 - 1) * sh + d * (kernel[0] - 1) + 1).saturating_sub(pads[0]);
                    if hi.min(h) - lo > cap {
                        continue;
                    }
                    let mut arena = Arena::new(4 * (cin * cap * w + 16)).unwrap();
                    let data = arena.f32_mut();
                    data.fill(f32::NAN);
                    for c in 0..cin {
                        for r in lo..hi.min(h) {
                            let at = x.row_start(c, r);
                            for (i, v) in data[at..at + w].iter_mut().enumerate() {
                                *v = (c * 1000 + r * 100 + i) as f32 + 0.5;
                            }
                        }
                    }
                    let end = arena.len();
                    let io = arena.split(end..end, end..end).unwrap();
                    let ncols = (r1 - r0) * wout;
                    // Whole band, then a thread's share starting at its second panel.
                    for cols in [0..ncols, gemm::NR.min(ncols)..ncols] {
                        let len = gemm::packed_len(g.k, cols.len());
                        let run = |isa| {
                            let mut part = vec![-1.0f32; len];
                            im2col(&op, &x, &io.src, &mut part, 0, (r0, r1), cols.clone(), &g, isa);
                            part
                        };
                        let (want, got) = (run(gemm::Isa::Generic), run(gemm::Isa::Avx2Fma));
                        for kk in 0..g.k {
                            for j in 0..cols.len() {
                                let i = gemm::packed_index(g.k, kk, j);
                                assert_eq!(
                                    got[i].to_bits(),
                                    want[i].to_bits(),
                                    "case {case}, rows {r0}..{r1}, cols {cols:?}, k {kk}, j {j}"
                                );
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100, "only {checked} bands checked");
    }
}
