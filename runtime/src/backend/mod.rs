//! Backends run the graph's ops. Only the CPU backend exists so far; the GPU backend
//! (wgpu + WGSL) will implement the same ops and be tested against this one.

pub mod cpu;
