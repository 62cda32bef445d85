//! Spatial resize (nearest, bilinear) over row windows. Source positions come from the
//! `Resize` helpers in core. A bilinear output is the fixed formula
//! `(1 - wy) * (x00 * (1 - wx) + x01 * wx) + wy * (x10 * (1 - wx) + x11 * wx)`. The column taps
//! of a call are worked out once into scratch and shared by all its rows and planes.

use frugal_core::backend::RowWindow;
use frugal_core::ops::{Resize, ResizeMode};
use frugal_core::Result;

use super::{in_row, need_dims, need_rows, rows, split_planes};
use crate::arena::Io;
use crate::fail;
use crate::par::Par;

/// Floats of column taps per output column.
fn per_col(op: &Resize) -> usize {
    match op.mode {
        ResizeMode::Nearest => 1,
        ResizeMode::Linear => 3,
    }
}

/// Scratch floats: the column taps of one output row.
pub(crate) fn workspace(op: &Resize, y: &RowWindow) -> usize {
    let (_, _, w) = y.geometry();
    w * per_col(op)
}

/// Input taps and weight of the second along axis `a` (core's single definition).
#[inline]
fn taps(op: &Resize, a: usize, o: usize, len: usize) -> (usize, usize, f32) {
    op.taps(a, o, len)
}

// Column indices live in f32 scratch as their bit patterns (exact for any u32).
fn to_slot(i: usize) -> f32 {
    f32::from_bits(i as u32)
}

fn from_slot(v: f32) -> usize {
    v.to_bits() as usize
}

/// Resizes producing rows `y.first_row .. y.first_row + y.rows`.
pub(crate) fn resize(
    op: &Resize,
    x: &RowWindow,
    y: &RowWindow,
    io: Io<'_>,
    par: Par<'_>,
) -> Result<()> {
    let xd = x.dims.as_slice();
    if xd.len() != 4 || xd[3] > u32::MAX as usize {
        return Err(fail("resize", format!("expects a 4-D input, got {xd:?}")));
    }
    need_dims("resize", "output", &y.dims, &[xd[0], xd[1], op.size[0], op.size[1]])?;
    let (planes, h, w) = x.geometry();
    let (mut lo, mut hi) = (usize::MAX, 0);
    for oy in rows(y) {
        let (i0, i1, _) = taps(op, 0, oy, h);
        (lo, hi) = (lo.min(i0), hi.max(i1 + 1));
    }
    need_rows("resize", x, lo, hi)?;
    let ow = op.size[1];
    let Io { src, out, out_base, scratch } = io;
    let cols =
        scratch.get_mut(..ow * per_col(op)).ok_or_else(|| fail("resize", "scratch too small"))?;
    for (ox, c) in cols.chunks_exact_mut(per_col(op)).enumerate() {
        let (i0, i1, wx) = taps(op, 1, ox, w);
        c[0] = to_slot(i0);
        if let [_, s1, sw] = c {
            (*s1, *sw) = (to_slot(i1), wx);
        }
    }
    let cols = &*cols;
    let work = 4 * planes * y.rows * ow * per_col(op);
    split_planes("resize", y, out, out_base, par, work, |p, ring| {
        for oy in rows(y) {
            let (y0, y1, wy) = taps(op, 0, oy, h);
            let (r0, r1) = (in_row(src, x, p, y0), in_row(src, x, p, y1));
            let out = &mut ring[y.slot(oy) * y.row_stride..][..ow];
            match op.mode {
                ResizeMode::Nearest => {
                    out.iter_mut().zip(cols).for_each(|(o, &c)| *o = r0[from_slot(c)]);
                }
                ResizeMode::Linear => {
                    for (o, c) in out.iter_mut().zip(cols.chunks_exact(3)) {
                        let (i0, i1, wx) = (from_slot(c[0]), from_slot(c[1]), c[2]);
                        let top = r0[i0] * (1.0 - wx) + r0[i1] * wx;
                        let bottom = r1[i0] * (1.0 - wx) + r1[i1] * wx;
                        *o = (1.0 - wy) * top + wy * bottom;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use frugal_core::backend::{Kernel, RowWindow};
    use frugal_core::ops::{CoordMode, NearestMode, Resize, ResizeMode};

    use crate::ops::testutil::*;

    fn rz(
        mode: ResizeMode,
        coord: CoordMode,
        nearest: NearestMode,
        xd: [usize; 4],
        size: [usize; 2],
    ) -> Resize {
        let scales = [size[0] as f32 / xd[2] as f32, size[1] as f32 / xd[3] as f32];
        Resize { mode, coord, nearest, scales, size }
    }

    /// ONNX's coordinate transform, written out again.
    fn coord(op: &Resize, a: usize, o: usize, len_in: usize) -> f32 {
        let (s, out, x) = (op.scales[a], op.size[a], o as f32);
        match op.coord {
            CoordMode::HalfPixel => (x + 0.5) / s - 0.5,
            CoordMode::PytorchHalfPixel if out > 1 => (x + 0.5) / s - 0.5,
            CoordMode::PytorchHalfPixel => 0.0,
            CoordMode::AlignCorners if out == 1 => 0.0,
            CoordMode::AlignCorners => x * (len_in - 1) as f32 / (out - 1) as f32,
            CoordMode::Asymmetric => x / s,
            CoordMode::TfHalfPixelForNearest => (x + 0.5) / s,
        }
    }

    /// (first index, second index, weight of the second).
    fn taps(op: &Resize, a: usize, o: usize, len_in: usize) -> (usize, usize, f64) {
        let c = coord(op, a, o, len_in);
        let last = len_in as f32 - 1.0;
        match op.mode {
            ResizeMode::Nearest => {
                let r = match op.nearest {
                    NearestMode::RoundPreferFloor if c.fract() == 0.5 => c.floor(),
                    NearestMode::RoundPreferFloor | NearestMode::RoundPreferCeil => c.round(),
                    NearestMode::Floor => c.floor(),
                    NearestMode::Ceil => c.ceil(),
                };
                let i = r.clamp(0.0, last) as usize;
                (i, i, 0.0)
            }
            ResizeMode::Linear => {
                let c = c.clamp(0.0, last);
                let i0 = c.floor() as usize;
                ((i0), (i0 + 1).min(len_in - 1), (c - i0 as f32) as f64)
            }
        }
    }

    fn reference(op: &Resize, xd: &[usize], x: &[f32]) -> Vec<f32> {
        let (h, w) = (xd[2], xd[3]);
        let mut y = Vec::new();
        for p in 0..xd[0] * xd[1] {
            let at = |r: usize, c: usize| x[(p * h + r) * w + c] as f64;
            for oy in 0..op.size[0] {
                let (y0, y1, wy) = taps(op, 0, oy, h);
                for ox in 0..op.size[1] {
                    let (x0, x1, wx) = taps(op, 1, ox, w);
                    let top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx;
                    let bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx;
                    y.push((top * (1.0 - wy) + bottom * wy) as f32);
                }
            }
        }
        y
    }

    fn cases() -> Vec<(Resize, [usize; 4])> {
        use CoordMode::*;
        use NearestMode::*;
        use ResizeMode::{Linear, Nearest};
        vec![
            (rz(Nearest, Asymmetric, Floor, [1, 2, 4, 5], [8, 10]), [1, 2, 4, 5]),
            (rz(Nearest, HalfPixel, RoundPreferFloor, [1, 2, 4, 5], [6, 7]), [1, 2, 4, 5]),
            (
                rz(Nearest, TfHalfPixelForNearest, RoundPreferCeil, [1, 2, 8, 6], [4, 3]),
                [1, 2, 8, 6],
            ),
            (rz(Nearest, AlignCorners, Ceil, [1, 1, 5, 4], [9, 7]), [1, 1, 5, 4]),
            (rz(Linear, HalfPixel, Floor, [2, 2, 4, 5], [8, 10]), [2, 2, 4, 5]),
            (rz(Linear, PytorchHalfPixel, Floor, [1, 3, 5, 4], [1, 7]), [1, 3, 5, 4]),
            (rz(Linear, AlignCorners, Floor, [1, 2, 5, 6], [9, 11]), [1, 2, 5, 6]),
            (rz(Linear, Asymmetric, Floor, [1, 1, 3, 4], [7, 10]), [1, 1, 3, 4]),
            (rz(Linear, HalfPixel, Floor, [1, 2, 9, 8], [4, 3]), [1, 2, 9, 8]),
        ]
    }

    #[test]
    fn resizes_like_onnx_by_bands() {
        for (i, (op, xd)) in cases().into_iter().enumerate() {
            let op = leak(op);
            let yd = [xd[0], xd[1], op.size[0], op.size[1]];
            let x = rand_vec(i as u64, xd.iter().product());
            let need = |lo: usize, hi: usize| {
                let rows = (lo..hi).flat_map(|o| {
                    let (a, b, _) = taps(op, 0, o, xd[2]);
                    [a, b]
                });
                (rows.clone().min().unwrap(), rows.max().unwrap() + 1)
            };
            let got =
                check_bands(&[Input { dims: &xd, data: &x, need: &need }], &[], &yd, |xs, _, y| {
                    Kernel::Resize { op, x: xs[0], y }
                });
            assert_close(&got, &reference(op, &xd, &x), 1e-6, &format!("case {i}: {op:?}"));
        }
    }

    #[test]
    fn matches_candle_upsampling() {
        let xd = [2, 3, 5, 4];
        let x = rand_vec(33, xd.iter().product());
        let t = candle(&xd, &x);
        let run = |op: &Resize| {
            let mut rig = Rig::new();
            let xw = rig.input(&xd, &x);
            let y = rig.whole(&[2, 3, op.size[0], op.size[1]]);
            rig.run(&Kernel::Resize { op, x: xw, y }).unwrap();
            rig.read(&y)
        };
        let nearest =
            rz(ResizeMode::Nearest, CoordMode::Asymmetric, NearestMode::Floor, xd, [10, 12]);
        assert_bits(
            &run(&nearest),
            &values(&t.upsample_nearest2d(10, 12).unwrap()),
            "nearest x2, x3",
        );
        for (coord, corners) in
            [(CoordMode::PytorchHalfPixel, false), (CoordMode::AlignCorners, true)]
        {
            let op = rz(ResizeMode::Linear, coord, NearestMode::Floor, xd, [10, 8]);
            let theirs = t.upsample_bilinear2d(10, 8, corners).unwrap();
            assert_close(&run(&op), &values(&theirs), 1e-5, &format!("bilinear {coord:?}"));
        }
    }

    #[test]
    fn rejects_missing_rows_and_bad_sizes() {
        let op =
            rz(ResizeMode::Linear, CoordMode::HalfPixel, NearestMode::Floor, [1, 1, 4, 4], [8, 8]);
        let x = rand_vec(4, 16);
        let mut rig = Rig::new();
        let ring = rig.ring(&[1, 1, 4, 4], 2);
        // Output row 3 interpolates input rows 1 and 2.
        let y = rig.whole(&[1, 1, 8, 8]);
        let band = RowWindow { first_row: 3, rows: 1, ..y };
        let held = rig.put_rows(&ring, &x, 1, 3);
        assert!(rig.run(&Kernel::Resize { op: &op, x: held, y: band }).is_ok());
        let held = rig.put_rows(&ring, &x, 2, 4);
        assert!(rig.run(&Kernel::Resize { op: &op, x: held, y: band }).is_err());
        let xw = rig.input(&[1, 1, 4, 4], &x);
        let wrong = rig.whole(&[1, 1, 8, 7]);
        assert!(rig.run(&Kernel::Resize { op: &op, x: xw, y: wrong }).is_err());
    }
}
