//! The contract between the executor (in core) and the devices that run kernels.
//!
//! Backends never schedule: the session replays the plan and asks the backend to run one kernel
//! at a time over **row windows** of its arena. Kernels write into the windows the plan assigned
//! (destination passing) and may use an explicit scratch region whose size the backend declares
//! up front. The trait is object safe so that backends, including third-party plugins, live
//! behind `Box<dyn Backend>`.

use std::fmt;

use crate::error::Result;
use crate::ops::{
    Activation, Binary, Conv, ConvTranspose, Gemm, MatMul, Pool, Reduce, Resize, Softmax,
};
use crate::tensor::{DType, Tensor};

/// Most axes a runtime tensor may have.
pub const MAX_RANK: usize = 6;

/// A tensor shape stored inline (no allocation while running).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dims {
    rank: u8,
    d: [usize; MAX_RANK],
}

impl Dims {
    /// Dims from a slice; `None` above [`MAX_RANK`].
    pub fn new(s: &[usize]) -> Option<Dims> {
        if s.len() > MAX_RANK {
            return None;
        }
        let mut d = [1; MAX_RANK];
        d[..s.len()].copy_from_slice(s);
        Some(Dims { rank: s.len() as u8, d })
    }

    /// The dims as a slice.
    pub fn as_slice(&self) -> &[usize] {
        &self.d[..self.rank as usize]
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// Element count.
    pub fn numel(&self) -> usize {
        self.as_slice().iter().product()
    }

    /// `(planes, rows, width)`, see [`crate::plan::row_geometry`].
    #[inline]
    pub fn rows(&self) -> (usize, usize, usize) {
        crate::plan::row_geometry(self.as_slice())
    }
}

impl std::ops::Index<usize> for Dims {
    type Output = usize;
    fn index(&self, i: usize) -> &usize {
        &self.as_slice()[i]
    }
}

impl fmt::Debug for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

/// What a kernel sees of one tensor in the arena: some of its rows, in a buffer that may be a
/// ring. Row `r` of plane `p` (plane = all axes before the row axis, flattened) starts at
/// element `offset/size + (p * capacity + r % capacity) * row_stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowWindow {
    /// Byte offset of the buffer in the arena.
    pub offset: usize,
    /// Storage type of the elements.
    pub dtype: DType,
    /// Shape of the whole tensor.
    pub dims: Dims,
    /// Rows the buffer holds: the ring capacity (the tensor height when held whole).
    pub capacity: usize,
    /// Elements between the starts of consecutive rows.
    pub row_stride: usize,
    /// First tensor row of the window.
    pub first_row: usize,
    /// Rows in the window.
    pub rows: usize,
}

impl RowWindow {
    /// A window over the whole of a tensor stored contiguously at `offset`.
    pub fn whole(offset: usize, dtype: DType, dims: Dims) -> RowWindow {
        let (_, h, w) = dims.rows();
        RowWindow { offset, dtype, dims, capacity: h, row_stride: w, first_row: 0, rows: h }
    }

    /// `(planes, height, width)` of the whole tensor.
    #[inline]
    pub fn geometry(&self) -> (usize, usize, usize) {
        self.dims.rows()
    }

    /// Where row `row` sits in the ring. Kernels ask per row: no division where the ring holds
    /// the row's index as it is (a whole tensor; a division per row cost as much as a 7x7
    /// row's arithmetic).
    #[inline]
    pub fn slot(&self, row: usize) -> usize {
        if row < self.capacity {
            row
        } else {
            row % self.capacity
        }
    }

    /// Element index (relative to the arena, in elements of `dtype`) of row `row`, plane `plane`.
    #[inline]
    pub fn row_start(&self, plane: usize, row: usize) -> usize {
        self.offset / self.dtype.size() + (plane * self.capacity + self.slot(row)) * self.row_stride
    }

    /// Whether the window covers the whole tensor contiguously (no ring, no row padding).
    pub fn is_contiguous_whole(&self) -> bool {
        let (_, h, w) = self.geometry();
        self.capacity == h && self.row_stride == w && self.first_row == 0 && self.rows == h
    }

    /// Elements the window covers (all planes).
    pub fn len(&self) -> usize {
        let (p, _, w) = self.geometry();
        p * self.rows * w
    }

    /// True when the window covers no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Why the window is not self-consistent (rows outside the tensor or its ring, rows shorter
    /// than the tensor's width), or `None`. Backends check every window a kernel receives.
    pub fn malformed(&self) -> Option<String> {
        let (_, h, width) = self.geometry();
        let end = self.first_row.saturating_add(self.rows);
        (self.capacity == 0 || self.rows > self.capacity || end > h || self.row_stride < width)
            .then(|| {
                format!(
                    "malformed window: rows {}..{end} of {h}, capacity {}, stride {} for width {width}",
                    self.first_row, self.capacity, self.row_stride
                )
            })
    }

    /// Why the window lacks some of rows `lo..hi` (nothing is needed when `lo >= hi`), or `None`.
    pub fn missing(&self, lo: usize, hi: usize) -> Option<String> {
        let end = self.first_row + self.rows;
        (lo < hi && (lo < self.first_row || hi > end)).then(|| {
            format!("needs input rows {lo}..{hi}, the window holds {}..{end}", self.first_row)
        })
    }

    /// Why the window does not hold every row of its tensor unwrapped (what ops reading across
    /// rows need), or `None`.
    pub fn not_whole(&self) -> Option<String> {
        let (_, h, _) = self.geometry();
        (self.first_row != 0 || self.rows != h || self.capacity < h).then(|| {
            format!(
                "needs whole tensors, got rows {}..{} of {h}",
                self.first_row,
                self.first_row + self.rows
            )
        })
    }
}

/// Handle of a weight uploaded to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WeightId(pub usize);

/// A weight as a kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightRef {
    /// The handle [`Backend::upload`] returned.
    pub id: WeightId,
    /// Its shape.
    pub dims: Dims,
}

/// An operand that is either an activation window or a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// Rows of an activation in the arena.
    Arena(RowWindow),
    /// An uploaded constant.
    Weight(WeightRef),
}

impl Operand {
    /// Shape of the whole tensor.
    pub fn dims(&self) -> Dims {
        match self {
            Operand::Arena(w) => w.dims,
            Operand::Weight(w) => w.dims,
        }
    }
}

/// A scratch region of the arena reserved for one kernel call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scratch {
    /// Byte offset in the arena.
    pub offset: usize,
    /// Bytes available.
    pub bytes: usize,
}

/// One kernel call: the op family, its parameters, and the windows it reads and writes. The
/// output window `y` says which rows to produce; input windows say which rows are present.
#[derive(Clone, Copy, Debug)]
pub enum Kernel<'a> {
    /// Convolution with optional bias, fused residual add and fused activation.
    Conv {
        /// Parameters.
        op: &'a Conv,
        /// Input rows.
        x: RowWindow,
        /// Weight `[M, C/g, kh, kw]`.
        w: WeightRef,
        /// Bias `[M]`.
        b: Option<WeightRef>,
        /// Residual rows (the output's shape), added before the activation (`Conv::residual`).
        r: Option<RowWindow>,
        /// Output rows to produce.
        y: RowWindow,
    },
    /// Transposed convolution.
    ConvTranspose {
        /// Parameters.
        op: &'a ConvTranspose,
        /// Input rows.
        x: RowWindow,
        /// Weight `[C, M/g, kh, kw]`.
        w: WeightRef,
        /// Bias `[M]`.
        b: Option<WeightRef>,
        /// Output rows to produce.
        y: RowWindow,
    },
    /// Max or average pooling.
    Pool {
        /// Parameters.
        op: &'a Pool,
        /// Input rows.
        x: RowWindow,
        /// Output rows to produce.
        y: RowWindow,
    },
    /// Mean over the spatial axes per channel.
    GlobalAvgPool {
        /// Input.
        x: RowWindow,
        /// Output `[N, C, 1, 1]`.
        y: RowWindow,
    },
    /// Per-channel `y = x * scale[c] + shift[c]` then activation (inference batch norm).
    Affine {
        /// Fused activation.
        act: Option<Activation>,
        /// Input rows.
        x: RowWindow,
        /// Scale `[C]`.
        scale: WeightRef,
        /// Shift `[C]`.
        shift: WeightRef,
        /// Output rows.
        y: RowWindow,
    },
    /// Standalone activation.
    Unary {
        /// The function.
        act: Activation,
        /// Input rows.
        x: RowWindow,
        /// Output rows.
        y: RowWindow,
    },
    /// Broadcasting binary op.
    Binary {
        /// Parameters.
        op: &'a Binary,
        /// Left operand.
        a: Operand,
        /// Right operand.
        b: Operand,
        /// Output rows.
        y: RowWindow,
    },
    /// Concatenation along `axis`.
    Concat {
        /// Axis.
        axis: usize,
        /// Inputs in order.
        xs: &'a [RowWindow],
        /// Output rows.
        y: RowWindow,
    },
    /// Spatial resize.
    Resize {
        /// Parameters.
        op: &'a Resize,
        /// Input rows.
        x: RowWindow,
        /// Output rows.
        y: RowWindow,
    },
    /// Gemm with a weight B and optional C.
    Gemm {
        /// Parameters.
        op: &'a Gemm,
        /// A.
        a: RowWindow,
        /// B.
        b: WeightRef,
        /// C.
        c: Option<WeightRef>,
        /// Output.
        y: RowWindow,
    },
    /// Batched matrix product.
    MatMul {
        /// Parameters.
        op: &'a MatMul,
        /// Left.
        a: Operand,
        /// Right.
        b: Operand,
        /// Output.
        y: RowWindow,
    },
    /// Reduction over axes.
    Reduce {
        /// Parameters.
        op: &'a Reduce,
        /// Input.
        x: RowWindow,
        /// Output.
        y: RowWindow,
    },
    /// Softmax.
    Softmax {
        /// Parameters.
        op: &'a Softmax,
        /// Input.
        x: RowWindow,
        /// Output.
        y: RowWindow,
    },
    /// Axis permutation.
    Transpose {
        /// Output axis `i` is input axis `perm[i]`.
        perm: &'a [usize],
        /// Input.
        x: RowWindow,
        /// Output.
        y: RowWindow,
    },
    /// Element-order-preserving copy (reshape, or materialising a constant).
    Copy {
        /// Source.
        x: Operand,
        /// Destination.
        y: RowWindow,
    },
}

impl<'a> Kernel<'a> {
    /// The op family's name (for errors and profiles).
    pub fn family(&self) -> &'static str {
        match self {
            Kernel::Conv { .. } => "conv",
            Kernel::ConvTranspose { .. } => "conv_transpose",
            Kernel::Pool { .. } => "pool",
            Kernel::GlobalAvgPool { .. } => "global_avg_pool",
            Kernel::Affine { .. } => "affine",
            Kernel::Unary { .. } => "unary",
            Kernel::Binary { .. } => "binary",
            Kernel::Concat { .. } => "concat",
            Kernel::Resize { .. } => "resize",
            Kernel::Gemm { .. } => "gemm",
            Kernel::MatMul { .. } => "matmul",
            Kernel::Reduce { .. } => "reduce",
            Kernel::Softmax { .. } => "softmax",
            Kernel::Transpose { .. } => "transpose",
            Kernel::Copy { .. } => "copy",
        }
    }

    /// The same call with each activation input window replaced by `f(window)` and the output
    /// by `y`; concat inputs are written to `xs` (reused storage, no allocation once grown).
    pub fn with_windows<'b>(
        &self,
        f: &mut dyn FnMut(&RowWindow) -> RowWindow,
        y: RowWindow,
        xs: &'b mut Vec<RowWindow>,
    ) -> Kernel<'b>
    where
        'a: 'b,
    {
        let mut opd = |o: &Operand| match o {
            Operand::Arena(w) => Operand::Arena(f(w)),
            w => *w,
        };
        match *self {
            Kernel::Conv { op, x, w, b, r, .. } => {
                Kernel::Conv { op, x: f(&x), w, b, r: r.as_ref().map(&mut *f), y }
            }
            Kernel::ConvTranspose { op, x, w, b, .. } => {
                Kernel::ConvTranspose { op, x: f(&x), w, b, y }
            }
            Kernel::Pool { op, x, .. } => Kernel::Pool { op, x: f(&x), y },
            Kernel::GlobalAvgPool { x, .. } => Kernel::GlobalAvgPool { x: f(&x), y },
            Kernel::Affine { act, x, scale, shift, .. } => {
                Kernel::Affine { act, x: f(&x), scale, shift, y }
            }
            Kernel::Unary { act, x, .. } => Kernel::Unary { act, x: f(&x), y },
            Kernel::Binary { op, a, b, .. } => Kernel::Binary { op, a: opd(&a), b: opd(&b), y },
            Kernel::Concat { axis, xs: old, .. } => {
                xs.clear();
                xs.extend(old.iter().map(&mut *f));
                Kernel::Concat { axis, xs: xs.as_slice(), y }
            }
            Kernel::Resize { op, x, .. } => Kernel::Resize { op, x: f(&x), y },
            Kernel::Gemm { op, a, b, c, .. } => Kernel::Gemm { op, a: f(&a), b, c, y },
            Kernel::MatMul { op, a, b, .. } => Kernel::MatMul { op, a: opd(&a), b: opd(&b), y },
            Kernel::Reduce { op, x, .. } => Kernel::Reduce { op, x: f(&x), y },
            Kernel::Softmax { op, x, .. } => Kernel::Softmax { op, x: f(&x), y },
            Kernel::Transpose { perm, x, .. } => Kernel::Transpose { perm, x: f(&x), y },
            Kernel::Copy { x, .. } => Kernel::Copy { x: opd(&x), y },
        }
    }

    /// The output window.
    pub fn output(&self) -> &RowWindow {
        match self {
            Kernel::Conv { y, .. }
            | Kernel::ConvTranspose { y, .. }
            | Kernel::Pool { y, .. }
            | Kernel::GlobalAvgPool { y, .. }
            | Kernel::Affine { y, .. }
            | Kernel::Unary { y, .. }
            | Kernel::Binary { y, .. }
            | Kernel::Concat { y, .. }
            | Kernel::Resize { y, .. }
            | Kernel::Gemm { y, .. }
            | Kernel::MatMul { y, .. }
            | Kernel::Reduce { y, .. }
            | Kernel::Softmax { y, .. }
            | Kernel::Transpose { y, .. }
            | Kernel::Copy { y, .. } => y,
        }
    }
}

/// What a backend can do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Storage types its kernels read and write.
    pub storage: Vec<DType>,
    /// Largest single buffer it can allocate, in bytes.
    pub max_buffer_bytes: u64,
    /// Largest range one kernel may bind, in bytes (WebGPU's `maxStorageBufferBindingSize`).
    pub max_binding_bytes: u64,
    /// Human-readable device description.
    pub device: String,
    /// Identity of the kernels' code (the CPU backend hashes its sources at build time):
    /// profiles measured with other kernels are measured again. Empty when unknown.
    pub kernels: String,
}

/// A device that runs kernels. Object safe: no generic methods, no `Self` returns.
pub trait Backend: Send + fmt::Debug {
    /// Short name (`cpu`, `wgpu`, `cuda`, or a plugin's).
    fn name(&self) -> &str;

    /// Dtypes, limits and device description.
    fn capabilities(&self) -> Capabilities;

    /// Checks the device is usable (driver present, adapter found, ...).
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Allocates the session's arena (replacing any previous one). All kernel windows and
    /// scratch regions are byte ranges of it.
    fn alloc_arena(&mut self, bytes: usize) -> Result<()>;

    /// Uploads a constant once; kernels refer to it by the returned handle.
    fn upload(&mut self, weight: &Tensor) -> Result<WeightId>;

    /// Called once per node when a session is created, with the node's kernel over its whole
    /// output: the place to repack weights, compile pipelines or pick kernel variants, so that
    /// running never does such work.
    fn prepare(&mut self, kernel: &Kernel<'_>) -> Result<()> {
        let _ = kernel;
        Ok(())
    }

    /// Scratch bytes `kernel` needs (0 by default). The session reserves the maximum over all
    /// calls in the arena and passes it to [`Backend::execute`].
    fn workspace_bytes(&self, kernel: &Kernel<'_>) -> usize {
        let _ = kernel;
        0
    }

    /// Runs one kernel: reads its input windows, writes its output window.
    fn execute(&mut self, kernel: &Kernel<'_>, scratch: Scratch) -> Result<()>;

    /// Names of the interchangeable implementations this backend has for `kernel` (how work is
    /// split across threads, which loop nest runs): they give the same bits and differ only in
    /// speed, so a plan may pick one per node by measurement. Empty: one implementation.
    /// [`Backend::workspace_bytes`] covers every variant.
    fn variants(&self, kernel: &Kernel<'_>) -> Vec<&'static str> {
        let _ = kernel;
        Vec::new()
    }

    /// Runs `kernel` with implementation `variant` (an index into [`Backend::variants`]; `None`:
    /// the backend's own choice).
    fn execute_variant(
        &mut self,
        kernel: &Kernel<'_>,
        variant: Option<usize>,
        scratch: Scratch,
    ) -> Result<()> {
        let _ = variant;
        self.execute(kernel, scratch)
    }

    /// Copies host rows into a window. `src` holds tensor rows `src_rows` of every plane,
    /// plane after plane (`0..height` for a whole host tensor); the window's rows must lie
    /// among them.
    fn write(
        &mut self,
        dst: &RowWindow,
        src: &[f32],
        src_rows: std::ops::Range<usize>,
    ) -> Result<()>;

    /// Copies a window's rows to the host, into `dst` laid out as in [`Backend::write`].
    fn read(
        &mut self,
        src: &RowWindow,
        dst: &mut [f32],
        dst_rows: std::ops::Range<usize>,
    ) -> Result<()>;

    /// Waits for queued work (no-op on synchronous backends).
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }

    /// Bytes the backend holds for uploaded weights.
    fn weight_bytes(&self) -> usize;

    /// CPU threads a kernel call may use (1 where the device does the work).
    fn threads(&self) -> usize {
        1
    }

    /// A new, empty backend of the same kind on the same device, running kernels on
    /// `threads` threads: the second lane of a two-lane session (its own weights, arena and
    /// scratch). An error where the backend cannot run beside itself.
    fn fork(&self, threads: usize) -> Result<Box<dyn Backend>> {
        let _ = threads;
        Err(crate::error::Error::Backend {
            backend: self.name().to_string(),
            op: "fork".into(),
            reason: "this backend runs one lane only; run with one lane (--lanes 1)".into(),
        })
    }
}
