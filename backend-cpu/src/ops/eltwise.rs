//! Pointwise kernels: standalone activations, per-channel affine maps (inference batch norm) and
//! broadcasting binary arithmetic. Output row `r` reads row `r` of its inputs, or row 0 of an
//! operand broadcast along the row axis, so any band of rows can be produced on its own.

use frugal_core::backend::{Dims, RowWindow, MAX_RANK};
use frugal_core::ops::{Activation, Binary, BinaryKind};
use frugal_core::Result;

use super::{
    contiguous_rows, in_row, need_dims, need_rows, split_plane_tasks, split_planes, split_space,
    splits_space, unravel, Opd,
};
use crate::arena::{Io, Src};
use crate::fail;
use crate::par::Par;

/// `y = act(x)`.
pub(crate) fn unary(
    act: &Activation,
    x: &RowWindow,
    y: &RowWindow,
    io: Io<'_>,
    par: Par<'_>,
) -> Result<()> {
    need_dims("unary", "input", &x.dims, y.dims.as_slice())?;
    need_rows("unary", x, y.first_row, y.first_row + y.rows)?;
    let src = io.src;
    split_space("unary", y, io.out, io.out_base, par, work(y), |p, r, cols, dst| {
        dst.copy_from_slice(&in_row(src, x, p, r)[cols]);
        act.apply_slice(dst);
    })
}

/// Flops-equivalent work of a pointwise kernel over window `y` (for [`Par::for_work`]: an
/// element read, computed and written costs about four multiply-adds' time).
fn work(y: &RowWindow) -> usize {
    let (planes, _, width) = y.geometry();
    4 * planes * y.rows * width
}

/// `y = x * scale[c] + shift[c]` with `c` the index along axis 1, then `act`.
pub(crate) fn affine(
    act: Option<&Activation>,
    x: &RowWindow,
    scale: &[f32],
    shift: &[f32],
    y: &RowWindow,
    io: Io<'_>,
    par: Par<'_>,
) -> Result<()> {
    need_dims("affine", "input", &x.dims, y.dims.as_slice())?;
    let d = y.dims.as_slice();
    if d.len() < 2 || scale.len() != d[1] || shift.len() != d[1] {
        return Err(fail(
            "affine",
            format!("{} scales and {} shifts for {d:?}", scale.len(), shift.len()),
        ));
    }
    need_rows("affine", x, y.first_row, y.first_row + y.rows)?;
    // Planes per channel for rank >= 4 (rank 2 keeps channels along the row, rank 3 down rows).
    let inner: usize = d.get(2..d.len().saturating_sub(2)).map_or(1, |s| s.iter().product());
    let src = io.src;
    split_space("affine", y, io.out, io.out_base, par, work(y), |p, r, cols, dst| {
        let xs = &in_row(src, x, p, r)[cols.clone()];
        if d.len() == 2 {
            let (scale, shift) = (&scale[cols.clone()], &shift[cols]);
            for (((o, &v), &s), &t) in dst.iter_mut().zip(xs).zip(scale).zip(shift) {
                *o = v * s + t;
            }
        } else {
            let c = if d.len() == 3 { r } else { (p / inner) % d[1] };
            let (s, t) = (scale[c], shift[c]);
            for (o, &v) in dst.iter_mut().zip(xs) {
                *o = v * s + t;
            }
        }
        if let Some(act) = act {
            act.apply_slice(dst);
        }
    })
}

/// How one operand of a binary op is read for an output row.
struct Side<'a> {
    opd: Opd<'a>,
    /// Operand plane stride along each leading output axis (0 where broadcast or absent).
    pstride: [usize; MAX_RANK],
    /// Whether the operand has the output's rows (else it is read at row 0).
    follows_rows: bool,
    /// Operand (height, width).
    hw: (usize, usize),
}

impl<'a> Side<'a> {
    /// Checks `opd` broadcasts to `y` and works out how to read it.
    fn new(opd: Opd<'a>, y: &Dims) -> Result<Side<'a>> {
        let (od, yd) = (opd.dims(), y.as_slice());
        let (ro, ry) = (od.rank(), yd.len());
        if ro > ry {
            return Err(fail(
                "binary",
                format!("operand {od:?} has more axes than the output {y:?}"),
            ));
        }
        for a in 0..ro {
            let (o, t) = (od[a], yd[a + ry - ro]);
            if o != t && o != 1 {
                return Err(fail("binary", format!("operand {od:?} does not broadcast to {y:?}")));
            }
        }
        let mut pstride = [0; MAX_RANK];
        let mut acc = 1;
        for a in (0..ro.saturating_sub(2)).rev() {
            if od[a] != 1 {
                pstride[a + ry - ro] = acc;
            }
            acc *= od[a];
        }
        let (_, h, w) = od.rows();
        Ok(Side { opd, pstride, follows_rows: ro >= 2 && h != 1, hw: (h, w) })
    }

    /// Rows of this operand that output rows `lo..hi` read.
    fn check(&self, lo: usize, hi: usize) -> Result<()> {
        match &self.opd {
            Opd::Rows(w) if self.follows_rows => need_rows("binary", w, lo, hi),
            Opd::Rows(w) => need_rows("binary", w, 0, 1),
            Opd::Const { .. } => Ok(()),
        }
    }

    /// The operand rows read by output rows `r .. r + n` of the plane whose multi-index is
    /// `idx`: `n` consecutive rows where the operand follows the output's rows (`n` must be
    /// at most [`Side::run`]), else its one row.
    #[inline]
    fn rows(&self, src: Src<'a>, idx: &[usize; MAX_RANK], r: usize, n: usize) -> &'a [f32] {
        let plane: usize = idx.iter().zip(&self.pstride).map(|(i, s)| i * s).sum();
        let (row, n) = if self.follows_rows { (r, n) } else { (0, 1) };
        match &self.opd {
            Opd::Rows(w) if n == 1 => in_row(src, w, plane, row),
            Opd::Rows(w) => src.slice(w.row_start(plane, row), n * self.hw.1),
            Opd::Const { data, .. } => {
                let (h, w) = self.hw;
                &data[(plane * h + row) * w..][..n * w]
            }
        }
    }

    /// The whole operand as one slice in the output's element order, when it has the output's
    /// shape and is stored contiguously, or is a single value (then of length 1).
    fn flat(&self, src: Src<'a>, y: &Dims) -> Option<&'a [f32]> {
        let dims = self.opd.dims();
        let n = if dims == *y { y.numel() } else { 1 };
        if dims != *y && dims.numel() != 1 {
            return None;
        }
        match &self.opd {
            Opd::Rows(w) if w.is_contiguous_whole() => Some(src.slice(w.row_start(0, 0), n)),
            Opd::Rows(_) => None,
            Opd::Const { data, .. } => data.get(..n),
        }
    }

    /// What this operand adds to the start of its row per output plane, where that is one
    /// stride for all of them: its planes are the output's (a per-channel scale over
    /// `[N, C, H, W]`), or it has one plane for every output plane. `None` otherwise.
    fn plane_stride(&self, lead: &[usize]) -> Option<usize> {
        let (mut same, mut one, mut expect) = (true, true, 1);
        for (a, &d) in lead.iter().enumerate().rev() {
            if d > 1 {
                same &= self.pstride[a] == expect;
                one &= self.pstride[a] == 0;
            }
            expect *= d;
        }
        let plane = match &self.opd {
            Opd::Rows(w) => w.capacity * w.row_stride,
            Opd::Const { .. } => self.hw.0 * self.hw.1,
        };
        if one {
            Some(0)
        } else {
            same.then_some(plane)
        }
    }

    /// Where this operand's row for output row `r` of plane 0 starts (arena or constant data).
    fn row_offset(&self, r: usize) -> usize {
        let row = if self.follows_rows { r } else { 0 };
        match &self.opd {
            Opd::Rows(w) => w.row_start(0, row),
            Opd::Const { .. } => row * self.hw.1,
        }
    }

    /// The operand row of [`Side::hw`]'s width at `at` (from [`Side::row_offset`]).
    #[inline]
    fn row_at(&self, src: Src<'a>, at: usize) -> &'a [f32] {
        match &self.opd {
            Opd::Rows(_) => src.slice(at, self.hw.1),
            Opd::Const { data, .. } => &data[at..at + self.hw.1],
        }
    }

    /// How many output rows from `r` (before `end`, of `width` columns) this operand can give
    /// as one run: consecutive rows in memory, or one value broadcast over all of them.
    fn run(&self, r: usize, end: usize, width: usize) -> usize {
        match &self.opd {
            _ if !self.follows_rows => {
                if self.hw.1 == 1 {
                    end - r
                } else {
                    1
                }
            }
            _ if self.hw.1 != width => 1,
            Opd::Rows(w) => contiguous_rows(w, r, end),
            Opd::Const { .. } => end - r,
        }
    }
}

/// Broadcasting `y = act(a op b)`; either operand may be a constant.
pub(crate) fn binary(
    op: &Binary,
    a: Opd<'_>,
    b: Opd<'_>,
    y: &RowWindow,
    io: Io<'_>,
    par: Par<'_>,
) -> Result<()> {
    let yd = y.dims.as_slice();
    let (ra, rb) = (a.dims().rank(), b.dims().rank());
    if ra.max(rb) != yd.len() {
        return Err(fail(
            "binary",
            format!("operands {:?} and {:?} give no {yd:?}", a.dims(), b.dims()),
        ));
    }
    let (sa, sb) = (Side::new(a, &y.dims)?, Side::new(b, &y.dims)?);
    // Each output axis must come from an operand that has it (no 1 x 1 -> n).
    for i in 0..yd.len() {
        let dim = |d: Dims, r: usize| if i + r >= yd.len() { d[i + r - yd.len()] } else { 1 };
        if dim(a.dims(), ra) != yd[i] && dim(b.dims(), rb) != yd[i] {
            return Err(fail(
                "binary",
                format!("operands {:?} and {:?} give no {yd:?}", a.dims(), b.dims()),
            ));
        }
    }
    sa.check(y.first_row, y.first_row + y.rows)?;
    sb.check(y.first_row, y.first_row + y.rows)?;
    let lead = &yd[..yd.len().saturating_sub(2)];
    let src = io.src;
    if y.is_contiguous_whole() {
        if let (Some(ar), Some(br)) = (sa.flat(src, &y.dims), sb.flat(src, &y.dims)) {
            // Whole tensors elementwise (or against one value): one call for everything.
            let (n, at) = (y.dims.numel(), y.row_start(0, 0) - io.out_base);
            let dst = &mut io.out[at..at + n];
            apply(op.kind, ar, br, dst);
            if let Some(act) = &op.act {
                act.apply_slice(dst);
            }
            return Ok(());
        }
    }
    let (_, _, width) = y.geometry();
    let end = y.first_row + y.rows;
    if splits_space(y, par.for_work(work(y))) {
        // Split in space; an operand row of length 1 is broadcast. Otherwise (below) planes,
        // with runs of rows in one call.
        return split_space("binary", y, io.out, io.out_base, par, work(y), |p, r, cols, dst| {
            let mut idx = [0; MAX_RANK];
            unravel(p, lead, &mut idx);
            let (ar, br) = (sa.rows(src, &idx, r, 1), sb.rows(src, &idx, r, 1));
            let (ar, br) = (broadcast_cols(ar, &cols), broadcast_cols(br, &cols));
            apply(op.kind, ar, br, dst);
            if let Some(act) = &op.act {
                act.apply_slice(dst);
            }
        });
    }
    if y.rows <= FEW_ROWS {
        if let (Some(ka), Some(kb)) = (sa.plane_stride(lead), sb.plane_stride(lead)) {
            // A few rows of many small planes (by parts, an excitation scale over 7x7 maps:
            // 512 planes of one 7-float row per firing): every row's offsets are worked out
            // once per call, not per plane, where the per-plane index arithmetic (divisions
            // included) cost 7x the whole map's time per element.
            let mut at = [(0, 0, 0); FEW_ROWS];
            for (o, r) in at.iter_mut().zip(y.first_row..end) {
                *o = (y.slot(r) * y.row_stride, sa.row_offset(r), sb.row_offset(r));
            }
            let at = &at[..y.rows];
            let plane_len = y.capacity * y.row_stride;
            return split_plane_tasks("binary", y, io.out, io.out_base, par, work(y), |p0, out| {
                for (i, ring) in out.chunks_mut(plane_len).enumerate() {
                    let p = p0 + i;
                    for &(yo, ao, bo) in at {
                        let (ar, br) = (sa.row_at(src, p * ka + ao), sb.row_at(src, p * kb + bo));
                        let dst = &mut ring[yo..yo + width];
                        apply(op.kind, ar, br, dst);
                        if let Some(act) = &op.act {
                            act.apply_slice(dst);
                        }
                    }
                }
            });
        }
    }
    split_planes("binary", y, io.out, io.out_base, par, work(y), |p, ring| {
        let mut idx = [0; MAX_RANK];
        unravel(p, lead, &mut idx);
        // Runs of rows that are consecutive in the output and in both operands, one call
        // each: an excitation scale over 7 x 7 maps was 7-float rows, one at a time.
        let mut r = y.first_row;
        while r < end {
            let n =
                contiguous_rows(y, r, end).min(sa.run(r, end, width)).min(sb.run(r, end, width));
            let (ar, br) = (sa.rows(src, &idx, r, n), sb.rows(src, &idx, r, n));
            let dst = &mut ring[y.slot(r) * y.row_stride..][..n * width];
            apply(op.kind, ar, br, dst);
            if let Some(act) = &op.act {
                act.apply_slice(dst);
            }
            r += n;
        }
    })
}

/// Most rows of a window that [`binary`] addresses per row rather than per run of rows.
const FEW_ROWS: usize = 8;

/// Columns `cols` of an operand row, or the row itself where it is one value broadcast.
fn broadcast_cols<'s>(row: &'s [f32], cols: &std::ops::Range<usize>) -> &'s [f32] {
    if row.len() == 1 {
        row
    } else {
        &row[cols.clone()]
    }
}

/// One output row of `a op b`; an operand row of length 1 is broadcast along the row.
fn apply(kind: BinaryKind, a: &[f32], b: &[f32], out: &mut [f32]) {
    // One monomorphised loop per kind (BinaryKind::apply stays the single definition).
    match kind {
        BinaryKind::Add => zip_with(a, b, out, |x, y| BinaryKind::Add.apply(x, y)),
        BinaryKind::Sub => zip_with(a, b, out, |x, y| BinaryKind::Sub.apply(x, y)),
        BinaryKind::Mul => zip_with(a, b, out, |x, y| BinaryKind::Mul.apply(x, y)),
        BinaryKind::Div => zip_with(a, b, out, |x, y| BinaryKind::Div.apply(x, y)),
        BinaryKind::PRelu => zip_with(a, b, out, |x, y| BinaryKind::PRelu.apply(x, y)),
    }
}

#[inline(always)]
fn zip_with(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    let n = out.len();
    match (a.len() == n, b.len() == n) {
        (true, true) => out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&x, &y))| *o = f(x, y)),
        (true, false) => out.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x, b[0])),
        (false, true) => out.iter_mut().zip(b).for_each(|(o, &y)| *o = f(a[0], y)),
        (false, false) => out.fill(f(a[0], b[0])),
    }
}

#[cfg(test)]
mod tests {
    use frugal_core::backend::{Kernel, Operand};
    use frugal_core::ops::eltwise::broadcast_shapes;
    use frugal_core::ops::{Activation, Binary, BinaryKind};

    use crate::ops::testutil::*;

    const ACTS: [Activation; 8] = [
        Activation::Relu,
        Activation::Clip { min: -0.5, max: 0.75 },
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::Sigmoid,
        Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
        Activation::HardSwish,
        Activation::Tanh,
        Activation::Erf,
    ];

    /// The ONNX definitions, in f64 (erf has no std form: its own test lives in core).
    fn act_ref(act: Activation, x: f32) -> f32 {
        let v = x as f64;
        let r = match act {
            Activation::Relu => v.max(0.0),
            Activation::Clip { min, max } => v.max(min as f64).min(max as f64),
            Activation::LeakyRelu { alpha } => {
                if v >= 0.0 {
                    v
                } else {
                    alpha as f64 * v
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            Activation::HardSigmoid { alpha, beta } => {
                (alpha as f64 * v + beta as f64).clamp(0.0, 1.0)
            }
            Activation::HardSwish => v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Tanh => v.tanh(),
            Activation::Erf => return act.apply(x),
        };
        r as f32
    }

    #[test]
    fn unary_follows_onnx_by_bands() {
        // The second shape is enough work for two threads to split.
        for (dims, act) in
            ACTS.map(|a| ([2, 3, 7, 5], a)).into_iter().chain([([1, 6, 20, 48], ACTS[5])])
        {
            let x: Vec<f32> = rand_vec(1, dims.iter().product()).iter().map(|v| v * 6.0).collect();
            let input = Input { dims: &dims, data: &x, need: &same_rows };
            let got =
                check_bands(&[input], &[], &dims, |xs, _, y| Kernel::Unary { act, x: xs[0], y });
            let want: Vec<f32> = x.iter().map(|&v| act_ref(act, v)).collect();
            assert_close(&got, &want, 1e-6, act.onnx_name());
            let t = candle(&dims, &x);
            let theirs = match act {
                Activation::Relu => Some(t.relu()),
                Activation::Tanh => Some(t.tanh()),
                Activation::Erf => Some(t.erf()),
                _ => None,
            };
            if let Some(c) = theirs {
                assert_close(&got, &values(&c.unwrap()), 1e-5, "candle");
            }
        }
    }

    #[test]
    fn unary_on_padded_rows_and_other_ranks() {
        for dims in [vec![9], vec![4, 6], vec![2, 2, 3, 5, 7]] {
            let n = dims.iter().product();
            let x = rand_vec(2, n);
            let mut rig = Rig::new();
            let xw = rig.padded(&dims, 3);
            let xw = rig.put_rows(&xw, &x, 0, xw.rows);
            let y = rig.padded(&dims, 5);
            rig.run(&Kernel::Unary { act: Activation::Relu, x: xw, y }).unwrap();
            let want: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
            assert_bits(&rig.read(&y), &want, "padded");
        }
    }

    #[test]
    fn affine_scales_axis_one_at_any_rank() {
        let act = Some(Activation::Clip { min: -0.5, max: 0.5 });
        for (s, dims) in
            [vec![4, 6], vec![2, 3, 5], vec![2, 3, 5, 7], vec![1, 3, 2, 4, 5], vec![1, 6, 20, 48]]
                .into_iter()
                .enumerate()
        {
            let (c, n) = (dims[1], dims.iter().product());
            let (x, scale, shift) =
                (rand_vec(s as u64, n), rand_vec(10 + s as u64, c), rand_vec(20 + s as u64, c));
            let need: &Need<'_> = &same_rows;
            let got = check_bands(
                &[Input { dims: &dims, data: &x, need }],
                &[(&[c], &scale), (&[c], &shift)],
                &dims,
                |xs, ws, y| Kernel::Affine { act, x: xs[0], scale: ws[0], shift: ws[1], y },
            );
            let want: Vec<f32> = (0..n)
                .map(|i| {
                    let ch = index_of(i, &dims)[1];
                    let v = x[i] as f64 * scale[ch] as f64 + shift[ch] as f64;
                    v.clamp(-0.5, 0.5) as f32
                })
                .collect();
            assert_close(&got, &want, 1e-6, &format!("affine {dims:?}"));
            if dims.len() == 4 {
                let cs = |v: &[f32]| candle(&[1, c, 1, 1], v);
                let t = candle(&dims, &x)
                    .broadcast_mul(&cs(&scale))
                    .unwrap()
                    .broadcast_add(&cs(&shift))
                    .unwrap();
                let t = t.clamp(-0.5f32, 0.5f32).unwrap();
                assert_close(&got, &values(&t), 1e-5, "candle affine");
            }
        }
    }

    /// Naive numpy broadcasting, in f64.
    fn binary_ref(
        kind: BinaryKind,
        ad: &[usize],
        a: &[f32],
        bd: &[usize],
        b: &[f32],
        yd: &[usize],
    ) -> Vec<f32> {
        let at = |d: &[usize], idx: &[usize]| -> usize {
            let off = idx.len() - d.len();
            let s = row_major(d);
            (0..d.len()).map(|k| if d[k] == 1 { 0 } else { idx[k + off] * s[k] }).sum()
        };
        (0..yd.iter().product())
            .map(|i| {
                let idx = index_of(i, yd);
                let (x, s) = (a[at(ad, &idx)] as f64, b[at(bd, &idx)] as f64);
                let v = match kind {
                    BinaryKind::Add => x + s,
                    BinaryKind::Sub => x - s,
                    BinaryKind::Mul => x * s,
                    BinaryKind::Div => x / s,
                    BinaryKind::PRelu => {
                        if x >= 0.0 {
                            x
                        } else {
                            x * s
                        }
                    }
                };
                v as f32
            })
            .collect()
    }

    const SHAPES: [(&[usize], &[usize]); 15] = [
        (&[2, 3, 5, 7], &[2, 3, 5, 7]),
        (&[2, 3, 5, 7], &[3, 1, 1]),
        (&[2, 3, 5, 7], &[1]),
        (&[2, 3, 5, 7], &[]),
        (&[1, 3, 1, 7], &[2, 1, 5, 1]),
        (&[5, 7], &[2, 3, 5, 7]),
        (&[2, 3, 5, 7], &[5, 1]),
        (&[2, 3, 5, 7], &[1, 3, 5, 1]),
        (&[2, 1, 2, 3, 4, 3], &[5, 1, 3, 1, 1]),
        (&[7], &[1]),
        (&[3, 1], &[1, 4]),
        (&[1, 1, 6, 1], &[1, 4, 1, 5]),
        // Enough work for two threads (they split rows where a window has four or more).
        (&[1, 6, 20, 48], &[1, 6, 20, 48]),
        (&[1, 6, 20, 48], &[6, 1, 1]),
        (&[1, 6, 20, 48], &[20, 1]),
    ];

    /// Rows of an operand of shape `d` that output rows `lo..hi` read.
    fn operand_rows(d: &[usize]) -> impl Fn(usize, usize) -> (usize, usize) {
        let follows = d.len() >= 2 && d[d.len() - 2] != 1;
        move |lo, hi| if follows { (lo, hi) } else { (0, 1) }
    }

    #[test]
    fn binary_broadcasts_like_numpy_by_bands() {
        let kinds =
            [BinaryKind::Add, BinaryKind::Sub, BinaryKind::Mul, BinaryKind::Div, BinaryKind::PRelu];
        for (case, &(ad, bd)) in SHAPES.iter().enumerate() {
            let yd = broadcast_shapes(ad, bd).unwrap();
            let a = rand_vec(100 + case as u64, ad.iter().product());
            // Keep divisors away from zero.
            let b: Vec<f32> = rand_vec(200 + case as u64, bd.iter().product())
                .iter()
                .map(|v| v + 0.5 * v.signum())
                .collect();
            for (kind, (wa, wb)) in kinds
                .iter()
                .flat_map(|&k| [(false, false), (true, false), (false, true)].map(|w| (k, w)))
            {
                let op = leak(Binary {
                    kind,
                    act: if kind == BinaryKind::Add { Some(Activation::Relu) } else { None },
                });
                let (na, nb) = (operand_rows(ad), operand_rows(bd));
                let mut inputs = Vec::new();
                let mut weights = Vec::new();
                for (is_w, d, v, need) in [(wa, ad, &a, &na as &Need<'_>), (wb, bd, &b, &nb)] {
                    if is_w {
                        weights.push((d, v.as_slice()));
                    } else {
                        inputs.push(Input { dims: d, data: v, need });
                    }
                }
                let got = check_bands(&inputs, &weights, &yd, |xs, ws, y| {
                    let a = if wa { Operand::Weight(ws[0]) } else { Operand::Arena(xs[0]) };
                    let b = if wb {
                        Operand::Weight(ws[usize::from(wa)])
                    } else {
                        Operand::Arena(xs[usize::from(!wa)])
                    };
                    Kernel::Binary { op, a, b, y }
                });
                let mut want = binary_ref(kind, ad, &a, bd, &b, &yd);
                if op.act.is_some() {
                    want.iter_mut().for_each(|v| *v = v.max(0.0));
                }
                assert_close(
                    &got,
                    &want,
                    1e-6,
                    &format!("{kind:?} {ad:?} {bd:?} weights {wa} {wb}"),
                );
            }
        }
    }

    #[test]
    fn binary_matches_candle() {
        for (case, &(ad, bd)) in SHAPES.iter().enumerate() {
            let yd = broadcast_shapes(ad, bd).unwrap();
            let a = rand_vec(300 + case as u64, ad.iter().product());
            let b: Vec<f32> = rand_vec(400 + case as u64, bd.iter().product())
                .iter()
                .map(|v| v + 0.5 * v.signum())
                .collect();
            let (ta, tb) = (candle(ad, &a), candle(bd, &b));
            for kind in [BinaryKind::Add, BinaryKind::Sub, BinaryKind::Mul, BinaryKind::Div] {
                let mut rig = Rig::new();
                let (xa, xb) = (rig.input(ad, &a), rig.input(bd, &b));
                let y = rig.whole(&yd);
                let op = Binary { kind, act: None };
                rig.run(&Kernel::Binary {
                    op: &op,
                    a: Operand::Arena(xa),
                    b: Operand::Arena(xb),
                    y,
                })
                .unwrap();
                let theirs = match kind {
                    BinaryKind::Add => ta.broadcast_add(&tb),
                    BinaryKind::Sub => ta.broadcast_sub(&tb),
                    BinaryKind::Mul => ta.broadcast_mul(&tb),
                    _ => ta.broadcast_div(&tb),
                };
                // Single f32 operations: candle must agree to the bit.
                assert_bits(
                    &rig.read(&y),
                    &values(&theirs.unwrap()),
                    &format!("{kind:?} {ad:?} {bd:?}"),
                );
            }
        }
    }

    #[test]
    fn prelu_uses_b_as_slope() {
        let (xd, sd) = ([1, 3, 2, 2], [3, 1, 1]);
        let x = [-1.0, 2.0, -3.0, 4.0, -1.0, -2.0, 3.0, 4.0, 1.0, -2.0, 0.0, -0.5];
        let mut rig = Rig::new();
        let xw = rig.input(&xd, &x);
        let s = rig.weight(&sd, &[0.5, 0.25, 2.0]);
        let y = rig.whole(&xd);
        let op = Binary { kind: BinaryKind::PRelu, act: None };
        rig.run(&Kernel::Binary { op: &op, a: Operand::Arena(xw), b: Operand::Weight(s), y })
            .unwrap();
        let want = [-0.5, 2.0, -1.5, 4.0, -0.25, -0.5, 3.0, 4.0, 1.0, -4.0, 0.0, -1.0];
        assert_bits(&rig.read(&y), &want, "prelu");
    }

    #[test]
    fn bad_calls_are_errors() {
        let mut rig = Rig::new();
        let x = rig.input(&[1, 2, 4, 3], &rand_vec(5, 24));
        let y = rig.whole(&[1, 2, 4, 3]);
        let add = Binary { kind: BinaryKind::Add, act: None };
        // Shapes that do not broadcast.
        let w = rig.weight(&[4, 2], &[0.0; 8]);
        assert!(rig
            .run(&Kernel::Binary { op: &add, a: Operand::Arena(x), b: Operand::Weight(w), y })
            .is_err());
        let z = rig.whole(&[1, 2, 5, 3]);
        assert!(rig
            .run(&Kernel::Binary { op: &add, a: Operand::Arena(x), b: Operand::Arena(x), y: z })
            .is_err());
        // Rows the input window does not hold.
        let part = rig.ring(&[1, 2, 4, 3], 2);
        let part = rig.put_rows(&part, &rand_vec(5, 24), 0, 2);
        let yb = frugal_core::RowWindow { first_row: 1, rows: 2, ..y };
        assert!(rig.run(&Kernel::Unary { act: Activation::Relu, x: part, y: yb }).is_err());
        assert!(rig
            .run(&Kernel::Binary { op: &add, a: Operand::Arena(part), b: Operand::Arena(x), y: yb })
            .is_err());
        // Wrong number of per-channel parameters.
        let s = rig.weight(&[3], &[1.0; 3]);
        assert!(rig.run(&Kernel::Affine { act: None, x, scale: s, shift: s, y }).is_err());
        // Empty inputs: nothing to compute from (an empty output is simply done).
        let empty = rig.whole(&[1, 2, 0, 3]);
        assert!(rig.run(&Kernel::Unary { act: Activation::Relu, x: empty, y: empty }).is_ok());
        assert!(rig
            .run(&Kernel::Binary { op: &add, a: Operand::Arena(empty), b: Operand::Arena(x), y })
            .is_err());
        // A malformed window (rows past the tensor).
        let bad = frugal_core::RowWindow { first_row: 3, rows: 2, ..y };
        assert!(rig.run(&Kernel::Unary { act: Activation::Relu, x, y: bad }).is_err());
    }
}
