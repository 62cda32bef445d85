//! Depthwise convolution (one input channel per group), computed directly rather than as a
//! matrix product: with one input channel there is nothing for a gemm to share.
//!
//! Every output sums its in-bounds taps in (ky, kx) order starting from zero, then adds the
//! bias; the blocked interior, the edge columns and the fallback for very large kernels all keep
//! that order, so any split of a row or of the rows gives the same bits. Products and sums are
//! separate (never fused), so the AVX2 build of the row kernel gives the bits of the portable one.

use frugal_core::backend::RowWindow;
use frugal_core::ops::activation::{max_of, min_of};
use frugal_core::ops::Conv;

use super::{ColumnTaps, Geo, MAX_KW};
use crate::arena::{Io, Src};
use crate::gemm::Isa;
use crate::par::Par;

/// Kernel heights the blocked row kernel handles (taller kernels take the per-tap path).
const MAX_KH: usize = 16;

/// Runs output rows `y.first_row .. y.first_row + y.rows` of a depthwise convolution.
#[allow(clippy::too_many_arguments)]
pub(super) fn depthwise(
    op: &Conv,
    x: &RowWindow,
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &RowWindow,
    io: Io<'_>,
    g: &Geo,
    isa: Isa,
    par: Par<'_>,
) {
    let [kh, kw] = op.kernel;
    let mult = g.m / g.cin;
    let plane_len = y.capacity * y.row_stride;
    let src = io.src;
    let taps = ColumnTaps::new(op, g);
    // Clamp activations are applied in the row kernel's registers, others after it.
    let clamp = op.act.and_then(|act| act.clamp_bounds());
    let post = op.act.as_ref().filter(|_| clamp.is_none());
    // Every output plane (image, channel) on its own; planes split across threads.
    let planes = &mut io.out[..g.n * g.m * plane_len];
    let tile = par.split(g.n * g.m, 1);
    par.chunks(planes, tile * plane_len, |t, chunk| {
        for (i, plane) in chunk.chunks_mut(plane_len).enumerate() {
            let p = t * tile + i;
            let (b, m) = (p / g.m, p % g.m);
            let wk = &weight[m * kh * kw..(m + 1) * kh * kw];
            let bv = bias.map_or(0.0, |bb| bb[m]);
            let input = b * g.cin + m / mult;
            for oy in y.first_row..y.first_row + y.rows {
                let start = (oy % y.capacity) * y.row_stride;
                let out = &mut plane[start..start + g.wout];
                let row = RowCtx { op, x, src: &src, input, wk, bias: bv, oy, g, taps: &taps };
                if kh <= MAX_KH && kw <= MAX_KW {
                    blocked_row(isa, &row, clamp, out);
                    if let Some(act) = post {
                        act.apply_slice(out);
                    }
                } else {
                    tap_row(&row, out);
                    if let Some(act) = &op.act {
                        act.apply_slice(out);
                    }
                }
            }
        }
    });
}

/// What one output row of one channel reads.
struct RowCtx<'a> {
    op: &'a Conv,
    x: &'a RowWindow,
    src: &'a Src<'a>,
    /// Input plane (image * channels + channel).
    input: usize,
    /// The channel's kh x kw weights.
    wk: &'a [f32],
    bias: f32,
    oy: usize,
    g: &'a Geo,
    taps: &'a ColumnTaps,
}

impl<'a> RowCtx<'a> {
    /// The input row kernel row `ky` reads, or `None` where it falls in the padding.
    #[inline]
    fn input_row(&self, ky: usize) -> Option<&'a [f32]> {
        let iy = (self.oy * self.op.strides[0] + ky * self.op.dilations[0]) as isize
            - self.op.pads[0] as isize;
        if iy < 0 || iy >= self.g.h as isize {
            return None;
        }
        Some(self.src.slice(self.x.row_start(self.input, iy as usize), self.g.w))
    }
}

/// The row kernel for kernels up to `MAX_KH x MAX_KW`, compiled for the widest vectors the CPU has.
fn blocked_row(isa: Isa, row: &RowCtx<'_>, clamp: Option<(f32, f32)>, out: &mut [f32]) {
    let kw = row.op.kernel[1];
    let mut rows: [(usize, &[f32]); MAX_KH] = [(0, &[]); MAX_KH];
    let mut nrows = 0;
    for ky in 0..row.op.kernel[0] {
        if let Some(r) = row.input_row(ky) {
            rows[nrows] = (ky, r);
            nrows += 1;
        }
    }
    let block = Block {
        rows: &rows[..nrows],
        kw,
        wk: row.wk,
        bias: row.bias,
        taps: &row.taps.cols[..kw],
        sw: row.op.strides[1],
        clamp,
    };
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2Fma {
        // SAFETY: `Isa::Avx2Fma` is only selected after run-time detection of AVX2 and FMA.
        unsafe { block_avx2(&block, out) };
        return;
    }
    let _ = isa;
    block.run(out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(block: &Block<'_>, out: &mut [f32]) {
    block.run(out);
}

/// One output row with every in-bounds input row at hand.
struct Block<'a> {
    /// `(ky, input row)` for the kernel rows inside the image, in ky order.
    rows: &'a [(usize, &'a [f32])],
    kw: usize,
    wk: &'a [f32],
    bias: f32,
    /// `(first output column, end, first input column)` per kernel column.
    taps: &'a [(usize, usize, usize)],
    sw: usize,
    /// Clamp bounds (Relu, Clip).
    clamp: Option<(f32, f32)>,
}

impl Block<'_> {
    #[inline(always)]
    fn run(&self, out: &mut [f32]) {
        // Columns where every kernel column is inside the row run in vector blocks.
        let (mut a, mut b) =
            self.taps.iter().fold((0, out.len()), |(a, b), &(lo, hi, _)| (a.max(lo), b.min(hi)));
        if b >= a + 4 && self.sw <= 2 {
            if self.sw == 1 {
                let ox = self.interior::<32, 1>(out, a, b);
                self.finish::<1>(out, ox, b);
            } else {
                self.finish::<2>(out, a, b);
            }
        } else {
            (a, b) = (0, 0);
        }
        for c in (0..a.min(out.len())).chain(b.max(a)..out.len()) {
            out[c] = self.column(c);
        }
    }

    /// Interior columns `[ox, end)` (at least 4 of them) in blocks of 8 and 4, the last block
    /// moved back to end at `end`: recomputing a column gives the same bits, so the overlap is
    /// harmless.
    #[inline(always)]
    fn finish<const S: usize>(&self, out: &mut [f32], ox: usize, end: usize) {
        let ox = self.interior::<8, S>(out, ox, end);
        let ox = self.interior::<4, S>(out, ox, end);
        if ox < end {
            self.interior::<4, S>(out, end - 4, end);
        }
    }

    /// Blocks of `W` interior columns from `ox` while they fit before `end`; returns where it
    /// stopped.
    #[inline(always)]
    fn interior<const W: usize, const S: usize>(
        &self,
        out: &mut [f32],
        mut ox: usize,
        end: usize,
    ) -> usize {
        while ox + W <= end {
            let mut acc = [0.0f32; W];
            for &(ky, row) in self.rows {
                let wr = &self.wk[ky * self.kw..(ky + 1) * self.kw];
                for (&wv, &(lo, _, st)) in wr.iter().zip(self.taps) {
                    let s = st + (ox - lo) * S;
                    let xs = &row[s..s + (W - 1) * S + 1];
                    for (l, a) in acc.iter_mut().enumerate() {
                        *a += wv * xs[l * S];
                    }
                }
            }
            for (o, a) in out[ox..ox + W].iter_mut().zip(acc) {
                *o = self.finish_value(a);
            }
            ox += W;
        }
        ox
    }

    /// One column with its bounds checked per tap (edges and leftovers).
    #[inline(always)]
    fn column(&self, ox: usize) -> f32 {
        let mut acc = 0.0f32;
        for &(ky, row) in self.rows {
            for (kx, &(lo, hi, st)) in self.taps.iter().enumerate() {
                if ox >= lo && ox < hi {
                    acc += self.wk[ky * self.kw + kx] * row[st + (ox - lo) * self.sw];
                }
            }
        }
        self.finish_value(acc)
    }

    /// Bias, then the clamp.
    #[inline(always)]
    fn finish_value(&self, acc: f32) -> f32 {
        let v = acc + self.bias;
        match self.clamp {
            Some((lo, hi)) => min_of(max_of(v, lo), hi),
            None => v,
        }
    }
}

/// Any kernel size: one pass over the row per tap, in (ky, kx) order.
fn tap_row(row: &RowCtx<'_>, out: &mut [f32]) {
    let [kh, kw] = row.op.kernel;
    let sw = row.op.strides[1];
    out.fill(0.0);
    for ky in 0..kh {
        let Some(input) = row.input_row(ky) else { continue };
        for kx in 0..kw {
            let (lo, hi, st) = row.taps.get(row.op, row.g, kx);
            let wv = row.wk[ky * kw + kx];
            for (i, o) in out[lo..hi].iter_mut().enumerate() {
                *o += wv * input[st + i * sw];
            }
        }
    }
    for v in out.iter_mut() {
        *v += row.bias;
    }
}
