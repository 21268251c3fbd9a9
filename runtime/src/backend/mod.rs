//! Backends run the graph's ops: the CPU backend, and (feature `gpu`) the wgpu/WGSL GPU
//! backend, whose every kernel is tested against the CPU one.

pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
