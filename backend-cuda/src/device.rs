//! What the backend needs from a device: buffers with raw addresses, kernel launches, copies
//! and synchronisation. A real GPU through cudarc, or (feature `emulator`, for tests on
//! machines without a GPU) the same kernel sources built for the host by a C++ compiler.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{
    result as cu, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr,
    DeviceRepr, LaunchConfig, PushKernelArg,
};
use frugal_core::Result;

use crate::params::{blocks, fail, BLOCK};

pub(crate) fn driver_err(op: &str, e: impl std::fmt::Debug) -> frugal_core::Error {
    fail(op, format!("CUDA error: {e:?}"))
}

/// A GPU: its context, the one stream every operation goes through, the loaded kernels.
pub(crate) struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) funcs: HashMap<&'static str, CudaFunction>,
}

/// The device behind a backend.
pub(crate) enum Dev {
    Gpu(Gpu),
    #[cfg(feature = "emulator")]
    Emu(crate::emulator::Emu),
}

/// What keeps a buffer alive.
enum Keep {
    Gpu(#[allow(dead_code)] CudaSlice<f32>),
    #[cfg_attr(not(feature = "emulator"), allow(dead_code))]
    Host(#[allow(dead_code)] Box<[f32]>),
}

/// A buffer of f32 and its raw address (in the device's address space).
pub(crate) struct DevBuf {
    _keep: Keep,
    pub(crate) ptr: u64,
    len: usize,
}

impl std::fmt::Debug for DevBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevBuf({} floats)", self.len)
    }
}

impl DevBuf {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg_attr(not(feature = "emulator"), allow(dead_code))]
    pub(crate) fn host(data: Box<[f32]>) -> DevBuf {
        let (ptr, len) = (data.as_ptr() as u64, data.len());
        DevBuf { _keep: Keep::Host(data), ptr, len }
    }
}

/// Pinned host memory mapped into the device (the `host_mapped_io` staging buffer): `host`
/// for the CPU, `dev` for kernels.
pub(crate) struct Mapped {
    host: *mut f32,
    pub(crate) dev: u64,
    pub(crate) len: usize,
    ctx: Option<Arc<CudaContext>>,
    _emu: Option<Box<[f32]>>,
}

// SAFETY: the buffer is owned by one backend, which is used from one thread at a time.
unsafe impl Send for Mapped {}

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapped({} floats)", self.len)
    }
}

/// A point in the stream (an event, created on first use and recorded again each time): what
/// was queued before it has finished once [`Done::wait`] returns. Never recorded, or on the
/// emulator (which runs everything at once), waiting returns at once.
#[derive(Default)]
pub(crate) struct Done(Option<CudaEvent>);

impl Done {
    pub(crate) fn wait(&self) -> Result<()> {
        match &self.0 {
            Some(e) => e.synchronize().map_err(|e| driver_err("sync", e)),
            None => Ok(()),
        }
    }

    /// Whether the work before it has finished, without waiting.
    pub(crate) fn is_done(&self) -> Result<bool> {
        match &self.0 {
            Some(e) => e.try_is_complete().map_err(|e| driver_err("sync", e)),
            None => Ok(true),
        }
    }
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Done")
    }
}

impl Mapped {
    pub(crate) fn slice_mut(&mut self, n: usize) -> &mut [f32] {
        // SAFETY: host points to len floats owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.host, n.min(self.len)) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Some(ctx) = &self.ctx {
            let _ = ctx.bind_to_thread();
            // SAFETY: allocated by malloc_host, freed once.
            unsafe {
                let _ = cu::free_host(self.host.cast());
            }
        }
    }
}

impl Dev {
    /// Makes the context current on the calling thread (raw driver calls need it).
    pub(crate) fn bind(&self, op: &str) -> Result<()> {
        match self {
            Dev::Gpu(g) => g.ctx.bind_to_thread().map_err(|e| driver_err(op, e)),
            #[cfg(feature = "emulator")]
            Dev::Emu(_) => Ok(()),
        }
    }

    /// `len` zeroed floats.
    pub(crate) fn alloc(&self, len: usize) -> Result<DevBuf> {
        let len = len.max(1);
        match self {
            Dev::Gpu(g) => {
                let buf = g.stream.alloc_zeros::<f32>(len).map_err(|e| {
                    fail("alloc", format!("cannot allocate {} bytes: {e:?}", len * 4))
                })?;
                let ptr = buf.device_ptr(&g.stream).0;
                Ok(DevBuf { _keep: Keep::Gpu(buf), ptr, len })
            }
            #[cfg(feature = "emulator")]
            Dev::Emu(_) => Ok(DevBuf::host(vec![0.0; len].into_boxed_slice())),
        }
    }

    /// A copy of `data`.
    pub(crate) fn upload(&self, data: &[f32]) -> Result<DevBuf> {
        if data.is_empty() {
            return self.alloc(1);
        }
        match self {
            Dev::Gpu(g) => {
                let buf = g.stream.clone_htod(data).map_err(|e| driver_err("upload", e))?;
                let ptr = buf.device_ptr(&g.stream).0;
                Ok(DevBuf { _keep: Keep::Gpu(buf), ptr, len: data.len() })
            }
            #[cfg(feature = "emulator")]
            Dev::Emu(_) => Ok(DevBuf::host(data.to_vec().into_boxed_slice())),
        }
    }

    /// Pinned, device-mapped host memory for `len` floats.
    pub(crate) fn mapped(&self, len: usize) -> Result<Mapped> {
        match self {
            Dev::Gpu(g) => {
                self.bind("host_mapped_io")?;
                // SAFETY: allocates len floats of pinned, device-mapped host memory, freed in
                // Drop; the device address comes from the driver.
                unsafe {
                    let host =
                        cu::malloc_host(len * 4, cudarc::driver::sys::CU_MEMHOSTALLOC_DEVICEMAP)
                            .map_err(|e| driver_err("host_mapped_io", e))?
                            as *mut f32;
                    let mut dev = 0u64;
                    let r =
                        cudarc::driver::sys::cuMemHostGetDevicePointer_v2(&mut dev, host.cast(), 0);
                    if let Err(e) = r.result() {
                        let _ = cu::free_host(host.cast());
                        return Err(driver_err("host_mapped_io", e));
                    }
                    Ok(Mapped { host, dev, len, ctx: Some(g.ctx.clone()), _emu: None })
                }
            }
            #[cfg(feature = "emulator")]
            Dev::Emu(_) => {
                let mut b = vec![0.0f32; len].into_boxed_slice();
                let host = b.as_mut_ptr();
                Ok(Mapped { host, dev: host as u64, len, ctx: None, _emu: Some(b) })
            }
        }
    }

    /// Launches `name` over `n` threads (1-D, [`BLOCK`] per block) with `p` as its only
    /// argument, passed by value.
    pub(crate) fn launch<P: DeviceRepr>(&self, name: &str, n: u64, p: &P) -> Result<()> {
        let Some(grid) = blocks(n) else {
            if n == 0 {
                return Ok(());
            }
            return Err(fail(name, format!("{n} threads are too many for one launch")));
        };
        match self {
            Dev::Gpu(g) => {
                let f = g.funcs.get(name).ok_or_else(|| fail(name, "kernel not loaded"))?;
                let cfg = LaunchConfig {
                    grid_dim: (grid, 1, 1),
                    block_dim: (BLOCK, 1, 1),
                    shared_mem_bytes: 0,
                };
                let mut b = g.stream.launch_builder(f);
                b.arg(p);
                // SAFETY: the parameter struct mirrors the kernel's (checked by tests against
                // the sources); every window was checked to lie inside the arena and every
                // weight to hold the values the kernel reads.
                unsafe { b.launch(cfg) }.map(|_| ()).map_err(|e| driver_err(name, e))
            }
            #[cfg(feature = "emulator")]
            Dev::Emu(e) => e.launch(name, n, p),
        }
    }

    /// Marks `done` at the end of the work queued so far.
    pub(crate) fn record(&self, done: &mut Done) -> Result<()> {
        match self {
            Dev::Gpu(g) => {
                if done.0.is_none() {
                    done.0 = Some(g.ctx.new_event(None).map_err(|e| driver_err("event", e))?);
                }
                let e = done.0.as_ref().expect("created above");
                e.record(&g.stream).map_err(|e| driver_err("event", e))
            }
            #[cfg(feature = "emulator")]
            Dev::Emu(_) => Ok(()),
        }
    }

    /// Queues a copy of pinned host memory `src` to device address `dst`: it runs after the
    /// work queued before it, and `src` must stay untouched until it has (see [`Done`]).
    pub(crate) fn htod_pinned(&self, dst: u64, src: &Mapped, n: usize) -> Result<()> {
        let n = n.min(src.len);
        match self {
            // SAFETY: src holds n floats of pinned memory kept until the copy is done (the
            // caller's Done); dst has room for n floats.
            Dev::Gpu(g) => unsafe {
                let src = std::slice::from_raw_parts(src.host, n);
                cu::memcpy_htod_async(dst, src, g.stream.cu_stream())
            }
            .map_err(|e| driver_err("write", e)),
            #[cfg(feature = "emulator")]
            // SAFETY: the emulator's addresses are host addresses with room for n floats.
            Dev::Emu(_) => unsafe {
                std::ptr::copy_nonoverlapping(src.host, dst as *mut f32, n);
                Ok(())
            },
        }
    }

    /// Queues a copy of `n` floats at device address `src` into pinned host memory `dst`
    /// (complete once the stream is synchronised).
    pub(crate) fn dtoh_pinned(&self, dst: &mut Mapped, src: u64, n: usize) -> Result<()> {
        let n = n.min(dst.len);
        match self {
            // SAFETY: dst holds n floats of pinned memory, not read before a synchronisation;
            // src holds n floats.
            Dev::Gpu(g) => unsafe {
                let d = std::slice::from_raw_parts_mut(dst.host, n);
                cu::memcpy_dtoh_async(d, src, g.stream.cu_stream())
            }
            .map_err(|e| driver_err("read", e)),
            #[cfg(feature = "emulator")]
            // SAFETY: the emulator's addresses are host addresses holding n floats.
            Dev::Emu(_) => unsafe {
                std::ptr::copy_nonoverlapping(src as *const f32, dst.host, n);
                Ok(())
            },
        }
    }

    /// Waits for queued work.
    pub(crate) fn sync(&self) -> Result<()> {
        match self {
            Dev::Gpu(g) => g.stream.synchronize().map_err(|e| driver_err("sync", e)),
            #[cfg(feature = "emulator")]
            Dev::Emu(_) => Ok(()),
        }
    }
}
