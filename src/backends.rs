//! Backend selection by name. The CPU backend (feature `cpu`, default), GPU backends and plugins
//! are features, and asking for one that was not compiled in is a clear error.

use frugal_core::{Backend, Capabilities, Error, Result};

/// Names accepted by [`backend_by_name`] (plus `plugin:PATH`).
pub const BACKEND_NAMES: [&str; 4] = ["cpu", "wgpu", "cuda", "gpu-or-cpu"];

/// The backends this build knows, by kind. Adding a backend adds a variant here, and the
/// matches below fail to compile until it is wired everywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// The CPU backend.
    Cpu,
    /// The wgpu backend (Vulkan, Metal, DX12, GL).
    Wgpu,
    /// The CUDA backend.
    Cuda,
    /// The first GPU backend that works here, else the CPU.
    GpuOrCpu,
    /// A third-party backend from a shared library.
    Plugin(String),
}

impl BackendKind {
    /// Parses `cpu`, `wgpu`, `cuda`, `gpu-or-cpu` or `plugin:PATH`.
    pub fn parse(name: &str) -> Result<BackendKind> {
        match name {
            "cpu" => Ok(BackendKind::Cpu),
            "wgpu" => Ok(BackendKind::Wgpu),
            "cuda" => Ok(BackendKind::Cuda),
            "gpu-or-cpu" => Ok(BackendKind::GpuOrCpu),
            other => match other.strip_prefix("plugin:") {
                Some(path) if !path.is_empty() => Ok(BackendKind::Plugin(path.to_string())),
                _ => Err(Error::BackendUnavailable {
                    backend: other.to_string(),
                    reason: format!(
                        "unknown backend; choose one of {}, or plugin:PATH",
                        BACKEND_NAMES.join(", ")
                    ),
                }),
            },
        }
    }
}

/// How to set a backend up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendOptions {
    /// CPU threads inside a firing (results are the same bits for any count).
    pub threads: usize,
}

impl Default for BackendOptions {
    /// Threads from `FRUGAL_THREADS`, else every core this process may use.
    fn default() -> Self {
        let threads = std::env::var("FRUGAL_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        BackendOptions { threads }
    }
}

/// Creates a backend by name with default options.
pub fn backend_by_name(name: &str) -> Result<Box<dyn Backend>> {
    backend_with(name, &BackendOptions::default())
}

/// Creates a backend by name.
pub fn backend_with(name: &str, options: &BackendOptions) -> Result<Box<dyn Backend>> {
    #[cfg(not(any(feature = "cpu", feature = "plugins")))]
    let _ = options;
    let cpu = || -> Result<Box<dyn Backend>> {
        #[cfg(feature = "cpu")]
        return Ok(Box::new(frugal_cpu::CpuBackend::with_threads(options.threads)?));
        #[cfg(not(feature = "cpu"))]
        return Err(Error::BackendNotCompiled("cpu".into()));
    };
    match BackendKind::parse(name)? {
        BackendKind::Cpu => cpu(),
        BackendKind::Wgpu => wgpu(),
        BackendKind::Cuda => cuda(),
        // The first GPU backend that works here (compiled in, and a device found), else CPU.
        BackendKind::GpuOrCpu => cuda().or_else(|_| wgpu()).or_else(|_| cpu()),
        BackendKind::Plugin(spec) => {
            #[cfg(feature = "plugins")]
            return crate::plugin::create(&spec, options.threads);
            #[cfg(not(feature = "plugins"))]
            {
                let _ = spec;
                Err(Error::BackendNotCompiled("plugins".into()))
            }
        }
    }
}

/// The wgpu backend on the first adapter found (`FRUGAL_WGPU_MAX_BINDING` may lower the binding
/// limit requested, `WGPU_BACKEND` restrict the APIs tried).
#[cfg(feature = "wgpu")]
fn wgpu() -> Result<Box<dyn Backend>> {
    Ok(Box::new(frugal_wgpu::WgpuBackend::new()?))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Box<dyn Backend>> {
    Err(Error::BackendNotCompiled("wgpu".into()))
}

/// The CUDA backend. `FRUGAL_CUDA_DEVICE` picks the GPU (default 0); `FRUGAL_CUDA_HOST_MAPPED_IO=1`
/// stages inputs and outputs in host-mapped memory (Jetson; see `frugal_cuda::CudaOptions`).
#[cfg(feature = "cuda-backend")]
fn cuda() -> Result<Box<dyn Backend>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let options = frugal_cuda::CudaOptions {
        device: env("FRUGAL_CUDA_DEVICE").and_then(|v| v.parse().ok()).unwrap_or(0),
        host_mapped_io: env("FRUGAL_CUDA_HOST_MAPPED_IO").is_some_and(|v| v != "0"),
    };
    Ok(Box::new(frugal_cuda::CudaBackend::with_options(options)?))
}

#[cfg(not(feature = "cuda-backend"))]
fn cuda() -> Result<Box<dyn Backend>> {
    Err(Error::BackendNotCompiled("cuda".into()))
}

/// What `frugal backends` shows about one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendReport {
    /// The name to pass to `--backend`.
    pub name: String,
    /// The device and its limits, or why the backend cannot be used here.
    pub status: std::result::Result<Capabilities, String>,
}

/// Every backend this build knows (and every plugin found on `FRUGAL_PLUGIN_PATH`, as
/// `plugin:PATH`), each with its device or the reason it is unavailable or was refused. Creating
/// a backend is the check: what works here is what `--backend` gets.
pub fn available(options: &BackendOptions) -> Vec<BackendReport> {
    let probe = |name: &str| BackendReport {
        name: name.to_string(),
        status: backend_with(name, options)
            .and_then(|b| b.check().map(|_| b.capabilities()))
            .map_err(|e| e.to_string()),
    };
    #[allow(unused_mut)]
    let mut all: Vec<BackendReport> = ["cpu", "wgpu", "cuda"].into_iter().map(probe).collect();
    #[cfg(feature = "plugins")]
    for (path, loaded) in crate::plugin::discover() {
        let name = format!("plugin:{}", path.display());
        all.push(match loaded {
            Ok(_) => probe(&name),
            Err(e) => BackendReport { name, status: Err(e.to_string()) },
        });
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(feature = "cpu"))]
    fn cpu_not_compiled_is_a_clear_error() {
        let e = backend_by_name("cpu").unwrap_err();
        assert!(matches!(e, Error::BackendNotCompiled(ref b) if b == "cpu"), "{e}");
    }

    #[test]
    #[cfg(feature = "cpu")]
    fn names_resolve_or_explain() {
        assert_eq!(backend_by_name("cpu").unwrap().name(), "cpu");
        let cuda_here = backend_by_name("cuda").is_ok();
        let fallback = backend_by_name("gpu-or-cpu").unwrap();
        assert!(["cpu", "wgpu", "cuda"].contains(&fallback.name()), "{}", fallback.name());
        if !cuda_here && backend_by_name("wgpu").is_err() {
            assert_eq!(fallback.name(), "cpu");
        }
        let e = backend_by_name("tpu").unwrap_err().to_string();
        assert!(e.contains("unknown backend"), "{e}");
        let e = backend_by_name("plugin:").unwrap_err().to_string();
        assert!(e.contains("unknown backend"), "{e}");
        if !cfg!(feature = "cuda-backend") {
            assert!(!cuda_here);
        }
    }

    #[test]
    #[cfg(feature = "cpu")]
    fn the_report_lists_every_backend_with_a_device_or_a_reason() {
        let all = available(&BackendOptions { threads: 1 });
        assert_eq!(all[0].name, "cpu");
        assert!(all[0].status.as_ref().unwrap().device.contains("CPU"), "{:?}", all[0]);
        for r in &all[1..] {
            if let Err(why) = &r.status {
                assert!(!why.is_empty());
            }
        }
    }
}
