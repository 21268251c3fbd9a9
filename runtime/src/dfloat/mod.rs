//! DFloat11: lossless compression of BF16 weights to ~11 bits per value.
//!
//! A BF16 value is `sign(1) | exponent(8) | mantissa(7)`. In trained weights the exponent
//! carries only ~2.6 bits of information while sign and mantissa are close to uniform, so
//! the exponent is Huffman coded and sign|mantissa is stored raw, one byte per value.
//! Decoding gives back the exact bit patterns: `bf16 = (sm & 0x80) << 8 | e << 7 | (sm & 0x7f)`.
//!
//! # Encoded tensor ([`Df11Tensor`])
//!
//! ```text
//!  values (u16)   v0        v1     v2          v3   ...                       v(n-1)
//!                 │         │      │           │
//!  exponent e ──► canonical Huffman code, length-limited to L ≤ 32 bits (L = 32 default)
//!                 │         │      │           │
//!  bitstream     [c0 ][c1   ][c2][c3   ][c4 ]...[c(n-1)]0-pad   MSB-first, one stream
//!                ├──── chunk 0: C bytes ────┼──── chunk 1: C bytes ────┼── ... ──┤
//!                                              ▲
//!  chunk index    chunk_elem[k] = first value whose code STARTS in chunk k
//!                 chunk_bit[k]  = where it starts, in bits from the chunk's first bit
//!                 (chunk 0 is always (0, 0); a last chunk that only holds the tail of
//!                 the last code is (n, 0))
//!  sign_mantissa  [s|m7 of v0][s|m7 of v1] ... one byte per value, sign in bit 7
//!  lengths        [u8; 256]: code length per exponent (0 = absent); codes are rebuilt
//!                 canonically from them
//! ```
//!
//! Chunks are independent work units: chunk k decodes values
//! `chunk_elem[k] .. chunk_elem[k+1]` starting at bit `8·C·k + chunk_bit[k]`, so threads
//! (or GPU workgroups) decode chunks in parallel into disjoint parts of the output.
//!
//! # Blob ([`Df11Tensor::to_bytes`], [`Df11View::parse`]), all integers little-endian
//!
//! ```text
//! offset  size        field
//!      0  4           magic "DF11"
//!      4  1           version = 1
//!      5  3           reserved, 0
//!      8  8           n               u64  number of values
//!     16  4           C               u32  chunk size in bytes (4 ..= 2^28)
//!     20  4           n_chunks        u32  = ceil(bitstream_len / C)
//!     24  8           bitstream_len   u64  bytes
//!     32  256         lengths         u8 × 256
//!    288  4·n_chunks  chunk_elem      u32 × n_chunks
//!         4·n_chunks  chunk_bit       u32 × n_chunks
//!         bitstream_len  bitstream
//!         n           sign_mantissa
//!                     (end: the blob is exactly this long)
//! ```
//!
//! Parsing borrows (zero copy) and validates everything but the bitstream contents; the
//! decoder checks those as it goes. Every malformed input is an [`Error::BadModel`]
//! (caller mistakes such as a wrong output length are [`Error::InvalidArg`]), never a panic.
//!
//! # Use
//!
//! ```
//! use suanpan::backend::cpu::dfloat::Df11Decoder;
//! use suanpan::dfloat::{encode, Df11Tensor};
//! let bf16: Vec<u16> = (0..1000u32).map(|i| half::bf16::from_f32((i as f32).sin()).to_bits()).collect();
//! let t = encode(&bf16)?;
//! let blob = t.to_bytes();
//! let t2 = Df11Tensor::from_bytes(&blob)?;
//! let dec = Df11Decoder::new(&t2.lengths)?;
//! let mut out = vec![0u16; t2.n];
//! dec.decode_parallel(&t2, &mut out, 2)?;
//! assert_eq!(out, bf16);
//! # Ok::<(), suanpan::Error>(())
//! ```
//!
//! The [`df12`] submodule holds the faster ~12-bit form DF11 files are transcoded to at load.
//! This module is the format (a leaf: it imports nothing but errors); the decoders are
//! kernels of the backends (`backend::cpu::dfloat`, `backend::gpu::df11`).
//!
//! [`Error::BadModel`]: crate::Error::BadModel
//! [`Error::InvalidArg`]: crate::Error::InvalidArg

pub mod df12;
mod encode;
pub mod huffman;
mod tensor;

pub use encode::{encode, encode_with, exponent, exponent_counts, sign_mantissa, EncodeParams};
pub use huffman::{DEFAULT_MAX_CODE_LEN, MAX_CODE_LEN, NSYM};
pub use tensor::{
    Df11Tensor, Df11View, U32s, DEFAULT_CHUNK_BYTES, DF11_HEADER_LEN, DF11_MAGIC, DF11_VERSION,
    MAX_CHUNK_BYTES, MIN_CHUNK_BYTES,
};

/// Bits per value of `t`'s serialized blob (header and index included).
pub fn bits_per_value(t: &Df11Tensor) -> f64 {
    if t.n == 0 {
        return 0.0;
    }
    8.0 * t.serialized_len() as f64 / t.n as f64
}

/// Round an f32 to the nearest BF16 (ties to even); NaN stays NaN (quiet).
pub fn f32_to_bf16_rne(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) as u16) | 0x0040;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}
