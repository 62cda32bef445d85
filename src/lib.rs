//! # frugal
//!
//! Run convolutional neural networks in a fraction of the memory, with bit-identical results.
//!
//! This facade crate re-exports the engine ([`frugal_core`]), picks backends by name and holds
//! the helpers the `frugal` command-line tool uses (model loading, image preprocessing, `.npy`).
//!
//! | feature   | backend | status |
//! |-----------|---------|--------|
//! | `cpu` (default) | `frugal_cpu::CpuBackend` | x86-64 (AVX2/FMA detected at run time) and portable |
//! | `wgpu`    | Vulkan, Metal, DX12, GL | works (tested on Mesa's software drivers; untiled shaders) |
//! | `cuda`    | NVIDIA GPUs through NVRTC | works (tested on an H100; simple kernels, not yet fast) |
//! | `plugins` | third-party backends from a shared library (`plugin:PATH`, `FRUGAL_PLUGIN_PATH`; see `plugin`) | works |
//!
//! ```
//! use frugal::{backend_by_name, zoo, Plan, PlanOptions, Session, Strategy};
//!
//! let graph = zoo::mobilenet_v2(64, 10, 0)?;
//! let plan = Plan::build(&graph, &PlanOptions::new(Strategy::LayerByLayer))?;
//! let mut session = Session::new(&graph, &plan, backend_by_name("cpu")?)?;
//! let input = vec![0.5f32; 3 * 64 * 64];
//! let out = session.run(&[&input])?;
//! assert_eq!(out[0].shape(), &[1, 10]);
//! # Ok::<(), frugal::Error>(())
//! ```

pub mod backends;
pub mod model;
pub mod npy;
pub mod planning;
#[cfg(feature = "plugins")]
pub mod plugin;
pub mod preprocess;

pub use backends::{
    available, backend_by_name, backend_with, BackendKind, BackendOptions, BackendReport,
    BACKEND_NAMES,
};
pub use frugal_core::*;
#[cfg(feature = "cpu")]
pub use frugal_cpu::CpuBackend;
#[cfg(feature = "cuda-backend")]
pub use frugal_cuda::{CudaBackend, CudaOptions};
