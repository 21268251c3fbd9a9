//! T-MAC style table-lookup kernels for 1–4-bit weights ([`crate::lut::LutMatrix`]) with
//! f32 activations (DESIGN.md §3).
//!
//! * [`table`]: per-4-activation symmetric tables with mirror consolidation, quantized to
//!   int8 with one scale per group.
//! * [`gemv`]: the dispatching [`gemv::gemv`] / [`gemv::gemv_chunks`] / [`gemv::gemv_pool`],
//!   the portable streaming kernel, the scalar reference (reads the layout through its index
//!   formula) and the ideal f32 reference; `x86` holds the AVX2, `x86_512` the AVX-512 and
//!   `neon` the aarch64 table and lookup-accumulate kernels, `wasm` the WebAssembly SIMD128
//!   GEMV (browser builds with `+simd128`). All kernels give bit-identical results.
//! * [`gemm`]: batches (prefill) and several matrices in one pass; large batches on CPUs
//!   with AVX-512 VNNI run [`tiled`], an int8 GEMM over weights expanded from the planes
//!   and int8 activations ([`acts8`]), `x86_vnni` its kernels.
//!
//! Accuracy: LUT vs ideal `dequantize(W)·x` differs only by table quantization, at most
//! [`gemv::table_error_bound`] per row (`Σ_g |s|·ts_g/4·(g/4)·(2^b−1)`) plus f32 rounding.
//!
//! ```
//! # fn main() -> suanpan::Result<()> {
//! use suanpan::backend::cpu::lut::gemv;
//! use suanpan::lut::LutMatrix;
//! let (rows, cols) = (96, 256);
//! let w = vec![0.01f32; rows * cols];
//! let m = LutMatrix::quantize(&w, rows, cols, 2, 64)?;
//! let x = vec![1.0f32; cols];
//! let mut y = vec![0.0; rows];
//! gemv::gemv(&m, &x, &mut y)?;
//! assert!(y.iter().all(|v| (v - 2.56).abs() < 0.05));
//! # Ok(()) }
//! ```

pub mod acts8;
pub mod gemm;
pub mod gemv;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod table;
#[cfg(test)]
mod tests;
pub mod tiled;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod wasm;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_512;
#[cfg(target_arch = "x86_64")]
mod x86_vnni;

pub use table::LutTables;
