//! Test rig for the kernel families: an arena with bump-allocated windows, weights, a runner
//! that checks kernels allocate nothing, and the band test that produces an output by parts
//! (whole inputs, then inputs streamed through rings) and compares bits with the whole call.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use frugal_core::backend::{Kernel, RowWindow, Scratch, WeightRef};
use frugal_core::{Backend, DType, Dims, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::CpuBackend;

/// Counts allocations made on this thread while `COUNTING` is set.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    let on = COUNTING.try_with(Cell::get).unwrap_or(false);
    if on {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations it made on this thread.
pub(crate) fn count_allocs<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCS.with(Cell::get))
}

/// A backend with an arena whose windows are handed out bump-style.
pub(crate) struct Rig {
    pub(crate) be: CpuBackend,
    top: usize,
    size: usize,
}

impl Rig {
    pub(crate) fn new() -> Rig {
        Rig::with(CpuBackend::new())
    }

    /// A rig over a given backend (e.g. one forced to the portable instruction set).
    pub(crate) fn with(mut be: CpuBackend) -> Rig {
        let size = 32 << 20;
        be.alloc_arena(size).expect("arena");
        Rig { be, top: 0, size }
    }

    /// `floats` fresh NaN-filled floats; returns their byte offset.
    fn region(&mut self, floats: usize) -> usize {
        let off = self.top;
        self.top = (off + floats * 4).div_ceil(64) * 64 + 64;
        assert!(self.top <= self.size, "test arena too small");
        self.be.arena.f32_mut()[off / 4..off / 4 + floats].fill(f32::NAN);
        off
    }

    /// A whole, contiguous tensor.
    pub(crate) fn whole(&mut self, dims: &[usize]) -> RowWindow {
        let d = Dims::new(dims).expect("rank");
        RowWindow::whole(self.region(d.numel()), DType::F32, d)
    }

    /// A whole tensor whose rows are `pad` floats longer than its width.
    pub(crate) fn padded(&mut self, dims: &[usize], pad: usize) -> RowWindow {
        let d = Dims::new(dims).expect("rank");
        let (p, h, w) = d.rows();
        let off = self.region(p * h * (w + pad));
        RowWindow { row_stride: w + pad, ..RowWindow::whole(off, DType::F32, d) }
    }

    /// A ring of `capacity` rows holding no rows yet.
    pub(crate) fn ring(&mut self, dims: &[usize], capacity: usize) -> RowWindow {
        let d = Dims::new(dims).expect("rank");
        let (p, _, w) = d.rows();
        let off = self.region(p * capacity * w);
        RowWindow { capacity, first_row: 0, rows: 0, ..RowWindow::whole(off, DType::F32, d) }
    }

    /// Writes rows `lo..hi` of the whole tensor `full` into `w`; returns the window of them.
    pub(crate) fn put_rows(
        &mut self,
        w: &RowWindow,
        full: &[f32],
        lo: usize,
        hi: usize,
    ) -> RowWindow {
        let win = RowWindow { first_row: lo, rows: hi.saturating_sub(lo), ..*w };
        let (planes, h, width) = w.geometry();
        let mut rows = Vec::new();
        for p in 0..planes {
            for r in lo..hi {
                rows.extend_from_slice(&full[(p * h + r) * width..][..width]);
            }
        }
        self.be.write(&win, &rows, lo..hi.max(lo)).expect("write");
        win
    }

    /// A whole window of `dims` holding `data`.
    pub(crate) fn input(&mut self, dims: &[usize], data: &[f32]) -> RowWindow {
        let w = self.whole(dims);
        let (_, h, _) = w.geometry();
        self.put_rows(&w, data, 0, h)
    }

    /// The rows of `w`, laid out as `Backend::read` does.
    pub(crate) fn read(&mut self, w: &RowWindow) -> Vec<f32> {
        let mut out = vec![0.0; w.len()];
        self.be.read(w, &mut out, w.first_row..w.first_row + w.rows).expect("read");
        out
    }

    pub(crate) fn weight(&mut self, dims: &[usize], data: &[f32]) -> WeightRef {
        let id = self.be.upload(&Tensor::from_f32(dims.to_vec(), data.to_vec())).expect("upload");
        WeightRef { id, dims: Dims::new(dims).expect("rank") }
    }

    /// Prepares and runs `k` with NaN-filled scratch; a successful call must not allocate.
    pub(crate) fn run(&mut self, k: &Kernel<'_>) -> Result<()> {
        self.run_variant(k, None)
    }

    /// [`Rig::run`] with a kernel variant.
    pub(crate) fn run_variant(&mut self, k: &Kernel<'_>, variant: Option<usize>) -> Result<()> {
        self.be.prepare(k)?;
        let bytes = self.be.workspace_bytes(k);
        let offset = self.top;
        assert!(offset + bytes <= self.size, "test arena too small for scratch");
        self.be.arena.f32_mut()[offset / 4..(offset + bytes) / 4].fill(f32::NAN);
        let (res, allocs) =
            count_allocs(|| self.be.execute_variant(k, variant, Scratch { offset, bytes }));
        if res.is_ok() {
            assert_eq!(allocs, 0, "{} allocated while running", k.family());
        }
        res
    }
}

/// Which input rows output rows `lo..hi` read: `(first, end)`.
pub(crate) type Need<'a> = dyn Fn(usize, usize) -> (usize, usize) + 'a;

/// An input of a band test: a whole tensor, and the input rows that output rows `lo..hi` read.
pub(crate) struct Input<'a> {
    pub(crate) dims: &'a [usize],
    pub(crate) data: &'a [f32],
    pub(crate) need: &'a Need<'a>,
}

/// Partitions of `0..h` into bands: `[0,1) [1,4) [4,h)`, and one row at a time.
fn partitions(h: usize) -> Vec<Vec<(usize, usize)>> {
    let cuts = [0, 1.min(h), 4.min(h), h];
    let std = cuts.windows(2).filter(|c| c[0] < c[1]).map(|c| (c[0], c[1])).collect();
    vec![std, (0..h).map(|r| (r, r + 1)).collect()]
}

/// Runs the kernel `make` builds once over whole tensors, then by bands of output rows with
/// whole inputs, then by bands with every input and the output in rings holding only the rows
/// of the band; asserts each gives the whole call's bits, and returns the whole output. All
/// of it on one thread and again on two (threads split rows, columns or planes by the size of
/// the window), with the same bits.
/// Weights (shape, data) are uploaded first and handed to `make` in order.
pub(crate) fn check_bands(
    inputs: &[Input<'_>],
    weights: &[(&[usize], &[f32])],
    y_dims: &[usize],
    make: impl for<'w> Fn(&'w [RowWindow], &[WeightRef], RowWindow) -> Kernel<'w>,
) -> Vec<f32> {
    let one = check_bands_on(Rig::new(), inputs, weights, y_dims, &make);
    let two = Rig::with(CpuBackend::with_threads(2).expect("a second thread"));
    assert_bits(&check_bands_on(two, inputs, weights, y_dims, &make), &one, "two threads");
    one
}

fn check_bands_on(
    mut rig: Rig,
    inputs: &[Input<'_>],
    weights: &[(&[usize], &[f32])],
    y_dims: &[usize],
    make: &impl for<'w> Fn(&'w [RowWindow], &[WeightRef], RowWindow) -> Kernel<'w>,
) -> Vec<f32> {
    let ws: Vec<WeightRef> = weights.iter().map(|(d, v)| rig.weight(d, v)).collect();
    let xs: Vec<RowWindow> = inputs.iter().map(|i| rig.input(i.dims, i.data)).collect();
    let y = rig.whole(y_dims);
    rig.run(&make(&xs, &ws, y)).expect("whole call");
    let want = rig.read(&y);
    let (planes, h, width) = y.geometry();
    for bands in partitions(h) {
        // Bands with whole inputs, into a fresh whole output.
        let y2 = rig.whole(y_dims);
        for &(lo, hi) in &bands {
            let yb = RowWindow { first_row: lo, rows: hi - lo, ..y2 };
            rig.run(&make(&xs, &ws, yb)).unwrap_or_else(|e| panic!("band {lo}..{hi}: {e}"));
        }
        assert_bits(&rig.read(&y2), &want, "bands over whole inputs");
        // Bands streamed through rings (capacity one more than the largest band needs).
        let rings: Vec<RowWindow> = inputs
            .iter()
            .map(|i| {
                let ih = Dims::new(i.dims).expect("rank").rows().1;
                let most =
                    bands.iter().map(|&(lo, hi)| need_len(i.need, lo, hi)).max().unwrap_or(0);
                rig.ring(i.dims, (most + 1).min(ih).max(1))
            })
            .collect();
        let most = bands.iter().map(|&(lo, hi)| hi - lo).max().unwrap_or(1);
        let yring = rig.ring(y_dims, (most + 1).min(h).max(1));
        let mut got = vec![f32::NAN; want.len()];
        for &(lo, hi) in &bands {
            let held: Vec<RowWindow> = inputs
                .iter()
                .zip(&rings)
                .map(|(i, ring)| {
                    let ih = ring.geometry().1;
                    let (a, b) = (i.need)(lo, hi);
                    let (a, b) = (a.min(ih), b.min(ih));
                    rig.put_rows(ring, i.data, a, b.max(a))
                })
                .collect();
            let yb = RowWindow { first_row: lo, rows: hi - lo, ..yring };
            rig.run(&make(&held, &ws, yb)).unwrap_or_else(|e| panic!("ring band {lo}..{hi}: {e}"));
            let part = rig.read(&yb);
            for p in 0..planes {
                for r in lo..hi {
                    let src = &part[(p * (hi - lo) + r - lo) * width..][..width];
                    got[(p * h + r) * width..][..width].copy_from_slice(src);
                }
            }
        }
        assert_bits(&got, &want, "bands through rings");
    }
    want
}

fn need_len(need: &Need<'_>, lo: usize, hi: usize) -> usize {
    let (a, b) = need(lo, hi);
    b.saturating_sub(a)
}

/// Every input row, whatever the band (for inputs read whole).
pub(crate) fn all_rows(h: usize) -> impl Fn(usize, usize) -> (usize, usize) {
    move |_, _| (0, h)
}

/// The same rows as the output band.
pub(crate) fn same_rows(lo: usize, hi: usize) -> (usize, usize) {
    (lo, hi)
}

pub(crate) fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
    }
}

/// `|got - want| <= tol * max(1, |want|)` elementwise (NaN and infinities must match).
pub(crate) fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_finite() {
            (g - w).abs() <= tol * w.abs().max(1.0)
        } else {
            g == w || (g.is_nan() && w.is_nan())
        };
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

/// `n` uniform values in `[-1, 1)`.
pub(crate) fn rand_vec(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A candle tensor of `dims` holding `data`.
pub(crate) fn candle(dims: &[usize], data: &[f32]) -> candle_core::Tensor {
    candle_core::Tensor::from_vec(data.to_vec(), dims, &candle_core::Device::Cpu)
        .expect("candle tensor")
}

/// A candle tensor's values in row-major order.
pub(crate) fn values(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("candle values")
}

/// Row-major strides of `dims`.
pub(crate) fn row_major(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for a in (0..dims.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1] * dims[a + 1];
    }
    s
}

/// Multi-index of row-major index `i` over `dims`.
pub(crate) fn index_of(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for a in (0..dims.len()).rev() {
        idx[a] = i % dims[a];
        i /= dims[a];
    }
    idx
}

/// Leaks `t` so kernels built inside band-test closures can borrow it for any lifetime.
pub(crate) fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocation_counter_sees_allocations() {
        let (v, n) = count_allocs(|| vec![1u8; 3]);
        assert_eq!((v.len(), n), (3, 1));
        assert_eq!(count_allocs(|| 1 + 1).1, 0);
    }
}
