//! Convolution over row windows: depthwise convolutions run directly; everything else is a
//! matrix product of the weights with an im2col of a band of output rows, packed straight into
//! the gemm panel layout in scratch. Bias and activation are applied as the tile is stored.

use frugal_core::backend::{Dims, RowWindow};
use frugal_core::ops::Conv;
use frugal_core::Result;

use crate::arena::Io;
use crate::fail;
use crate::gemm::{self, packed_index, MatA};
use crate::par::Par;
use crate::Ctx;

/// Upper bound of one band's packed im2col, in floats (keeps it in L2).
const BAND_FLOATS: usize = 128 * 1024;

/// Geometry shared by the helpers.
struct Geo {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    m: usize,
    wout: usize,
    cg: usize,
    mg: usize,
    k: usize,
}

fn geo(op: &Conv, x: &RowWindow, wd: &Dims, y: &RowWindow) -> Geo {
    let (xd, yd) = (x.dims.as_slice(), y.dims.as_slice());
    let cg = wd[1];
    Geo {
        n: xd[0],
        cin: xd[1],
        h: xd[2],
        w: xd[3],
        m: yd[1],
        wout: yd[3],
        cg,
        mg: yd[1] / op.groups,
        k: cg * op.kernel[0] * op.kernel[1],
    }
}

fn is_depthwise(op: &Conv, g: &Geo) -> bool {
    op.groups == g.cin && g.cg == 1 && g.m % g.cin == 0
}

/// Output rows per band for the im2col path.
fn band_rows(g: &Geo) -> usize {
    (BAND_FLOATS / (g.k.max(1) * g.wout.max(1))).max(1)
}

/// Scratch floats for producing `y.rows` rows.
pub(crate) fn workspace(
    op: &Conv,
    x: &RowWindow,
    w: &frugal_core::WeightRef,
    y: &RowWindow,
) -> usize {
    let g = geo(op, x, &w.dims, y);
    if is_depthwise(op, &g) {
        return 0;
    }
    let rows = band_rows(&g).min(y.rows.max(1));
    gemm::packed_len(g.k, rows * g.wout)
}

/// Runs a convolution producing rows `y.first_row .. y.first_row + y.rows`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    op: &Conv,
    x: &RowWindow,
    weight: &[f32],
    wd: &Dims,
    bias: Option<&[f32]>,
    y: &RowWindow,
    io: Io<'_>,
    ctx: Ctx<'_>,
) -> Result<()> {
    let Ctx { isa, par } = ctx;
    let g = geo(op, x, wd, y);
    let par = par.for_work(2 * g.n * g.m * g.k * y.rows * g.wout);
    if weight.len() != g.m * g.k || bias.is_some_and(|b| b.len() != g.m) {
        return Err(fail("conv", "weight or bias size does not match the convolution"));
    }
    check_rows(op, x, y, g.h)?;
    if is_depthwise(op, &g) {
        depthwise(op, x, weight, bias, y, io, &g, par);
        return Ok(());
    }
    let band = band_rows(&g);
    let (r_end, mut r0) = (y.first_row + y.rows, y.first_row);
    while r0 < r_end {
        let r1 = (r0 + band).min(r_end);
        let ncols = (r1 - r0) * g.wout;
        let plane_len = y.capacity * y.row_stride;
        for b in 0..g.n {
            for grp in 0..op.groups {
                let packed = &mut io.scratch[..gemm::packed_len(g.k, ncols)];
                im2col(op, x, &io.src, packed, b * g.cin + grp * g.cg, r0, r1, &g);
                let packed = &*packed;
                // Output channels of this image and group, split into tiles across threads.
                let p0 = b * g.m + grp * g.mg;
                let planes = &mut io.out[p0 * plane_len..(p0 + g.mg) * plane_len];
                let tile = par.split(g.mg, gemm::MR);
                par.chunks(planes, tile * plane_len, |t, out| {
                    let i0 = t * tile;
                    let rows = out.len() / plane_len;
                    let w0 = (grp * g.mg + i0) * g.k;
                    let a = MatA { data: &weight[w0..w0 + rows * g.k], rs: g.k, cs: 1 };
                    gemm::gemm(isa, rows, ncols, g.k, a, packed, |i, j, vals| {
                        let ch = grp * g.mg + i0 + i;
                        let bv = bias.map_or(0.0, |bb| bb[ch]);
                        store_cols(
                            y,
                            &mut out[i * plane_len..(i + 1) * plane_len],
                            r0,
                            g.wout,
                            j,
                            vals,
                            bv,
                            op,
                        );
                    });
                });
            }
        }
        r0 = r1;
    }
    Ok(())
}

/// Checks that the input window holds every row the requested output rows read.
fn check_rows(op: &Conv, x: &RowWindow, y: &RowWindow, h: usize) -> Result<()> {
    if y.rows == 0 {
        return Ok(());
    }
    let span = (op.kernel[0] - 1) * op.dilations[0];
    let lo = (y.first_row * op.strides[0]).saturating_sub(op.pads[0]);
    let hi =
        ((y.first_row + y.rows - 1) * op.strides[0] + span + 1).saturating_sub(op.pads[0]).min(h);
    if lo < hi && (lo < x.first_row || hi > x.first_row + x.rows) {
        return Err(fail(
            "conv",
            format!(
                "output rows {}..{} need input rows {lo}..{hi}, the window holds {}..{}",
                y.first_row,
                y.first_row + y.rows,
                x.first_row,
                x.first_row + x.rows
            ),
        ));
    }
    Ok(())
}

/// Writes `vals = C[i][j..]` (columns of the band starting at output row `r0`) into `plane`,
/// the output buffer's memory for one output channel (all its ring slots).
#[allow(clippy::too_many_arguments)]
#[inline]
fn store_cols(
    y: &RowWindow,
    plane: &mut [f32],
    r0: usize,
    wout: usize,
    j: usize,
    vals: &[f32],
    bias: f32,
    op: &Conv,
) {
    let mut c = 0;
    while c < vals.len() {
        let jj = j + c;
        let (oy, ox) = (r0 + jj / wout, jj % wout);
        let len = (wout - ox).min(vals.len() - c);
        let start = (oy % y.capacity) * y.row_stride + ox;
        let dst = &mut plane[start..start + len];
        for (d, &v) in dst.iter_mut().zip(&vals[c..c + len]) {
            *d = v + bias;
        }
        if let Some(act) = &op.act {
            act.apply_slice(dst);
        }
        c += len;
    }
}

/// im2col of output rows `[r0, r1)` for the channels `c0 .. c0 + cg` of one image/group,
/// written in packed-panel layout.
#[allow(clippy::too_many_arguments)]
fn im2col(
    op: &Conv,
    x: &RowWindow,
    src: &crate::arena::Src<'_>,
    packed: &mut [f32],
    c0: usize,
    r0: usize,
    r1: usize,
    g: &Geo,
) {
    let [kh, kw] = op.kernel;
    let [sh, sw] = op.strides;
    let [dh, dw] = op.dilations;
    let (pt, pl) = (op.pads[0], op.pads[1]);
    let depth = g.k;
    for ci in 0..g.cg {
        for ky in 0..kh {
            for kx in 0..kw {
                let kidx = (ci * kh + ky) * kw + kx;
                for oy in r0..r1 {
                    let iy = (oy * sh + ky * dh) as isize - pt as isize;
                    let jrow = (oy - r0) * g.wout;
                    if iy < 0 || iy >= g.h as isize {
                        for ox in 0..g.wout {
                            packed[packed_index(depth, kidx, jrow + ox)] = 0.0;
                        }
                        continue;
                    }
                    let start = x.row_start(c0 + ci, iy as usize);
                    let row = src.slice(start, g.w);
                    for ox in 0..g.wout {
                        let ix = (ox * sw + kx * dw) as isize - pl as isize;
                        let v = if ix >= 0 && (ix as usize) < g.w { row[ix as usize] } else { 0.0 };
                        packed[packed_index(depth, kidx, jrow + ox)] = v;
                    }
                }
            }
        }
    }
    // Padding columns of the last panel stay as they are: their products are never stored.
}

/// Depthwise convolution (one input channel per group), computed directly. Each output sums
/// its in-bounds taps in (ky, kx) order, then adds the bias.
#[allow(clippy::too_many_arguments)]
fn depthwise(
    op: &Conv,
    x: &RowWindow,
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &RowWindow,
    io: Io<'_>,
    g: &Geo,
    par: Par<'_>,
) {
    let [kh, kw] = op.kernel;
    let mult = g.m / g.cin;
    let plane_len = y.capacity * y.row_stride;
    let src = io.src;
    let taps = ColumnTaps::new(op, g);
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
                depthwise_row(op, x, &src, input, wk, bv, oy, out, g, &taps);
            }
        }
    });
}

/// Most kernel columns handled with precomputed ranges (wider kernels compute them per row).
const MAX_KW: usize = 16;

/// For each kernel column: the output columns whose tap lands inside the input row, and the
/// input column the first of them reads. The same for every row and channel of a call.
struct ColumnTaps {
    /// `(first output column, end, first input column)` per kernel column.
    cols: [(usize, usize, usize); MAX_KW],
}

impl ColumnTaps {
    fn new(op: &Conv, g: &Geo) -> ColumnTaps {
        let mut cols = [(0, 0, 0); MAX_KW];
        for (kx, c) in cols.iter_mut().enumerate().take(op.kernel[1].min(MAX_KW)) {
            *c = column_range(op, g, kx);
        }
        ColumnTaps { cols }
    }

    #[inline]
    fn get(&self, op: &Conv, g: &Geo, kx: usize) -> (usize, usize, usize) {
        if kx < MAX_KW {
            self.cols[kx]
        } else {
            column_range(op, g, kx)
        }
    }
}

/// Output columns `[lo, hi)` whose tap `kx` falls inside the row, and the input column of `lo`.
fn column_range(op: &Conv, g: &Geo, kx: usize) -> (usize, usize, usize) {
    let (sw, pl) = (op.strides[1], op.pads[1]);
    let off = kx * op.dilations[1];
    let lo = pl.saturating_sub(off).div_ceil(sw);
    let hi = ((g.w + pl).saturating_sub(off)).div_ceil(sw).min(g.wout);
    if lo >= hi {
        (0, 0, 0)
    } else {
        (lo, hi, lo * sw + off - pl)
    }
}

/// One output row of one depthwise channel: in-bounds taps in (ky, kx) order, then the bias.
#[allow(clippy::too_many_arguments)]
#[inline]
fn depthwise_row(
    op: &Conv,
    x: &RowWindow,
    src: &crate::arena::Src<'_>,
    input: usize,
    wk: &[f32],
    bias: f32,
    oy: usize,
    out: &mut [f32],
    g: &Geo,
    taps: &ColumnTaps,
) {
    let [kh, kw] = op.kernel;
    let (sh, sw, dh, pt) = (op.strides[0], op.strides[1], op.dilations[0], op.pads[0]);
    out.fill(0.0);
    for ky in 0..kh {
        let iy = (oy * sh + ky * dh) as isize - pt as isize;
        if iy < 0 || iy >= g.h as isize {
            continue;
        }
        let row = src.slice(x.row_start(input, iy as usize), g.w);
        for kx in 0..kw {
            let (lo, hi, st) = taps.get(op, g, kx);
            let wv = wk[ky * kw + kx];
            let dst = &mut out[lo..hi];
            if sw == 1 {
                // Contiguous taps: a plain zip the compiler vectorises.
                for (o, &xv) in dst.iter_mut().zip(&row[st..st + (hi - lo)]) {
                    *o += wv * xv;
                }
            } else {
                for (i, o) in dst.iter_mut().enumerate() {
                    *o += wv * row[st + i * sw];
                }
            }
        }
    }
    for v in out.iter_mut() {
        *v += bias;
    }
    if let Some(act) = &op.act {
        act.apply_slice(out);
    }
}

#[cfg(test)]
mod tests {
    use frugal_core::backend::{Kernel, RowWindow};
    use frugal_core::ops::{Activation, Conv};

    use crate::ops::testutil::*;
    use crate::{CpuBackend, Isa};

    fn conv(k: [usize; 2], s: [usize; 2], d: [usize; 2], pads: [usize; 4], groups: usize) -> Conv {
        Conv { kernel: k, strides: s, dilations: d, pads, groups, act: None }
    }

    /// Naive ONNX convolution in f64.
    fn reference(
        op: &Conv,
        xd: &[usize],
        x: &[f32],
        wd: &[usize],
        w: &[f32],
        b: &[f32],
        yd: &[usize],
    ) -> Vec<f32> {
        let (cg, mg) = (wd[1], yd[1] / op.groups);
        let mut y = Vec::with_capacity(yd.iter().product());
        for n in 0..yd[0] {
            for m in 0..yd[1] {
                let g = m / mg;
                for oy in 0..yd[2] {
                    for ox in 0..yd[3] {
                        let mut acc = b[m] as f64;
                        for ci in 0..cg {
                            for ky in 0..wd[2] {
                                for kx in 0..wd[3] {
                                    let iy = (oy * op.strides[0] + ky * op.dilations[0]) as isize
                                        - op.pads[0] as isize;
                                    let ix = (ox * op.strides[1] + kx * op.dilations[1]) as isize
                                        - op.pads[1] as isize;
                                    if (0..xd[2] as isize).contains(&iy)
                                        && (0..xd[3] as isize).contains(&ix)
                                    {
                                        let c = g * cg + ci;
                                        acc += x[((n * xd[1] + c) * xd[2] + iy as usize) * xd[3]
                                            + ix as usize]
                                            as f64
                                            * w[((m * cg + ci) * wd[2] + ky) * wd[3] + kx] as f64;
                                    }
                                }
                            }
                        }
                        let v = acc as f32;
                        y.push(op.act.map_or(v, |a| a.apply(v)));
                    }
                }
            }
        }
        y
    }

    /// Input rows output rows `lo..hi` read.
    fn needed(op: &Conv, h: usize) -> impl Fn(usize, usize) -> (usize, usize) + '_ {
        move |lo, hi| {
            let first = (lo * op.strides[0]).saturating_sub(op.pads[0]);
            let last = ((hi - 1) * op.strides[0] + (op.kernel[0] - 1) * op.dilations[0] + 1)
                .saturating_sub(op.pads[0]);
            (first.min(h), last.min(h))
        }
    }

    /// (op, input dims, output channels).
    fn cases() -> Vec<(Conv, [usize; 4], usize)> {
        let act = |mut c: Conv, a: Activation| {
            c.act = Some(a);
            c
        };
        vec![
            (conv([3, 3], [1, 1], [1, 1], [1; 4], 1), [1, 3, 7, 9], 5),
            (act(conv([3, 3], [2, 2], [1, 1], [1; 4], 1), Activation::Relu), [2, 4, 9, 8], 7),
            (conv([1, 1], [2, 2], [1, 1], [0; 4], 1), [1, 6, 7, 7], 4),
            (conv([3, 3], [1, 1], [2, 2], [2; 4], 1), [1, 3, 8, 6], 3),
            (conv([3, 5], [1, 2], [1, 1], [0, 2, 2, 1], 1), [1, 2, 6, 9], 3),
            (conv([3, 3], [1, 1], [1, 1], [1; 4], 2), [1, 4, 6, 6], 6),
            (
                act(
                    conv([3, 3], [2, 2], [1, 1], [1; 4], 6),
                    Activation::Clip { min: 0.0, max: 6.0 },
                ),
                [1, 6, 9, 7],
                6,
            ),
            (conv([5, 5], [1, 1], [1, 1], [2; 4], 4), [1, 4, 7, 5], 8),
            (conv([3, 3], [1, 1], [2, 2], [2; 4], 3), [1, 3, 6, 6], 3),
            (conv([7, 7], [2, 2], [1, 1], [3; 4], 1), [1, 3, 16, 13], 8),
            (
                act(conv([3, 3], [1, 1], [1, 1], [1; 4], 1), Activation::HardSwish),
                [1, 80, 5, 6],
                13,
            ),
            (conv([2, 2], [1, 1], [1, 1], [0; 4], 1), [1, 2, 2, 2], 3),
        ]
    }

    #[test]
    fn matches_the_naive_definition_by_bands_and_rings() {
        for (i, (op, xd, m)) in cases().into_iter().enumerate() {
            let op = leak(op);
            let wd = [m, xd[1] / op.groups, op.kernel[0], op.kernel[1]];
            let yd = op.infer(&xd, &wd).unwrap();
            let s = 20 * i as u64;
            let (x, w, b) = (
                rand_vec(s, xd.iter().product()),
                rand_vec(s + 1, wd.iter().product()),
                rand_vec(s + 2, m),
            );
            let need = needed(op, xd[2]);
            let got = check_bands(
                &[Input { dims: &xd, data: &x, need: &need }],
                &[(&wd, &w), (&[m], &b)],
                &yd,
                |xs, ws, y| Kernel::Conv { op, x: xs[0], w: ws[0], b: Some(ws[1]), y },
            );
            assert_close(
                &got,
                &reference(op, &xd, &x, &wd, &w, &b, &yd),
                1e-5,
                &format!("case {i}: {op:?}"),
            );
        }
    }

    #[test]
    fn the_portable_path_agrees_with_the_reference() {
        for (i, (op, xd, m)) in cases().into_iter().enumerate() {
            let wd = [m, xd[1] / op.groups, op.kernel[0], op.kernel[1]];
            let yd = op.infer(&xd, &wd).unwrap();
            let (x, w, b) = (
                rand_vec(i as u64, xd.iter().product()),
                rand_vec(99, wd.iter().product()),
                vec![0.5; m],
            );
            let mut rig = Rig::with(CpuBackend::with_isa(Isa::Generic));
            let (xw, ww, bw) = (rig.input(&xd, &x), rig.weight(&wd, &w), rig.weight(&[m], &b));
            let y = rig.whole(&yd);
            rig.run(&Kernel::Conv { op: &op, x: xw, w: ww, b: Some(bw), y }).unwrap();
            assert_close(
                &rig.read(&y),
                &reference(&op, &xd, &x, &wd, &w, &b, &yd),
                1e-5,
                &format!("generic case {i}"),
            );
        }
    }

    #[test]
    fn matches_candle() {
        // (kernel, stride, pad, dilation, groups), symmetric as candle takes them.
        for (i, (k, s, p, d, g)) in [
            (3, 1, 1, 1, 1),
            (3, 2, 1, 1, 1),
            (1, 1, 0, 1, 1),
            (3, 1, 2, 2, 1),
            (3, 2, 1, 1, 4),
            (5, 1, 2, 1, 2),
        ]
        .into_iter()
        .enumerate()
        {
            let op = conv([k, k], [s, s], [d, d], [p; 4], g);
            let (xd, wd) = ([2, 4, 9, 10], [8, 4 / g, k, k]);
            let yd = op.infer(&xd, &wd).unwrap();
            let (x, w) = (
                rand_vec(50 + i as u64, xd.iter().product()),
                rand_vec(60 + i as u64, wd.iter().product()),
            );
            let mut rig = Rig::new();
            let (xw, ww) = (rig.input(&xd, &x), rig.weight(&wd, &w));
            let y = rig.whole(&yd);
            rig.run(&Kernel::Conv { op: &op, x: xw, w: ww, b: None, y }).unwrap();
            let theirs = candle(&xd, &x).conv2d(&candle(&wd, &w), p, s, d, g).unwrap();
            assert_eq!(theirs.dims(), yd.as_slice());
            assert_close(
                &rig.read(&y),
                &values(&theirs),
                1e-5,
                &format!("k{k} s{s} p{p} d{d} g{g}"),
            );
        }
    }

    #[test]
    fn rejects_missing_rows_and_bad_weights() {
        let op = conv([3, 3], [2, 2], [1, 1], [1; 4], 1);
        let (xd, wd) = ([1, 2, 8, 8], [3, 2, 3, 3]);
        let x = rand_vec(3, 128);
        let mut rig = Rig::new();
        let w = rig.weight(&wd, &rand_vec(4, 54));
        let y = rig.whole(&[1, 3, 4, 4]);
        // Output row 2 reads input rows 3..6.
        let ring = rig.ring(&xd, 4);
        let band = RowWindow { first_row: 2, rows: 1, ..y };
        let held = rig.put_rows(&ring, &x, 3, 6);
        assert!(rig.run(&Kernel::Conv { op: &op, x: held, w, b: None, y: band }).is_ok());
        let held = rig.put_rows(&ring, &x, 4, 7);
        assert!(rig.run(&Kernel::Conv { op: &op, x: held, w, b: None, y: band }).is_err());
        let xw = rig.input(&xd, &x);
        let bad_w = rig.weight(&[3, 2, 2, 2], &[0.0; 24]);
        assert!(rig.run(&Kernel::Conv { op: &op, x: xw, w: bad_w, b: None, y }).is_err());
        let bad_b = rig.weight(&[2], &[0.0; 2]);
        assert!(rig.run(&Kernel::Conv { op: &op, x: xw, w, b: Some(bad_b), y }).is_err());
    }
}
