//! Kernel dispatch: one file per op family, plus the window checks and addressing helpers the
//! families share.
//!
//! Every kernel validates shapes, weights and the rows its input windows hold before touching
//! memory, so bad calls come back as errors rather than panics or stale reads.

mod conv;
pub(crate) use conv::SERIAL;
mod conv_transpose;
mod dense;
mod eltwise;
mod layout;
mod pool;
mod reduce;
mod resize;
#[cfg(test)]
pub(crate) mod testutil;

use std::ops::Range;

use frugal_core::backend::{Dims, Kernel, Operand, RowWindow, MAX_RANK};
use frugal_core::{Result, WeightId};

use crate::arena::{Io, Src};
use crate::gemm::Isa;
use crate::{fail, CpuBackend, Ctx, Weight};

/// An operand with its weight looked up.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Opd<'a> {
    /// Rows of an activation in the arena.
    Rows(RowWindow),
    /// A constant: row-major data, its shape, and the packed form `prepare` made, if any.
    Const { data: &'a [f32], dims: Dims, packed: Option<&'a [f32]> },
}

impl Opd<'_> {
    /// Shape of the whole tensor.
    pub(crate) fn dims(&self) -> Dims {
        match self {
            Opd::Rows(w) => w.dims,
            Opd::Const { dims, .. } => *dims,
        }
    }
}

/// Weight repacking done once per node when a session is created.
pub(crate) fn prepare(b: &mut CpuBackend, k: &Kernel<'_>) -> Result<()> {
    match k {
        Kernel::Conv { op, x, w, y, .. } => conv::prepare(b, op, x, w, y),
        Kernel::Gemm { op, b: w, .. } => dense::prepare_gemm(b, op, w),
        Kernel::MatMul { b: Operand::Weight(w), .. } => dense::prepare_matmul(b, w),
        _ => Ok(()),
    }
}

/// Scratch floats a kernel call needs on `threads` threads.
pub(crate) fn workspace_floats(k: &Kernel<'_>, isa: Isa, threads: usize) -> usize {
    match k {
        Kernel::Conv { op, x, w, y, .. } => conv::workspace(op, x, w, y, isa, threads),
        Kernel::Resize { op, y, .. } => resize::workspace(op, y),
        Kernel::MatMul { b, .. } => dense::matmul_workspace(b),
        _ => 0,
    }
}

/// The interchangeable implementations of a kernel on `threads` threads (same bits).
pub(crate) fn variants(k: &Kernel<'_>, isa: Isa, threads: usize) -> &'static [&'static str] {
    match k {
        Kernel::Conv { op, x, w, y, .. } => conv::variants(op, x, w, y, isa, threads),
        _ => &[],
    }
}

/// Runs one kernel.
pub(crate) fn execute(k: &Kernel<'_>, io: Io<'_>, weights: &[Weight], ctx: Ctx<'_>) -> Result<()> {
    let isa = ctx.isa;
    let family = k.family();
    if k.output().dims.numel() == 0 {
        return Ok(());
    }
    check_window(family, k.output())?;
    for w in crate::inputs_of(k) {
        // Concat skips empty pieces; any other kernel would divide by or index into nothing.
        if w.dims.numel() == 0 && !matches!(k, Kernel::Concat { .. }) {
            return Err(fail(family, format!("empty input {:?}", w.dims)));
        }
        if w.dims.numel() > 0 {
            check_window(family, w)?;
        }
    }
    let get = |id: WeightId| -> Result<&Weight> {
        weights.get(id.0).ok_or_else(|| fail(family, format!("unknown weight {}", id.0)))
    };
    let data = |id: WeightId, dims: &Dims| -> Result<&[f32]> {
        let w = get(id)?;
        if w.conv_panels.is_some() {
            return Err(fail(
                family,
                format!("weight {} is repacked for a convolution, which shares it", id.0),
            ));
        }
        let d = w.f32();
        if d.len() != dims.numel() {
            return Err(fail(
                family,
                format!("weight {} holds {} values for {dims:?}", id.0, d.len()),
            ));
        }
        Ok(d)
    };
    let opd = |o: &Operand| -> Result<Opd<'_>> {
        Ok(match o {
            Operand::Arena(w) => Opd::Rows(*w),
            Operand::Weight(w) => Opd::Const {
                data: data(w.id, &w.dims)?,
                dims: w.dims,
                packed: get(w.id)?.packed.as_deref(),
            },
        })
    };
    match k {
        Kernel::Conv { op, x, w, b, r, y } => {
            let bias = match b {
                Some(b) => Some(get(b.id)?.f32()),
                None => None,
            };
            let weight = conv::Weights::of(get(w.id)?, op)?;
            conv::conv(op, x, weight, &w.dims, bias, r.as_ref(), y, io, ctx)
        }
        Kernel::ConvTranspose { op, x, w, b, y } => {
            let bias = match b {
                Some(b) => Some(data(b.id, &b.dims)?),
                None => None,
            };
            conv_transpose::conv_transpose(op, x, data(w.id, &w.dims)?, &w.dims, bias, y, io, ctx)
        }
        Kernel::Pool { op, x, y } => pool::pool(op, x, y, io, ctx),
        Kernel::GlobalAvgPool { x, y } => pool::global_avg(x, y, io),
        Kernel::Affine { act, x, scale, shift, y } => {
            let (s, t) = (data(scale.id, &scale.dims)?, data(shift.id, &shift.dims)?);
            eltwise::affine(act.as_ref(), x, s, t, y, io, ctx.par)
        }
        Kernel::Unary { act, x, y } => eltwise::unary(act, x, y, io, ctx.par),
        Kernel::Binary { op, a, b, y } => eltwise::binary(op, opd(a)?, opd(b)?, y, io, ctx.par),
        Kernel::Concat { axis, xs, y } => layout::concat(*axis, xs, y, io),
        Kernel::Transpose { perm, x, y } => layout::transpose(perm, x, y, io),
        Kernel::Copy { x, y } => layout::copy(opd(x)?, y, io),
        Kernel::Resize { op, x, y } => resize::resize(op, x, y, io, ctx.par),
        Kernel::Gemm { op, a, b, c, y } => {
            let c = match c {
                Some(c) => Some((data(c.id, &c.dims)?, c.dims)),
                None => None,
            };
            dense::gemm(op, a, opd(&Operand::Weight(*b))?, c, y, io, ctx)
        }
        Kernel::MatMul { op, a, b, y } => dense::matmul(op, opd(a)?, opd(b)?, y, io, isa),
        Kernel::Reduce { op, x, y } => reduce::reduce(op, x, y, io),
        Kernel::Softmax { op, x, y } => reduce::softmax(op, x, y, io),
    }
}

/// Calls `f(plane, ring)` for every output plane of window `y`, the planes split between
/// threads when there are `work` flops or more (pointwise kernels: about 4 per element):
/// `ring` is the plane's slots, row `r` at `y.slot(r) * y.row_stride`. `out` and `out_base`
/// are the call's [`Io`] output.
pub(crate) fn split_planes(
    family: &str,
    y: &RowWindow,
    out: &mut [f32],
    out_base: usize,
    par: crate::par::Par<'_>,
    work: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Result<()> {
    let plane_len = y.capacity * y.row_stride;
    split_plane_tasks(family, y, out, out_base, par, work, |first, planes| {
        for (i, ring) in planes.chunks_mut(plane_len).enumerate() {
            f(first + i, ring);
        }
    })
}

/// Calls `f(plane, row, cols, dst)` for every output row of window `y`, `dst` being columns
/// `cols` of that row. With `work` flops or more and threads to share them, the window's
/// positions (its rows x columns, row-major) are split in one contiguous run per thread,
/// each thread doing its run of every plane, the caller the first (see `par`): a pointwise
/// kernel after a convolution that split its rows or columns the same way then reads what
/// the same core wrote. Windows of fewer rows than two per thread (one-row firings by parts)
/// split planes: split in space they ran slower (the text detector's 9 MB plan at 1024x1024,
/// 2 threads: its batch norms 24.5 -> 34.7 ms), and slower still with the depthwise and
/// matrix-product kernels splitting each row's columns the same way (the run 297 -> 350 ms).
pub(crate) fn split_space(
    family: &str,
    y: &RowWindow,
    out: &mut [f32],
    out_base: usize,
    par: crate::par::Par<'_>,
    work: usize,
    f: impl Fn(usize, usize, Range<usize>, &mut [f32]) + Sync,
) -> Result<()> {
    let (planes, _, width) = y.geometry();
    let par = par.for_work(work);
    let t = par.threads();
    if !splits_space(y, par) {
        return split_planes(family, y, out, out_base, par, work, |p, ring| {
            for r in rows(y) {
                f(p, r, 0..width, &mut ring[y.slot(r) * y.row_stride..][..width]);
            }
        });
    }
    let out = window_buffer(family, y, out, out_base)?;
    let plane_len = y.capacity * y.row_stride;
    let out = crate::par::SharedMut::new(out);
    let cells = y.rows * width;
    par.each(t, |i| {
        // Run boundaries on multiples of 16 positions (64-byte lines of unpadded rows).
        let at = |i: usize| (cells * i / t).next_multiple_of(16).min(cells);
        let (a, b) = (at(i), at(i + 1));
        // Where the run starts, the same in every plane.
        let (r0, c0) = (y.first_row + a / width, a % width);
        for p in 0..planes {
            let (mut r, mut c, mut left) = (r0, c0, b - a);
            while left > 0 {
                let n = (width - c).min(left);
                let start = p * plane_len + y.slot(r) * y.row_stride + c;
                // SAFETY: columns c .. c + n of row r of plane p: inside the window's buffer
                // (`extent`), and this task's positions alone; `out` stays borrowed mutably.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(start), n) };
                f(p, r, c..c + n, dst);
                (r, c, left) = (r + 1, 0, left - n);
            }
        }
    });
    Ok(())
}

/// Whether [`split_space`] splits window `y` in space on `par` (already reduced to the
/// call's work): two threads or more, and at least two rows per thread.
pub(crate) fn splits_space(y: &RowWindow, par: crate::par::Par<'_>) -> bool {
    let t = par.threads();
    t >= 2 && y.rows >= 2 * t
}

/// [`split_planes`] a task at a time: `f(first, planes)` with the task's consecutive planes
/// from `first` (for kernels that set up per-task state once, not per plane).
pub(crate) fn split_plane_tasks(
    family: &str,
    y: &RowWindow,
    out: &mut [f32],
    out_base: usize,
    par: crate::par::Par<'_>,
    work: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Result<()> {
    let (planes, _, _) = y.geometry();
    let plane_len = y.capacity * y.row_stride;
    let out = window_buffer(family, y, out, out_base)?;
    let par = par.for_work(work);
    let tile = par.split(planes, 1);
    par.chunks(out, tile * plane_len, |t, chunk| f(t * tile, chunk));
    Ok(())
}

/// The part of the call's output `out` (arena index `out_base` on) that holds window `y`'s
/// buffer: every plane, every ring slot.
fn window_buffer<'o>(
    family: &str,
    y: &RowWindow,
    out: &'o mut [f32],
    out_base: usize,
) -> Result<&'o mut [f32]> {
    let all = crate::arena::extent(y);
    all.start
        .checked_sub(out_base)
        .and_then(|at| out.get_mut(at..at + all.len()))
        .ok_or_else(|| fail(family, "output planes outside the output buffer"))
}

/// Rows of window `w` from `r` (before `end`) that follow each other in memory: unpadded
/// rows up to the ring's wrap.
pub(crate) fn contiguous_rows(w: &RowWindow, r: usize, end: usize) -> usize {
    let (_, _, width) = w.geometry();
    if w.row_stride == width {
        (end - r).min(w.capacity - w.slot(r))
    } else {
        1
    }
}

/// Checks a window is self-consistent: its rows lie inside the tensor, fit in its ring, and
/// its rows are at least as long as the tensor's width.
fn check_window(family: &str, w: &RowWindow) -> Result<()> {
    w.malformed().map_or(Ok(()), |m| Err(fail(family, m)))
}

/// The rows a window covers.
pub(crate) fn rows(w: &RowWindow) -> Range<usize> {
    w.first_row..w.first_row + w.rows
}

/// Fails unless input window `x` holds rows `lo..hi` (nothing is needed when `lo >= hi`).
pub(crate) fn need_rows(family: &str, x: &RowWindow, lo: usize, hi: usize) -> Result<()> {
    x.missing(lo, hi).map_or(Ok(()), |m| Err(fail(family, m)))
}

/// Fails unless `w` holds every row of its tensor, unwrapped (ops that read across rows).
pub(crate) fn need_whole(family: &str, w: &RowWindow) -> Result<()> {
    w.not_whole().map_or(Ok(()), |m| Err(fail(family, m)))
}

/// Fails unless `dims` equals `want`.
pub(crate) fn need_dims(family: &str, what: &str, dims: &Dims, want: &[usize]) -> Result<()> {
    if dims.as_slice() != want {
        return Err(fail(family, format!("{what} has shape {dims:?}, expected {want:?}")));
    }
    Ok(())
}

/// Row `row` of plane `plane` of input window `w`. A free function over the copyable `Src`, so
/// that kernels can read inputs while holding an output row mutably.
#[inline]
pub(crate) fn in_row<'a>(src: Src<'a>, w: &RowWindow, plane: usize, row: usize) -> &'a [f32] {
    let (_, _, width) = w.geometry();
    src.slice(w.row_start(plane, row), width)
}

/// The f32 data of an uploaded weight.
pub(crate) fn weight_f32<'b>(b: &'b CpuBackend, id: WeightId, family: &str) -> Result<&'b [f32]> {
    Ok(b.weights.get(id.0).ok_or_else(|| fail(family, format!("unknown weight {}", id.0)))?.f32())
}

/// Arena-index strides of every axis of a window that holds its whole tensor unwrapped
/// (`need_whole`): the element at multi-index `i` lives at `row_start(0, 0) + sum(i[a] * s[a])`,
/// which is `row_start`'s own formula when no row wraps (`row % capacity == row`).
pub(crate) fn strides(w: &RowWindow) -> [usize; MAX_RANK] {
    debug_assert!(w.capacity >= w.geometry().1, "strides of a wrapping ring");
    let d = w.dims.as_slice();
    let r = d.len();
    let mut s = [0; MAX_RANK];
    if r >= 1 {
        s[r - 1] = 1;
    }
    if r >= 2 {
        s[r - 2] = w.row_stride;
    }
    let mut acc = w.capacity * w.row_stride;
    for a in (0..r.saturating_sub(2)).rev() {
        s[a] = acc;
        acc *= d[a];
    }
    s
}

/// Splits `i` into a row-major multi-index over `dims`.
#[inline]
pub(crate) fn unravel(mut i: usize, dims: &[usize], idx: &mut [usize; MAX_RANK]) {
    for a in (0..dims.len()).rev() {
        let d = dims[a].max(1);
        idx[a] = i % d;
        i /= d;
    }
}

/// Addresses the elements of a window by their row-major index in the whole tensor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Flat {
    win: RowWindow,
    h: usize,
    w: usize,
}

impl Flat {
    pub(crate) fn new(win: &RowWindow) -> Flat {
        let (_, h, w) = win.geometry();
        Flat { win: *win, h: h.max(1), w: w.max(1) }
    }

    /// Arena index of element `f`, and how many elements of its row start there.
    #[inline]
    pub(crate) fn at(&self, f: usize) -> (usize, usize) {
        let g = f / self.w;
        let c = f % self.w;
        (self.win.row_start(g / self.h, g % self.h) + c, self.w - c)
    }

    /// Tensor row of element `f`.
    #[inline]
    pub(crate) fn row(&self, f: usize) -> usize {
        (f / self.w) % self.h
    }
}

/// Stores a packed form of a weight, refusing to replace a different one (a constant shared by
/// dense layers that read it in different layouts).
pub(crate) fn set_packed(
    b: &mut CpuBackend,
    id: WeightId,
    packed: Vec<f32>,
    family: &str,
) -> Result<()> {
    let w =
        b.weights.get_mut(id.0).ok_or_else(|| fail(family, format!("unknown weight {}", id.0)))?;
    if let Some(old) = &w.packed {
        if !old.iter().map(|v| v.to_bits()).eq(packed.iter().map(|v| v.to_bits())) {
            return Err(fail(
                family,
                format!("weight {} is shared by dense layers with different layouts", id.0),
            ));
        }
    }
    w.packed = Some(packed);
    Ok(())
}
