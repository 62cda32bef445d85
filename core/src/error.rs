//! Errors of the engine. Every message says what was wrong and, where it can, what to do.

use std::path::PathBuf;

/// Result type of frugal-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while importing, planning or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file could not be opened or read.
    #[error("cannot read {path}: {cause}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The operating system's reason (not a `source`, so one-line reports say it once).
        cause: std::io::Error,
    },

    /// The bytes are not a valid ONNX model (corrupt, truncated, or another format).
    #[error("{path} is not a valid ONNX model: {reason}")]
    InvalidModel {
        /// The file, or `<memory>`.
        path: String,
        /// What the decoder found.
        reason: String,
    },

    /// A model construct that is structurally wrong (dangling value names, bad attributes, ...).
    #[error(
        "malformed model: {0} (re-export the model; `python -m onnx.checker` names what is wrong)"
    )]
    Malformed(String),

    /// An operator, or an operator with attributes, that frugal does not run.
    #[error("unsupported operator {op} (node '{node}', opset {opset}): {reason}")]
    Unsupported {
        /// ONNX op type.
        op: String,
        /// Node name (or its first output when unnamed).
        node: String,
        /// The opset the model declares for the default domain.
        opset: i64,
        /// Why, and what could be done instead.
        reason: String,
    },

    /// The opset of the model is outside the range frugal implements.
    #[error("model uses opset {opset} of domain '{domain}'; frugal supports the default domain at opsets {min} to {max}. Re-export the model with an opset in that range")]
    Opset {
        /// Domain name ('' is the default ONNX domain).
        domain: String,
        /// The declared version.
        opset: i64,
        /// Lowest supported version.
        min: i64,
        /// Highest supported version.
        max: i64,
    },

    /// Shapes that do not fit together (at import, or between a user input and the model).
    #[error(
        "shape error at {node}: {reason} (check --input-shape against the shape the model expects)"
    )]
    Shape {
        /// Node or input name.
        node: String,
        /// What did not fit.
        reason: String,
    },

    /// An input given to a session does not match what the plan was built for.
    #[error("input '{name}': {reason}")]
    Input {
        /// Model input name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A memory budget below what any plan can reach.
    #[error(
        "budget {} ({budget} bytes) is below the smallest achievable peak of {} ({needed} bytes); raise the budget to at least that",
        crate::format::bytes(*.budget),
        crate::format::bytes(*.needed)
    )]
    OutOfBudget {
        /// Bytes the smallest plan needs.
        needed: usize,
        /// Bytes the user allowed.
        budget: usize,
    },

    /// A device limit that a plan would exceed.
    #[error("device limit {limit} is {value}, the plan needs {needed}")]
    DeviceLimit {
        /// Which limit.
        limit: String,
        /// Its value on this device.
        value: u64,
        /// What the plan asks for.
        needed: u64,
    },

    /// A backend that this build does not contain.
    #[error("backend '{0}' is not compiled into this build; rebuild with `--features {0}`")]
    BackendNotCompiled(String),

    /// A backend that exists but cannot run here (no device, missing driver, ...).
    #[error("backend '{backend}' is not available: {reason}")]
    BackendUnavailable {
        /// Backend name.
        backend: String,
        /// Why, and what to install or change.
        reason: String,
    },

    /// Something beyond frugal's limits (see [`crate::limits`]), refused before allocating.
    #[error("{what} is too large: {reason}")]
    TooLarge {
        /// The tensor, node or plan.
        what: String,
        /// What limit it exceeds and what to do.
        reason: String,
    },

    /// A plan whose weights plus arena exceed the user's `--max-memory`.
    #[error(
        "the plan needs {} (weights {} + activations and scratch {}), above the memory limit of {}; raise --max-memory, or lower the plan's memory with --strategy by-parts or --budget",
        crate::format::bytes(*.weights + *.arena),
        crate::format::bytes(*.weights),
        crate::format::bytes(*.arena),
        crate::format::bytes(*.limit)
    )]
    OverMemoryLimit {
        /// Bytes of weights the backend holds.
        weights: usize,
        /// Bytes of the arena (activations and kernel scratch).
        arena: usize,
        /// The limit.
        limit: usize,
    },

    /// A plan that does not belong to the graph it is used with, or is inconsistent.
    #[error("invalid plan: {0}")]
    Plan(String),

    /// A failure inside a backend while running a kernel.
    #[error("backend '{backend}' failed in {op}: {reason}")]
    Backend {
        /// Backend name.
        backend: String,
        /// Kernel or operation.
        op: String,
        /// Backend's reason.
        reason: String,
    },
}

impl Error {
    /// Shorthand for [`Error::Malformed`].
    pub fn malformed(msg: impl Into<String>) -> Self {
        Error::Malformed(msg.into())
    }

    /// Shorthand for [`Error::Shape`].
    pub fn shape(node: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Shape { node: node.into(), reason: reason.into() }
    }
}
