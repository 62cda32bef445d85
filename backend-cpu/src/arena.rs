//! The CPU arena: one 64-byte aligned allocation, and the split borrow that lets a kernel read
//! its inputs while writing its output and scratch, all in safe Rust.

use std::ops::Range;

use bytemuck::{Pod, Zeroable};
use frugal_core::{Error, Result, RowWindow};

/// One cache line of floats; the arena is a vector of these, so it is 64-byte aligned.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// The session's activation memory.
#[derive(Default)]
pub struct Arena {
    lines: Vec<Line>,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Arena({} bytes)", self.lines.len() * 64)
    }
}

impl Arena {
    /// Allocates `bytes` (rounded up to a cache line), zeroed.
    pub fn new(bytes: usize) -> Result<Arena> {
        let n = bytes.div_ceil(64);
        let mut lines = Vec::new();
        lines.try_reserve_exact(n).map_err(|_| Error::Backend {
            backend: "cpu".into(),
            op: "alloc_arena".into(),
            reason: format!(
                "cannot allocate {bytes} bytes; lower the memory budget or the input size"
            ),
        })?;
        lines.resize(n, Line([0.0; 16]));
        Ok(Arena { lines })
    }

    /// Size in f32 elements.
    pub fn len(&self) -> usize {
        self.lines.len() * 16
    }

    /// True before allocation.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The whole arena as floats.
    pub fn f32(&self) -> &[f32] {
        bytemuck::cast_slice(&self.lines)
    }

    /// The whole arena as mutable floats.
    pub fn f32_mut(&mut self) -> &mut [f32] {
        bytemuck::cast_slice_mut(&mut self.lines)
    }

    /// Splits the arena into read-only memory, the output region `out` and the scratch region
    /// `scratch` (element ranges; they must be disjoint and in bounds).
    pub fn split(&mut self, out: Range<usize>, scratch: Range<usize>) -> Result<Io<'_>> {
        let len = self.len();
        let (o, sc) = (out.clone(), scratch.clone());
        let bad = move |what: &str| Error::Backend {
            backend: "cpu".into(),
            op: "split".into(),
            reason: format!("{what} (out {o:?}, scratch {sc:?}, arena {len})"),
        };
        if out.end > len || scratch.end > len || out.start > out.end || scratch.start > scratch.end
        {
            return Err(bad("region out of bounds"));
        }
        let scratch = if scratch.is_empty() { out.end..out.end } else { scratch };
        if scratch.start < out.end && out.start < scratch.end {
            return Err(bad("output and scratch overlap"));
        }
        let all = self.f32_mut();
        let (first, second) = if out.start <= scratch.start {
            (out.clone(), scratch.clone())
        } else {
            (scratch.clone(), out.clone())
        };
        let (a, rest) = all.split_at_mut(first.start);
        let (f, rest) = rest.split_at_mut(first.end - first.start);
        let (b, rest) = rest.split_at_mut(second.start - first.end);
        let (s, c) = rest.split_at_mut(second.end - second.start);
        let (out_s, scratch_s) = if out.start <= scratch.start { (f, s) } else { (s, f) };
        Ok(Io {
            src: Src { parts: [(0, &*a), (first.end, &*b), (second.end, &*c)] },
            out: out_s,
            out_base: out.start,
            scratch: scratch_s,
        })
    }
}

/// Read-only view of the arena outside the regions being written.
#[derive(Clone, Copy)]
pub struct Src<'a> {
    parts: [(usize, &'a [f32]); 3],
}

impl<'a> Src<'a> {
    /// Whether elements `range` are readable.
    pub fn contains(&self, range: &Range<usize>) -> bool {
        range.is_empty()
            || self.parts.iter().any(|&(s, p)| range.start >= s && range.end <= s + p.len())
    }

    /// Elements `start..start + len`. Windows are validated before kernels run, so a miss is a
    /// bug in a kernel and panics rather than reading wrong data.
    #[inline]
    pub fn slice(&self, start: usize, len: usize) -> &'a [f32] {
        for &(s, p) in &self.parts {
            if start >= s && start + len <= s + p.len() {
                return &p[start - s..start - s + len];
            }
        }
        panic!("kernel read {start}..{} outside its validated inputs", start + len)
    }
}

impl std::fmt::Debug for Src<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<_> = self.parts.iter().map(|(s, p)| (*s, p.len())).collect();
        write!(f, "Src({parts:?})")
    }
}

/// What a kernel works with: its inputs, its output buffer and its scratch.
pub struct Io<'a> {
    /// Readable memory (inputs live here).
    pub src: Src<'a>,
    /// The output buffer's region.
    pub out: &'a mut [f32],
    /// Arena element index of `out[0]`.
    pub out_base: usize,
    /// Scratch memory.
    pub scratch: &'a mut [f32],
}

/// Element range of the whole buffer behind a window (every plane, every ring slot), up to
/// its last element: a window of some columns of a wider buffer (a column strip's view, rows
/// `row_stride` apart) ends with its last row's width, not the buffer's.
pub fn extent(w: &RowWindow) -> Range<usize> {
    let (planes, _, width) = w.geometry();
    let start = w.offset / 4;
    let slots = planes * w.capacity;
    start..start + if slots == 0 { 0 } else { (slots - 1) * w.row_stride + width }
}

impl std::fmt::Debug for Io<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Io(out {}+{}, scratch {})", self.out_base, self.out.len(), self.scratch.len())
    }
}

impl<'a> Io<'a> {
    /// Row `row` of plane `plane` of input window `w` (its `width` elements).
    #[inline]
    pub fn in_row(&self, w: &RowWindow, plane: usize, row: usize) -> &'a [f32] {
        let (_, _, width) = w.geometry();
        self.src.slice(w.row_start(plane, row), width)
    }

    /// Row `row` of plane `plane` of the output window `y`.
    #[inline]
    pub fn out_row(&mut self, y: &RowWindow, plane: usize, row: usize) -> &mut [f32] {
        let (_, _, width) = y.geometry();
        let s = y.row_start(plane, row) - self.out_base;
        &mut self.out[s..s + width]
    }
}
