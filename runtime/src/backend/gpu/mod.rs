//! The GPU backend: the graph's ops as WGSL compute shaders run through wgpu (Vulkan,
//! Metal, DX12; lavapipe in CI).
//!
//! * [`device`]: adapter and device, optional features, limits, errors and device loss.
//! * [`pipeline`]: shader families from `shaders/*.wgsl`, pipelines cached by kernel, data
//!   type, bit width and features.
//! * [`buffer`]: uploads, read-back and a pool of reusable scratch buffers.
//! * [`record`]: dispatches recorded into one submission, parameter slots, cached bind
//!   groups and timestamp queries.
//! * [`matrix`]: ggml weight matrices in the GPU layout; [`ops`]: one function per op.
//! * [`lut`]: T-MAC LUT matrices (GPU permutation, table build, lookup GEMV).
//! * [`df11`]: DFloat11 tensors decoded to BF16 on the GPU.
//! * [`kv_quant`]: the quantized KV cache (q8/q4/q2 pages behind an f16 window).
//!
//! Every kernel is tested against the CPU scalar reference (`tests/gpu_kernels.rs`).

pub mod buffer;
pub mod device;
pub mod df11;
pub mod forward;
pub mod kv_quant;
pub mod lut;
pub mod matrix;
pub mod ops;
pub mod pipeline;
pub mod record;

pub use buffer::GpuBuffer;
pub use device::{Caps, GpuDevice, GpuOptions};
pub use forward::{GpuModel, GpuState};
pub use kv_quant::GpuQuantKv;
pub use matrix::GpuMatrix;
pub use record::{Frame, Params, Recorder};
