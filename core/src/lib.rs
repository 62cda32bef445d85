//! # frugal-core
//!
//! The engine of frugal: ONNX import, the normalised graph, plans (schedule, buffers, arena),
//! the executor ([`Session`]) and the [`Backend`] trait that devices implement.
//!
//! The flow is **model -> plan -> session**:
//!
//! ```
//! use frugal_core::{zoo, Plan, PlanOptions, Strategy};
//!
//! let graph = zoo::mobilenet_v2(224, 1000, 0)?;
//! let lbl = Plan::build(&graph, &PlanOptions::new(Strategy::LayerByLayer))?;
//! let naive = Plan::build(&graph, &PlanOptions::new(Strategy::Naive))?;
//! assert!(lbl.peak_bytes() < naive.peak_bytes());
//! # Ok::<(), frugal_core::Error>(())
//! ```
//!
//! A session binds a plan to a backend (see the `frugal-cpu` crate) and runs it without
//! allocating beyond its arena.

pub mod backend;
pub mod error;
mod exec;
pub mod format;
pub mod graph;
mod lanes;
pub mod limits;
pub mod onnx;
pub mod ops;
pub mod passes;
pub mod plan;
pub mod planner;
pub mod rows;
pub mod session;
pub mod tensor;
pub mod zoo;

pub use backend::{
    Backend, Capabilities, Dims, Kernel, Operand, RowWindow, Scratch, WeightId, WeightRef,
};
pub use error::{Error, Result};
pub use exec::session_bytes;
pub use graph::{Graph, GraphBuilder, Node, NodeId, Value, ValueId};
pub use onnx::ImportOptions;
pub use ops::{Activation, Op};
pub use plan::{Plan, PlanOptions, Strategy};
pub use rows::{Fold, RowMap};
pub use session::Session;
pub use tensor::{DType, Tensor};
