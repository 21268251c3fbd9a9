//! ggml's 5-bit blocks of 32 weights, Q5_0 (symmetric) and Q5_1 (with a minimum).
//!
//! ```text
//! Q5_0  [ d: f16 | qh: u32 | qs: 16 bytes ]            22 bytes
//! Q5_1  [ d: f16 | m: f16 | qh: u32 | qs: 16 bytes ]   24 bytes
//!
//! code j (0..32) = low nibble of qs[j] (j < 16) or high nibble of qs[j-16] (j >= 16),
//!                  plus bit j of qh (little-endian u32) as bit 4
//! Q5_0: x[j] = d * (code - 16)          Q5_1: x[j] = d * code + m
//! ```

use super::f16_at;

/// Bytes of one Q5_0 block.
pub const Q5_0_BYTES: usize = 22;
/// Bytes of one Q5_1 block.
pub const Q5_1_BYTES: usize = 24;

/// The 32 five-bit codes of a block from its `qh` word and 16 `qs` bytes.
#[inline]
fn codes(qh: u32, qs: &[u8], out: &mut [u8; 32]) {
    for j in 0..16 {
        out[j] = (qs[j] & 15) | ((((qh >> j) & 1) as u8) << 4);
        out[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
}

/// Dequantize one Q5_0 block (`b.len() == 22`) into 32 values.
pub fn dequantize_q5_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let mut c = [0u8; 32];
    codes(qh, &b[6..22], &mut c);
    for (o, &q) in out[..32].iter_mut().zip(&c) {
        *o = d * (q as i32 - 16) as f32;
    }
}

/// Dequantize one Q5_1 block (`b.len() == 24`) into 32 values.
pub fn dequantize_q5_1(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let mut c = [0u8; 32];
    codes(qh, &b[8..24], &mut c);
    for (o, &q) in out[..32].iter_mut().zip(&c) {
        *o = d * q as f32 + m;
    }
}
