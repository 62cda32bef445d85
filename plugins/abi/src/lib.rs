//! # frugal-plugin-abi
//!
//! The stable C ABI a third-party frugal backend will implement: one exported `extern "C"`
//! entry symbol returning a `#[repr(C)]` module record that starts with `abi_version` and
//! `struct_size`, and the backend as a table of `extern "C"` function pointers mirroring
//! `frugal_core::Backend`.
//!
//! **Status:** not implemented yet; the crate reserves its place in the workspace.
