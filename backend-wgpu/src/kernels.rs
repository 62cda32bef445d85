//! Kernel calls to shader launches: the checks the CPU backend makes (shapes, the rows each
//! input window must hold), then the parameter block each shader reads (layouts documented at
//! the top of each `.wgsl` file).

use frugal_core::backend::{Dims, Kernel, Operand, RowWindow, MAX_RANK};
use frugal_core::ops::conv::conv_out_len;
use frugal_core::ops::{Activation, BinaryKind, PoolKind, ReduceKind, ResizeMode};
use frugal_core::{DType, Result};

use crate::{fail, win, Gpu, Launch, Slot};

/// Activation as three words: kind, then two f32 parameters.
fn act(a: Option<&Activation>) -> [u32; 3] {
    let f = |v: f32| v.to_bits();
    match a {
        None => [0, 0, 0],
        Some(Activation::Relu) => [1, 0, 0],
        Some(Activation::Clip { min, max }) => [2, f(*min), f(*max)],
        Some(Activation::LeakyRelu { alpha }) => [3, f(*alpha), 0],
        Some(Activation::Sigmoid) => [4, 0, 0],
        Some(Activation::HardSigmoid { alpha, beta }) => [5, f(*alpha), f(*beta)],
        Some(Activation::HardSwish) => [6, 0, 0],
        Some(Activation::Tanh) => [7, 0, 0],
        Some(Activation::Erf) => [8, 0, 0],
    }
}

fn check_window(family: &str, w: &RowWindow) -> Result<()> {
    w.malformed().map_or(Ok(()), |m| Err(fail(family, m)))
}

fn need_rows(family: &str, x: &RowWindow, lo: usize, hi: usize) -> Result<()> {
    x.missing(lo, hi).map_or(Ok(()), |m| Err(fail(family, m)))
}

fn need_whole(family: &str, w: &RowWindow) -> Result<()> {
    w.not_whole().map_or(Ok(()), |m| Err(fail(family, m)))
}

fn need_dims(family: &str, what: &str, dims: &Dims, want: &[usize]) -> Result<()> {
    if dims.as_slice() != want {
        return Err(fail(family, format!("{what} has shape {dims:?}, expected {want:?}")));
    }
    Ok(())
}

/// Row-major strides of `dims`.
fn row_major(dims: &[usize]) -> [usize; MAX_RANK] {
    let mut s = [0; MAX_RANK];
    let mut acc = 1;
    for a in (0..dims.len()).rev() {
        s[a] = acc;
        acc *= dims[a];
    }
    s
}

/// Elements of the output window: planes x rows x width.
fn out_len(y: &RowWindow) -> usize {
    let (planes, _, w) = y.geometry();
    planes * y.rows * w
}

fn weight_len(g: &Gpu, family: &str, id: frugal_core::WeightId) -> Result<usize> {
    g.weights
        .get(id.0)
        .map(|(_, n)| *n)
        .ok_or_else(|| fail(family, format!("unknown weight {}", id.0)))
}

/// Every input window of a kernel.
fn inputs<'k>(k: &'k Kernel<'_>) -> Vec<&'k RowWindow> {
    let opd = |o: &'k Operand| match o {
        Operand::Arena(w) => Some(w),
        Operand::Weight(_) => None,
    };
    match k {
        Kernel::Conv { x, r, .. } => std::iter::once(x).chain(r.as_ref()).collect(),
        Kernel::ConvTranspose { x, .. }
        | Kernel::Pool { x, .. }
        | Kernel::GlobalAvgPool { x, .. }
        | Kernel::Affine { x, .. }
        | Kernel::Unary { x, .. }
        | Kernel::Resize { x, .. }
        | Kernel::Reduce { x, .. }
        | Kernel::Softmax { x, .. }
        | Kernel::Transpose { x, .. } => vec![x],
        Kernel::Gemm { a, .. } => vec![a],
        Kernel::Binary { a, b, .. } | Kernel::MatMul { a, b, .. } => {
            opd(a).into_iter().chain(opd(b)).collect()
        }
        Kernel::Copy { x, .. } => opd(x).into_iter().collect(),
        Kernel::Concat { xs, .. } => xs.iter().collect(),
    }
}

/// The pipelines (shader, storage types) that [`launches`] uses for `k`.
pub(crate) fn pipelines(k: &Kernel<'_>) -> Vec<(&'static str, [DType; 3])> {
    let y = k.output().dtype;
    let f = DType::F32;
    let opd = |o: &Operand| match o {
        Operand::Arena(w) => w.dtype,
        Operand::Weight(_) => f,
    };
    match k {
        Kernel::Conv { x, r, .. } => vec![("conv", [x.dtype, y, r.map_or(f, |r| r.dtype)])],
        Kernel::Binary { a, b, .. } => vec![("binary", [opd(a), y, opd(b)])],
        Kernel::MatMul { a, b, .. } => vec![("matmul", [opd(a), y, opd(b)])],
        Kernel::Copy { x, .. } => vec![("copy", [opd(x), y, f])],
        Kernel::Gemm { a, .. } => vec![("gemm", [a.dtype, y, f])],
        Kernel::Concat { xs, .. } => {
            let mut v: Vec<_> = xs.iter().map(|x| ("concat", [x.dtype, y, f])).collect();
            v.dedup();
            v
        }
        Kernel::ConvTranspose { x, .. } => vec![("conv_transpose", [x.dtype, y, f])],
        Kernel::Pool { x, .. } => vec![("pool", [x.dtype, y, f])],
        Kernel::GlobalAvgPool { x, .. } => vec![("global_avg_pool", [x.dtype, y, f])],
        Kernel::Affine { x, .. } => vec![("affine", [x.dtype, y, f])],
        Kernel::Unary { x, .. } => vec![("unary", [x.dtype, y, f])],
        Kernel::Resize { x, .. } => vec![("resize", [x.dtype, y, f])],
        Kernel::Reduce { x, .. } => vec![("reduce", [x.dtype, y, f])],
        Kernel::Softmax { x, .. } => vec![("softmax", [x.dtype, y, f])],
        Kernel::Transpose { x, .. } => vec![("transpose", [x.dtype, y, f])],
    }
}

/// The launches that run `k`.
pub(crate) fn launches(g: &Gpu, k: &Kernel<'_>) -> Result<Vec<Launch>> {
    let family = k.family();
    let y = *k.output();
    if y.dims.numel() == 0 {
        return Ok(Vec::new());
    }
    check_window(family, &y)?;
    for w in inputs(k) {
        if w.dims.numel() == 0 && !matches!(k, Kernel::Concat { .. }) {
            return Err(fail(family, format!("empty input {:?}", w.dims)));
        }
        if w.dims.numel() > 0 {
            check_window(family, w)?;
            let (a, al) = (w.offset, crate::extent_bytes(w).1 as usize);
            let (b, bl) = (y.offset, crate::extent_bytes(&y).1 as usize);
            if a < b + bl && b < a + al {
                return Err(fail(family, "an input overlaps the output"));
            }
        }
    }
    let (ys, yb) = g.bind(family, &y)?;
    let head = |n: usize| -> Vec<u32> { vec![n as u32, y.first_row as u32, y.rows as u32] };
    let one =
        |shader, types, params, n, slots| Ok(vec![Launch { shader, types, params, n, slots }]);
    match k {
        Kernel::Conv { op, x, w, b, r, y } => {
            let (xd, wd) = (x.dims.as_slice(), w.dims.as_slice());
            let yd = y.dims.as_slice();
            if xd.len() != 4 || wd.len() != 4 || yd.len() != 4 || op.groups == 0 {
                return Err(fail("conv", format!("input {xd:?}, weight {wd:?}, output {yd:?}")));
            }
            let (cg, m) = (wd[1], yd[1]);
            if op.kernel[0] > 32 {
                return Err(fail("conv", "kernels more than 32 rows high are not supported"));
            }
            if m % op.groups != 0
                || xd[1] != cg * op.groups
                || wd[0] != m
                || wd[2..] != op.kernel
                || weight_len(g, "conv", w.id)? != w.dims.numel()
            {
                return Err(fail("conv", "weight or bias size does not match the convolution"));
            }
            if let Some(b) = b {
                if weight_len(g, "conv", b.id)? != m {
                    return Err(fail("conv", "weight or bias size does not match the convolution"));
                }
            }
            if y.rows > 0 {
                let span = (op.kernel[0] - 1) * op.dilations[0];
                let lo = (y.first_row * op.strides[0]).saturating_sub(op.pads[0]);
                let hi = ((y.first_row + y.rows - 1) * op.strides[0] + span + 1)
                    .saturating_sub(op.pads[0])
                    .min(xd[2]);
                need_rows("conv", x, lo, hi)?;
            }
            match (op.residual, r) {
                (false, None) => {}
                (true, Some(r)) => {
                    if r.dims != y.dims {
                        return Err(fail(
                            "conv",
                            format!("residual {:?} for output {:?}", r.dims, y.dims),
                        ));
                    }
                    need_rows("conv", r, y.first_row, y.first_row + y.rows)?;
                }
                (true, None) => {
                    return Err(fail(
                        "conv",
                        "a residual convolution was called without its residual",
                    ))
                }
                (false, Some(_)) => return Err(fail("conv", "a residual for a plain convolution")),
            }
            let (xs, xb) = g.bind("conv", x)?;
            let (rs, rw, rt) = match r {
                Some(r) => {
                    let (s, b) = g.bind("conv", r)?;
                    (s, win(r, b), r.dtype)
                }
                None => (Slot::DummyArena, [0, 1, 1, 1, 1], DType::F32),
            };
            let mut p = head(0);
            p.extend(win(x, xb));
            p.extend(win(y, yb));
            p.extend(rw);
            p.extend(
                [
                    xd[1],
                    m,
                    cg,
                    m / op.groups,
                    op.kernel[0],
                    op.kernel[1],
                    op.strides[0],
                    op.strides[1],
                    op.dilations[0],
                    op.dilations[1],
                    op.pads[0],
                    op.pads[1],
                    b.is_some() as usize,
                    r.is_some() as usize,
                ]
                .map(|v| v as u32),
            );
            p.extend(act(op.act.as_ref()));
            let bias = b.map_or(Slot::DummyWeight, |b| Slot::Weight(b.id));
            let slots = vec![(1, xs), (2, ys), (3, rs), (5, Slot::Weight(w.id)), (6, bias)];
            one("conv", [x.dtype, y.dtype, rt], p, out_len(y), slots)
        }
        Kernel::ConvTranspose { op, x, w, b, y } => {
            let (xd, wd) = (x.dims.as_slice(), w.dims.as_slice());
            if xd.len() != 4 || wd.len() != 4 || op.groups == 0 || xd[1] % op.groups != 0 {
                return Err(fail(
                    "conv_transpose",
                    format!("input {xd:?}, weight {wd:?}, output {:?}", y.dims),
                ));
            }
            let mut want = [xd[0], wd[1] * op.groups, 0, 0];
            for a in 0..2 {
                let full = op.strides[a] * (xd[2 + a] - 1)
                    + op.output_padding[a]
                    + (op.kernel[a] - 1) * op.dilations[a]
                    + 1;
                want[2 + a] = full
                    .checked_sub(op.pads[a] + op.pads[a + 2])
                    .ok_or_else(|| fail("conv_transpose", "pads remove the whole output"))?;
            }
            need_dims("conv_transpose", "output", &y.dims, &want)?;
            if weight_len(g, "conv_transpose", w.id)? != w.dims.numel() {
                return Err(fail("conv_transpose", "weight size does not match"));
            }
            let (lo, hi) = conv_transpose_rows(op, y, xd[2]);
            need_rows("conv_transpose", x, lo, hi)?;
            let (xs, xb) = g.bind("conv_transpose", x)?;
            let mut p = head(0);
            p.extend(win(x, xb));
            p.extend(win(y, yb));
            p.extend(
                [
                    xd[1],
                    want[1],
                    xd[1] / op.groups,
                    wd[1],
                    op.kernel[0],
                    op.kernel[1],
                    op.strides[0],
                    op.strides[1],
                    op.dilations[0],
                    op.dilations[1],
                    op.pads[0],
                    op.pads[1],
                    b.is_some() as usize,
                ]
                .map(|v| v as u32),
            );
            p.extend(act(op.act.as_ref()));
            let bias = b.map_or(Slot::DummyWeight, |b| Slot::Weight(b.id));
            let slots = vec![(1, xs), (2, ys), (5, Slot::Weight(w.id)), (6, bias)];
            one("conv_transpose", [x.dtype, y.dtype, DType::F32], p, out_len(y), slots)
        }
        Kernel::Pool { op, x, y } => {
            let xd = x.dims.as_slice();
            if xd.len() != 4
                || op.kernel.contains(&0)
                || op.strides.contains(&0)
                || op.dilations.contains(&0)
            {
                return Err(fail("pool", format!("input {xd:?} with kernel {:?}", op.kernel)));
            }
            let mut want = [xd[0], xd[1], 0, 0];
            for a in 0..2 {
                let (kk, s, d) = (op.kernel[a], op.strides[a], op.dilations[a]);
                want[2 + a] =
                    conv_out_len(xd[2 + a], kk, s, d, op.pads[a], op.pads[a + 2], op.ceil_mode)
                        .ok_or_else(|| fail("pool", "window does not fit the input"))?;
            }
            need_dims("pool", "output", &y.dims, &want)?;
            let h = xd[2];
            for oy in y.first_row..y.first_row + y.rows {
                let any = (0..op.kernel[0]).any(|ky| {
                    (oy * op.strides[0] + ky * op.dilations[0])
                        .checked_sub(op.pads[0])
                        .is_some_and(|i| i < h)
                });
                if !any {
                    return Err(fail(
                        "pool",
                        format!("output row {oy} has no input rows (window inside the padding)"),
                    ));
                }
            }
            let (xs, xb) = g.bind("pool", x)?;
            let mut p = head(0);
            p.extend(win(x, xb));
            p.extend(win(y, yb));
            p.extend(
                [
                    x.first_row,
                    x.first_row + x.rows,
                    (op.kind == PoolKind::Avg) as usize,
                    op.kernel[0],
                    op.kernel[1],
                    op.strides[0],
                    op.strides[1],
                    op.dilations[0],
                    op.dilations[1],
                    op.pads[0],
                    op.pads[1],
                    op.pads[2],
                    op.pads[3],
                    op.count_include_pad as usize,
                ]
                .map(|v| v as u32),
            );
            one("pool", [x.dtype, y.dtype, DType::F32], p, out_len(y), vec![(1, xs), (2, ys)])
        }
        Kernel::GlobalAvgPool { x, y } => {
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
            let (rows_per, first, end, whole) = if xd.len() == 4 {
                (h, x.first_row, x.first_row + x.rows, h)
            } else {
                need_whole("global_avg_pool", x)?;
                (size / w, 0, size / w, size / w)
            };
            let (xs, xb) = g.bind("global_avg_pool", x)?;
            let mut p = vec![0];
            p.extend(win(x, xb));
            p.extend(win(y, yb));
            p.extend([rows_per, first, end, size, whole].map(|v| v as u32));
            let slots = vec![(1, xs), (2, ys)];
            one("global_avg_pool", [x.dtype, y.dtype, DType::F32], p, xd[0] * xd[1], slots)
        }
        Kernel::Affine { act: a, x, scale, shift, y } => {
            need_dims("affine", "input", &x.dims, y.dims.as_slice())?;
            let d = y.dims.as_slice();
            let c = if d.len() >= 2 { d[1] } else { 0 };
            if d.len() < 2
                || weight_len(g, "affine", scale.id)? != c
                || weight_len(g, "affine", shift.id)? != c
            {
                return Err(fail("affine", format!("scales and shifts do not fit {d:?}")));
            }
            need_rows("affine", x, y.first_row, y.first_row + y.rows)?;
            let inner: usize =
                d.get(2..d.len().saturating_sub(2)).map_or(1, |s| s.iter().product());
            let mode = match d.len() {
                2 => 0,
                3 => 1,
                _ => 2,
            };
            let (xs, xb) = g.bind("affine", x)?;
            let mut p = head(0);
            p.extend(win(x, xb));
            p.extend(win(y, yb));
            p.extend(act(a.as_ref()));
            p.extend([mode, inner.max(1) as u32, c as u32]);
            let slots =
                vec![(1, xs), (2, ys), (5, Slot::Weight(scale.id)), (6, Slot::Weight(shift.id))];
            one("affine", [x.dtype, y.dtype, DType::F32], p, out_len(y), slots)
        }
        Kernel::Unary { act: a, x, y } => {
            need_dims("unary", "input", &x.dims, y.dims.as_slice())?;
            need_rows("unary", x, y.first_row, y.first_row + y.rows)?;
            let (xs, xb) = g.bind("unary", x)?;
            let mut p = head(0);
            p.extend(win(x, xb));
            p.extend(win(y, yb));
            p.extend(act(Some(a)));
            one("unary", [x.dtype, y.dtype, DType::F32], p, out_len(y), vec![(1, xs), (2, ys)])
        }
        Kernel::Binary { op, a, b, y } => binary(g, op.kind, op.act.as_ref(), a, b, y, ys, yb),
        Kernel::Concat { axis, xs, y } => concat(g, *axis, xs, y, ys, yb),
        Kernel::Resize { op, x, y } => {
            let xd = x.dims.as_slice();
            if xd.len() != 4 {
                return Err(fail("resize", format!("expects a 4-D input, got {xd:?}")));
            }
            need_dims("resize", "output", &y.dims, &[xd[0], xd[1], op.size[0], op.size[1]])?;
            let (_, h, w) = x.geometry();
            let (mut lo, mut hi) = (usize::MAX, 0);
            let mut p = head(0);
            p.extend(win(x, g.bind("resize", x)?.1));
            p.extend(win(y, yb));
            p.extend([(op.mode == ResizeMode::Linear) as u32, op.size[1] as u32]);
            for oy in y.first_row..y.first_row + y.rows {
                let (i0, i1, wy) = op.taps(0, oy, h);
                (lo, hi) = (lo.min(i0), hi.max(i1 + 1));
                p.extend([i0 as u32, i1 as u32, wy.to_bits()]);
            }
            for ox in 0..op.size[1] {
                let (i0, i1, wx) = op.taps(1, ox, w);
                p.extend([i0 as u32, i1 as u32, wx.to_bits()]);
            }
            need_rows("resize", x, lo, hi)?;
            let (xs, _) = g.bind("resize", x)?;
            one("resize", [x.dtype, y.dtype, DType::F32], p, out_len(y), vec![(1, xs), (2, ys)])
        }
        Kernel::Gemm { op, a, b, c, y } => {
            let (k, n) = match b.dims.as_slice() {
                &[r, c] => {
                    if op.trans_b {
                        (c, r)
                    } else {
                        (r, c)
                    }
                }
                d => return Err(fail("gemm", format!("B must be 2-D, got {d:?}"))),
            };
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
            if ka != k || weight_len(g, "gemm", b.id)? != k * n {
                return Err(fail(
                    "gemm",
                    format!("inner dims differ: A {:?}, B {:?}", a.dims, b.dims),
                ));
            }
            need_dims("gemm", "output", &y.dims, &[m, n])?;
            let (crs, ccs) = match c {
                None => (0, 0),
                Some(c) => {
                    let (cm, cn) = match c.dims.as_slice() {
                        &[] => (1, 1),
                        &[c] => (1, c),
                        &[r, c] => (r, c),
                        d => {
                            return Err(fail(
                                "gemm",
                                format!("C must have at most 2 axes, got {d:?}"),
                            ))
                        }
                    };
                    if (cm != 1 && cm != m) || (cn != 1 && cn != n) {
                        return Err(fail("gemm", format!("C {:?} does not broadcast", c.dims)));
                    }
                    (if cm == 1 { 0 } else { cn }, usize::from(cn != 1))
                }
            };
            if op.trans_a {
                need_whole("gemm", a)?;
            } else {
                need_rows("gemm", a, y.first_row, y.first_row + y.rows)?;
            }
            let (as_, ab) = g.bind("gemm", a)?;
            let mut p = head(0);
            p.extend(win(a, ab));
            p.extend(win(y, yb));
            p.extend([
                k as u32,
                n as u32,
                op.trans_a as u32,
                op.trans_b as u32,
                op.alpha.to_bits(),
                op.beta.to_bits(),
                c.is_some() as u32,
                crs as u32,
                ccs as u32,
            ]);
            p.extend(act(op.act.as_ref()));
            let cs = c.map_or(Slot::DummyWeight, |c| Slot::Weight(c.id));
            let slots = vec![(1, as_), (2, ys), (5, Slot::Weight(b.id)), (6, cs)];
            one("gemm", [a.dtype, y.dtype, DType::F32], p, y.rows * n, slots)
        }
        Kernel::MatMul { op, a, b, y } => matmul(g, op.act.as_ref(), a, b, y, ys, yb),
        Kernel::Reduce { op, x, y } => {
            let xd = x.dims.as_slice();
            let r = xd.len();
            let mut reduced = [false; MAX_RANK];
            for &a in &op.axes {
                if a >= r {
                    return Err(fail("reduce", format!("axis {a} out of range for {xd:?}")));
                }
                reduced[a] = true;
            }
            let mut want = Vec::new();
            for a in 0..r {
                if !reduced[a] || op.keepdims {
                    want.push(if reduced[a] { 1 } else { xd[a] });
                }
            }
            need_dims("reduce", "output", &y.dims, &want)?;
            need_whole("reduce", x)?;
            need_whole("reduce", y)?;
            let s = row_major(xd);
            let (mut kd, mut ks, mut rd, mut rs) = (vec![], vec![], vec![], vec![]);
            for a in 0..r {
                if reduced[a] {
                    rd.push(xd[a] as u32);
                    rs.push(s[a] as u32);
                } else {
                    kd.push(xd[a] as u32);
                    ks.push(s[a] as u32);
                }
            }
            let pad = |v: &mut Vec<u32>| v.resize(MAX_RANK, 1);
            let (nk, nr) = (kd.len() as u32, rd.len() as u32);
            pad(&mut kd);
            pad(&mut ks);
            pad(&mut rd);
            pad(&mut rs);
            let count: usize = op.axes.iter().map(|&a| xd[a]).product();
            let (xs, xb) = g.bind("reduce", x)?;
            let mut p = vec![0];
            p.extend(win(x, xb));
            p.extend(win(y, yb));
            let kind = match op.kind {
                ReduceKind::Mean => 0,
                ReduceKind::Sum => 1,
                ReduceKind::Max => 2,
            };
            p.extend([kind, count as u32, nk]);
            p.extend(kd);
            p.extend(ks);
            p.push(nr);
            p.extend(rd);
            p.extend(rs);
            let n = y.dims.numel();
            one("reduce", [x.dtype, y.dtype, DType::F32], p, n, vec![(1, xs), (2, ys)])
        }
        Kernel::Softmax { op, x, y } => {
            let xd = x.dims.as_slice();
            if op.axis >= xd.len() {
                return Err(fail("softmax", format!("axis {} out of range for {xd:?}", op.axis)));
            }
            need_dims("softmax", "output", &y.dims, xd)?;
            need_whole("softmax", x)?;
            need_whole("softmax", y)?;
            let outer: usize = xd[..op.axis].iter().product();
            let (len, inner) = if op.coerce_2d {
                (xd[op.axis..].iter().product(), 1)
            } else {
                (xd[op.axis], xd[op.axis + 1..].iter().product())
            };
            let (xs, xb) = g.bind("softmax", x)?;
            let mut p = vec![0];
            p.extend(win(x, xb));
            p.extend(win(y, yb));
            p.extend([len as u32, inner as u32]);
            let slots = vec![(1, xs), (2, ys)];
            one("softmax", [x.dtype, y.dtype, DType::F32], p, outer * inner, slots)
        }
        Kernel::Transpose { perm, x, y } => {
            let (xd, yd) = (x.dims.as_slice(), y.dims.as_slice());
            let r = xd.len();
            let mut seen = [false; MAX_RANK];
            let valid = perm.len() == r
                && yd.len() == r
                && perm.iter().all(|&p| p < r && !std::mem::replace(&mut seen[p], true));
            if !valid || (0..r).any(|i| yd[i] != xd[perm[i]]) {
                return Err(fail(
                    "transpose",
                    format!("perm {perm:?} does not take {xd:?} to {yd:?}"),
                ));
            }
            if r >= 2 && perm[r - 2] == r - 2 && perm[r - 1] == r - 1 {
                need_rows("transpose", x, y.first_row, y.first_row + y.rows)?;
            } else {
                need_whole("transpose", x)?;
            }
            let s = row_major(xd);
            let mut dims = [1u32; MAX_RANK];
            let mut st = [0u32; MAX_RANK];
            for i in 0..r {
                dims[i] = yd[i] as u32;
                st[i] = s[perm[i]] as u32;
            }
            let (xs, xb) = g.bind("transpose", x)?;
            let mut p = head(0);
            p.extend(win(x, xb));
            p.extend(win(y, yb));
            p.push(r as u32);
            p.extend(dims);
            p.extend(st);
            let slots = vec![(1, xs), (2, ys)];
            one("transpose", [x.dtype, y.dtype, DType::F32], p, out_len(y), slots)
        }
        Kernel::Copy { x, y } => {
            if x.dims().numel() != y.dims.numel() {
                return Err(fail("copy", format!("cannot copy {:?} into {:?}", x.dims(), y.dims)));
            }
            let (_, h, w) = y.geometry();
            let (f0, f1) = ((y.first_row) * w, (y.first_row + y.rows) * w);
            let mut p = head(0);
            let (slots, xt, weight) = match x {
                Operand::Arena(xw) => {
                    // The source rows the copied elements sit in, for every output plane.
                    let (planes, _, _) = y.geometry();
                    let (_, xh, xwid) = xw.geometry();
                    if y.rows > 0 {
                        for pl in 0..planes {
                            let (a, b) = (pl * h * w + f0, pl * h * w + f1);
                            let (ra, rb) = ((a / xwid) % xh, ((b - 1) / xwid) % xh);
                            if ra <= rb {
                                need_rows("copy", xw, ra, rb + 1)?;
                            } else {
                                need_whole("copy", xw)?;
                            }
                        }
                    }
                    let (xs, xb) = g.bind("copy", xw)?;
                    p.extend(win(xw, xb));
                    (vec![(1, xs), (2, ys), (5, Slot::DummyWeight)], xw.dtype, 0)
                }
                Operand::Weight(wr) => {
                    if weight_len(g, "copy", wr.id)? != wr.dims.numel() {
                        return Err(fail("copy", "weight size does not match"));
                    }
                    p.extend([0, 1, 1, 1, 1]);
                    (vec![(1, Slot::DummyArena), (2, ys), (5, Slot::Weight(wr.id))], DType::F32, 1)
                }
            };
            p.extend(win(y, yb));
            p.push(weight);
            one("copy", [xt, y.dtype, DType::F32], p, out_len(y), slots)
        }
    }
}

/// Input rows `[lo, hi)` a transposed convolution reads for the window's output rows.
fn conv_transpose_rows(
    op: &frugal_core::ops::ConvTranspose,
    y: &RowWindow,
    h: usize,
) -> (usize, usize) {
    let (mut lo, mut hi) = (usize::MAX, 0);
    for oy in y.first_row..y.first_row + y.rows {
        for ky in 0..op.kernel[0] {
            let Some(t) = (oy + op.pads[0]).checked_sub(ky * op.dilations[0]) else { continue };
            let iy = t / op.strides[0];
            if t % op.strides[0] == 0 && iy < h {
                (lo, hi) = (lo.min(iy), hi.max(iy + 1));
            }
        }
    }
    (lo, hi)
}

/// One binary operand's parameters: is_weight, window, follows_rows, follows_columns, plane
/// strides along the output's lead axes; its slots (arena, weight) and storage type.
fn side(g: &Gpu, o: &Operand, y: &Dims) -> Result<(Vec<u32>, Slot, Slot, DType)> {
    let (od, yd) = (o.dims(), y.as_slice());
    let (ro, ry) = (od.rank(), yd.len());
    if ro > ry {
        return Err(fail("binary", format!("operand {od:?} has more axes than the output {y:?}")));
    }
    for a in 0..ro {
        let (d, t) = (od[a], yd[a + ry - ro]);
        if d != t && d != 1 {
            return Err(fail("binary", format!("operand {od:?} does not broadcast to {y:?}")));
        }
    }
    let mut pstride = [0u32; 4];
    let mut acc = 1;
    for a in (0..ro.saturating_sub(2)).rev() {
        if od[a] != 1 {
            pstride[a + ry - ro] = acc as u32;
        }
        acc *= od[a];
    }
    let (_, h, w) = od.rows();
    let (_, _, yw) = y.rows();
    let follows_rows = ro >= 2 && h != 1;
    let mut p = Vec::with_capacity(14);
    let (arena, weight, dtype) = match o {
        Operand::Arena(win_) => {
            let (s, b) = g.bind("binary", win_)?;
            p.push(0);
            p.extend(win(win_, b));
            (s, Slot::DummyWeight, win_.dtype)
        }
        Operand::Weight(wr) => {
            if weight_len(g, "binary", wr.id)? != wr.dims.numel() {
                return Err(fail("binary", "weight size does not match"));
            }
            p.push(1);
            p.extend([0, h.max(1) as u32, w.max(1) as u32, h.max(1) as u32, w.max(1) as u32]);
            (Slot::DummyArena, Slot::Weight(wr.id), DType::F32)
        }
    };
    p.extend([follows_rows as u32, (w == yw) as u32]);
    p.extend(pstride);
    Ok((p, arena, weight, dtype))
}

#[allow(clippy::too_many_arguments)]
fn binary(
    g: &Gpu,
    kind: BinaryKind,
    a_act: Option<&Activation>,
    a: &Operand,
    b: &Operand,
    y: &RowWindow,
    ys: Slot,
    yb: u32,
) -> Result<Vec<Launch>> {
    let yd = y.dims.as_slice();
    let (ra, rb) = (a.dims().rank(), b.dims().rank());
    if ra.max(rb) != yd.len() || yd.len() > MAX_RANK {
        return Err(fail(
            "binary",
            format!("operands {:?} and {:?} give no {yd:?}", a.dims(), b.dims()),
        ));
    }
    for i in 0..yd.len() {
        let dim = |d: Dims, r: usize| if i + r >= yd.len() { d[i + r - yd.len()] } else { 1 };
        if dim(a.dims(), ra) != yd[i] && dim(b.dims(), rb) != yd[i] {
            return Err(fail(
                "binary",
                format!("operands {:?} and {:?} give no {yd:?}", a.dims(), b.dims()),
            ));
        }
    }
    let (pa, sa, wa, ta) = side(g, a, &y.dims)?;
    let (pb, sb, wb, tb) = side(g, b, &y.dims)?;
    for (o, follows) in [(a, pa[6] != 0), (b, pb[6] != 0)] {
        if let Operand::Arena(w) = o {
            if follows {
                need_rows("binary", w, y.first_row, y.first_row + y.rows)?;
            } else {
                need_rows("binary", w, 0, 1)?;
            }
        }
    }
    let lead = yd.len().saturating_sub(2);
    let mut p = vec![0, y.first_row as u32, y.rows as u32];
    p.extend(win(y, yb));
    p.extend(act(a_act));
    let k = match kind {
        BinaryKind::Add => 0,
        BinaryKind::Sub => 1,
        BinaryKind::Mul => 2,
        BinaryKind::Div => 3,
        BinaryKind::PRelu => 4,
    };
    p.extend([k, lead as u32]);
    let mut dims = [1u32; 4];
    for i in 0..lead {
        dims[i] = yd[i] as u32;
    }
    p.extend(dims);
    p.extend(pa);
    p.extend(pb);
    let slots = vec![(1, sa), (2, ys), (3, sb), (5, wa), (6, wb)];
    Ok(vec![Launch { shader: "binary", types: [ta, y.dtype, tb], params: p, n: out_len(y), slots }])
}

fn concat(
    g: &Gpu,
    axis: usize,
    xs: &[RowWindow],
    y: &RowWindow,
    ys: Slot,
    yb: u32,
) -> Result<Vec<Launch>> {
    let yd = y.dims.as_slice();
    let r = yd.len();
    if axis >= r {
        return Err(fail("concat", format!("axis {axis} out of range for {yd:?}")));
    }
    let mut total = 0;
    for x in xs {
        let xd = x.dims.as_slice();
        if !(xd.len() == r && (0..r).all(|a| a == axis || xd[a] == yd[a])) {
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
    let mut out = Vec::new();
    let mut off = 0;
    for x in xs.iter().filter(|x| x.dims.numel() > 0) {
        let (xplanes, xh, xw) = x.geometry();
        let (mode, first, rows, n_planes, width, cx, cy, inner) = if axis + 2 < r {
            need_rows("concat", x, y.first_row, y.first_row + y.rows)?;
            let inner: usize = yd[axis + 1..r - 2].iter().product();
            (0, y.first_row, y.rows, xplanes, xw, x.dims[axis], yd[axis], inner)
        } else if axis + 2 == r {
            let (lo, hi) = (y.first_row.max(off), (y.first_row + y.rows).min(off + xh));
            need_rows("concat", x, lo.saturating_sub(off), hi.saturating_sub(off))?;
            (1, lo, hi.saturating_sub(lo), planes, xw, 1, 1, 1)
        } else {
            need_rows("concat", x, y.first_row, y.first_row + y.rows)?;
            (2, y.first_row, y.rows, planes, xw, 1, 1, 1)
        };
        let n = n_planes * rows * width;
        if n > 0 {
            let (xs_, xb) = g.bind("concat", x)?;
            let mut p = vec![0, mode];
            p.extend(win(x, xb));
            p.extend(win(y, yb));
            p.extend([first, rows, off, cx, cy, inner.max(1), width].map(|v| v as u32));
            out.push(Launch {
                shader: "concat",
                types: [x.dtype, y.dtype, DType::F32],
                params: p,
                n,
                slots: vec![(1, xs_), (2, ys)],
            });
        }
        off += x.dims[axis];
    }
    Ok(out)
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

fn matmul(
    g: &Gpu,
    a_act: Option<&Activation>,
    a: &Operand,
    b: &Operand,
    y: &RowWindow,
    ys: Slot,
    yb: u32,
) -> Result<Vec<Launch>> {
    let (ad, bd, yd) = (a.dims(), b.dims(), y.dims);
    let bad = |why: &str| fail("matmul", format!("{why}: {ad:?} x {bd:?} -> {yd:?}"));
    let ((m, k, ab), (k2, n, bb)) = (as_matrix(&ad, true), as_matrix(&bd, false));
    if ad.rank() == 0 || bd.rank() == 0 || k != k2 {
        return Err(bad("inner dims differ"));
    }
    let nb = ab.len().max(bb.len());
    let (mut batch, mut astr, mut bstr) = ([1usize; 4], [0u32; 4], [0u32; 4]);
    for (side, strides) in [(ab, &mut astr), (bb, &mut bstr)] {
        let mut acc = 1;
        for (j, &d) in side.iter().enumerate().rev() {
            let o = j + nb - side.len();
            if d != 1 {
                if batch[o] != 1 && batch[o] != d {
                    return Err(bad("batch axes do not broadcast"));
                }
                (batch[o], strides[o]) = (d, acc as u32);
            }
            acc *= d;
        }
    }
    let mut want = batch[..nb].to_vec();
    if ad.rank() > 1 {
        want.push(m);
    }
    if bd.rank() > 1 {
        want.push(n);
    }
    if yd.as_slice() != want.as_slice() {
        return Err(bad("output shape"));
    }
    let by_rows = ad.rank() >= 2 && bd.rank() >= 2;
    let (r0, r1) = if by_rows { (y.first_row, y.first_row + y.rows) } else { (0, m) };
    if !by_rows {
        need_whole("matmul", y)?;
    }
    let mut p = vec![0, r0 as u32, (r1 - r0) as u32];
    let (sa, wa, ta, fa) = match a {
        Operand::Arena(w) => {
            let (lo, hi) = if ad.rank() >= 2 { (r0, r1) } else { (0, 1) };
            need_rows("matmul", w, lo, hi)?;
            let (s, base) = g.bind("matmul", w)?;
            p.extend(win(w, base));
            (s, Slot::DummyWeight, w.dtype, 0)
        }
        Operand::Weight(wr) => {
            if weight_len(g, "matmul", wr.id)? != ad.numel() {
                return Err(bad("weight size"));
            }
            p.extend([0, 1, 1, 1, 1]);
            (Slot::DummyArena, Slot::Weight(wr.id), DType::F32, 1)
        }
    };
    let (sb, wb, tb, fb) = match b {
        Operand::Arena(w) => {
            need_whole("matmul", w)?;
            let (s, base) = g.bind("matmul", w)?;
            p.extend(win(w, base));
            (s, Slot::DummyWeight, w.dtype, 0)
        }
        Operand::Weight(wr) => {
            if weight_len(g, "matmul", wr.id)? != bd.numel() {
                return Err(bad("weight size"));
            }
            p.extend([0, 1, 1, 1, 1]);
            (Slot::DummyArena, Slot::Weight(wr.id), DType::F32, 1)
        }
    };
    p.extend(win(y, yb));
    p.extend([m, k, n].map(|v| v as u32));
    p.extend([fa, fb, (bd.rank() == 1) as u32, nb as u32]);
    p.extend(batch.map(|v| v as u32));
    p.extend(astr);
    p.extend(bstr);
    p.extend(act(a_act));
    let nbatch: usize = batch[..nb].iter().product();
    let slots = vec![(1, sa), (2, ys), (3, sb), (5, wa), (6, wb)];
    Ok(vec![Launch {
        shader: "matmul",
        types: [ta, y.dtype, tb],
        params: p,
        n: nbatch * (r1 - r0) * n,
        slots,
    }])
}
