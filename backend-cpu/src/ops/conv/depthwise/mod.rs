//! Depthwise convolution (one input channel per group), computed directly rather than as a
//! matrix product: with one input channel there is nothing for a gemm to share.
//!
//! With AVX2 and a horizontal stride of 1 or 2, [`avx2`] reads the input rows in place, many
//! output rows at once. The portable kernels: with stride 1 the row kernel reads the input
//! rows in place, the interior columns (all taps inside the row) in vector blocks, the few
//! edge columns one by one; otherwise each input row a channel needs is copied once into a
//! small per-task ring, zero-padded left and right and split into `stride` phases (phase `r`
//! holds padded columns `r, r + s, ...`), so every tap of every output column is a contiguous
//! load and the row kernel has no edge cases.
//! An output is the sum, in (ky, kx) order from zero, of `w * x` over the kernel rows inside
//! the image (padding columns contribute `w * 0`), then the bias and the activation. That
//! depends only on the output's position, so any split of rows or columns gives the same bits.
//! Every step is a fused multiply-add (`w.mul_add(x, acc)`, one rounding), in the vector
//! kernels and the portable ones alike, so they give the same bits (fused rather than a
//! product and a sum: one instruction instead of two, what other engines and ARM do; the
//! MobileNetV2 depthwise layers took 961 us instead of 1004 in `layers.py` on 2 threads).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod channels;

use frugal_core::backend::RowWindow;
use frugal_core::ops::{Activation, Conv};

use super::Geo;
use crate::arena::Io;
use crate::gemm::Isa;
use crate::par::{Par, SharedMut};
use crate::simd;

/// Largest kernel height and width the kernel takes (bigger ones fall back to `by_taps`).
const MAX_K: usize = 16;
/// Most input rows one output row spans (`(kh - 1) * dilation + 1`) for the ring.
const MAX_SPAN: usize = 64;
/// Channels per task are a multiple of this where that keeps the threads even.
const ALIGN: usize = 4;

/// Row geometry of the padded ring, the same for every channel of a call.
#[derive(Clone, Copy, Debug)]
struct Ring {
    /// Input rows one output row spans.
    span: usize,
    /// Floats per phase (padded columns / stride, rounded up).
    phase_len: usize,
    /// Floats per ring slot (`stride` phases).
    slot_len: usize,
}

impl Ring {
    fn new(op: &Conv, g: &Geo) -> Option<Ring> {
        let [kh, kw] = op.kernel;
        let span = (kh - 1) * op.dilations[0] + 1;
        if kh > MAX_K || kw > MAX_K || span > MAX_SPAN {
            return None;
        }
        let sw = op.strides[1];
        let padded = (g.wout.max(1) - 1) * sw + (kw - 1) * op.dilations[1] + 1;
        // At least one whole vector block past every tap's start, so rows narrower than a
        // block are computed as one (the extra columns read zeros and are not stored).
        let phase_len = padded.div_ceil(sw).max((kw - 1) * op.dilations[1] / sw + 8);
        Some(Ring { span, phase_len, slot_len: sw * phase_len })
    }

    fn floats(&self) -> usize {
        self.span * self.slot_len
    }
}

/// Whether the AVX2 kernel takes the call: horizontal stride 1 or 2, a kernel of at most
/// [`MAX_K`] rows and columns.
fn vector_kernel(op: &Conv, isa: Isa) -> bool {
    cfg!(target_arch = "x86_64")
        && isa == Isa::Avx2Fma
        && (1..=2).contains(&op.strides[1])
        && op.kernel[0] <= MAX_K
        && op.kernel[1] <= MAX_K
}

/// Scratch floats for one call of `rows` output rows on `threads` threads: a ring per thread
/// for the portable kernels, or for the AVX2 kernel a row of zeros (its padding rows), its
/// mask table and, where [`channels`] takes the call, a tile per thread. Per thread, not per
/// task: calls split into twice as many tasks as threads for balance, and a task takes the
/// scratch of the thread running it ([`crate::par::Par::chunks_slotted`]), which halved the tiles' share
/// of a session (the orientation model's 4-row firings of its 32-channel 112x112 depthwise
/// layer: 274 KB of tiles for four tasks).
pub(super) fn workspace(op: &Conv, g: &Geo, isa: Isa, rows: usize, threads: usize) -> usize {
    let tasks = threads.max(1);
    let rings = Ring::new(op, g).map_or(0, |r| r.floats() * tasks);
    #[cfg(target_arch = "x86_64")]
    let tiled = channels_geom(op, g, isa, rows).map_or(0, |c| c.scratch(lanes(), rows) * tasks);
    #[cfg(not(target_arch = "x86_64"))]
    let tiled = {
        let _ = (isa, rows);
        0
    };
    rings.max(vector_scratch(g).next_multiple_of(16) + tiled)
}

/// The geometry of [`channels`] where it takes a call of `rows` output rows: the AVX2
/// kernel's cases with one output channel per input channel, rows of 8 to
/// [`CHANNELS8_MAX_WIDTH`] columns ([`CHANNELS16_MAX_WIDTH`] with AVX-512), and at least
/// [`CHANNELS_MIN_ROWS`] rows (a call transposes every input row it reads: one output row at
/// a time would transpose each `kh` times).
#[cfg(target_arch = "x86_64")]
fn channels_geom(op: &Conv, g: &Geo, isa: Isa, rows: usize) -> Option<channels::Geom> {
    let max_width = if lanes() == 16 { CHANNELS16_MAX_WIDTH } else { CHANNELS8_MAX_WIDTH };
    let width = (8..=max_width).contains(&g.wout);
    (vector_kernel(op, isa) && g.m == g.cin && width && rows >= CHANNELS_MIN_ROWS).then(|| {
        channels::Geom {
            kh: op.kernel[0],
            kw: op.kernel[1],
            sh: op.strides[0],
            sw: op.strides[1],
            dh: op.dilations[0],
            dw: op.dilations[1],
            pt: op.pads[0],
            pl: op.pads[1],
            h: g.h,
            w: g.w,
            wout: g.wout,
        }
    })
}

/// Widest output rows [`channels`] takes; wider rows fill the row kernel's vectors
/// (`cargo run --release --example kernel_min dw`: 56 columns no faster, 28 columns 0.87x,
/// 14 columns 0.68-0.88x of the row kernel's time; 7 columns 1.35x, so narrower rows stay
/// with the row kernel).
const CHANNELS8_MAX_WIDTH: usize = 32;
/// Widest output rows [`channels`] takes with sixteen channels per vector, where it beats
/// what ran before at every width from 8 (`kernel_min dw`, whole maps, Xeon VM: 14 and 28
/// columns 1.3x faster than eight channels per vector, 56 columns 1.5x and 112 1.2x faster
/// than the row kernel; 7 columns 0.8x, so they stay with the row kernel). Wider rows stay
/// with the row kernel too: this kernel's scratch grows with the width.
const CHANNELS16_MAX_WIDTH: usize = 128;
/// Fewest output rows per call for [`channels`].
const CHANNELS_MIN_ROWS: usize = 4;

/// Channels per vector of [`channels`]: sixteen with AVX-512, else eight.
#[cfg(target_arch = "x86_64")]
fn lanes() -> usize {
    if crate::gemm::avx512() {
        16
    } else {
        8
    }
}

/// The AVX2 kernel's scratch: `w` zeros, then `w + 16` masks.
fn vector_scratch(g: &Geo) -> usize {
    2 * g.w + 16
}

/// Output columns `[a, b)` whose taps are all inside the input row (for stride 1).
fn interior(op: &Conv, g: &Geo) -> (usize, usize) {
    let (kw, dw, pl) = (op.kernel[1], op.dilations[1], op.pads[1]);
    let a = pl.min(g.wout);
    let b = (g.w + pl).saturating_sub((kw - 1) * dw).min(g.wout);
    (a, b.max(a))
}

/// Whether the portable kernels have two loop nests to choose from (ring or in place): stride
/// 1, a kernel the ring takes, and at least 8 interior columns; never where the AVX2 kernel
/// takes the call (it has one).
pub(super) fn can_direct(op: &Conv, g: &Geo, isa: Isa) -> bool {
    let (a, b) = interior(op, g);
    !vector_kernel(op, isa) && op.strides[1] == 1 && Ring::new(op, g).is_some() && b >= a + 8
}

/// The portable kernels' default loop nest: in place unless the scalar edge columns are more
/// than an eighth of the row (narrow rows), where padding the rows costs less. Both give the
/// same bits; the planner's profile measures both per node anyway.
pub(super) fn prefers_direct(op: &Conv, g: &Geo, isa: Isa) -> bool {
    let (a, b) = interior(op, g);
    can_direct(op, g, isa) && (g.wout - (b - a)) * 8 <= g.wout
}

/// Runs output rows `y.first_row .. y.first_row + y.rows` of a depthwise convolution.
#[allow(clippy::too_many_arguments)]
pub(super) fn depthwise(
    op: &Conv,
    x: &RowWindow,
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &RowWindow,
    io: Io<'_>,
    g: &Geo,
    isa: Isa,
    par: Par<'_>,
    direct: bool,
) {
    let [kh, kw] = op.kernel;
    let mult = g.m / g.cin;
    let plane_len = y.capacity * y.row_stride;
    let src = io.src;
    let ring = Ring::new(op, g);
    // Piecewise-linear activations are applied in the row kernel's registers, others after it.
    let act = simd::in_registers(op.act);
    let shape = Shape { op, g, x, y, act, isa };
    // Every output plane (image, channel) on its own; planes split across threads.
    let planes = &mut io.out[..g.n * g.m * plane_len];
    let tile = par.split(g.n * g.m, ALIGN);
    // Every input plane's ring, found once: per plane, `row_start` and `Src::slice` (a
    // division and a search) cost a one-row firing as much as its arithmetic on narrow maps.
    let in_plane = x.capacity * x.row_stride;
    let inputs = src.slice(x.row_start(0, 0), g.n * g.cin * in_plane);
    // One image and one output channel per input channel: plane p's data at p strides.
    let uniform = g.n == 1 && mult == 1;
    let channel = |p: usize| {
        // Divisions only where needed: per plane they cost as much as a 7x7 map's arithmetic.
        let (b, m) = if g.n == 1 { (0, p) } else { (p / g.m, p % g.m) };
        let ci = b * g.cin + if mult == 1 { m } else { m / mult };
        Channel {
            // The input plane's whole ring: rows are found by slot.
            input: &inputs[ci * in_plane..(ci + 1) * in_plane],
            wk: &weight[m * kh * kw..(m + 1) * kh * kw],
            bias: bias.map_or(0.0, |bb| bb[m]),
        }
    };
    #[cfg(target_arch = "x86_64")]
    if vector_kernel(op, isa) {
        // Small maps eight or sixteen channels at a time, in groups of that many planes per
        // task.
        let tiled = channels_geom(op, g, isa, y.rows);
        let lanes = lanes();
        let tile = if tiled.is_some() { par.split(g.n * g.m, lanes) } else { tile };
        let per_task = tiled.map_or(0, |c| c.scratch(lanes, y.rows));
        let slots = par.threads();
        // Tasks' tiles start on cache lines (their vectors would straddle them).
        let shared_len = vector_scratch(g).next_multiple_of(16);
        let io_scratch_len = io.scratch.len();
        assert!(io_scratch_len >= shared_len, "depthwise scratch too small");
        let (shared, task_scratch) = io.scratch.split_at_mut(shared_len);
        let (zeros, masks) = shared.split_at_mut(g.w);
        zeros.fill(0.0);
        let masks: &mut [i32] = bytemuck::cast_slice_mut(&mut masks[..g.w + 16]);
        avx2::mask_table(masks, g.w);
        let (zeros, masks) = (&*zeros, &*masks);
        let task_scratch = SharedMut::new(task_scratch);
        let post = simd::after_store(&op.act);
        // A task on thread `slot`: `n` planes from `base` (plane `first` of the call on), rows
        // of `ys`, with that thread's `per_task` floats of scratch.
        let body = |slot: usize, base: *mut f32, n: usize, first: usize, ys: &RowWindow| {
            let mut done = 0;
            if let Some(geom) = &tiled {
                // SAFETY: a thread runs one task at a time, so the task uses its thread's
                // `per_task` floats alone (in bounds, asserted by the callers below); the
                // scratch stays mutably borrowed while tasks run.
                let scratch = unsafe {
                    std::slice::from_raw_parts_mut(
                        task_scratch.ptr().add(slot * per_task),
                        per_task,
                    )
                };
                while n - done >= 8 {
                    let l = if n - done >= 16 { lanes } else { 8 };
                    // Channels `done .. done + l` of the task (lanes past `l` repeat the last:
                    // the kernel reads only its first `l`).
                    let at = |i: usize| done + i.min(l - 1);
                    let chans: [Channel<'_>; channels::MAX_LANES] =
                        std::array::from_fn(|i| channel(first + at(i)));
                    let grp = channels::Group {
                        inputs: std::array::from_fn(|i| chans[i].input),
                        weights: std::array::from_fn(|i| chans[i].wk),
                        bias: std::array::from_fn(|i| chans[i].bias),
                        // Planes `done .. done + l` of this task's.
                        outs: std::array::from_fn(|i| base.wrapping_add(at(i) * plane_len)),
                    };
                    let in_at = |iy| x.slot(iy) * x.row_stride;
                    let out_at = |oy| ys.slot(oy) * ys.row_stride;
                    let rows = ys.first_row..ys.first_row + ys.rows;
                    // SAFETY: `vector_kernel` holds only with `Isa::Avx2Fma` (detected), and
                    // sixteen lanes only where `lanes` found AVX-512; the rows `ys` of the `l`
                    // planes are this task's, written by nothing else (the callers').
                    unsafe {
                        if l == 16 {
                            channels::group16(geom, &grp, in_at, out_at, rows, scratch, act)
                        } else {
                            channels::group8(geom, &grp, in_at, out_at, rows, scratch, act)
                        }
                    };
                    if let Some(post) = post {
                        for i in done..done + l {
                            for oy in ys.first_row..ys.first_row + ys.rows {
                                let at = i * plane_len + ys.slot(oy) * ys.row_stride;
                                // SAFETY: as above, this task's row of plane i.
                                let row =
                                    unsafe { std::slice::from_raw_parts_mut(base.add(at), g.wout) };
                                post.apply_slice(row);
                            }
                        }
                    }
                    done += l;
                }
            }
            if done < n {
                let shape = Shape { y: ys, ..shape };
                // SAFETY: as above (`Isa::Avx2Fma`); the task's remaining planes and rows.
                unsafe {
                    shape.vector_rows(
                        zeros,
                        masks,
                        base.wrapping_add(done * plane_len),
                        n - done,
                        |i| channel(first + done + i),
                        uniform.then(|| {
                            let p = first + done;
                            Uniform {
                                input: &inputs[p * in_plane..],
                                wk: &weight[p * kh * kw..],
                                bias: bias.map(|b| &b[p..]),
                            }
                        }),
                    )
                };
            }
        };
        let t = par.threads();
        let (rows_min, wide) = if tiled.is_some() { (CHANNELS_MIN_ROWS, 64) } else { (2, 8) };
        if t > 1 && y.rows >= rows_min * t && g.wout >= wide {
            // Many wide rows (layer by layer): each thread takes a run of rows of every plane,
            // the caller the top one, so that it reads the rows it wrote for the layer before
            // (matrix products split their rows the same way: `conv::thread_bands`). Not for
            // narrower rows (MobileNetV2, 2 threads, `frugal bench --per-node`): the row
            // kernel's per-plane set-up outweighs the traffic saved on 7x7 maps (1.4x
            // slower), and the channel tiles' input rows around the split, transposed by
            // both threads, on 14x14 and 28x28 (1.2-1.6x; their products split channels, so
            // planes are what the threads wrote anyway); 56 even, 112 8% faster.
            assert!(io_scratch_len >= shared_len + per_task * t, "depthwise scratch too small");
            let all = planes.len() / plane_len;
            let out = SharedMut::new(planes);
            par.each_slotted(t, |i, slot| {
                let (r0, r1) = (y.rows * i / t, y.rows * (i + 1) / t);
                let band = RowWindow { first_row: y.first_row + r0, rows: r1 - r0, ..*y };
                // Rows r0 .. r1 of every plane: this task's alone.
                body(slot, out.ptr(), all, 0, &band);
            });
            return;
        }
        assert!(io_scratch_len >= shared_len + per_task * slots, "depthwise scratch too small");
        par.chunks_slotted(planes, tile * plane_len, |t, slot, chunk| {
            body(slot, chunk.as_mut_ptr(), chunk.len() / plane_len, t * tile, y)
        });
        return;
    }
    // The portable kernels: each task with its own ring in scratch.
    let ring_floats = ring.map_or(0, |r| r.floats());
    let one_direct = direct && can_direct(op, g, isa);
    assert!(io.scratch.len() >= ring_floats * par.threads(), "depthwise scratch too small");
    let scratch = SharedMut::new(io.scratch);
    par.chunks_slotted(planes, tile * plane_len, |t, slot, chunk| {
        // SAFETY: a thread runs one task at a time, so this task alone uses its thread's
        // scratch floats slot * ring_floats .. (slot + 1) * ring_floats (in bounds, asserted
        // above), and the scratch stays mutably borrowed while tasks run.
        let rbuf = unsafe {
            std::slice::from_raw_parts_mut(scratch.ptr().add(slot * ring_floats), ring_floats)
        };
        for (i, plane) in chunk.chunks_mut(plane_len).enumerate() {
            let ch = channel(t * tile + i);
            match ring {
                Some(_) if one_direct => shape.direct(&ch, plane),
                Some(ring) => {
                    #[cfg(target_arch = "x86_64")]
                    if isa == Isa::Avx2Fma {
                        // SAFETY: `Isa::Avx2Fma` is only selected after run-time detection of
                        // AVX2 and FMA.
                        unsafe { padded_avx2(&shape, ring, &ch, rbuf, plane) };
                        continue;
                    }
                    shape.padded(ring, &ch, rbuf, plane);
                }
                None => shape.by_taps(&ch, plane),
            }
        }
    });
}

/// What every channel of a call shares.
struct Shape<'a> {
    op: &'a Conv,
    g: &'a Geo,
    x: &'a RowWindow,
    y: &'a RowWindow,
    /// The activation applied in registers.
    act: Option<Activation>,
    isa: Isa,
}

/// The planes of a [`Shape::vector_rows`] call when their data lie one stride apart: plane
/// `i` reads its input ring (`ring` floats, the input window's plane) at `input[i * ring..]`,
/// its weights at `wk[i * kh * kw..]` and its bias at `bias[i]`. Found by pointer arithmetic
/// after one bounds check per call instead of a [`Channel`] per plane, whose slicing and
/// checks cost a one-row firing over 576 planes of 14 columns 16% of its time
/// (`kernel_min "dw3 576@14"`, by parts).
#[derive(Clone, Copy)]
struct Uniform<'c> {
    input: &'c [f32],
    wk: &'c [f32],
    bias: Option<&'c [f32]>,
}

/// One channel: its input plane (the whole ring), weights and bias.
struct Channel<'a> {
    input: &'a [f32],
    wk: &'a [f32],
    bias: f32,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn padded_avx2(
    shape: &Shape<'_>,
    ring: Ring,
    ch: &Channel<'_>,
    rbuf: &mut [f32],
    plane: &mut [f32],
) {
    shape.padded(ring, ch, rbuf, plane);
}

impl Shape<'_> {
    /// The output rows of the planes in `chunk` (`channel(i)`: plane `i` of it) through the
    /// AVX2 kernel, batches of (plane, row) units at a time; `zeros` holds `w` zeros, `masks`
    /// the kernel's mask table.
    ///
    /// # Safety
    /// AVX2 and FMA must be available, and [`vector_kernel`] must hold; `base` must address
    /// `planes` output planes (`y.capacity * y.row_stride` floats each) whose rows of `y`
    /// nothing else reads or writes meanwhile.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn vector_rows<'c>(
        &self,
        zeros: &[f32],
        masks: &[i32],
        base: *mut f32,
        planes: usize,
        channel: impl Fn(usize) -> Channel<'c>,
        uniform: Option<Uniform<'c>>,
    ) {
        const BATCH: usize = 32;
        let (op, g, y) = (self.op, self.g, self.y);
        let [kh, kw] = op.kernel;
        let plane_len = y.capacity * y.row_stride;
        assert!(zeros.len() >= g.w && masks.len() >= g.w + 16);
        assert!(self.x.row_stride >= g.w && g.wout <= y.row_stride);
        let cols = avx2::Cols {
            kh,
            kw,
            sw: op.strides[1],
            dw: op.dilations[1],
            pl: op.pads[1],
            w: g.w,
            wout: g.wout,
            masks: masks.as_ptr(),
        };
        let post = simd::after_store(&op.act);
        // Sixteen columns per vector where AVX-512 is available: the same bits (see `avx512`).
        // Rows of at most eight columns fill an AVX2 vector already (`kernel_min dw`, by
        // parts: 14 to 112 columns 11-20% faster with sixteen lanes; a 7-column map was 11%
        // slower with them, measured with this bound at 1, not kept).
        let wide = lanes() == 16 && (9..=16 * avx512::MAX_BLOCKS).contains(&g.wout);
        let masks16 = wide.then(|| avx512::MaskTable::new(&cols));
        let run = |units: &[avx2::Unit]| {
            // SAFETY: every unit's rows hold `w` floats (input rows or `zeros`), its weights
            // `kh * kw`, its output row `wout` floats of this task's chunk; the caller's
            // AVX2 and `vector_kernel`, and AVX-512 where `lanes` found it (`wide`).
            unsafe {
                if let Some(table) = &masks16 {
                    avx512::rows(units, &cols, self.act, table)
                } else {
                    avx2::rows(units, &cols, self.act)
                }
            };
            if let Some(act) = post {
                for u in units {
                    // SAFETY: as above; the kernel is done with the row.
                    act.apply_slice(unsafe { std::slice::from_raw_parts_mut(u.out, g.wout) });
                }
            }
        };
        let blank = avx2::Unit {
            rows: [zeros.as_ptr(); MAX_K],
            wk: std::ptr::null(),
            bias: 0.0,
            out: std::ptr::null_mut(),
        };
        let mut units = [blank; BATCH];
        let mut n = 0;
        let ring = self.x.capacity * self.x.row_stride;
        if let Some(uni) = &uniform {
            // Every plane's ring, weights and bias: the loop below reads them unchecked.
            assert!(
                planes == 0
                    || (uni.input.len() >= planes * ring
                        && uni.wk.len() >= planes * kh * kw
                        && uni.bias.is_none_or(|b| b.len() >= planes)),
                "depthwise planes outside their slices"
            );
        }
        // Output rows a few at a time: where each kernel row's input row and the output row
        // sit in a plane is the same for every plane, so it is worked out once per call, not
        // per plane.
        const ROWS: usize = 16;
        let (mut oy0, end) = (y.first_row, y.first_row + y.rows);
        while oy0 < end {
            let oy1 = (oy0 + ROWS).min(end);
            let mut ins = [[usize::MAX; MAX_K]; ROWS];
            let mut outs = [0usize; ROWS];
            for (r, oy) in (oy0..oy1).enumerate() {
                for (ky, at) in ins[r].iter_mut().enumerate().take(kh) {
                    if let Some(iy) = self.tap_row(oy, ky) {
                        *at = self.x.slot(iy) * self.x.row_stride;
                    }
                }
                outs[r] = y.slot(oy) * y.row_stride;
            }
            for i in 0..planes {
                // Every offset above plus `w` (input) or `wout` (output) stays in its plane.
                let (input, wk, bias) = match &uniform {
                    // SAFETY: plane i's ring, weights and bias lie inside the slices (asserted
                    // before the loop).
                    Some(uni) => unsafe {
                        (
                            uni.input.as_ptr().add(i * ring),
                            uni.wk.as_ptr().add(i * kh * kw),
                            uni.bias.map_or(0.0, |b| *b.get_unchecked(i)),
                        )
                    },
                    None => {
                        let ch = channel(i);
                        assert!(ch.wk.len() >= kh * kw && ch.input.len() >= ring);
                        (ch.input.as_ptr(), ch.wk.as_ptr(), ch.bias)
                    }
                };
                for r in 0..oy1 - oy0 {
                    // Filled in place: a unit built aside and copied in was read back as
                    // vectors right after its pointers' scalar stores, a store-forwarding
                    // stall per unit.
                    let u = &mut units[n];
                    for (row, &at) in u.rows.iter_mut().zip(&ins[r]).take(kh) {
                        // SAFETY: `at` is a row start inside the input plane's ring (above).
                        *row = if at == usize::MAX {
                            zeros.as_ptr()
                        } else {
                            unsafe { input.add(at) }
                        };
                    }
                    u.wk = wk;
                    u.bias = bias;
                    // SAFETY: plane i from `base`, row slot inside it (the caller's contract).
                    u.out = unsafe { base.add(i * plane_len + outs[r]) };
                    n += 1;
                    if n == BATCH {
                        run(&units);
                        n = 0;
                    }
                }
            }
            oy0 = oy1;
        }
        run(&units[..n]);
    }

    /// Input row `iy` of the channel (`iy` inside the image).
    #[inline(always)]
    fn input_row<'c>(&self, ch: &Channel<'c>, iy: usize) -> &'c [f32] {
        let start = self.x.slot(iy) * self.x.row_stride;
        &ch.input[start..start + self.g.w]
    }

    /// The input row kernel row `ky` of output row `oy` reads, or `None` in the padding.
    #[inline(always)]
    fn tap_row(&self, oy: usize, ky: usize) -> Option<usize> {
        let iy = (oy * self.op.strides[0] + ky * self.op.dilations[0]) as isize
            - self.op.pads[0] as isize;
        (iy >= 0 && iy < self.g.h as isize).then_some(iy as usize)
    }

    /// Copies input row `iy` into `slot`: zero-padded, split into stride phases.
    #[inline(always)]
    fn pad_row(&self, ring: Ring, ch: &Channel<'_>, iy: usize, slot: &mut [f32]) {
        let (sw, pl) = (self.op.strides[1], self.op.pads[1]);
        let row = self.input_row(ch, iy);
        for r in 0..sw {
            let phase = &mut slot[r * ring.phase_len..(r + 1) * ring.phase_len];
            if sw == 1 {
                // Padded column c holds input column c - pl.
                let body = pl.min(phase.len());
                phase[..body].fill(0.0);
                let n = row.len().min(phase.len() - body);
                phase[body..body + n].copy_from_slice(&row[..n]);
                phase[body + n..].fill(0.0);
            } else {
                // Phase slot i holds input column i * sw + r - pl: zeros outside [lo, hi).
                let lo = pl.saturating_sub(r).div_ceil(sw).min(phase.len());
                let hi = (row.len() + pl).saturating_sub(r).div_ceil(sw).clamp(lo, phase.len());
                phase[..lo].fill(0.0);
                if hi > lo {
                    let first = lo * sw + r - pl;
                    let dst = &mut phase[lo..hi];
                    if sw == 2 {
                        // Pairs, so the compiler turns the gather into shuffles.
                        let n = (row.len() - first) / 2;
                        let (pairs, rest) = dst.split_at_mut(n.min(dst.len()));
                        for (v, p) in pairs.iter_mut().zip(row[first..].chunks_exact(2)) {
                            *v = p[0];
                        }
                        if let Some(v) = rest.first_mut() {
                            *v = row[first + 2 * n];
                        }
                    } else {
                        for (v, x) in dst.iter_mut().zip(row[first..].iter().step_by(sw)) {
                            *v = *x;
                        }
                    }
                }
                phase[hi..].fill(0.0);
            }
        }
    }

    /// The output rows of one channel through the padded ring.
    #[inline(always)]
    fn padded(&self, ring: Ring, ch: &Channel<'_>, rbuf: &mut [f32], plane: &mut [f32]) {
        let (y, [kh, kw]) = (self.y, self.op.kernel);
        let (sw, dw) = (self.op.strides[1], self.op.dilations[1]);
        // Where tap kx starts inside a slot: its phase, then its offset in the phase.
        let mut taps = [0usize; MAX_K];
        for (kx, t) in taps.iter_mut().enumerate().take(kw) {
            let c = kx * dw;
            *t = (c % sw) * ring.phase_len + c / sw;
        }
        let post = simd::after_store(&self.op.act);
        // Which input row each slot holds (none yet for this channel).
        let mut held = [usize::MAX; MAX_SPAN];
        for oy in y.first_row..y.first_row + y.rows {
            let mut slots = [0usize; MAX_K];
            let mut nrows = 0;
            for ky in 0..kh {
                let Some(iy) = self.tap_row(oy, ky) else { continue };
                let s = iy % ring.span;
                if held[s] != iy {
                    let slot = &mut rbuf[s * ring.slot_len..(s + 1) * ring.slot_len];
                    self.pad_row(ring, ch, iy, slot);
                    held[s] = iy;
                }
                slots[nrows] = s;
                nrows += 1;
            }
            let mut rows: [(usize, &[f32]); MAX_K] = [(0, &[]); MAX_K];
            let mut r = 0;
            for ky in 0..kh {
                if self.tap_row(oy, ky).is_some() {
                    let s = slots[r];
                    rows[r] = (ky, &rbuf[s * ring.slot_len..(s + 1) * ring.slot_len]);
                    r += 1;
                }
            }
            let block = Block {
                rows: &rows[..nrows],
                kw,
                wk: ch.wk,
                taps: &taps[..kw],
                shift: 0,
                bias: ch.bias,
                act: self.act,
            };
            let start = (oy % y.capacity) * y.row_stride;
            let out = &mut plane[start..start + self.g.wout];
            block.run(self.isa, out, 0, self.g.wout);
            if let Some(act) = post {
                act.apply_slice(out);
            }
        }
    }

    /// The output rows of one channel read straight from the input rows (stride 1 with at least
    /// 8 interior columns): the interior in vector blocks, the few edge columns one by one, the
    /// same values as the padded ring without copying a row.
    #[inline(always)]
    fn direct(&self, ch: &Channel<'_>, plane: &mut [f32]) {
        let (y, [kh, kw]) = (self.y, self.op.kernel);
        let mut taps = [0usize; MAX_K];
        for (kx, t) in taps.iter_mut().enumerate().take(kw) {
            *t = kx * self.op.dilations[1];
        }
        let (a, b) = interior(self.op, self.g);
        let post = simd::after_store(&self.op.act);
        for oy in y.first_row..y.first_row + y.rows {
            let mut rows: [(usize, &[f32]); MAX_K] = [(0, &[]); MAX_K];
            let mut nrows = 0;
            for ky in 0..kh {
                if let Some(iy) = self.tap_row(oy, ky) {
                    rows[nrows] = (ky, self.input_row(ch, iy));
                    nrows += 1;
                }
            }
            let block = Block {
                rows: &rows[..nrows],
                kw,
                wk: ch.wk,
                taps: &taps[..kw],
                shift: self.op.pads[1],
                bias: ch.bias,
                act: self.act,
            };
            let start = (oy % y.capacity) * y.row_stride;
            let out = &mut plane[start..start + self.g.wout];
            block.run(self.isa, out, a, b);
            block.edges(out, 0, a);
            block.edges(out, b, self.g.wout);
            if let Some(act) = post {
                act.apply_slice(out);
            }
        }
    }

    /// Any kernel size: one pass over each output row per tap, in (ky, kx) order, with padding
    /// columns contributing `w * 0` as in the ring kernel.
    fn by_taps(&self, ch: &Channel<'_>, plane: &mut [f32]) {
        let (y, [kh, kw]) = (self.y, self.op.kernel);
        let (sw, dw, pl) = (self.op.strides[1], self.op.dilations[1], self.op.pads[1]);
        for oy in y.first_row..y.first_row + y.rows {
            let start = (oy % y.capacity) * y.row_stride;
            let out = &mut plane[start..start + self.g.wout];
            out.fill(0.0);
            for ky in 0..kh {
                let Some(iy) = self.tap_row(oy, ky) else { continue };
                let row = self.input_row(ch, iy);
                for kx in 0..kw {
                    let wv = ch.wk[ky * kw + kx];
                    for (ox, o) in out.iter_mut().enumerate() {
                        let c = (ox * sw + kx * dw) as isize - pl as isize;
                        let xv =
                            if c >= 0 && (c as usize) < row.len() { row[c as usize] } else { 0.0 };
                        *o = wv.mul_add(xv, *o);
                    }
                }
            }
            for v in out.iter_mut() {
                *v = finish_value(*v, ch.bias, self.act);
            }
            if let Some(act) = simd::after_store(&self.op.act) {
                act.apply_slice(out);
            }
        }
    }
}

/// Bias, then the activation when it runs in registers.
#[inline(always)]
fn finish_value(acc: f32, bias: f32, act: Option<Activation>) -> f32 {
    let v = acc + bias;
    match act {
        Some(act) => act.apply(v),
        None => v,
    }
}

/// One output row over input rows at hand: output column `ox` of tap `kx` reads
/// `row[taps[kx] + ox - shift]` (padded ring slots: `shift` 0; raw input rows: the left pad).
struct Block<'a> {
    /// `(ky, row)` for the kernel rows inside the image, in ky order.
    rows: &'a [(usize, &'a [f32])],
    kw: usize,
    wk: &'a [f32],
    taps: &'a [usize],
    shift: usize,
    bias: f32,
    act: Option<Activation>,
}

impl Block<'_> {
    /// Computes `out[lo..hi]`, every column of which has all its taps inside the rows.
    #[inline(always)]
    fn run(&self, isa: Isa, out: &mut [f32], lo: usize, hi: usize) {
        let n = hi - lo;
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx2Fma && n >= 8 {
            // Every load of the blocks below stays inside its row.
            let last = self.taps.iter().max().copied().unwrap_or(0) + hi;
            assert!(hi <= out.len() && lo >= self.shift);
            assert!(self.rows.iter().all(|&(_, r)| last <= r.len() + self.shift));
            // SAFETY: AVX2 was detected at run time (`Isa::Avx2Fma`); bounds asserted above.
            unsafe {
                let ox = self.blocks_avx2::<4>(out, lo, hi);
                let ox = self.blocks_avx2::<1>(out, ox, hi);
                if ox < hi {
                    // The last block moved back to end at hi: recomputing a column gives the
                    // same bits, so the overlap is harmless.
                    self.blocks_avx2::<1>(out, hi - 8, hi);
                }
            }
            return;
        }
        let _ = isa;
        if n >= 8 {
            let ox = self.blocks::<32>(out, lo, hi);
            let ox = self.blocks::<8>(out, ox, hi);
            if ox < hi {
                self.blocks::<8>(out, hi - 8, hi);
            }
        } else if n >= 4 {
            self.blocks::<4>(out, lo, hi);
            self.blocks::<4>(out, hi - 4, hi);
        } else {
            self.blocks::<1>(out, lo, hi);
        }
    }

    /// [`Block::blocks`] of `8 * V` columns in AVX registers: the same operations (fused
    /// multiply-adds, then bias and the activation as [`simd::act8`]) in the same order.
    ///
    /// # Safety
    /// AVX2 must be available, `end <= out.len()`, `ox >= shift`, and
    /// `tap + end <= row.len() + shift` for every row and tap.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn blocks_avx2<const V: usize>(
        &self,
        out: &mut [f32],
        mut ox: usize,
        end: usize,
    ) -> usize {
        use std::arch::x86_64::*;
        while ox + 8 * V <= end {
            let mut acc = [_mm256_setzero_ps(); V];
            for &(ky, row) in self.rows {
                let wr = &self.wk[ky * self.kw..(ky + 1) * self.kw];
                for (&wv, &t) in wr.iter().zip(self.taps) {
                    let w8 = _mm256_set1_ps(wv);
                    // SAFETY: t + ox - shift + 8V <= t + end - shift <= row.len() (caller).
                    let p = unsafe { row.as_ptr().add(t + ox - self.shift) };
                    for (v, a) in acc.iter_mut().enumerate() {
                        let xv = unsafe { _mm256_loadu_ps(p.add(8 * v)) };
                        *a = _mm256_fmadd_ps(w8, xv, *a);
                    }
                }
            }
            let b8 = _mm256_set1_ps(self.bias);
            for (v, a) in acc.iter_mut().enumerate() {
                let mut r = _mm256_add_ps(*a, b8);
                if let Some(act) = self.act {
                    // SAFETY: AVX is available (caller).
                    r = unsafe { simd::act8(act, r) };
                }
                // SAFETY: ox + 8V <= end <= out.len() (caller).
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(ox + 8 * v), r) };
            }
            ox += 8 * V;
        }
        ox
    }

    /// Blocks of `W` columns from `ox` while they fit before `end`; returns where it stopped.
    #[inline(always)]
    fn blocks<const W: usize>(&self, out: &mut [f32], mut ox: usize, end: usize) -> usize {
        while ox + W <= end {
            let mut acc = [0.0f32; W];
            for &(ky, row) in self.rows {
                let wr = &self.wk[ky * self.kw..(ky + 1) * self.kw];
                for (&wv, &t) in wr.iter().zip(self.taps) {
                    let s = t + ox - self.shift;
                    let xs: &[f32; W] = row[s..s + W].try_into().expect("W floats");
                    for (a, &xv) in acc.iter_mut().zip(xs) {
                        *a = wv.mul_add(xv, *a);
                    }
                }
            }
            for (o, a) in out[ox..ox + W].iter_mut().zip(acc) {
                *o = finish_value(a, self.bias, self.act);
            }
            ox += W;
        }
        ox
    }

    /// Output columns `lo..hi` of raw input rows (`shift` = left pad) with taps outside the
    /// row reading zero: the values the padded ring gives.
    #[inline(always)]
    fn edges(&self, out: &mut [f32], lo: usize, hi: usize) {
        // Up to 8 columns at once: each column's sum keeps its (ky, kx) order, but the
        // columns' chains are independent, so they do not wait on each other's adds.
        const LANES: usize = 8;
        for start in (lo..hi).step_by(LANES) {
            let n = (hi - start).min(LANES);
            let mut acc = [0.0f32; LANES];
            for &(ky, row) in self.rows {
                for (kx, &t) in self.taps.iter().enumerate() {
                    let wv = self.wk[ky * self.kw + kx];
                    for (j, a) in acc.iter_mut().enumerate().take(n) {
                        let c = (t + start + j) as isize - self.shift as isize;
                        let xv =
                            if c >= 0 && (c as usize) < row.len() { row[c as usize] } else { 0.0 };
                        *a = wv.mul_add(xv, *a);
                    }
                }
            }
            for (o, &a) in out[start..start + n].iter_mut().zip(&acc) {
                *o = finish_value(a, self.bias, self.act);
            }
        }
    }
}
