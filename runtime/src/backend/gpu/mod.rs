//! The GPU backend: the graph's ops as WGSL compute shaders run through wgpu (Vulkan,
//! Metal, DX12; lavapipe in CI; the browser's WebGPU on wasm32).
//!
//! * [`device`]: adapter and device, optional features, limits, errors and device loss.
//! * [`pipeline`]: shader families from `shaders/*.wgsl`, pipelines cached by kernel, data
//!   type, bit width and features.
//! * [`buffer`]: uploads, read-back and a pool of reusable scratch buffers;
//!   [`readback`]: read-back awaited instead of blocking (the browser's way).
//! * [`record`]: dispatches recorded into one submission, parameter slots, cached bind
//!   groups and timestamp queries.
//! * [`kernels`]: every entry point's buffers and parameters, one struct per kernel.
//! * [`matrix`]: ggml weight matrices in the GPU layout; [`ops`]: one function per op.
//! * [`kquant`]: the other ggml block types (K-quants, Q5, IQ4, ternary) and matrices
//!   split over several bindings, with their GEMV.
//! * [`lut`]: T-MAC LUT matrices (GPU permutation, table build, lookup GEMV).
//! * [`df11`]: DFloat11 tensors decoded to BF16 on the GPU; [`df12`]: df12 matrices kept
//!   compressed, multiplied by a GEMV that decodes them.
//! * [`kv_quant`]: the quantized KV cache (q8/q4/q2 pages behind an f16 window).
//! * [`model`]: a model's weights on the device, and what the backend cannot run;
//!   [`state`]: one session's KV cache and buffers; [`exec`]: the graph's ops recorded
//!   ([`exec::GpuBackend`]); [`forward`]: the one graph run on it.
//!
//! Every kernel is tested against the CPU scalar reference (`tests/gpu_kernels.rs`).

pub mod buffer;
pub mod device;
pub mod df11;
pub mod df12;
pub mod exec;
pub mod forward;
pub mod kernels;
pub mod kquant;
pub mod kv;
pub mod kv_quant;
pub mod lut;
pub mod matrix;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod readback;
pub mod record;
pub mod state;

pub use buffer::GpuBuffer;
pub use device::{Caps, GpuDevice, GpuOptions};
pub use exec::GpuBackend;
pub use forward::{GpuModel, GpuState};
pub use kernels::Params;
pub use kquant::GpuKMatrix;
pub use kv_quant::GpuQuantKv;
pub use matrix::GpuMatrix;
pub use readback::Readback;
pub use record::{Frame, Recorder};
