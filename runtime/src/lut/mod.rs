//! The lookup-table weight format (DESIGN.md §3): 1–4-bit weights as bit planes, and the
//! quantizers that produce them. A pure leaf: the kernels that multiply by these matrices
//! live with the CPU backend (`backend::cpu::lut`) and the GPU backend (`backend::gpu::lut`).
//!
//! * [`quantize`]: group-wise asymmetric quantization (RTN and an error-minimizing search)
//!   and BitNet b1.58 ternary.
//! * [`gptq`]: calibrated quantization (GPTQ): rounding errors moved onto the columns not
//!   yet quantized, weighted by the second moments of real inputs.
//! * [`layout`]: [`LutMatrix`], bit planes packed as nibbles in the GEMV's read order.
//!
//! ```
//! # fn main() -> suanpan::Result<()> {
//! use suanpan::lut::LutMatrix;
//! let (rows, cols) = (96, 256);
//! let w: Vec<f32> = (0..rows * cols).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
//! let m = LutMatrix::quantize(&w, rows, cols, 2, 64)?;
//! assert_eq!((m.rows(), m.cols(), m.bits()), (rows, cols, 2));
//! # Ok(()) }
//! ```

pub mod gptq;
pub mod layout;
pub mod quantize;

pub use layout::LutMatrix;
pub use quantize::Method;
