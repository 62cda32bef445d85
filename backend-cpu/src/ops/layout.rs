//! Data movement: concatenation along any axis (by rows), axis permutation, and the
//! element-order-preserving copy behind reshapes and materialised constants.

use frugal_core::backend::{RowWindow, MAX_RANK};
use frugal_core::Result;

use super::{in_row, need_rows, need_whole, rows, strides, unravel, Flat, Opd};
use crate::arena::Io;
use crate::fail;

/// Concatenation along `axis`. Output row `r` reads row `r` of every input (row `r - offset` of
/// one input when `axis` is the row axis), so any band of rows can be produced on its own.
pub(crate) fn concat(axis: usize, xs: &[RowWindow], y: &RowWindow, mut io: Io<'_>) -> Result<()> {
    let yd = y.dims.as_slice();
    let r = yd.len();
    if axis >= r {
        return Err(fail("concat", format!("axis {axis} out of range for {yd:?}")));
    }
    let mut total = 0;
    for x in xs {
        let xd = x.dims.as_slice();
        let fits = xd.len() == r && (0..r).all(|a| a == axis || xd[a] == yd[a]);
        if !fits {
            return Err(fail(
                "concat",
                format!("input {xd:?} does not fit output {yd:?} along axis {axis}"),
            ));
        }
        total += xd[axis];
    }
    if total != yd[axis] {
        return Err(fail(
            "concat",
            format!("inputs add up to {total} along axis {axis}, output has {}", yd[axis]),
        ));
    }
    let (planes, _, _) = y.geometry();
    let src = io.src;
    let mut off = 0;
    for x in xs.iter().filter(|x| x.dims.numel() > 0) {
        let (xplanes, xh, xw) = x.geometry();
        if axis + 2 < r {
            // A plane axis: input plane q is output plane (o * C + off + c) * inner + i.
            need_rows("concat", x, y.first_row, y.first_row + y.rows)?;
            let inner: usize = yd[axis + 1..r - 2].iter().product();
            let (cx, cy) = (x.dims[axis], yd[axis]);
            for q in 0..xplanes {
                let (o, c, i) = (q / (cx * inner), (q / inner) % cx, q % inner);
                let p = (o * cy + off + c) * inner + i;
                for row in rows(y) {
                    io.out_row(y, p, row).copy_from_slice(in_row(src, x, q, row));
                }
            }
        } else if axis + 2 == r {
            // The row axis: this input supplies output rows off .. off + xh.
            let (lo, hi) = (y.first_row.max(off), (y.first_row + y.rows).min(off + xh));
            need_rows("concat", x, lo.saturating_sub(off), hi.saturating_sub(off))?;
            for p in 0..planes {
                for row in lo..hi {
                    io.out_row(y, p, row).copy_from_slice(in_row(src, x, p, row - off));
                }
            }
        } else {
            // The last axis: this input supplies columns off .. off + xw of every row.
            need_rows("concat", x, y.first_row, y.first_row + y.rows)?;
            for p in 0..planes {
                for row in rows(y) {
                    io.out_row(y, p, row)[off..off + xw].copy_from_slice(in_row(src, x, p, row));
                }
            }
        }
        off += x.dims[axis];
    }
    Ok(())
}

/// Axis permutation: output axis `i` is input axis `perm[i]`. Reads the whole input; writes
/// the output rows of the window.
pub(crate) fn transpose(
    perm: &[usize],
    x: &RowWindow,
    y: &RowWindow,
    mut io: Io<'_>,
) -> Result<()> {
    let (xd, yd) = (x.dims.as_slice(), y.dims.as_slice());
    let r = xd.len();
    // A permutation names each input axis exactly once.
    let mut seen = [false; MAX_RANK];
    let valid = perm.len() == r
        && yd.len() == r
        && perm.iter().all(|&p| p < r && !std::mem::replace(&mut seen[p], true));
    if !valid || (0..r).any(|i| yd[i] != xd[perm[i]]) {
        return Err(fail("transpose", format!("perm {perm:?} does not take {xd:?} to {yd:?}")));
    }
    if r >= 2 && perm[r - 2] == r - 2 && perm[r - 1] == r - 1 {
        return transpose_planes(perm, x, y, io);
    }
    need_whole("transpose", x)?;
    // Input strides seen along each output axis.
    let xs = strides(x);
    let mut s = [0; MAX_RANK];
    for (si, &p) in s.iter_mut().zip(perm) {
        *si = xs[p];
    }
    let (planes, _, _) = y.geometry();
    let (row_s, col_s) = (if r >= 2 { s[r - 2] } else { 0 }, if r >= 1 { s[r - 1] } else { 0 });
    let lead = &yd[..r.saturating_sub(2)];
    // The whole input as one slice; element offsets are relative to its first row.
    let ext = crate::arena::extent(x);
    let xv = io.src.slice(ext.start, ext.len());
    let mut idx = [0; MAX_RANK];
    for p in 0..planes {
        unravel(p, lead, &mut idx);
        let pbase: usize = idx.iter().zip(&s).take(lead.len()).map(|(i, st)| i * st).sum();
        for row in rows(y) {
            let start = pbase + row * row_s;
            for (j, o) in io.out_row(y, p, row).iter_mut().enumerate() {
                *o = xv[start + j * col_s];
            }
        }
    }
    Ok(())
}

/// A transpose that keeps rows and columns (it only reorders planes, as channel shuffles do):
/// output plane `p` row `r` is a row of one input plane, so it streams row by row.
fn transpose_planes(perm: &[usize], x: &RowWindow, y: &RowWindow, mut io: Io<'_>) -> Result<()> {
    let (xd, yd) = (x.dims.as_slice(), y.dims.as_slice());
    let lead = yd.len() - 2;
    need_rows("transpose", x, y.first_row, y.first_row + y.rows)?;
    // Plane strides of the input, seen along each output lead axis.
    let mut xs = [0; MAX_RANK];
    let mut s = 1;
    for a in (0..lead).rev() {
        xs[a] = s;
        s *= xd[a];
    }
    let mut idx = [0; MAX_RANK];
    let (planes, _, _) = y.geometry();
    for p in 0..planes {
        unravel(p, &yd[..lead], &mut idx);
        let q: usize = (0..lead).map(|i| idx[i] * xs[perm[i]]).sum();
        for row in rows(y) {
            let src = in_row(io.src, x, q, row);
            io.out_row(y, p, row).copy_from_slice(src);
        }
    }
    Ok(())
}

/// Copies elements in row-major order from `x` to the output rows of `y` (same element count,
/// any shapes). An activation source must hold the rows the copied elements sit in.
pub(crate) fn copy(x: Opd<'_>, y: &RowWindow, mut io: Io<'_>) -> Result<()> {
    if x.dims().numel() != y.dims.numel() {
        return Err(fail("copy", format!("cannot copy {:?} into {:?}", x.dims(), y.dims)));
    }
    let (planes, h, w) = y.geometry();
    let src = io.src;
    if let Opd::Rows(xw) = &x {
        if xw.is_contiguous_whole() && y.is_contiguous_whole() {
            // A reshape of a whole tensor: one copy (row by row, a [1, 1280, 1, 1] tensor
            // took 1280 of them).
            let (n, at) = (y.dims.numel(), y.row_start(0, 0) - io.out_base);
            io.out[at..at + n].copy_from_slice(src.slice(xw.row_start(0, 0), n));
            return Ok(());
        }
    }
    for p in 0..planes {
        for row in rows(y) {
            let f = (p * h + row) * w;
            let dst = io.out_row(y, p, row);
            match &x {
                Opd::Const { data, .. } => dst.copy_from_slice(&data[f..f + w]),
                Opd::Rows(xw) => copy_flat(src, xw, f, dst)?,
            }
        }
    }
    Ok(())
}

/// Fills `dst` with the elements of window `x` from row-major index `f` on, row by row.
fn copy_flat(
    src: crate::arena::Src<'_>,
    x: &RowWindow,
    mut f: usize,
    dst: &mut [f32],
) -> Result<()> {
    let fx = Flat::new(x);
    let mut done = 0;
    while done < dst.len() {
        let row = fx.row(f);
        need_rows("copy", x, row, row + 1)?;
        let (at, left) = fx.at(f);
        let n = left.min(dst.len() - done);
        dst[done..done + n].copy_from_slice(src.slice(at, n));
        done += n;
        f += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use frugal_core::backend::{Kernel, Operand, RowWindow};

    use crate::ops::testutil::*;

    /// Naive concatenation along `axis`.
    fn concat_ref(pieces: &[(Vec<usize>, Vec<f32>)], axis: usize, yd: &[usize]) -> Vec<f32> {
        (0..yd.iter().product())
            .map(|i| {
                let mut idx = index_of(i, yd);
                for (d, v) in pieces {
                    if idx[axis] < d[axis] {
                        return v[idx.iter().zip(row_major(d)).map(|(i, s)| i * s).sum::<usize>()];
                    }
                    idx[axis] -= d[axis];
                }
                unreachable!()
            })
            .collect()
    }

    #[test]
    fn concatenates_any_axis_by_bands() {
        let cases: [(usize, &[&[usize]]); 9] = [
            (1, &[&[1, 2, 5, 4], &[1, 3, 5, 4], &[1, 1, 5, 4]]),
            (0, &[&[1, 2, 5, 4], &[2, 2, 5, 4]]),
            (2, &[&[2, 3, 2, 4], &[2, 3, 5, 4], &[2, 3, 1, 4]]),
            (3, &[&[1, 2, 5, 3], &[1, 2, 5, 4]]),
            (0, &[&[2, 3], &[4, 3]]),
            (1, &[&[2, 3], &[2, 1]]),
            (0, &[&[3], &[5]]),
            (2, &[&[1, 2, 2, 3, 4], &[1, 2, 1, 3, 4]]),
            (1, &[&[1, 0, 5, 4], &[1, 3, 5, 4]]),
        ];
        for (case, (axis, dims)) in cases.into_iter().enumerate() {
            let pieces: Vec<(Vec<usize>, Vec<f32>)> = dims
                .iter()
                .enumerate()
                .map(|(j, d)| {
                    (d.to_vec(), rand_vec(10 * case as u64 + j as u64, d.iter().product()))
                })
                .collect();
            let mut yd = dims[0].to_vec();
            yd[axis] = dims.iter().map(|d| d[axis]).sum();
            let row_axis = yd.len() >= 2 && axis == yd.len() - 2;
            // Along the row axis a piece supplies output rows off .. off + h.
            let offsets: Vec<usize> =
                dims.iter().scan(0, |o, d| Some(std::mem::replace(o, *o + d[axis]))).collect();
            let needs: Vec<Box<Need<'_>>> = dims
                .iter()
                .zip(&offsets)
                .map(|(d, &off)| -> Box<Need<'_>> {
                    if row_axis {
                        let h = d[axis];
                        Box::new(move |lo, hi| {
                            (lo.clamp(off, off + h) - off, hi.clamp(off, off + h) - off)
                        })
                    } else {
                        Box::new(same_rows)
                    }
                })
                .collect();
            let inputs: Vec<Input<'_>> = pieces
                .iter()
                .zip(&needs)
                .map(|((d, v), n)| Input { dims: d, data: v, need: n.as_ref() })
                .collect();
            let got = check_bands(&inputs, &[], &yd, |xs, _, y| Kernel::Concat { axis, xs, y });
            let want = concat_ref(&pieces, axis, &yd);
            assert_bits(&got, &want, &format!("axis {axis} of {dims:?}"));
            let ts: Vec<_> = pieces.iter().map(|(d, v)| candle(d, v)).collect();
            assert_bits(&got, &values(&candle_core::Tensor::cat(&ts, axis).unwrap()), "candle");
        }
    }

    #[test]
    fn concat_rejects_mismatched_inputs_and_missing_rows() {
        let mut rig = Rig::new();
        let a = rig.input(&[1, 2, 4, 3], &rand_vec(1, 24));
        let b = rig.input(&[1, 2, 5, 3], &rand_vec(2, 30));
        let y = rig.whole(&[1, 4, 4, 3]);
        assert!(rig.run(&Kernel::Concat { axis: 1, xs: &[a, b], y }).is_err());
        assert!(rig.run(&Kernel::Concat { axis: 1, xs: &[a, a, a], y }).is_err());
        assert!(rig.run(&Kernel::Concat { axis: 4, xs: &[a, a], y }).is_err());
        let ring = rig.ring(&[1, 2, 4, 3], 2);
        let part = rig.put_rows(&ring, &rand_vec(1, 24), 1, 3);
        let band = RowWindow { first_row: 2, rows: 2, ..y };
        assert!(rig.run(&Kernel::Concat { axis: 1, xs: &[a, part], y: band }).is_err());
        let band = RowWindow { first_row: 1, rows: 2, ..y };
        assert!(rig.run(&Kernel::Concat { axis: 1, xs: &[a, part], y: band }).is_ok());
    }

    fn transpose_ref(perm: &[usize], xd: &[usize], x: &[f32]) -> Vec<f32> {
        let yd: Vec<usize> = perm.iter().map(|&p| xd[p]).collect();
        let xs = row_major(xd);
        (0..x.len())
            .map(|i| {
                let idx = index_of(i, &yd);
                x[perm.iter().zip(&idx).map(|(&p, &j)| j * xs[p]).sum::<usize>()]
            })
            .collect()
    }

    #[test]
    fn transposes_any_permutation() {
        let cases: [(&[usize], &[usize]); 9] = [
            (&[0, 2, 3, 1], &[2, 3, 4, 5]),
            (&[0, 3, 1, 2], &[2, 3, 4, 5]),
            (&[3, 2, 1, 0], &[2, 3, 4, 5]),
            (&[0, 1, 2, 3], &[1, 3, 2, 2]),
            (&[1, 0], &[7, 5]),
            (&[2, 0, 1], &[3, 4, 5]),
            (&[0], &[6]),
            (&[4, 1, 5, 0, 3, 2], &[2, 3, 1, 2, 3, 2]),
            (&[1, 0, 2], &[1, 5, 1]),
        ];
        for (case, (perm, xd)) in cases.into_iter().enumerate() {
            let x = rand_vec(case as u64, xd.iter().product());
            let yd: Vec<usize> = perm.iter().map(|&p| xd[p]).collect();
            let h = frugal_core::Dims::new(xd).unwrap().rows().1;
            let whole = all_rows(h);
            let perm = leak(perm.to_vec());
            let got =
                check_bands(&[Input { dims: xd, data: &x, need: &whole }], &[], &yd, |xs, _, y| {
                    Kernel::Transpose { perm, x: xs[0], y }
                });
            assert_bits(&got, &transpose_ref(perm, xd, &x), &format!("{perm:?} of {xd:?}"));
            let theirs = candle(xd, &x).permute(perm.as_slice()).unwrap().contiguous().unwrap();
            assert_bits(&got, &values(&theirs), "candle");
        }
    }

    #[test]
    fn transpose_reads_padded_rows_and_needs_whole_inputs() {
        let (xd, perm) = ([2, 3, 4, 5], [0, 2, 3, 1]);
        let x = rand_vec(9, 120);
        let mut rig = Rig::new();
        let xw = rig.padded(&xd, 3);
        let xw = rig.put_rows(&xw, &x, 0, 4);
        let y = rig.whole(&[2, 4, 5, 3]);
        rig.run(&Kernel::Transpose { perm: &perm, x: xw, y }).unwrap();
        assert_bits(&rig.read(&y), &transpose_ref(&perm, &xd, &x), "padded");
        let part = RowWindow { first_row: 1, rows: 3, ..xw };
        assert!(rig.run(&Kernel::Transpose { perm: &perm, x: part, y }).is_err());
        assert!(rig.run(&Kernel::Transpose { perm: &[0, 2, 2, 1], x: xw, y }).is_err());
        assert!(rig.run(&Kernel::Transpose { perm: &[0, 1, 2, 3], x: xw, y }).is_err());
    }

    #[test]
    fn copy_preserves_element_order() {
        let xd = [2, 3, 4, 5];
        let x = rand_vec(11, 120);
        for yd in [vec![6, 20], vec![120], vec![5, 4, 3, 2], vec![2, 3, 4, 5], vec![1, 1, 120, 1]] {
            let whole = all_rows(4);
            let got = check_bands(
                &[Input { dims: &xd, data: &x, need: &whole }],
                &[],
                &yd,
                |xs, _, y| Kernel::Copy { x: Operand::Arena(xs[0]), y },
            );
            assert_bits(&got, &x, &format!("reshape to {yd:?}"));
            let got = check_bands(&[], &[(&xd, &x)], &yd, |_, ws, y| Kernel::Copy {
                x: Operand::Weight(ws[0]),
                y,
            });
            assert_bits(&got, &x, &format!("constant as {yd:?}"));
        }
        // Reshapes that keep rows (planes regrouped) copy band by band through rings.
        let got = check_bands(
            &[Input { dims: &[1, 6, 4, 5], data: &x, need: &same_rows }],
            &[],
            &xd,
            |xs, _, y| Kernel::Copy { x: Operand::Arena(xs[0]), y },
        );
        assert_bits(&got, &x, "regrouped planes");
    }

    #[test]
    fn copy_rejects_other_sizes_and_missing_rows() {
        let mut rig = Rig::new();
        let x = rig.input(&[2, 3, 4], &rand_vec(1, 24));
        let y = rig.whole(&[25]);
        assert!(rig.run(&Kernel::Copy { x: Operand::Arena(x), y }).is_err());
        let y = rig.whole(&[6, 4]);
        let part = RowWindow { first_row: 1, rows: 2, ..x };
        assert!(rig.run(&Kernel::Copy { x: Operand::Arena(part), y }).is_err());
    }
}
