//! Reductions over axes (mean, sum, max) and softmax, on whole tensors.
//!
//! A reduction walks the input once in row-major order and folds each element into its output
//! element, so every output sums its inputs in row-major order of the reduced axes; a mean
//! divides that sum once by the count. Softmax subtracts the maximum before exponentiating,
//! sums the exponentials in axis order and divides each by the sum.

use frugal_core::backend::{RowWindow, MAX_RANK};
use frugal_core::ops::{Reduce, ReduceKind, Softmax};
use frugal_core::Result;

use super::{in_row, need_dims, need_whole, strides, unravel, Flat};
use crate::arena::Io;
use crate::fail;

/// Reduces `x` over `op.axes` into `y`.
pub(crate) fn reduce(op: &Reduce, x: &RowWindow, y: &RowWindow, mut io: Io<'_>) -> Result<()> {
    let xd = x.dims.as_slice();
    let r = xd.len();
    let mut reduced = [false; MAX_RANK];
    for &a in &op.axes {
        if a >= r {
            return Err(fail("reduce", format!("axis {a} out of range for {xd:?}")));
        }
        reduced[a] = true;
    }
    let (mut want, mut ry) = ([0; MAX_RANK], 0);
    for a in 0..r {
        if !reduced[a] || op.keepdims {
            want[ry] = if reduced[a] { 1 } else { xd[a] };
            ry += 1;
        }
    }
    need_dims("reduce", "output", &y.dims, &want[..ry])?;
    need_whole("reduce", x)?;
    need_whole("reduce", y)?;
    // Output strides seen along each input axis: 0 on reduced axes.
    let (ys, mut yx, mut j) = (strides(y), [0; MAX_RANK], 0);
    for a in 0..r {
        if !reduced[a] || op.keepdims {
            yx[a] = if reduced[a] { 0 } else { ys[j] };
            j += 1;
        }
    }
    let init = if op.kind == ReduceKind::Max { f32::NEG_INFINITY } else { 0.0 };
    let (yplanes, yh, _) = y.geometry();
    for p in 0..yplanes {
        for row in 0..yh {
            io.out_row(y, p, row).fill(init);
        }
    }
    let (planes, h, _) = x.geometry();
    let ybase = y.row_start(0, 0) - io.out_base;
    let col_stride = if r >= 1 { yx[r - 1] } else { 0 };
    let (mut idx, src) = ([0; MAX_RANK], io.src);
    for g in 0..planes * h {
        unravel(g, &xd[..r.saturating_sub(1)], &mut idx);
        let at: usize = ybase
            + idx.iter().zip(&yx).take(r.saturating_sub(1)).map(|(i, s)| i * s).sum::<usize>();
        for (c, &v) in in_row(src, x, g / h, g % h).iter().enumerate() {
            let o = &mut io.out[at + c * col_stride];
            *o = if op.kind == ReduceKind::Max { o.max(v) } else { *o + v };
        }
    }
    if op.kind == ReduceKind::Mean {
        let count = op.axes.iter().map(|&a| xd[a]).product::<usize>() as f32;
        for p in 0..yplanes {
            for row in 0..yh {
                io.out_row(y, p, row).iter_mut().for_each(|v| *v /= count);
            }
        }
    }
    Ok(())
}

/// Softmax over `op.axis` (over every axis from `op.axis` on with `coerce_2d`).
pub(crate) fn softmax(op: &Softmax, x: &RowWindow, y: &RowWindow, io: Io<'_>) -> Result<()> {
    let xd = x.dims.as_slice();
    if op.axis >= xd.len() {
        return Err(fail("softmax", format!("axis {} out of range for {xd:?}", op.axis)));
    }
    need_dims("softmax", "output", &y.dims, xd)?;
    need_whole("softmax", x)?;
    need_whole("softmax", y)?;
    // Element (o, l, i) of the [outer, len, inner] view, l along the softmax axes.
    let outer: usize = xd[..op.axis].iter().product();
    let (len, inner) = if op.coerce_2d {
        (xd[op.axis..].iter().product(), 1)
    } else {
        (xd[op.axis], xd[op.axis + 1..].iter().product())
    };
    let (fx, fy) = (Flat::new(x), Flat::new(y));
    let ext = crate::arena::extent(x);
    let xs = io.src.slice(ext.start, ext.len());
    for o in 0..outer {
        for i in 0..inner {
            let at = |l: usize| (o * len + l) * inner + i;
            let xv = |l: usize| xs[fx.at(at(l)).0 - ext.start];
            let m = (0..len).map(xv).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for l in 0..len {
                let e = (xv(l) - m).exp();
                io.out[fy.at(at(l)).0 - io.out_base] = e;
                sum += e;
            }
            for l in 0..len {
                io.out[fy.at(at(l)).0 - io.out_base] /= sum;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use frugal_core::backend::{Kernel, RowWindow};
    use frugal_core::ops::{Reduce, ReduceKind, Softmax};

    use crate::ops::testutil::*;

    /// For each output element, its inputs' row-major indices in row-major order of the
    /// reduced axes.
    fn groups(xd: &[usize], axes: &[usize]) -> Vec<Vec<usize>> {
        let kept: Vec<usize> = (0..xd.len()).filter(|a| !axes.contains(a)).collect();
        let kd: Vec<usize> = kept.iter().map(|&a| xd[a]).collect();
        let rd: Vec<usize> = axes.iter().map(|&a| xd[a]).collect();
        let s = row_major(xd);
        (0..kd.iter().product())
            .map(|o| {
                let ko = index_of(o, &kd);
                (0..rd.iter().product())
                    .map(|r| {
                        let ro = index_of(r, &rd);
                        kept.iter()
                            .zip(&ko)
                            .chain(axes.iter().zip(&ro))
                            .map(|(&a, &i)| i * s[a])
                            .sum()
                    })
                    .collect()
            })
            .collect()
    }

    fn run_reduce(op: &Reduce, xd: &[usize], x: &[f32], pad: usize) -> Vec<f32> {
        let yd = op.infer(xd).unwrap();
        let mut rig = Rig::new();
        let xw = rig.padded(xd, pad);
        let (_, h, _) = xw.geometry();
        let xw = rig.put_rows(&xw, x, 0, h);
        let y = rig.padded(&yd, pad);
        rig.run(&Kernel::Reduce { op, x: xw, y }).unwrap();
        rig.read(&y)
    }

    #[test]
    fn reduces_any_axes_in_row_major_order() {
        let cases: [(&[usize], &[usize]); 10] = [
            (&[2, 3, 4, 5], &[1]),
            (&[2, 3, 4, 5], &[2, 3]),
            (&[2, 3, 4, 5], &[0, 2]),
            (&[2, 3, 4, 5], &[0, 1, 2, 3]),
            (&[2, 3, 4, 5], &[3]),
            (&[7], &[0]),
            (&[3, 1, 5], &[1, 2]),
            (&[2, 2, 3, 1, 2, 3], &[1, 4, 5]),
            (&[4, 6], &[0]),
            (&[2, 3, 4], &[]),
        ];
        for (case, &(xd, axes)) in cases.iter().enumerate() {
            let x = rand_vec(case as u64, xd.iter().product());
            let groups = groups(xd, axes);
            for kind in [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max] {
                for keepdims in [true, false] {
                    let op = Reduce { kind, axes: axes.to_vec(), keepdims };
                    let got = run_reduce(&op, xd, &x, case % 3);
                    let f64s = |g: &[usize]| g.iter().map(|&i| x[i] as f64).collect::<Vec<f64>>();
                    let want: Vec<f32> = groups
                        .iter()
                        .map(|g| match kind {
                            ReduceKind::Sum => f64s(g).iter().sum::<f64>() as f32,
                            ReduceKind::Mean => {
                                (f64s(g).iter().sum::<f64>() / g.len() as f64) as f32
                            }
                            ReduceKind::Max => {
                                f64s(g).iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v)) as f32
                            }
                        })
                        .collect();
                    let what = format!("{kind:?} {xd:?} over {axes:?} keepdims {keepdims}");
                    assert_close(&got, &want, 1e-5, &what);
                    // The documented order: f32 sums in row-major order of the reduced axes.
                    let exact: Vec<f32> = groups
                        .iter()
                        .map(|g| {
                            let s = g.iter().fold(0.0f32, |s, &i| s + x[i]);
                            match kind {
                                ReduceKind::Sum => s,
                                ReduceKind::Mean => s / g.len() as f32,
                                ReduceKind::Max => {
                                    g.iter().fold(f32::NEG_INFINITY, |m, &i| m.max(x[i]))
                                }
                            }
                        })
                        .collect();
                    assert_bits(&got, &exact, &what);
                }
            }
        }
    }

    #[test]
    fn reductions_match_candle() {
        let xd = [2, 3, 4, 5];
        let x = rand_vec(9, 120);
        let t = candle(&xd, &x);
        for axes in [vec![1], vec![2, 3], vec![0, 3]] {
            let run =
                |kind| run_reduce(&Reduce { kind, axes: axes.clone(), keepdims: true }, &xd, &x, 0);
            assert_close(
                &run(ReduceKind::Sum),
                &values(&t.sum_keepdim(axes.as_slice()).unwrap()),
                1e-5,
                "sum",
            );
            assert_close(
                &run(ReduceKind::Mean),
                &values(&t.mean_keepdim(axes.as_slice()).unwrap()),
                1e-5,
                "mean",
            );
            let mut m = t.clone();
            for &a in &axes {
                m = m.max_keepdim(a).unwrap();
            }
            assert_bits(&run(ReduceKind::Max), &values(&m), "max");
        }
    }

    fn softmax_ref(op: &Softmax, xd: &[usize], x: &[f32]) -> Vec<f32> {
        let axes: Vec<usize> =
            if op.coerce_2d { (op.axis..xd.len()).collect() } else { vec![op.axis] };
        let mut y = vec![0.0f32; x.len()];
        for g in groups(xd, &axes) {
            let m = g.iter().map(|&i| x[i] as f64).fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = g.iter().map(|&i| (x[i] as f64 - m).exp()).sum();
            for &i in &g {
                y[i] = ((x[i] as f64 - m).exp() / s) as f32;
            }
        }
        y
    }

    fn run_softmax(op: &Softmax, xd: &[usize], x: &[f32], pad: usize) -> Vec<f32> {
        let mut rig = Rig::new();
        let xw = rig.padded(xd, pad);
        let (_, h, _) = xw.geometry();
        let xw = rig.put_rows(&xw, x, 0, h);
        let y = rig.padded(xd, pad);
        rig.run(&Kernel::Softmax { op, x: xw, y }).unwrap();
        rig.read(&y)
    }

    #[test]
    fn softmax_over_one_or_trailing_axes() {
        let shapes: [&[usize]; 5] = [&[2, 3, 4, 5], &[1, 1000], &[3, 7], &[9], &[2, 1, 3, 1, 2]];
        for (case, xd) in shapes.into_iter().enumerate() {
            let x: Vec<f32> =
                rand_vec(case as u64, xd.iter().product()).iter().map(|v| v * 8.0).collect();
            for axis in 0..xd.len() {
                for coerce_2d in [false, true] {
                    let op = Softmax { axis, coerce_2d };
                    let got = run_softmax(&op, xd, &x, case % 2);
                    assert_close(&got, &softmax_ref(&op, xd, &x), 1e-5, &format!("{op:?} {xd:?}"));
                }
            }
        }
    }

    #[test]
    fn softmax_matches_candle_and_is_stable() {
        let xd = [2, 3, 4, 5];
        let x = rand_vec(5, 120);
        let t = candle(&xd, &x);
        for axis in 0..4 {
            let m = t.max_keepdim(axis).unwrap();
            let e = t.broadcast_sub(&m).unwrap().exp().unwrap();
            let theirs = e.broadcast_div(&e.sum_keepdim(axis).unwrap()).unwrap();
            let got = run_softmax(&Softmax { axis, coerce_2d: false }, &xd, &x, 0);
            assert_close(&got, &values(&theirs), 1e-6, &format!("axis {axis}"));
        }
        let big = [1000.0f32, 1001.0, 999.0, -1000.0];
        let got = run_softmax(&Softmax { axis: 1, coerce_2d: false }, &[1, 4], &big, 0);
        assert!(got.iter().all(|v| v.is_finite()));
        assert_close(
            &got,
            &softmax_ref(&Softmax { axis: 1, coerce_2d: false }, &[1, 4], &big),
            1e-6,
            "large logits",
        );
    }

    #[test]
    fn whole_windows_and_shapes_are_checked() {
        let mut rig = Rig::new();
        let x = rig.input(&[2, 3, 4], &rand_vec(1, 24));
        let y = rig.whole(&[2, 1, 4]);
        let op = Reduce { kind: ReduceKind::Sum, axes: vec![1], keepdims: true };
        assert!(rig.run(&Kernel::Reduce { op: &op, x, y }).is_ok());
        let part = RowWindow { first_row: 1, rows: 2, ..x };
        assert!(rig.run(&Kernel::Reduce { op: &op, x: part, y }).is_err());
        let flat = Reduce { keepdims: false, ..op.clone() };
        assert!(rig.run(&Kernel::Reduce { op: &flat, x, y }).is_err());
        let far = Reduce { axes: vec![3], ..op.clone() };
        assert!(rig.run(&Kernel::Reduce { op: &far, x, y }).is_err());
        let s = rig.whole(&[2, 3, 4]);
        let sm = Softmax { axis: 1, coerce_2d: false };
        assert!(rig.run(&Kernel::Softmax { op: &sm, x: part, y: s }).is_err());
        let band = RowWindow { first_row: 0, rows: 1, ..s };
        assert!(rig.run(&Kernel::Softmax { op: &sm, x, y: band }).is_err());
        assert!(rig
            .run(&Kernel::Softmax { op: &Softmax { axis: 3, coerce_2d: false }, x, y: s })
            .is_err());
    }
}
