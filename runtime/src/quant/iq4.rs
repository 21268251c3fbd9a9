//! ggml's non-linear 4-bit blocks: each 4-bit code indexes a fixed table of 16 signed levels
//! (denser near zero, as trained weights are) under an f16 scale.
//!
//! ```text
//! IQ4_NL  32 weights, 18 bytes   [ d: f16 | qs: 16 ]
//! IQ4_XS  256 weights, 136 bytes [ d: f16 | scales_h: u16 | scales_l: 4 | qs: 128 ]
//!   sub-block k (0..8) of 32: scale (lo nibble k of scales_l | 2 bits k of scales_h << 4) − 32
//! within 32 weights: x[j] = s·LEVELS[qs[j] & 15], x[j+16] = s·LEVELS[qs[j] >> 4]  (j < 16)
//! ```

use super::f16_at;

/// The 16 levels of IQ4_NL / IQ4_XS codes (llama.cpp's `kvalues_iq4nl`).
pub const LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Bytes of one IQ4_NL block.
pub const IQ4_NL_BYTES: usize = 18;
/// Bytes of one IQ4_XS super-block.
pub const IQ4_XS_BYTES: usize = 136;

#[inline]
fn nibbles32(scale: f32, qs: &[u8], out: &mut [f32]) {
    for j in 0..16 {
        out[j] = scale * LEVELS[(qs[j] & 15) as usize] as f32;
        out[j + 16] = scale * LEVELS[(qs[j] >> 4) as usize] as f32;
    }
}

/// Dequantize one IQ4_NL block (18 bytes) into 32 values.
pub fn dequantize_iq4_nl(b: &[u8], out: &mut [f32]) {
    nibbles32(f16_at(b, 0), &b[2..18], out);
}

/// The signed 6-bit scale of IQ4_XS sub-block `k` (0..8), already minus 32.
#[inline]
pub fn iq4_xs_scale(b: &[u8], k: usize) -> i32 {
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let low = (b[4 + k / 2] >> (4 * (k % 2))) & 15;
    let high = ((scales_h >> (2 * k)) & 3) as u8;
    (low | (high << 4)) as i32 - 32
}

/// Dequantize one IQ4_XS super-block (136 bytes) into 256 values.
pub fn dequantize_iq4_xs(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for k in 0..8 {
        let dl = d * iq4_xs_scale(b, k) as f32;
        nibbles32(
            dl,
            &b[8 + 16 * k..24 + 16 * k],
            &mut out[32 * k..32 * k + 32],
        );
    }
}
