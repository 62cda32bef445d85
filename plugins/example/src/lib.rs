//! An example third-party backend built as a `cdylib` against `frugal-plugin-abi`.
//!
//! **Status:** not implemented yet; it will follow the ABI crate.
