//! Lossless BF16 kernels: decoding DFloat11 ([`crate::dfloat`]) and df12
//! ([`crate::dfloat::df12`]) on the CPU, and the fused passes that decode a block of rows
//! and multiply it at once, so no full BF16 copy of a matrix ever exists.
//!
//! * [`decode`]: [`Df11Decoder`], table-driven canonical Huffman decoding (BMI2/AVX2 merges
//!   of exponents with sign|mantissa bytes), chunk-parallel.
//! * [`fused`]: DF11 decode-then-multiply over several matrices sharing one input.
//! * [`df12_kernel`]: df12 by byte shuffle ([`Df12Decode`] on a parsed view), AVX2 and NEON.
//! * [`df12_gemv`]: df12 decode-then-multiply, and a fused AVX2 row dot.
//! * [`transcode`]: DF11 to df12 at load.
//!
//! ```
//! use suanpan::backend::cpu::dfloat::Df11Decoder;
//! use suanpan::dfloat::{encode, Df11Tensor};
//! let bf16: Vec<u16> = (0..1000u32).map(|i| half::bf16::from_f32((i as f32).sin()).to_bits()).collect();
//! let t = Df11Tensor::from_bytes(&encode(&bf16)?.to_bytes())?;
//! let dec = Df11Decoder::new(&t.lengths)?;
//! let mut out = vec![0u16; t.n];
//! dec.decode_parallel(&t, &mut out, 2)?;
//! assert_eq!(out, bf16);
//! # Ok::<(), suanpan::Error>(())
//! ```

pub mod decode;
#[cfg(target_arch = "x86_64")]
mod df12_fused_x86;
pub mod df12_gemv;
pub mod df12_kernel;
pub mod fused;
pub mod transcode;

pub use decode::{decode, Df11Decoder, Kernel};
pub use df12_gemv::{df12_matmul_many, Df12Job};
pub use df12_kernel::Df12Decode;
pub use fused::{chunks_covering, decode_elems, decode_matmul_many, Df11Job};
pub use transcode::transcode_df11;
