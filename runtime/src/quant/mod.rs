//! Weight formats and quantizers: ggml's block types ([`ggml`], [`kquant`], [`q5`], [`iq4`],
//! [`ternary`]: layouts and scalar reference dequantizers, the definitions the kernels of
//! the backends are tested against) and the group quantizer ([`group`]) shared by the LUT
//! weights and the quantized KV cache. A leaf: imports only the format's type enum.

pub mod ggml;
pub mod group;
pub mod iq4;
pub mod kquant;
pub mod q5;
pub mod ternary;

/// The f16 at byte offset `at` of `b`, widened to f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}
