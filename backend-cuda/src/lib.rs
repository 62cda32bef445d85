//! # frugal-cuda
//!
//! The CUDA backend of frugal (NVIDIA Jetson boards and desktop GPUs) will live here: kernel
//! sources embedded with `include_str!`, compiled with NVRTC on first use through cudarc's
//! dynamic loading, so the crate builds and tests without CUDA installed.
//!
//! **Status:** not implemented yet. The crate compiles so that the workspace layout, the
//! facade's `cuda` feature and backend selection by name are in place; asking for `--backend
//! cuda` today is a clear error that points to the CPU backend.
