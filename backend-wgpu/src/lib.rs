//! # frugal-wgpu
//!
//! The wgpu backend of frugal (Vulkan, Metal, DX12 and GL through WGSL compute shaders) will
//! live here: the arena as storage buffers within the adapter's binding limits, one shader file
//! per op family, shapes as uniforms and a pipeline cache.
//!
//! **Status:** not implemented yet. The crate compiles so that the workspace layout, the
//! facade's `wgpu` feature and backend selection by name are in place; asking for `--backend
//! wgpu` today is a clear error that points to the CPU backend.
