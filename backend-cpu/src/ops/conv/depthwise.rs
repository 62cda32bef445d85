//! Depthwise convolution (one input channel per group), computed directly rather than as a
//! matrix product: with one input channel there is nothing for a gemm to share.
//!
//! With stride 1 the row kernel reads the input rows in place: the interior columns (all taps
//! inside the row) in vector blocks, the few edge columns one by one. Otherwise each input row a
//! channel needs is copied once into a small per-task ring, zero-padded left and right and split
//! into `stride` phases (phase `r` holds padded columns `r, r + s, ...`), so every tap of every
//! output column is a contiguous load and the row kernel has no edge cases.
//! An output is the sum, in (ky, kx) order from zero, of `w * x` over the kernel rows inside
//! the image (padding columns contribute `w * 0`), then the bias and the activation. That
//! depends only on the output's position, so any split of rows or columns gives the same bits;
//! products and sums are separate (never fused), so the AVX2 build matches the portable one.

use frugal_core::backend::RowWindow;
use frugal_core::ops::{Activation, Conv};

use super::Geo;
use crate::arena::Io;
use crate::gemm::Isa;
use crate::par::{Par, SharedMut};
use crate::simd;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Largest kernel height and width the kernel takes (bigger ones fall back to `by_taps`).
const MAX_K: usize = 16;
/// Most input rows one output row spans (`(kh - 1) * dilation + 1`) for the ring.
const MAX_SPAN: usize = 64;
/// Channels the AVX2 kernels compute together where a row has few vector blocks: one
/// channel's sum is a chain of dependent adds, so narrow rows left the adder waiting.
const GROUP: usize = 4;

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

/// Rows narrower than this go in channel groups with AVX2: wider rows have vector blocks
/// enough of their own, and one channel's blocks share each weight broadcast (measured: 96
/// channels at 112x112 ran 1.3x slower grouped, 576 at 14x14 1.2x faster).
const GROUP_BELOW: usize = 32;

/// Rings per task: one per channel of a group where rows may go in groups.
fn rings_per_task(g: &Geo) -> usize {
    if g.wout < GROUP_BELOW {
        GROUP
    } else {
        1
    }
}

/// Scratch floats for one call on `threads` threads (a task's rings, per task).
pub(super) fn workspace(op: &Conv, g: &Geo, threads: usize) -> usize {
    let tasks = if threads > 1 { 2 * threads } else { 1 };
    Ring::new(op, g).map_or(0, |r| r.floats() * rings_per_task(g) * tasks)
}

/// Output columns `[a, b)` whose taps are all inside the input row (for stride 1).
fn interior(op: &Conv, g: &Geo) -> (usize, usize) {
    let (kw, dw, pl) = (op.kernel[1], op.dilations[1], op.pads[1]);
    let a = pl.min(g.wout);
    let b = (g.w + pl).saturating_sub((kw - 1) * dw).min(g.wout);
    (a, b.max(a))
}

/// Whether the in-place loop nest applies: stride 1, a kernel the ring takes, and at least 8
/// interior columns.
pub(super) fn can_direct(op: &Conv, g: &Geo) -> bool {
    let (a, b) = interior(op, g);
    op.strides[1] == 1 && Ring::new(op, g).is_some() && b >= a + 8
}

/// The default loop nest. With AVX2, in place whenever the stride is 1: narrow rows go in
/// channel groups whose edge taps are masked loads (no copy, no scalar edges), wider rows have
/// few edge columns. Otherwise in place unless the scalar edge columns are more than an eighth
/// of the row (narrow rows), where padding the rows costs less. Both give the same bits; the
/// planner's profile measures both per node anyway.
pub(super) fn prefers_direct(op: &Conv, g: &Geo, isa: Isa) -> bool {
    if isa == Isa::Avx2Fma {
        return op.strides[1] == 1 && Ring::new(op, g).is_some();
    }
    let (a, b) = interior(op, g);
    can_direct(op, g) && (g.wout - (b - a)) * 8 <= g.wout
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
    // Every output plane (image, channel) on its own; planes split across threads, each task
    // with its own ring in scratch.
    let planes = &mut io.out[..g.n * g.m * plane_len];
    // Tasks of whole channel groups where that keeps the threads even.
    let tile = par.split(g.n * g.m, GROUP);
    let ring_floats = ring.map_or(0, |r| r.floats());
    // Channel groups read in place at any width (`Blocks::new` takes `direct` as asked); one
    // channel needs 8 interior columns.
    let one_direct = direct && can_direct(op, g);
    let tasks = (g.n * g.m).div_ceil(tile);
    let task_floats = ring_floats * rings_per_task(g);
    assert!(io.scratch.len() >= task_floats * tasks, "depthwise scratch too small");
    let scratch = SharedMut::new(io.scratch);
    let channel = |p: usize| {
        let (b, m) = (p / g.m, p % g.m);
        Channel {
            // The input plane's whole ring: rows are found by slot.
            input: src.slice(x.row_start(b * g.cin + m / mult, 0), x.capacity * x.row_stride),
            wk: &weight[m * kh * kw..(m + 1) * kh * kw],
            bias: bias.map_or(0.0, |bb| bb[m]),
        }
    };
    // Channels in groups with AVX2 where a row has few vector blocks: the channels' sums are
    // independent chains of adds. Their geometry is the call's, worked out once.
    #[cfg(target_arch = "x86_64")]
    let grouped = match ring {
        Some(ring) if isa == Isa::Avx2Fma && g.wout < GROUP_BELOW => {
            Some((ring, Blocks::new(op, g, ring, direct)))
        }
        _ => None,
    };
    par.chunks(planes, tile * plane_len, |t, chunk| {
        // SAFETY: task t uses scratch floats t * task_floats .. (t + 1) * task_floats only (in
        // bounds, asserted above), and the scratch stays mutably borrowed while tasks run.
        let rbuf = unsafe {
            std::slice::from_raw_parts_mut(scratch.ptr().add(t * task_floats), task_floats)
        };
        let mut i = 0;
        #[cfg(target_arch = "x86_64")]
        if let Some((ring, blocks)) = &grouped {
            let mut groups = chunk.chunks_exact_mut(GROUP * plane_len);
            for group in &mut groups {
                let mut planes = group.chunks_exact_mut(plane_len);
                let mut planes: [&mut [f32]; GROUP] =
                    std::array::from_fn(|_| planes.next().expect("GROUP planes"));
                let chs: [Channel<'_>; GROUP] = std::array::from_fn(|c| channel(t * tile + i + c));
                // SAFETY: `grouped` holds only with `Isa::Avx2Fma`, selected after run-time
                // detection of AVX2 and FMA.
                unsafe { group_avx2(&shape, *ring, blocks, &chs, rbuf, &mut planes) };
                i += GROUP;
            }
        }
        let rbuf = &mut rbuf[..ring_floats];
        for (i, plane) in chunk.chunks_mut(plane_len).enumerate().skip(i) {
            let ch = channel(t * tile + i);
            match ring {
                Some(_) if one_direct => {
                    #[cfg(target_arch = "x86_64")]
                    if isa == Isa::Avx2Fma {
                        // SAFETY: `Isa::Avx2Fma` is only selected after run-time detection of
                        // AVX2 and FMA.
                        unsafe { direct_avx2(&shape, &ch, plane) };
                        continue;
                    }
                    shape.direct(&ch, plane);
                }
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
    let _ = isa;
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

/// The eight-column blocks of a grouped call's output rows (the last moved back to end at
/// `wout`; one below eight columns), and per block and tap the offset of its first input
/// column in the row read and, where some of its eight lanes fall outside the row (in place
/// only), the lanes inside (-1) and out (0).
#[cfg(target_arch = "x86_64")]
struct Blocks {
    direct: bool,
    wout: usize,
    row_len: usize,
    n: usize,
    at: [usize; 4],
    offs: [[isize; MAX_K]; 4],
    masks: [[Option<[i32; 8]>; MAX_K]; 4],
}

#[cfg(target_arch = "x86_64")]
impl Blocks {
    /// For output rows narrower than [`GROUP_BELOW`] columns, read in place (`direct`, stride 1: rows of
    /// the input) or from `ring`'s padded slots.
    fn new(op: &Conv, g: &Geo, ring: Ring, direct: bool) -> Blocks {
        let (kw, sw, dw, pl) = (op.kernel[1], op.strides[1], op.dilations[1], op.pads[1]);
        let direct = direct && sw == 1;
        let (wout, row_len) = (g.wout, if direct { g.w } else { ring.slot_len });
        assert!(wout <= 32 && kw <= MAX_K, "rows too wide for channel groups");
        let mut b = Blocks {
            direct,
            wout,
            row_len,
            n: wout.div_ceil(8),
            at: [0; 4],
            offs: [[0; MAX_K]; 4],
            masks: [[None; MAX_K]; 4],
        };
        for k in 0..b.n {
            let at = (k * 8).min(wout.saturating_sub(8));
            b.at[k] = at;
            for kx in 0..kw {
                let c = kx * dw;
                let o = if direct {
                    at as isize + c as isize - pl as isize
                } else {
                    // A padded slot: the tap's phase, then its offset there.
                    ((c % sw) * ring.phase_len + c / sw + at) as isize
                };
                b.offs[k][kx] = o;
                if o < 0 || o + 8 > row_len as isize {
                    // Padded slots hold a whole block past every tap (`Ring::new`).
                    assert!(direct, "a padded slot too short for its taps");
                    b.masks[k][kx] = Some(std::array::from_fn(|j| {
                        let col = o + j as isize;
                        if (0..row_len as isize).contains(&col) {
                            -1
                        } else {
                            0
                        }
                    }));
                }
            }
        }
        b
    }
}

/// [`GROUP`] channels' output rows together: read in place with the taps outside the row
/// masked to zero (`direct`, stride 1), or through their padded rings (`rbuf` holds one ring
/// per channel). Either way each output is [`Shape::padded`]'s sum, so the bits are its.
/// What depends only on the call's geometry ([`Blocks`]) is worked out once per call: on rows
/// of 7-28 columns it outweighed the arithmetic.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn group_avx2(
    shape: &Shape<'_>,
    ring: Ring,
    blocks: &Blocks,
    chs: &[Channel<'_>; GROUP],
    rbuf: &mut [f32],
    planes: &mut [&mut [f32]; GROUP],
) {
    let (op, x, y) = (shape.op, shape.x, shape.y);
    let [kh, kw] = op.kernel;
    let Blocks { direct, wout, row_len, .. } = *blocks;
    let ring_floats = ring.floats();
    assert!(rbuf.len() >= GROUP * ring_floats);
    assert!(chs.iter().all(|c| c.wk.len() >= kh * kw));
    let post = simd::after_store(&op.act);
    // Which input row each ring slot holds (none yet); the same for every channel of the
    // group, which pads the same rows at the same time.
    let mut held = [usize::MAX; MAX_SPAN];
    let mut rows = [[std::ptr::null::<f32>(); MAX_K]; GROUP];
    for oy in y.first_row..y.first_row + y.rows {
        // The kernel rows inside the image, and where each channel's input row starts: in
        // its input plane (in place) or in its ring.
        let (mut kys, mut nrows) = ([0usize; MAX_K], 0);
        for ky in 0..kh {
            let Some(iy) = shape.tap_row(oy, ky) else { continue };
            let at = if direct {
                (iy % x.capacity) * x.row_stride
            } else {
                let s = iy % ring.span;
                if held[s] != iy {
                    for (c, ch) in chs.iter().enumerate() {
                        let slot = c * ring_floats + s * ring.slot_len;
                        shape.pad_row(ring, ch, iy, &mut rbuf[slot..slot + ring.slot_len]);
                    }
                    held[s] = iy;
                }
                s * ring.slot_len
            };
            for (c, ch) in chs.iter().enumerate() {
                let src = if direct { ch.input } else { &rbuf[c * ring_floats..] };
                // The slice checks the row is there; the kernel keeps to its `row_len`.
                rows[c][nrows] = src[at..at + row_len].as_ptr();
            }
            kys[nrows] = ky;
            nrows += 1;
        }
        let start = (oy % y.capacity) * y.row_stride;
        let mut outs = [std::ptr::null_mut::<f32>(); GROUP];
        for (o, plane) in outs.iter_mut().zip(planes.iter_mut()) {
            *o = plane[start..start + wout].as_mut_ptr();
        }
        for b in 0..blocks.n {
            let (at, offs, masks) = (blocks.at[b], &blocks.offs[b], &blocks.masks[b]);
            let mut acc = [_mm256_setzero_ps(); GROUP];
            for (r, &ky) in kys.iter().enumerate().take(nrows) {
                for kx in 0..kw {
                    // SAFETY: `m` holds eight lanes.
                    let mask = masks[kx].map(|m| unsafe { _mm256_loadu_si256(m.as_ptr().cast()) });
                    for c in 0..GROUP {
                        // SAFETY: ky * kw + kx < kh * kw <= wk.len() (asserted); the row holds
                        // `row_len` floats: an unmasked load has 0 <= o and o + 8 <= row_len,
                        // a masked one reads only the lanes inside the row.
                        unsafe {
                            let wv = _mm256_set1_ps(*chs[c].wk.get_unchecked(ky * kw + kx));
                            let p = rows[c][r].wrapping_offset(offs[kx]);
                            let xv = match mask {
                                None => _mm256_loadu_ps(p),
                                Some(m) => _mm256_maskload_ps(p, m),
                            };
                            acc[c] = _mm256_add_ps(acc[c], _mm256_mul_ps(wv, xv));
                        }
                    }
                }
            }
            for c in 0..GROUP {
                let mut v = _mm256_add_ps(acc[c], _mm256_set1_ps(chs[c].bias));
                if let Some(act) = shape.act {
                    // SAFETY: AVX is available (this function's target features).
                    v = unsafe { simd::act8(act, v) };
                }
                // SAFETY: outs[c] holds wout floats; at + 8 <= wout from eight columns up,
                // and narrower rows store through `tmp`.
                unsafe {
                    if wout >= 8 {
                        _mm256_storeu_ps(outs[c].add(at), v);
                    } else {
                        let mut tmp = [0.0f32; 8];
                        _mm256_storeu_ps(tmp.as_mut_ptr(), v);
                        std::ptr::copy_nonoverlapping(tmp.as_ptr(), outs[c], wout);
                    }
                }
            }
        }
        if let Some(act) = post {
            for plane in planes.iter_mut() {
                act.apply_slice(&mut plane[start..start + wout]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn direct_avx2(shape: &Shape<'_>, ch: &Channel<'_>, plane: &mut [f32]) {
    shape.direct(ch, plane);
}

impl Shape<'_> {
    /// Input row `iy` of the channel (`iy` inside the image).
    #[inline(always)]
    fn input_row<'c>(&self, ch: &Channel<'c>, iy: usize) -> &'c [f32] {
        let start = (iy % self.x.capacity) * self.x.row_stride;
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
                        *o += wv * xv;
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

    /// [`Block::blocks`] of `8 * V` columns in AVX registers: the same operations (separate
    /// multiply and add, then bias and the activation as [`simd::act8`]) in the same order.
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
                        *a = _mm256_add_ps(*a, _mm256_mul_ps(w8, xv));
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
                        *a += wv * xv;
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
                        *a += wv * xv;
                    }
                }
            }
            for (o, &a) in out[start..start + n].iter_mut().zip(&acc) {
                *o = finish_value(a, self.bias, self.act);
            }
        }
    }
}
