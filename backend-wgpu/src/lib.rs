//! # frugal-wgpu
//!
//! The wgpu backend of frugal: WGSL compute shaders over Vulkan, Metal, DX12 and GL.
//!
//! * **Kernels.** One WGSL file per op family (`src/shaders/`), shape-generic: every shape,
//!   window and attribute comes in a small parameter buffer, so one pipeline per (family,
//!   storage types) serves every layer. Pipelines are compiled once and cached.
//! * **Arena.** One storage buffer up to the adapter's `max_buffer_size`. Each kernel binds
//!   only the byte range of each buffer it touches (a ring buffer is bound whole: it is small),
//!   aligned down to `min_storage_buffer_offset_alignment`, with the element base passed to the
//!   shader. A range larger than `max_storage_buffer_binding_size` is a clear error naming the
//!   limit: layer by layer binds whole tensors, by parts binds rings, which is why frugal runs
//!   large inputs where whole-tensor engines cannot.
//! * **Weights** are uploaded once, each in its own buffer.
//! * **Batching.** Kernels and host writes are recorded into one command encoder and submitted
//!   when a result is read, on `sync`, or every [`BATCH`] launches.
//! * **f16 storage** where the adapter has `SHADER_F16`: loads widen to f32, stores round once.
//! * **Determinism.** Each output element is computed by exactly one invocation, with a fixed
//!   reduction order that does not depend on which rows a call produces: running by parts gives
//!   the same bits as layer by layer on the same adapter (the tests assert byte equality).
//!
//! Errors never panic: wgpu validation errors are captured by an uncaptured-error handler and
//! returned as [`Error::Backend`]; no adapter is [`Error::BackendUnavailable`].

mod kernels;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use frugal_core::backend::{Capabilities, Kernel, RowWindow, Scratch, WeightId};
use frugal_core::{Backend, DType, Error, Result, Tensor};
use wgpu::util::DeviceExt;

/// Launches recorded before the encoder is submitted.
pub const BATCH: usize = 128;

/// Environment variable lowering the binding limit requested from the adapter (bytes), to
/// reproduce a small GPU's limit (e.g. WebGPU's default 134217728) on a large one.
pub const ENV_MAX_BINDING: &str = "FRUGAL_WGPU_MAX_BINDING";

/// How to set the backend up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WgpuOptions {
    /// Request at most this `max_storage_buffer_binding_size` (bytes); `None`: the adapter's own
    /// limit, or [`ENV_MAX_BINDING`] when set.
    pub max_binding_bytes: Option<u64>,
    /// Do not use f16 storage even where the adapter has `SHADER_F16`.
    pub no_f16: bool,
}

/// The shader sources, by name (the family file follows `common.wgsl`).
const SHADERS: &[(&str, &str)] = &[
    ("conv", include_str!("shaders/conv.wgsl")),
    ("conv_transpose", include_str!("shaders/conv_transpose.wgsl")),
    ("pool", include_str!("shaders/pool.wgsl")),
    ("global_avg_pool", include_str!("shaders/global_avg_pool.wgsl")),
    ("affine", include_str!("shaders/affine.wgsl")),
    ("unary", include_str!("shaders/unary.wgsl")),
    ("binary", include_str!("shaders/binary.wgsl")),
    ("concat", include_str!("shaders/concat.wgsl")),
    ("resize", include_str!("shaders/resize.wgsl")),
    ("gemm", include_str!("shaders/gemm.wgsl")),
    ("matmul", include_str!("shaders/matmul.wgsl")),
    ("reduce", include_str!("shaders/reduce.wgsl")),
    ("softmax", include_str!("shaders/softmax.wgsl")),
    ("transpose", include_str!("shaders/transpose.wgsl")),
    ("copy", include_str!("shaders/copy.wgsl")),
    ("write", include_str!("shaders/write.wgsl")),
    ("read", include_str!("shaders/read.wgsl")),
];
const COMMON: &str = include_str!("shaders/common.wgsl");

/// Identity of the kernels' code (FNV-1a of every shader source).
fn kernels_hash() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for s in std::iter::once(COMMON).chain(SHADERS.iter().map(|(_, s)| *s)) {
        for b in s.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("wgpu-{h:016x}")
}

pub(crate) fn fail(op: &str, reason: impl Into<String>) -> Error {
    Error::Backend { backend: "wgpu".into(), op: op.into(), reason: reason.into() }
}

fn unavailable(reason: impl Into<String>) -> Error {
    Error::BackendUnavailable { backend: "wgpu".into(), reason: reason.into() }
}

/// What a launch binds at one binding index.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Slot {
    /// A byte range of the arena: (offset, size).
    Arena(u64, u64),
    /// An uploaded weight.
    Weight(WeightId),
    /// A placeholder for a binding the launch does not read (the shader branches past it).
    DummyArena,
    /// A placeholder weight.
    DummyWeight,
}

/// One kernel launch: the shader, the storage types of its arena bindings 1..=3, the
/// parameters, the invocation count and the bindings (index, what).
#[derive(Debug)]
pub(crate) struct Launch {
    pub(crate) shader: &'static str,
    pub(crate) types: [DType; 3],
    pub(crate) params: Vec<u32>,
    pub(crate) n: usize,
    pub(crate) slots: Vec<(u32, Slot)>,
}

/// The device side: everything that exists once an adapter was found.
struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    f16: bool,
    arena: Option<wgpu::Buffer>,
    arena_bytes: u64,
    weights: Vec<(wgpu::Buffer, usize)>,
    dummy: wgpu::Buffer,
    pipelines: HashMap<(&'static str, [DType; 3]), wgpu::ComputePipeline>,
    encoder: Option<wgpu::CommandEncoder>,
    pending: usize,
    errors: Arc<Mutex<Vec<String>>>,
}

/// The wgpu backend.
pub struct WgpuBackend {
    gpu: Gpu,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WgpuBackend({}, arena {} bytes, {} weights)",
            self.gpu.info.name,
            self.gpu.arena_bytes,
            self.gpu.weights.len()
        )
    }
}

/// The first adapter: native APIs first (Vulkan, Metal, DX12), GL only when none is found (so
/// that GL's display probing stays quiet where Vulkan exists). `WGPU_BACKEND` (e.g. `vulkan`,
/// `gl`) restricts the APIs tried.
fn find_adapter() -> Result<wgpu::Adapter> {
    let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let from_env = std::env::var_os("WGPU_BACKEND").is_some();
    let tries: Vec<wgpu::Backends> = if from_env {
        vec![desc.backends]
    } else {
        vec![wgpu::Backends::PRIMARY, wgpu::Backends::GL]
    };
    let mut why = Vec::new();
    for backends in tries {
        let mut d = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        d.backends = backends;
        let instance = wgpu::Instance::new(d);
        match pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        })) {
            Ok(a) => return Ok(a),
            Err(e) => why.push(format!("{backends:?}: {e}")),
        }
    }
    Err(unavailable(format!(
        "no GPU adapter found ({}); install a Vulkan, Metal, DX12 or GL driver (on Linux without \
         a GPU: apt-get install mesa-vulkan-drivers libvulkan1), or use --backend cpu",
        why.join("; ")
    )))
}

/// Describes one adapter for errors and `frugal backends`.
fn describe(info: &wgpu::AdapterInfo) -> String {
    let kind = match info.device_type {
        wgpu::DeviceType::Cpu => "software",
        wgpu::DeviceType::IntegratedGpu => "integrated GPU",
        wgpu::DeviceType::DiscreteGpu => "discrete GPU",
        wgpu::DeviceType::VirtualGpu => "virtual GPU",
        wgpu::DeviceType::Other => "other",
    };
    format!("{} ({:?}, {kind})", info.name, info.backend)
}

impl WgpuBackend {
    /// The first adapter wgpu offers (high performance preferred; `WGPU_BACKEND` may restrict
    /// the APIs, e.g. `vulkan` or `gl`), with default options.
    pub fn new() -> Result<Self> {
        Self::with_options(&WgpuOptions::default())
    }

    /// As [`WgpuBackend::new`], with options.
    pub fn with_options(options: &WgpuOptions) -> Result<Self> {
        let adapter = find_adapter()?;
        let info = adapter.get_info();
        let have = adapter.limits();
        let mut limits = have.clone();
        let cap = options.max_binding_bytes.or_else(|| {
            std::env::var(ENV_MAX_BINDING).ok().and_then(|v| v.trim().parse::<u64>().ok())
        });
        // Shaders index bindings with u32 elements: keep a binding under 4 GiB.
        limits.max_storage_buffer_binding_size =
            limits.max_storage_buffer_binding_size.min(u32::MAX as u64 / 4 * 4);
        if let Some(cap) = cap {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap.max(1 << 16));
        }
        let f16 = !options.no_f16 && adapter.features().contains(wgpu::Features::SHADER_F16);
        let features = if f16 { wgpu::Features::SHADER_F16 } else { wgpu::Features::empty() };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("frugal"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| unavailable(format!("adapter {} refused a device: {e}", describe(&info))))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(WgpuBackend {
            gpu: Gpu {
                device,
                queue,
                info,
                limits,
                f16,
                arena: None,
                arena_bytes: 0,
                weights: Vec::new(),
                dummy,
                pipelines: HashMap::new(),
                encoder: None,
                pending: 0,
                errors,
            },
        })
    }

    /// The adapter's name, API and kind.
    pub fn adapter(&self) -> String {
        describe(&self.gpu.info)
    }

    /// Whether f16 storage is available (the adapter has `SHADER_F16`).
    pub fn has_f16(&self) -> bool {
        self.gpu.f16
    }
}

/// Bytes of the whole buffer behind a window (every plane, every ring slot), up to its last
/// element (a view of some columns of a wider buffer ends with its last row's width).
fn extent_bytes(w: &RowWindow) -> (u64, u64) {
    let (planes, _, width) = w.geometry();
    let slots = planes * w.capacity;
    let elements = if slots == 0 { 0 } else { (slots - 1) * w.row_stride + width };
    (w.offset as u64, (elements * w.dtype.size()) as u64)
}

impl Gpu {
    fn check_errors(&self, op: &str) -> Result<()> {
        let mut v = self.errors.lock().map_err(|_| fail(op, "error handler poisoned"))?;
        if v.is_empty() {
            return Ok(());
        }
        let all = std::mem::take(&mut *v).join("; ");
        Err(fail(op, format!("wgpu reported: {all}")))
    }

    /// The binding of window `w`: (offset, size) of the arena and the element index of the
    /// buffer's start inside it.
    fn bind(&self, family: &str, w: &RowWindow) -> Result<(Slot, u32)> {
        if w.dtype != DType::F32 && w.dtype != DType::F16 {
            return Err(fail(family, format!("{:?} windows are not supported", w.dtype)));
        }
        if w.dtype == DType::F16 && !self.f16 {
            return Err(fail(
                family,
                format!(
                    "f16 storage needs the SHADER_F16 feature, which adapter {} lacks; plan with \
                     f32 storage (--storage f32)",
                    describe(&self.info)
                ),
            ));
        }
        let (start, len) = extent_bytes(w);
        if start + len > self.arena_bytes {
            return Err(fail(family, "window outside the arena"));
        }
        let align = self.limits.min_storage_buffer_offset_alignment.max(4) as u64;
        let off = start / align * align;
        let end = (start + len.max(4)).div_ceil(4) * 4;
        let end = end.min(self.arena_bytes);
        let size = end - off;
        let max = self.limits.max_storage_buffer_binding_size;
        if size > max {
            return Err(fail(
                family,
                format!(
                    "a {family} window binds {size} bytes ({:?} of {:?}), more than this adapter's \
                     max_storage_buffer_binding_size of {max} bytes; run by parts (--strategy \
                     by-parts) or with a memory budget so that no buffer is that large",
                    w.dtype, w.dims
                ),
            ));
        }
        let base = (start - off) / w.dtype.size() as u64;
        Ok((Slot::Arena(off, size), base as u32))
    }

    /// Fails unless a buffer of `bytes` that a shader binds whole fits the adapter's limits.
    fn fits(&self, op: &str, what: &str, bytes: u64) -> Result<()> {
        let max = self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size);
        if bytes > max {
            return Err(fail(
                op,
                format!(
                    "{what} takes {bytes} bytes, more than this adapter binds at once ({max} \
                     bytes, max_storage_buffer_binding_size); run by parts (--strategy by-parts) \
                     or use a smaller input"
                ),
            ));
        }
        Ok(())
    }

    fn pipeline(&mut self, shader: &'static str, types: [DType; 3]) -> Result<()> {
        if self.pipelines.contains_key(&(shader, types)) {
            return Ok(());
        }
        let body = SHADERS
            .iter()
            .find(|(n, _)| *n == shader)
            .map(|(_, s)| *s)
            .ok_or_else(|| fail(shader, "no such shader"))?;
        let mut src = String::new();
        if types.contains(&DType::F16) {
            src.push_str("enable f16;\n");
        }
        for (i, t) in types.iter().enumerate() {
            let t = if *t == DType::F16 { "f16" } else { "f32" };
            src.push_str(&format!("alias T{} = {t};\n", i + 1));
        }
        src.push_str(COMMON);
        src.push_str(body);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(shader),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        self.check_errors(shader)?;
        self.pipelines.insert((shader, types), pipeline);
        Ok(())
    }

    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        let device = &self.device;
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("frugal") })
        })
    }

    /// Records one launch.
    fn launch(&mut self, l: Launch) -> Result<()> {
        if l.n == 0 {
            return Ok(());
        }
        if l.n > u32::MAX as usize {
            return Err(fail(l.shader, "too many elements for one launch"));
        }
        self.pipeline(l.shader, l.types)?;
        let mut params = l.params;
        params[0] = l.n as u32;
        let pbuf = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(&params),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let arena = self.arena.as_ref().ok_or_else(|| fail(l.shader, "no arena allocated"))?;
        let mut entries =
            vec![wgpu::BindGroupEntry { binding: 0, resource: pbuf.as_entire_binding() }];
        for &(binding, slot) in &l.slots {
            let resource = match slot {
                Slot::Arena(offset, size) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: arena,
                    offset,
                    size: wgpu::BufferSize::new(size),
                }),
                Slot::DummyArena => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: arena,
                    offset: 0,
                    size: wgpu::BufferSize::new(4),
                }),
                Slot::Weight(id) => {
                    let (buf, _) = self
                        .weights
                        .get(id.0)
                        .ok_or_else(|| fail(l.shader, format!("unknown weight {}", id.0)))?;
                    buf.as_entire_binding()
                }
                Slot::DummyWeight => self.dummy.as_entire_binding(),
            };
            entries.push(wgpu::BindGroupEntry { binding, resource });
        }
        let pipeline = &self.pipelines[&(l.shader, l.types)];
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(l.shader),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let groups = l.n.div_ceil(64);
        let nx = groups.min(65535);
        let ny = groups.div_ceil(nx);
        if ny > 65535 {
            return Err(fail(l.shader, "launch too large"));
        }
        let pipeline = pipeline.clone();
        let enc = self.encoder();
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(nx as u32, ny as u32, 1);
        }
        self.pending += 1;
        if self.pending >= BATCH {
            self.submit(l.shader)?;
        }
        self.check_errors(l.shader)
    }

    fn submit(&mut self, op: &str) -> Result<()> {
        if let Some(enc) = self.encoder.take() {
            self.queue.submit(Some(enc.finish()));
            // Free what finished work held (parameter buffers, bind groups), without waiting.
            let _ = self.device.poll(wgpu::PollType::Poll);
        }
        self.pending = 0;
        self.check_errors(op)
    }

    fn wait(&mut self, op: &str) -> Result<()> {
        self.submit(op)?;
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| fail(op, format!("waiting for the device: {e}")))?;
        self.check_errors(op)
    }
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

/// Window parameters as the shaders read them: base, capacity, row stride, height, width.
pub(crate) fn win(w: &RowWindow, base: u32) -> [u32; 5] {
    let (_, h, width) = w.geometry();
    [base, w.capacity.max(1) as u32, w.row_stride as u32, h.max(1) as u32, width.max(1) as u32]
}

impl Backend for WgpuBackend {
    fn name(&self) -> &str {
        "wgpu"
    }

    fn capabilities(&self) -> Capabilities {
        let g = &self.gpu;
        let mut storage = vec![DType::F32];
        if g.f16 {
            storage.push(DType::F16);
        }
        Capabilities {
            storage,
            max_buffer_bytes: g.limits.max_buffer_size,
            max_binding_bytes: g.limits.max_storage_buffer_binding_size,
            device: describe(&g.info),
            kernels: kernels_hash(),
        }
    }

    fn alloc_arena(&mut self, bytes: usize) -> Result<()> {
        let g = &mut self.gpu;
        g.wait("alloc_arena")?;
        g.arena = None;
        let size = (bytes.max(4) as u64).div_ceil(4) * 4;
        if size > g.limits.max_buffer_size {
            return Err(fail(
                "alloc_arena",
                format!(
                    "the arena needs {size} bytes, more than this adapter's max_buffer_size of {} \
                     bytes; run by parts (--strategy by-parts) or with a smaller memory budget",
                    g.limits.max_buffer_size
                ),
            ));
        }
        let buf = g.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("arena"),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        g.check_errors("alloc_arena")?;
        g.arena = Some(buf);
        g.arena_bytes = size;
        Ok(())
    }

    fn upload(&mut self, weight: &Tensor) -> Result<WeightId> {
        let g = &mut self.gpu;
        let t = if weight.dtype() == DType::F32 { weight.clone() } else { weight.cast(DType::F32) };
        let data = t.as_f32()?;
        g.fits("upload", "a weight", data.len() as u64 * 4)?;
        let contents: &[u8] = if data.is_empty() { &[0; 4] } else { bytemuck::cast_slice(data) };
        let buf = g.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("weight"),
            contents,
            usage: wgpu::BufferUsages::STORAGE,
        });
        g.check_errors("upload")?;
        g.weights.push((buf, data.len()));
        Ok(WeightId(g.weights.len() - 1))
    }

    fn prepare(&mut self, kernel: &Kernel<'_>) -> Result<()> {
        // Compile the kernel's pipelines now (the arena does not exist yet), so that running
        // never compiles. f16 windows on an adapter without SHADER_F16 fail when run, clearly.
        let g = &mut self.gpu;
        for (shader, types) in kernels::pipelines(kernel) {
            if g.f16 || !types.contains(&DType::F16) {
                g.pipeline(shader, types)?;
            }
        }
        Ok(())
    }

    fn execute(&mut self, kernel: &Kernel<'_>, _scratch: Scratch) -> Result<()> {
        let g = &mut self.gpu;
        for l in kernels::launches(g, kernel)? {
            g.launch(l)?;
        }
        Ok(())
    }

    fn write(&mut self, dst: &RowWindow, src: &[f32], src_rows: Range<usize>) -> Result<()> {
        let (planes, width) = host_layout("write", dst, src.len(), &src_rows)?;
        let g = &mut self.gpu;
        let (slot, base) = g.bind("write", dst)?;
        let mut packed = Vec::with_capacity(planes * dst.rows * width);
        for p in 0..planes {
            for r in dst.first_row..dst.first_row + dst.rows {
                let s = (p * src_rows.len() + r - src_rows.start) * width;
                packed.extend_from_slice(&src[s..s + width]);
            }
        }
        if packed.is_empty() {
            return Ok(());
        }
        g.fits("write", "the rows written", packed.len() as u64 * 4)?;
        // The rows go in a weight-like buffer the write shader scatters into the window, in
        // the encoder's order (a queue write would jump ahead of recorded kernels).
        let id = WeightId(g.weights.len());
        g.weights.push((
            g.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("rows"),
                contents: bytemuck::cast_slice(&packed),
                usage: wgpu::BufferUsages::STORAGE,
            }),
            0,
        ));
        let mut params = vec![0, dst.first_row as u32, dst.rows as u32];
        params.extend(win(dst, base));
        let l = Launch {
            shader: "write",
            types: [DType::F32, dst.dtype, DType::F32],
            params,
            n: packed.len(),
            slots: vec![(2, slot), (5, Slot::Weight(id))],
        };
        let r = g.launch(l);
        // The buffer stays alive as long as the recorded work needs it.
        g.weights.pop();
        r
    }

    fn read(&mut self, src: &RowWindow, dst: &mut [f32], dst_rows: Range<usize>) -> Result<()> {
        let (planes, width) = host_layout("read", src, dst.len(), &dst_rows)?;
        let n = planes * src.rows * width;
        if n == 0 {
            return Ok(());
        }
        let g = &mut self.gpu;
        let (slot, base) = g.bind("read", src)?;
        let bytes = (n * 4) as u64;
        g.fits("read", "the rows read", bytes)?;
        let out = g.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = g.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let id = WeightId(g.weights.len());
        g.weights.push((out, 0));
        let mut params = vec![0, src.first_row as u32, src.rows as u32];
        params.extend(win(src, base));
        let l = Launch {
            shader: "read",
            types: [src.dtype, DType::F32, DType::F32],
            params,
            n,
            slots: vec![(1, slot), (4, Slot::Weight(id))],
        };
        let r = g.launch(l);
        let (out, _) = g.weights.pop().expect("pushed above");
        r?;
        g.encoder().copy_buffer_to_buffer(&out, 0, &staging, 0, bytes);
        g.submit("read")?;
        let slice = staging.slice(..);
        let done = Arc::new(Mutex::new(None));
        let flag = done.clone();
        slice.map_async(wgpu::MapMode::Read, move |res| {
            if let Ok(mut d) = flag.lock() {
                *d = Some(res);
            }
        });
        g.wait("read")?;
        match done.lock().map_err(|_| fail("read", "poisoned"))?.take() {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(fail("read", format!("mapping the result: {e}"))),
            None => return Err(fail("read", "the result was not mapped")),
        }
        {
            let view = slice
                .get_mapped_range()
                .map_err(|e| fail("read", format!("mapping the result: {e}")))?;
            let vals: &[f32] = bytemuck::cast_slice(&view);
            for p in 0..planes {
                for r in src.first_row..src.first_row + src.rows {
                    let s = (p * src.rows + r - src.first_row) * width;
                    let d = (p * dst_rows.len() + r - dst_rows.start) * width;
                    dst[d..d + width].copy_from_slice(&vals[s..s + width]);
                }
            }
        }
        staging.unmap();
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.gpu.wait("sync")
    }

    fn weight_bytes(&self) -> usize {
        self.gpu.weights.iter().map(|(_, n)| n * 4).sum()
    }
}
