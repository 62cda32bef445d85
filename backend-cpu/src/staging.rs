//! f16 storage. Kernels compute in f32; a call whose windows are stored as f16 has them
//! converted into f32 copies in scratch first (only the rows the call reads), runs the f32
//! kernel, and converts its output rows back. Every element is rounded to f16 exactly once,
//! when it is stored, whatever rows a call covers: by parts stays bit-identical to layer by
//! layer in f16 too.

use frugal_core::backend::{Kernel, RowWindow, Scratch};
use frugal_core::{DType, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::arena::Arena;
use crate::fail;

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
        if let Err(e) = convert_in(arena, w, &s, base) {
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
        convert_out(arena, k32.output(), &y, base)?;
    }
    Ok(())
}

fn convert_in(arena: &mut Arena, w: &RowWindow, s: &RowWindow, base: usize) -> Result<()> {
    let (bufs, scr) = halves(arena, base)?;
    let (planes, _, width) = w.geometry();
    for p in 0..planes {
        for r in w.first_row..w.first_row + w.rows {
            let (i, o) = (w.row_start(p, r), s.row_start(p, r) - base / 4);
            let src: &[f16] = bytemuck::cast_slice(
                bufs.get(i..i + width).ok_or_else(|| fail("f16", "window outside the arena"))?,
            );
            let dst = scr.get_mut(o..o + width).ok_or_else(|| fail("f16", "scratch too small"))?;
            src.convert_to_f32_slice(dst);
        }
    }
    Ok(())
}

fn convert_out(arena: &mut Arena, s: &RowWindow, y: &RowWindow, base: usize) -> Result<()> {
    let (bufs, scr) = halves(arena, base)?;
    let (planes, _, width) = y.geometry();
    for p in 0..planes {
        for r in y.first_row..y.first_row + y.rows {
            let (i, o) = (s.row_start(p, r) - base / 4, y.row_start(p, r));
            let src = scr.get(i..i + width).ok_or_else(|| fail("f16", "scratch too small"))?;
            let dst: &mut [f16] = bytemuck::cast_slice_mut(
                bufs.get_mut(o..o + width)
                    .ok_or_else(|| fail("f16", "window outside the arena"))?,
            );
            dst.convert_from_f32_slice(src);
        }
    }
    Ok(())
}
