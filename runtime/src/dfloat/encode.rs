//! BF16 → DFloat11 encoder.

use super::huffman::{canonical_codes, code_lengths, DEFAULT_MAX_CODE_LEN, NSYM};
use super::tensor::{Df11Tensor, DEFAULT_CHUNK_BYTES, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES};
use crate::error::{Error, Result};

/// Encoder parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeParams {
    /// Longest allowed code, 1..=32 (≥ 8 if all 256 exponents occur). Default 32.
    pub max_code_len: u8,
    /// Chunk size C of the bitstream in bytes (the unit of parallel decode),
    /// 4..=2^28. Default 4096.
    pub chunk_bytes: u32,
}

impl Default for EncodeParams {
    fn default() -> Self {
        EncodeParams {
            max_code_len: DEFAULT_MAX_CODE_LEN,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// Exponent field of a BF16 bit pattern.
#[inline]
pub fn exponent(v: u16) -> u8 {
    (v >> 7) as u8
}

/// Sign (bit 7) and mantissa (bits 0..7) of a BF16 bit pattern in one byte.
#[inline]
pub fn sign_mantissa(v: u16) -> u8 {
    (((v >> 8) & 0x80) | (v & 0x7f)) as u8
}

/// Histogram of the exponents of `values`.
pub fn exponent_counts(values: &[u16]) -> [u64; NSYM] {
    let mut c = [0u64; NSYM];
    for &v in values {
        c[exponent(v) as usize] += 1;
    }
    c
}

/// Encode BF16 bit patterns with default parameters.
pub fn encode(values: &[u16]) -> Result<Df11Tensor> {
    encode_with(values, &EncodeParams::default())
}

/// Encode BF16 bit patterns (`half::bf16::to_bits`) losslessly.
///
/// Errors with [`Error::InvalidArg`] for out-of-range parameters or more than `u32::MAX`
/// values.
pub fn encode_with(values: &[u16], p: &EncodeParams) -> Result<Df11Tensor> {
    if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&p.chunk_bytes) {
        return Err(Error::invalid(format!(
            "DFloat11: chunk size {} not in {MIN_CHUNK_BYTES}..={MAX_CHUNK_BYTES}",
            p.chunk_bytes
        )));
    }
    if values.len() > u32::MAX as usize {
        return Err(Error::invalid(format!(
            "DFloat11: {} values in one tensor exceed u32::MAX; split it",
            values.len()
        )));
    }
    let n = values.len();
    let lengths = code_lengths(&exponent_counts(values), p.max_code_len)?;
    let codes = canonical_codes(&lengths);
    // (code << 8 | length) per exponent: one table load per value.
    let mut table = [0u64; NSYM];
    for s in 0..NSYM {
        table[s] = (codes[s] as u64) << 8 | lengths[s] as u64;
    }
    let total_bits: u64 = values
        .iter()
        .map(|&v| lengths[exponent(v) as usize] as u64)
        .sum();
    let bs_len = total_bits.div_ceil(8) as usize;
    let chunk_bits = 8 * p.chunk_bytes as u64;
    let n_chunks = bs_len.div_ceil(p.chunk_bytes as usize);

    let mut bitstream = Vec::with_capacity(bs_len + 8);
    let mut chunk_elem = Vec::with_capacity(n_chunks);
    let mut chunk_bit = Vec::with_capacity(n_chunks);
    let mut acc: u64 = 0; // pending bits, right-aligned
    let mut nacc: u32 = 0; // number of pending bits (< 32 between values)
    let mut pos: u64 = 0; // absolute bit position of the next code
    let mut next_chunk_at: u64 = 0; // first bit of the next chunk without an index entry
    for (i, &v) in values.iter().enumerate() {
        if pos >= next_chunk_at {
            // With chunks of ≥ 32 bits a code starts in every chunk but maybe the last,
            // so `pos` is inside the chunk that begins at `next_chunk_at`.
            let k = pos / chunk_bits;
            debug_assert_eq!(k, chunk_elem.len() as u64);
            chunk_elem.push(i as u32);
            chunk_bit.push((pos - k * chunk_bits) as u32);
            next_chunk_at = (k + 1) * chunk_bits;
        }
        let t = table[exponent(v) as usize];
        let len = (t & 0xff) as u32;
        acc = (acc << len) | (t >> 8);
        nacc += len;
        pos += len as u64;
        if nacc >= 32 {
            nacc -= 32;
            bitstream.extend_from_slice(&((acc >> nacc) as u32).to_be_bytes());
        }
    }
    // Flush, MSB-first, zero padded.
    while nacc >= 8 {
        nacc -= 8;
        bitstream.push((acc >> nacc) as u8);
    }
    if nacc > 0 {
        bitstream.push((acc << (8 - nacc)) as u8);
    }
    debug_assert_eq!(bitstream.len(), bs_len);
    // A trailing chunk reached only by the tail of the last code: no code starts in it.
    while chunk_elem.len() < n_chunks {
        chunk_elem.push(n as u32);
        chunk_bit.push(0);
    }
    let sign_mantissa = values.iter().map(|&v| sign_mantissa(v)).collect();
    Ok(Df11Tensor {
        n,
        chunk_bytes: p.chunk_bytes,
        lengths,
        bitstream,
        sign_mantissa,
        chunk_elem,
        chunk_bit,
    })
}
