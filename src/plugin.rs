//! Third-party backends from shared libraries (feature `plugins`).
//!
//! A plugin is a library exporting `frugal_plugin_entry` (see the `frugal-plugin-abi` crate and
//! `plugins/README.md`). [`load`] opens it, checks the record's `abi_version` and `struct_size`
//! before reading anything else, checks the required functions are there, and keeps the
//! library loaded for the rest of the process (plugins are never unloaded, so no function
//! pointer can dangle). [`create`] wraps an instance as a `Box<dyn Backend>`.
//!
//! `plugin:PATH` names a file; `plugin:NAME` is looked up in the directories of
//! `FRUGAL_PLUGIN_PATH` (`libNAME.so`, `NAME.so`, `libNAME.dylib`, `NAME.dll`, or a library
//! whose plugin reports that name). [`discover`] lists every library found there, loaded or
//! refused with the reason (`frugal backends`).

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use frugal_core::backend::{
    Capabilities, Kernel, Operand, RowWindow, Scratch, WeightId, WeightRef,
};
use frugal_core::ops::{
    Activation, BinaryKind, CoordMode, NearestMode, PoolKind, ReduceKind, ResizeMode,
};
use frugal_core::{Backend, DType, Error, Result, Tensor};
use frugal_plugin_abi as abi;

/// The environment variable holding plugin directories (or files), separated like `PATH`.
pub const PLUGIN_PATH_VAR: &str = "FRUGAL_PLUGIN_PATH";

/// A loaded plugin library. Lives for the rest of the process.
#[derive(Debug)]
pub struct Plugin {
    path: PathBuf,
    name: String,
    module: abi::FrugalPluginModule,
}

impl Plugin {
    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name the plugin reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The names of the op families it runs.
    pub fn families(&self) -> Vec<&'static str> {
        (0..abi::FRUGAL_FAMILY_COUNT)
            .filter(|&f| self.module.has_family(f))
            .map(|f| abi::FAMILY_NAMES[f as usize])
            .collect()
    }
}

fn refused(path: &Path, reason: impl Into<String>) -> Error {
    Error::BackendUnavailable {
        backend: format!("plugin:{}", path.display()),
        reason: reason.into(),
    }
}

/// Libraries loaded so far, by canonical path.
fn loaded() -> &'static Mutex<HashMap<PathBuf, &'static Plugin>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, &'static Plugin>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// Loads the plugin library at `path` (once per process; later calls return the same one).
/// Files that are not libraries, libraries without the entry symbol, records of another ABI
/// version or too short, and records missing a required function are errors that say so.
pub fn load(path: &Path) -> Result<&'static Plugin> {
    let canon = path.canonicalize().map_err(|e| refused(path, format!("cannot open it: {e}")))?;
    let mut map = loaded().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = map.get(&canon) {
        return Ok(p);
    }
    if !canon.is_file() {
        return Err(refused(path, "not a file; give the path of a plugin library"));
    }
    precheck(&canon).map_err(|why| {
        refused(
            path,
            format!(
                "not a shared library this system can load ({why}); a plugin is a cdylib built \
                 against frugal-plugin-abi"
            ),
        )
    })?;
    // SAFETY: loading a library runs its initialisers; the user named this file as a plugin.
    let lib = unsafe { libloading::Library::new(&canon) }.map_err(|e| {
        refused(
            path,
            format!(
                "not a shared library this system can load ({e}); a plugin is a cdylib built \
                 against frugal-plugin-abi"
            ),
        )
    })?;
    // SAFETY: the symbol's type is the ABI's entry type (checked by its name only, as in C).
    let entry: abi::EntryFn =
        match unsafe { lib.get::<abi::EntryFn>(abi::FRUGAL_PLUGIN_ENTRY) } {
            Ok(sym) => *sym,
            Err(_) => return Err(refused(
                path,
                "a shared library, but not a frugal plugin: it exports no `frugal_plugin_entry` \
                 symbol",
            )),
        };
    // Never unloaded: every function pointer taken from it stays valid.
    std::mem::forget(lib);
    // SAFETY: the ABI's entry takes nothing and returns a pointer to a static record.
    let record = unsafe { entry() };
    if record.is_null() {
        return Err(refused(path, "its `frugal_plugin_entry` returned no module record"));
    }
    // SAFETY: every version of the record starts with this header; nothing else is read yet.
    let header = unsafe { std::ptr::read(record as *const abi::FrugalPluginHeader) };
    if header.abi_version != abi::FRUGAL_PLUGIN_ABI_VERSION {
        return Err(refused(
            path,
            format!(
                "built for plugin ABI version {}, but this frugal speaks version {}; rebuild the \
                 plugin against frugal-plugin-abi {}",
                header.abi_version,
                abi::FRUGAL_PLUGIN_ABI_VERSION,
                abi::FRUGAL_PLUGIN_ABI_VERSION
            ),
        ));
    }
    let want = std::mem::size_of::<abi::FrugalPluginModule>();
    if (header.struct_size as usize) < want {
        return Err(refused(
            path,
            format!(
                "its module record is {} bytes, ABI version {} needs {want}; rebuild the plugin",
                header.struct_size,
                abi::FRUGAL_PLUGIN_ABI_VERSION
            ),
        ));
    }
    // SAFETY: version and size checked: the record is a whole `FrugalPluginModule`.
    let module = unsafe { std::ptr::read(record) };
    let m = &module;
    let required = [
        ("create", m.create.is_some()),
        ("release", m.release.is_some()),
        ("capabilities", m.capabilities.is_some()),
        ("check", m.check.is_some()),
        ("alloc_arena", m.alloc_arena.is_some()),
        ("upload", m.upload.is_some()),
        ("prepare", m.prepare.is_some()),
        ("workspace_bytes", m.workspace_bytes.is_some()),
        ("write", m.write.is_some()),
        ("read", m.read.is_some()),
        ("sync", m.sync.is_some()),
        ("weight_bytes", m.weight_bytes.is_some()),
    ];
    if let Some((f, _)) = required.iter().find(|(_, present)| !present) {
        return Err(refused(
            path,
            format!("its module record leaves the required function `{f}` null"),
        ));
    }
    // SAFETY: the ABI makes `name` null or a static NUL-terminated string.
    let mut name = unsafe { module.name_text() };
    if name.is_empty() {
        name = canon.file_stem().map_or("plugin".into(), |s| s.to_string_lossy().into_owned());
    }
    let plugin: &'static Plugin = Box::leak(Box::new(Plugin { path: canon.clone(), name, module }));
    map.insert(canon, plugin);
    Ok(plugin)
}

/// Checks a file looks like a complete shared library before the dynamic loader maps it: the
/// loader trusts the headers, and a truncated ELF file makes it touch pages past the end of the
/// file (SIGBUS) instead of failing. ELF files must hold every loadable segment and the section
/// headers; other formats (Mach-O, PE) are left to the system loader.
fn precheck(path: &Path) -> std::result::Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let len = bytes.len() as u64;
    let magic = bytes.get(..4).unwrap_or(&[]);
    let known =
        [&[0xfe, 0xed, 0xfa, 0xce][..], &[0xfe, 0xed, 0xfa, 0xcf], &[0xce, 0xfa, 0xed, 0xfe]];
    if magic != b"\x7fELF" {
        if magic.starts_with(b"MZ") || known.contains(&magic) || magic == [0xcf, 0xfa, 0xed, 0xfe] {
            return Ok(());
        }
        return Err("no ELF, Mach-O or PE header".into());
    }
    let (wide, little) = (bytes.get(4) == Some(&2), bytes.get(5) == Some(&1));
    let int = |at: usize, n: usize| -> std::result::Result<u64, String> {
        let b = bytes.get(at..at + n).ok_or("truncated ELF header")?;
        let mut v = 0u64;
        for i in 0..n {
            let byte = if little { b[i] } else { b[n - 1 - i] };
            v |= (byte as u64) << (8 * i);
        }
        Ok(v)
    };
    let w = if wide { 8 } else { 4 };
    let (phoff, shoff) = (int(if wide { 32 } else { 28 }, w)?, int(if wide { 40 } else { 32 }, w)?);
    let base = if wide { 54 } else { 42 };
    let (phentsize, phnum) = (int(base, 2)?, int(base + 2, 2)?);
    let (shentsize, shnum) = (int(base + 4, 2)?, int(base + 6, 2)?);
    let table_end = |off: u64, size: u64, n: u64| off.saturating_add(size.saturating_mul(n));
    if table_end(phoff, phentsize, phnum) > len || table_end(shoff, shentsize, shnum) > len {
        return Err("truncated ELF file: its header tables lie past the end".into());
    }
    for i in 0..phnum {
        let at = (phoff + i * phentsize) as usize;
        // Program header: type, then offset and file size (their places differ by class).
        let kind = int(at, 4)?;
        let (offset, filesz) = if wide {
            (int(at + 8, 8)?, int(at + 32, 8)?)
        } else {
            (int(at + 4, 4)?, int(at + 16, 4)?)
        };
        if kind == 1 && offset.saturating_add(filesz) > len {
            return Err(format!(
                "truncated ELF file: a loadable segment ends at byte {}, the file has {len}",
                offset.saturating_add(filesz)
            ));
        }
    }
    Ok(())
}

/// The directories (or files) of `FRUGAL_PLUGIN_PATH`.
pub fn search_path() -> Vec<PathBuf> {
    std::env::var_os(PLUGIN_PATH_VAR)
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default()
}

/// Whether a file name looks like a shared library (`.so`, `.so.N`, `.dylib`, `.dll`).
pub fn is_library_name(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.ends_with(".so")
        || name.contains(".so.")
        || name.ends_with(".dylib")
        || name.ends_with(".dll")
}

/// Every library on `FRUGAL_PLUGIN_PATH`, each loaded or with the reason it was refused (an
/// entry of the path that cannot be read is listed with its error too).
pub fn discover() -> Vec<(PathBuf, Result<&'static Plugin>)> {
    let mut found = Vec::new();
    for entry in search_path() {
        if entry.is_file() {
            let r = load(&entry);
            found.push((entry, r));
            continue;
        }
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&entry) {
            Ok(dir) => dir.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                let why = format!("{PLUGIN_PATH_VAR} entry cannot be read: {e}");
                found.push((entry.clone(), Err(refused(&entry, why))));
                continue;
            }
        };
        files.sort();
        for f in files.into_iter().filter(|f| f.is_file() && is_library_name(f)) {
            let r = load(&f);
            found.push((f, r));
        }
    }
    found
}

/// The library `spec` names: an existing path, else a plugin on `FRUGAL_PLUGIN_PATH` whose file
/// is `libSPEC.so` (`SPEC.so`, `libSPEC.dylib`, `SPEC.dll`) or whose plugin reports name `SPEC`.
pub fn resolve(spec: &str) -> Result<PathBuf> {
    let p = PathBuf::from(spec);
    if p.exists() {
        return Ok(p);
    }
    let simple = !spec.contains(['/', '\\']);
    if simple {
        let names = [
            format!("lib{spec}.so"),
            format!("{spec}.so"),
            format!("lib{spec}.dylib"),
            format!("{spec}.dll"),
            spec.to_string(),
        ];
        for dir in search_path().iter().filter(|d| d.is_dir()) {
            if let Some(f) = names.iter().map(|n| dir.join(n)).find(|f| f.is_file()) {
                return Ok(f);
            }
        }
        if let Some((path, _)) =
            discover().into_iter().find(|(_, r)| r.as_ref().is_ok_and(|p| p.name() == spec))
        {
            return Ok(path);
        }
    }
    let dirs: Vec<String> = search_path().iter().map(|d| d.display().to_string()).collect();
    Err(refused(
        &p,
        if simple {
            format!(
                "no such file, and no plugin of that name on {PLUGIN_PATH_VAR} ({}); give the \
                 library's path or add its directory to {PLUGIN_PATH_VAR}",
                if dirs.is_empty() { "unset".to_string() } else { dirs.join(", ") }
            )
        } else {
            "no such file; give the path of a plugin library".to_string()
        },
    ))
}

/// Creates a backend instance from the plugin `spec` names (a path or a name, see [`resolve`]).
pub fn create(spec: &str, threads: usize) -> Result<Box<dyn Backend>> {
    let plugin = load(&resolve(spec)?)?;
    Ok(Box::new(PluginBackend::new(plugin, threads)?))
}

/// A plugin backend instance behind frugal's [`Backend`] trait.
#[derive(Debug)]
pub struct PluginBackend {
    plugin: &'static Plugin,
    handle: abi::FrugalBackend,
    label: String,
    /// Storage types the plugin's kernels take (bit `1 << FRUGAL_DTYPE_*`).
    storage_mask: u32,
    /// Reused storage for concat inputs.
    concat: Vec<abi::FrugalWindow>,
}

// SAFETY: the ABI requires instances to accept calls from any thread, one at a time; `&mut self`
// on every calling method (and no `Sync`) gives exactly that.
unsafe impl Send for PluginBackend {}

impl Drop for PluginBackend {
    fn drop(&mut self) {
        if let Some(release) = self.plugin.module.release {
            // SAFETY: the handle came from this module's `create` and is released once.
            unsafe { release(self.handle) };
        }
    }
}

/// Maps a call's status and message to a result.
fn status(label: &str, op: &str, st: abi::FrugalStatus, err: &abi::FrugalError) -> Result<()> {
    let reason = match st {
        abi::FRUGAL_OK => return Ok(()),
        abi::FRUGAL_ERROR | abi::FRUGAL_PANIC => err.text(),
        other => format!("unknown status {other} ({})", err.text()),
    };
    let reason = if reason.is_empty() { "failed without a message".into() } else { reason };
    Err(Error::Backend { backend: label.to_string(), op: op.to_string(), reason })
}

impl PluginBackend {
    /// Creates an instance of `plugin`.
    pub fn new(plugin: &'static Plugin, threads: usize) -> Result<PluginBackend> {
        let options = abi::FrugalOptions {
            struct_size: std::mem::size_of::<abi::FrugalOptions>() as u32,
            threads: threads.min(u32::MAX as usize) as u32,
        };
        let label = format!("plugin:{}", plugin.name);
        let mut handle: abi::FrugalBackend = std::ptr::null_mut();
        let mut err = abi::FrugalError::default();
        let create = plugin.module.create.ok_or_else(|| refused(&plugin.path, "no create"))?;
        // SAFETY: valid options, out pointer and error record.
        let st = unsafe { create(&options, &mut handle, &mut err) };
        status(&label, "create", st, &err)?;
        if handle.is_null() {
            return Err(refused(&plugin.path, "its `create` returned a null instance"));
        }
        let mut b = PluginBackend { plugin, handle, label, storage_mask: 0, concat: Vec::new() };
        let mut caps = abi::FrugalCapabilities::default();
        let f =
            plugin.module.capabilities.ok_or_else(|| refused(&plugin.path, "no capabilities"))?;
        // SAFETY: valid handle, out record and error record.
        let st = unsafe { f(b.handle, &mut caps, &mut err) };
        status(&b.label, "capabilities", st, &err)?;
        b.storage_mask = caps.storage_mask;
        Ok(b)
    }

    /// The loaded library.
    pub fn plugin(&self) -> &'static Plugin {
        self.plugin
    }

    fn m(&self) -> &abi::FrugalPluginModule {
        &self.plugin.module
    }

    /// Refuses a kernel whose family the plugin leaves null, or whose windows hold a storage
    /// type the plugin does not take.
    fn supported(&self, k: &Kernel<'_>) -> Result<()> {
        if self.m().has_family(family_of(k)) {
            let mut xs = Vec::new();
            let rec = record(k, &mut xs);
            let bad =
                rec.windows(&xs).into_iter().find(|w| self.storage_mask & (1 << w.dtype) == 0);
            return match bad {
                None => Ok(()),
                Some(w) => Err(Error::Backend {
                    backend: self.label.clone(),
                    op: k.family().to_string(),
                    reason: format!(
                        "the plugin '{}' does not take storage type {} (its storage mask is \
                         {:#b}); plan with a storage type it takes (--storage f32)",
                        self.plugin.name,
                        abi_dtype_name(w.dtype),
                        self.storage_mask
                    ),
                }),
            };
        }
        Err(Error::Backend {
            backend: self.label.clone(),
            op: k.family().to_string(),
            reason: format!(
                "the plugin '{}' ({}) does not implement the {} op family (it runs: {}); run this \
                 model with another backend, e.g. --backend cpu",
                self.plugin.name,
                self.plugin.path.display(),
                k.family(),
                self.plugin.families().join(", ")
            ),
        })
    }
}

fn abi_dtype_name(d: u32) -> &'static str {
    match d {
        abi::FRUGAL_DTYPE_F32 => "f32",
        abi::FRUGAL_DTYPE_F16 => "f16",
        abi::FRUGAL_DTYPE_I64 => "i64",
        abi::FRUGAL_DTYPE_I32 => "i32",
        abi::FRUGAL_DTYPE_U8 => "u8",
        _ => "unknown",
    }
}

fn dtype(d: DType) -> u32 {
    match d {
        DType::F32 => abi::FRUGAL_DTYPE_F32,
        DType::F16 => abi::FRUGAL_DTYPE_F16,
        DType::I64 => abi::FRUGAL_DTYPE_I64,
        DType::I32 => abi::FRUGAL_DTYPE_I32,
        DType::U8 => abi::FRUGAL_DTYPE_U8,
    }
}

fn dims6(d: &[usize]) -> [u64; abi::FRUGAL_MAX_RANK] {
    let mut out = [1u64; abi::FRUGAL_MAX_RANK];
    for (o, &v) in out.iter_mut().zip(d) {
        *o = v as u64;
    }
    out
}

fn u64s<const N: usize>(v: [usize; N]) -> [u64; N] {
    v.map(|x| x as u64)
}

fn window(w: &RowWindow) -> abi::FrugalWindow {
    abi::FrugalWindow {
        offset: w.offset as u64,
        dtype: dtype(w.dtype),
        rank: w.dims.rank() as u32,
        dims: dims6(w.dims.as_slice()),
        capacity: w.capacity as u64,
        row_stride: w.row_stride as u64,
        first_row: w.first_row as u64,
        rows: w.rows as u64,
    }
}

fn weight(w: &WeightRef) -> abi::FrugalWeight {
    abi::FrugalWeight {
        id: w.id.0 as u64,
        rank: w.dims.rank() as u32,
        reserved: 0,
        dims: dims6(w.dims.as_slice()),
    }
}

fn opt_weight(w: &Option<WeightRef>) -> (u32, abi::FrugalWeight) {
    w.as_ref().map_or((0, abi::FrugalWeight::default()), |w| (1, weight(w)))
}

fn operand(o: &Operand) -> abi::FrugalOperand {
    match o {
        Operand::Arena(w) => abi::FrugalOperand {
            kind: abi::FRUGAL_OPERAND_ARENA,
            window: window(w),
            ..Default::default()
        },
        Operand::Weight(w) => abi::FrugalOperand {
            kind: abi::FRUGAL_OPERAND_WEIGHT,
            weight: weight(w),
            ..Default::default()
        },
    }
}

fn activation(a: Option<&Activation>) -> abi::FrugalActivation {
    let (kind, p0, p1) = match a {
        None => (abi::FRUGAL_ACT_NONE, 0.0, 0.0),
        Some(Activation::Relu) => (abi::FRUGAL_ACT_RELU, 0.0, 0.0),
        Some(&Activation::Clip { min, max }) => (abi::FRUGAL_ACT_CLIP, min, max),
        Some(&Activation::LeakyRelu { alpha }) => (abi::FRUGAL_ACT_LEAKY_RELU, alpha, 0.0),
        Some(Activation::Sigmoid) => (abi::FRUGAL_ACT_SIGMOID, 0.0, 0.0),
        Some(&Activation::HardSigmoid { alpha, beta }) => {
            (abi::FRUGAL_ACT_HARD_SIGMOID, alpha, beta)
        }
        Some(Activation::HardSwish) => (abi::FRUGAL_ACT_HARD_SWISH, 0.0, 0.0),
        Some(Activation::Tanh) => (abi::FRUGAL_ACT_TANH, 0.0, 0.0),
        Some(Activation::Erf) => (abi::FRUGAL_ACT_ERF, 0.0, 0.0),
    };
    abi::FrugalActivation { kind, p0, p1, reserved: 0 }
}

fn family_of(k: &Kernel<'_>) -> u32 {
    match k {
        Kernel::Conv { .. } => abi::FRUGAL_FAMILY_CONV,
        Kernel::ConvTranspose { .. } => abi::FRUGAL_FAMILY_CONV_TRANSPOSE,
        Kernel::Pool { .. } => abi::FRUGAL_FAMILY_POOL,
        Kernel::GlobalAvgPool { .. } => abi::FRUGAL_FAMILY_GLOBAL_AVG_POOL,
        Kernel::Affine { .. } => abi::FRUGAL_FAMILY_AFFINE,
        Kernel::Unary { .. } => abi::FRUGAL_FAMILY_UNARY,
        Kernel::Binary { .. } => abi::FRUGAL_FAMILY_BINARY,
        Kernel::Concat { .. } => abi::FRUGAL_FAMILY_CONCAT,
        Kernel::Resize { .. } => abi::FRUGAL_FAMILY_RESIZE,
        Kernel::Gemm { .. } => abi::FRUGAL_FAMILY_GEMM,
        Kernel::MatMul { .. } => abi::FRUGAL_FAMILY_MATMUL,
        Kernel::Reduce { .. } => abi::FRUGAL_FAMILY_REDUCE,
        Kernel::Softmax { .. } => abi::FRUGAL_FAMILY_SOFTMAX,
        Kernel::Transpose { .. } => abi::FRUGAL_FAMILY_TRANSPOSE,
        Kernel::Copy { .. } => abi::FRUGAL_FAMILY_COPY,
    }
}

/// A kernel as its ABI record.
#[derive(Debug)]
enum Record {
    Conv(abi::FrugalConv),
    ConvTranspose(abi::FrugalConvTranspose),
    Pool(abi::FrugalPool),
    GlobalAvgPool(abi::FrugalGlobalAvgPool),
    Affine(abi::FrugalAffine),
    Unary(abi::FrugalUnary),
    Binary(abi::FrugalBinary),
    Concat(abi::FrugalConcat),
    Resize(abi::FrugalResize),
    Gemm(abi::FrugalGemm),
    MatMul(abi::FrugalMatMul),
    Reduce(abi::FrugalReduce),
    Softmax(abi::FrugalSoftmax),
    Transpose(abi::FrugalTranspose),
    Copy(abi::FrugalCopy),
}

/// Converts a kernel; concat inputs are written to `xs`, which must outlive the record's use.
fn record(k: &Kernel<'_>, xs: &mut Vec<abi::FrugalWindow>) -> Record {
    match k {
        Kernel::Conv { op, x, w, b, r, y } => {
            let (has_bias, b) = opt_weight(b);
            let (has_residual, r) = r.as_ref().map_or((0, Default::default()), |r| (1, window(r)));
            Record::Conv(abi::FrugalConv {
                kernel: u64s(op.kernel),
                strides: u64s(op.strides),
                dilations: u64s(op.dilations),
                pads: u64s(op.pads),
                groups: op.groups as u64,
                act: activation(op.act.as_ref()),
                has_bias,
                has_residual,
                x: window(x),
                w: weight(w),
                b,
                r,
                y: window(y),
            })
        }
        Kernel::ConvTranspose { op, x, w, b, y } => {
            let (has_bias, b) = opt_weight(b);
            Record::ConvTranspose(abi::FrugalConvTranspose {
                kernel: u64s(op.kernel),
                strides: u64s(op.strides),
                dilations: u64s(op.dilations),
                pads: u64s(op.pads),
                output_padding: u64s(op.output_padding),
                groups: op.groups as u64,
                act: activation(op.act.as_ref()),
                has_bias,
                reserved: 0,
                x: window(x),
                w: weight(w),
                b,
                y: window(y),
            })
        }
        Kernel::Pool { op, x, y } => Record::Pool(abi::FrugalPool {
            kind: match op.kind {
                PoolKind::Max => abi::FRUGAL_POOL_MAX,
                PoolKind::Avg => abi::FRUGAL_POOL_AVG,
            },
            ceil_mode: op.ceil_mode as u32,
            count_include_pad: op.count_include_pad as u32,
            reserved: 0,
            kernel: u64s(op.kernel),
            strides: u64s(op.strides),
            dilations: u64s(op.dilations),
            pads: u64s(op.pads),
            x: window(x),
            y: window(y),
        }),
        Kernel::GlobalAvgPool { x, y } => {
            Record::GlobalAvgPool(abi::FrugalGlobalAvgPool { x: window(x), y: window(y) })
        }
        Kernel::Affine { act, x, scale, shift, y } => Record::Affine(abi::FrugalAffine {
            act: activation(act.as_ref()),
            x: window(x),
            scale: weight(scale),
            shift: weight(shift),
            y: window(y),
        }),
        Kernel::Unary { act, x, y } => Record::Unary(abi::FrugalUnary {
            act: activation(Some(act)),
            x: window(x),
            y: window(y),
        }),
        Kernel::Binary { op, a, b, y } => Record::Binary(abi::FrugalBinary {
            kind: match op.kind {
                BinaryKind::Add => abi::FRUGAL_BINARY_ADD,
                BinaryKind::Sub => abi::FRUGAL_BINARY_SUB,
                BinaryKind::Mul => abi::FRUGAL_BINARY_MUL,
                BinaryKind::Div => abi::FRUGAL_BINARY_DIV,
                BinaryKind::PRelu => abi::FRUGAL_BINARY_PRELU,
            },
            reserved: 0,
            act: activation(op.act.as_ref()),
            a: operand(a),
            b: operand(b),
            y: window(y),
        }),
        Kernel::Concat { axis, xs: inputs, y } => {
            xs.clear();
            xs.extend(inputs.iter().map(window));
            Record::Concat(abi::FrugalConcat {
                axis: *axis as u64,
                count: xs.len() as u64,
                xs: xs.as_ptr(),
                y: window(y),
            })
        }
        Kernel::Resize { op, x, y } => Record::Resize(abi::FrugalResize {
            mode: match op.mode {
                ResizeMode::Nearest => abi::FRUGAL_RESIZE_NEAREST,
                ResizeMode::Linear => abi::FRUGAL_RESIZE_LINEAR,
            },
            coord: match op.coord {
                CoordMode::HalfPixel => abi::FRUGAL_COORD_HALF_PIXEL,
                CoordMode::PytorchHalfPixel => abi::FRUGAL_COORD_PYTORCH_HALF_PIXEL,
                CoordMode::AlignCorners => abi::FRUGAL_COORD_ALIGN_CORNERS,
                CoordMode::Asymmetric => abi::FRUGAL_COORD_ASYMMETRIC,
                CoordMode::TfHalfPixelForNearest => abi::FRUGAL_COORD_TF_HALF_PIXEL_FOR_NEAREST,
            },
            nearest: match op.nearest {
                NearestMode::RoundPreferFloor => abi::FRUGAL_NEAREST_ROUND_PREFER_FLOOR,
                NearestMode::RoundPreferCeil => abi::FRUGAL_NEAREST_ROUND_PREFER_CEIL,
                NearestMode::Floor => abi::FRUGAL_NEAREST_FLOOR,
                NearestMode::Ceil => abi::FRUGAL_NEAREST_CEIL,
            },
            reserved: 0,
            scales: op.scales,
            size: u64s(op.size),
            x: window(x),
            y: window(y),
        }),
        Kernel::Gemm { op, a, b, c, y } => {
            let (has_c, c) = opt_weight(c);
            Record::Gemm(abi::FrugalGemm {
                alpha: op.alpha,
                beta: op.beta,
                trans_a: op.trans_a as u32,
                trans_b: op.trans_b as u32,
                act: activation(op.act.as_ref()),
                has_c,
                reserved: 0,
                a: window(a),
                b: weight(b),
                c,
                y: window(y),
            })
        }
        Kernel::MatMul { op, a, b, y } => Record::MatMul(abi::FrugalMatMul {
            act: activation(op.act.as_ref()),
            a: operand(a),
            b: operand(b),
            y: window(y),
        }),
        Kernel::Reduce { op, x, y } => {
            let mut axes = [0u64; abi::FRUGAL_MAX_RANK];
            for (o, &a) in axes.iter_mut().zip(&op.axes) {
                *o = a as u64;
            }
            Record::Reduce(abi::FrugalReduce {
                kind: match op.kind {
                    ReduceKind::Mean => abi::FRUGAL_REDUCE_MEAN,
                    ReduceKind::Sum => abi::FRUGAL_REDUCE_SUM,
                    ReduceKind::Max => abi::FRUGAL_REDUCE_MAX,
                },
                keepdims: op.keepdims as u32,
                naxes: op.axes.len().min(abi::FRUGAL_MAX_RANK) as u64,
                axes,
                x: window(x),
                y: window(y),
            })
        }
        Kernel::Softmax { op, x, y } => Record::Softmax(abi::FrugalSoftmax {
            axis: op.axis as u64,
            coerce_2d: op.coerce_2d as u32,
            reserved: 0,
            x: window(x),
            y: window(y),
        }),
        Kernel::Transpose { perm, x, y } => {
            let mut p = [0u64; abi::FRUGAL_MAX_RANK];
            for (o, &a) in p.iter_mut().zip(perm.iter()) {
                *o = a as u64;
            }
            Record::Transpose(abi::FrugalTranspose {
                rank: perm.len().min(abi::FRUGAL_MAX_RANK) as u64,
                perm: p,
                x: window(x),
                y: window(y),
            })
        }
        Kernel::Copy { x, y } => Record::Copy(abi::FrugalCopy { x: operand(x), y: window(y) }),
    }
}

impl Record {
    /// Every activation window the record reads or writes (`xs`: the concat inputs).
    fn windows(&self, xs: &[abi::FrugalWindow]) -> Vec<abi::FrugalWindow> {
        let opd =
            |o: &abi::FrugalOperand| (o.kind == abi::FRUGAL_OPERAND_ARENA).then_some(o.window);
        let mut v = match self {
            Record::Conv(r) => vec![r.x, r.y],
            Record::ConvTranspose(r) => vec![r.x, r.y],
            Record::Pool(r) => vec![r.x, r.y],
            Record::GlobalAvgPool(r) => vec![r.x, r.y],
            Record::Affine(r) => vec![r.x, r.y],
            Record::Unary(r) => vec![r.x, r.y],
            Record::Binary(r) => [opd(&r.a), opd(&r.b), Some(r.y)].into_iter().flatten().collect(),
            Record::Concat(r) => xs.iter().copied().chain([r.y]).collect(),
            Record::Resize(r) => vec![r.x, r.y],
            Record::Gemm(r) => vec![r.a, r.y],
            Record::MatMul(r) => [opd(&r.a), opd(&r.b), Some(r.y)].into_iter().flatten().collect(),
            Record::Reduce(r) => vec![r.x, r.y],
            Record::Softmax(r) => vec![r.x, r.y],
            Record::Transpose(r) => vec![r.x, r.y],
            Record::Copy(r) => [opd(&r.x), Some(r.y)].into_iter().flatten().collect(),
        };
        if let Record::Conv(r) = self {
            if r.has_residual != 0 {
                v.push(r.r);
            }
        }
        v
    }

    /// `(family, pointer to the record)` for `prepare` and `workspace_bytes`.
    fn kernel(&self) -> abi::FrugalKernel {
        fn k<T>(family: u32, r: &T) -> abi::FrugalKernel {
            abi::FrugalKernel { family, reserved: 0, call: r as *const T as *const c_void }
        }
        match self {
            Record::Conv(r) => k(abi::FRUGAL_FAMILY_CONV, r),
            Record::ConvTranspose(r) => k(abi::FRUGAL_FAMILY_CONV_TRANSPOSE, r),
            Record::Pool(r) => k(abi::FRUGAL_FAMILY_POOL, r),
            Record::GlobalAvgPool(r) => k(abi::FRUGAL_FAMILY_GLOBAL_AVG_POOL, r),
            Record::Affine(r) => k(abi::FRUGAL_FAMILY_AFFINE, r),
            Record::Unary(r) => k(abi::FRUGAL_FAMILY_UNARY, r),
            Record::Binary(r) => k(abi::FRUGAL_FAMILY_BINARY, r),
            Record::Concat(r) => k(abi::FRUGAL_FAMILY_CONCAT, r),
            Record::Resize(r) => k(abi::FRUGAL_FAMILY_RESIZE, r),
            Record::Gemm(r) => k(abi::FRUGAL_FAMILY_GEMM, r),
            Record::MatMul(r) => k(abi::FRUGAL_FAMILY_MATMUL, r),
            Record::Reduce(r) => k(abi::FRUGAL_FAMILY_REDUCE, r),
            Record::Softmax(r) => k(abi::FRUGAL_FAMILY_SOFTMAX, r),
            Record::Transpose(r) => k(abi::FRUGAL_FAMILY_TRANSPOSE, r),
            Record::Copy(r) => k(abi::FRUGAL_FAMILY_COPY, r),
        }
    }

    /// Runs the record through its family's function; `None` when the plugin has none.
    ///
    /// # Safety
    /// `handle` must be an instance of `m`'s plugin, `err` a valid error record.
    unsafe fn execute(
        &self,
        m: &abi::FrugalPluginModule,
        handle: abi::FrugalBackend,
        scratch: abi::FrugalScratch,
        err: &mut abi::FrugalError,
    ) -> Option<abi::FrugalStatus> {
        macro_rules! run {
            ($f:ident, $r:expr) => {
                // SAFETY: guaranteed by the caller; the record lives for the call.
                m.$f.map(|f| unsafe { f(handle, $r, scratch, err) })
            };
        }
        match self {
            Record::Conv(r) => run!(conv, r),
            Record::ConvTranspose(r) => run!(conv_transpose, r),
            Record::Pool(r) => run!(pool, r),
            Record::GlobalAvgPool(r) => run!(global_avg_pool, r),
            Record::Affine(r) => run!(affine, r),
            Record::Unary(r) => run!(unary, r),
            Record::Binary(r) => run!(binary, r),
            Record::Concat(r) => run!(concat, r),
            Record::Resize(r) => run!(resize, r),
            Record::Gemm(r) => run!(gemm, r),
            Record::MatMul(r) => run!(matmul, r),
            Record::Reduce(r) => run!(reduce, r),
            Record::Softmax(r) => run!(softmax, r),
            Record::Transpose(r) => run!(transpose, r),
            Record::Copy(r) => run!(copy, r),
        }
    }
}

impl Backend for PluginBackend {
    fn name(&self) -> &str {
        &self.plugin.name
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = abi::FrugalCapabilities::default();
        let mut err = abi::FrugalError::default();
        let f = self.m().capabilities.expect("checked at load");
        // SAFETY: valid handle, out record and error record.
        let st = unsafe { f(self.handle, &mut c, &mut err) };
        let storage = [DType::F32, DType::F16, DType::I64, DType::I32, DType::U8]
            .into_iter()
            .filter(|&d| c.storage_mask & (1 << dtype(d)) != 0)
            .collect();
        let device = match status(&self.label, "capabilities", st, &err) {
            Ok(()) => abi::c_text(&c.device),
            Err(e) => format!("unknown ({e})"),
        };
        Capabilities {
            storage,
            max_buffer_bytes: c.max_buffer_bytes,
            max_binding_bytes: c.max_binding_bytes,
            device: format!("{device} [plugin {}]", self.plugin.path.display()),
            kernels: format!("plugin-{}-{}", self.plugin.name, abi::c_text(&c.kernels)),
        }
    }

    fn check(&self) -> Result<()> {
        let mut err = abi::FrugalError::default();
        let f = self.m().check.expect("checked at load");
        // SAFETY: valid handle and error record.
        let st = unsafe { f(self.handle, &mut err) };
        status(&self.label, "check", st, &err)
    }

    fn alloc_arena(&mut self, bytes: usize) -> Result<()> {
        let mut err = abi::FrugalError::default();
        let f = self.m().alloc_arena.expect("checked at load");
        // SAFETY: valid handle and error record.
        let st = unsafe { f(self.handle, bytes as u64, &mut err) };
        status(&self.label, "alloc_arena", st, &err)
    }

    fn upload(&mut self, weight: &Tensor) -> Result<WeightId> {
        let cast;
        let t = if weight.dtype() == DType::F32 {
            weight
        } else {
            cast = weight.cast(DType::F32);
            &cast
        };
        let data = t.as_f32()?;
        if t.shape().len() > abi::FRUGAL_MAX_RANK {
            return Err(Error::Backend {
                backend: self.label.clone(),
                op: "upload".into(),
                reason: format!("weights of rank {} (at most 6)", t.shape().len()),
            });
        }
        let rec = abi::FrugalTensor {
            dtype: abi::FRUGAL_DTYPE_F32,
            rank: t.shape().len() as u32,
            dims: dims6(t.shape()),
            data: data.as_ptr() as *const c_void,
            len: data.len() as u64,
        };
        let (mut id, mut err) = (0u64, abi::FrugalError::default());
        let f = self.m().upload.expect("checked at load");
        // SAFETY: valid handle, record (its data lives for the call), out pointer, error.
        let st = unsafe { f(self.handle, &rec, &mut id, &mut err) };
        status(&self.label, "upload", st, &err)?;
        Ok(WeightId(id as usize))
    }

    fn prepare(&mut self, kernel: &Kernel<'_>) -> Result<()> {
        self.supported(kernel)?;
        let mut xs = std::mem::take(&mut self.concat);
        let rec = record(kernel, &mut xs);
        let (k, mut err) = (rec.kernel(), abi::FrugalError::default());
        let f = self.m().prepare.expect("checked at load");
        // SAFETY: valid handle, kernel record (alive for the call) and error record.
        let st = unsafe { f(self.handle, &k, &mut err) };
        self.concat = xs;
        status(&self.label, kernel.family(), st, &err)
    }

    fn workspace_bytes(&self, kernel: &Kernel<'_>) -> usize {
        let mut xs = Vec::new();
        let rec = record(kernel, &mut xs);
        let (mut bytes, mut err) = (0u64, abi::FrugalError::default());
        let f = self.m().workspace_bytes.expect("checked at load");
        let k = rec.kernel();
        // SAFETY: valid handle, kernel record, out pointer and error record.
        let st = unsafe { f(self.handle, &k, &mut bytes, &mut err) };
        if st == abi::FRUGAL_OK {
            bytes as usize
        } else {
            0
        }
    }

    fn execute(&mut self, kernel: &Kernel<'_>, scratch: Scratch) -> Result<()> {
        let scratch =
            abi::FrugalScratch { offset: scratch.offset as u64, bytes: scratch.bytes as u64 };
        let mut xs = std::mem::take(&mut self.concat);
        let rec = record(kernel, &mut xs);
        let mut err = abi::FrugalError::default();
        // SAFETY: an instance of this plugin, a record alive for the call, a valid error record.
        let st = unsafe { rec.execute(&self.plugin.module, self.handle, scratch, &mut err) };
        self.concat = xs;
        match st {
            Some(st) => status(&self.label, kernel.family(), st, &err),
            // Sessions refuse such nodes in `prepare`; direct callers get the same error.
            None => self.supported(kernel),
        }
    }

    fn write(
        &mut self,
        dst: &RowWindow,
        src: &[f32],
        src_rows: std::ops::Range<usize>,
    ) -> Result<()> {
        let (w, mut err) = (window(dst), abi::FrugalError::default());
        let f = self.m().write.expect("checked at load");
        // SAFETY: valid handle, window, `src.len()` floats and error record.
        let st = unsafe {
            f(
                self.handle,
                &w,
                src.as_ptr(),
                src.len() as u64,
                src_rows.start as u64,
                src_rows.end as u64,
                &mut err,
            )
        };
        status(&self.label, "write", st, &err)
    }

    fn read(
        &mut self,
        src: &RowWindow,
        dst: &mut [f32],
        dst_rows: std::ops::Range<usize>,
    ) -> Result<()> {
        let (w, mut err) = (window(src), abi::FrugalError::default());
        let f = self.m().read.expect("checked at load");
        // SAFETY: valid handle, window, `dst.len()` writable floats and error record.
        let st = unsafe {
            f(
                self.handle,
                &w,
                dst.as_mut_ptr(),
                dst.len() as u64,
                dst_rows.start as u64,
                dst_rows.end as u64,
                &mut err,
            )
        };
        status(&self.label, "read", st, &err)
    }

    fn sync(&mut self) -> Result<()> {
        let mut err = abi::FrugalError::default();
        let f = self.m().sync.expect("checked at load");
        // SAFETY: valid handle and error record.
        let st = unsafe { f(self.handle, &mut err) };
        status(&self.label, "sync", st, &err)
    }

    fn weight_bytes(&self) -> usize {
        let f = self.m().weight_bytes.expect("checked at load");
        // SAFETY: valid handle.
        unsafe { f(self.handle) as usize }
    }
}
