//! # frugal-cuda
//!
//! The CUDA backend of frugal, for NVIDIA desktop GPUs and Jetson boards.
//!
//! - **Kernels** are CUDA C sources (`src/kernels/*.cu`, one per op family) embedded with
//!   `include_str!` and compiled by NVRTC on first use, once per process and GPU architecture.
//! - **Memory**: the session's arena is one device allocation; weights are uploaded once, each
//!   in its own buffer; every kernel runs on one stream and [`Backend::execute`] only enqueues
//!   (no synchronisation between kernels). [`Backend::read`] waits for the results.
//! - **Bit identity**: each output element is computed by one thread that visits its inputs
//!   in a fixed order (convolutions: four chains over the input channels, added pairwise),
//!   whatever rows a call produces, and the program is compiled without floating-point
//!   contraction: execution by parts gives the same bits as layer by layer. cuBLAS is not
//!   used, because its algorithms depend on the problem size (a band of rows would not give
//!   the whole layer's bits).
//! - **No CUDA needed to build**: cudarc opens `libcuda` and `libnvrtc` at run time. Without
//!   them, [`CudaBackend::new`] returns [`Error::BackendUnavailable`] (the libraries are looked
//!   for before any driver call, as cudarc panics on a missing library).
//! - **Jetson**: [`CudaOptions::host_mapped_io`] stages inputs and outputs in pinned,
//!   device-mapped host memory that kernels read and write directly (no copy engine, no
//!   device-side staging buffer); on a Jetson this memory is the same DRAM as the GPU's.
//! - **I/O**: [`Backend::write`] and [`Backend::read`] stage only the window's rows, through
//!   up to four pinned host slots (`staging.rs`): a feed never synchronises the stream.
//!
//! Storage is f32 only (f16 windows are refused with an error). CUDA graphs are not used:
//! the trait hands kernels over one at a time, and each is one asynchronous launch.
//!
//! **Status**: every kernel and model test passes on an NVIDIA H100 (2026-11-26); the kernels
//! are one thread per output, correct first and not yet fast. The README, "GPU: CUDA and
//! Jetson", has the measurements and the commands that check a GPU.

mod device;
#[cfg(feature = "emulator")]
mod emulator;
mod kernels;
mod params;
mod staging;

use std::collections::HashMap;
use std::ops::Range;

use cudarc::driver::sys::CUdevice_attribute as Attr;
use cudarc::driver::CudaContext;
use device::{driver_err, Dev, DevBuf, Gpu};
use frugal_core::backend::{Capabilities, Kernel, Operand, RowWindow, Scratch, WeightId};
use frugal_core::ops::{PoolKind, ReduceKind, ResizeMode};
use frugal_core::{Backend, DType, Error, Result, Tensor};
use staging::Staging;

pub use params::{blocks, Act, Win, BLOCK};

use params::*;

/// How to set the CUDA backend up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CudaOptions {
    /// Device ordinal (0: the first GPU).
    pub device: usize,
    /// Stage [`Backend::write`] inputs and [`Backend::read`] outputs in pinned host memory
    /// mapped into the device's address space (`cuMemHostAlloc` with `DEVICEMAP`): the
    /// scatter and gather kernels read and write it directly, so there is no host-device copy
    /// and no device staging buffer. Meant for Jetson boards (integrated GPU, shared DRAM),
    /// where it saves the copies and the duplicate buffer; on a discrete GPU every access
    /// crosses PCIe, which is slower than a copy. The arena itself stays device memory.
    /// Refused on devices that cannot map host memory.
    pub host_mapped_io: bool,
}

/// The reason given when the driver library cannot be opened.
pub const NO_DRIVER: &str = "no CUDA driver found (libcuda.so not loadable): install the NVIDIA \
                             driver or use --backend cpu";

/// Whether the CUDA driver and NVRTC libraries can be opened, without calling into them (a
/// missing library makes cudarc panic, so this runs before any driver call).
pub fn probe_libraries() -> Result<()> {
    // SAFETY: only tries to open the shared libraries (dlopen), calls no CUDA function.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(unavailable(NO_DRIVER));
    }
    // SAFETY: as above, for libnvrtc.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(unavailable(
            "the CUDA driver is present but NVRTC (libnvrtc.so) is not loadable: install the \
             CUDA toolkit's runtime compiler (cuda-nvrtc) and add its lib directory to \
             LD_LIBRARY_PATH, or use --backend cpu",
        ));
    }
    Ok(())
}

fn unavailable(reason: impl Into<String>) -> Error {
    Error::BackendUnavailable { backend: "cuda".into(), reason: reason.into() }
}

/// Runs `f`, turning a panic inside cudarc (a missing symbol in an old driver, for instance)
/// into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(unavailable(format!("{what} failed inside the CUDA libraries: {msg}")))
    })
}

/// The CUDA backend.
pub struct CudaBackend {
    dev: Dev,
    arena: Option<DevBuf>,
    weights: Vec<DevBuf>,
    staging: Staging,
    /// Resize tap tables, by op parameters and input size.
    resize_taps: HashMap<Vec<u64>, DevBuf>,
    options: CudaOptions,
    device: String,
    total_mem: u64,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.device)
            .field("arena_bytes", &self.arena.as_ref().map_or(0, |a| a.len() * 4))
            .field("weights", &self.weights.len())
            .field("options", &self.options)
            .finish()
    }
}

impl CudaBackend {
    /// The first GPU, inputs and outputs copied through device memory.
    pub fn new() -> Result<Self> {
        Self::with_options(CudaOptions::default())
    }

    /// A backend set up with `options`. Fails with [`Error::BackendUnavailable`] when the
    /// driver, NVRTC or the device is missing, and when the kernels do not compile.
    pub fn with_options(options: CudaOptions) -> Result<Self> {
        probe_libraries()?;
        guarded("creating the CUDA context", || Self::create(options))
    }

    fn create(options: CudaOptions) -> Result<Self> {
        let count = CudaContext::device_count()
            .map_err(|e| unavailable(format!("the CUDA driver found no usable device: {e:?}")))?;
        if options.device >= count.max(0) as usize {
            return Err(unavailable(format!(
                "no CUDA device {} ({count} present); use --backend cpu",
                options.device
            )));
        }
        let ctx = CudaContext::new(options.device)
            .map_err(|e| unavailable(format!("cannot create a CUDA context: {e:?}")))?;
        // One stream only: per-buffer event tracking would add work to every launch for
        // nothing. SAFETY: no buffer is shared across streams.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| driver_err("stream", e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| driver_err("device", e))?;
        // The device's own architecture first; an NVRTC older than the device does not know
        // it, and then PTX for an older architecture, which the driver compiles for the device.
        let own = major * 10 + minor;
        let mut archs = vec![own];
        archs.extend([90, 80, 75, 52].into_iter().filter(|&a| a < own));
        let mut first_error = None;
        let mut ptx = None;
        for a in archs {
            match kernels::ptx(&format!("compute_{a}")) {
                Ok(p) => {
                    ptx = Some(p);
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let ptx = ptx.ok_or_else(|| unavailable(first_error.unwrap_or_default()))?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(|e| unavailable(format!("cannot load the kernels: {e:?}")))?;
        let mut funcs = HashMap::new();
        for &name in kernels::FUNCTIONS {
            let f = module.load_function(name).map_err(|e| driver_err(name, e))?;
            funcs.insert(name, f);
        }
        let attr = |a: Attr| ctx.attribute(a).unwrap_or(0);
        let integrated = attr(Attr::CU_DEVICE_ATTRIBUTE_INTEGRATED) != 0;
        if options.host_mapped_io && attr(Attr::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY) == 0 {
            return Err(unavailable("host_mapped_io: this device cannot map host memory"));
        }
        let total_mem = ctx.total_mem().map_err(|e| driver_err("device", e))? as u64;
        let name = ctx.name().unwrap_or_else(|_| "unknown NVIDIA GPU".into());
        let device = format!(
            "{name} (sm_{major}{minor}, {} MiB{}{})",
            total_mem >> 20,
            if integrated { ", integrated: shares DRAM with the CPU" } else { "" },
            if options.host_mapped_io { ", host-mapped I/O" } else { "" }
        );
        Ok(CudaBackend {
            dev: Dev::Gpu(Gpu { ctx, stream, funcs }),
            arena: None,
            weights: Vec::new(),
            staging: Staging::default(),
            resize_taps: HashMap::new(),
            options,
            device,
            total_mem,
        })
    }

    /// The kernels built for the host by a C++ compiler (`c++`, or `$CXX`) and run one thread
    /// after another, through the same code as a GPU: for tests where no GPU is at hand.
    #[cfg(feature = "emulator")]
    pub fn emulated(options: CudaOptions) -> Result<Self> {
        Ok(CudaBackend {
            dev: Dev::Emu(emulator::Emu::new()?),
            arena: None,
            weights: Vec::new(),
            staging: Staging::default(),
            resize_taps: HashMap::new(),
            options,
            device: "host emulation of the CUDA kernels (C++ build, one thread at a time)".into(),
            total_mem: 1 << 40,
        })
    }

    /// The options this backend was created with.
    pub fn options(&self) -> &CudaOptions {
        &self.options
    }

    fn arena_ptr(&self, op: &str) -> Result<(u64, i64)> {
        let a = self.arena.as_ref().ok_or_else(|| fail(op, "no arena allocated"))?;
        Ok((a.ptr, a.len() as i64))
    }

    fn weight(&self, op: &str, id: WeightId, want: usize) -> Result<&DevBuf> {
        let w =
            self.weights.get(id.0).ok_or_else(|| fail(op, format!("unknown weight {}", id.0)))?;
        if w.len() < want {
            return Err(fail(
                op,
                format!("weight {} holds {} values, needs {want}", id.0, w.len()),
            ));
        }
        Ok(w)
    }

    fn launch<P: cudarc::driver::DeviceRepr>(&self, name: &str, n: u64, p: &P) -> Result<()> {
        self.dev.launch(name, n, p)
    }

    fn resize_table(&mut self, op: &frugal_core::ops::Resize, h: usize, w: usize) -> Result<u64> {
        let key = vec![
            op.mode as u64,
            op.coord as u64,
            op.nearest as u64,
            op.scales[0].to_bits() as u64,
            op.scales[1].to_bits() as u64,
            op.size[0] as u64,
            op.size[1] as u64,
            h as u64,
            w as u64,
        ];
        if let Some(t) = self.resize_taps.get(&key) {
            return Ok(t.ptr);
        }
        let mut table = Vec::with_capacity(3 * (op.size[0] + op.size[1]));
        for (a, n, len) in [(0, op.size[0], h), (1, op.size[1], w)] {
            for o in 0..n {
                let (i0, i1, wt) = op.taps(a, o, len);
                table.extend([f32::from_bits(i0 as u32), f32::from_bits(i1 as u32), wt]);
            }
        }
        let buf = self.dev.upload(&table)?;
        let ptr = buf.ptr;
        self.resize_taps.insert(key, buf);
        Ok(ptr)
    }
}

/// Checks a window is self-consistent and lies inside the arena (`len` elements).
fn check_win(op: &str, w: &RowWindow, len: i64) -> Result<Win> {
    if let Some(m) = w.malformed() {
        return Err(fail(op, m));
    }
    let v = Win::of(op, w)?;
    if v.extent().end > len {
        return Err(fail(op, "a window lies outside the arena"));
    }
    Ok(v)
}

/// Fails unless `x` holds rows `lo..hi` (nothing needed when `lo >= hi`).
fn need_rows(op: &str, x: &RowWindow, lo: usize, hi: usize) -> Result<()> {
    x.missing(lo, hi).map_or(Ok(()), |m| Err(fail(op, m)))
}

/// Fails unless `w` holds every row of its tensor, unwrapped.
fn need_whole(op: &str, w: &RowWindow) -> Result<()> {
    w.not_whole().map_or(Ok(()), |m| Err(fail(op, m)))
}

fn need_dims(op: &str, what: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(fail(op, format!("{what} has shape {got:?}, expected {want:?}")));
    }
    Ok(())
}

/// Every activation window a kernel reads.
fn inputs_of<'k>(k: &'k Kernel<'_>) -> Vec<&'k RowWindow> {
    let arena = |o: &'k Operand| match o {
        Operand::Arena(w) => Some(w),
        Operand::Weight(_) => None,
    };
    match k {
        Kernel::Conv { x, r, .. } => std::iter::once(x).chain(r.as_ref()).collect(),
        Kernel::ConvTranspose { x, .. }
        | Kernel::Pool { x, .. }
        | Kernel::GlobalAvgPool { x, .. }
        | Kernel::Affine { x, .. }
        | Kernel::Unary { x, .. }
        | Kernel::Resize { x, .. }
        | Kernel::Reduce { x, .. }
        | Kernel::Softmax { x, .. }
        | Kernel::Transpose { x, .. } => vec![x],
        Kernel::Gemm { a, .. } => vec![a],
        Kernel::Binary { a, b, .. } | Kernel::MatMul { a, b, .. } => {
            arena(a).into_iter().chain(arena(b)).collect()
        }
        Kernel::Copy { x, .. } => arena(x).into_iter().collect(),
        Kernel::Concat { xs, .. } => xs.iter().collect(),
    }
}

fn i32s(v: &[usize]) -> [i32; frugal_core::backend::MAX_RANK] {
    let mut out = [1; frugal_core::backend::MAX_RANK];
    for (o, &x) in out.iter_mut().zip(v) {
        *o = x as i32;
    }
    out
}

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        "cuda"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            storage: vec![DType::F32],
            max_buffer_bytes: self.total_mem,
            max_binding_bytes: self.total_mem,
            device: self.device.clone(),
            kernels: kernels::identity(),
        }
    }

    fn alloc_arena(&mut self, bytes: usize) -> Result<()> {
        self.arena = None;
        self.arena = Some(self.dev.alloc(bytes.div_ceil(4)).map_err(|_| {
            fail(
                "alloc_arena",
                format!(
                    "cannot allocate {bytes} bytes of device memory; lower the memory budget or \
                     the input size"
                ),
            )
        })?);
        Ok(())
    }

    fn upload(&mut self, weight: &Tensor) -> Result<WeightId> {
        let t = if weight.dtype() == DType::F32 { weight.clone() } else { weight.cast(DType::F32) };
        let data = t.as_f32()?;
        self.weights.push(self.dev.upload(data)?);
        Ok(WeightId(self.weights.len() - 1))
    }

    /// Refuses f16 windows when the session is created (rather than at the first run), and
    /// uploads resize tap tables.
    fn prepare(&mut self, kernel: &Kernel<'_>) -> Result<()> {
        let op = kernel.family();
        for w in inputs_of(kernel).into_iter().chain(std::iter::once(kernel.output())) {
            if w.dtype != DType::F32 {
                return Err(fail(
                    op,
                    format!(
                        "{:?} storage: the CUDA backend stores f32 only; plan with --storage f32",
                        w.dtype
                    ),
                ));
            }
        }
        if let Kernel::Resize { op: rs, x, .. } = kernel {
            if x.dims.rank() == 4 {
                self.resize_table(rs, x.dims[2], x.dims[3])?;
            }
        }
        Ok(())
    }

    fn execute(&mut self, kernel: &Kernel<'_>, _scratch: Scratch) -> Result<()> {
        let op = kernel.family();
        let y = kernel.output();
        if y.dims.numel() == 0 {
            return Ok(());
        }
        self.dev.bind(op)?;
        let (arena, len) = self.arena_ptr(op)?;
        let yv = check_win(op, y, len)?;
        let out = yv.extent();
        for w in inputs_of(kernel) {
            if w.dims.numel() == 0 {
                if matches!(kernel, Kernel::Concat { .. }) {
                    continue;
                }
                return Err(fail(op, format!("empty input {:?}", w.dims)));
            }
            let v = check_win(op, w, len)?;
            let e = v.extent();
            if e.start < out.end && out.start < e.end {
                return Err(fail(op, "an input overlaps the output"));
            }
        }
        match *kernel {
            Kernel::Conv { op: c, x, w, b, r, y } => {
                let (xd, yd, wd) = (x.dims.as_slice(), y.dims.as_slice(), w.dims.as_slice());
                let want = c.infer(xd, wd).map_err(|e| fail(op, e.to_string()))?;
                need_dims(op, "output", yd, &want)?;
                if c.residual != r.is_some() {
                    return Err(fail(op, "residual and its window disagree"));
                }
                if let Some(r) = &r {
                    need_dims(op, "residual", r.dims.as_slice(), yd)?;
                    need_rows(op, r, y.first_row, y.first_row + y.rows)?;
                }
                let span = (c.kernel[0] - 1) * c.dilations[0];
                let lo = (y.first_row * c.strides[0]).saturating_sub(c.pads[0]);
                let hi = ((y.first_row + y.rows).saturating_sub(1) * c.strides[0] + span + 1)
                    .saturating_sub(c.pads[0])
                    .min(xd[2]);
                if y.rows > 0 {
                    need_rows(op, &x, lo, hi)?;
                }
                let wb = self.weight(op, w.id, w.dims.numel())?.ptr;
                let bb = match b {
                    Some(b) => self.weight(op, b.id, yd[1])?.ptr,
                    None => 0,
                };
                let p = ConvParams {
                    arena,
                    w: wb,
                    b: bb,
                    x: Win::of(op, &x)?,
                    y: yv,
                    r: match &r {
                        Some(r) => Win::of(op, r)?,
                        None => Win::default(),
                    },
                    act: Act::of(c.act.as_ref()),
                    has_r: r.is_some() as i32,
                    kh: c.kernel[0] as i32,
                    kw: c.kernel[1] as i32,
                    sh: c.strides[0] as i32,
                    sw: c.strides[1] as i32,
                    dh: c.dilations[0] as i32,
                    dw: c.dilations[1] as i32,
                    ph: c.pads[0] as i32,
                    pw: c.pads[1] as i32,
                    cin: xd[1] as i32,
                    m: yd[1] as i32,
                    cg: wd[1] as i32,
                    mg: (yd[1] / c.groups) as i32,
                    pad_: 0,
                };
                self.launch("conv2d", yv.threads(), &p)
            }
            Kernel::ConvTranspose { op: c, x, w, b, y } => {
                let (xd, yd, wd) = (x.dims.as_slice(), y.dims.as_slice(), w.dims.as_slice());
                let want = c.infer(xd, wd).map_err(|e| fail(op, e.to_string()))?;
                need_dims(op, "output", yd, &want)?;
                if wd[2..] != c.kernel {
                    return Err(fail(op, "weight and kernel size disagree"));
                }
                let wb = self.weight(op, w.id, w.dims.numel())?.ptr;
                let bb = match b {
                    Some(b) => self.weight(op, b.id, yd[1])?.ptr,
                    None => 0,
                };
                let p = ConvTransposeParams {
                    arena,
                    w: wb,
                    b: bb,
                    x: Win::of(op, &x)?,
                    y: yv,
                    act: Act::of(c.act.as_ref()),
                    kh: c.kernel[0] as i32,
                    kw: c.kernel[1] as i32,
                    sh: c.strides[0] as i32,
                    sw: c.strides[1] as i32,
                    dh: c.dilations[0] as i32,
                    dw: c.dilations[1] as i32,
                    ph: c.pads[0] as i32,
                    pw: c.pads[1] as i32,
                    c: xd[1] as i32,
                    m: yd[1] as i32,
                    cg: (xd[1] / c.groups) as i32,
                    mg: wd[1] as i32,
                };
                self.launch("conv_transpose2d", yv.threads(), &p)
            }
            Kernel::Pool { op: pl, x, y } => {
                let want = pl.infer(x.dims.as_slice()).map_err(|e| fail(op, e.to_string()))?;
                need_dims(op, "output", y.dims.as_slice(), &want)?;
                let h = x.dims[2];
                for oy in y.first_row..y.first_row + y.rows {
                    let any = (0..pl.kernel[0]).any(|k| {
                        (oy * pl.strides[0] + k * pl.dilations[0])
                            .checked_sub(pl.pads[0])
                            .is_some_and(|i| i < h)
                    });
                    if !any {
                        return Err(fail(
                            op,
                            format!(
                                "output row {oy} has no input rows (window inside the padding)"
                            ),
                        ));
                    }
                }
                let p = PoolParams {
                    arena,
                    x: Win::of(op, &x)?,
                    y: yv,
                    is_max: (pl.kind == PoolKind::Max) as i32,
                    count_include_pad: pl.count_include_pad as i32,
                    kh: pl.kernel[0] as i32,
                    kw: pl.kernel[1] as i32,
                    sh: pl.strides[0] as i32,
                    sw: pl.strides[1] as i32,
                    dh: pl.dilations[0] as i32,
                    dw: pl.dilations[1] as i32,
                    pt: pl.pads[0] as i32,
                    pl: pl.pads[1] as i32,
                    pb: pl.pads[2] as i32,
                    pr: pl.pads[3] as i32,
                };
                self.launch("pool2d", yv.threads(), &p)
            }
            Kernel::GlobalAvgPool { x, y } => {
                let xd = x.dims.as_slice();
                if xd.len() < 3 {
                    return Err(fail(op, format!("expects rank >= 3, got {xd:?}")));
                }
                let mut want = [1; 6];
                want[..2].copy_from_slice(&xd[..2]);
                need_dims(op, "output", y.dims.as_slice(), &want[..xd.len()])?;
                need_whole(op, &y)?;
                let streaming = xd.len() == 4;
                if !streaming {
                    need_whole(op, &x)?;
                }
                let size: usize = xd[2..].iter().product();
                let p = GapParams {
                    arena,
                    x: Win::of(op, &x)?,
                    y: yv,
                    streaming: streaming as i32,
                    size: size as i32,
                    rows_per: (size / xd[xd.len() - 1].max(1)) as i32,
                    pad_: 0,
                };
                self.launch("global_avg_pool", (xd[0] * xd[1]) as u64, &p)
            }
            Kernel::Affine { act, x, scale, shift, y } => {
                let d = y.dims.as_slice();
                need_dims(op, "input", x.dims.as_slice(), d)?;
                if d.len() < 2 {
                    return Err(fail(op, format!("expects rank >= 2, got {d:?}")));
                }
                need_rows(op, &x, y.first_row, y.first_row + y.rows)?;
                let inner: usize =
                    d.get(2..d.len().saturating_sub(2)).map_or(1, |s| s.iter().product());
                let p = AffineParams {
                    arena,
                    scale: self.weight(op, scale.id, d[1])?.ptr,
                    shift: self.weight(op, shift.id, d[1])?.ptr,
                    x: Win::of(op, &x)?,
                    y: yv,
                    act: Act::of(act.as_ref()),
                    channels: d[1] as i32,
                    inner: inner.max(1) as i32,
                };
                self.launch("affine", yv.threads(), &p)
            }
            Kernel::Unary { act, x, y } => {
                need_dims(op, "input", x.dims.as_slice(), y.dims.as_slice())?;
                need_rows(op, &x, y.first_row, y.first_row + y.rows)?;
                let p = UnaryParams { arena, x: Win::of(op, &x)?, y: yv, act: Act::of(Some(&act)) };
                self.launch("unary", yv.threads(), &p)
            }
            Kernel::Binary { op: bin, a, b, y } => {
                let yd = y.dims.as_slice();
                let want = bin
                    .infer(a.dims().as_slice(), b.dims().as_slice())
                    .map_err(|e| fail(op, e.to_string()))?;
                need_dims(op, "output", yd, &want)?;
                let (ap, av) = self.operand(op, &a, y.first_row, y.first_row + y.rows, arena)?;
                let (bp, bv) = self.operand(op, &b, y.first_row, y.first_row + y.rows, arena)?;
                let kind = match bin.kind {
                    frugal_core::ops::BinaryKind::Add => 0,
                    frugal_core::ops::BinaryKind::Sub => 1,
                    frugal_core::ops::BinaryKind::Mul => 2,
                    frugal_core::ops::BinaryKind::Div => 3,
                    frugal_core::ops::BinaryKind::PRelu => 4,
                };
                let p = BinaryParams {
                    arena,
                    a_ptr: ap,
                    b_ptr: bp,
                    a: av,
                    b: bv,
                    y: yv,
                    act: Act::of(bin.act.as_ref()),
                    kind,
                    pad_: 0,
                };
                self.launch("binary", yv.threads(), &p)
            }
            Kernel::Concat { axis, xs, y } => {
                let yd = y.dims.as_slice();
                let r = yd.len();
                if axis >= r {
                    return Err(fail(op, format!("axis {axis} out of range for {yd:?}")));
                }
                let mut total = 0;
                for x in xs {
                    let xd = x.dims.as_slice();
                    if xd.len() != r || (0..r).any(|a| a != axis && xd[a] != yd[a]) {
                        return Err(fail(op, format!("input {xd:?} does not fit output {yd:?}")));
                    }
                    total += xd[axis];
                }
                if total != yd[axis] {
                    return Err(fail(
                        op,
                        format!("inputs add up to {total}, output has {}", yd[axis]),
                    ));
                }
                let (y0, y1) = (y.first_row, y.first_row + y.rows);
                let mut off = 0;
                for x in xs.iter() {
                    let n = x.dims[axis];
                    if x.dims.numel() > 0 {
                        // Input rows feeding output rows y0..y1.
                        let (lo, hi) = if r >= 2 && axis == r - 2 {
                            let (lo, hi) = (y0.max(off), y1.min(off + n));
                            (lo.saturating_sub(off), hi.saturating_sub(off))
                        } else {
                            (y0, y1)
                        };
                        if lo < hi {
                            need_rows(op, x, lo, hi)?;
                            let xv = Win::of(op, x)?;
                            let p = ConcatParams {
                                arena,
                                x: xv,
                                y: yv,
                                axis: axis as i32,
                                off: off as i32,
                                row_lo: lo as i32,
                                row_hi: hi as i32,
                            };
                            let threads = xv.planes as u64 * (hi - lo) as u64 * xv.w as u64;
                            self.launch("concat_piece", threads, &p)?;
                        }
                    }
                    off += n;
                }
                Ok(())
            }
            Kernel::Transpose { perm, x, y } => {
                let (xd, yd) = (x.dims.as_slice(), y.dims.as_slice());
                let r = xd.len();
                let mut seen = [false; 6];
                let valid = perm.len() == r
                    && yd.len() == r
                    && perm.iter().all(|&p| p < r && !std::mem::replace(&mut seen[p], true));
                if !valid || (0..r).any(|i| yd[i] != xd[perm[i]]) {
                    return Err(fail(op, format!("perm {perm:?} does not take {xd:?} to {yd:?}")));
                }
                if r >= 2 && perm[r - 2] == r - 2 && perm[r - 1] == r - 1 {
                    need_rows(op, &x, y.first_row, y.first_row + y.rows)?;
                } else {
                    need_whole(op, &x)?;
                }
                let p = TransposeParams { arena, x: Win::of(op, &x)?, y: yv, perm: i32s(perm) };
                self.launch("transpose", yv.threads(), &p)
            }
            Kernel::Copy { x, y } => {
                if x.dims().numel() != y.dims.numel() {
                    return Err(fail(op, format!("cannot copy {:?} into {:?}", x.dims(), y.dims)));
                }
                let (src, xv) = match x {
                    Operand::Arena(w) => {
                        copy_rows(op, &w, &y)?;
                        (arena, Win::of(op, &w)?)
                    }
                    Operand::Weight(w) => {
                        (self.weight(op, w.id, w.dims.numel())?.ptr, Win::weight(op, &w.dims)?)
                    }
                };
                let p = CopyParams { arena, src, x: xv, y: yv };
                self.launch("copy_flat", yv.threads(), &p)
            }
            Kernel::Resize { op: rs, x, y } => {
                let xd = x.dims.as_slice();
                if xd.len() != 4 {
                    return Err(fail(op, format!("expects a 4-D input, got {xd:?}")));
                }
                need_dims(
                    op,
                    "output",
                    y.dims.as_slice(),
                    &[xd[0], xd[1], rs.size[0], rs.size[1]],
                )?;
                let (lo, hi) =
                    (y.first_row..y.first_row + y.rows).fold((usize::MAX, 0), |(l, h), oy| {
                        let (i0, i1, _) = rs.taps(0, oy, xd[2]);
                        (l.min(i0.min(i1)), h.max(i0.max(i1) + 1))
                    });
                need_rows(op, &x, lo, hi)?;
                let taps = self.resize_table(rs, xd[2], xd[3])?;
                let p = ResizeParams {
                    arena,
                    taps,
                    x: Win::of(op, &x)?,
                    y: yv,
                    linear: (rs.mode == ResizeMode::Linear) as i32,
                    pad_: 0,
                };
                self.launch("resize2d", yv.threads(), &p)
            }
            Kernel::Gemm { op: g, a, b, c, y } => {
                let (ad, bd) = (a.dims.as_slice(), b.dims.as_slice());
                let cd = c.as_ref().map(|c| c.dims);
                let want = g
                    .infer(ad, bd, cd.as_ref().map(|d| d.as_slice()))
                    .map_err(|e| fail(op, e.to_string()))?;
                need_dims(op, "output", y.dims.as_slice(), &want)?;
                let (m, n) = (want[0], want[1]);
                let k = if g.trans_a { ad[0] } else { ad[1] };
                if g.trans_a {
                    need_whole(op, &a)?;
                } else {
                    need_rows(op, &a, y.first_row, y.first_row + y.rows)?;
                }
                let (cp, c_rs, c_cs) = match c {
                    Some(c) => {
                        let (cm, cn) = match c.dims.as_slice() {
                            [] => (1, 1),
                            &[x] => (1, x),
                            &[r, x] => (r, x),
                            d => {
                                return Err(fail(
                                    op,
                                    format!("C must have at most 2 axes, got {d:?}"),
                                ))
                            }
                        };
                        let ptr = self.weight(op, c.id, cm * cn)?.ptr;
                        let _ = m;
                        (ptr, if cm == 1 { 0 } else { cn as i32 }, i32::from(cn != 1))
                    }
                    None => (0, 0, 0),
                };
                let p = GemmParams {
                    arena,
                    b: self.weight(op, b.id, k * n)?.ptr,
                    c: cp,
                    a: Win::of(op, &a)?,
                    y: yv,
                    act: Act::of(g.act.as_ref()),
                    alpha: g.alpha,
                    beta: g.beta,
                    trans_a: g.trans_a as i32,
                    trans_b: g.trans_b as i32,
                    k: k as i32,
                    n: n as i32,
                    c_rs,
                    c_cs,
                };
                self.launch("gemm", y.rows as u64 * n as u64, &p)
            }
            Kernel::MatMul { op: mm, a, b, y } => {
                let g = mm_geo(op, &a.dims(), &b.dims(), y.dims.as_slice())?;
                let (r0, r1) =
                    if g.by_rows { (y.first_row, y.first_row + y.rows) } else { (0, g.m) };
                if !g.by_rows {
                    need_whole(op, &y)?;
                }
                let a_rows = if a.dims().rank() >= 2 { (r0, r1) } else { (0, 1) };
                let (ap, av) = self.operand(op, &a, a_rows.0, a_rows.1, arena)?;
                if let Operand::Arena(w) = &b {
                    need_whole(op, w)?;
                }
                let (bp, bv) = self.operand(op, &b, 0, 0, arena)?;
                let p = MatMulParams {
                    arena,
                    a_ptr: ap,
                    b_ptr: bp,
                    a: av,
                    b: bv,
                    y: yv,
                    act: Act::of(mm.act.as_ref()),
                    m: g.m as i32,
                    k: g.k as i32,
                    n: g.n as i32,
                    nb: g.nb as i32,
                    batch: i32s(&g.batch[..g.nb]),
                    astr: g.astr,
                    bstr: g.bstr,
                    row_lo: r0 as i32,
                    rows: (r1 - r0) as i32,
                };
                let batches: usize = g.batch[..g.nb].iter().product();
                self.launch("matmul", (batches * (r1 - r0) * g.n) as u64, &p)
            }
            Kernel::Reduce { op: rd, x, y } => {
                let xd = x.dims.as_slice();
                let r = xd.len();
                let mut reduced = [0i32; 6];
                for &a in &rd.axes {
                    if a >= r {
                        return Err(fail(op, format!("axis {a} out of range for {xd:?}")));
                    }
                    reduced[a] = 1;
                }
                let want: Vec<usize> = (0..r)
                    .filter(|&a| reduced[a] == 0 || rd.keepdims)
                    .map(|a| if reduced[a] == 1 { 1 } else { xd[a] })
                    .collect();
                need_dims(op, "output", y.dims.as_slice(), &want)?;
                need_whole(op, &x)?;
                need_whole(op, &y)?;
                let count: usize = rd.axes.iter().map(|&a| xd[a]).product();
                let p = ReduceParams {
                    arena,
                    x: Win::of(op, &x)?,
                    y: yv,
                    kind: match rd.kind {
                        ReduceKind::Mean => 0,
                        ReduceKind::Sum => 1,
                        ReduceKind::Max => 2,
                    },
                    keepdims: rd.keepdims as i32,
                    reduced,
                    count: count as f32,
                    pad_: 0,
                };
                self.launch("reduce", y.dims.numel() as u64, &p)
            }
            Kernel::Softmax { op: sm, x, y } => {
                let xd = x.dims.as_slice();
                if sm.axis >= xd.len() {
                    return Err(fail(op, format!("axis {} out of range for {xd:?}", sm.axis)));
                }
                need_dims(op, "output", y.dims.as_slice(), xd)?;
                need_whole(op, &x)?;
                need_whole(op, &y)?;
                let outer: usize = xd[..sm.axis].iter().product();
                let (len, inner) = if sm.coerce_2d {
                    (xd[sm.axis..].iter().product(), 1)
                } else {
                    (xd[sm.axis], xd[sm.axis + 1..].iter().product())
                };
                let p = SoftmaxParams {
                    arena,
                    x: Win::of(op, &x)?,
                    y: yv,
                    outer: outer as i32,
                    len: len as i32,
                    inner: inner as i32,
                    pad_: 0,
                };
                self.launch("softmax", (outer * inner) as u64, &p)
            }
        }
    }

    fn write(&mut self, dst: &RowWindow, src: &[f32], src_rows: Range<usize>) -> Result<()> {
        let (planes, width) = host_layout("write", dst, src.len(), &src_rows)?;
        self.dev.bind("write")?;
        let (arena, len) = self.arena_ptr("write")?;
        let v = check_win("write", dst, len)?;
        if v.threads() == 0 {
            return Ok(());
        }
        // Only the window's rows are staged, plane after plane.
        let (rows, host_plane) = (dst.rows * width, src_rows.len() * width);
        let skip = (dst.first_row - src_rows.start) * width;
        let n = planes * rows;
        let t = self.staging.take(&self.dev, n, self.options.host_mapped_io, false)?;
        let staged = self.staging.host(&t, n);
        for p in 0..planes {
            let from = p * host_plane + skip;
            staged[p * rows..(p + 1) * rows].copy_from_slice(&src[from..from + rows]);
        }
        self.staging.upload(&self.dev, &t, n)?;
        let p = RowsParams {
            arena,
            host: t.addr,
            v,
            host_lo: dst.first_row as i32,
            host_rows: dst.rows as i32,
        };
        self.launch("scatter_rows", v.threads(), &p)?;
        self.staging.release(&self.dev, &t)
    }

    fn read(&mut self, src: &RowWindow, dst: &mut [f32], dst_rows: Range<usize>) -> Result<()> {
        let (planes, width) = host_layout("read", src, dst.len(), &dst_rows)?;
        self.dev.bind("read")?;
        let (arena, len) = self.arena_ptr("read")?;
        let v = check_win("read", src, len)?;
        if v.threads() == 0 {
            return Ok(());
        }
        // The window's rows come back plane after plane; rows of dst outside it keep their
        // values.
        let (rows, host_plane) = (src.rows * width, dst_rows.len() * width);
        let skip = (src.first_row - dst_rows.start) * width;
        let n = planes * rows;
        // Reads wait for the stream anyway: waiting first frees every staging slot.
        self.dev.sync()?;
        let t = self.staging.take(&self.dev, n, self.options.host_mapped_io, true)?;
        let p = RowsParams {
            arena,
            host: t.addr,
            v,
            host_lo: src.first_row as i32,
            host_rows: src.rows as i32,
        };
        self.launch("gather_rows", v.threads(), &p)?;
        let staged = self.staging.download(&self.dev, &t, n)?;
        for p in 0..planes {
            let to = p * host_plane + skip;
            dst[to..to + rows].copy_from_slice(&staged[p * rows..(p + 1) * rows]);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.dev.sync()
    }

    fn weight_bytes(&self) -> usize {
        self.weights.iter().map(|w| w.len() * 4).sum::<usize>()
            + self.resize_taps.values().map(|w| w.len() * 4).sum::<usize>()
    }
}

impl CudaBackend {
    /// A binary or matmul operand: its buffer address and its window (a weight: whole, at 0).
    /// An arena operand must hold rows `lo..hi` when it has the output's rows (`lo < hi`).
    fn operand(
        &self,
        op: &str,
        o: &Operand,
        lo: usize,
        hi: usize,
        arena: u64,
    ) -> Result<(u64, Win)> {
        match o {
            Operand::Arena(w) => {
                let (_, h, _) = w.geometry();
                if h != 1 {
                    need_rows(op, w, lo, hi)?;
                } else {
                    need_rows(op, w, 0, 1)?;
                }
                Ok((arena, Win::of(op, w)?))
            }
            Operand::Weight(w) => {
                Ok((self.weight(op, w.id, w.dims.numel())?.ptr, Win::weight(op, &w.dims)?))
            }
        }
    }
}

/// Fails unless the copy source `x` holds the rows of the elements copied into the rows of
/// `y` (same element order; as the CPU backend, it need not be whole).
fn copy_rows(op: &str, x: &RowWindow, y: &RowWindow) -> Result<()> {
    let (yp, yh, yw) = y.geometry();
    let (_, xh, xw) = x.geometry();
    let (y0, y1) = (y.first_row, y.first_row + y.rows);
    for p in 0..yp {
        let (f0, f1) = ((p * yh + y0) * yw, (p * yh + y1) * yw);
        if f0 >= f1 {
            continue;
        }
        let (g0, g1) = (f0 / xw, (f1 - 1) / xw);
        if g1 - g0 + 1 >= xh {
            need_rows(op, x, 0, xh)?;
            continue;
        }
        for g in g0..=g1 {
            need_rows(op, x, g % xh, g % xh + 1)?;
        }
    }
    Ok(())
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

/// MatMul shapes: operands promoted to matrices, batch axes broadcast (as the CPU backend).
#[derive(Debug, PartialEq, Eq)]
struct MmGeo {
    m: usize,
    k: usize,
    n: usize,
    batch: [usize; 6],
    nb: usize,
    astr: [i32; 6],
    bstr: [i32; 6],
    by_rows: bool,
}

fn as_matrix(s: &[usize], left: bool) -> (usize, usize, &[usize]) {
    match s.len() {
        0 => (1, 1, s),
        1 if left => (1, s[0], &s[..0]),
        1 => (s[0], 1, &s[..0]),
        r => (s[r - 2], s[r - 1], &s[..r - 2]),
    }
}

fn mm_geo(
    op: &str,
    ad: &frugal_core::backend::Dims,
    bd: &frugal_core::backend::Dims,
    yd: &[usize],
) -> Result<MmGeo> {
    let bad = |why: &str| fail(op, format!("{why}: {ad:?} x {bd:?} -> {yd:?}"));
    let ((m, k, ab), (k2, n, bb)) =
        (as_matrix(ad.as_slice(), true), as_matrix(bd.as_slice(), false));
    if ad.rank() == 0 || bd.rank() == 0 || k != k2 {
        return Err(bad("inner dims differ"));
    }
    let nb = ab.len().max(bb.len());
    let mut g = MmGeo {
        m,
        k,
        n,
        batch: [1; 6],
        nb,
        astr: [0; 6],
        bstr: [0; 6],
        by_rows: ad.rank() >= 2 && bd.rank() >= 2,
    };
    for (side, left) in [(ab, true), (bb, false)] {
        let mut acc = 1;
        for (j, &d) in side.iter().enumerate().rev() {
            let o = j + nb - side.len();
            if d != 1 {
                if g.batch[o] != 1 && g.batch[o] != d {
                    return Err(bad("batch axes do not broadcast"));
                }
                g.batch[o] = d;
                if left {
                    g.astr[o] = acc as i32;
                } else {
                    g.bstr[o] = acc as i32;
                }
            }
            acc *= d;
        }
    }
    let mut want: Vec<usize> = g.batch[..nb].to_vec();
    if ad.rank() > 1 {
        want.push(m);
    }
    if bd.rank() > 1 {
        want.push(n);
    }
    if yd != want.as_slice() {
        return Err(bad("output shape"));
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use frugal_core::backend::Dims;

    #[test]
    fn creation_without_a_driver_is_a_clear_error_not_a_panic() {
        match CudaBackend::new() {
            Ok(b) => println!("a CUDA device is present: {}", b.capabilities().device),
            Err(e) => {
                let msg = e.to_string();
                assert!(matches!(e, Error::BackendUnavailable { .. }), "{msg}");
                assert!(msg.contains("cuda"), "{msg}");
            }
        }
    }

    #[test]
    fn matmul_geometry_broadcasts_batches() {
        let d = |s: &[usize]| Dims::new(s).unwrap();
        let g = mm_geo("matmul", &d(&[2, 1, 3, 4]), &d(&[5, 4, 6]), &[2, 5, 3, 6]).unwrap();
        assert_eq!((g.m, g.k, g.n, g.nb), (3, 4, 6, 2));
        assert_eq!(&g.batch[..2], &[2, 5]);
        assert_eq!(&g.astr[..2], &[1, 0]);
        assert_eq!(&g.bstr[..2], &[0, 1]);
        assert!(g.by_rows);
        let v = mm_geo("matmul", &d(&[4]), &d(&[4, 6]), &[6]).unwrap();
        assert_eq!((v.m, v.k, v.n, v.by_rows), (1, 4, 6, false));
        assert!(mm_geo("matmul", &d(&[3, 4]), &d(&[5, 6]), &[3, 6]).is_err());
    }

    #[test]
    fn host_layout_checks_cover_the_window() {
        let w = RowWindow {
            offset: 0,
            dtype: DType::F32,
            dims: Dims::new(&[1, 2, 6, 3]).unwrap(),
            capacity: 3,
            row_stride: 3,
            first_row: 2,
            rows: 2,
        };
        assert_eq!(host_layout("t", &w, 2 * 6 * 3, &(0..6)).unwrap(), (2, 3));
        assert_eq!(host_layout("t", &w, 2 * 2 * 3, &(2..4)).unwrap(), (2, 3));
        assert!(host_layout("t", &w, 2 * 2 * 3, &(3..5)).is_err());
        assert!(host_layout("t", &w, 5, &(0..6)).is_err());
    }
}
