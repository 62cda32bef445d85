//! Max and average pooling over row windows, and global average pooling.
//!
//! Each output element visits its taps in (ky, kx) order: max pooling starts from -inf and keeps
//! the larger value (padding never takes part), average pooling sums the in-bounds taps from 0
//! and divides once by the ONNX divisor. The output row is the accumulator, so the order per
//! element does not depend on which rows a call produces.

use frugal_core::backend::RowWindow;
use frugal_core::ops::conv::conv_out_len;
use frugal_core::ops::{Pool, PoolKind};
use frugal_core::Result;

use super::{contiguous_rows, in_row, need_dims, need_whole, rows, Flat};
use crate::arena::Io;
use crate::fail;
use crate::gemm::Isa;
use crate::Ctx;

/// Folds input rows `x.first_row .. x.first_row + x.rows` into output rows `y.first_row ..
/// y.first_row + y.rows`. An output row is started (set to the identity of max or sum) by the
/// call that holds its first in-bounds tap row, takes every tap row the call holds, and is
/// finished (averages divided) by the call that holds its last. Given all of a row's taps this
/// is ordinary pooling; given a few input rows at a time (by parts), output rows keep running
/// maxima or sums between calls, and each element still sees its taps in (ky, kx) order.
pub(crate) fn pool(
    op: &Pool,
    x: &RowWindow,
    y: &RowWindow,
    io: Io<'_>,
    ctx: Ctx<'_>,
) -> Result<()> {
    check(op, x, y)?;
    let (planes, h, _) = x.geometry();
    let (a, b) = (x.first_row, x.first_row + x.rows);
    let (s, d, pad) = (op.strides[0], op.dilations[0], op.pads[0]);
    let taps = |oy: usize| (0..op.kernel[0]).filter_map(move |ky| tap(oy, ky, s, d, pad, h));
    if let Some(oy) = rows(y).find(|&oy| taps(oy).next().is_none()) {
        return Err(fail(
            "pool",
            format!("output row {oy} has no input rows (window inside the padding)"),
        ));
    }
    let (_, _, w) = y.geometry();
    let plane_len = y.capacity * y.row_stride;
    let par = ctx.par.for_work(planes * y.rows * w * op.kernel[0] * op.kernel[1]);
    let tile = par.split(planes, 1);
    let src = io.src;
    // Threads take whole planes: each output element is still folded by one thread, in order.
    par.chunks(&mut io.out[..planes * plane_len], tile * plane_len, |t, chunk| {
        for (i, plane) in chunk.chunks_mut(plane_len).enumerate() {
            let p = t * tile + i;
            for oy in rows(y) {
                let (first, last) = (taps(oy).next(), taps(oy).next_back());
                let (Some(first), Some(last)) = (first, last) else { continue };
                if !taps(oy).any(|iy| (a..b).contains(&iy)) {
                    // Dilated windows skip rows: this call holds none of this row's taps.
                    continue;
                }
                let at = y.slot(oy) * y.row_stride;
                let out = &mut plane[at..at + w];
                if first >= a {
                    out.fill(if op.kind == PoolKind::Max { f32::NEG_INFINITY } else { 0.0 });
                }
                for iy in taps(oy).filter(|iy| (a..b).contains(iy)) {
                    accumulate_row(op, in_row(src, x, p, iy), out, ctx.isa);
                }
                if last < b && op.kind == PoolKind::Avg {
                    divide_row(op, oy, x, out);
                }
            }
        }
    });
    Ok(())
}

/// Checks shapes and parameters against the ONNX output size.
fn check(op: &Pool, x: &RowWindow, y: &RowWindow) -> Result<()> {
    let xd = x.dims.as_slice();
    if xd.len() != 4
        || op.kernel.contains(&0)
        || op.strides.contains(&0)
        || op.dilations.contains(&0)
    {
        return Err(fail(
            "pool",
            format!(
                "input {xd:?} with kernel {:?}, strides {:?}, dilations {:?}",
                op.kernel, op.strides, op.dilations
            ),
        ));
    }
    let mut want = [xd[0], xd[1], 0, 0];
    for a in 0..2 {
        let (k, s, d) = (op.kernel[a], op.strides[a], op.dilations[a]);
        want[2 + a] = conv_out_len(xd[2 + a], k, s, d, op.pads[a], op.pads[a + 2], op.ceil_mode)
            .ok_or_else(|| {
                fail("pool", format!("window {:?} does not fit input {xd:?}", op.kernel))
            })?;
    }
    need_dims("pool", "output", &y.dims, &want)
}

/// Input index of tap `k` of output `o` along one axis, if it falls inside the input.
#[inline]
fn tap(o: usize, k: usize, stride: usize, dil: usize, pad: usize, len: usize) -> Option<usize> {
    (o * stride + k * dil).checked_sub(pad).filter(|&i| i < len)
}

/// Folds the taps of one input row into an output row, in kx order.
fn accumulate_row(op: &Pool, row: &[f32], out: &mut [f32], isa: Isa) {
    let (sw, dw, pl) = (op.strides[1], op.dilations[1], op.pads[1]);
    let w = row.len();
    for kx in 0..op.kernel[1] {
        // Output columns whose tap kx lands inside the row: ix = ox * sw + kx * dw - pl.
        let off = kx * dw;
        let lo = pl.saturating_sub(off).div_ceil(sw);
        let hi = (w + pl).saturating_sub(off).div_ceil(sw).min(out.len());
        if lo >= hi {
            continue;
        }
        let row = &row[lo * sw + off - pl..];
        let out = &mut out[lo..hi];
        // Whole vectors first (AVX2, strides 1 and 2), then one element at a time: which
        // elements take which path depends only on the row's width, never on the call.
        #[cfg(target_arch = "x86_64")]
        let done = if isa == Isa::Avx2Fma && sw <= 2 {
            // SAFETY: AVX2 is available (the detected instruction set).
            unsafe { avx2_taps(op.kind, sw, row, out) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        let taps = row[done * sw..].iter().step_by(sw);
        match op.kind {
            PoolKind::Max => out[done..].iter_mut().zip(taps).for_each(|(o, &v)| *o = max(*o, v)),
            PoolKind::Avg => out[done..].iter_mut().zip(taps).for_each(|(o, &v)| *o += v),
        }
    }
}

/// The larger of a running maximum and a tap, as `maxps(v, o)` computes it: a NaN tap never
/// wins, and the maximum, starting from -inf, is never NaN.
#[inline(always)]
fn max(o: f32, v: f32) -> f32 {
    if v > o {
        v
    } else {
        o
    }
}

/// Folds taps `row[j * sw]` into `out[j]` eight outputs at a time, while the loads stay in
/// `row`; returns how many outputs it did.
///
/// # Safety
/// AVX2 must be available; `sw` is 1 or 2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_taps(kind: PoolKind, sw: usize, row: &[f32], out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let mut j = 0;
    while j + 8 <= out.len() && j * sw + 8 * sw <= row.len() {
        // SAFETY: the loads read row[j * sw .. j * sw + 8 * sw] and out[j .. j + 8], in
        // bounds (the loop condition); AVX2 is available (caller).
        unsafe {
            let p = row.as_ptr().add(j * sw);
            let v = if sw == 1 {
                _mm256_loadu_ps(p)
            } else {
                crate::simd::even8(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
            };
            let o = _mm256_loadu_ps(out.as_ptr().add(j));
            let r = match kind {
                PoolKind::Max => _mm256_max_ps(v, o),
                PoolKind::Avg => _mm256_add_ps(o, v),
            };
            _mm256_storeu_ps(out.as_mut_ptr().add(j), r);
        }
        j += 8;
    }
    j
}

/// Divides summed taps by the ONNX divisor: taps inside the padded input when
/// `count_include_pad`, else taps inside the input (a ceil-mode window past the end padding
/// counts neither way).
fn divide_row(op: &Pool, oy: usize, x: &RowWindow, out: &mut [f32]) {
    let (_, h, w) = x.geometry();
    let count = |o: usize, a: usize, len: usize| -> usize {
        let (s, d, pb, pe) = (op.strides[a], op.dilations[a], op.pads[a], op.pads[a + 2]);
        let (lo, hi) = if op.count_include_pad { (0, len + pb + pe) } else { (pb, len + pb) };
        // Positions in padded coordinates: the input starts at pb.
        (0..op.kernel[a]).filter(|&k| (lo..hi).contains(&(o * s + k * d))).count()
    };
    let ch = count(oy, 0, h);
    for (ox, o) in out.iter_mut().enumerate() {
        *o /= (ch * count(ox, 1, w)) as f32;
    }
}

/// Mean over every axis after the first two, summed in row-major order, then divided once.
/// Global average pooling. A rank-4 input may come a few rows at a time: rows are folded into
/// per-channel sums kept in the output (f32, exactly as a single pass would hold them); the
/// call that brings row 0 starts the sums, the one that brings the last row divides. Each sum
/// adds its elements in row-major order, so any split gives the whole call's bits.
pub(crate) fn global_avg(x: &RowWindow, y: &RowWindow, io: Io<'_>) -> Result<()> {
    let xd = x.dims.as_slice();
    if xd.len() < 3 {
        return Err(fail("global_avg_pool", format!("expects rank >= 3, got {xd:?}")));
    }
    let mut want = [1; 6];
    want[..2].copy_from_slice(&xd[..2]);
    need_dims("global_avg_pool", "output", &y.dims, &want[..xd.len()])?;
    need_whole("global_avg_pool", y)?;
    let (_, h, w) = x.geometry();
    let size: usize = xd[2..].iter().product();
    let fy = Flat::new(y);
    let src = io.src;
    if xd.len() == 4 {
        // Streaming: rows first_row .. first_row + rows of every plane.
        let (first, end) = (x.first_row, x.first_row + x.rows);
        if end > h {
            return Err(fail("global_avg_pool", format!("rows {first}..{end} of {h}")));
        }
        // Eight planes at a time: each plane's sum is still one chain in row-major order
        // (the bits of any split into rows), but eight chains interleave instead of one
        // waiting on each add.
        const PLANES: usize = 8;
        let total = xd[0] * xd[1];
        // Plane nc's sum is element (nc, 0, 0) of the output, and its row r starts `nc`
        // input planes after plane 0's: offsets by stride, not per plane through `Flat` and
        // `row_start` (their divisions cost a one-row firing over 512 planes of 7 floats
        // 4x the whole map's time per element).
        let (y0, ystep) = (y.row_start(0, 0) - io.out_base, y.capacity * y.row_stride);
        let xstep = x.capacity * x.row_stride;
        for nc in (0..total).step_by(PLANES) {
            let cnt = PLANES.min(total - nc);
            let at: [usize; PLANES] = std::array::from_fn(|c| y0 + (nc + c.min(cnt - 1)) * ystep);
            let mut acc = [0.0f32; PLANES];
            if first != 0 {
                (0..cnt).for_each(|c| acc[c] = io.out[at[c]]);
            }
            let mut r = first;
            while r < end {
                // Rows that follow each other in the ring, as one slice per plane.
                let n = contiguous_rows(x, r, end);
                let x0 = x.row_start(0, r);
                let rows: [&[f32]; PLANES] =
                    std::array::from_fn(|c| src.slice(x0 + (nc + c.min(cnt - 1)) * xstep, n * w));
                if cnt == PLANES {
                    // Element i of every plane, then i + 1: the planes' chains interleave.
                    #[allow(clippy::needless_range_loop)]
                    for i in 0..n * w {
                        for c in 0..PLANES {
                            acc[c] += rows[c][i];
                        }
                    }
                } else {
                    for c in 0..cnt {
                        acc[c] = rows[c].iter().fold(acc[c], |s, &v| s + v);
                    }
                }
                r += n;
            }
            for c in 0..cnt {
                io.out[at[c]] = if end == h { acc[c] / size as f32 } else { acc[c] };
            }
        }
        return Ok(());
    }
    need_whole("global_avg_pool", x)?;
    // Each (n, c) owns size / w consecutive tensor rows (w is the last spatial axis).
    let rows_per = size / w;
    for nc in 0..xd[0] * xd[1] {
        let mut acc = 0.0f32;
        for g in nc * rows_per..(nc + 1) * rows_per {
            acc = in_row(src, x, g / h, g % h).iter().fold(acc, |s, &v| s + v);
        }
        let at = fy.at(nc).0 - io.out_base;
        io.out[at] = acc / size as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use frugal_core::backend::{Kernel, RowWindow};
    use frugal_core::ops::{Pool, PoolKind};

    use crate::ops::testutil::*;

    fn pool(
        kind: PoolKind,
        k: [usize; 2],
        s: [usize; 2],
        d: [usize; 2],
        pads: [usize; 4],
        ceil: bool,
        cip: bool,
    ) -> Pool {
        Pool {
            kind,
            kernel: k,
            strides: s,
            dilations: d,
            pads,
            ceil_mode: ceil,
            count_include_pad: cip,
        }
    }

    /// Naive ONNX pooling; average divisors follow PyTorch's formula (window end clipped to
    /// the padded input, start and end then clipped to the input unless padding counts).
    fn reference(op: &Pool, xd: &[usize], x: &[f32], yd: &[usize]) -> Vec<f32> {
        let (h, w) = (xd[2] as isize, xd[3] as isize);
        let mut y = Vec::new();
        for nc in 0..xd[0] * xd[1] {
            for oy in 0..yd[2] as isize {
                for ox in 0..yd[3] as isize {
                    let hs = oy * op.strides[0] as isize - op.pads[0] as isize;
                    let ws = ox * op.strides[1] as isize - op.pads[1] as isize;
                    let (mut mx, mut sum) = (f64::NEG_INFINITY, 0.0f64);
                    for ky in 0..op.kernel[0] as isize {
                        for kx in 0..op.kernel[1] as isize {
                            let (iy, ix) = (
                                hs + ky * op.dilations[0] as isize,
                                ws + kx * op.dilations[1] as isize,
                            );
                            if (0..h).contains(&iy) && (0..w).contains(&ix) {
                                let v = x[(nc * xd[2] + iy as usize) * xd[3] + ix as usize] as f64;
                                mx = mx.max(v);
                                sum += v;
                            }
                        }
                    }
                    let he = (hs + op.kernel[0] as isize).min(h + op.pads[2] as isize);
                    let we = (ws + op.kernel[1] as isize).min(w + op.pads[3] as isize);
                    let size = (he - hs) * (we - ws);
                    let clipped = (he.min(h) - hs.max(0)) * (we.min(w) - ws.max(0));
                    let div = if op.count_include_pad { size } else { clipped };
                    y.push(match op.kind {
                        PoolKind::Max => mx as f32,
                        PoolKind::Avg => (sum / div as f64) as f32,
                    });
                }
            }
        }
        y
    }

    fn out_dims(op: &Pool, xd: &[usize]) -> Vec<usize> {
        op.infer(xd).unwrap()
    }

    /// Input rows output rows `lo..hi` read.
    fn needed(op: &Pool, h: usize) -> impl Fn(usize, usize) -> (usize, usize) + '_ {
        move |lo, hi| {
            let first = (lo * op.strides[0]).saturating_sub(op.pads[0]);
            let last = ((hi - 1) * op.strides[0] + (op.kernel[0] - 1) * op.dilations[0] + 1)
                .saturating_sub(op.pads[0]);
            (first.min(h), last.min(h))
        }
    }

    fn cases() -> Vec<(Pool, Vec<usize>)> {
        use PoolKind::{Avg, Max};
        vec![
            (pool(Max, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false, false), vec![1, 3, 11, 9]),
            (pool(Max, [2, 2], [2, 2], [1, 1], [0; 4], false, false), vec![2, 2, 8, 6]),
            (pool(Max, [3, 3], [1, 1], [2, 2], [2, 2, 2, 2], false, false), vec![1, 2, 9, 10]),
            (pool(Max, [3, 2], [2, 1], [1, 2], [0, 1, 1, 0], true, false), vec![1, 2, 7, 8]),
            (pool(Max, [5, 5], [1, 1], [1, 1], [0; 4], false, false), vec![1, 2, 5, 5]),
            (pool(Avg, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false, false), vec![1, 3, 7, 6]),
            (pool(Avg, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false, true), vec![1, 3, 7, 6]),
            (pool(Avg, [3, 3], [2, 2], [1, 1], [0; 4], true, false), vec![1, 2, 8, 7]),
            (pool(Avg, [2, 3], [2, 2], [1, 1], [1, 0, 1, 2], true, true), vec![1, 2, 7, 8]),
            (pool(Avg, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], true, true), vec![2, 1, 6, 6]),
            (pool(Avg, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], true, false), vec![2, 1, 6, 6]),
            (pool(Avg, [3, 2], [3, 2], [1, 1], [2, 1, 1, 0], true, true), vec![1, 2, 10, 9]),
            (pool(Avg, [7, 7], [1, 1], [1, 1], [0; 4], false, false), vec![1, 3, 7, 7]),
            // Rows wide enough for whole vectors of eight outputs and a rest, strides 1, 2.
            (pool(Max, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false, false), vec![1, 2, 6, 41]),
            (pool(Max, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false, false), vec![1, 2, 5, 29]),
            (pool(Avg, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false, true), vec![1, 2, 6, 37]),
        ]
    }

    #[test]
    fn pooling_follows_onnx_by_bands() {
        for (i, (op, xd)) in cases().into_iter().enumerate() {
            let op = leak(op);
            let yd = out_dims(op, &xd);
            let x = rand_vec(i as u64, xd.iter().product());
            let need = needed(op, xd[2]);
            let got =
                check_bands(&[Input { dims: &xd, data: &x, need: &need }], &[], &yd, |xs, _, y| {
                    Kernel::Pool { op, x: xs[0], y }
                });
            assert_close(&got, &reference(op, &xd, &x, &yd), 1e-5, &format!("case {i}: {op:?}"));
        }
    }

    #[test]
    fn threads_give_the_bits_of_one() {
        // Planes split across threads (enough work to split), portable and AVX2 paths.
        let xd = [1, 16, 32, 41];
        let x = rand_vec(77, xd.iter().product());
        for kind in [PoolKind::Max, PoolKind::Avg] {
            let op = leak(pool(kind, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false, false));
            let yd = out_dims(op, &xd);
            let mut outs = Vec::new();
            for threads in [1, 2] {
                let mut rig = Rig::with(crate::CpuBackend::with_threads(threads).unwrap());
                let xw = rig.input(&xd, &x);
                let y = rig.whole(&yd);
                rig.run(&Kernel::Pool { op, x: xw, y }).unwrap();
                outs.push(rig.read(&y));
            }
            assert_bits(&outs[1], &outs[0], &format!("{kind:?}"));
        }
    }

    #[test]
    fn pooling_matches_candle_without_padding() {
        for (i, (k, s, xd)) in [
            ([2, 2], [2, 2], [2, 3, 8, 6]),
            ([3, 3], [2, 2], [1, 2, 9, 11]),
            ([3, 2], [1, 3], [1, 2, 7, 8]),
        ]
        .into_iter()
        .enumerate()
        {
            let x = rand_vec(50 + i as u64, xd.iter().product());
            let t = candle(&xd, &x);
            for kind in [PoolKind::Max, PoolKind::Avg] {
                let op = pool(kind, k, s, [1, 1], [0; 4], false, false);
                let yd = out_dims(&op, &xd);
                let mut rig = Rig::new();
                let xw = rig.input(&xd, &x);
                let y = rig.whole(&yd);
                rig.run(&Kernel::Pool { op: &op, x: xw, y }).unwrap();
                let theirs = match kind {
                    PoolKind::Max => t.max_pool2d_with_stride((k[0], k[1]), (s[0], s[1])),
                    PoolKind::Avg => t.avg_pool2d_with_stride((k[0], k[1]), (s[0], s[1])),
                };
                assert_close(
                    &rig.read(&y),
                    &values(&theirs.unwrap()),
                    1e-6,
                    &format!("{kind:?} {k:?} {s:?}"),
                );
            }
        }
    }

    #[test]
    fn average_of_the_onnx_ceil_mode_example() {
        // onnx/backend/test: averagepool_2d_ceil.
        let op = pool(PoolKind::Avg, [3, 3], [2, 2], [1, 1], [0; 4], true, false);
        let x: Vec<f32> = (1..=16).map(|v| v as f32).collect();
        let mut rig = Rig::new();
        let xw = rig.input(&[1, 1, 4, 4], &x);
        let y = rig.whole(&[1, 1, 2, 2]);
        rig.run(&Kernel::Pool { op: &op, x: xw, y }).unwrap();
        assert_bits(&rig.read(&y), &[6.0, 7.5, 12.0, 13.5], "averagepool_2d_ceil");
    }

    #[test]
    fn padding_never_wins_a_max() {
        let op = pool(PoolKind::Max, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false, false);
        let x = vec![-5.0f32; 9];
        let mut rig = Rig::new();
        let xw = rig.input(&[1, 1, 3, 3], &x);
        let y = rig.whole(&[1, 1, 3, 3]);
        rig.run(&Kernel::Pool { op: &op, x: xw, y }).unwrap();
        assert_bits(&rig.read(&y), &x, "all negative");
    }

    /// Input rows folded in a few at a time (as by parts fires pools) give the bits of one call.
    #[test]
    fn pooling_folds_input_rows_into_the_same_bits() {
        use frugal_core::rows::Fold;
        let cases = [
            pool(PoolKind::Max, [3, 3], [2, 2], [1, 1], [1; 4], false, false),
            pool(PoolKind::Avg, [3, 3], [2, 2], [1, 1], [1; 4], true, true),
            pool(PoolKind::Avg, [2, 2], [2, 2], [1, 1], [0; 4], false, false),
            pool(PoolKind::Max, [3, 2], [1, 2], [2, 1], [2, 0, 1, 1], false, false),
            pool(PoolKind::Avg, [3, 3], [2, 2], [1, 1], [0, 1, 0, 1], true, false),
        ];
        for (i, op) in cases.iter().enumerate() {
            let xd = [2, 3, 9, 8];
            let yd = op.infer(&xd).unwrap();
            let x = rand_vec(40 + i as u64, xd.iter().product());
            let mut rig = Rig::new();
            let xw = rig.input(&xd, &x);
            let y = rig.whole(&yd);
            rig.run(&Kernel::Pool { op, x: xw, y }).unwrap();
            let want = rig.read(&y);
            let fold = Fold::Window {
                kernel: op.kernel[0],
                stride: op.strides[0],
                dilation: op.dilations[0],
                pad: op.pads[0],
            };
            for bands in [vec![(0, 1), (1, 4), (4, 9)], (0..9).map(|r| (r, r + 1)).collect()] {
                let ring = rig.ring(&xd, 5);
                let y2 = rig.whole(&yd);
                for (lo, hi) in bands {
                    let part = rig.put_rows(&ring, &x, lo, hi);
                    let (a, b) = fold.touched(lo, hi, yd[2]);
                    let yb = RowWindow { first_row: a, rows: b - a, ..y2 };
                    rig.run(&Kernel::Pool { op, x: part, y: yb }).unwrap();
                }
                assert_bits(&rig.read(&y2), &want, &format!("case {i} folded by input rows"));
            }
        }
    }

    #[test]
    fn pooling_rejects_missing_rows_and_bad_shapes() {
        let op = pool(PoolKind::Max, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false, false);
        let xd = [1, 1, 9, 9];
        let x = rand_vec(3, 81);
        let mut rig = Rig::new();
        let ring = rig.ring(&xd, 4);
        let y = rig.whole(&[1, 1, 5, 5]);
        let band = RowWindow { first_row: 2, rows: 1, ..y };
        let held = rig.put_rows(&ring, &x, 3, 6);
        assert!(rig.run(&Kernel::Pool { op: &op, x: held, y: band }).is_ok());
        let wrong = rig.whole(&[1, 1, 4, 5]);
        let xw = rig.input(&xd, &x);
        assert!(rig.run(&Kernel::Pool { op: &op, x: xw, y: wrong }).is_err());
        let zero = pool(PoolKind::Max, [3, 3], [0, 2], [1, 1], [0; 4], false, false);
        assert!(rig.run(&Kernel::Pool { op: &zero, x: xw, y }).is_err());
    }

    #[test]
    fn global_average_over_trailing_axes() {
        // 22 planes: two blocks of the eight summed together, then six one by one.
        for (i, xd) in [
            vec![2, 3, 5, 7],
            vec![2, 3, 7],
            vec![1, 2, 3, 4, 5],
            vec![1, 4, 1, 1],
            vec![2, 11, 5, 7],
        ]
        .into_iter()
        .enumerate()
        {
            let x = rand_vec(70 + i as u64, xd.iter().product());
            let mut yd = xd.clone();
            yd[2..].iter_mut().for_each(|d| *d = 1);
            let mut rig = Rig::new();
            let xw = rig.input(&xd, &x);
            let y = rig.whole(&yd);
            rig.run(&Kernel::GlobalAvgPool { x: xw, y }).unwrap();
            let size: usize = xd[2..].iter().product();
            let want: Vec<f32> = x
                .chunks(size)
                .map(|c| (c.iter().map(|&v| v as f64).sum::<f64>() / size as f64) as f32)
                .collect();
            let got = rig.read(&y);
            assert_close(&got, &want, 1e-6, &format!("{xd:?}"));
            // Summed in row-major order then divided: exactly this f32 computation.
            let exact: Vec<f32> = x
                .chunks(size)
                .map(|c| c.iter().fold(0.0f32, |s, &v| s + v) / size as f32)
                .collect();
            assert_bits(&got, &exact, "order");
            if xd.len() == 4 {
                assert_close(
                    &got,
                    &values(&candle(&xd, &x).mean_keepdim((2, 3)).unwrap()),
                    1e-6,
                    "candle",
                );
            }
        }
    }

    #[test]
    fn global_average_streams_rows_into_the_same_bits() {
        let xd = [2, 11, 7, 5];
        let x = rand_vec(11, xd.iter().product());
        let mut rig = Rig::new();
        let y = rig.whole(&[2, 11, 1, 1]);
        let xw = rig.input(&xd, &x);
        rig.run(&Kernel::GlobalAvgPool { x: xw, y }).unwrap();
        let want = rig.read(&y);
        for bands in [vec![(0, 1), (1, 4), (4, 7)], (0..7).map(|r| (r, r + 1)).collect()] {
            let ring = rig.ring(&xd, 3);
            let y2 = rig.whole(&[2, 11, 1, 1]);
            for (lo, hi) in bands {
                let part = rig.put_rows(&ring, &x, lo, hi);
                rig.run(&Kernel::GlobalAvgPool { x: part, y: y2 }).unwrap();
            }
            assert_bits(&rig.read(&y2), &want, "streamed global average");
        }
        let ring = rig.ring(&[1, 2, 4, 4], 2);
        let part = rig.put_rows(&ring, &rand_vec(1, 32), 0, 2);
        let bad_y = rig.whole(&[1, 2, 1, 2]);
        assert!(rig.run(&Kernel::GlobalAvgPool { x: part, y: bad_y }).is_err());
    }
}
