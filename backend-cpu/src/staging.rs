//! f16 storage. Kernels compute in f32; a call whose windows are stored as f16 has them
//! converted into f32 copies in scratch first (only the rows the call reads), runs the f32
//! kernel, and converts its output rows back. Every element is rounded to f16 exactly once,
//! when it is stored, whatever rows a call covers: by parts stays bit-identical to layer by
//! layer in f16 too.

use frugal_core::backend::{Kernel, RowWindow, Scratch};
use frugal_core::{DType, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;

use std::ops::Range;

use crate::arena::Arena;
use crate::fail;
use crate::par::{Par, SharedMut};

/// Whether `k` reads or writes f16 windows.
pub(crate) fn needed(k: &Kernel<'_>) -> bool {
    k.output().dtype == DType::F16 || crate::inputs_of(k).any(|w| w.dtype == DType::F16)
}

/// Bytes of f32 copies of one window's rows (64-byte aligned).
fn staged_bytes(w: &RowWindow) -> usize {
    let (planes, _, width) = w.geometry();
    (planes * w.rows.max(1) * width * 4).div_ceil(64) * 64
}

/// Scratch bytes the copies of `k`'s f16 windows need.
pub(crate) fn bytes(k: &Kernel<'_>) -> usize {
    let y = k.output();
    let out = if y.dtype == DType::F16 { staged_bytes(y) } else { 0 };
    out + crate::inputs_of(k).filter(|w| w.dtype == DType::F16).map(staged_bytes).sum::<usize>()
}

/// An f32 window over `w`'s rows at byte `offset`, holding exactly those rows.
fn staged(w: &RowWindow, offset: usize) -> RowWindow {
    let (_, _, width) = w.geometry();
    RowWindow { offset, dtype: DType::F32, capacity: w.rows.max(1), row_stride: width, ..*w }
}

/// The arena split at the scratch: buffers (f16 or f32) before, scratch (f32) after.
fn halves(arena: &mut Arena, scratch_at: usize) -> Result<(&mut [u16], &mut [f32])> {
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(arena.f32_mut());
    if !scratch_at.is_multiple_of(64) || scratch_at > bytes.len() {
        return Err(fail("f16", "scratch is not where the buffers end"));
    }
    let (bufs, scr) = bytes.split_at_mut(scratch_at);
    Ok((bytemuck::cast_slice_mut(bufs), bytemuck::cast_slice_mut(scr)))
}

/// Runs `k` with its f16 windows staged through f32 copies; `run` executes the f32 kernel.
pub(crate) fn execute(
    arena: &mut Arena,
    xs: &mut Vec<RowWindow>,
    k: &Kernel<'_>,
    scratch: Scratch,
    par: Par<'_>,
    run: &mut dyn FnMut(&mut Arena, &Kernel<'_>, Scratch) -> Result<()>,
) -> Result<()> {
    let base = scratch.offset;
    let end = scratch.offset + scratch.bytes;
    let mut cursor = base;
    let mut failed = None;
    // Inputs: convert the rows each call reads.
    let mut stage_in = |w: &RowWindow| -> RowWindow {
        if w.dtype != DType::F16 {
            return *w;
        }
        let s = staged(w, cursor);
        cursor += staged_bytes(w);
        if let Err(e) = convert_in(arena, w, &s, base, par) {
            failed = Some(e);
        }
        s
    };
    // Layout: input copies, the output copy, then the kernel's own scratch.
    let y = *k.output();
    let inputs: usize =
        crate::inputs_of(k).filter(|w| w.dtype == DType::F16).map(staged_bytes).sum();
    let (ys, after) = if y.dtype == DType::F16 {
        (staged(&y, base + inputs), base + inputs + staged_bytes(&y))
    } else {
        (y, base + inputs)
    };
    if after > end {
        return Err(fail(k.family(), "scratch too small for f16 copies"));
    }
    let k32 = k.with_windows(&mut stage_in, ys, xs);
    if let Some(e) = failed {
        return Err(e);
    }
    run(arena, &k32, Scratch { offset: after, bytes: end - after })?;
    if y.dtype == DType::F16 {
        convert_out(arena, k32.output(), &y, base, par)?;
    }
    Ok(())
}

/// Windows of fewer elements are converted on the calling thread: below that, handing half of
/// the conversion to another core costs about what it saves (`benches/forkjoin.c`). Chosen
/// by `frugal bench zoo:mobilenet_v2 --strategy by-parts --storage f16 --threads 2 --runs 60`
/// with this constant edited, alternating rounds, fastest runs: 12.8-16.2 ms with 4096,
/// 14.1-16.4 with 8192, 15.8-16.2 with 32768, 15.4-16.7 converting on the calling thread
/// alone (a noisy machine: only 4096 came out ahead, in two of three rounds).
const PAR_MIN: usize = 4 * 1024;

/// The threads to convert a window of `elements` on: `par`, or the caller alone below
/// [`PAR_MIN`].
fn threads_for(par: Par<'_>, elements: usize) -> (Par<'_>, usize) {
    if elements < PAR_MIN {
        (Par::serial(), 1)
    } else {
        (par, par.threads())
    }
}

fn convert_in(
    arena: &mut Arena,
    w: &RowWindow,
    s: &RowWindow,
    base: usize,
    par: Par<'_>,
) -> Result<()> {
    let (bufs, scr) = halves(arena, base)?;
    let shift = base / 4;
    let (planes, _, width) = w.geometry();
    check(w, s, bufs.len(), shift, scr.len())?;
    let (par, t) = threads_for(par, planes * w.rows * width);
    let widen = Convert::new();
    let (bufs, out) = (&*bufs, SharedMut::new(scr));
    par.each(t, |i| {
        runs(w, s, planes * i / t..planes * (i + 1) / t, |src, dst, len| {
            // SAFETY: `check` found every run inside both slices; runs of different planes
            // are disjoint, so each task writes scratch no other task touches, and the
            // scratch stays mutably borrowed meanwhile.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(dst - shift), len) };
            widen.to_f32(&bufs[src..src + len], dst);
        })
    });
    Ok(())
}

fn convert_out(
    arena: &mut Arena,
    s: &RowWindow,
    y: &RowWindow,
    base: usize,
    par: Par<'_>,
) -> Result<()> {
    let (bufs, scr) = halves(arena, base)?;
    let shift = base / 4;
    let (planes, _, width) = y.geometry();
    check(y, s, bufs.len(), shift, scr.len())?;
    let (par, t) = threads_for(par, planes * y.rows * width);
    let narrow = Convert::new();
    let (out, scr) = (SendPtr(bufs.as_mut_ptr()), &*scr);
    par.each(t, |i| {
        runs(y, s, planes * i / t..planes * (i + 1) / t, |dst, src, len| {
            // SAFETY: as in `convert_in`, with the f16 buffers written.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(dst), len) };
            narrow.to_f16(&scr[src - shift..src - shift + len], dst);
        })
    });
    Ok(())
}

/// A pointer to the f16 buffers that tasks writing disjoint runs share.
#[derive(Clone, Copy)]
struct SendPtr(*mut u16);

// SAFETY: tasks write disjoint runs through it (see `convert_out`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut u16 {
        self.0
    }
}

/// Checks that window `h` (f16) lies inside the `half_len` f16 elements before the scratch,
/// and its copy `c` inside the `f32_len` floats of the scratch, which starts at float `shift`
/// of the arena: both rings whole, so every row of them.
fn check(
    h: &RowWindow,
    c: &RowWindow,
    half_len: usize,
    shift: usize,
    f32_len: usize,
) -> Result<()> {
    let (planes, _, width) = h.geometry();
    if h.rows != c.rows || h.first_row != c.first_row {
        return Err(fail("f16", "a copy must cover the window's rows"));
    }
    if h.rows == 0 || width == 0 || planes == 0 {
        return Ok(());
    }
    let ring = |w: &RowWindow| {
        w.row_start(planes - 1, 0) - w.row_start(0, 0) + (w.capacity - 1) * w.row_stride + width
    };
    if h.row_start(0, 0) + ring(h) > half_len {
        return Err(fail("f16", "window outside the arena"));
    }
    if c.row_start(0, 0).checked_sub(shift).is_none_or(|j| j + ring(c) > f32_len) {
        return Err(fail("f16", "scratch too small"));
    }
    Ok(())
}

/// Calls `f(i, j, len)` for the rows of planes `planes` of window `h` (f16) and the same rows
/// of its f32 copy `c` ([`check`]ed): `i` indexes f16 elements of the arena, `j` its floats.
/// Consecutive rows that follow each other in both windows make one run (a whole plane where
/// neither wraps its ring), so conversions work on long runs; each row's slot is stepped,
/// not divided out (`RowWindow::row_start` per row was a fifth of an f16 run by parts).
fn runs(
    h: &RowWindow,
    c: &RowWindow,
    planes: Range<usize>,
    mut f: impl FnMut(usize, usize, usize),
) {
    let (_, _, width) = h.geometry();
    if h.rows == 0 || width == 0 {
        return;
    }
    let (h0, c0) = (h.row_start(0, 0), c.row_start(0, 0));
    let (hs, cs) = (h.slot(h.first_row), c.slot(c.first_row));
    let joins = h.row_stride == width && c.row_stride == width;
    for p in planes {
        let (hp, cp) = (h0 + p * h.capacity * h.row_stride, c0 + p * c.capacity * c.row_stride);
        let (mut sh, mut sc) = (hs, cs);
        let mut run: Option<(usize, usize, usize)> = None;
        for _ in 0..h.rows {
            let (i, j) = (hp + sh * h.row_stride, cp + sc * c.row_stride);
            run = match run {
                Some((ri, rj, len)) if joins && ri + len == i && rj + len == j => {
                    Some((ri, rj, len + width))
                }
                Some((ri, rj, len)) => {
                    f(ri, rj, len);
                    Some((i, j, width))
                }
                None => Some((i, j, width)),
            };
            sh = if sh + 1 == h.capacity { 0 } else { sh + 1 };
            sc = if sc + 1 == c.capacity { 0 } else { sc + 1 };
        }
        if let Some((ri, rj, len)) = run {
            f(ri, rj, len);
        }
    }
}

/// f16 <-> f32 conversion of runs: F16C where the processor has it (the instructions `half`
/// itself uses there, so the same bits, rounding to nearest even), else `half`'s portable
/// code. `half`'s slice functions call F16C eight elements at a time through a copy, which
/// made staging about 40% of a by-parts run in f16 (`perf record`, the orientation model on
/// one thread: 13.2 ms against 7.5 in f32).
#[derive(Clone, Copy)]
pub(crate) struct Convert {
    #[cfg(target_arch = "x86_64")]
    f16c: bool,
}

impl Convert {
    pub(crate) fn new() -> Convert {
        Convert {
            #[cfg(target_arch = "x86_64")]
            f16c: std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx"),
        }
    }

    /// `dst[i] = src[i]` widened; `dst` and `src` of the same length.
    pub(crate) fn to_f32(self, src: &[u16], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        #[cfg(target_arch = "x86_64")]
        if self.f16c {
            // SAFETY: F16C and AVX detected; equal lengths (asserted).
            unsafe { widen_f16c(src, dst) };
            return;
        }
        let src: &[f16] = bytemuck::cast_slice(src);
        src.convert_to_f32_slice(dst);
    }

    /// `dst[i] = src[i]` rounded to f16 (nearest even); `dst` and `src` of the same length.
    pub(crate) fn to_f16(self, src: &[f32], dst: &mut [u16]) {
        assert_eq!(src.len(), dst.len());
        #[cfg(target_arch = "x86_64")]
        if self.f16c {
            // SAFETY: as above.
            unsafe { narrow_f16c(src, dst) };
            return;
        }
        let dst: &mut [f16] = bytemuck::cast_slice_mut(dst);
        dst.convert_from_f32_slice(src);
    }
}

/// # Safety
/// F16C and AVX must be available; `dst.len() == src.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn widen_f16c(src: &[u16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = src.len();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n elements of both.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    if i < n && n >= 8 {
        // The last eight again, overlapping converted ones: the same values.
        // SAFETY: n >= 8 elements of both.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(n - 8).cast());
            _mm256_storeu_ps(dst.as_mut_ptr().add(n - 8), _mm256_cvtph_ps(h));
        }
    } else if i < n {
        // Fewer than eight in all: `half`'s own F16C conversion, the same bits.
        let src: &[f16] = bytemuck::cast_slice(src);
        src.convert_to_f32_slice(dst);
    }
}

/// # Safety
/// F16C and AVX must be available; `dst.len() == src.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn narrow_f16c(src: &[f32], dst: &mut [u16]) {
    use std::arch::x86_64::*;
    let n = src.len();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n elements of both.
        unsafe {
            let h =
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.as_ptr().add(i)));
            _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), h);
        }
        i += 8;
    }
    if i < n && n >= 8 {
        // The last eight again, overlapping converted ones: the same values.
        // SAFETY: n >= 8 elements of both.
        unsafe {
            let f = _mm256_loadu_ps(src.as_ptr().add(n - 8));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(f);
            _mm_storeu_si128(dst.as_mut_ptr().add(n - 8).cast(), h);
        }
    } else if i < n {
        // Fewer than eight in all: `half`'s own F16C conversion, the same bits.
        let dst: &mut [f16] = bytemuck::cast_slice_mut(dst);
        dst.convert_from_f32_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frugal_core::backend::Dims;

    /// Values that exercise rounding: ties, subnormals, overflow, infinities, NaN, signed zero.
    fn awkward(n: usize) -> Vec<f32> {
        let special = [
            0.0,
            -0.0,
            1.0,
            -1.5,
            65504.0,
            65520.0,
            1e6,
            -1e6,
            6.0e-8,
            3.0e-8,
            1.0e-5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1.0 + 1.0 / 2048.0,
            1.0 + 3.0 / 2048.0,
        ];
        (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    special[i % special.len()]
                } else {
                    (i as f32 * 0.37).sin() * 300.0
                }
            })
            .collect()
    }

    #[test]
    fn conversions_give_halfs_bits_at_every_length() {
        let convert = Convert::new();
        for n in 0..70 {
            let f = awkward(n);
            let mut ours = vec![0u16; n];
            convert.to_f16(&f, &mut ours);
            let theirs: Vec<u16> = f.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
            assert_eq!(ours, theirs, "f32 -> f16, {n} elements");
            let mut back = vec![0f32; n];
            convert.to_f32(&ours, &mut back);
            let expect: Vec<u32> =
                theirs.iter().map(|&h| f16::from_bits(h).to_f32().to_bits()).collect();
            let got: Vec<u32> = back.iter().map(|x| x.to_bits()).collect();
            assert_eq!(got, expect, "f16 -> f32, {n} elements");
        }
    }

    #[test]
    fn runs_cover_each_row_once_wrapped_or_not() {
        // A ring of 5 rows of 6 columns (stride 8) holding rows 3..7 (slots 3, 4, 0, 1), and a
        // copy of exactly those rows; 3 planes.
        let dims = Dims::new(&[1, 3, 9, 6]).unwrap();
        let ring = RowWindow {
            offset: 64,
            dtype: DType::F16,
            dims,
            capacity: 5,
            row_stride: 8,
            first_row: 3,
            rows: 4,
        };
        let copy = staged(&ring, 1024);
        check(&ring, &copy, 10_000, 256, 10_000).unwrap();
        let mut seen = Vec::new();
        runs(&ring, &copy, 0..3, |i, j, len| seen.push((i, j, len)));
        let mut rows = Vec::new();
        for (i, j, len) in seen {
            assert_eq!(len % 6, 0);
            for k in 0..len / 6 {
                rows.push((i + k * 6, j + k * 6));
            }
        }
        let expect: Vec<(usize, usize)> = (0..3)
            .flat_map(|p| (3..7).map(move |r| (p, r)))
            .map(|(p, r)| (ring.row_start(p, r), copy.row_start(p, r)))
            .collect();
        let mut sorted = rows.clone();
        sorted.sort();
        let mut want = expect.clone();
        want.sort();
        assert_eq!(sorted, want);
        // A whole contiguous window converts as one run per plane.
        let whole = RowWindow::whole(0, DType::F16, Dims::new(&[1, 3, 4, 6]).unwrap());
        let copy = staged(&whole, 1024);
        let mut n = 0;
        runs(&whole, &copy, 0..3, |_, _, len| {
            assert_eq!(len, 24);
            n += 1;
        });
        assert_eq!(n, 3);
    }
}
