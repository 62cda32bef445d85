//! Transposed convolution in gather form: every output element sums the contributions of the
//! input elements that map onto it, over (ci, ky, kx) in that order, then adds the bias and
//! applies the activation. A scatter formulation would order each element's sum by input
//! position, which depends on the rows a call covers; gathering keeps it fixed, so any band of
//! output rows is bit-identical to the whole layer.
//!
//! Output position `o` (after cropping `pads`) receives input `i` through tap `k` when
//! `i * stride + k * dilation == o + pad_begin`.

use frugal_core::backend::{Dims, RowWindow};
use frugal_core::ops::ConvTranspose;
use frugal_core::Result;

use super::{in_row, need_dims, need_rows, rows, split_plane_tasks};
use crate::arena::{Io, Src};
use crate::gemm::Isa;
use crate::{fail, Ctx};

/// Shapes of one call.
struct Geo {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    m: usize,
    cg: usize,
    mg: usize,
}

/// Checks the op, input, weight `[C, M/g, kh, kw]` and output shapes agree.
fn geo(op: &ConvTranspose, x: &RowWindow, wd: &Dims, y: &RowWindow) -> Result<Geo> {
    let (xd, wd) = (x.dims.as_slice(), wd.as_slice());
    let bad = |why: &str| {
        fail("conv_transpose", format!("{why}: input {xd:?}, weight {wd:?}, output {:?}", y.dims))
    };
    if xd.len() != 4 || wd.len() != 4 || op.groups == 0 || op.kernel.contains(&0) {
        return Err(bad("expects 4-D tensors, a non-empty kernel and groups >= 1"));
    }
    if op.strides.contains(&0) || op.dilations.contains(&0) || wd[2..] != op.kernel {
        return Err(bad("strides, dilations or kernel do not match"));
    }
    let g = op.groups;
    if wd[0] != xd[1] || xd[1] % g != 0 {
        return Err(bad("channels do not agree with the groups"));
    }
    let mut want = [xd[0], wd[1] * g, 0, 0];
    for a in 0..2 {
        let full = op.strides[a] * (xd[2 + a] - 1)
            + op.output_padding[a]
            + (op.kernel[a] - 1) * op.dilations[a]
            + 1;
        want[2 + a] = full
            .checked_sub(op.pads[a] + op.pads[a + 2])
            .ok_or_else(|| bad("pads remove the whole output"))?;
    }
    need_dims("conv_transpose", "output", &y.dims, &want)?;
    Ok(Geo { n: xd[0], c: xd[1], h: xd[2], w: xd[3], m: want[1], cg: xd[1] / g, mg: wd[1] })
}

/// Input row feeding output row `oy` through tap row `ky`, if any.
#[inline]
fn src_row(op: &ConvTranspose, oy: usize, ky: usize, h: usize) -> Option<usize> {
    let t = (oy + op.pads[0]).checked_sub(ky * op.dilations[0])?;
    let iy = t / op.strides[0];
    (t % op.strides[0] == 0 && iy < h).then_some(iy)
}

/// Runs a transposed convolution producing rows `y.first_row .. y.first_row + y.rows`, the
/// output planes split between threads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_transpose(
    op: &ConvTranspose,
    x: &RowWindow,
    weight: &[f32],
    wd: &Dims,
    bias: Option<&[f32]>,
    y: &RowWindow,
    io: Io<'_>,
    ctx: Ctx<'_>,
) -> Result<()> {
    let g = geo(op, x, wd, y)?;
    if bias.is_some_and(|b| b.len() != g.m) {
        return Err(fail("conv_transpose", format!("bias does not have {} values", g.m)));
    }
    let (mut lo, mut hi) = (usize::MAX, 0);
    for oy in rows(y) {
        for iy in (0..op.kernel[0]).filter_map(|ky| src_row(op, oy, ky, g.h)) {
            (lo, hi) = (lo.min(iy), hi.max(iy + 1));
        }
    }
    need_rows("conv_transpose", x, lo, hi)?;
    let (_, _, wout) = y.geometry();
    let taps = op.kernel[0] * op.kernel[1] / (op.strides[0] * op.strides[1]).max(1);
    let work = 2 * g.n * g.m * y.rows * wout * g.cg * taps.max(1);
    let exact = exact_tiles(op);
    let src = io.src;
    let plane_len = y.capacity * y.row_stride;
    split_plane_tasks("conv_transpose", y, io.out, io.out_base, ctx.par, work, |first, planes| {
        // Made once per task: the exact path zeroes what it uses of it.
        let mut buf = [0.0f32; EXACT_BUF];
        for (i, ring) in planes.chunks_mut(plane_len).enumerate() {
            let p = first + i;
            let (b, m) = (p / g.m, p % g.m);
            let call = Plane { op, x, src, weight, g: &g, b, m };
            let bv = bias.map_or(0.0, |bb| bb[m]);
            for oy in rows(y) {
                let at = y.slot(oy) * y.row_stride;
                let out = &mut ring[at..at + wout];
                if exact {
                    call.exact_row(out, oy, ctx.isa, &mut buf);
                } else {
                    call.gather(out, oy);
                }
                out.iter_mut().for_each(|v| *v += bv);
                if let Some(act) = &op.act {
                    act.apply_slice(out);
                }
            }
        }
    })
}

/// Whether the taps tile the output exactly: kernel = stride, no dilation, padding or output
/// padding, so each output element takes one tap per input channel, and a tap column's
/// outputs are every `sw`-th column of an output row.
fn exact_tiles(op: &ConvTranspose) -> bool {
    op.kernel == op.strides
        && op.dilations == [1, 1]
        && op.pads == [0; 4]
        && op.output_padding == [0, 0]
        && op.kernel[1] <= MAX_EXACT_KW
}

/// Widest kernel [`Plane::exact_row`] takes, and the floats of its stack buffer.
const MAX_EXACT_KW: usize = 8;
const EXACT_BUF: usize = 2048;

/// One output plane (image `b`, output channel `m`) of a call.
struct Plane<'a> {
    op: &'a ConvTranspose,
    x: &'a RowWindow,
    src: Src<'a>,
    weight: &'a [f32],
    g: &'a Geo,
    b: usize,
    m: usize,
}

impl Plane<'_> {
    /// The input channels of the plane's group and, for each, the weights `[kh][kw]` from
    /// this output channel.
    fn taps(&self, ci: usize) -> &[f32] {
        let [kh, kw] = self.op.kernel;
        let mm = self.m % self.g.mg;
        &self.weight[(ci * self.g.mg + mm) * kh * kw..][..kh * kw]
    }

    fn channels(&self) -> std::ops::Range<usize> {
        let grp = self.m / self.g.mg;
        grp * self.g.cg..(grp + 1) * self.g.cg
    }

    /// Output row `oy` before bias and activation, in gather form: for every input channel in
    /// order, every tap row and column that reaches the row, the products added to the
    /// output from +0 (a multiply, then an add).
    fn gather(&self, out: &mut [f32], oy: usize) {
        let (op, g) = (self.op, self.g);
        let [kh, kw] = op.kernel;
        out.fill(0.0);
        for ci in self.channels() {
            for ky in 0..kh {
                let Some(iy) = src_row(op, oy, ky, g.h) else { continue };
                let row = in_row(self.src, self.x, self.b * g.c + ci, iy);
                gather_row(op, row, &self.taps(ci)[ky * kw..][..kw], out, g.w);
            }
        }
    }

    /// [`Plane::gather`] where the taps tile exactly ([`exact_tiles`]): the same operations
    /// in the same order for each element (one tap per input channel), so the same bits, but
    /// each tap column's sums run over contiguous input columns in a buffer (vectors), then
    /// go to every `sw`-th output column.
    fn exact_row(&self, out: &mut [f32], oy: usize, isa: Isa, buf: &mut [f32; EXACT_BUF]) {
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx2Fma {
            // SAFETY: AVX2 and FMA were detected at run time (`Isa::Avx2Fma`).
            return unsafe { self.exact_row_avx2(out, oy, buf) };
        }
        let _ = isa;
        self.exact_row_portable(out, oy, buf)
    }

    /// [`Plane::exact_row`] compiled for AVX2 (eight lanes per vector, no fused multiply-adds:
    /// Rust never contracts a multiply and an add).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exact_row_avx2(&self, out: &mut [f32], oy: usize, buf: &mut [f32; EXACT_BUF]) {
        self.exact_row_portable(out, oy, buf)
    }

    #[inline(always)]
    fn exact_row_portable(&self, out: &mut [f32], oy: usize, buf: &mut [f32; EXACT_BUF]) {
        let (op, g) = (self.op, self.g);
        let [sh, kw] = [op.strides[0], op.kernel[1]];
        let (iy, ky) = (oy / sh, oy % sh);
        let block = EXACT_BUF / kw;
        let mut ix0 = 0;
        while ix0 < g.w {
            let n = block.min(g.w - ix0);
            for acc in buf.chunks_exact_mut(block).take(kw) {
                acc[..n].fill(0.0);
            }
            for ci in self.channels() {
                let row = &in_row(self.src, self.x, self.b * g.c + ci, iy)[ix0..ix0 + n];
                let taps = &self.taps(ci)[ky * kw..][..kw];
                for (acc, &wv) in buf.chunks_exact_mut(block).zip(taps) {
                    for (a, &v) in acc[..n].iter_mut().zip(row) {
                        *a += v * wv;
                    }
                }
            }
            let out = &mut out[ix0 * kw..(ix0 + n) * kw];
            for (kx, acc) in buf.chunks_exact(block).take(kw).enumerate() {
                for (o, &a) in out[kx..].iter_mut().step_by(kw).zip(&acc[..n]) {
                    *o = a;
                }
            }
            ix0 += n;
        }
    }
}

/// Adds one input row's contributions to an output row, tap column by tap column: output
/// column `ix * sw + kx * dw - pl` receives `row[ix] * taps[kx]`.
fn gather_row(op: &ConvTranspose, row: &[f32], taps: &[f32], out: &mut [f32], w: usize) {
    let (sw, dw, pl) = (op.strides[1], op.dilations[1], op.pads[1]);
    for (kx, &wv) in taps.iter().enumerate() {
        let off = kx * dw;
        let lo = pl.saturating_sub(off).div_ceil(sw);
        let hi = (out.len() + pl).saturating_sub(off).div_ceil(sw).min(w);
        if lo >= hi {
            continue;
        }
        let dst = out[lo * sw + off - pl..].iter_mut().step_by(sw);
        dst.zip(&row[lo..hi]).for_each(|(o, &v)| *o += v * wv);
    }
}

#[cfg(test)]
mod tests {
    use frugal_core::backend::{Kernel, RowWindow};
    use frugal_core::ops::{Activation, ConvTranspose};

    use crate::ops::testutil::*;

    fn ct(
        k: [usize; 2],
        s: [usize; 2],
        d: [usize; 2],
        pads: [usize; 4],
        op: [usize; 2],
        groups: usize,
    ) -> ConvTranspose {
        ConvTranspose {
            kernel: k,
            strides: s,
            dilations: d,
            pads,
            output_padding: op,
            groups,
            act: None,
        }
    }

    /// Naive ONNX transposed convolution in scatter form, in f64.
    fn reference(
        op: &ConvTranspose,
        xd: &[usize],
        x: &[f32],
        w: &[f32],
        mg: usize,
        bias: &[f32],
        yd: &[usize],
    ) -> Vec<f32> {
        let [kh, kw] = op.kernel;
        let cg = xd[1] / op.groups;
        let mut y = vec![0.0f64; yd.iter().product()];
        for n in 0..xd[0] {
            for ci in 0..xd[1] {
                let g = ci / cg;
                for iy in 0..xd[2] {
                    for ix in 0..xd[3] {
                        let v = x[((n * xd[1] + ci) * xd[2] + iy) * xd[3] + ix] as f64;
                        for mm in 0..mg {
                            let m = g * mg + mm;
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let oy = (iy * op.strides[0] + ky * op.dilations[0]) as isize
                                        - op.pads[0] as isize;
                                    let ox = (ix * op.strides[1] + kx * op.dilations[1]) as isize
                                        - op.pads[1] as isize;
                                    if (0..yd[2] as isize).contains(&oy)
                                        && (0..yd[3] as isize).contains(&ox)
                                    {
                                        let wv = w[((ci * mg + mm) * kh + ky) * kw + kx] as f64;
                                        y[((n * yd[1] + m) * yd[2] + oy as usize) * yd[3]
                                            + ox as usize] += v * wv;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let plane = yd[2] * yd[3];
        y.iter()
            .enumerate()
            .map(|(i, &v)| {
                let r = (v + bias[(i / plane) % yd[1]] as f64) as f32;
                op.act.map_or(r, |a| a.apply(r))
            })
            .collect()
    }

    /// Input rows output rows `lo..hi` read.
    fn needed(op: &ConvTranspose, h: usize) -> impl Fn(usize, usize) -> (usize, usize) + '_ {
        move |lo, hi| {
            let reach = (op.kernel[0] - 1) * op.dilations[0];
            let first = (lo + op.pads[0]).saturating_sub(reach).div_ceil(op.strides[0]);
            let last = (hi - 1 + op.pads[0]) / op.strides[0] + 1;
            (first.min(h), last.min(h))
        }
    }

    /// The output of `op` on input `x` (dims `xd`), weights `w` (`wd`) and bias `b`, whole and
    /// by bands, through `check_bands` (which checks that every split gives the same bits).
    fn by_bands(
        op: &'static ConvTranspose,
        xd: &[usize],
        x: &[f32],
        wd: &[usize],
        w: &[f32],
        b: &[f32],
    ) -> Vec<f32> {
        let yd = op.infer(xd, wd).unwrap();
        let need = needed(op, xd[2]);
        check_bands(
            &[Input { dims: xd, data: x, need: &need }],
            &[(wd, w), (&[yd[1]], b)],
            &yd,
            |xs, ws, y| Kernel::ConvTranspose { op, x: xs[0], w: ws[0], b: Some(ws[1]), y },
        )
    }

    /// (op, input dims, output channels per group).
    fn cases() -> Vec<(ConvTranspose, [usize; 4], usize)> {
        let relu = |mut c: ConvTranspose| {
            c.act = Some(Activation::Relu);
            c
        };
        vec![
            (ct([2, 2], [2, 2], [1, 1], [0; 4], [0, 0], 1), [1, 4, 5, 6], 3),
            (relu(ct([3, 3], [2, 2], [1, 1], [1; 4], [1, 1], 1)), [1, 3, 5, 4], 2),
            (ct([4, 4], [2, 2], [1, 1], [1; 4], [0, 0], 2), [2, 4, 4, 5], 3),
            (ct([3, 3], [1, 1], [2, 2], [1, 2, 0, 1], [0, 0], 1), [1, 2, 6, 5], 3),
            (ct([3, 2], [3, 2], [1, 1], [0, 1, 2, 0], [2, 1], 1), [1, 2, 4, 3], 2),
            (relu(ct([3, 3], [2, 2], [1, 1], [1; 4], [1, 1], 3)), [1, 3, 4, 4], 1),
            (ct([1, 1], [1, 1], [1, 1], [0; 4], [0, 0], 1), [1, 5, 3, 3], 4),
            (ct([3, 3], [2, 2], [2, 2], [2; 4], [1, 1], 1), [1, 2, 5, 5], 2),
            (ct([5, 3], [1, 2], [1, 1], [4, 0, 0, 0], [0, 1], 1), [1, 2, 5, 3], 2),
        ]
    }

    #[test]
    fn gathers_like_the_onnx_scatter_by_bands() {
        for (i, (op, xd, mg)) in cases().into_iter().enumerate() {
            let op = leak(op);
            let wd = [xd[1], mg, op.kernel[0], op.kernel[1]];
            let yd = op.infer(&xd, &wd).unwrap();
            let s = 10 * i as u64;
            let (x, w, b) = (
                rand_vec(s, xd.iter().product()),
                rand_vec(s + 1, wd.iter().product()),
                rand_vec(s + 2, yd[1]),
            );
            let got = by_bands(op, &xd, &x, &wd, &w, &b);
            assert_close(
                &got,
                &reference(op, &xd, &x, &w, mg, &b, &yd),
                1e-5,
                &format!("case {i}: {op:?}"),
            );
        }
    }

    /// Kernels that tile the output exactly take the vector path: the bits of the gather
    /// order (per element, from +0, each input channel's product added in turn, then the
    /// bias and the activation), whole and by bands.
    #[test]
    fn exact_tiles_give_the_gather_bits() {
        let relu = |mut c: ConvTranspose| {
            c.act = Some(Activation::Relu);
            c
        };
        let cases = [
            (ct([2, 2], [2, 2], [1, 1], [0; 4], [0, 0], 1), [1, 5, 4, 37], 3),
            (relu(ct([3, 3], [3, 3], [1, 1], [0; 4], [0, 0], 2)), [2, 4, 3, 9], 2),
            (ct([2, 1], [2, 1], [1, 1], [0; 4], [0, 0], 1), [1, 3, 5, 600], 2),
            (relu(ct([1, 4], [1, 4], [1, 1], [0; 4], [0, 0], 1)), [1, 2, 2, 700], 1),
        ];
        for (i, (op, xd, mg)) in cases.into_iter().enumerate() {
            assert!(super::exact_tiles(&op), "case {i}");
            let op = leak(op);
            let wd = [xd[1], mg, op.kernel[0], op.kernel[1]];
            let yd = op.infer(&xd, &wd).unwrap();
            let s = 500 + 10 * i as u64;
            let (x, w, b) = (
                rand_vec(s, xd.iter().product()),
                rand_vec(s + 1, wd.iter().product()),
                rand_vec(s + 2, yd[1]),
            );
            let [kh, kw] = op.kernel;
            let cg = xd[1] / op.groups;
            let mut want = vec![0.0f32; yd.iter().product()];
            for (at, v) in want.iter_mut().enumerate() {
                let (ox, oy) = (at % yd[3], at / yd[3] % yd[2]);
                let (m, n) = (at / (yd[2] * yd[3]) % yd[1], at / (yd[1] * yd[2] * yd[3]));
                let (grp, mm) = (m / mg, m % mg);
                let mut acc = 0.0f32;
                for ci in grp * cg..(grp + 1) * cg {
                    let xv = x[((n * xd[1] + ci) * xd[2] + oy / kh) * xd[3] + ox / kw];
                    let wv = w[((ci * mg + mm) * kh + oy % kh) * kw + ox % kw];
                    acc += xv * wv;
                }
                acc += b[m];
                *v = op.act.map_or(acc, |a| a.apply(acc));
            }
            let got = by_bands(op, &xd, &x, &wd, &w, &b);
            assert_bits(&got, &want, &format!("case {i}: {op:?}"));
        }
    }

    #[test]
    fn matches_candle() {
        // (kernel, stride, pad, output padding, dilation), symmetric as candle takes them.
        for (i, (k, s, p, opad, d)) in
            [(2, 2, 0, 0, 1), (3, 2, 1, 1, 1), (3, 1, 1, 0, 1), (3, 2, 2, 1, 2), (4, 3, 1, 2, 1)]
                .into_iter()
                .enumerate()
        {
            let op = ct([k, k], [s, s], [d, d], [p; 4], [opad, opad], 1);
            let (xd, wd) = ([2, 3, 5, 6], [3, 4, k, k]);
            let yd = op.infer(&xd, &wd).unwrap();
            let (x, w) = (
                rand_vec(90 + i as u64, xd.iter().product()),
                rand_vec(95 + i as u64, wd.iter().product()),
            );
            let mut rig = Rig::new();
            let (xw, ww) = (rig.input(&xd, &x), rig.weight(&wd, &w));
            let y = rig.whole(&yd);
            rig.run(&Kernel::ConvTranspose { op: &op, x: xw, w: ww, b: None, y }).unwrap();
            let theirs = candle(&xd, &x).conv_transpose2d(&candle(&wd, &w), p, opad, s, d).unwrap();
            assert_eq!(theirs.dims(), yd.as_slice());
            assert_close(
                &rig.read(&y),
                &values(&theirs),
                1e-5,
                &format!("k{k} s{s} p{p} op{opad} d{d}"),
            );
        }
    }

    #[test]
    fn rejects_missing_rows_and_bad_weights() {
        let op = ct([3, 3], [2, 2], [1, 1], [1; 4], [1, 1], 1);
        let (xd, wd) = ([1, 2, 6, 6], [2, 3, 3, 3]);
        let x = rand_vec(7, 72);
        let mut rig = Rig::new();
        let w = rig.weight(&wd, &rand_vec(8, 54));
        let y = rig.whole(&[1, 3, 12, 12]);
        // Output row 6 (full row 7 = 3 * 2 + 1) reads input row 3 only.
        let ring = rig.ring(&xd, 3);
        let band = RowWindow { first_row: 6, rows: 1, ..y };
        let held = rig.put_rows(&ring, &x, 3, 4);
        assert!(rig.run(&Kernel::ConvTranspose { op: &op, x: held, w, b: None, y: band }).is_ok());
        let held = rig.put_rows(&ring, &x, 4, 5);
        assert!(rig.run(&Kernel::ConvTranspose { op: &op, x: held, w, b: None, y: band }).is_err());
        let xw = rig.input(&xd, &x);
        let bad_w = rig.weight(&[2, 3, 2, 2], &[0.0; 24]);
        assert!(rig.run(&Kernel::ConvTranspose { op: &op, x: xw, w: bad_w, b: None, y }).is_err());
        let bad_b = rig.weight(&[2], &[0.0; 2]);
        assert!(rig.run(&Kernel::ConvTranspose { op: &op, x: xw, w, b: Some(bad_b), y }).is_err());
        let bad_y = rig.whole(&[1, 3, 11, 12]);
        assert!(rig.run(&Kernel::ConvTranspose { op: &op, x: xw, w, b: None, y: bad_y }).is_err());
    }
}
