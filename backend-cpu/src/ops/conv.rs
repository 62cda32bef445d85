//! Convolution over row windows: depthwise convolutions run directly; everything else is a
//! matrix product of the weights with an im2col of a band of output rows, packed straight into
//! the gemm panel layout in scratch. Bias and activation are applied as the tile is stored.

use frugal_core::backend::{Dims, RowWindow};
use frugal_core::ops::Conv;
use frugal_core::Result;

use crate::arena::Io;
use crate::fail;
use crate::gemm::{self, packed_index, Isa, MatA};

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
    mut io: Io<'_>,
    isa: Isa,
) -> Result<()> {
    let g = geo(op, x, wd, y);
    if weight.len() != g.m * g.k || bias.is_some_and(|b| b.len() != g.m) {
        return Err(fail("conv", "weight or bias size does not match the convolution"));
    }
    check_rows(op, x, y, g.h)?;
    if is_depthwise(op, &g) {
        depthwise(op, x, weight, bias, y, &mut io, &g);
        return Ok(());
    }
    let band = band_rows(&g);
    let (r_end, mut r0) = (y.first_row + y.rows, y.first_row);
    while r0 < r_end {
        let r1 = (r0 + band).min(r_end);
        let ncols = (r1 - r0) * g.wout;
        for b in 0..g.n {
            for grp in 0..op.groups {
                let packed = &mut io.scratch[..gemm::packed_len(g.k, ncols)];
                im2col(op, x, &io.src, packed, b * g.cin + grp * g.cg, r0, r1, &g);
                let a = MatA {
                    data: &weight[grp * g.mg * g.k..(grp + 1) * g.mg * g.k],
                    rs: g.k,
                    cs: 1,
                };
                let (packed, out, out_base) = (&*packed, &mut *io.out, io.out_base);
                gemm::gemm(isa, g.mg, ncols, g.k, a, packed, |i, j, vals| {
                    let ch = grp * g.mg + i;
                    let plane = b * g.m + ch;
                    let bv = bias.map_or(0.0, |bb| bb[ch]);
                    store_cols(y, out, out_base, plane, r0, g.wout, j, vals, bv, op);
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

/// Writes `vals = C[i][j..]` (columns of the band starting at output row `r0`) to the output.
#[allow(clippy::too_many_arguments)]
#[inline]
fn store_cols(
    y: &RowWindow,
    out: &mut [f32],
    out_base: usize,
    plane: usize,
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
        let start = y.row_start(plane, oy) - out_base + ox;
        let dst = &mut out[start..start + len];
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
fn depthwise(
    op: &Conv,
    x: &RowWindow,
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &RowWindow,
    io: &mut Io<'_>,
    g: &Geo,
) {
    let [kh, kw] = op.kernel;
    let [sh, sw] = op.strides;
    let [dh, dw] = op.dilations;
    let (pt, pl) = (op.pads[0], op.pads[1]);
    let mult = g.m / g.cin;
    for b in 0..g.n {
        for m in 0..g.m {
            let ci = m / mult;
            let wk = &weight[m * kh * kw..(m + 1) * kh * kw];
            let bv = bias.map_or(0.0, |bb| bb[m]);
            for oy in y.first_row..y.first_row + y.rows {
                let plane_out = b * g.m + m;
                let start = y.row_start(plane_out, oy) - io.out_base;
                let out = &mut io.out[start..start + g.wout];
                out.iter_mut().for_each(|v| *v = 0.0);
                for ky in 0..kh {
                    let iy = (oy * sh + ky * dh) as isize - pt as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let row = io.src.slice(x.row_start(b * g.cin + ci, iy as usize), g.w);
                    for kx in 0..kw {
                        let wv = wk[ky * kw + kx];
                        // Output columns whose tap falls inside the row.
                        let off = kx * dw;
                        let lo = pl.saturating_sub(off).div_ceil(sw);
                        let hi = ((g.w + pl).saturating_sub(off)).div_ceil(sw).min(g.wout);
                        if lo >= hi {
                            continue;
                        }
                        // Input columns read: lo*sw + off - pl, then every sw-th.
                        let taps = row[lo * sw + off - pl..].iter().step_by(sw);
                        for (o, &xv) in out[lo..hi].iter_mut().zip(taps) {
                            *o += wv * xv;
                        }
                    }
                }
                for v in out.iter_mut() {
                    *v += bv;
                }
                if let Some(act) = &op.act {
                    act.apply_slice(out);
                }
            }
        }
    }
}
