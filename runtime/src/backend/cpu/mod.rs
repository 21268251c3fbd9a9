//! The CPU backend: a thread pool and the kernels the model graph runs on it.

pub mod attention;
pub mod attention_q;
pub mod bandwidth;
pub mod dfloat;
pub mod dot;
pub mod exec;
pub mod features;
pub mod gemm_bf16;
pub mod lut;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod rows;

pub use pool::Pool;
