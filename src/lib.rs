//! # frugal
//!
//! Run convolutional neural networks in a fraction of the memory, with bit-identical results.
//!
//! This facade crate re-exports the engine ([`frugal_core`]), picks backends by name and holds
//! the helpers the `frugal` command-line tool uses (model loading, image preprocessing, `.npy`).
//!
//! | feature   | backend | status |
//! |-----------|---------|--------|
//! | `cpu` (default, always compiled) | [`frugal_cpu::CpuBackend`] | x86-64 (AVX2/FMA detected at run time) and portable |
//! | `wgpu`    | Vulkan, Metal, DX12, GL | in progress |
//! | `cuda`    | NVIDIA GPUs through NVRTC | in progress |
//! | `plugins` | third-party backends from a shared library | in progress |
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
pub mod preprocess;

pub use backends::{
    available, backend_by_name, backend_with, BackendKind, BackendOptions, BackendReport,
    BACKEND_NAMES,
};
pub use frugal_core::*;
pub use frugal_cpu::CpuBackend;
#[cfg(feature = "cuda-backend")]
pub use frugal_cuda::{CudaBackend, CudaOptions};
