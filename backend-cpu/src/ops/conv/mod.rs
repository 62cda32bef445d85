//! Convolution over row windows: depthwise convolutions run directly; so do dense stride-1
//! ones on AVX-512 (`direct`, the matrix product's microkernel reading the input rows in
//! place); everything else is a matrix product of the weights with an im2col of a band of
//! output rows, packed straight into the gemm panel layout in scratch. Bias and activation
//! are applied as the tile is stored.

mod depthwise;
#[cfg(target_arch = "x86_64")]
mod direct;
mod im2col;

use frugal_core::backend::{Dims, RowWindow};
use frugal_core::ops::{Activation, Conv};
use frugal_core::Result;

use crate::arena::{Io, Src};
use crate::gemm::{self, MatA, Residual};
use crate::par::{Par, SharedMut};
use crate::{fail, CpuBackend, Weight};
use crate::{simd, Ctx};
use im2col::im2col;

/// A convolution's weights as the backend holds them: row-major `[M, C/groups, kh, kw]`, or
/// each group's `[M/groups, K]` matrix packed by [`gemm::pack_a`] (`prepare`), which the
/// microkernels read as contiguous runs of output channels.
#[derive(Clone, Copy)]
pub(crate) struct Weights<'a> {
    data: &'a [f32],
    packed: bool,
}

impl<'a> Weights<'a> {
    /// The weights of `op` as stored in `w`.
    pub(crate) fn of(w: &'a Weight, op: &Conv) -> Result<Weights<'a>> {
        match w.conv_panels {
            None => Ok(Weights { data: w.f32(), packed: false }),
            Some(groups) if groups == op.groups => {
                Ok(Weights { data: w.data.as_f32().unwrap_or(&[]), packed: true })
            }
            Some(groups) => Err(fail(
                "conv",
                format!(
                    "the weight is packed for {groups} groups, this convolution has {}",
                    op.groups
                ),
            )),
        }
    }
}

/// Repacks a matrix-product convolution's weight for the microkernels, in place of its
/// row-major data (same size), where they read it faster so ([`gemm::packs_a`]: AVX-512).
/// Depthwise weights stay as they are; a weight another layer already repacked (a dense
/// layer's B) stays row-major and runs through strided reads.
pub(crate) fn prepare(
    be: &mut CpuBackend,
    op: &Conv,
    x: &RowWindow,
    w: &frugal_core::WeightRef,
    y: &RowWindow,
) -> Result<()> {
    let g = geo(op, x, &w.dims, y);
    if is_depthwise(op, &g) || !gemm::packs_a(be.isa) {
        return Ok(());
    }
    let weight = be
        .weights
        .get_mut(w.id.0)
        .ok_or_else(|| fail("conv", format!("unknown weight {}", w.id.0)))?;
    match weight.conv_panels {
        Some(groups) if groups == op.groups => return Ok(()),
        Some(groups) => {
            return Err(fail(
                "conv",
                format!(
                    "weight {} is shared by convolutions of {groups} and {} groups",
                    w.id.0, op.groups
                ),
            ))
        }
        None if weight.packed.is_some() => return Ok(()),
        None => {}
    }
    let data = weight.f32();
    let len = g.mg * g.k;
    if data.len() != g.m * g.k || op.groups == 0 {
        // `conv` reports the size mismatch when it runs.
        return Ok(());
    }
    let mut packed = vec![0.0; data.len()];
    for (src, dst) in data.chunks_exact(len.max(1)).zip(packed.chunks_exact_mut(len.max(1))) {
        gemm::pack_a(src, g.mg, g.k, dst);
    }
    let packed = frugal_core::Tensor::from_f32(weight.data.shape().to_vec(), packed);
    // The row-major values are not read again: a memory-mapped file's pages leave the
    // resident set, so the weight is not held twice.
    std::mem::replace(&mut weight.data, packed).release_pages();
    weight.conv_panels = Some(op.groups);
    Ok(())
}

/// Upper bound of one band's packed im2col, in floats (keeps it in L2).
const BAND_FLOATS: usize = 128 * 1024;

/// Geometry shared by the helpers.
pub(super) struct Geo {
    pub(super) n: usize,
    pub(super) cin: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) m: usize,
    pub(super) wout: usize,
    pub(super) cg: usize,
    pub(super) mg: usize,
    pub(super) k: usize,
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
    op.groups == g.cin && g.cg == 1 && g.m.is_multiple_of(g.cin)
}

/// Whether a dense convolution runs without im2col ([`direct`]: AVX-512, stride 1).
fn is_direct(op: &Conv, g: &Geo, isa: gemm::Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !is_depthwise(op, g) && direct::applies(op, g, isa)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (op, g, isa);
        false
    }
}

/// Whether output rows `r0 .. r1` read their B in place ([`Band::in_place`]): a pointwise
/// convolution (1x1, stride 1, no padding, so input row = output row) whose input rows are one
/// run of the ring in every plane. A call whose rows all do packs nothing and needs no
/// scratch: one-row firings by parts always, where the largest packing (a 16-column panel of a
/// 960-deep product on a 7-column map, 60 KiB) had been most of a small plan's scratch.
fn reads_in_place(op: &Conv, x: &RowWindow, g: &Geo, (r0, r1): (usize, usize)) -> bool {
    op.kernel == [1, 1]
        && op.strides == [1, 1]
        && op.pads == [0; 4]
        && x.row_stride == g.w
        && g.w == g.wout
        && x.capacity > 0
        && r0 % x.capacity + r1 - r0 <= x.capacity
}

/// A call's output rows.
fn call_rows(y: &RowWindow) -> (usize, usize) {
    (y.first_row, y.first_row + y.rows)
}

/// Output rows per band for the im2col path.
fn band_rows(g: &Geo) -> usize {
    (BAND_FLOATS / (g.k.max(1) * g.wout.max(1))).max(1)
}

/// Ways to split a matrix-product convolution across threads, or not to ("serial": the
/// calling thread alone, which by parts can beat handing a few microseconds of work to another
/// core).
const SPLITS: &[&str] = &["channels", "columns", SERIAL];
/// Depthwise loop nests.
const DEPTHWISE: &[&str] = &["ring", "direct"];
/// Depthwise loop nests, or the backend's own on the calling thread alone.
const DEPTHWISE_THREADS: &[&str] = &["ring", "direct", SERIAL];
/// The variant that runs the backend's own kernel choice on the calling thread alone.
pub(crate) const SERIAL: &str = "serial";

/// The variants of a convolution call: the thread split where there are threads (or none),
/// the depthwise loop nest where both apply.
pub(crate) fn variants(
    op: &Conv,
    x: &RowWindow,
    w: &frugal_core::WeightRef,
    y: &RowWindow,
    isa: gemm::Isa,
    threads: usize,
) -> &'static [&'static str] {
    variant_names(op, &geo(op, x, &w.dims, y), isa, threads)
}

fn variant_names(op: &Conv, g: &Geo, isa: gemm::Isa, threads: usize) -> &'static [&'static str] {
    if is_depthwise(op, g) {
        match (depthwise::can_direct(op, g, isa), threads > 1) {
            (true, true) => DEPTHWISE_THREADS,
            (true, false) => DEPTHWISE,
            (false, true) => &[SERIAL],
            (false, false) => &[],
        }
    } else if threads > 1 {
        SPLITS
    } else {
        &[]
    }
}

/// Scratch floats for producing `y.rows` rows on `threads` threads.
pub(crate) fn workspace(
    op: &Conv,
    x: &RowWindow,
    w: &frugal_core::WeightRef,
    y: &RowWindow,
    isa: gemm::Isa,
    threads: usize,
) -> usize {
    let g = geo(op, x, &w.dims, y);
    if is_depthwise(op, &g) {
        return depthwise::workspace(op, &g, isa, y.rows, threads);
    }
    if is_direct(op, &g, isa) || reads_in_place(op, x, &g, call_rows(y)) {
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
    weight: Weights<'_>,
    wd: &Dims,
    bias: Option<&[f32]>,
    residual: Option<&RowWindow>,
    y: &RowWindow,
    io: Io<'_>,
    ctx: Ctx<'_>,
) -> Result<()> {
    // The serial variant: the calling thread alone, the backend's own choice of the rest
    // (names looked up only for calls that name a variant).
    let serial = ctx.variant.is_some_and(|v| {
        variant_names(op, &geo(op, x, wd, y), ctx.isa, ctx.par.threads()).get(v) == Some(&SERIAL)
    });
    let ctx = if serial { Ctx { par: Par::serial(), variant: None, ..ctx } } else { ctx };
    let Some(r) = residual else {
        if op.residual {
            return Err(fail("conv", "a residual convolution was called without its residual"));
        }
        return product(op, x, weight, wd, bias, None, y, io, ctx);
    };
    if !op.residual || r.dims != y.dims {
        return Err(fail("conv", format!("residual {:?} for output {:?}", r.dims, y.dims)));
    }
    if y.rows > 0 && (r.first_row > y.first_row || r.first_row + r.rows < y.first_row + y.rows) {
        return Err(fail(
            "conv",
            format!(
                "output rows {}..{} need residual rows the window ({}..{}) does not hold",
                y.first_row,
                y.first_row + y.rows,
                r.first_row,
                r.first_row + r.rows
            ),
        ));
    }
    // The product with its bias first, then `act(y + r)` over the rows it wrote: the order of
    // the unfused Conv and Add, so the bits are theirs. Matrix products add `r` tile by tile
    // while the tile is in L1 where the rows are one run in each of r's planes; otherwise a
    // pass over the output after the product.
    let bare = Conv { act: None, ..op.clone() };
    let g = geo(op, x, wd, y);
    let fused = !is_depthwise(op, &g)
        && !is_direct(op, &g, ctx.isa)
        && r.row_stride == y.row_stride
        && y.first_row % r.capacity + y.rows <= r.capacity;
    if fused {
        let res = Some((r, op.act.as_ref()));
        return product(&bare, x, weight, wd, bias, res, y, io, ctx);
    }
    let Io { src, out, out_base, scratch } = io;
    let par = ctx.par;
    let io = Io { src, out: &mut *out, out_base, scratch };
    product(&bare, x, weight, wd, bias, None, y, io, ctx)?;
    add_residual(y, r, &src, out, op.act.as_ref(), par);
    Ok(())
}

/// `out = act(out + r)` over rows `y.first_row .. y.first_row + y.rows` of every plane.
fn add_residual(
    y: &RowWindow,
    r: &RowWindow,
    src: &Src<'_>,
    out: &mut [f32],
    act: Option<&Activation>,
    par: Par<'_>,
) {
    let (planes, _, w) = y.geometry();
    let plane_len = y.capacity * y.row_stride;
    let par = par.for_work(planes * y.rows * w);
    let tile = par.split(planes, 1);
    par.chunks(&mut out[..planes * plane_len], tile * plane_len, |t, chunk| {
        for (i, plane) in chunk.chunks_mut(plane_len).enumerate() {
            let p = t * tile + i;
            for oy in y.first_row..y.first_row + y.rows {
                let start = (oy % y.capacity) * y.row_stride;
                let o = &mut plane[start..start + w];
                for (v, &rv) in o.iter_mut().zip(src.slice(r.row_start(p, oy), w)) {
                    *v += rv;
                }
                if let Some(act) = act {
                    act.apply_slice(o);
                }
            }
        }
    });
}

/// The convolution itself (bias and `op.act` included), rows `y.first_row ..`; with
/// `residual` (matrix products only, its rows one run per plane), `then(y + r)` after it.
#[allow(clippy::too_many_arguments)]
fn product(
    op: &Conv,
    x: &RowWindow,
    weight: Weights<'_>,
    wd: &Dims,
    bias: Option<&[f32]>,
    residual: Option<(&RowWindow, Option<&Activation>)>,
    y: &RowWindow,
    io: Io<'_>,
    ctx: Ctx<'_>,
) -> Result<()> {
    let Ctx { isa, par, variant } = ctx;
    let g = geo(op, x, wd, y);
    let names = variant_names(op, &g, isa, par.threads());
    let variant = match variant {
        Some(v) if v >= names.len() => {
            return Err(fail("conv", format!("no kernel variant {v} (it has {names:?})")));
        }
        v => v.map(|v| names[v]),
    };
    let par = par.for_work(2 * g.n * g.m * g.k * y.rows * g.wout);
    if weight.data.len() != g.m * g.k || bias.is_some_and(|b| b.len() != g.m) {
        return Err(fail("conv", "weight or bias size does not match the convolution"));
    }
    check_rows(op, x, y, g.h)?;
    if y.row_stride != g.wout {
        // The gemm writes a band of rows as one run per channel.
        return Err(fail("conv", "output rows must be unpadded (row stride = width)"));
    }
    if is_depthwise(op, &g) {
        let direct = match variant {
            Some(v) => v == "direct",
            None => depthwise::prefers_direct(op, &g, isa),
        };
        if weight.packed {
            return Err(fail("conv", "depthwise weights are never repacked"));
        }
        depthwise::depthwise(op, x, weight.data, bias, y, io, &g, isa, par, direct);
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if is_direct(op, &g, isa) {
        // (`conv` never fuses a residual into these: the add runs after the product.)
        assert!(residual.is_none(), "conv: a direct convolution with a fused residual");
        direct::conv(op, x, weight, bias, y, io, &g, par, variant);
        return Ok(());
    }
    let band = band_rows(&g);
    let direct = reads_in_place(op, x, &g, call_rows(y));
    if let Some(per_thread) = thread_bands(&g, band, y, variant, par, io.scratch.len(), direct) {
        return by_thread_rows(op, x, weight, bias, residual, y, io, &g, isa, par, per_thread);
    }
    let (r_end, mut r0) = (y.first_row + y.rows, y.first_row);
    while r0 < r_end {
        // A band never wraps the output ring, so each channel's band is one contiguous run.
        let r1 = (r0 + band).min(r_end).min(r0 - r0 % y.capacity + y.capacity);
        for b in 0..g.n {
            for grp in 0..op.groups {
                let rows = (r0, r1);
                let bd = Band { op, x, y, g: &g, weight, bias, residual, isa, rows, b, grp };
                let packed = &mut io.scratch[..if direct { 0 } else { packed_len(&bd) }];
                let p0 = b * g.m + grp * g.mg;
                let planes = &mut io.out[p0 * bd.plane_len()..(p0 + g.mg) * bd.plane_len()];
                // Threads take columns when the band has at least as many as there are output
                // channels (each packs its own columns and reads all of A: A + B / 2 per
                // thread), channels otherwise (sharing one packing, each reading all of B:
                // A / 2 + B; A is channels x depth, B depth x columns).
                let columns = match variant {
                    Some(v) => v == "columns",
                    None => bd.cols() >= g.mg,
                };
                if columns {
                    bd.split_columns(&io.src, packed, planes, par);
                } else {
                    bd.split_channels(&io.src, packed, planes, par);
                }
            }
        }
        r0 = r1;
    }
    Ok(())
}

/// Rows per band when the threads split the window's rows first (each thread then runs its
/// own bands of its own rows, all channels: columns of the product, in whole bands), or
/// `None` for the band-by-band split. Where the columns split applies to a window of many
/// rows: each thread then writes one run of rows of every plane, the top run the caller's
/// (see `par`), which the depthwise and pointwise kernels split the same way, so a thread
/// reads what it wrote for the layer before from its own cache. Split band by band, each
/// thread's columns of every band interleave with the other's.
fn thread_bands(
    g: &Geo,
    band: usize,
    y: &RowWindow,
    variant: Option<&str>,
    par: Par<'_>,
    scratch: usize,
    direct: bool,
) -> Option<usize> {
    let t = par.threads();
    let columns = match variant {
        Some(v) => v == "columns",
        None => band.min(y.rows) * g.wout >= g.mg,
    };
    if t < 2 || y.rows < 2 * t || g.n != 1 || g.mg != g.m || !columns {
        return None;
    }
    if direct {
        // Nothing to pack.
        return Some(band.min(y.rows.div_ceil(t)));
    }
    // Each thread packs its own band: the scratch of one band of all threads' rows, shared.
    let mut rows = band.min(y.rows.div_ceil(t));
    while rows > 1 && t * gemm::packed_len(g.k, rows * g.wout) > scratch {
        rows -= 1;
    }
    (t * gemm::packed_len(g.k, rows * g.wout) <= scratch).then_some(rows)
}

/// [`product`] with the window's rows split between threads first ([`thread_bands`]): thread
/// `i` runs bands of `band` rows of its own run of rows, on its own part of the scratch.
#[allow(clippy::too_many_arguments)]
fn by_thread_rows(
    op: &Conv,
    x: &RowWindow,
    weight: Weights<'_>,
    bias: Option<&[f32]>,
    residual: Option<(&RowWindow, Option<&Activation>)>,
    y: &RowWindow,
    io: Io<'_>,
    g: &Geo,
    isa: gemm::Isa,
    par: Par<'_>,
    band: usize,
) -> Result<()> {
    let t = par.threads();
    let per = if reads_in_place(op, x, g, call_rows(y)) {
        0
    } else {
        gemm::packed_len(g.k, band * g.wout)
    };
    let plane_len = y.capacity * y.row_stride;
    let len = g.m * plane_len;
    let (src, out, scratch) =
        (io.src, SharedMut::new(&mut io.out[..len]), SharedMut::new(io.scratch));
    par.each(t, |i| {
        let (end, mut r0) = (y.first_row + y.rows * (i + 1) / t, y.first_row + y.rows * i / t);
        // SAFETY: thread i alone uses scratch floats i * per .. (i + 1) * per (`thread_bands`
        // checked they exist), borrowed mutably for the whole call.
        let packed = unsafe { std::slice::from_raw_parts_mut(scratch.ptr().add(i * per), per) };
        while r0 < end {
            // A band never wraps the output ring (one contiguous run per channel).
            let r1 = (r0 + band).min(end).min(r0 - r0 % y.capacity + y.capacity);
            let rows = (r0, r1);
            let bd = Band { op, x, y, g, weight, bias, residual, isa, rows, b: 0, grp: 0 };
            let part = &mut packed[..if per == 0 { 0 } else { packed_len(&bd) }];
            // Rows r0 .. r1 of every plane: this thread's alone.
            bd.columns(&src, part, &out, len, Par::serial());
            r0 = r1;
        }
    });
    Ok(())
}

/// One band of output rows of one image and group: an im2col and a matrix product.
struct Band<'a> {
    op: &'a Conv,
    x: &'a RowWindow,
    y: &'a RowWindow,
    g: &'a Geo,
    weight: Weights<'a>,
    bias: Option<&'a [f32]>,
    /// Added to the product tile by tile, then the activation (see [`product`]).
    residual: Option<(&'a RowWindow, Option<&'a Activation>)>,
    isa: gemm::Isa,
    /// Output rows `[r0, r1)`, inside one pass of the ring.
    rows: (usize, usize),
    b: usize,
    grp: usize,
}

impl<'a> Band<'a> {
    fn cols(&self) -> usize {
        (self.rows.1 - self.rows.0) * self.g.wout
    }

    fn plane_len(&self) -> usize {
        self.y.capacity * self.y.row_stride
    }

    /// Offset of the band inside each output plane.
    fn at(&self) -> usize {
        (self.rows.0 % self.y.capacity) * self.y.row_stride
    }

    /// First input plane of the group.
    fn c0(&self) -> usize {
        self.b * self.g.cin + self.grp * self.g.cg
    }

    /// Weights, bias and epilogue of output channels `i0 .. i0 + rows` of the group.
    fn channels(&self, i0: usize, rows: usize) -> (MatA<'_>, gemm::Epilogue<'_>) {
        let (k, ch) = (self.g.k, self.grp * self.g.mg + i0);
        let a = if self.weight.packed {
            let len = self.g.mg * k;
            let group = &self.weight.data[self.grp * len..(self.grp + 1) * len];
            MatA::panels(group, self.g.mg, k).rows_from(i0)
        } else {
            MatA::strided(&self.weight.data[ch * k..(ch + rows) * k], k, 1)
        };
        let epi = gemm::Epilogue {
            bias: self.bias.map(|bb| &bb[ch..ch + rows]),
            act: simd::in_registers(self.op.act),
            residual: None,
        };
        (a, epi)
    }

    /// The residual of output channels `i0 .. i0 + rows` of the group, columns `j0 ..` of the
    /// band, as the product's epilogue adds it.
    fn residual<'s>(&self, src: &Src<'s>, i0: usize, rows: usize, j0: usize) -> Option<Residual<'s>>
    where
        'a: 's,
    {
        let (r, then) = self.residual?;
        let ld = r.capacity * r.row_stride;
        let start = r.row_start(self.c0_out() + i0, self.rows.0) + j0;
        let data = src.slice(start, (rows.max(1) - 1) * ld + self.cols() - j0);
        Some(Residual { data, ld, then })
    }

    /// First output plane of the band's group.
    fn c0_out(&self) -> usize {
        self.b * self.g.m + self.grp * self.g.mg
    }

    /// The band's B read in place, when the convolution is pointwise (1x1, stride 1, no
    /// padding) and the band's input rows are one run in every plane: `(b, ld)` with
    /// `B[ci][j] = b[ci * ld + j]` for the band's columns `j`. No im2col then (a last partial
    /// panel is loaded masked); the microkernels are the same, so are the bits.
    fn in_place<'s>(&self, src: &Src<'s>) -> Option<(&'s [f32], usize)> {
        let x = self.x;
        if !reads_in_place(self.op, x, self.g, self.rows) {
            return None;
        }
        let ld = x.capacity * x.row_stride;
        let start = x.row_start(self.c0(), self.rows.0);
        let len = (self.g.cg - 1) * ld + self.cols();
        src.contains(&(start..start + len)).then(|| (src.slice(start, len), ld))
    }

    /// Activations that cannot run in registers, applied after the product is stored.
    fn post(&self) -> Option<&Activation> {
        simd::after_store(&self.op.act)
    }

    /// Threads split the output channels; the im2col is shared, packed in parallel by panels
    /// (or not at all when B is read in place).
    fn split_channels(&self, src: &Src<'_>, packed: &mut [f32], planes: &mut [f32], par: Par<'_>) {
        let (k, ncols, plane_len, at) = (self.g.k, self.cols(), self.plane_len(), self.at());
        let direct = self.in_place(src);
        let packed = &mut packed[..if direct.is_some() { 0 } else { gemm::packed_len(k, ncols) }];
        if direct.is_none() {
            let panels = par.split(ncols.div_ceil(gemm::NR), 1);
            par.chunks(packed, panels * gemm::NR * k, |t, part| {
                let j0 = t * panels * gemm::NR;
                let j1 = (j0 + panels * gemm::NR).min(ncols);
                im2col(self.op, self.x, src, part, self.c0(), self.rows, j0..j1, self.g, self.isa);
            });
        }
        let packed = &*packed;
        let tile = par.split(self.g.mg, gemm::MR);
        par.chunks(planes, tile * plane_len, |t, out| {
            let rows = out.len() / plane_len;
            let (a, mut epi) = self.channels(t * tile, rows);
            epi.residual = self.residual(src, t * tile, rows, 0);
            let c = &mut out[at..];
            if let Some((b, ld)) = direct {
                assert!((rows - 1) * plane_len + ncols <= c.len());
                // SAFETY: rows x ncols elements at stride plane_len are inside `c` (asserted),
                // which is borrowed mutably.
                unsafe {
                    gemm::gemm_rows_into_raw(
                        self.isa,
                        rows,
                        ncols,
                        k,
                        a,
                        b,
                        ld,
                        epi,
                        c.as_mut_ptr(),
                        plane_len,
                    )
                };
            } else {
                gemm::gemm_into(self.isa, rows, ncols, k, a, packed, epi, c, plane_len);
            }
            if let Some(act) = self.post() {
                for plane in out.chunks_mut(plane_len) {
                    act.apply_slice(&mut plane[at..at + ncols]);
                }
            }
        });
    }

    /// Threads split the band's columns: each packs its own panels and multiplies every output
    /// channel by them, writing its columns of each channel's plane.
    fn split_columns(&self, src: &Src<'_>, packed: &mut [f32], planes: &mut [f32], par: Par<'_>) {
        let len = planes.len();
        self.columns(src, packed, &SharedMut::new(planes), len, par);
    }

    /// [`Self::split_columns`] into the `len` floats of planes at `out`, whose band rows
    /// nothing else writes meanwhile.
    fn columns(
        &self,
        src: &Src<'_>,
        packed: &mut [f32],
        out: &SharedMut<'_>,
        len: usize,
        par: Par<'_>,
    ) {
        let (k, ncols, plane_len, at, mg) =
            (self.g.k, self.cols(), self.plane_len(), self.at(), self.g.mg);
        let panels = par.split(ncols.div_ceil(gemm::NR), 1);
        let (a, epi) = self.channels(0, mg);
        assert!(len >= mg * plane_len && at + ncols <= plane_len);
        // B read in place when it can be (no packing), else each task packs its own panels.
        let direct = self.in_place(src);
        let task = |t: usize, part: &mut [f32]| {
            let j0 = t * panels * gemm::NR;
            let j1 = (j0 + panels * gemm::NR).min(ncols);
            let c = out.ptr().wrapping_add(at + j0);
            let epi = gemm::Epilogue { residual: self.residual(src, 0, mg, j0), ..epi };
            // SAFETY (both products): this task writes columns at + j0 .. at + j1 of each of
            // the mg planes (in bounds, asserted above), disjoint from every other task's
            // columns; `planes` is borrowed mutably for the whole call and nothing else
            // touches it.
            if let Some((b, ld)) = direct {
                unsafe {
                    gemm::gemm_rows_into_raw(
                        self.isa,
                        mg,
                        j1 - j0,
                        k,
                        a,
                        &b[j0..],
                        ld,
                        epi,
                        c,
                        plane_len,
                    )
                };
            } else {
                im2col(self.op, self.x, src, part, self.c0(), self.rows, j0..j1, self.g, self.isa);
                unsafe {
                    gemm::gemm_into_raw(self.isa, mg, j1 - j0, k, a, part, epi, c, plane_len)
                };
            }
            if let Some(act) = self.post() {
                let c = out.ptr().wrapping_add(at + j0);
                for i in 0..mg {
                    // SAFETY: as above, this task's own columns of plane i.
                    let run =
                        unsafe { std::slice::from_raw_parts_mut(c.add(i * plane_len), j1 - j0) };
                    act.apply_slice(run);
                }
            }
        };
        if direct.is_some() {
            // No packing: the same tasks, without scratch.
            par.each(ncols.div_ceil(panels * gemm::NR), |t| task(t, &mut []));
        } else {
            par.chunks(&mut packed[..gemm::packed_len(k, ncols)], panels * gemm::NR * k, task);
        }
    }
}

/// Floats of the packed B of a band.
fn packed_len(bd: &Band<'_>) -> usize {
    gemm::packed_len(bd.g.k, bd.cols())
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

/// Most kernel columns handled with precomputed ranges (wider kernels compute them per row).
pub(super) const MAX_KW: usize = 16;

/// For each kernel column: the output columns whose tap lands inside the input row, and the
/// input column the first of them reads. The same for every row and channel of a call.
pub(super) struct ColumnTaps {
    /// `(first output column, end, first input column)` per kernel column.
    pub(super) cols: [(usize, usize, usize); MAX_KW],
}

impl ColumnTaps {
    pub(super) fn new(op: &Conv, g: &Geo) -> ColumnTaps {
        let mut cols = [(0, 0, 0); MAX_KW];
        for (kx, c) in cols.iter_mut().enumerate().take(op.kernel[1].min(MAX_KW)) {
            *c = column_range(op, g, kx);
        }
        ColumnTaps { cols }
    }

    #[inline]
    pub(super) fn get(&self, op: &Conv, g: &Geo, kx: usize) -> (usize, usize, usize) {
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

#[cfg(test)]
mod tests {
    use frugal_core::backend::{Kernel, RowWindow};
    use frugal_core::ops::{Activation, Conv};
    use frugal_core::Backend;

    use crate::ops::testutil::*;
    use crate::{CpuBackend, Isa};

    fn conv(k: [usize; 2], s: [usize; 2], d: [usize; 2], pads: [usize; 4], groups: usize) -> Conv {
        Conv { kernel: k, strides: s, dilations: d, pads, groups, act: None, residual: false }
    }

    /// Every output element of the convolution in order, as `out(m, taps)`: output channel `m`
    /// and its `(weight, input)` pairs over `(ci, ky, kx)` in that order, +0.0 for padding.
    fn per_output(
        op: &Conv,
        xd: &[usize],
        x: &[f32],
        wd: &[usize],
        w: &[f32],
        mut out: impl FnMut(usize, &mut dyn Iterator<Item = (f32, f32)>) -> f32,
    ) -> Vec<f32> {
        let yd = op.infer(xd, wd).unwrap();
        let (cg, mg) = (wd[1], yd[1] / op.groups);
        let mut y = Vec::with_capacity(yd.iter().product());
        for n in 0..yd[0] {
            for m in 0..yd[1] {
                let g = m / mg;
                for oy in 0..yd[2] {
                    for ox in 0..yd[3] {
                        let taps = (0..cg).flat_map(|ci| {
                            (0..wd[2]).flat_map(move |ky| (0..wd[3]).map(move |kx| (ci, ky, kx)))
                        });
                        let mut taps = taps.map(|(ci, ky, kx)| {
                            let iy = (oy * op.strides[0] + ky * op.dilations[0]) as isize
                                - op.pads[0] as isize;
                            let ix = (ox * op.strides[1] + kx * op.dilations[1]) as isize
                                - op.pads[1] as isize;
                            let inside = (0..xd[2] as isize).contains(&iy)
                                && (0..xd[3] as isize).contains(&ix);
                            let c = g * cg + ci;
                            let v = if inside {
                                x[((n * xd[1] + c) * xd[2] + iy as usize) * xd[3] + ix as usize]
                            } else {
                                0.0
                            };
                            (w[((m * cg + ci) * wd[2] + ky) * wd[3] + kx], v)
                        });
                        y.push(out(m, &mut taps));
                    }
                }
            }
        }
        y
    }

    /// Naive ONNX convolution in f64.
    fn reference(
        op: &Conv,
        xd: &[usize],
        x: &[f32],
        wd: &[usize],
        w: &[f32],
        b: &[f32],
    ) -> Vec<f32> {
        per_output(op, xd, x, wd, w, |m, taps| {
            let v = taps.fold(b[m] as f64, |acc, (w, v)| acc + w as f64 * v as f64) as f32;
            op.act.map_or(v, |a| a.apply(v))
        })
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
            // Rows wide enough for the im2col's stride-2 vector gather (and stride 1 beside
            // it), odd widths.
            (conv([3, 3], [2, 2], [1, 1], [1; 4], 1), [1, 3, 6, 41], 5),
            (conv([3, 3], [1, 1], [1, 1], [1; 4], 1), [1, 2, 4, 37], 4),
            (
                act(conv([3, 3], [1, 1], [1, 1], [1; 4], 1), Activation::HardSwish),
                [1, 80, 5, 6],
                13,
            ),
            (conv([2, 2], [1, 1], [1, 1], [0; 4], 1), [1, 2, 2, 2], 3),
            // Depthwise over nine channels and 12-column rows: eight channels per vector
            // where a call has 4 rows or more, through rings too.
            (conv([3, 3], [1, 1], [1, 1], [1; 4], 9), [1, 9, 10, 12], 9),
            // Depthwise through the padded ring's stride phases: pads wider than the stride,
            // stride 3, asymmetric pads.
            (conv([5, 5], [2, 2], [1, 1], [3; 4], 4), [1, 4, 11, 13], 4),
            (conv([3, 3], [3, 3], [1, 1], [0, 2, 1, 0], 3), [1, 3, 10, 11], 3),
            (conv([3, 3], [2, 2], [1, 1], [0; 4], 2), [1, 2, 9, 4], 2),
            // Pointwise, read in place where the rows are one run of the ring (no scratch),
            // packed where a band wraps it; grouped and batched too.
            (act(conv([1, 1], [1, 1], [1, 1], [0; 4], 1), Activation::Relu), [1, 20, 5, 23], 17),
            (conv([1, 1], [1, 1], [1, 1], [0; 4], 2), [2, 8, 6, 9], 6),
            // Dense, stride 1, rows of 12+ columns: read in place with AVX-512 (`direct`).
            (conv([3, 3], [1, 1], [1, 1], [1; 4], 1), [1, 16, 5, 28], 20),
            (act(conv([3, 3], [1, 1], [1, 1], [1; 4], 1), Activation::HardSwish), [1, 5, 4, 14], 7),
        ]
    }

    /// The convolution as the matrix product computes it: `acc = fma(w, x, acc)` over
    /// `(ci, ky, kx)` in order from +0.0 (padding reads +0.0), then `+ bias`, then the
    /// activation (`apply_slice`, as the kernels apply it).
    fn fma_chain(
        op: &Conv,
        xd: &[usize],
        x: &[f32],
        wd: &[usize],
        w: &[f32],
        b: &[f32],
    ) -> Vec<f32> {
        let mut y = per_output(op, xd, x, wd, w, |m, taps| {
            taps.fold(0.0f32, |acc, (w, v)| w.mul_add(v, acc)) + b[m]
        });
        if let Some(act) = op.act {
            act.apply_slice(&mut y);
        }
        y
    }

    /// Dense convolutions give the fma chain's bits on every path this machine has: read in
    /// place where AVX-512 and stride 1 with rows of 12+ columns allow (`direct`: strips of
    /// 16 columns, pairs of them across rows, padding rows and columns masked, tiles of 1 to
    /// 12 channels), im2col and the matrix product otherwise; whole, by bands, through rings,
    /// on one and two threads (`check_bands`).
    #[test]
    fn dense_products_are_the_fma_chain() {
        let act = |mut c: Conv, a: Activation| {
            c.act = Some(a);
            c
        };
        let s1 = |k: [usize; 2], pads: [usize; 4]| conv(k, [1, 1], [1, 1], pads, 1);
        let cases = [
            (act(s1([3, 3], [1; 4]), Activation::Relu), [1, 8, 5, 56], 16),
            (s1([3, 3], [1; 4]), [1, 5, 6, 28], 13),
            (act(s1([3, 3], [1; 4]), Activation::Clip { min: 0.0, max: 6.0 }), [1, 3, 4, 14], 12),
            (s1([3, 3], [1; 4]), [1, 40, 4, 16], 25),
            (s1([5, 5], [2; 4]), [1, 4, 7, 24], 30),
            (s1([3, 5], [0, 2, 1, 1]), [1, 2, 6, 13], 3),
            (s1([2, 2], [0; 4]), [1, 2, 3, 17], 1),
            (act(s1([3, 3], [1; 4]), Activation::HardSwish), [2, 3, 4, 15], 9),
            // Rows too narrow for the vectors, stride 2: im2col.
            (s1([3, 3], [1; 4]), [1, 3, 6, 7], 5),
            (conv([3, 3], [2, 2], [1, 1], [1; 4], 1), [1, 3, 9, 16], 6),
        ];
        for (i, (op, xd, m)) in cases.into_iter().enumerate() {
            let op = leak(op);
            let (got, x, w, wd, b) = banded(op, xd, m, 700 + 10 * i as u64);
            assert_bits(&got, &fma_chain(op, &xd, &x, &wd, &w, &b), &format!("case {i}: {op:?}"));
        }
    }

    /// A pointwise call whose input rows are one run of the ring packs nothing, so asks for
    /// no scratch (the rigs run every call on exactly what it asks for); one that wraps does.
    #[test]
    fn pointwise_calls_read_in_place_need_no_scratch() {
        let op = conv([1, 1], [1, 1], [1, 1], [0; 4], 1);
        let (xd, wd, yd) = ([1, 64, 7, 7], [96, 64, 1, 1], [1, 96, 7, 7]);
        let dims = |d: [usize; 4]| frugal_core::backend::Dims::new(&d).unwrap();
        let x = RowWindow::whole(0, frugal_core::DType::F32, dims(xd));
        let y = RowWindow::whole(1 << 20, frugal_core::DType::F32, dims(yd));
        let w = frugal_core::WeightRef { id: frugal_core::backend::WeightId(0), dims: dims(wd) };
        let ring = |first_row, rows, capacity| {
            let x = RowWindow { first_row, rows, capacity, ..x };
            let y = RowWindow { first_row, rows, capacity, ..y };
            super::workspace(&op, &x, &w, &y, Isa::detect(), 2)
        };
        assert_eq!(ring(0, 7, 7), 0, "whole");
        assert_eq!(ring(5, 1, 2), 0, "one row");
        assert_eq!(ring(2, 2, 4), 0, "two rows inside the ring");
        assert!(ring(3, 2, 4) > 0, "two rows across the ring's end");
    }

    /// A convolution with seeded input (`seed`), weights and bias (`m` output channels) run by
    /// `check_bands`: `(output, input, weights, weight dims, bias)`.
    #[allow(clippy::type_complexity)]
    fn banded(
        op: &'static Conv,
        xd: [usize; 4],
        m: usize,
        seed: u64,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>, [usize; 4], Vec<f32>) {
        let wd = [m, xd[1] / op.groups, op.kernel[0], op.kernel[1]];
        let yd = op.infer(&xd, &wd).unwrap();
        let (x, w, b) = (
            rand_vec(seed, xd.iter().product()),
            rand_vec(seed + 1, wd.iter().product()),
            rand_vec(seed + 2, m),
        );
        let need = needed(op, xd[2]);
        let got = check_bands(
            &[Input { dims: &xd, data: &x, need: &need }],
            &[(&wd, &w), (&[m], &b)],
            &yd,
            |xs, ws, y| Kernel::Conv { op, x: xs[0], w: ws[0], b: Some(ws[1]), r: None, y },
        );
        (got, x, w, wd, b)
    }

    #[test]
    fn matches_the_naive_definition_by_bands_and_rings() {
        for (i, (op, xd, m)) in cases().into_iter().enumerate() {
            let op = leak(op);
            let (got, x, w, wd, b) = banded(op, xd, m, 20 * i as u64);
            assert_close(
                &got,
                &reference(op, &xd, &x, &wd, &w, &b),
                1e-5,
                &format!("case {i}: {op:?}"),
            );
        }
    }

    /// The residual epilogue: `act(conv(x) + b + r)`, whole, by bands and through rings,
    /// against the naive convolution followed by the add and the activation.
    #[test]
    fn residual_adds_in_the_epilogue() {
        let cases = [
            (conv([3, 3], [1, 1], [1, 1], [1; 4], 1), [1, 6, 7, 9], 6, Some(Activation::Relu)),
            (conv([1, 1], [2, 2], [1, 1], [0; 4], 1), [1, 4, 9, 8], 20, None),
            (conv([1, 1], [1, 1], [1, 1], [0; 4], 1), [1, 24, 6, 10], 24, Some(Activation::Relu)),
            (conv([3, 3], [1, 1], [1, 1], [1; 4], 5), [1, 5, 6, 11], 5, Some(Activation::Relu)),
            // Read in place (`direct`): the add after the product.
            (conv([3, 3], [1, 1], [1, 1], [1; 4], 1), [1, 6, 5, 14], 6, Some(Activation::Relu)),
            // Enough work for two threads to split: rows first where a window has four or
            // more (each thread its own bands), columns of each band otherwise.
            (conv([3, 3], [1, 1], [1, 1], [1; 4], 1), [1, 8, 12, 20], 16, Some(Activation::Relu)),
            (conv([1, 1], [1, 1], [1, 1], [0; 4], 1), [1, 24, 10, 40], 12, None),
        ];
        for (i, (mut op, xd, m, act)) in cases.into_iter().enumerate() {
            op.residual = true;
            op.act = act;
            let op = leak(op);
            let wd = [m, xd[1] / op.groups, op.kernel[0], op.kernel[1]];
            let yd = op.infer(&xd, &wd).unwrap();
            let s = 300 + 10 * i as u64;
            let (x, w, b, r) = (
                rand_vec(s, xd.iter().product()),
                rand_vec(s + 1, wd.iter().product()),
                rand_vec(s + 2, m),
                rand_vec(s + 3, yd.iter().product()),
            );
            let need = needed(op, xd[2]);
            let same = |lo, hi| (lo, hi);
            let got = check_bands(
                &[
                    Input { dims: &xd, data: &x, need: &need },
                    Input { dims: &yd, data: &r, need: &same },
                ],
                &[(&wd, &w), (&[m], &b)],
                &yd,
                |xs, ws, y| Kernel::Conv {
                    op,
                    x: xs[0],
                    w: ws[0],
                    b: Some(ws[1]),
                    r: Some(xs[1]),
                    y,
                },
            );
            let plain = Conv { act: None, residual: false, ..*op };
            let want: Vec<f32> = reference(&plain, &xd, &x, &wd, &w, &b)
                .iter()
                .zip(&r)
                .map(|(c, r)| act.map_or(c + r, |a| a.apply(c + r)))
                .collect();
            assert_close(&got, &want, 1e-5, &format!("residual case {i}"));
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
            rig.run(&Kernel::Conv { op: &op, x: xw, w: ww, b: Some(bw), r: None, y }).unwrap();
            assert_close(
                &rig.read(&y),
                &reference(&op, &xd, &x, &wd, &w, &b),
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
            rig.run(&Kernel::Conv { op: &op, x: xw, w: ww, b: None, r: None, y }).unwrap();
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

    /// The AVX2 depthwise kernels (units of several rows or channels, rows narrower than a
    /// vector block and many blocks wide, strides 1 and 2, masked edges; eight channels per
    /// vector for whole calls on 8- to 32-column rows) give the portable kernels' bits, whole
    /// and one row per call, on one and on two threads (which regroup the units); with AVX-512,
    /// sixteen channels per vector on rows of 8 to 128 columns.
    #[test]
    fn depthwise_vector_kernels_give_the_portable_bits() {
        if Isa::detect() != Isa::Avx2Fma {
            return;
        }
        let act = |mut c: Conv, a: Activation| {
            c.act = Some(a);
            c
        };
        let dw = |k: usize, s: usize, d: usize, p: usize, c: usize| {
            conv([k, k], [s, s], [d, d], [p; 4], c)
        };
        let cases = [
            (dw(3, 1, 1, 1, 9), [1, 9, 7, 7]),
            (act(dw(3, 2, 1, 1, 11), Activation::HardSwish), [1, 11, 14, 14]),
            (act(dw(3, 1, 1, 1, 8), Activation::Clip { min: 0.0, max: 6.0 }), [1, 8, 14, 14]),
            (dw(5, 1, 1, 2, 6), [1, 6, 28, 28]),
            (act(dw(3, 2, 1, 1, 5), Activation::Sigmoid), [1, 5, 27, 57]),
            (dw(3, 1, 2, 2, 4), [1, 4, 6, 3]),
            (dw(3, 1, 1, 1, 12), [1, 12, 3, 40]),
            // Wide rows (many blocks per unit), stride 2 with odd widths, dilation with
            // stride 2, asymmetric padding, a kernel wider than the row, 1x1.
            (act(dw(3, 1, 1, 1, 5), Activation::Relu), [1, 5, 5, 130]),
            (dw(3, 2, 1, 1, 3), [1, 3, 9, 113]),
            (act(dw(5, 2, 1, 2, 4), Activation::HardSwish), [1, 4, 15, 70]),
            (dw(3, 2, 2, 2, 3), [1, 3, 11, 41]),
            (conv([3, 3], [2, 2], [1, 1], [0, 0, 1, 1], 6), [1, 6, 10, 20]),
            (conv([3, 5], [1, 2], [1, 1], [1, 2, 0, 1], 5), [1, 5, 8, 23]),
            (dw(7, 1, 1, 3, 6), [1, 6, 9, 5]),
            (dw(1, 2, 1, 0, 4), [1, 4, 6, 17]),
            // Eight channels per vector (rows of 8 to 32 columns, calls of 4 rows or more):
            // two groups and three channels left over, stride 2 with an activation in
            // registers, dilation, one after the store, asymmetric pads.
            (dw(3, 1, 1, 1, 19), [1, 19, 9, 17]),
            (act(dw(5, 2, 1, 2, 16), Activation::HardSwish), [1, 16, 20, 31]),
            (dw(3, 1, 2, 2, 9), [1, 9, 12, 12]),
            (act(dw(3, 1, 1, 1, 8), Activation::Sigmoid), [1, 8, 6, 8]),
            (conv([3, 3], [1, 1], [1, 1], [0, 2, 1, 0], 10), [1, 10, 7, 9]),
            // Sixteen channels per vector with AVX-512: 16 + 16 + 8 channels, rows wider than
            // eight channels take, stride 2 with an activation in registers.
            (dw(3, 1, 1, 1, 40), [1, 40, 9, 20]),
            (act(dw(3, 2, 1, 1, 35), Activation::Clip { min: 0.0, max: 6.0 }), [1, 35, 10, 101]),
            (act(dw(5, 1, 1, 2, 17), Activation::HardSwish), [1, 17, 6, 60]),
            // Wide rows and enough work for two threads to split the rows.
            (dw(3, 1, 1, 1, 16), [1, 16, 12, 40]),
            (act(dw(3, 2, 1, 1, 16), Activation::Sigmoid), [1, 16, 20, 80]),
            (dw(3, 1, 1, 1, 8), [1, 8, 8, 140]),
        ];
        let bits = |xs: &[f32]| xs.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (i, (op, xd)) in cases.into_iter().enumerate() {
            let m = xd[1];
            let wd = [m, 1, op.kernel[0], op.kernel[1]];
            let yd = op.infer(&xd, &wd).unwrap();
            let (x, w, b) = (
                rand_vec(400 + i as u64, xd.iter().product()),
                rand_vec(500 + i as u64, wd.iter().product()),
                rand_vec(600 + i as u64, m),
            );
            let mut want = None;
            let backends = [
                CpuBackend::with_isa(Isa::Generic),
                CpuBackend::with_isa(Isa::Avx2Fma),
                CpuBackend::with_threads(2).unwrap(),
            ];
            for (j, be) in backends.into_iter().enumerate() {
                let mut rig = Rig::with(be);
                let (xw, ww, bw) = (rig.input(&xd, &x), rig.weight(&wd, &w), rig.weight(&[m], &b));
                let y = rig.whole(&yd);
                let k = Kernel::Conv { op: &op, x: xw, w: ww, b: Some(bw), r: None, y };
                for v in 0..rig.be.variants(&k).len().max(1) {
                    let variant = (!rig.be.variants(&k).is_empty()).then_some(v);
                    rig.run_variant(&k, variant).unwrap();
                    let whole = bits(&rig.read(&y));
                    let want = want.get_or_insert_with(|| whole.clone());
                    assert_eq!(&whole, want, "case {i}, backend {j}, variant {v}");
                    let y2 = rig.whole(&yd);
                    for r in 0..yd[2] {
                        let row = RowWindow { first_row: r, rows: 1, ..y2 };
                        let k =
                            Kernel::Conv { op: &op, x: xw, w: ww, b: Some(bw), r: None, y: row };
                        rig.run_variant(&k, variant).unwrap();
                    }
                    assert_eq!(
                        &bits(&rig.read(&y2)),
                        want,
                        "case {i}, backend {j}, variant {v} by rows"
                    );
                }
            }
        }
    }

    #[test]
    fn every_variant_gives_the_same_bits_whole_and_by_rows() {
        let mut all = cases();
        // Depthwise convolutions wide enough for the in-place loop nest.
        for (k, act) in [(3, None), (5, Some(Activation::HardSwish)), (3, Some(Activation::Relu))] {
            let mut op = conv([k, k], [1, 1], [1, 1], [k / 2; 4], 5);
            op.act = act;
            all.push((op, [1, 5, 9, 21], 5));
        }
        for (i, (op, xd, m)) in all.into_iter().enumerate() {
            let wd = [m, xd[1] / op.groups, op.kernel[0], op.kernel[1]];
            let yd = op.infer(&xd, &wd).unwrap();
            let (x, w, b) = (
                rand_vec(70 + i as u64, xd.iter().product()),
                rand_vec(80 + i as u64, wd.iter().product()),
                rand_vec(90 + i as u64, m),
            );
            let mut rig = Rig::with(CpuBackend::with_threads(2).unwrap());
            let (xw, ww, bw) = (rig.input(&xd, &x), rig.weight(&wd, &w), rig.weight(&[m], &b));
            let y = rig.whole(&yd);
            let k = Kernel::Conv { op: &op, x: xw, w: ww, b: Some(bw), r: None, y };
            rig.run(&k).unwrap();
            let want = rig.read(&y);
            let names = rig.be.variants(&k);
            if op.groups == 1 {
                assert_eq!(names, ["channels", "columns", "serial"], "case {i}");
            }
            // On more than one thread every convolution may also run on the caller's alone.
            assert_eq!(names.last(), Some(&"serial"), "case {i}");
            for (v, name) in names.iter().enumerate() {
                // Whole, then one row per call.
                let y2 = rig.whole(&yd);
                rig.run_variant(
                    &Kernel::Conv { op: &op, x: xw, w: ww, b: Some(bw), r: None, y: y2 },
                    Some(v),
                )
                .unwrap();
                let bits = |xs: &[f32]| xs.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&rig.read(&y2)), bits(&want), "case {i} {name}");
                for r in 0..yd[2] {
                    let row = RowWindow { first_row: r, rows: 1, ..y2 };
                    rig.run_variant(
                        &Kernel::Conv { op: &op, x: xw, w: ww, b: Some(bw), r: None, y: row },
                        Some(v),
                    )
                    .unwrap();
                }
                assert_eq!(bits(&rig.read(&y2)), bits(&want), "case {i} {name} by rows");
            }
            let bad = Kernel::Conv { op: &op, x: xw, w: ww, b: Some(bw), r: None, y };
            assert!(rig.run_variant(&bad, Some(names.len())).is_err());
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
        assert!(rig.run(&Kernel::Conv { op: &op, x: held, w, b: None, r: None, y: band }).is_ok());
        let held = rig.put_rows(&ring, &x, 4, 7);
        assert!(rig.run(&Kernel::Conv { op: &op, x: held, w, b: None, r: None, y: band }).is_err());
        let xw = rig.input(&xd, &x);
        let bad_w = rig.weight(&[3, 2, 2, 2], &[0.0; 24]);
        assert!(rig.run(&Kernel::Conv { op: &op, x: xw, w: bad_w, b: None, r: None, y }).is_err());
        let bad_b = rig.weight(&[2], &[0.0; 2]);
        assert!(rig.run(&Kernel::Conv { op: &op, x: xw, w, b: Some(bad_b), r: None, y }).is_err());
    }
}
