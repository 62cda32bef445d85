//! The safe side for Rust plugin authors: implement [`PluginBackend`], then
//! `frugal_plugin_abi::export_plugin!(MyBackend);` exports `frugal_plugin_entry` with every
//! function wrapped so that errors become messages and panics never cross the boundary.

use std::ffi::{c_void, CStr};
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::*;

/// An error message a plugin returns.
pub type PluginError = String;

/// One kernel call, by family, as a Rust plugin sees it.
#[derive(Clone, Copy, Debug)]
pub enum Call<'a> {
    /// Convolution.
    Conv(&'a FrugalConv),
    /// Transposed convolution.
    ConvTranspose(&'a FrugalConvTranspose),
    /// Pooling.
    Pool(&'a FrugalPool),
    /// Global average pooling.
    GlobalAvgPool(&'a FrugalGlobalAvgPool),
    /// Affine.
    Affine(&'a FrugalAffine),
    /// Unary.
    Unary(&'a FrugalUnary),
    /// Binary.
    Binary(&'a FrugalBinary),
    /// Concat, with its inputs.
    Concat(&'a FrugalConcat, &'a [FrugalWindow]),
    /// Resize.
    Resize(&'a FrugalResize),
    /// Gemm.
    Gemm(&'a FrugalGemm),
    /// MatMul.
    MatMul(&'a FrugalMatMul),
    /// Reduce.
    Reduce(&'a FrugalReduce),
    /// Softmax.
    Softmax(&'a FrugalSoftmax),
    /// Transpose.
    Transpose(&'a FrugalTranspose),
    /// Copy.
    Copy(&'a FrugalCopy),
}

impl Call<'_> {
    /// The family's name.
    pub fn family(&self) -> &'static str {
        let f = match self {
            Call::Conv(_) => FRUGAL_FAMILY_CONV,
            Call::ConvTranspose(_) => FRUGAL_FAMILY_CONV_TRANSPOSE,
            Call::Pool(_) => FRUGAL_FAMILY_POOL,
            Call::GlobalAvgPool(_) => FRUGAL_FAMILY_GLOBAL_AVG_POOL,
            Call::Affine(_) => FRUGAL_FAMILY_AFFINE,
            Call::Unary(_) => FRUGAL_FAMILY_UNARY,
            Call::Binary(_) => FRUGAL_FAMILY_BINARY,
            Call::Concat(..) => FRUGAL_FAMILY_CONCAT,
            Call::Resize(_) => FRUGAL_FAMILY_RESIZE,
            Call::Gemm(_) => FRUGAL_FAMILY_GEMM,
            Call::MatMul(_) => FRUGAL_FAMILY_MATMUL,
            Call::Reduce(_) => FRUGAL_FAMILY_REDUCE,
            Call::Softmax(_) => FRUGAL_FAMILY_SOFTMAX,
            Call::Transpose(_) => FRUGAL_FAMILY_TRANSPOSE,
            Call::Copy(_) => FRUGAL_FAMILY_COPY,
        };
        FAMILY_NAMES[f as usize]
    }
}

/// What a backend reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Storage types: bit `1 << FRUGAL_DTYPE_*`.
    pub storage_mask: u32,
    /// Largest single buffer, bytes.
    pub max_buffer_bytes: u64,
    /// Largest range one kernel may bind, bytes.
    pub max_binding_bytes: u64,
    /// Device description.
    pub device: String,
    /// Identity of the kernels' code (a version), may be empty.
    pub kernels: String,
}

/// A backend written in safe Rust. Every method runs inside `catch_unwind`; errors are
/// messages. One instance is never called from two threads at once.
pub trait PluginBackend: Send + Sized + 'static {
    /// Short name of the backend.
    const NAME: &'static CStr;
    /// The op families it runs: bit `1 << FRUGAL_FAMILY_*` for each. Families left out are
    /// exported as null functions, and the host refuses models that need them.
    const FAMILIES: u32;

    /// Creates an instance.
    fn create(options: &FrugalOptions) -> Result<Self, PluginError>;
    /// Dtypes, limits and device.
    fn capabilities(&self) -> Capabilities;
    /// Checks the device is usable.
    fn check(&self) -> Result<(), PluginError> {
        Ok(())
    }
    /// Allocates the arena, replacing any previous one.
    fn alloc_arena(&mut self, bytes: usize) -> Result<(), PluginError>;
    /// Uploads an f32 constant of shape `shape`; returns its id.
    fn upload(&mut self, shape: &[u64], data: &[f32]) -> Result<u64, PluginError>;
    /// Once per node at session creation, with the node's kernel over its whole output.
    fn prepare(&mut self, call: Call<'_>) -> Result<(), PluginError> {
        let _ = call;
        Ok(())
    }
    /// Scratch bytes a call needs.
    fn workspace_bytes(&self, call: Call<'_>) -> u64 {
        let _ = call;
        0
    }
    /// Runs one kernel.
    fn execute(&mut self, call: Call<'_>, scratch: FrugalScratch) -> Result<(), PluginError>;
    /// Copies host rows `rows` of every plane (plane after plane) into the window.
    fn write(
        &mut self,
        dst: &FrugalWindow,
        src: &[f32],
        rows: Range<usize>,
    ) -> Result<(), PluginError>;
    /// Copies the window's rows to the host, laid out as in `write`.
    fn read(
        &mut self,
        src: &FrugalWindow,
        dst: &mut [f32],
        rows: Range<usize>,
    ) -> Result<(), PluginError>;
    /// Waits for queued work.
    fn sync(&mut self) -> Result<(), PluginError> {
        Ok(())
    }
    /// Bytes held for weights.
    fn weight_bytes(&self) -> u64;
}

/// Exports `frugal_plugin_entry` for a [`PluginBackend`] type.
#[macro_export]
macro_rules! export_plugin {
    ($backend:ty) => {
        /// The plugin's entry point.
        #[no_mangle]
        pub extern "C" fn frugal_plugin_entry() -> *const $crate::FrugalPluginModule {
            static MODULE: $crate::FrugalPluginModule = $crate::module::<$backend>();
            &MODULE
        }
    };
}

/// The module record for `T` (what [`export_plugin!`] puts in a static).
pub const fn module<T: PluginBackend>() -> FrugalPluginModule {
    const fn has<T: PluginBackend>(family: u32) -> bool {
        T::FAMILIES & (1 << family) != 0
    }
    macro_rules! family {
        ($f:expr, $shim:ident) => {
            if has::<T>($f) {
                Some($shim::<T>)
            } else {
                None
            }
        };
    }
    FrugalPluginModule {
        abi_version: FRUGAL_PLUGIN_ABI_VERSION,
        struct_size: std::mem::size_of::<FrugalPluginModule>() as u32,
        name: T::NAME.as_ptr(),
        create: Some(create::<T>),
        release: Some(release::<T>),
        capabilities: Some(capabilities::<T>),
        check: Some(check::<T>),
        alloc_arena: Some(alloc_arena::<T>),
        upload: Some(upload::<T>),
        prepare: Some(prepare::<T>),
        workspace_bytes: Some(workspace_bytes::<T>),
        write: Some(write::<T>),
        read: Some(read::<T>),
        sync: Some(sync::<T>),
        weight_bytes: Some(weight_bytes::<T>),
        conv: family!(FRUGAL_FAMILY_CONV, exec_conv),
        conv_transpose: family!(FRUGAL_FAMILY_CONV_TRANSPOSE, exec_conv_transpose),
        pool: family!(FRUGAL_FAMILY_POOL, exec_pool),
        global_avg_pool: family!(FRUGAL_FAMILY_GLOBAL_AVG_POOL, exec_global_avg_pool),
        affine: family!(FRUGAL_FAMILY_AFFINE, exec_affine),
        unary: family!(FRUGAL_FAMILY_UNARY, exec_unary),
        binary: family!(FRUGAL_FAMILY_BINARY, exec_binary),
        concat: family!(FRUGAL_FAMILY_CONCAT, exec_concat),
        resize: family!(FRUGAL_FAMILY_RESIZE, exec_resize),
        gemm: family!(FRUGAL_FAMILY_GEMM, exec_gemm),
        matmul: family!(FRUGAL_FAMILY_MATMUL, exec_matmul),
        reduce: family!(FRUGAL_FAMILY_REDUCE, exec_reduce),
        softmax: family!(FRUGAL_FAMILY_SOFTMAX, exec_softmax),
        transpose: family!(FRUGAL_FAMILY_TRANSPOSE, exec_transpose),
        copy: family!(FRUGAL_FAMILY_COPY, exec_copy),
    }
}

/// Runs `f`, turning an error into a message and a panic into `FRUGAL_PANIC`.
fn guard(err: *mut FrugalError, f: impl FnOnce() -> Result<(), PluginError>) -> FrugalStatus {
    let (status, message) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return FRUGAL_OK,
        Ok(Err(m)) => (FRUGAL_ERROR, m),
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".into());
            (FRUGAL_PANIC, format!("the plugin panicked: {text}"))
        }
    };
    if !err.is_null() {
        // SAFETY: the host passes a valid, writable error record (or null).
        unsafe { (*err).set(&message) };
    }
    status
}

/// The instance behind a handle.
///
/// # Safety
/// `b` must be null or a handle `create::<T>` returned and not yet released.
unsafe fn instance<'a, T>(b: FrugalBackend) -> Result<&'a mut T, PluginError> {
    if b.is_null() {
        return Err("null backend handle".into());
    }
    // SAFETY: guaranteed by the caller.
    Ok(unsafe { &mut *(b as *mut T) })
}

/// A record behind a pointer.
///
/// # Safety
/// `p` must be null or valid for reads for the call's duration.
unsafe fn record<'a, R>(p: *const R) -> Result<&'a R, PluginError> {
    // SAFETY: guaranteed by the caller.
    unsafe { p.as_ref() }.ok_or_else(|| "null record pointer".into())
}

/// The family call a [`FrugalKernel`] points to.
///
/// # Safety
/// `k.call` must point to the record of family `k.family`.
unsafe fn call_of(k: &FrugalKernel) -> Result<Call<'_>, PluginError> {
    let p = k.call;
    // SAFETY: guaranteed by the caller.
    unsafe {
        Ok(match k.family {
            FRUGAL_FAMILY_CONV => Call::Conv(record(p.cast())?),
            FRUGAL_FAMILY_CONV_TRANSPOSE => Call::ConvTranspose(record(p.cast())?),
            FRUGAL_FAMILY_POOL => Call::Pool(record(p.cast())?),
            FRUGAL_FAMILY_GLOBAL_AVG_POOL => Call::GlobalAvgPool(record(p.cast())?),
            FRUGAL_FAMILY_AFFINE => Call::Affine(record(p.cast())?),
            FRUGAL_FAMILY_UNARY => Call::Unary(record(p.cast())?),
            FRUGAL_FAMILY_BINARY => Call::Binary(record(p.cast())?),
            FRUGAL_FAMILY_CONCAT => {
                let c: &FrugalConcat = record(p.cast())?;
                Call::Concat(c, c.inputs())
            }
            FRUGAL_FAMILY_RESIZE => Call::Resize(record(p.cast())?),
            FRUGAL_FAMILY_GEMM => Call::Gemm(record(p.cast())?),
            FRUGAL_FAMILY_MATMUL => Call::MatMul(record(p.cast())?),
            FRUGAL_FAMILY_REDUCE => Call::Reduce(record(p.cast())?),
            FRUGAL_FAMILY_SOFTMAX => Call::Softmax(record(p.cast())?),
            FRUGAL_FAMILY_TRANSPOSE => Call::Transpose(record(p.cast())?),
            FRUGAL_FAMILY_COPY => Call::Copy(record(p.cast())?),
            other => return Err(format!("unknown op family {other}")),
        })
    }
}

unsafe extern "C" fn create<T: PluginBackend>(
    options: *const FrugalOptions,
    out: *mut FrugalBackend,
    err: *mut FrugalError,
) -> FrugalStatus {
    guard(err, || {
        // SAFETY: the host passes valid pointers (or null, refused here).
        let options = unsafe { record(options)? };
        if out.is_null() {
            return Err("null output pointer".into());
        }
        let b = Box::new(T::create(options)?);
        // SAFETY: `out` is non-null and writable.
        unsafe { *out = Box::into_raw(b) as *mut c_void };
        Ok(())
    })
}

unsafe extern "C" fn release<T: PluginBackend>(b: FrugalBackend) {
    if !b.is_null() {
        // SAFETY: `b` came from `create::<T>` and is released once. A panic in drop is
        // swallowed rather than unwound into the host.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(b as *mut T) })));
    }
}

unsafe extern "C" fn capabilities<T: PluginBackend>(
    b: FrugalBackend,
    out: *mut FrugalCapabilities,
    err: *mut FrugalError,
) -> FrugalStatus {
    guard(err, || {
        // SAFETY: handle and record from the host.
        let (b, out) = unsafe { (instance::<T>(b)?, out.as_mut().ok_or("null record")?) };
        let c = b.capabilities();
        out.storage_mask = c.storage_mask;
        out.max_buffer_bytes = c.max_buffer_bytes;
        out.max_binding_bytes = c.max_binding_bytes;
        set_c_text(&mut out.device, &c.device);
        set_c_text(&mut out.kernels, &c.kernels);
        Ok(())
    })
}

unsafe extern "C" fn check<T: PluginBackend>(
    b: FrugalBackend,
    err: *mut FrugalError,
) -> FrugalStatus {
    // SAFETY: handle from the host.
    guard(err, || unsafe { instance::<T>(b)? }.check())
}

unsafe extern "C" fn alloc_arena<T: PluginBackend>(
    b: FrugalBackend,
    bytes: u64,
    err: *mut FrugalError,
) -> FrugalStatus {
    guard(err, || {
        let bytes = usize::try_from(bytes).map_err(|_| format!("{bytes} bytes do not fit"))?;
        // SAFETY: handle from the host.
        unsafe { instance::<T>(b)? }.alloc_arena(bytes)
    })
}

unsafe extern "C" fn upload<T: PluginBackend>(
    b: FrugalBackend,
    tensor: *const FrugalTensor,
    id: *mut u64,
    err: *mut FrugalError,
) -> FrugalStatus {
    guard(err, || {
        // SAFETY: handle and records from the host.
        let (b, t) = unsafe { (instance::<T>(b)?, record(tensor)?) };
        if t.dtype != FRUGAL_DTYPE_F32 {
            return Err(format!("weights of dtype {} are not supported (f32 only)", t.dtype));
        }
        if id.is_null() || (t.data.is_null() && t.len > 0) || t.rank as usize > FRUGAL_MAX_RANK {
            return Err("malformed upload".into());
        }
        let data: &[f32] = if t.len == 0 {
            &[]
        } else {
            // SAFETY: the host passes `len` f32 values.
            unsafe { std::slice::from_raw_parts(t.data as *const f32, t.len as usize) }
        };
        let got = b.upload(&t.dims[..t.rank as usize], data)?;
        // SAFETY: non-null, writable.
        unsafe { *id = got };
        Ok(())
    })
}

unsafe extern "C" fn prepare<T: PluginBackend>(
    b: FrugalBackend,
    kernel: *const FrugalKernel,
    err: *mut FrugalError,
) -> FrugalStatus {
    guard(err, || {
        // SAFETY: handle and record from the host.
        let (b, k) = unsafe { (instance::<T>(b)?, record(kernel)?) };
        // SAFETY: the host points `call` at the family's record.
        b.prepare(unsafe { call_of(k)? })
    })
}

unsafe extern "C" fn workspace_bytes<T: PluginBackend>(
    b: FrugalBackend,
    kernel: *const FrugalKernel,
    bytes: *mut u64,
    err: *mut FrugalError,
) -> FrugalStatus {
    guard(err, || {
        // SAFETY: handle and records from the host.
        let (b, k, bytes) =
            unsafe { (instance::<T>(b)?, record(kernel)?, bytes.as_mut().ok_or("null output")?) };
        // SAFETY: the host points `call` at the family's record.
        *bytes = b.workspace_bytes(unsafe { call_of(k)? });
        Ok(())
    })
}

unsafe extern "C" fn write<T: PluginBackend>(
    b: FrugalBackend,
    dst: *const FrugalWindow,
    src: *const f32,
    len: u64,
    rows_begin: u64,
    rows_end: u64,
    err: *mut FrugalError,
) -> FrugalStatus {
    guard(err, || {
        // SAFETY: handle and record from the host.
        let (b, dst) = unsafe { (instance::<T>(b)?, record(dst)?) };
        if src.is_null() && len > 0 {
            return Err("null source".into());
        }
        let src: &[f32] = if len == 0 {
            &[]
        } else {
            // SAFETY: the host passes `len` floats.
            unsafe { std::slice::from_raw_parts(src, len as usize) }
        };
        b.write(dst, src, rows_begin as usize..rows_end as usize)
    })
}

unsafe extern "C" fn read<T: PluginBackend>(
    b: FrugalBackend,
    src: *const FrugalWindow,
    dst: *mut f32,
    len: u64,
    rows_begin: u64,
    rows_end: u64,
    err: *mut FrugalError,
) -> FrugalStatus {
    guard(err, || {
        // SAFETY: handle and record from the host.
        let (b, src) = unsafe { (instance::<T>(b)?, record(src)?) };
        if dst.is_null() && len > 0 {
            return Err("null destination".into());
        }
        let dst: &mut [f32] = if len == 0 {
            &mut []
        } else {
            // SAFETY: the host passes `len` writable floats.
            unsafe { std::slice::from_raw_parts_mut(dst, len as usize) }
        };
        b.read(src, dst, rows_begin as usize..rows_end as usize)
    })
}

unsafe extern "C" fn sync<T: PluginBackend>(
    b: FrugalBackend,
    err: *mut FrugalError,
) -> FrugalStatus {
    // SAFETY: handle from the host.
    guard(err, || unsafe { instance::<T>(b)? }.sync())
}

unsafe extern "C" fn weight_bytes<T: PluginBackend>(b: FrugalBackend) -> u64 {
    // SAFETY: handle from the host.
    catch_unwind(AssertUnwindSafe(|| unsafe { instance::<T>(b) }.map_or(0, |b| b.weight_bytes())))
        .unwrap_or(0)
}

macro_rules! exec_shim {
    ($name:ident, $record:ty, $variant:ident) => {
        unsafe extern "C" fn $name<T: PluginBackend>(
            b: FrugalBackend,
            call: *const $record,
            scratch: FrugalScratch,
            err: *mut FrugalError,
        ) -> FrugalStatus {
            guard(err, || {
                // SAFETY: handle and record from the host.
                let (b, call) = unsafe { (instance::<T>(b)?, record(call)?) };
                b.execute(Call::$variant(call), scratch)
            })
        }
    };
}

exec_shim!(exec_conv, FrugalConv, Conv);
exec_shim!(exec_conv_transpose, FrugalConvTranspose, ConvTranspose);
exec_shim!(exec_pool, FrugalPool, Pool);
exec_shim!(exec_global_avg_pool, FrugalGlobalAvgPool, GlobalAvgPool);
exec_shim!(exec_affine, FrugalAffine, Affine);
exec_shim!(exec_unary, FrugalUnary, Unary);
exec_shim!(exec_binary, FrugalBinary, Binary);
exec_shim!(exec_resize, FrugalResize, Resize);
exec_shim!(exec_gemm, FrugalGemm, Gemm);
exec_shim!(exec_matmul, FrugalMatMul, MatMul);
exec_shim!(exec_reduce, FrugalReduce, Reduce);
exec_shim!(exec_softmax, FrugalSoftmax, Softmax);
exec_shim!(exec_transpose, FrugalTranspose, Transpose);
exec_shim!(exec_copy, FrugalCopy, Copy);

unsafe extern "C" fn exec_concat<T: PluginBackend>(
    b: FrugalBackend,
    call: *const FrugalConcat,
    scratch: FrugalScratch,
    err: *mut FrugalError,
) -> FrugalStatus {
    guard(err, || {
        // SAFETY: handle and record from the host; `xs` holds `count` windows.
        let (b, call) = unsafe { (instance::<T>(b)?, record(call)?) };
        // SAFETY: as above.
        b.execute(Call::Concat(call, unsafe { call.inputs() }), scratch)
    })
}
