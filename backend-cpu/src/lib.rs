//! # frugal-cpu
//!
//! The CPU backend of frugal: kernels over row windows of one arena, one file per op family
//! (`ops/`), and a small deterministic matrix-product engine (`gemm/`).
//!
//! **Determinism contract.** Every kernel computes each output element with the same
//! operations in the same order, whatever rows a call is asked for and however the work is
//! tiled. That is what makes execution by parts bit-identical to layer by layer. Reductions
//! therefore run in a fixed order per element (for products: `acc = fma(a[k], b[k], acc)` for
//! `k = 0..K`), never split by the size of the call.

mod arena;
pub mod gemm;
mod ops;
mod par;
mod simd;
mod staging;

use std::ops::Range;

use frugal_core::backend::{Capabilities, Kernel, Operand, RowWindow, Scratch, WeightId};
use frugal_core::{Backend, DType, Error, Result, Tensor};

pub use arena::{Arena, Io, Src};
pub use gemm::Isa;
pub use par::{Par, Pool};

/// What kernels need from the backend besides memory: the instruction set and the threads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) isa: Isa,
    pub(crate) par: Par<'a>,
    /// Kernel variant (index into [`ops::variants`]), `None`: the kernel's own choice.
    pub(crate) variant: Option<usize>,
}

/// A weight as stored by the CPU backend: the f32 data (zero-copy when the model file held f32)
/// and, for dense layers, a repacked form made by `prepare`. A matrix-product convolution's
/// weight is repacked in place of its data (`conv_panels`): the backend holds one copy.
#[derive(Debug)]
pub(crate) struct Weight {
    pub(crate) data: Tensor,
    pub(crate) packed: Option<Vec<f32>>,
    /// `Some(groups)`: `data` holds each group's `[mg, k]` matrix packed by
    /// [`gemm::pack_a`], not row-major.
    pub(crate) conv_panels: Option<usize>,
}

impl Weight {
    /// The row-major values (empty once repacked for a convolution, so that a kernel reading
    /// it as row-major fails its size check instead of computing with permuted values).
    pub(crate) fn f32(&self) -> &[f32] {
        if self.conv_panels.is_some() {
            return &[];
        }
        // Uploaded weights are converted to f32 on upload.
        self.data.as_f32().unwrap_or(&[])
    }
}

/// The CPU backend.
#[derive(Debug)]
pub struct CpuBackend {
    arena: Arena,
    weights: Vec<Weight>,
    isa: Isa,
    /// Worker threads for work inside a firing; `None` runs on the caller's thread only.
    pool: Option<par::Pool>,
    /// Reused list of staged concat inputs (f16 storage), so staging allocates nothing.
    staged_xs: Vec<RowWindow>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// A single-threaded CPU backend using the best instruction set this processor offers
    /// (detected at run time).
    pub fn new() -> Self {
        Self::with_isa(Isa::detect())
    }

    /// A CPU backend forced to an instruction set (for tests and comparisons).
    pub fn with_isa(isa: Isa) -> Self {
        CpuBackend {
            arena: Arena::default(),
            weights: Vec::new(),
            isa,
            pool: None,
            staged_xs: Vec::new(),
        }
    }

    /// A CPU backend using `threads` threads inside each firing (1: the caller's thread only).
    /// Results are the same bits for any thread count.
    pub fn with_threads(threads: usize) -> Result<Self> {
        let mut b = Self::new();
        if threads > 1 {
            let pool = par::Pool::new(threads)
                .map_err(|e| fail("threads", format!("cannot start {threads} threads: {e}")))?;
            b.pool = Some(pool);
        }
        Ok(b)
    }

    /// Threads used inside a firing.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, par::Pool::threads)
    }

    /// The instruction set in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }
}

/// Runs a kernel whose windows are all f32.
fn execute_f32(
    arena: &mut Arena,
    kernel: &Kernel<'_>,
    scratch: Scratch,
    weights: &[Weight],
    ctx: Ctx<'_>,
) -> Result<()> {
    let y = kernel.output();
    if y.dtype != DType::F32 || inputs_of(kernel).any(|w| w.dtype != DType::F32) {
        return Err(fail(kernel.family(), "windows must be f32 or f16"));
    }
    let out = arena::extent(y);
    let scr = scratch.offset / 4..(scratch.offset + scratch.bytes) / 4;
    let io = arena.split(out, scr)?;
    for w in inputs_of(kernel) {
        if !io.src.contains(&arena::extent(w)) {
            return Err(fail(
                kernel.family(),
                "an input overlaps the output or lies outside the arena",
            ));
        }
    }
    ops::execute(kernel, io, weights, ctx)
}

/// Checks a host buffer of `len` floats holding rows `host` of every plane covers the window;
/// returns (planes, width).
fn host_layout(op: &str, w: &RowWindow, len: usize, host: &Range<usize>) -> Result<(usize, usize)> {
    let (planes, h, width) = w.geometry();
    let inside = host.start <= w.first_row && w.first_row + w.rows <= host.end && host.end <= h;
    if !inside || len != planes * host.len() * width || w.rows > w.capacity {
        return Err(fail(
            op,
            format!(
                "host rows {host:?} ({len} values) do not cover window rows {}..{} of {:?}",
                w.first_row,
                w.first_row + w.rows,
                w.dims
            ),
        ));
    }
    Ok((planes, width))
}

pub(crate) fn fail(op: &str, reason: impl Into<String>) -> Error {
    Error::Backend { backend: "cpu".into(), op: op.into(), reason: reason.into() }
}

/// Every activation window a kernel reads.
fn inputs_of<'k>(k: &'k Kernel<'_>) -> impl Iterator<Item = &'k RowWindow> {
    let (one, two): (Option<&RowWindow>, Option<&RowWindow>) = match k {
        Kernel::Conv { x, r, .. } => (Some(x), r.as_ref()),
        Kernel::ConvTranspose { x, .. }
        | Kernel::Pool { x, .. }
        | Kernel::GlobalAvgPool { x, .. }
        | Kernel::Affine { x, .. }
        | Kernel::Unary { x, .. }
        | Kernel::Resize { x, .. }
        | Kernel::Reduce { x, .. }
        | Kernel::Softmax { x, .. }
        | Kernel::Transpose { x, .. } => (Some(x), None),
        Kernel::Gemm { a, .. } => (Some(a), None),
        Kernel::Binary { a, b, .. } | Kernel::MatMul { a, b, .. } => (arena_of(a), arena_of(b)),
        Kernel::Copy { x, .. } => (arena_of(x), None),
        Kernel::Concat { .. } => (None, None),
    };
    let many: &[RowWindow] = if let Kernel::Concat { xs, .. } = k { xs } else { &[] };
    one.into_iter().chain(two).chain(many.iter())
}

fn arena_of(o: &Operand) -> Option<&RowWindow> {
    match o {
        Operand::Arena(w) => Some(w),
        Operand::Weight(_) => None,
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            storage: vec![DType::F32, DType::F16],
            max_buffer_bytes: isize::MAX as u64,
            max_binding_bytes: isize::MAX as u64,
            device: format!("CPU ({}, {} threads)", self.isa.name(), self.threads()),
            kernels: env!("FRUGAL_CPU_KERNELS").to_string(),
        }
    }

    fn alloc_arena(&mut self, bytes: usize) -> Result<()> {
        self.arena = Arena::default();
        self.arena = Arena::new(bytes)?;
        Ok(())
    }

    fn upload(&mut self, weight: &Tensor) -> Result<WeightId> {
        let data =
            if weight.dtype() == DType::F32 { weight.clone() } else { weight.cast(DType::F32) };
        self.weights.push(Weight { data, packed: None, conv_panels: None });
        Ok(WeightId(self.weights.len() - 1))
    }

    fn prepare(&mut self, kernel: &Kernel<'_>) -> Result<()> {
        ops::prepare(self, kernel)
    }

    fn workspace_bytes(&self, kernel: &Kernel<'_>) -> usize {
        ops::workspace_floats(kernel, self.isa, self.threads()) * 4 + staging::bytes(kernel)
    }

    fn execute(&mut self, kernel: &Kernel<'_>, scratch: Scratch) -> Result<()> {
        self.execute_variant(kernel, None, scratch)
    }

    fn variants(&self, kernel: &Kernel<'_>) -> Vec<&'static str> {
        ops::variants(kernel, self.isa, self.threads()).to_vec()
    }

    fn execute_variant(
        &mut self,
        kernel: &Kernel<'_>,
        variant: Option<usize>,
        scratch: Scratch,
    ) -> Result<()> {
        let ctx = Ctx { isa: self.isa, par: Par::new(self.pool.as_ref()), variant };
        let weights = &self.weights;
        let mut run =
            |arena: &mut Arena, k: &Kernel<'_>, s: Scratch| execute_f32(arena, k, s, weights, ctx);
        if staging::needed(kernel) {
            // A kernel variant that runs on the calling thread alone stages there too.
            let serial = variant.is_some_and(|v| {
                ops::variants(kernel, self.isa, self.threads()).get(v) == Some(&ops::SERIAL)
            });
            let par = if serial { Par::serial() } else { ctx.par };
            staging::execute(&mut self.arena, &mut self.staged_xs, kernel, scratch, par, &mut run)
        } else {
            run(&mut self.arena, kernel, scratch)
        }
    }

    fn write(&mut self, dst: &RowWindow, src: &[f32], src_rows: Range<usize>) -> Result<()> {
        let (planes, width) = host_layout("write", dst, src.len(), &src_rows)?;
        if dst.dtype == DType::F16 {
            let halves: &mut [u16] = bytemuck::cast_slice_mut(self.arena.f32_mut());
            let narrow = staging::Convert::new();
            for p in 0..planes {
                for r in dst.first_row..dst.first_row + dst.rows {
                    let (s, d) =
                        ((p * src_rows.len() + r - src_rows.start) * width, dst.row_start(p, r));
                    let row = halves
                        .get_mut(d..d + width)
                        .ok_or_else(|| fail("write", "window outside the arena"))?;
                    narrow.to_f16(&src[s..s + width], row);
                }
            }
            return Ok(());
        }
        let mut io = self.arena.split(arena::extent(dst), 0..0)?;
        for p in 0..planes {
            for r in dst.first_row..dst.first_row + dst.rows {
                let s = (p * src_rows.len() + r - src_rows.start) * width;
                io.out_row(dst, p, r).copy_from_slice(&src[s..s + width]);
            }
        }
        Ok(())
    }

    fn read(&mut self, src: &RowWindow, dst: &mut [f32], dst_rows: Range<usize>) -> Result<()> {
        let (planes, width) = host_layout("read", src, dst.len(), &dst_rows)?;
        if src.dtype == DType::F16 {
            let halves: &[u16] = bytemuck::cast_slice(self.arena.f32());
            let widen = staging::Convert::new();
            for p in 0..planes {
                for r in src.first_row..src.first_row + src.rows {
                    let (s, d) =
                        (src.row_start(p, r), (p * dst_rows.len() + r - dst_rows.start) * width);
                    let row = halves
                        .get(s..s + width)
                        .ok_or_else(|| fail("read", "window outside the arena"))?;
                    widen.to_f32(row, &mut dst[d..d + width]);
                }
            }
            return Ok(());
        }
        let arena = self.arena.f32();
        for p in 0..planes {
            for r in src.first_row..src.first_row + src.rows {
                let s = src.row_start(p, r);
                let row = arena
                    .get(s..s + width)
                    .ok_or_else(|| fail("read", "window outside the arena"))?;
                let d = (p * dst_rows.len() + r - dst_rows.start) * width;
                dst[d..d + width].copy_from_slice(row);
            }
        }
        Ok(())
    }

    fn threads(&self) -> usize {
        CpuBackend::threads(self)
    }

    fn fork(&self, threads: usize) -> Result<Box<dyn Backend>> {
        let mut b = CpuBackend::with_threads(threads)?;
        b.isa = self.isa;
        Ok(Box::new(b))
    }

    fn weight_bytes(&self) -> usize {
        self.weights
            .iter()
            .map(|w| w.data.nbytes() + w.packed.as_ref().map_or(0, |p| p.len() * 4))
            .sum()
    }
}
