//! Dense layers on the gemm engine: Gemm (`alpha * A'B' + beta * C`) and MatMul with numpy
//! batch broadcasting. A constant B is packed into gemm panels once by `prepare`; an activation
//! B is packed into scratch per batch matrix. A is read in place, a contiguous run of ring rows
//! at a time, and output row `i` only reads row `i` of A (Gemm without transA, MatMul of
//! matrices), so those can be produced by bands: the engine's per-element order does not
//! depend on how many rows a call has.

use frugal_core::backend::{Dims, Operand, RowWindow, WeightRef, MAX_RANK};
use frugal_core::ops::{Gemm, MatMul};
use frugal_core::Result;

use super::{need_dims, need_rows, need_whole, set_packed, unravel, weight_f32, Flat, Opd};
use crate::arena::{Io, Src};
use crate::gemm::{self, Isa, MatA};
use crate::par::SharedMut;
use crate::{fail, CpuBackend, Ctx};

/// `(K, N)` of Gemm's B as multiplied: `[K, N]`, or `[N, K]` given transposed.
fn gemm_kn(op: &Gemm, bd: &Dims) -> Result<(usize, usize)> {
    match bd.as_slice() {
        &[r, c] => Ok(if op.trans_b { (c, r) } else { (r, c) }),
        d => Err(fail("gemm", format!("B must be 2-D, got {d:?}"))),
    }
}

/// Packs Gemm's constant B.
pub(crate) fn prepare_gemm(be: &mut CpuBackend, op: &Gemm, b: &WeightRef) -> Result<()> {
    let (k, n) = gemm_kn(op, &b.dims)?;
    let data = weight_f32(be, b.id, "gemm")?;
    if data.len() != k * n {
        return Err(fail("gemm", format!("B holds {} values for {:?}", data.len(), b.dims)));
    }
    let (rs, cs) = if op.trans_b { (1, k) } else { (n, 1) };
    let mut packed = vec![0.0; gemm::packed_len(k, n)];
    gemm::pack_b(data, rs, cs, k, n, &mut packed);
    set_packed(be, b.id, packed, "gemm")
}

/// The longest run of rows `r..r1` of plane `p` of `w` that is contiguous in its ring, as a
/// gemm A operand of `k` columns.
fn ring_run<'a>(
    src: Src<'a>,
    w: &RowWindow,
    p: usize,
    r: usize,
    r1: usize,
    k: usize,
) -> (usize, MatA<'a>) {
    let len = (r1 - r).min(w.capacity - r % w.capacity);
    let data = src.slice(w.row_start(p, r), (len - 1) * w.row_stride + k);
    (len, MatA::strided(data, w.row_stride, 1))
}

/// Gemm's C broadcast to `[M, N]`: element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct CView<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

fn c_view(data: &[f32], dims: Dims, m: usize, n: usize) -> Result<CView<'_>> {
    let (cm, cn) = match dims.as_slice() {
        &[] => (1, 1),
        &[c] => (1, c),
        &[r, c] => (r, c),
        d => return Err(fail("gemm", format!("C must have at most 2 axes, got {d:?}"))),
    };
    if (cm != 1 && cm != m) || (cn != 1 && cn != n) {
        return Err(fail("gemm", format!("C {dims:?} does not broadcast to [{m}, {n}]")));
    }
    Ok(CView { data, rs: if cm == 1 { 0 } else { cn }, cs: usize::from(cn != 1) })
}

/// Gemm producing output rows `y.first_row .. y.first_row + y.rows`.
pub(crate) fn gemm(
    op: &Gemm,
    a: &RowWindow,
    b: Opd<'_>,
    c: Option<(&[f32], Dims)>,
    y: &RowWindow,
    io: Io<'_>,
    ctx: Ctx<'_>,
) -> Result<()> {
    let Ctx { isa, par, .. } = ctx;
    let Opd::Const { dims: bd, packed, .. } = b else {
        return Err(fail("gemm", "B must be a constant"));
    };
    let (k, n) = gemm_kn(op, &bd)?;
    let (m, ka) = match a.dims.as_slice() {
        &[r, c] => {
            if op.trans_a {
                (c, r)
            } else {
                (r, c)
            }
        }
        d => return Err(fail("gemm", format!("A must be 2-D, got {d:?}"))),
    };
    if ka != k {
        return Err(fail("gemm", format!("inner dims differ: A {:?}, B {bd:?}", a.dims)));
    }
    need_dims("gemm", "output", &y.dims, &[m, n])?;
    let cv = c.map(|(d, dims)| c_view(d, dims, m, n)).transpose()?;
    let packed = packed
        .filter(|p| p.len() == gemm::packed_len(k, n))
        .ok_or_else(|| fail("gemm", "B was not packed (prepare not called)"))?;
    let (r0, r1) = (y.first_row, y.first_row + y.rows);
    if op.trans_a {
        need_whole("gemm", a)?;
    } else {
        need_rows("gemm", a, r0, r1)?;
    }
    let Io { src, out, out_base, .. } = io;
    // Threads take column panels of B (a classifier's 1 x 1280 x 1000 product is a stream of
    // 5 MB of weights): each column's sum is the same chain wherever its panel goes.
    let par = par.for_work(2 * y.rows * n * k);
    let panels = n.div_ceil(gemm::NR);
    let per = par.split(panels, 1);
    let out_len = out.len();
    let out = SharedMut::new(out);
    let row_end = |row: usize| y.row_start(0, row) - out_base + n;
    if r1 > r0 && (r0..r1).map(row_end).max().unwrap_or(0) > out_len {
        return Err(fail("gemm", "output rows outside the output window"));
    }
    par.each(panels.div_ceil(per), |t| {
        let (j0, j1) = (t * per * gemm::NR, ((t + 1) * per * gemm::NR).min(n));
        let part = &packed[j0 * k..];
        let mut r = r0;
        while r < r1 {
            let (len, amat) = if op.trans_a {
                // A'(i, k) = A[k][i]: column r of the whole, unwrapped A onwards.
                let data = src.slice(a.row_start(0, 0) + r, (k - 1) * a.row_stride + r1 - r);
                (r1 - r, MatA::strided(data, 1, a.row_stride))
            } else {
                ring_run(src, a, 0, r, r1, k)
            };
            gemm::gemm(isa, len, j1 - j0, k, amat, part, Default::default(), |i, j, vals| {
                let (row, j) = (r + i, j0 + j);
                let at = y.row_start(0, row) - out_base + j;
                // SAFETY: columns j0..j1 of the output rows are this task's alone, inside
                // `out` (checked above), which stays mutably borrowed.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(at), vals.len()) };
                match cv {
                    Some(cv) => {
                        for (t, (o, &v)) in dst.iter_mut().zip(vals).enumerate() {
                            *o = op.alpha * v + op.beta * cv.data[row * cv.rs + (j + t) * cv.cs];
                        }
                    }
                    None => dst.iter_mut().zip(vals).for_each(|(o, &v)| *o = op.alpha * v),
                }
                if let Some(act) = &op.act {
                    act.apply_slice(dst);
                }
            });
            r += len;
        }
    });
    Ok(())
}

/// MatMul shapes: operands promoted to matrices, batch axes broadcast.
struct MmGeo {
    m: usize,
    k: usize,
    n: usize,
    batch: [usize; MAX_RANK],
    nb: usize,
    /// Plane stride of A and B along each batch axis (0 where broadcast).
    astr: [usize; MAX_RANK],
    bstr: [usize; MAX_RANK],
    /// Output rows are rows of A (both operands are matrices).
    by_rows: bool,
}

/// `(rows, cols, batch axes)` of a MatMul operand; a 1-D A is a row, a 1-D B a column.
fn as_matrix(d: &Dims, left: bool) -> (usize, usize, &[usize]) {
    let s = d.as_slice();
    match s.len() {
        0 => (1, 1, s),
        1 if left => (1, s[0], &s[..0]),
        1 => (s[0], 1, &s[..0]),
        r => (s[r - 2], s[r - 1], &s[..r - 2]),
    }
}

fn mm_geo(ad: &Dims, bd: &Dims, yd: &Dims) -> Result<MmGeo> {
    let bad = |why: &str| fail("matmul", format!("{why}: {ad:?} x {bd:?} -> {yd:?}"));
    let ((m, k, ab), (k2, n, bb)) = (as_matrix(ad, true), as_matrix(bd, false));
    if ad.rank() == 0 || bd.rank() == 0 || k != k2 {
        return Err(bad("inner dims differ"));
    }
    let nb = ab.len().max(bb.len());
    let mut g = MmGeo {
        m,
        k,
        n,
        batch: [1; MAX_RANK],
        nb,
        astr: [0; MAX_RANK],
        bstr: [0; MAX_RANK],
        by_rows: ad.rank() >= 2 && bd.rank() >= 2,
    };
    for (side, strides) in [(ab, &mut g.astr), (bb, &mut g.bstr)] {
        let mut acc = 1;
        for (j, &d) in side.iter().enumerate().rev() {
            let o = j + nb - side.len();
            if d != 1 {
                if g.batch[o] != 1 && g.batch[o] != d {
                    return Err(bad("batch axes do not broadcast"));
                }
                (g.batch[o], strides[o]) = (d, acc);
            }
            acc *= d;
        }
    }
    let mut want = [0; MAX_RANK + 2];
    want[..nb].copy_from_slice(&g.batch[..nb]);
    let mut r = nb;
    for (keep, d) in [(ad.rank() > 1, m), (bd.rank() > 1, n)] {
        if keep {
            want[r] = d;
            r += 1;
        }
    }
    if yd.as_slice() != &want[..r] {
        return Err(bad("output shape"));
    }
    Ok(g)
}

/// Packs B's batch matrices for a constant B.
pub(crate) fn prepare_matmul(be: &mut CpuBackend, b: &WeightRef) -> Result<()> {
    let (k, n, batch) = as_matrix(&b.dims, false);
    let planes: usize = batch.iter().product();
    let data = weight_f32(be, b.id, "matmul")?;
    if data.len() != planes * k * n {
        return Err(fail("matmul", format!("B holds {} values for {:?}", data.len(), b.dims)));
    }
    let plen = gemm::packed_len(k, n);
    let mut packed = vec![0.0; planes * plen];
    for (p, dst) in packed.chunks_exact_mut(plen.max(1)).enumerate() {
        gemm::pack_b(&data[p * k * n..], n, 1, k, n, dst);
    }
    set_packed(be, b.id, packed, "matmul")
}

/// Scratch floats: one packed batch matrix of an activation B.
pub(crate) fn matmul_workspace(b: &Operand) -> usize {
    match b {
        Operand::Arena(w) => {
            let (k, n, _) = as_matrix(&w.dims, false);
            gemm::packed_len(k, n)
        }
        Operand::Weight(_) => 0,
    }
}

/// MatMul producing the output rows of `y` (any rows when both operands are matrices, else
/// the whole output).
pub(crate) fn matmul(
    op: &MatMul,
    a: Opd<'_>,
    b: Opd<'_>,
    y: &RowWindow,
    io: Io<'_>,
    isa: Isa,
) -> Result<()> {
    let g = mm_geo(&a.dims(), &b.dims(), &y.dims)?;
    let (r0, r1) = if g.by_rows { (y.first_row, y.first_row + y.rows) } else { (0, g.m) };
    if !g.by_rows {
        need_whole("matmul", y)?;
    }
    if let Opd::Rows(w) = &a {
        let (lo, hi) = if a.dims().rank() >= 2 { (r0, r1) } else { (0, 1) };
        need_rows("matmul", w, lo, hi)?;
    }
    if let Opd::Rows(w) = &b {
        need_whole("matmul", w)?;
    }
    let plen = gemm::packed_len(g.k, g.n);
    let Io { src, out, out_base, scratch } = io;
    let fy = Flat::new(y);
    let (mut idx, mut packed_plane) = ([0; MAX_RANK], usize::MAX);
    for bi in 0..g.batch[..g.nb].iter().product() {
        unravel(bi, &g.batch[..g.nb], &mut idx);
        let dot = |s: &[usize; MAX_RANK]| -> usize { idx.iter().zip(s).map(|(i, s)| i * s).sum() };
        let (pa, pb) = (dot(&g.astr), dot(&g.bstr));
        let packed: &[f32] = match b {
            Opd::Const { packed: Some(p), .. } => p
                .get(pb * plen..(pb + 1) * plen)
                .ok_or_else(|| fail("matmul", "packed B has the wrong size"))?,
            Opd::Const { packed: None, .. } => {
                return Err(fail("matmul", "B was not packed (prepare not called)"))
            }
            Opd::Rows(w) => {
                let s =
                    scratch.get_mut(..plen).ok_or_else(|| fail("matmul", "scratch too small"))?;
                if pb != packed_plane {
                    // A 1-D B is one row holding a column: B[k][0] = row[k].
                    let (rs, len) = if b.dims().rank() >= 2 {
                        (w.row_stride, (g.k - 1) * w.row_stride + g.n)
                    } else {
                        (1, g.k)
                    };
                    gemm::pack_b(src.slice(w.row_start(pb, 0), len), rs, 1, g.k, g.n, s);
                    packed_plane = pb;
                }
                s
            }
        };
        let mut r = r0;
        while r < r1 {
            let (len, amat) = match a {
                Opd::Rows(w) => ring_run(src, &w, pa, r, r1, g.k),
                Opd::Const { data, .. } => {
                    (r1 - r, MatA::strided(&data[(pa * g.m + r) * g.k..], g.k, 1))
                }
            };
            gemm::gemm(isa, len, g.n, g.k, amat, packed, Default::default(), |i, j, vals| {
                // The row-major index of (bi, i, j) is the same in the output (promoted axes are 1).
                let (at, _) = fy.at((bi * g.m + r + i) * g.n + j);
                let dst = &mut out[at - out_base..][..vals.len()];
                dst.copy_from_slice(vals);
                if let Some(act) = &op.act {
                    act.apply_slice(dst);
                }
            });
            r += len;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use frugal_core::backend::{Kernel, Operand, RowWindow};
    use frugal_core::ops::{Activation, Gemm, MatMul};

    use crate::ops::testutil::*;

    fn gemm_ref(
        op: &Gemm,
        (m, k, n): (usize, usize, usize),
        a: &[f32],
        b: &[f32],
        c: Option<(&[usize], &[f32])>,
    ) -> Vec<f32> {
        let mut y = Vec::new();
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|t| {
                        let av = if op.trans_a { a[t * m + i] } else { a[i * k + t] };
                        let bv = if op.trans_b { b[j * k + t] } else { b[t * n + j] };
                        av as f64 * bv as f64
                    })
                    .sum();
                let cv = c.map_or(0.0, |(cd, cv)| {
                    let cd: Vec<usize> =
                        std::iter::repeat_n(1, 2 - cd.len()).chain(cd.iter().copied()).collect();
                    cv[if cd[0] == 1 { 0 } else { i * cd[1] } + if cd[1] == 1 { 0 } else { j }]
                        as f64
                });
                let v = (op.alpha as f64 * dot + op.beta as f64 * cv) as f32;
                y.push(op.act.map_or(v, |act| act.apply(v)));
            }
        }
        y
    }

    #[test]
    fn gemm_follows_onnx_by_bands() {
        let c_shapes: [&[usize]; 7] = [&[], &[1], &[0], &[1, 0], &[2, 1], &[2, 0], &[1, 1]];
        let mut case = 0u64;
        for (m, k, n) in [(1, 37, 10), (7, 33, 17), (13, 40, 5), (6, 1, 16)] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                // 0 stands for N and 2 for M in `c_shapes`.
                for cs in c_shapes
                    .iter()
                    .map(|s| {
                        s.iter()
                            .map(|&d| match d {
                                0 => n,
                                2 => m,
                                d => d,
                            })
                            .collect::<Vec<_>>()
                    })
                    .map(Some)
                    .chain([None])
                {
                    case += 1;
                    let act = if case.is_multiple_of(2) { Some(Activation::Relu) } else { None };
                    let op = leak(Gemm {
                        alpha: if case.is_multiple_of(3) { 1.0 } else { 0.75 },
                        beta: if case.is_multiple_of(4) { 1.0 } else { -1.5 },
                        trans_a: ta,
                        trans_b: tb,
                        act,
                    });
                    let (ad, bd) =
                        (if ta { [k, m] } else { [m, k] }, if tb { [n, k] } else { [k, n] });
                    let (a, b) = (rand_vec(case, m * k), rand_vec(1000 + case, k * n));
                    let c = cs
                        .as_ref()
                        .map(|d| (d.as_slice(), rand_vec(2000 + case, d.iter().product())));
                    let need_all = all_rows(ad[0]);
                    let need: &Need<'_> = if ta { &need_all } else { &same_rows };
                    let mut weights: Vec<(&[usize], &[f32])> = vec![(&bd, &b)];
                    if let Some((d, v)) = &c {
                        weights.push((d, v));
                    }
                    let with_c = c.is_some();
                    let got = check_bands(
                        &[Input { dims: &ad, data: &a, need }],
                        &weights,
                        &[m, n],
                        |xs, ws, y| Kernel::Gemm {
                            op,
                            a: xs[0],
                            b: ws[0],
                            c: with_c.then(|| ws[1]),
                            y,
                        },
                    );
                    let want = gemm_ref(
                        op,
                        (m, k, n),
                        &a,
                        &b,
                        c.as_ref().map(|(d, v)| (*d, v.as_slice())),
                    );
                    assert_close(&got, &want, 1e-5, &format!("{op:?} {m}x{k}x{n} C {cs:?}"));
                }
            }
        }
    }

    #[test]
    fn gemm_matches_candle() {
        let (m, k, n) = (9, 70, 21);
        let (a, b, c) = (rand_vec(1, m * k), rand_vec(2, k * n), rand_vec(3, n));
        let op = Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false, act: None };
        let mut rig = Rig::new();
        let (aw, bw, cw) = (rig.input(&[m, k], &a), rig.weight(&[k, n], &b), rig.weight(&[n], &c));
        let y = rig.whole(&[m, n]);
        rig.run(&Kernel::Gemm { op: &op, a: aw, b: bw, c: Some(cw), y }).unwrap();
        let theirs = candle(&[m, k], &a)
            .matmul(&candle(&[k, n], &b))
            .unwrap()
            .broadcast_add(&candle(&[n], &c))
            .unwrap();
        assert_close(&rig.read(&y), &values(&theirs), 1e-5, "gemm");
    }

    #[test]
    fn threads_split_gemm_columns_with_the_same_bits() {
        // A classifier-like product (one row, many panels, C and an activation) and a taller
        // one, on 1 and 3 threads: the columns' panels go to different threads.
        for (m, k, n) in [(1, 300, 1000), (5, 64, 70)] {
            let (a, b, c) = (rand_vec(7, m * k), rand_vec(8, k * n), rand_vec(9, n));
            let op = Gemm {
                alpha: 0.5,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
                act: Some(Activation::Relu),
            };
            let outs: Vec<Vec<f32>> = [1, 3]
                .into_iter()
                .map(|t| {
                    let mut rig = Rig::with(crate::CpuBackend::with_threads(t).unwrap());
                    let (aw, bw, cw) =
                        (rig.input(&[m, k], &a), rig.weight(&[k, n], &b), rig.weight(&[n], &c));
                    let y = rig.whole(&[m, n]);
                    rig.run(&Kernel::Gemm { op: &op, a: aw, b: bw, c: Some(cw), y }).unwrap();
                    rig.read(&y)
                })
                .collect();
            assert_bits(&outs[1], &outs[0], &format!("{m}x{k}x{n} on 3 threads"));
            let want = gemm_ref(&op, (m, k, n), &a, &b, Some((&[n], &c)));
            assert_close(&outs[0], &want, 1e-4, "threaded gemm");
        }
    }

    #[test]
    fn the_portable_kernel_gives_the_same_products() {
        let (m, k, n) = (11, 29, 19);
        let (a, b) = (rand_vec(5, m * k), rand_vec(6, k * n));
        let want = gemm_ref(
            &Gemm { alpha: 1.0, beta: 0.0, trans_a: false, trans_b: false, act: None },
            (m, k, n),
            &a,
            &b,
            None,
        );
        let mut rig = Rig::with(crate::CpuBackend::with_isa(crate::Isa::Generic));
        let (aw, bw) = (rig.input(&[m, k], &a), rig.input(&[k, n], &b));
        let y = rig.whole(&[m, n]);
        let op = MatMul { act: None };
        rig.run(&Kernel::MatMul { op: &op, a: Operand::Arena(aw), b: Operand::Arena(bw), y })
            .unwrap();
        assert_close(&rig.read(&y), &want, 1e-5, "generic matmul");
        // Bands of rows are bit-identical on this kernel too.
        let y2 = rig.whole(&[m, n]);
        for (lo, hi) in [(0, 1), (1, 7), (7, 11)] {
            let band = RowWindow { first_row: lo, rows: hi - lo, ..y2 };
            rig.run(&Kernel::MatMul {
                op: &op,
                a: Operand::Arena(aw),
                b: Operand::Arena(bw),
                y: band,
            })
            .unwrap();
        }
        assert_bits(&rig.read(&y2), &rig.read(&y), "generic bands");
    }

    #[test]
    fn gemm_errors() {
        let op = Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false, act: None };
        let mut rig = Rig::new();
        let a = rig.input(&[4, 3], &rand_vec(1, 12));
        let b = rig.weight(&[3, 5], &rand_vec(2, 15));
        let y = rig.whole(&[4, 5]);
        // Not packed: execute without prepare.
        let k = Kernel::Gemm { op: &op, a, b, c: None, y };
        assert!(frugal_core::Backend::execute(&mut rig.be, &k, Default::default()).is_err());
        let bad_c = rig.weight(&[3], &[0.0; 3]);
        assert!(rig.run(&Kernel::Gemm { op: &op, a, b, c: Some(bad_c), y }).is_err());
        let bad_b = rig.weight(&[4, 5], &[0.0; 20]);
        assert!(rig.run(&Kernel::Gemm { op: &op, a, b: bad_b, c: None, y }).is_err());
        let part = RowWindow { first_row: 0, rows: 2, ..a };
        assert!(rig.run(&Kernel::Gemm { op: &op, a: part, b, c: None, y }).is_err());
        // The same constant used with another layout.
        let tb = Gemm { trans_b: true, ..op.clone() };
        let sq = rig.weight(&[3, 3], &rand_vec(3, 9));
        let y3 = rig.whole(&[4, 3]);
        assert!(rig.run(&Kernel::Gemm { op: &op, a, b: sq, c: None, y: y3 }).is_ok());
        assert!(rig.run(&Kernel::Gemm { op: &tb, a, b: sq, c: None, y: y3 }).is_err());
    }

    fn matmul_ref(ad: &[usize], a: &[f32], bd: &[usize], b: &[f32], yd: &[usize]) -> Vec<f32> {
        // Promote, broadcast batches, multiply, in f64.
        let a2: Vec<usize> = if ad.len() == 1 { vec![1, ad[0]] } else { ad.to_vec() };
        let b2: Vec<usize> = if bd.len() == 1 { vec![bd[0], 1] } else { bd.to_vec() };
        let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
        let batch =
            frugal_core::ops::eltwise::broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])
                .unwrap();
        let plane = |d: &[usize], idx: &[usize]| -> usize {
            let d = &d[..d.len() - 2];
            let s = row_major(d);
            (0..d.len())
                .map(|t| if d[t] == 1 { 0 } else { idx[t + idx.len() - d.len()] * s[t] })
                .sum()
        };
        let mut y = Vec::new();
        for bi in 0..batch.iter().product() {
            let idx = index_of(bi, &batch);
            let (pa, pb) = (plane(&a2, &idx), plane(&b2, &idx));
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 = (0..k)
                        .map(|t| a[(pa * m + i) * k + t] as f64 * b[(pb * k + t) * n + j] as f64)
                        .sum();
                    y.push(dot as f32);
                }
            }
        }
        assert_eq!(y.len(), yd.iter().product::<usize>());
        y
    }

    const MM: [(&[usize], &[usize]); 10] = [
        (&[3, 4], &[4, 5]),
        (&[2, 3, 4], &[4, 5]),
        (&[2, 3, 4], &[2, 4, 5]),
        (&[2, 1, 3, 4], &[5, 4, 6]),
        (&[1, 7, 33], &[33, 17]),
        (&[4], &[4, 6]),
        (&[3, 4], &[4]),
        (&[4], &[4]),
        (&[2, 3, 4], &[4]),
        (&[4], &[2, 4, 5]),
    ];

    #[test]
    fn matmul_broadcasts_batches_by_bands() {
        for (case, &(ad, bd)) in MM.iter().enumerate() {
            let yd = MatMul { act: None }.infer(ad, bd).unwrap();
            let (a, b) = (
                rand_vec(case as u64, ad.iter().product()),
                rand_vec(50 + case as u64, bd.iter().product()),
            );
            let want = matmul_ref(ad, &a, bd, &b, &yd);
            let by_rows = ad.len() >= 2 && bd.len() >= 2;
            let h = |d: &[usize]| frugal_core::Dims::new(d).unwrap().rows().1;
            for (wa, wb) in [(false, true), (false, false), (true, false)] {
                let op = leak(MatMul { act: Some(Activation::LeakyRelu { alpha: 0.5 }) });
                let want: Vec<f32> = want.iter().map(|&v| op.act.unwrap().apply(v)).collect();
                let make = |xs: &[RowWindow], ws: &[frugal_core::WeightRef], y| {
                    let a = if wa { Operand::Weight(ws[0]) } else { Operand::Arena(xs[0]) };
                    let b = if wb {
                        Operand::Weight(ws[usize::from(wa)])
                    } else {
                        Operand::Arena(xs[usize::from(!wa)])
                    };
                    (a, b, y)
                };
                let what = format!("{ad:?} x {bd:?}, weights {wa} {wb}");
                if by_rows || h(&yd) == 1 {
                    let (need_b, need_a) = (all_rows(h(bd)), all_rows(h(ad)));
                    let mut inputs = Vec::new();
                    let mut weights: Vec<(&[usize], &[f32])> = Vec::new();
                    let na: &Need<'_> = if by_rows { &same_rows } else { &need_a };
                    for (is_w, d, v, need) in [(wa, ad, &a, na), (wb, bd, &b, &need_b as &Need<'_>)]
                    {
                        if is_w {
                            weights.push((d, v.as_slice()));
                        } else {
                            inputs.push(Input { dims: d, data: v, need });
                        }
                    }
                    let got = check_bands(&inputs, &weights, &yd, |xs, ws, y| {
                        let (a, b, y) = make(xs, ws, y);
                        Kernel::MatMul { op, a, b, y }
                    });
                    assert_close(&got, &want, 1e-5, &what);
                } else {
                    let mut rig = Rig::new();
                    let mut xs = Vec::new();
                    let mut ws = Vec::new();
                    for (is_w, d, v) in [(wa, ad, &a), (wb, bd, &b)] {
                        if is_w {
                            ws.push(rig.weight(d, v));
                        } else {
                            xs.push(rig.input(d, v));
                        }
                    }
                    let y = rig.whole(&yd);
                    let (ka, kb, _) = make(&xs, &ws, y);
                    rig.run(&Kernel::MatMul { op, a: ka, b: kb, y }).unwrap();
                    assert_close(&rig.read(&y), &want, 1e-5, &what);
                    let band = RowWindow { rows: 1, ..y };
                    assert!(
                        rig.run(&Kernel::MatMul { op, a: ka, b: kb, y: band }).is_err(),
                        "{what}: band of a vector product"
                    );
                }
            }
        }
    }

    #[test]
    fn matmul_matches_candle() {
        for (case, (ad, bd)) in [
            ([3, 4].as_slice(), [4, 5].as_slice()),
            (&[2, 3, 4], &[2, 4, 5]),
            (&[2, 1, 3, 4], &[5, 4, 6]),
            (&[2, 5, 8], &[8, 3]),
        ]
        .into_iter()
        .enumerate()
        {
            let yd = MatMul { act: None }.infer(ad, bd).unwrap();
            let (a, b) = (
                rand_vec(70 + case as u64, ad.iter().product()),
                rand_vec(80 + case as u64, bd.iter().product()),
            );
            let mut rig = Rig::new();
            let (aw, bw) = (rig.input(ad, &a), rig.input(bd, &b));
            let y = rig.whole(&yd);
            let op = MatMul { act: None };
            rig.run(&Kernel::MatMul { op: &op, a: Operand::Arena(aw), b: Operand::Arena(bw), y })
                .unwrap();
            let theirs = candle(ad, &a).broadcast_matmul(&candle(bd, &b)).unwrap();
            assert_close(&rig.read(&y), &values(&theirs), 1e-5, &format!("{ad:?} x {bd:?}"));
        }
    }

    #[test]
    fn matmul_errors() {
        let op = MatMul { act: None };
        let mut rig = Rig::new();
        let a = rig.input(&[2, 3, 4], &rand_vec(1, 24));
        let b = rig.input(&[3, 4, 5], &rand_vec(2, 60));
        let y = rig.whole(&[2, 3, 5]);
        assert!(rig
            .run(&Kernel::MatMul { op: &op, a: Operand::Arena(a), b: Operand::Arena(b), y })
            .is_err());
        let b = rig.input(&[4, 5], &rand_vec(2, 20));
        let y6 = rig.whole(&[2, 3, 6]);
        assert!(rig
            .run(&Kernel::MatMul { op: &op, a: Operand::Arena(a), b: Operand::Arena(b), y: y6 })
            .is_err());
        let part = RowWindow { first_row: 1, rows: 3, ..b };
        assert!(rig
            .run(&Kernel::MatMul { op: &op, a: Operand::Arena(a), b: Operand::Arena(part), y })
            .is_err());
        assert!(rig
            .run(&Kernel::MatMul { op: &op, a: Operand::Arena(a), b: Operand::Arena(b), y })
            .is_ok());
    }
}
